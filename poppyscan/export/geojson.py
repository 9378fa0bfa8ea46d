"""``plots.geojson``: plot polygons with their task attributes, RFC 7946.

RFC 7946: WGS84 longitude/latitude (no ``crs`` member), longitudes in [-180, 180] with a plot that
crosses the antimeridian split there into a MultiPolygon (§3.1.9), exterior rings counter-clockwise and
holes clockwise, at most 7 decimals (~1 cm). Written with :mod:`json` so the output is exactly that.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import geopandas as gpd
import pandas as pd
import shapely
from shapely.geometry import mapping

from ..fsutil import atomic_path
from ..geo.antimeridian import wrap_geometry

DECIMALS = 7


def _json_value(value):
    if value is None or value is pd.NA or value is pd.NaT:
        return None
    if hasattr(value, "item"):  # numpy scalar -> Python
        value = value.item()
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


def _round(coords):
    if isinstance(coords, (list, tuple)) and coords and isinstance(coords[0], (int, float)):
        return [round(float(c), DECIMALS) for c in coords[:2]]
    return [_round(c) for c in coords]


def rfc7946_geometry(geom) -> dict | None:
    """GeoJSON geometry dict of a WGS84 shapely geometry with RFC 7946 ring orientation, longitudes in
    [-180, 180] and split at the antimeridian (:func:`~poppyscan.geo.antimeridian.wrap_geometry`)."""
    if geom is None or geom.is_empty:
        return None
    geom = shapely.orient_polygons(wrap_geometry(geom), exterior_cw=False)
    g = mapping(geom)
    return {"type": g["type"], "coordinates": _round(g["coordinates"])}


def write_geojson(features: gpd.GeoDataFrame, final: str | Path) -> Path:
    """Write ``features`` (any CRS; reprojected to EPSG:4326) as an RFC 7946 FeatureCollection."""
    gdf = features
    if gdf.crs is not None and len(gdf) and not gdf.crs.equals("EPSG:4326"):
        gdf = gdf.to_crs("EPSG:4326")
    props_cols = [c for c in gdf.columns if c != gdf.geometry.name]
    out = []
    for geom, props in zip(gdf.geometry, gdf[props_cols].itertuples(index=False, name=None), strict=True):
        out.append(
            {
                "type": "Feature",
                "properties": {k: _json_value(v) for k, v in zip(props_cols, props, strict=True)},
                "geometry": rfc7946_geometry(geom),
            }
        )
    doc = {"type": "FeatureCollection", "features": out}
    with atomic_path(Path(final), overwrite=True) as tmp:
        tmp.write_text(json.dumps(doc, ensure_ascii=False, separators=(",", ":")), encoding="utf-8")
    return Path(final)
