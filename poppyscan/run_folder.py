"""The one validated reader of a detect run folder's ``run.json`` and ``plots.gpkg`` layer ``plots``.

Every stage that reads a run back (``poppyscan tasks``, ``poppyscan review``, ``poppyscan results
register``) reads it here, so a damaged or foreign folder gives the same one-line
:class:`~poppyscan.errors.InputError` everywhere, naming the file and the fix, instead of a traceback
from deep inside GDAL, numpy or SQLite:

- the run folder missing, or a file passed instead of it;
- ``run.json`` that is not JSON, JSON that is not an object, or ``inputs`` that are not a list;
- ``plots.gpkg`` missing, empty (0 bytes), not a GeoPackage (e.g. plain text), without a ``plots``
  layer, or a layer that cannot be read or has no geometry;
- a ``plots`` layer without ``plot_id``, with a missing, non-integer or repeated ``plot_id``, with a plot
  without geometry, with geometries that are not polygons (e.g. points), without a CRS, or with text
  that is not a number in a numeric column (``area_m2``, ``prob_mean``, ``lon``, ...).

Numbers stored as text (a layer edited in a spreadsheet or re-saved by another tool) are converted.
A missing value (``NaN``) in an optional numeric column is kept: the readers fill it (``lon``/``lat``
from the geometry, for example).
"""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from .errors import InputError

log = logging.getLogger(__name__)

PLOTS_FILE = "plots.gpkg"
PLOTS_LAYER = "plots"
RUN_JSON = "run.json"
NUMERIC_COLUMNS = ("area_m2", "area_mu", "prob_mean", "prob_max", "score", "est_plants", "lon", "lat",
                   "mosaic_index")
_FIX = "restore it from the detect run or re-run `poppyscan detect`"
_TRUE = {"true", "t", "yes", "y", "1", "1.0"}
_FALSE = {"false", "f", "no", "n", "0", "0.0", ""}


def check_run_dir(run_dir: str | Path) -> Path:
    """``run_dir`` as a :class:`Path`, or :class:`InputError` when it is missing or not a folder."""
    run_dir = Path(run_dir)
    if not run_dir.exists():
        raise InputError(
            f"run directory '{run_dir}' does not exist; pass the --out folder of a `poppyscan detect` run"
        )
    if not run_dir.is_dir():
        raise InputError(
            f"'{run_dir}' is a file, not a run directory; pass the --out folder of a `poppyscan detect` "
            "run (the folder holding plots.gpkg and run.json)"
        )
    return run_dir


def read_run_json(run_dir: str | Path, *, required: bool = False) -> dict[str, Any]:
    """The run's parsed ``run.json`` (a JSON object).

    Parameters
    ----------
    run_dir
        The detect run folder (checked with :func:`check_run_dir`).
    required
        Refuse a folder without ``run.json``; otherwise log a warning and return ``{}`` (the run can be
        read without it, less the mosaic paths it lists).

    Raises
    ------
    InputError
        ``run.json`` is unreadable, not JSON, JSON but not an object (e.g. a list), or its ``inputs`` are
        not a list.
    """
    run_dir = check_run_dir(run_dir)
    path = run_dir / RUN_JSON
    if not path.is_file():
        if required:
            raise InputError(f"'{run_dir}' is not a detect run directory: '{RUN_JSON}' is missing; pass "
                             "the folder written by `poppyscan detect --out`")
        log.warning("'%s' not found: chips and the overview need the mosaic paths it lists", path)
        return {}
    try:
        meta = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise InputError(f"'{path}' is not valid JSON ({exc}); {_FIX}") from None
    if not isinstance(meta, dict):
        raise InputError(f"'{path}' holds a JSON {type(meta).__name__}, not the object detect writes; {_FIX}")
    if not isinstance(meta.get("inputs") or [], list):
        raise InputError(f"'{path}' has 'inputs' that are not a list of mosaics; {_FIX}")
    return meta


def plots_layers(run_dir: str | Path) -> set[str]:
    """The layer names of the run's ``plots.gpkg``; :class:`InputError` when it is missing or unreadable."""
    import pyogrio

    run_dir = check_run_dir(run_dir)
    path = run_dir / PLOTS_FILE
    if not path.is_file():
        raise InputError(f"'{run_dir}' is not a detect run directory: it has no {PLOTS_FILE}; pass the "
                         f"--out folder of `poppyscan detect` (or run `poppyscan detect --out {run_dir}`)")
    if path.stat().st_size == 0:
        raise InputError(f"'{path}' is empty (0 bytes); {_FIX}")
    try:
        return {name for name, _ in pyogrio.list_layers(path)}
    except Exception as exc:  # noqa: BLE001 - GDAL raises DataSourceError and others
        raise InputError(f"'{path}' is not a readable GeoPackage ({_first_line(exc)}); {_FIX}") from None


def read_plots(run_dir: str | Path) -> Any:
    """The run's ``plots`` layer as a GeoDataFrame, validated (see the module docstring).

    ``plot_id`` comes back as int64 (unique, one per plot), every geometry a (Multi)Polygon in the
    layer's CRS, the :data:`NUMERIC_COLUMNS` present as numbers (as written, or float64 where the layer
    holds them as text; ``NaN`` where empty) and ``over_500_plants`` as booleans (None where empty).
    """
    import geopandas as gpd
    import pyogrio

    run_dir = check_run_dir(run_dir)
    path = run_dir / PLOTS_FILE
    layers = plots_layers(run_dir)
    if PLOTS_LAYER not in layers:
        names = ", ".join(sorted(layers)) or "none"
        raise InputError(f"'{path}' has no layer '{PLOTS_LAYER}' (layers: {names}); it is not a detect "
                         f"output: {_FIX}")
    try:
        plots = pyogrio.read_dataframe(path, layer=PLOTS_LAYER)
    except Exception as exc:  # noqa: BLE001 - GDAL raises many kinds
        raise InputError(
            f"cannot read layer '{PLOTS_LAYER}' of '{path}' ({_first_line(exc)}); {_FIX}"
        ) from None
    where = f"layer '{PLOTS_LAYER}' of '{path}'"
    if not isinstance(plots, gpd.GeoDataFrame):
        raise InputError(f"{where} is a table without geometry, not plot polygons; {_FIX}")
    if "plot_id" not in plots.columns:
        raise InputError(f"{where} has no 'plot_id' column; it is not a detect output: {_FIX}")
    plots["plot_id"] = _plot_ids(plots["plot_id"], where)
    _check_geometry(plots, where)
    if plots.crs is None and len(plots):
        raise InputError(f"{where} has no CRS; {_FIX}")
    for col in NUMERIC_COLUMNS:
        if col in plots.columns:
            plots[col] = _numbers(plots, col, where)
    if "over_500_plants" in plots.columns:
        plots["over_500_plants"] = _flags(plots, "over_500_plants", where)
    return plots


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__


def _plot_ids(values: pd.Series, where: str) -> pd.Series:
    nums = pd.to_numeric(values, errors="coerce")
    bad = nums.isna() | ~np.isfinite(nums.to_numpy(float)) | (nums.fillna(0) % 1 != 0)
    if bad.any():
        row = int(np.flatnonzero(bad.to_numpy())[0]) + 1
        raise InputError(f"{where} has a 'plot_id' that is not a whole number ({values[bad].iloc[0]!r} in "
                         f"row {row}); every plot needs one: {_FIX}")
    ids = nums.astype("int64")
    dup = ids[ids.duplicated()]
    if len(dup):
        raise InputError(f"{where} holds plot_id {int(dup.iloc[0])} more than once ({len(dup)} repeat(s)); "
                         f"plot ids must be unique: {_FIX}, or renumber them")
    return ids


def _check_geometry(plots: Any, where: str) -> None:
    geoms = plots.geometry
    missing = (geoms.isna() | geoms.is_empty).to_numpy()
    if missing.any():
        ids = _ids(plots, missing)
        raise InputError(f"{where} has {int(missing.sum())} plot(s) without a geometry (plot_id {ids}); "
                         f"{_FIX}, or delete those rows")
    kinds = geoms.geom_type.to_numpy()
    foreign = ~np.isin(kinds, ("Polygon", "MultiPolygon"))
    if foreign.any():
        names = ", ".join(sorted(set(kinds[foreign])))
        raise InputError(f"{where} holds {names} geometries (plot_id {_ids(plots, foreign)}), not plot "
                         f"polygons; it is not a detect output: {_FIX}")


def _ids(plots: Any, mask: np.ndarray) -> str:
    ids = [str(v) for v in plots["plot_id"].to_numpy()[mask][:5]]
    return ", ".join(ids) + (", ..." if int(mask.sum()) > 5 else "")


def _numbers(plots: Any, col: str, where: str) -> pd.Series:
    values = plots[col]
    if pd.api.types.is_bool_dtype(values) or pd.api.types.is_numeric_dtype(values):
        return values  # as written (integers stay integers in the layers written from it)
    text = values.map(lambda v: v.strip() if isinstance(v, str) else v)
    blank = text.isna() | text.eq("")
    nums = pd.to_numeric(text.where(~blank, None), errors="coerce")
    bad = (nums.isna() & ~blank).to_numpy()
    if bad.any():
        raise InputError(f"{where}: column '{col}' must hold numbers, but plot_id {_ids(plots, bad)} has "
                         f"{values[bad].iloc[0]!r}; correct it (e.g. in QGIS) or {_FIX}")
    return nums.astype("float64")


def _flag(value: Any) -> bool | None:
    """``value`` as a boolean, None when empty; ValueError when it is neither."""
    if value is None or (isinstance(value, float) and np.isnan(value)):
        return None
    if isinstance(value, (bool, np.bool_, int, np.integer, float, np.floating)):
        return bool(value)
    text = str(value).strip().lower()
    if text in _TRUE or text in _FALSE:
        return text in _TRUE
    raise ValueError(value)


def _flags(plots: Any, col: str, where: str) -> pd.Series:
    values = plots[col]
    if pd.api.types.is_bool_dtype(values):
        return values
    out: list[bool | None] = []
    bad = np.zeros(len(values), bool)
    for i, v in enumerate(values):
        try:
            out.append(_flag(v))
        except ValueError:
            out.append(None)
            bad[i] = True
    if bad.any():
        raise InputError(f"{where}: column '{col}' must be true or false, but plot_id {_ids(plots, bad)} has "
                         f"{values[bad].iloc[0]!r}; correct it (e.g. in QGIS) or {_FIX}")
    return pd.Series(out, index=values.index, dtype=object if None in out else bool)
