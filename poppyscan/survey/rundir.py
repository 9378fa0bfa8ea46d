"""Read what the register needs from a detect run directory (see ``docs/INTERFACES.md``).

A run directory holds ``run.json``, ``plots.gpkg`` (layer ``plots``; after ``poppyscan tasks`` also a
``tasks`` layer, optionally ``footprints``), ``tasks.csv``, ``review.json`` (desk review) and one
probability raster per mosaic (``probability.tif``, ``probability_2.tif``, ... as run.json
``outputs.probability`` lists them). Everything is returned in WGS84 (EPSG:4326) plus a local metric CRS
for areas and distances.
"""

from __future__ import annotations

import csv
import hashlib
import itertools
import json
import logging
import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import date
from pathlib import Path
from typing import Any

import geopandas as gpd
import numpy as np
import pandas as pd
import pyogrio
import shapely
from pyproj import CRS
from shapely.geometry import box
from shapely.geometry.base import BaseGeometry

from .. import run_folder, run_inputs
from ..errors import InputError
from ..geo.raster import ordered_bounds
from ..geo.utm import utm_epsg
from ..review.store import plot_decisions
from ..run_folder import check_run_dir
from . import units as units_mod
from .schema import ADMIN_FIELDS

log = logging.getLogger(__name__)

_DATE_RE = re.compile(r"^\d{4}-\d{2}-\d{2}$")
_PROB_RE = re.compile(r"^probability(?:_(\d+))?\.tif$")


@dataclass
class RunData:
    """A detect run as the register sees it (all geometries WGS84)."""

    run_dir: Path
    run_key: str
    mosaic_key: str
    flight_date: str
    mosaics: list[str]  # file names
    mosaic_paths: list[str]  # as run.json records them (absolute), for training from the register
    model_version: str | None
    crs: str | None
    footprint: BaseGeometry | None
    metric_crs: CRS
    plots: gpd.GeoDataFrame  # plot_id, area_m2, ..., county/township/village, review, dismissed, geometry
    tasks: pd.DataFrame  # task_id, task_code, plot_id, lon, lat, priority, route_seq, county, ...
    units: list[tuple[str, str, str, float]]  # (county, township, village, surveyed_ha)
    admin_given: bool = False  # the units come from a boundary file given now (--admin)
    warnings: list[str] = field(default_factory=list)
    legacy_keys: tuple[str, ...] = ()  # mosaic_key as registers before south-up ordering may hold it
    footprint_complete: bool = True  # from every probability raster (or the footprints layer), no fallback

    @property
    def surveyed_ha(self) -> float | None:
        return sum(u[3] for u in self.units) if self.units else None

    @property
    def n_dismissed(self) -> int:
        return int(self.plots["dismissed"].sum()) if len(self.plots) else 0


def parse_flight_date(value: Any, what: str) -> str:
    """Return ``value`` as ``YYYY-MM-DD`` or raise :class:`InputError` naming ``what``."""
    text = str(value).strip()[:10]
    if _DATE_RE.match(text):
        try:
            return date.fromisoformat(text).isoformat()
        except ValueError:
            pass
    raise InputError(f"{what} {value!r} is not a date; use YYYY-MM-DD, e.g. --flight-date 2026-04-18")


def read_run(
    run_dir: str | Path,
    *,
    flight_date: str | None = None,
    admin: str | Path | None = None,
    admin_fields: Sequence[str] | None = None,
    admin_gcj02: bool = False,
) -> RunData:
    """Read a detect run directory as the register needs it.

    Parameters
    ----------
    run_dir
        A ``poppyscan detect`` output folder (after ``poppyscan tasks`` and the desk review, if any).
    flight_date
        ``YYYY-MM-DD``; overrides what the run records.
    admin, admin_fields, admin_gcj02
        As ``poppyscan tasks`` takes them: a boundary file to assign plots and surveyed hectares to
        units, the fields holding the unit names (largest first, at most three; default: the admin
        fields of the run's tasks), and whether the file is GCJ-02. See :mod:`.units`.
    """
    run_dir = check_run_dir(run_dir)
    meta = run_folder.read_run_json(run_dir, required=True)
    raw = (run_dir / run_folder.RUN_JSON).read_bytes()
    plots = run_folder.read_plots(run_dir)  # validated: one-line InputErrors for a damaged folder
    layers = run_folder.plots_layers(run_dir)
    # each plot's input mosaic (run.json ``inputs``), resolved as the task and review chips resolve it
    found = run_inputs.read_inputs(run_dir, meta, plots["mosaic"] if "mosaic" in plots else ())
    sources = run_inputs.plot_inputs(found, plots, guess=False)  # only what detect recorded, no guess
    plots = plots.to_crs(4326) if plots.crs is not None else plots.set_crs(4326)
    inputs = meta.get("inputs") or []
    with_path = [k for k, i in enumerate(inputs) if isinstance(i, dict) and i.get("path")]
    mosaic_paths = [str(inputs[k]["path"]) for k in with_path]
    # position in mosaic_paths of each plot's input as detect recorded it (None: not recorded, e.g. a run
    # folder written before mosaic_index; export-labels places those plots when it exports them)
    position = {k: j for j, k in enumerate(with_path)}
    plots["mosaic_index"] = [None if s is None else position.get(s.index) for s in sources]
    mosaics = [Path(p).name for p in mosaic_paths]
    if not mosaics and "mosaic" in plots.columns:
        mosaics = sorted({str(m) for m in plots["mosaic"].dropna()})
    flight = _flight_date(flight_date, meta, inputs, plots, run_dir)
    model = meta.get("model") or {}
    model_version = model.get("version") if isinstance(model, dict) else None
    if model_version is None and "model_version" in plots.columns and len(plots):
        model_version = str(plots["model_version"].iloc[0])

    footprint, footprint_complete = _footprint(run_dir, layers, meta, inputs)
    ref = footprint if footprint is not None else (plots.unary_union if len(plots) else None)
    metric = _metric_crs(ref)
    raw_tasks = _read_task_table(run_dir, layers)
    fields = units_mod.resolve_fields(admin_fields, raw_tasks, has_admin=admin is not None)
    tasks = _tasks_frame(raw_tasks, fields)
    plots = _admin_to_plots(plots, tasks, fields)
    boundaries = units_mod.read_units(admin, fields, gcj02=admin_gcj02) if admin is not None else None
    if boundaries is not None:  # the given file decides, for plots with and without a task alike
        plots[list(ADMIN_FIELDS)] = units_mod.assign_plots(plots, boundaries, metric)
        tasks = _task_names_from_plots(tasks, plots)
    units = units_mod.surveyed_units(footprint, metric, boundaries)
    decisions = plot_decisions(run_dir, plots)  # review.json, else the layer's review column
    plots["review"] = [decisions.get(int(p), "") for p in plots["plot_id"]]
    tasked = {_plot_id(p) for p in tasks["plot_id"]}
    # rejected at the desk and sent to no field team: not a finding (config tasks.include_rejected sends it)
    plots["dismissed"] = [
        int(r == "rejected" and int(p) not in tasked)
        for r, p in zip(plots["review"], plots["plot_id"], strict=True)
    ]
    warning = units_mod.assignment_warning(plots, units, admin, admin_gcj02)
    mosaic_key, legacy_keys = mosaic_keys(inputs, mosaics)
    return RunData(
        run_dir=run_dir.resolve(),
        run_key=hashlib.sha256(raw).hexdigest(),
        mosaic_key=mosaic_key,
        legacy_keys=legacy_keys,
        flight_date=flight,
        mosaics=mosaics,
        mosaic_paths=mosaic_paths,
        model_version=model_version,
        crs=meta.get("crs"),
        footprint=footprint,
        footprint_complete=footprint_complete,
        metric_crs=metric,
        plots=plots,
        tasks=tasks,
        units=units,
        admin_given=boundaries is not None,
        warnings=[warning] if warning else [],
    )


def mosaic_keys(inputs: list, mosaics: list[str]) -> tuple[str, tuple[str, ...]]:
    """The run's duplicate-flight key, and the keys a register may hold for the same flight.

    The key hashes each input mosaic's file name, size and bounds, ordered west, south, east, north (as
    detect records them since; before, a south-up mosaic's bounds were recorded with south > north, an
    east-to-west one's with west > east), so the same flight has one key whichever poppyscan ran detect.
    Registers written before hashed the bounds as recorded: the other keys are those orientations
    (every combination for up to four mosaics, else the same orientation for all).

    Parameters
    ----------
    inputs
        run.json ``inputs``.
    mosaics
        The mosaic file names, hashed when no input is recorded.

    Returns
    -------
    tuple
        The key, and the other keys of the same flight (to match registers written before).
    """
    items = [i for i in inputs if isinstance(i, dict)]
    heads = [[Path(str(i.get("path", ""))).name, i.get("width"), i.get("height")] for i in items]
    bounds = [_ordered_bounds(i.get("bounds")) for i in items]

    def key(chosen: Sequence[list[float]]) -> str:
        entries = sorted([[*h, b] for h, b in zip(heads, chosen, strict=True)])
        return hashlib.sha256(json.dumps(entries or mosaics).encode()).hexdigest()

    def turned(b: list[float], k: int) -> list[float]:
        if len(b) != 4:
            return b
        west, south, east, north = b
        return [[west, south, east, north], [west, north, east, south], [east, south, west, north],
                [east, north, west, south]][k]

    n = len(bounds)
    combos = itertools.product(range(4), repeat=n) if n <= 4 else [(k,) * n for k in range(4)]
    main = key(bounds)
    others = {key([turned(b, k) for b, k in zip(bounds, ks, strict=True)]) for ks in combos} - {main}
    return main, tuple(sorted(others))


def _ordered_bounds(value: Any) -> list[float]:
    """Recorded bounds rounded to the millimetre, ordered ``[west, south, east, north]``."""
    b = [round(float(v), 3) for v in (value or [])]
    return list(ordered_bounds(*b)) if len(b) == 4 else b


def _flight_date(override, meta, inputs, plots, run_dir) -> str:
    if override:
        return parse_flight_date(override, "--flight-date")
    candidates = [meta.get("flight_date")] + [i.get("flight_date") for i in inputs if isinstance(i, dict)]
    if "flight_date" in plots.columns:
        candidates += list(plots["flight_date"].dropna().astype(str).unique()[:1])
    for value in candidates:
        if value:
            return parse_flight_date(value, f"flight date in '{run_dir}'")
    raise InputError(
        f"the flight date of run '{run_dir}' is not recorded in run.json or plots.gpkg; "
        "pass it with --flight-date YYYY-MM-DD"
    )


def _metric_crs(geom: BaseGeometry | None) -> CRS:
    """The UTM zone of ``geom``'s centroid (WGS84), for areas and distances."""
    if geom is None or geom.is_empty:
        return CRS.from_epsg(3857)
    c = geom.centroid
    return CRS.from_epsg(utm_epsg(c.x, c.y))


def _footprint(run_dir: Path, layers: set[str], meta: dict,
               inputs: list) -> tuple[BaseGeometry | None, bool]:
    """Surveyed area (WGS84): the ``footprints`` layer, else the union of the valid pixels of every
    probability raster of the run (a mosaic whose raster is missing or unreadable counts with its
    bounds), else the union of the mosaic bounds. Overlapping mosaics count once. Also whether it is
    complete: read from the layer or from every raster, with no fallback to bounds."""
    gpkg = run_dir / "plots.gpkg"
    if "footprints" in layers:
        fp = gpd.read_file(gpkg, layer="footprints", engine="pyogrio")
        if len(fp) and fp.crs is not None:
            return shapely.make_valid(fp.to_crs(4326).unary_union), True
    names = _probability_names(run_dir, meta)
    parts = []
    complete = bool(names)
    for k, name in enumerate(names):
        path = run_dir / name
        try:
            if not path.is_file():
                raise FileNotFoundError("no such file")
            part = _valid_area(path)
        except Exception as exc:  # noqa: BLE001 - fall back to the mosaic's bounds, but say so
            complete = False
            part = _input_box(inputs[k]) if k < len(inputs) else None
            log.warning(
                "could not read the footprint from %s (%s); using %s",
                path,
                exc,
                "the mosaic bounds" if part is not None else "nothing for that mosaic",
            )
        if part is not None and not part.is_empty:
            parts.append(part)
    if not names:
        parts = [b for b in (_input_box(i) for i in inputs) if b is not None]
    return (shapely.make_valid(shapely.union_all(parts)) if parts else None), complete


def _probability_names(run_dir: Path, meta: dict) -> list[str]:
    """The run's probability rasters, mosaic by mosaic: run.json ``outputs.probability``, else those
    found in ``run_dir`` (``probability.tif``, ``probability_2.tif``, ...)."""
    outputs = meta.get("outputs")
    listed = outputs.get("probability") if isinstance(outputs, dict) else None
    if isinstance(listed, str):
        listed = [listed]
    if isinstance(listed, list) and listed:
        return [str(n) for n in listed]
    found = [(m, p.name) for p in run_dir.glob("probability*.tif") if (m := _PROB_RE.match(p.name))]
    return [name for m, name in sorted(found, key=lambda x: int(x[0].group(1) or 1))]


def _input_box(item: Any) -> BaseGeometry | None:
    """A mosaic's bounds (run.json ``inputs[i]``) as a WGS84 polygon, or None."""
    if not (isinstance(item, dict) and item.get("bounds") and item.get("crs")):
        return None
    return gpd.GeoSeries([box(*item["bounds"])], crs=item["crs"]).to_crs(4326).iloc[0]


def _valid_area(path: Path, max_px: int = 1024) -> BaseGeometry | None:
    """Polygon of the pixels of ``path`` that are not nodata, traced on a decimated grid."""
    import rasterio
    from affine import Affine
    from rasterio import features
    from rasterio.enums import Resampling

    with rasterio.open(path) as src:
        scale = max(1.0, max(src.width, src.height) / max_px)
        shape = (max(1, round(src.height / scale)), max(1, round(src.width / scale)))
        mask = src.read_masks(1, out_shape=shape, resampling=Resampling.nearest)
        transform = src.transform @ Affine.scale(src.width / shape[1], src.height / shape[0])
        polys = [
            shapely.geometry.shape(g)
            for g, v in features.shapes((mask > 0).astype(np.uint8), mask=mask > 0, transform=transform)
            if v == 1
        ]
        if not polys:
            return None
        return gpd.GeoSeries([shapely.union_all(polys)], crs=src.crs).to_crs(4326).iloc[0]


_TASK_COLUMNS = ("task_id", "task_code", "plot_id", "lon", "lat", "priority", "route_seq", *ADMIN_FIELDS)


def _read_task_table(run_dir: Path, layers: set[str]) -> pd.DataFrame:
    """The run's tasks with all their columns (``tasks`` layer, else ``tasks.csv``); empty if none made."""
    if "tasks" in layers:
        df = pd.DataFrame(pyogrio.read_dataframe(run_dir / "plots.gpkg", layer="tasks", read_geometry=False))
    elif (run_dir / "tasks.csv").is_file():
        with open(run_dir / "tasks.csv", encoding="utf-8-sig", newline="") as fh:
            df = pd.DataFrame(list(csv.DictReader(fh)))
    else:
        return pd.DataFrame(columns=list(_TASK_COLUMNS))
    if len(df) and "task_id" not in df.columns:
        raise InputError(f"the tasks of run '{run_dir}' have no 'task_id' column; re-run 'poppyscan tasks'")
    return df


def _tasks_frame(raw: pd.DataFrame, fields: Sequence[str]) -> pd.DataFrame:
    """The register's task columns, the unit names of ``fields`` as county, township, village."""
    df = raw.copy()
    for col in _TASK_COLUMNS:
        if col not in df.columns and col not in ADMIN_FIELDS:
            df[col] = None
    names = units_mod.names_frame(df, fields)
    df = df[[c for c in _TASK_COLUMNS if c not in ADMIN_FIELDS]].copy()
    df[list(ADMIN_FIELDS)] = names
    df["task_id"] = df["task_id"].astype(str).str.strip()
    return df[list(_TASK_COLUMNS)]


def _plot_id(value: Any) -> int | None:
    try:
        return int(float(value))
    except (TypeError, ValueError):
        return None


def _admin_to_plots(plots: gpd.GeoDataFrame, tasks: pd.DataFrame, fields: Sequence[str]) -> gpd.GeoDataFrame:
    """Unit names of each plot: its task's, else the plots layer's own ``fields`` columns."""
    plots = plots.copy()
    by_plot = {_plot_id(row.plot_id): row for row in tasks.itertuples(index=False)}
    own = units_mod.names_frame(plots, fields)
    for col in ADMIN_FIELDS:
        from_tasks = [getattr(by_plot.get(_plot_id(p)), col, "") or "" for p in plots["plot_id"]]
        plots[col] = [t or o for t, o in zip(from_tasks, own[col], strict=True)]
    return plots


def _task_names_from_plots(tasks: pd.DataFrame, plots: gpd.GeoDataFrame) -> pd.DataFrame:
    """Each task gets its plot's unit names (assigned from the boundary file given to the register)."""
    names = {int(p): r for p, r in zip(plots["plot_id"], plots[list(ADMIN_FIELDS)].itertuples(index=False),
                                       strict=True)}
    tasks = tasks.copy()
    for i, col in enumerate(ADMIN_FIELDS):
        tasks[col] = [
            names[pid][i] if (pid := _plot_id(p)) in names else old
            for p, old in zip(tasks["plot_id"], tasks[col], strict=True)
        ]
    return tasks
