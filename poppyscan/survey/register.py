"""Add detect runs to the survey register and link their plots into sites.

A **site** is one place across flights and years. A new plot joins an existing site when its polygon
overlaps one of the site's plots or its centroid lies within ``link_distance_m`` of one of their
centroids; otherwise it starts a new site (separate plots of one flight are separate sites, even when
close together). When several sites qualify the plot joins the one it overlaps most (else the nearest).
A plot whose site was already seen on an earlier flight date is a *repeat*.
"""

from __future__ import annotations

import json
import logging
import math
import sqlite3
from dataclasses import dataclass
from pathlib import Path

import geopandas as gpd
import numpy as np
import pandas as pd
import shapely
from shapely.strtree import STRtree

from ..errors import InputError
from .gpkg import from_blob, to_blob, touch_contents
from .rundir import RunData, read_run
from .schema import ADMIN_FIELDS, connect, now_iso

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class RegisterSummary:
    """What :func:`register_run` did."""

    run_id: int
    created: bool  # False: the run was already registered (only missing tasks were added)
    flight_date: str
    n_plots: int
    n_tasks_added: int
    n_new_sites: int
    n_linked: int  # plots that joined a site already in the register
    surveyed_ha: float | None

    def describe(self) -> str:
        if not self.created:
            return (
                f"run #{self.run_id} ({self.flight_date}) was already registered; "
                f"{self.n_tasks_added} new task(s) added"
            )
        ha = (
            f"{self.surveyed_ha:.2f} ha surveyed" if self.surveyed_ha is not None else "surveyed area unknown"
        )
        return (
            f"registered run #{self.run_id}: flight {self.flight_date}, {ha}, {self.n_plots} plot(s) "
            f"({self.n_linked} at known sites, {self.n_new_sites} new site(s)), {self.n_tasks_added} task(s)"
        )


def register_run(
    register: str | Path,
    run_dir: str | Path,
    *,
    flight_date: str | None = None,
    admin: str | Path | None = None,
    link_distance_m: float = 15.0,
) -> RegisterSummary:
    """Add the detect run in ``run_dir`` to ``register`` (created if missing). Idempotent.

    Registering the same run again adds only tasks made since (``poppyscan tasks`` run later) and
    changes nothing else. A different run over the same mosaics is refused, so a flight is never
    counted twice.
    """
    run = read_run(run_dir, flight_date=flight_date, admin=admin)
    conn = connect(register, create=True)
    try:
        conn.execute("BEGIN IMMEDIATE")
        try:
            summary = _register(conn, run, link_distance_m)
            conn.execute("COMMIT")
        except BaseException:
            conn.execute("ROLLBACK")
            raise
    finally:
        conn.close()
    log.info(summary.describe())
    return summary


def _register(conn: sqlite3.Connection, run: RunData, link_distance_m: float) -> RegisterSummary:
    row = conn.execute("SELECT fid, flight_date FROM runs WHERE run_key = ?", (run.run_key,)).fetchone()
    if row is not None:
        added = _add_tasks(conn, row["fid"], run)
        if added:
            conn.execute("UPDATE runs SET n_tasks = n_tasks + ? WHERE fid = ?", (added, row["fid"]))
            touch_contents(conn, "tasks")
        return RegisterSummary(
            row["fid"], False, row["flight_date"], len(run.plots), added, 0, 0, run.surveyed_ha
        )
    twin = conn.execute(
        "SELECT fid, run_dir, flight_date FROM runs WHERE mosaic_key = ?", (run.mosaic_key,)
    ).fetchone()
    if twin is not None:
        raise InputError(
            f"the mosaics of '{run.run_dir}' are already registered as run #{twin['fid']} "
            f"('{twin['run_dir']}', flight {twin['flight_date']}); a flight is registered once"
        )
    fp = run.footprint
    bounds = fp.bounds if fp is not None else (None,) * 4
    cur = conn.execute(
        "INSERT INTO runs (geom, run_key, run_dir, flight_date, year, mosaics, mosaic_paths, mosaic_key, "
        "model_version, crs, "
        "surveyed_ha, n_plots, n_tasks, registered_at, minx, miny, maxx, maxy) "
        "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, 0, ?, ?, ?, ?, ?)",
        (
            to_blob(fp),
            run.run_key,
            str(run.run_dir),
            run.flight_date,
            int(run.flight_date[:4]),
            json.dumps(run.mosaics, ensure_ascii=False),
            json.dumps(run.mosaic_paths, ensure_ascii=False),
            run.mosaic_key,
            run.model_version,
            run.crs,
            run.surveyed_ha,
            len(run.plots),
            now_iso(),
            *bounds,
        ),
    )
    run_id = cur.lastrowid
    conn.executemany("INSERT INTO run_units VALUES (?, ?, ?, ?, ?)", [(run_id, *u) for u in run.units])
    site_ids, n_new, n_linked = _link_sites(conn, run, link_distance_m)
    _insert_plots(conn, run_id, run, site_ids)
    _refresh_sites(conn, set(site_ids))
    added = _add_tasks(conn, run_id, run)
    conn.execute("UPDATE runs SET n_tasks = ? WHERE fid = ?", (added, run_id))
    for table in ("runs", "plots", "sites", "tasks"):
        touch_contents(conn, table)
    return RegisterSummary(
        run_id, True, run.flight_date, len(run.plots), added, n_new, n_linked, run.surveyed_ha
    )


def _link_sites(conn: sqlite3.Connection, run: RunData, d: float) -> tuple[list[int], int, int]:
    """Site id for each plot of ``run`` (new sites created as needed);
    also counts new sites and linked plots."""
    plots = run.plots
    n = len(plots)
    if n == 0:
        return [], 0, 0
    metric = run.metric_crs
    new_m = np.asarray(gpd.GeoSeries(plots.geometry.values, crs=4326).to_crs(metric).values)
    new_m = shapely.make_valid(new_m)
    new_c = shapely.centroid(new_m)

    # existing plots near this run: bbox prefilter in degrees, exact tests in metres
    minx, miny, maxx, maxy = plots.total_bounds
    pad_lat = d / 111_320 + 1e-6
    pad_lon = d / (111_320 * max(0.05, math.cos(math.radians((miny + maxy) / 2)))) + 1e-6
    rows = conn.execute(
        "SELECT site_id, geom FROM plots WHERE maxx >= ? AND minx <= ? AND maxy >= ? AND miny <= ?",
        (minx - pad_lon, maxx + pad_lon, miny - pad_lat, maxy + pad_lat),
    ).fetchall()
    old_sites = np.array([r["site_id"] for r in rows], dtype=np.int64)
    if rows:
        old_m = np.asarray(
            gpd.GeoSeries([from_blob(r["geom"]) for r in rows], crs=4326).to_crs(metric).values
        )
        old_m = shapely.make_valid(old_m)
        old_c = shapely.centroid(old_m)
        old_tree = STRtree(old_m)

    # best existing site per plot: (overlap first, larger overlap, then nearer centroid)
    best: dict[int, tuple[tuple[int, float], int]] = {}
    if rows:
        for i in range(n):
            for k in old_tree.query(shapely.buffer(new_m[i], d)):
                ok, score = _linked(new_m[i], new_c[i], old_m[k], old_c[k], d)
                if ok and (i not in best or score < best[i][0]):
                    best[i] = (score, int(old_sites[k]))

    site_ids: list[int] = []
    for i in range(n):
        if i in best:
            site_ids.append(best[i][1])
            continue
        c = shapely.centroid(plots.geometry.iloc[i])
        cur = conn.execute(
            "INSERT INTO sites (geom, site_code, first_seen, last_seen, n_detections, "
            "minx, miny, maxx, maxy) VALUES (?, '', ?, ?, 0, ?, ?, ?, ?)",
            (to_blob(c), run.flight_date, run.flight_date, c.x, c.y, c.x, c.y),
        )
        conn.execute("UPDATE sites SET site_code = ? WHERE fid = ?", (f"S{cur.lastrowid:06d}", cur.lastrowid))
        site_ids.append(cur.lastrowid)
    return site_ids, n - len(best), len(best)


def _linked(a, ac, b, bc, d: float) -> tuple[bool, tuple[int, float]]:
    """Whether two metric plot polygons are the same place, and a sort score (lower is better)."""
    overlap = shapely.intersection(a, b).area if shapely.intersects(a, b) else 0.0
    if overlap > 0:
        return True, (0, -overlap)
    dist = shapely.distance(ac, bc)
    return dist <= d, (1, dist)


def _num(value, cast=float):
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return None
    try:
        return cast(value)
    except (TypeError, ValueError):
        return None


def _insert_plots(conn: sqlite3.Connection, run_id: int, run: RunData, site_ids: list[int]) -> None:
    plots = run.plots
    rows = []
    for i, (_, p) in enumerate(plots.iterrows()):
        g = p.geometry
        c = g.centroid if g is not None else None
        bounds = g.bounds if g is not None else (None,) * 4
        lon = _num(p.get("lon")) if "lon" in plots.columns else None
        lat = _num(p.get("lat")) if "lat" in plots.columns else None
        over = p.get("over_500_plants")
        rows.append(
            (
                to_blob(g),
                run_id,
                int(p["plot_id"]),
                site_ids[i],
                run.flight_date,
                int(run.flight_date[:4]),
                _num(p.get("area_m2")),
                _num(p.get("area_mu")),
                _num(p.get("est_plants")),
                None if over is None or (isinstance(over, float) and math.isnan(over)) else int(bool(over)),
                _num(p.get("prob_mean")),
                _num(p.get("prob_max")),
                lon if lon is not None else (c.x if c is not None else None),
                lat if lat is not None else (c.y if c is not None else None),
                str(p.get("mosaic")) if p.get("mosaic") is not None else None,
                str(p.get("model_version") or run.model_version or "") or None,
                *(str(p.get(f) or "") for f in ADMIN_FIELDS),
                *bounds,
            )
        )
    conn.executemany(
        "INSERT INTO plots (geom, run_id, plot_id, site_id, flight_date, year, area_m2, area_mu, est_plants, "
        "over_500_plants, prob_mean, prob_max, lon, lat, mosaic, model_version, county, township, village, "
        "minx, miny, maxx, maxy) "
        "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
        rows,
    )


def _refresh_sites(conn: sqlite3.Connection, site_ids: set[int]) -> None:
    """Recompute each site's point (mean member centroid), first/last seen and detection count."""
    for sid in site_ids:
        r = conn.execute(
            "SELECT avg(lon) AS x, avg(lat) AS y, min(flight_date) AS f, max(flight_date) AS l, "
            "count(*) AS n FROM plots WHERE site_id = ?",
            (sid,),
        ).fetchone()
        point = shapely.Point(r["x"], r["y"])
        conn.execute(
            "UPDATE sites SET geom=?, first_seen=?, last_seen=?, n_detections=?, "
            "minx=?, miny=?, maxx=?, maxy=? WHERE fid=?",
            (to_blob(point), r["f"], r["l"], r["n"], r["x"], r["y"], r["x"], r["y"], sid),
        )


def _add_tasks(conn: sqlite3.Connection, run_id: int, run: RunData) -> int:
    """Insert the run's tasks not yet in the register (by ``task_id``); returns how many were added."""
    if run.tasks.empty:
        return 0
    plot_fid = {
        r["plot_id"]: r["fid"]
        for r in conn.execute("SELECT fid, plot_id FROM plots WHERE run_id = ?", (run_id,))
    }
    known = {r[0] for r in conn.execute("SELECT task_id FROM tasks WHERE run_id = ?", (run_id,))}
    rows = []
    for t in run.tasks.itertuples(index=False):
        if not t.task_id or t.task_id in known or t.task_id.lower() in ("nan", "none"):
            continue
        pid = _num(t.plot_id, lambda v: int(float(v)))
        lon, lat = _num(t.lon), _num(t.lat)
        point = shapely.Point(lon, lat) if lon is not None and lat is not None else None
        b = (lon, lat, lon, lat) if point is not None else (None,) * 4
        prio = (
            None
            if t.priority is None or (isinstance(t.priority, float) and math.isnan(t.priority))
            else str(t.priority)
        )
        rows.append(
            (
                to_blob(point),
                t.task_id,
                None if pd.isna(t.task_code) else str(t.task_code),
                run_id,
                plot_fid.get(pid),
                pid,
                lon,
                lat,
                prio,
                _num(t.route_seq, lambda v: int(float(v))),
                t.county,
                t.township,
                t.village,
                *b,
            )
        )
        known.add(t.task_id)
    before = conn.total_changes
    conn.executemany(
        "INSERT OR IGNORE INTO tasks (geom, task_id, task_code, run_id, plot_fid, plot_id, lon, lat, "
        "priority, route_seq, county, township, village, minx, miny, maxx, maxy) "
        "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
        rows,
    )
    return conn.total_changes - before
