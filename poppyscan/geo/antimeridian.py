"""Longitudes in [-180, 180] and polygons split at the antimeridian (RFC 7946 §3.1.9).

A plot of a flight over the antimeridian (Fiji, Chukotka) may reach WGS84 with longitudes past 180
(a mosaic georeferenced in EPSG:4326 at 179.9-180.1, or a CRS with ``+over``), or, reprojected from UTM,
with some vertices at 179.99 and others at -179.99, a ring that PROJ's normalisation makes run round the
whole globe. :func:`wrap_geometry` makes either a valid WGS84 geometry: longitudes in [-180, 180], and a
plot that crosses the antimeridian split there into the parts on either side (a MultiPolygon).
"""

from __future__ import annotations

import math

import numpy as np
import shapely
from shapely.geometry import box
from shapely.geometry.base import BaseGeometry

_WIDEST_DEG = 180.0
"""A geometry spanning more longitude than this is taken to jump across the antimeridian, not to be that
wide (a plot, a route or a flight footprint is a few kilometres)."""


def wrap_lon(lon):  # noqa: ANN001, ANN201 - float or array in, the same out
    """Longitude(s) moved by whole turns into [-180, 180]; values already there are unchanged.

    >>> float(wrap_lon(180.25)), float(wrap_lon(-181.0)), float(wrap_lon(180.0))
    (-179.75, 179.0, 180.0)
    """
    arr = np.asarray(lon, dtype=float)
    out = np.where((arr > 180) | (arr < -180), (arr + 180.0) % 360.0 - 180.0, arr)
    return float(out) if np.ndim(lon) == 0 else out


def wrap_geometry(geom: BaseGeometry | None) -> BaseGeometry | None:
    """``geom`` (WGS84 lon/lat) with every longitude in [-180, 180], split at the antimeridian.

    Geometries already inside [-180, 180] that do not jump across the antimeridian come back as they are
    (the same object). Otherwise the geometry is first made continuous (negative longitudes moved east
    by 360 when it spans more than 180 degrees), then cut into the parts within each 360-degree window,
    each moved back into [-180, 180]; a polygon crossing the antimeridian becomes a MultiPolygon.
    """
    if geom is None or geom.is_empty:
        return geom
    minx, _, maxx, _ = geom.bounds
    if -180 <= minx and maxx <= 180 and maxx - minx <= _WIDEST_DEG:
        return geom
    if maxx - minx > _WIDEST_DEG:  # jumps across: continuous east of it
        geom = shapely.transform(geom, lambda xy: np.column_stack([np.where(xy[:, 0] < 0, xy[:, 0] + 360,
                                                                            xy[:, 0]), xy[:, 1]]))
        minx, _, maxx, _ = geom.bounds
    parts = []
    for turn in range(math.floor((minx + 180) / 360), math.floor((maxx + 180) / 360) + 1):
        shift = 360.0 * turn
        window = box(-180 + shift, -90, 180 + shift, 90)
        piece = geom.intersection(window) if not window.contains(geom) else geom
        if not piece.is_empty:
            parts.append(shapely.transform(piece, lambda xy, s=shift: xy - [s, 0]))
    return _merge(parts, geom.geom_type)


def _merge(parts: list[BaseGeometry], kind: str) -> BaseGeometry:
    """The parts as one geometry of ``kind``'s family (polygons stay polygons, never lines or points)."""
    if kind in ("Polygon", "MultiPolygon"):
        polys = [p for part in parts for p in getattr(part, "geoms", [part]) if p.geom_type == "Polygon"]
        return polys[0] if len(polys) == 1 else shapely.MultiPolygon(polys)
    return parts[0] if len(parts) == 1 else shapely.GeometryCollection(parts)
