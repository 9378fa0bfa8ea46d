"""Read what the register needs from a detect run directory (see ``docs/INTERFACES.md``).

A run directory holds ``run.json``, ``plots.gpkg`` (layer ``plots``; after ``poppyscan tasks`` also a
``tasks`` layer, optionally ``footprints`` and ``admin_units``), ``tasks.csv`` and ``probability.tif``.
Everything is returned in WGS84 (EPSG:4326) plus a local metric CRS for areas and distances.
"""

from __future__ import annotations

import csv
import hashlib
import json
import logging
import re
from dataclasses import dataclass
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

from ..errors import InputError
from ..geo.utm import utm_epsg
from .schema import ADMIN_FIELDS

log = logging.getLogger(__name__)

_DATE_RE = re.compile(r"^\d{4}-\d{2}-\d{2}$")


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
    plots: gpd.GeoDataFrame  # plot_id, area_m2, ..., county/township/village, geometry (4326)
    tasks: pd.DataFrame  # task_id, task_code, plot_id, lon, lat, priority, route_seq, county, ...
    units: list[tuple[str, str, str, float]]  # (county, township, village, surveyed_ha)

    @property
    def surveyed_ha(self) -> float | None:
        return sum(u[3] for u in self.units) if self.units else None


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
    run_dir: str | Path, *, flight_date: str | None = None, admin: str | Path | None = None
) -> RunData:
    """Read a detect run directory; ``flight_date`` (YYYY-MM-DD) overrides what the run records."""
    run_dir = Path(run_dir)
    if not run_dir.is_dir():
        raise InputError(
            f"run directory '{run_dir}' does not exist or is not a directory; pass a detect --out folder"
        )
    run_json = run_dir / "run.json"
    gpkg = run_dir / "plots.gpkg"
    for required in (run_json, gpkg):
        if not required.is_file():
            raise InputError(
                f"'{run_dir}' is not a detect run directory: '{required.name}' is missing; "
                "pass the folder written by 'poppyscan detect --out'"
            )
    raw = run_json.read_bytes()
    try:
        meta = json.loads(raw.decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise InputError(f"'{run_json}' is not valid JSON ({exc}); re-run detect") from None
    layers = {name for name, _ in pyogrio.list_layers(gpkg)}
    if "plots" not in layers:
        raise InputError(
            f"'{gpkg}' has no 'plots' layer (layers: {', '.join(sorted(layers))}); re-run detect"
        )
    plots = gpd.read_file(gpkg, layer="plots", engine="pyogrio")
    if plots.crs is None and len(plots):
        raise InputError(f"'{gpkg}' layer 'plots' has no CRS; re-run detect")
    plots = plots.to_crs(4326) if plots.crs is not None else plots.set_crs(4326)
    if "plot_id" not in plots.columns:
        raise InputError(f"'{gpkg}' layer 'plots' has no 'plot_id' column; re-run detect")

    inputs = meta.get("inputs") or []
    mosaic_paths = [str(i.get("path", "")) for i in inputs if isinstance(i, dict) and i.get("path")]
    mosaics = [Path(p).name for p in mosaic_paths]
    if not mosaics and "mosaic" in plots.columns:
        mosaics = sorted({str(m) for m in plots["mosaic"].dropna()})
    flight = _flight_date(flight_date, meta, inputs, plots, run_dir)
    model = meta.get("model") or {}
    model_version = model.get("version") if isinstance(model, dict) else None
    if model_version is None and "model_version" in plots.columns and len(plots):
        model_version = str(plots["model_version"].iloc[0])

    footprint = _footprint(run_dir, layers, meta, inputs)
    ref = footprint if footprint is not None else (plots.unary_union if len(plots) else None)
    metric = _metric_crs(ref)
    tasks = _read_tasks(run_dir, layers)
    plots = _admin_to_plots(plots, tasks)
    units = _surveyed_units(footprint, metric, _admin_layer(gpkg, layers, admin))
    mosaic_key = hashlib.sha256(
        json.dumps(
            sorted(
                [
                    [
                        Path(str(i.get("path", ""))).name,
                        i.get("width"),
                        i.get("height"),
                        [round(float(b), 3) for b in (i.get("bounds") or [])],
                    ]
                    for i in inputs
                    if isinstance(i, dict)
                ]
            )
            or mosaics
        ).encode()
    ).hexdigest()
    return RunData(
        run_dir=run_dir.resolve(),
        run_key=hashlib.sha256(raw).hexdigest(),
        mosaic_key=mosaic_key,
        flight_date=flight,
        mosaics=mosaics,
        mosaic_paths=mosaic_paths,
        model_version=model_version,
        crs=meta.get("crs"),
        footprint=footprint,
        metric_crs=metric,
        plots=plots,
        tasks=tasks,
        units=units,
    )


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


def _footprint(run_dir: Path, layers: set[str], meta: dict, inputs: list) -> BaseGeometry | None:
    """Surveyed area: ``footprints`` layer, else the valid part of probability.tif, else the mosaic bounds."""
    gpkg = run_dir / "plots.gpkg"
    if "footprints" in layers:
        fp = gpd.read_file(gpkg, layer="footprints", engine="pyogrio")
        if len(fp) and fp.crs is not None:
            return shapely.make_valid(fp.to_crs(4326).unary_union)
    prob = run_dir / "probability.tif"
    if prob.is_file():
        try:
            return _valid_area(prob)
        except Exception as exc:  # noqa: BLE001 - fall back to the bounds, but say so
            log.warning("could not read the footprint from %s (%s); using the mosaic bounds", prob, exc)
    boxes = []
    for i in inputs:
        if isinstance(i, dict) and i.get("bounds") and i.get("crs"):
            boxes.append(gpd.GeoSeries([box(*i["bounds"])], crs=i["crs"]).to_crs(4326).iloc[0])
    return shapely.union_all(boxes) if boxes else None


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


def _read_tasks(run_dir: Path, layers: set[str]) -> pd.DataFrame:
    """The run's tasks from the ``tasks`` layer, else ``tasks.csv``; empty when tasks were not made."""
    if "tasks" in layers:
        df = pd.DataFrame(pyogrio.read_dataframe(run_dir / "plots.gpkg", layer="tasks", read_geometry=False))
    elif (run_dir / "tasks.csv").is_file():
        with open(run_dir / "tasks.csv", encoding="utf-8-sig", newline="") as fh:
            df = pd.DataFrame(list(csv.DictReader(fh)))
    else:
        return pd.DataFrame(columns=list(_TASK_COLUMNS))
    if len(df) and "task_id" not in df.columns:
        raise InputError(f"the tasks of run '{run_dir}' have no 'task_id' column; re-run 'poppyscan tasks'")
    for col in _TASK_COLUMNS:
        if col not in df.columns:
            df[col] = None
    df = df[list(_TASK_COLUMNS)].copy()
    df["task_id"] = df["task_id"].astype(str).str.strip()
    for col in ADMIN_FIELDS:
        df[col] = df[col].where(df[col].notna(), "").astype(str).str.strip()
    return df


def _admin_to_plots(plots: gpd.GeoDataFrame, tasks: pd.DataFrame) -> gpd.GeoDataFrame:
    plots = plots.copy()
    by_plot = {}
    for row in tasks.itertuples(index=False):
        try:
            by_plot[int(float(row.plot_id))] = row
        except (TypeError, ValueError):
            continue
    for col in ADMIN_FIELDS:
        own = (
            plots[col].where(plots[col].notna(), "").astype(str)
            if col in plots.columns
            else pd.Series("", index=plots.index)
        )
        from_tasks = plots["plot_id"].map(
            lambda p, c=col: getattr(by_plot.get(int(p)), c, "") if p is not None else ""
        )
        plots[col] = [t or o for t, o in zip(from_tasks.fillna(""), own, strict=True)]
    return plots


def _admin_layer(gpkg: Path, layers: set[str], admin: str | Path | None) -> gpd.GeoDataFrame | None:
    if admin is not None:
        path = Path(admin)
        if not path.exists():
            raise InputError(f"boundary file '{path}' given to --admin does not exist; check the path")
        try:
            units = gpd.read_file(path, engine="pyogrio")
        except Exception as exc:  # noqa: BLE001 - GDAL's message is the useful part
            raise InputError(
                f"boundary file '{path}' could not be read ({exc}); pass a GeoPackage or shapefile"
            ) from None
    elif "admin_units" in layers:
        units = gpd.read_file(gpkg, layer="admin_units", engine="pyogrio")
    else:
        return None
    if units.crs is None:
        raise InputError("the admin boundary layer has no CRS; assign one in QGIS and try again")
    present = [f for f in ADMIN_FIELDS if f in units.columns]
    if not present:
        raise InputError(
            f"the admin boundary layer has none of the fields {', '.join(ADMIN_FIELDS)}; "
            f"its fields are {', '.join(c for c in units.columns if c != 'geometry')}"
        )
    return units


def _surveyed_units(
    footprint, metric: CRS, units: gpd.GeoDataFrame | None
) -> list[tuple[str, str, str, float]]:
    """Surveyed hectares per admin unit (and one row with empty names for the part outside every unit)."""
    if footprint is None or footprint.is_empty:
        return []
    fp = gpd.GeoSeries([footprint], crs=4326).to_crs(metric).iloc[0]
    total = fp.area / 10_000
    if units is None:
        return [("", "", "", total)]
    units = units.to_crs(metric)
    out: dict[tuple[str, str, str], float] = {}
    inside = 0.0
    for _, row in units.iterrows():
        if row.geometry is None:
            continue
        ha = shapely.make_valid(row.geometry).intersection(fp).area / 10_000
        if ha <= 0:
            continue
        key = tuple("" if pd.isna(row.get(f)) else str(row.get(f, "") or "").strip() for f in ADMIN_FIELDS)
        out[key] = out.get(key, 0.0) + ha
        inside += ha
    if total - inside > 1e-6:
        out[("", "", "")] = out.get(("", "", ""), 0.0) + (total - inside)
    return [(*k, v) for k, v in out.items()]
