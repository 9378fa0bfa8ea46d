"""Administrative units for task points by spatial join with a user boundary layer.

The boundary layer may be in any CRS (CGCS2000 EPSG:4490, a Gauss-Krüger zone EPSG:4513–4554, WGS84…):
the task points are projected into the boundary's CRS (pyproj, ``always_xy``) rather than the other way
round, so large boundary polygons are never reprojected. A point inside no unit is kept and flagged
``admin_status = "outside"``; a point on a shared border takes the first unit in file order.

Code columns: for each named field ``f`` the boundary's ``f_code`` or ``fcode`` column, when present,
is carried along as ``f_code`` (e.g. ``village_code`` with the 12-digit statistical code).
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import geopandas as gpd
import numpy as np
import pandas as pd
import pyogrio
import shapely

from .errors import InputError

INSIDE, OUTSIDE, NOT_JOINED = "inside", "outside", ""


def read_boundaries(
    path: str | Path, fields: Sequence[str], *, gcj02: bool = False
) -> tuple[gpd.GeoDataFrame, dict[str, str]]:
    """Read the boundary layer, check ``fields`` exist; return it and ``{field: code column}``.

    With ``gcj02`` the layer's lon/lat are GCJ-02 (digitised on Amap/Tencent, whatever its label says)
    and are converted to WGS84 first. Raises :class:`InputError` naming missing fields and the
    available ones, or an unreadable file.
    """
    path = Path(path)
    if not path.exists():
        raise InputError(f"boundary file '{path}' does not exist; check --admin")
    try:
        bnd = pyogrio.read_dataframe(path)
    except Exception as exc:  # pyogrio raises DataSourceError, DataLayerError, ...
        first = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise InputError(
            f"boundary file '{path}' cannot be read as a vector layer ({first}); "
            "pass a GeoPackage, shapefile or GeoJSON with polygons"
        ) from None
    if not isinstance(bnd, gpd.GeoDataFrame) or bnd.geometry.isna().all():
        raise InputError(f"boundary file '{path}' has no geometries; pass a polygon layer")
    if bnd.crs is None:
        raise InputError(
            f"boundary file '{path}' has no CRS; define it (e.g. EPSG:4490 for CGCS2000) "
            "in QGIS or with ogr2ogr -a_srs, then retry"
        )
    available = [c for c in bnd.columns if c != bnd.geometry.name]
    missing = [f for f in fields if f not in available]
    if missing:
        raise InputError(
            f"boundary file '{path}' has no field(s) {', '.join(repr(m) for m in missing)}; "
            f"available fields: {', '.join(available) or '(none)'}; pass --admin-fields with "
            "names from that list"
        )
    if gcj02:
        from .geo.gcj02 import gcj02_to_wgs84

        bnd = bnd.to_crs("EPSG:4326")
        bnd.geometry = shapely.transform(
            bnd.geometry.values, lambda x, y: gcj02_to_wgs84(x, y), interleaved=False
        )
    codes = {}
    for f in fields:
        for cand in (f"{f}_code", f"{f}code"):
            if cand in available and cand not in fields:
                codes[f] = cand
                break
    return bnd, codes


def join_admin(
    lon: Sequence[float],
    lat: Sequence[float],
    boundaries: gpd.GeoDataFrame,
    fields: Sequence[str],
    codes: dict[str, str],
) -> pd.DataFrame:
    """Admin names (and codes) for WGS84 points.

    Returns a frame with one row per point (same order): each field, ``<field>_code`` for fields with a
    code column, and ``admin_status`` (``inside`` / ``outside``).
    """
    n = len(lon)
    out_cols = list(fields) + [f"{f}_code" for f in fields if f in codes]
    if n == 0:
        frame = pd.DataFrame({c: pd.Series([], dtype=object) for c in out_cols})
        frame["admin_status"] = pd.Series([], dtype=object)
        return frame
    pts = gpd.GeoDataFrame({"_i": np.arange(n)}, geometry=gpd.points_from_xy(lon, lat), crs="EPSG:4326")
    pts = pts.to_crs(boundaries.crs)
    keep = list(fields) + [codes[f] for f in fields if f in codes]
    bnd = boundaries[keep + [boundaries.geometry.name]].copy()
    bnd = bnd[bnd.geometry.notna() & ~bnd.geometry.is_empty]
    bnd.geometry = bnd.geometry.make_valid()
    bnd["_order"] = np.arange(len(bnd))
    joined = gpd.sjoin(pts, bnd, how="left", predicate="within")
    joined = (
        joined.sort_values(["_i", "_order"]).drop_duplicates("_i", keep="first").set_index("_i").sort_index()
    )
    frame = pd.DataFrame(index=range(n))
    for f in fields:
        frame[f] = _as_text(joined[f])
        if f in codes:
            frame[f"{f}_code"] = _as_text(joined[codes[f]])
    frame["admin_status"] = np.where(joined["_order"].notna().to_numpy(), INSIDE, OUTSIDE)
    return frame


def _as_text(values: pd.Series) -> np.ndarray:
    """Names and codes as text (None where missing); integral floats lose their ``.0`` (codes!)."""
    out = []
    for v in values:
        if v is None or (isinstance(v, float) and np.isnan(v)) or v is pd.NA:
            out.append(None)
        elif isinstance(v, (float, np.floating)) and float(v).is_integer():
            out.append(str(int(v)))
        else:
            out.append(str(v))
    return np.array(out, dtype=object)


def _text(v) -> str | None:  # noqa: ANN001
    """An attribute as text; ``None`` for a missing or empty value."""
    return None if v is None or str(v) in ("", "nan", "None", "<NA>") else str(v)


def unit_names(t: pd.DataFrame, split_by: str, fields: list[str]) -> list[str | None]:
    """Unit name of each task under ``--split-by split_by`` (``None``: no value).

    Splitting by an admin level keys the units by the whole hierarchy above it: two villages of the
    same name in different townships are two units, named with their parents (``甲镇 新村``,
    ``乙乡 新村``); a name that occurs under one parent only stays as it is.

    >>> t = pd.DataFrame({"township": ["甲镇", "乙乡", "甲镇"], "village": ["新村", "新村", "东村"]})
    >>> unit_names(t, "village", ["township", "village"])
    ['甲镇 新村', '乙乡 新村', '东村']
    """
    vals = [_text(v) for v in t[split_by]]
    if split_by not in fields or fields.index(split_by) == 0:
        return vals
    above = fields[: fields.index(split_by)]
    parents = [tuple(_text(v) for v in row) for row in t[above].itertuples(index=False)]
    seen: dict[str, set[tuple]] = {}
    for v, p in zip(vals, parents, strict=True):
        if v is not None:
            seen.setdefault(v, set()).add(p)
    return [
        v if v is None or len(seen[v]) == 1 else " ".join([x for x in p if x] + [v])
        for v, p in zip(vals, parents, strict=True)
    ]
