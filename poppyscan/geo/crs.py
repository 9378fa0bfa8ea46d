"""Reproject shapely geometries between CRSs, with one cached transformer per CRS pair."""

from __future__ import annotations

import functools
from typing import Any

import shapely
from pyproj import CRS, Transformer


@functools.lru_cache(maxsize=64)
def _transformer(src_wkt: str, dst_wkt: str) -> Transformer:
    return Transformer.from_crs(CRS.from_wkt(src_wkt), CRS.from_wkt(dst_wkt), always_xy=True)


def _crs(value: Any) -> CRS:
    return CRS.from_wkt(value.to_wkt()) if hasattr(value, "to_wkt") else CRS.from_user_input(value)


def transform_geoms(geoms: Any, src: Any, dst: Any) -> Any:
    """``geoms`` (a geometry or an array of them) from CRS ``src`` to ``dst`` (EPSG codes, strings, pyproj
    or rasterio CRSs; x = east, y = north); unchanged when either is None or they are the same CRS.

    >>> transform_geoms(shapely.Point(114, 23), "EPSG:4326", "EPSG:32649").x.__round__()
    807543
    """
    if src is None or dst is None:
        return geoms
    s, d = _crs(src), _crs(dst)
    if s.equals(d):
        return geoms
    tr = _transformer(s.to_wkt(), d.to_wkt())
    return shapely.transform(geoms, lambda x, y: tr.transform(x, y), interleaved=False)
