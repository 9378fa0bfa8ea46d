"""Writers for field-task outputs, one module per format.

Each writer takes the task table (a GeoDataFrame of WGS84 points, one row per task, sorted by unit and
visit order) and/or the plot polygons and writes one file atomically (temporary name, then rename):

- :mod:`.gpkg_styles` — the ``tasks`` layer in ``plots.gpkg`` and QGIS default styles (``layer_styles``),
  the ``probability.qml`` raster sidecar;
- :mod:`.csv_xlsx` — ``tasks.csv`` (UTF-8 with BOM) and ``tasks.xlsx``;
- :mod:`.kmz` — ``tasks.kmz`` (Google Earth / Ovital / 2bulu: placemarks, outlines, embedded chips);
- :mod:`.gpx` — ``tasks.gpx`` (GPX 1.1 waypoints + one route per unit);
- :mod:`.geojson` — ``plots.geojson`` (RFC 7946);
- :mod:`.chips` — image chips of the orthomosaic around each plot;
- :mod:`.sheet` — the printable, self-contained HTML work order per unit.
"""
