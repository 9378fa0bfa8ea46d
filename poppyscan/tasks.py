"""Field-verification tasks from a detect run: one task per plot, ordered, located and exported.

``build_tasks(run_dir)`` reads ``RUN_DIR/plots.gpkg`` (layer ``plots``) and ``run.json`` through the
validated reader :mod:`poppyscan.run_folder`, and the desk review, and writes into ``RUN_DIR``:

- layer ``tasks`` (WGS84 points) in ``plots.gpkg`` with QGIS default styles (``layer_styles``),
  ``tasks.csv`` (UTF-8 BOM), ``tasks.xlsx``, ``tasks.kmz``, ``tasks.gpx``, ``plots.geojson``;
- ``chips/<task_code>.jpg`` (cut from each plot's own input, :mod:`poppyscan.run_inputs`) and
  ``work_orders/<unit>.html`` (printable, self-contained);
- ``probability.qml`` beside ``probability.tif`` (``probability_N.qml`` beside each ``probability_N.tif``);
- with ``split_by``: ``units/<unit>/`` holding the same package restricted to each unit.

Rules
-----
- Desk-rejected plots (``review.json`` / ``review`` column) get no task unless ``include_rejected``.
- ``task_id``: UUID5 of the run (``run.json`` ``created``), the plot's mosaic and its centroid rounded
  to 1e-5° (~1 m) — re-running gives the same ids; an id already in the ``tasks`` layer is kept for the
  task within 3 m of it, so ids survive small centroid changes too.
- ``priority`` (1 = first): criminal-size plots (``over_500_plants``) before the rest, then by
  ``prob_mean × area_m2`` (expected poppy area), then ``plot_id``.
- ``unit``: the ``split_by`` value (``outside`` for plots outside every admin unit, ``unassigned`` for
  an empty value), or ``all`` without ``split_by``. ``route_seq`` is the visit order within the unit
  (:func:`poppyscan.route.route_order`, from ``start`` when given).
- ``task_code``: ``T0001``… in visit order, or with ``split_by`` a unit letter + number (``A001``).
  Codes are for people and GPS screens; results are merged by ``task_id`` only.
- Outputs are derived: re-running replaces them all, atomically, file by file.
"""

from __future__ import annotations

import logging
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import quote

import geopandas as gpd
import numpy as np
import pandas as pd
import pyogrio

from . import admin as admin_mod
from . import route
from .config import Config, TasksConfig
from .errors import InputError
from .geo.antimeridian import wrap_lon
from .geo.gcj02 import wgs84_to_gcj02
from .plots import M2_PER_MU, priority_order
from .review.store import plot_decisions
from .run_folder import read_plots, read_run_json

log = logging.getLogger(__name__)

TASK_ID_NAMESPACE = uuid.UUID("f885bc62-fde5-5a3d-862b-3ba74d82d7b8")  # uuid5(URL, "https://poppyscan/tasks")
MATCH_EXISTING_M = 3.0
RESULT_COLUMNS = [
    "status",
    "result",
    "plants_eradicated",
    "checked_by",
    "checked_at",
    "onsite_lon",
    "onsite_lat",
    "photo",
    "notes",
]
HEAD_COLUMNS = [
    "task_id",
    "task_code",
    "plot_id",
    "unit",
    "route_seq",
    "priority",
    "priority_class",
    "lon",
    "lat",
    "gcj02_lon",
    "gcj02_lat",
    "nav_amap",
    "nav_baidu",
    "area_m2",
    "area_mu",
    "prob_mean",
    "prob_max",
    "est_plants",
    "over_500_plants",
]
TAIL_COLUMNS = ["admin_name", "admin_status", "review", "mosaic", "chip"]
RESERVED = set(HEAD_COLUMNS + TAIL_COLUMNS + RESULT_COLUMNS + ["geometry"])


@dataclass(frozen=True)
class TasksSummary:
    """What :func:`build_tasks` did."""

    run_dir: Path
    n_plots: int
    n_tasks: int
    n_rejected: int
    n_outside: int
    n_criminal: int
    units: dict[str, int] = field(default_factory=dict)
    files: tuple[Path, ...] = ()
    chips_missing: int = 0


def _configs(config) -> tuple[TasksConfig, float, int]:
    if config is None:
        config = Config()
    if isinstance(config, TasksConfig):
        return config, Config().detect.plants_per_m2, Config().detect.criminal_plants
    return config.tasks, config.detect.plants_per_m2, config.detect.criminal_plants


def _centroids_wgs84(plots: gpd.GeoDataFrame) -> tuple[np.ndarray, np.ndarray]:
    """Each plot's WGS84 centroid: the ``lon``/``lat`` columns, computed from the geometry where they are
    missing or empty; longitudes in [-180, 180] (a plot east of the antimeridian gets -179.99, not 180.01)."""
    # copies: the columns' own arrays may be read-only
    lon = np.array(plots["lon"], float) if "lon" in plots.columns else np.full(len(plots), np.nan)
    lat = np.array(plots["lat"], float) if "lat" in plots.columns else np.full(len(plots), np.nan)
    bad = ~(np.isfinite(lon) & np.isfinite(lat))
    if bad.any():
        sub = plots[bad]
        metric = sub.estimate_utm_crs() if sub.crs and sub.crs.is_geographic else sub.crs
        pts = sub.geometry.to_crs(metric).centroid.to_crs("EPSG:4326")
        lon[bad], lat[bad] = pts.x.to_numpy(), pts.y.to_numpy()
    return wrap_lon(lon), lat


def _areas(plots: gpd.GeoDataFrame) -> np.ndarray:
    """Each plot's area in m²: ``area_m2``, measured on the geometry where it is missing or empty."""
    area = np.array(plots["area_m2"], float) if "area_m2" in plots.columns else np.full(len(plots), np.nan)
    bad = ~np.isfinite(area)
    if bad.any():
        sub = plots[bad]
        metric = sub.estimate_utm_crs() if sub.crs is None or sub.crs.is_geographic else sub.crs
        area[bad] = sub.geometry.to_crs(metric).area.to_numpy()
    return area


def _letters(i: int) -> str:
    s = ""
    i += 1
    while i:
        i, r = divmod(i - 1, 26)
        s = chr(65 + r) + s
    return s


def _nav_links(lon: float, lat: float, code: str) -> tuple[str, str]:
    name = quote(code)
    amap = (
        f"https://uri.amap.com/navigation?to={lon:.6f},{lat:.6f},{name}&mode=car&src=poppyscan"
        "&coordinate=wgs84&callnative=1"
    )
    baidu = (
        f"https://api.map.baidu.com/marker?location={lat:.6f},{lon:.6f}&title={name}&content={name}"
        "&output=html&coord_type=wgs84&src=webapp.poppyscan.tasks"
    )
    return amap, baidu


def _derived_ids(run: dict, run_dir: Path, mosaics, lon, lat) -> list[str]:
    run_key = str(run.get("run_id") or run.get("created") or run_dir.resolve())
    seen: dict[str, int] = {}
    ids = []
    for m, x, y in zip(mosaics, lon, lat, strict=True):
        key = f"{run_key}|{m}|{x:.5f}|{y:.5f}"
        k = seen.get(key, 0)
        seen[key] = k + 1
        ids.append(str(uuid.uuid5(TASK_ID_NAMESPACE, key if k == 0 else f"{key}#{k}")))
    return ids


def _keep_existing_ids(gpkg: Path, ids: list[str], lon: np.ndarray, lat: np.ndarray) -> list[str]:
    """Reuse ids of an existing ``tasks`` layer: same id kept; otherwise the nearest old task ≤ 3 m."""
    if not gpkg.exists() or "tasks" not in {n for n, _ in pyogrio.list_layers(gpkg)}:
        return ids
    old = pyogrio.read_dataframe(gpkg, layer="tasks", columns=["task_id"])
    if old.empty or "task_id" not in old.columns:
        return ids
    old = old.to_crs("EPSG:4326") if old.crs is not None else old
    old_ids = [str(v) for v in old["task_id"]]
    used = set(ids) & set(old_ids)
    free = [i for i, t in enumerate(old_ids) if t not in used]
    out = list(ids)
    if not free:
        return out
    ox, oy = old.geometry.x.to_numpy()[free], old.geometry.y.to_numpy()[free]
    for i, t in enumerate(ids):
        if t in used or not free:
            continue
        d = route.haversine_to(lon[i], lat[i], ox, oy)
        k = int(np.argmin(d))
        if d[k] <= MATCH_EXISTING_M:
            out[i] = old_ids[free[k]]
            used.add(out[i])
            free.pop(k)
            ox, oy = np.delete(ox, k), np.delete(oy, k)
    return out


def _parse_start(start) -> tuple[float, float] | None:
    if start is None:
        return None
    if isinstance(start, str):
        try:
            start = tuple(float(v) for v in start.split(","))
        except ValueError:
            start = ()
    if len(start) != 2 or not (-180 <= start[0] <= 180 and -90 <= start[1] <= 90):
        raise InputError(f"'start' must be LON,LAT in WGS84 degrees (e.g. 103.1,25.3), got {start!r}")
    return float(start[0]), float(start[1])


def make_task_table(
    run_dir: Path,
    plots: gpd.GeoDataFrame,
    run: dict,
    *,
    cfg: TasksConfig,
    plants_per_m2: float,
    criminal_plants: int,
    decisions: dict[int, str],
    admin=None,
    admin_fields=None,
    admin_gcj02=False,
    start=None,
    split_by=None,
) -> gpd.GeoDataFrame:
    """Build the task table (WGS84 points, sorted by unit and ``route_seq``) for the kept plots."""
    n = len(plots)
    lon, lat = _centroids_wgs84(plots)
    area = _areas(plots)
    t = pd.DataFrame({"plot_id": plots["plot_id"].to_numpy("int64"), "lon": lon, "lat": lat})
    t["area_m2"] = np.round(area, 2)
    t["area_mu"] = np.round(plots["area_mu"].to_numpy(float) if "area_mu" in plots else area / M2_PER_MU, 3)
    for c in ("prob_mean", "prob_max"):
        t[c] = np.round(plots[c].to_numpy(float), 3) if c in plots else np.nan
    est = plots["est_plants"].to_numpy(float) if "est_plants" in plots else area * plants_per_m2
    t["est_plants"] = np.round(np.nan_to_num(est)).astype("int64")
    over = t["est_plants"].to_numpy() >= criminal_plants  # where the layer does not say
    if "over_500_plants" in plots:
        given = plots["over_500_plants"].to_numpy(object)
        over = np.array([o if g is None or g != g else bool(g) for g, o in zip(given, over, strict=True)],
                        bool)
    t["over_500_plants"] = over
    t["priority_class"] = np.where(t["over_500_plants"], "criminal", "administrative")
    fields: list[str] = []
    if admin is not None:
        fields = list(admin_fields if admin_fields is not None else cfg.admin_fields)
        clash = sorted(set(fields) & RESERVED)
        if clash:
            raise InputError(
                f"--admin-fields {clash} clash with task columns; rename them in the boundary file"
            )
        bnd, codes = admin_mod.read_boundaries(admin, fields, gcj02=admin_gcj02)
        joined = admin_mod.join_admin(lon, lat, bnd, fields, codes)
        for c in joined.columns:
            t[c] = joined[c].to_numpy()
        t["admin_name"] = [" ".join(str(r[f]) for f in fields if r[f]) for r in joined.to_dict("records")]
    else:
        t["admin_name"] = ""
        t["admin_status"] = admin_mod.NOT_JOINED
    t["review"] = [decisions.get(int(p), "") for p in t["plot_id"]]
    t["mosaic"] = plots["mosaic"].astype(str).to_numpy() if "mosaic" in plots else ""
    # units
    if split_by:
        if split_by not in t.columns:
            raise InputError(
                f"--split-by field '{split_by}' is not a task column; choose one of "
                f"{', '.join(fields + ['admin_status', 'mosaic', 'priority_class', 'review'])}"
            )
        outside = t["admin_status"].eq(admin_mod.OUTSIDE)
        t["unit"] = [
            ("outside" if o else "unassigned") if v is None else v
            for v, o in zip(admin_mod.unit_names(t, split_by, fields), outside, strict=True)
        ]
    else:
        t["unit"] = "all"
    order = priority_order(t)  # criminal first, then expected poppy area, then plot_id
    t["priority"] = 0
    t.loc[t.index[order], "priority"] = np.arange(1, n + 1)
    # route per unit, codes
    units = sorted(t["unit"].unique(), key=lambda u: (u in ("outside", "unassigned"), u))
    prefixes = {u: _letters(i) for i, u in enumerate(units)}
    t["route_seq"] = 0
    for u in units:
        idx = t.index[t["unit"] == u]
        seq = route.route_order(t.loc[idx, "lon"].to_numpy(), t.loc[idx, "lat"].to_numpy(), start=start)
        t.loc[idx[seq], "route_seq"] = np.arange(1, len(idx) + 1)
    t["_u"] = t["unit"].map({u: i for i, u in enumerate(units)})
    t = t.sort_values(["_u", "route_seq"]).drop(columns="_u").reset_index(drop=True)
    width = max(3 if split_by else 4, len(str(t.groupby("unit").size().max() if n else 0)))
    t["task_code"] = [
        f"{prefixes[u] if split_by else 'T'}{s:0{width}d}"
        for u, s in zip(t["unit"], t["route_seq"], strict=True)
    ]
    # ids, coordinates, links
    t["lon"], t["lat"] = np.round(t["lon"], 7), np.round(t["lat"], 7)
    ids = _derived_ids(run, run_dir, t["mosaic"], t["lon"].to_numpy(), t["lat"].to_numpy())
    t["task_id"] = _keep_existing_ids(run_dir / "plots.gpkg", ids, t["lon"].to_numpy(), t["lat"].to_numpy())
    glon, glat = wgs84_to_gcj02(t["lon"].to_numpy(), t["lat"].to_numpy())
    t["gcj02_lon"], t["gcj02_lat"] = np.round(glon, 7), np.round(glat, 7)
    links = [_nav_links(x, y, c) for x, y, c in zip(t["lon"], t["lat"], t["task_code"], strict=True)]
    t["nav_amap"] = [a for a, _ in links]
    t["nav_baidu"] = [b for _, b in links]
    t["chip"] = ""
    t["status"] = "pending"
    for c in ("result", "checked_by", "checked_at", "photo", "notes"):
        t[c] = pd.Series([None] * len(t), dtype=object)
    t["plants_eradicated"] = pd.array([pd.NA] * len(t), dtype="Int64")
    t["onsite_lon"] = np.nan
    t["onsite_lat"] = np.nan
    admin_cols = [c for c in t.columns if c in fields or c.endswith("_code") and c[:-5] in fields]
    cols = HEAD_COLUMNS + admin_cols + TAIL_COLUMNS + RESULT_COLUMNS
    gdf = gpd.GeoDataFrame(t[cols], geometry=gpd.points_from_xy(t["lon"], t["lat"]), crs="EPSG:4326")
    gdf.attrs["admin_columns"] = admin_cols
    gdf.attrs["unit_prefixes"] = prefixes
    return gdf


def build_tasks(
    run_dir,
    *,
    config=None,
    admin=None,
    admin_fields=None,
    start=None,
    split_by=None,
    include_rejected: bool | None = None,
    admin_gcj02: bool = False,
) -> TasksSummary:
    """Turn a detect run into field-verification tasks and write every export into ``run_dir``.

    Parameters
    ----------
    run_dir
        A ``poppyscan detect`` output folder (``plots.gpkg``, ``run.json``).
    config
        A :class:`~poppyscan.config.Config` (or its :class:`TasksConfig`); defaults when None.
    admin, admin_fields
        Boundary layer (any OGR format, any CRS) and the name fields to copy (default
        ``config.tasks.admin_fields``).
    start
        ``(lon, lat)`` or ``"LON,LAT"`` (WGS84) where routes begin.
    split_by
        A task column (usually an admin field) — one package per value under ``units/``.
    include_rejected
        Also make tasks for desk-rejected plots (default ``config.tasks.include_rejected``).
    admin_gcj02
        The boundary layer's coordinates are GCJ-02 (digitised on Amap/Tencent); convert them first.
    """
    from .export import package  # heavy imports (cv2, openpyxl) only when writing

    run_dir = Path(run_dir)
    cfg, plants_per_m2, criminal_plants = _configs(config)
    include = cfg.include_rejected if include_rejected is None else include_rejected
    if admin is None and admin_fields is not None:
        raise InputError("--admin-fields needs --admin BOUNDARIES (the layer the fields come from)")
    start_xy = _parse_start(start)
    plots = read_plots(run_dir)
    run = read_run_json(run_dir)
    decisions = plot_decisions(run_dir, plots)
    rejected = plots["plot_id"].map(lambda p: decisions.get(int(p)) == "rejected").to_numpy(bool)
    kept = plots if include else plots[~rejected].reset_index(drop=True)
    tasks = make_task_table(
        run_dir,
        kept,
        run,
        cfg=cfg,
        plants_per_m2=plants_per_m2,
        criminal_plants=criminal_plants,
        decisions=decisions,
        admin=admin,
        admin_fields=admin_fields,
        admin_gcj02=admin_gcj02,
        start=start_xy,
        split_by=split_by,
    )
    if start_xy and len(tasks):
        d = route.haversine_to(start_xy[0], start_xy[1], tasks["lon"], tasks["lat"])
        if d.min() > 100_000:
            log.warning(
                "start %s is %.0f km from the nearest task: is it LON,LAT (not LAT,LON)?",
                start_xy,
                d.min() / 1000,
            )
    files, chips_missing = package.write_all(
        run_dir, tasks, kept, run, cfg=cfg, split_by=split_by, start=start_xy
    )
    summary = TasksSummary(
        run_dir=run_dir,
        n_plots=len(plots),
        n_tasks=len(tasks),
        n_rejected=int(rejected.sum()) if not include else 0,
        n_outside=int((tasks["admin_status"] == admin_mod.OUTSIDE).sum()),
        n_criminal=int(tasks["over_500_plants"].sum()),
        units={str(k): int(v) for k, v in tasks.groupby("unit", sort=False).size().items()},
        files=tuple(files),
        chips_missing=chips_missing,
    )
    log.info(
        "tasks: %d task(s) from %d plot(s) (%d rejected at the desk), %d unit(s), %d outside",
        summary.n_tasks,
        summary.n_plots,
        summary.n_rejected,
        len(summary.units),
        summary.n_outside,
    )
    return summary
