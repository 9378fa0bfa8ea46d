"""Admin units for the register: which boundary fields are the hierarchy, plots and hectares per unit.

The register keeps three levels, :data:`~.schema.ADMIN_FIELDS` (county, township, village). The names
come from the fields ``poppyscan tasks --admin-fields`` used (``县,乡镇,村`` or any other): the first
field fills ``county``, the second ``township``, the third ``village``. Which fields those are:

1. ``--admin-fields`` when given (the same option as ``poppyscan tasks``);
2. else, when the run's tasks were joined to a boundary file (``admin_status`` inside / outside), their
   admin columns (every task column ``poppyscan tasks`` does not make itself, less the ``<field>_code``
   columns), so a run made with ``--admin-fields 县,乡镇,村`` registers under those names without
   repeating them;
3. else ``county,township,village``.

A boundary file is read and joined exactly as ``poppyscan tasks`` does (:mod:`poppyscan.admin`: any
CRS, ``--admin-gcj02`` for layers digitised on Amap/Tencent), so a plot lands in the unit its task is in.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import geopandas as gpd
import numpy as np
import pandas as pd
import shapely
from pyproj import CRS

from .. import admin as admin_mod
from ..errors import InputError
from .schema import ADMIN_FIELDS
from .stats import UNASSIGNED

_MAX_HINT = "e.g. --admin-fields 县,乡镇,村 (largest unit first)"


def task_admin_columns(columns: Sequence[str]) -> list[str]:
    """The admin fields among a tasks layer's columns: those ``poppyscan tasks`` does not make itself."""
    from ..tasks import RESERVED

    own = [c for c in columns if c not in RESERVED and c not in ("geometry", "geom", "fid")]
    return [c for c in own if not (c.endswith("_code") and c[: -len("_code")] in own)]


def resolve_fields(explicit: Sequence[str] | None, tasks: pd.DataFrame, *, has_admin: bool) -> list[str]:
    """The boundary/task fields that fill county, township, village (see the module docstring).

    Parameters
    ----------
    explicit
        ``--admin-fields``, or None.
    tasks
        The run's tasks, all columns as ``poppyscan tasks`` wrote them (empty when none were made).
    has_admin
        A boundary file is given (the fields must then be in it, rather than in the tasks).
    """
    task_columns = list(tasks.columns)
    if explicit is not None:
        fields = [str(f).strip() for f in explicit if str(f).strip()]
        if not fields:
            raise InputError(f"--admin-fields is empty; name the unit fields, {_MAX_HINT}")
        if len(fields) > len(ADMIN_FIELDS):
            raise InputError(
                f"--admin-fields names {len(fields)} fields ({', '.join(fields)}) but the register keeps "
                f"three levels ({', '.join(ADMIN_FIELDS)}); pass at most three, {_MAX_HINT}"
            )
        available = task_admin_columns(task_columns)
        missing = [f for f in fields if f not in task_columns]
        if len(tasks) and not has_admin and missing:
            raise InputError(
                f"the run's tasks have no field(s) {', '.join(repr(m) for m in missing)} named by "
                f"--admin-fields; their admin fields are: {', '.join(available) or '(none)'}; pass those, "
                "or the boundary file with --admin"
            )
        return fields
    status = tasks["admin_status"] if "admin_status" in tasks.columns else pd.Series([], dtype=object)
    joined = status.isin([admin_mod.INSIDE, admin_mod.OUTSIDE]).any()  # tasks made with --admin
    inferred = task_admin_columns(task_columns) if joined else []
    if len(inferred) > len(ADMIN_FIELDS):
        raise InputError(
            f"the run's tasks carry {len(inferred)} admin fields ({', '.join(inferred)}) but the register "
            f"keeps three levels ({', '.join(ADMIN_FIELDS)}); choose three with --admin-fields, {_MAX_HINT}"
        )
    return inferred or list(ADMIN_FIELDS)


def names_frame(frame: pd.DataFrame, fields: Sequence[str]) -> pd.DataFrame:
    """``frame``'s ``fields`` as text columns county, township, village ('' where missing)."""
    out = pd.DataFrame(index=frame.index)
    for level, f in zip(ADMIN_FIELDS, [*fields, None, None, None], strict=False):
        out[level] = [_text(v) for v in frame[f]] if f is not None and f in frame.columns else ""
    return out


def _text(value) -> str:
    """A unit name as text ('' when missing); integral floats lose their ``.0`` (numeric codes)."""
    if value is None or value is pd.NA or (isinstance(value, (float, np.floating)) and np.isnan(value)):
        return ""
    if isinstance(value, (float, np.floating)) and float(value).is_integer():
        return str(int(value))
    text = str(value).strip()
    return "" if text in ("nan", "None", "<NA>") else text


def read_units(path: str | Path, fields: Sequence[str], *, gcj02: bool = False) -> gpd.GeoDataFrame:
    """The boundary layer (read as ``poppyscan tasks`` reads it) with columns county, township, village."""
    bnd, _ = admin_mod.read_boundaries(path, list(fields), gcj02=gcj02)
    names = names_frame(bnd, fields)
    return gpd.GeoDataFrame(names, geometry=bnd.geometry.values, crs=bnd.crs)


def assign_plots(plots: gpd.GeoDataFrame, units: gpd.GeoDataFrame, metric: CRS) -> pd.DataFrame:
    """county, township, village of each plot (WGS84) by its centroid, as ``poppyscan tasks`` joins tasks."""
    if plots.empty:
        return pd.DataFrame({c: pd.Series([], dtype=object) for c in ADMIN_FIELDS})
    cent = plots.geometry.to_crs(metric).centroid.to_crs(4326)
    lon, lat = np.array(cent.x, dtype=float), np.array(cent.y, dtype=float)
    for col, arr in (("lon", lon), ("lat", lat)):
        if col in plots.columns:
            given = pd.to_numeric(plots[col], errors="coerce").to_numpy(float)
            arr[np.isfinite(given)] = given[np.isfinite(given)]  # the point the task was made at
    joined = admin_mod.join_admin(lon, lat, units, list(ADMIN_FIELDS), {})
    return pd.DataFrame({c: [_text(v) for v in joined[c]] for c in ADMIN_FIELDS}, index=plots.index)


def surveyed_units(
    footprint, metric: CRS, units: gpd.GeoDataFrame | None
) -> list[tuple[str, str, str, float]]:
    """Surveyed hectares per admin unit (and one row with empty names for the part outside every unit)."""
    if footprint is None or footprint.is_empty:
        return []
    fp = gpd.GeoSeries([footprint], crs=4326).to_crs(metric).iloc[0]
    total = fp.area / 10_000
    if units is None:
        return [("", "", "", total)]
    probe = gpd.GeoSeries([footprint], crs=4326).to_crs(units.crs).iloc[0]
    near = units.iloc[np.sort(units.sindex.query(probe))].to_crs(metric)
    out: dict[tuple[str, str, str], float] = {}
    inside = 0.0
    for geom, *key in zip(near.geometry, *(near[c] for c in ADMIN_FIELDS), strict=True):
        if geom is None or geom.is_empty:
            continue
        ha = shapely.make_valid(geom).intersection(fp).area / 10_000
        if ha <= 0:
            continue
        out[tuple(key)] = out.get(tuple(key), 0.0) + ha
        inside += ha
    if total - inside > 1e-6:
        out[("", "", "")] = out.get(("", "", ""), 0.0) + (total - inside)
    return [(*k, v) for k, v in out.items()]


def assignment_warning(
    plots: pd.DataFrame, units: list[tuple[str, str, str, float]], admin: str | Path | None, gcj02: bool
) -> str | None:
    """One line when every plot and every surveyed hectare of the run would be counted as unassigned."""
    n = len(plots)
    named = plots[list(ADMIN_FIELDS)].ne("").any(axis=1).sum() if n else 0
    ha_total = sum(u[3] for u in units)
    ha_named = sum(u[3] for u in units if any(u[:3]))
    if admin is not None:
        if (n and not named) or (ha_total and not ha_named):
            what = " and ".join(
                x
                for x in (
                    f"all {n} plot(s)" if n and not named else "",
                    f"all {ha_total:.2f} ha surveyed" if ha_total and not ha_named else "",
                )
                if x
            )
            hint = (
                "check the file's CRS (is it really GCJ-02?)"
                if gcj02
                else "if it was digitised on Amap/Tencent pass --admin-gcj02, else check its CRS"
            )
            return f"{what} lie outside every unit of '{admin}' and count as {UNASSIGNED}; {hint}"
        return None
    if named and ha_total:
        return (
            f"the surveyed {ha_total:.2f} ha are not split by unit (no --admin), so per-unit surveyed_ha and "
            "plots_per_100ha stay blank; register the run again with --admin BOUNDARIES (the file given to "
            "'poppyscan tasks')"
        )
    if not named and (n or ha_total):
        return (
            f"no admin units for this run (no --admin, and its tasks carry none): its {n} plot(s) and "
            f"{ha_total:.2f} ha count as {UNASSIGNED}; pass --admin BOUNDARIES to count them by unit"
        )
    return None
