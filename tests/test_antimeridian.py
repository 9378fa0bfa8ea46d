"""A flight over the antimeridian (audit item 5): tasks, plots.geojson (RFC 7946) and the KMZ outlines
never hold a longitude outside [-180, 180], and a plot crossing it is split there (RFC 7946 §3.1.9)."""

from __future__ import annotations

import json
import re
import zipfile

import geopandas as gpd
import pyogrio
import pytest
from conftest_tasks import make_run
from shapely.geometry import box, shape

from poppyscan.tasks import build_tasks

LAT = -17.0  # Fiji
D = 0.0002  # ~20 m


def _antimeridian_plots(crs: str) -> gpd.GeoDataFrame:
    """Plot 1 crosses the antimeridian, plot 2 lies just east of it, plot 3 just west; in ``crs``
    (EPSG:4326 with longitudes past 180, or UTM 60S, which reprojects them to rings round the globe)."""
    geoms = [box(180 - D, LAT - D, 180 + D, LAT + D), box(180 + D, LAT - D, 180 + 3 * D, LAT + D),
             box(180 - 3 * D, LAT - D, 180 - 2 * D, LAT + D)]
    plots = gpd.GeoDataFrame({"plot_id": [1, 2, 3], "prob_mean": [0.9, 0.8, 0.7], "mosaic": "mosaic.tif",
                              "mosaic_index": 0}, geometry=geoms, crs="EPSG:4326")
    if crs != "EPSG:4326":
        plots.geometry = [box(*g.bounds) for g in plots.to_crs(crs).geometry.segmentize(1e-5)]
        plots = plots.set_crs(crs, allow_override=True)
    return plots


def _coords(geom: dict) -> list[tuple[float, float]]:
    flat = json.dumps(geom["coordinates"])
    return [(float(x), float(y)) for x, y in re.findall(r"\[(-?[\d.e-]+),\s*(-?[\d.e-]+)\]", flat)]


@pytest.mark.parametrize("crs", ["EPSG:4326", "EPSG:32760"])
def test_tasks_geojson_and_kmz_keep_longitudes_within_180(tmp_path, crs):
    run = make_run(tmp_path / "run", n=1)
    pyogrio.write_dataframe(_antimeridian_plots(crs), run / "plots.gpkg", layer="plots")
    summary = build_tasks(run)
    assert summary.n_tasks == 3
    tasks = pyogrio.read_dataframe(run / "plots.gpkg", layer="tasks")
    assert tasks["lon"].between(-180, 180).all()
    doc = json.loads((run / "plots.geojson").read_text(encoding="utf-8"))
    by_id = {f["properties"]["plot_id"]: f["geometry"] for f in doc["features"]}
    for pid, geom in by_id.items():
        xs = [x for x, _ in _coords(geom)]
        assert all(-180 <= x <= 180 for x in xs), (pid, xs)
        # each part is a small polygon, not a ring round the globe
        for part in getattr(shape(geom), "geoms", [shape(geom)]):
            assert part.bounds[2] - part.bounds[0] < 0.01, (pid, part.bounds)
    crossing = shape(by_id[1])
    assert by_id[1]["type"] == "MultiPolygon" and len(crossing.geoms) == 2
    assert {round(p.bounds[0]) for p in crossing.geoms} == {180, -180}
    assert shape(by_id[2]).bounds[0] < -179.99 and shape(by_id[3]).bounds[2] > 179.99
    with zipfile.ZipFile(run / "tasks.kmz") as zf:
        kml = zf.read("doc.kml").decode("utf-8")
    lons = [float(x) for x in re.findall(r"(-?\d+\.\d+),-?\d+\.\d+", kml)]
    assert lons and all(-180 <= x <= 180 for x in lons)
    assert kml.count("<Polygon>") == 4  # the crossing plot in two parts


def test_wrap_helpers():
    from poppyscan.geo.antimeridian import wrap_geometry, wrap_lon

    assert list(wrap_lon([180.5, -180.5, 12.0])) == [-179.5, 179.5, 12.0]
    inside = box(10, 10, 11, 11)
    assert wrap_geometry(inside) is inside and wrap_geometry(None) is None
    split = wrap_geometry(box(179.5, 0, 180.5, 1))
    assert split.geom_type == "MultiPolygon" and split.area == pytest.approx(1.0)
    assert wrap_geometry(box(181, 0, 182, 1)).bounds == pytest.approx((-179, 0, -178, 1))
