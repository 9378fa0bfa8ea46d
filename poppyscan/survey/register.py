"""Add detect runs to the survey register: the run, its surveyed area per unit, plots, sites, tasks.

Sites are linked by :mod:`.sites`. A plot rejected at the desk review and sent to no field team is kept
(``review = 'rejected'``, ``dismissed = 1``) but is not a finding (:data:`~.schema.FINDING`): it is linked
to a site like any plot, yet sites, repeats and statistics count findings only. Registering a run again
takes over changed desk decisions, recomputes its surveyed area (:mod:`.area`) and, with ``admin``,
re-assigns its units. Each plot's ``mosaic_index`` is what detect recorded, never a guess.
"""

from __future__ import annotations

import json
import logging
import math
import sqlite3
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import pandas as pd
import shapely

from ..errors import InputError
from .area import ha_text, insert_units, refresh_area
from .gpkg import to_blob, touch_contents
from .rundir import RunData, read_run
from .schema import ADMIN_FIELDS, begin, connect, now_iso
from .sites import link_sites, refresh_sites

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
    n_linked: int  # findings that joined a site already in the register
    surveyed_ha: float | None
    n_dismissed: int = 0  # plots rejected at the desk and sent to no field team (not findings)
    n_updated: int = 0  # registered again: plots whose desk decision or unit changed
    units_updated: bool = False  # registered again: the surveyed hectares per unit changed
    warnings: tuple[str, ...] = ()
    area_updated: bool = False  # registered again: the surveyed area was recomputed (footprint, hectares)
    surveyed_ha_before: float | None = None  # ... and the hectares recorded before

    def describe(self) -> str:
        if not self.created:
            text = (
                f"run #{self.run_id} ({self.flight_date}) was already registered; "
                f"{self.n_tasks_added} new task(s) added"
            )
            if self.n_updated:
                text += f", {self.n_updated} plot(s) with a new desk decision or unit"
            if self.area_updated:
                was = ha_text(self.surveyed_ha_before)
                text += f", surveyed area recomputed: {ha_text(self.surveyed_ha)} (was {was})"
            if self.units_updated:
                text += ", surveyed hectares per unit updated"
            return text
        ha = "surveyed area unknown" if self.surveyed_ha is None else f"{ha_text(self.surveyed_ha)} surveyed"
        dismissed = f", {self.n_dismissed} dismissed at the desk" if self.n_dismissed else ""
        return (
            f"registered run #{self.run_id}: flight {self.flight_date}, {ha}, "
            f"{self.n_plots} plot(s){dismissed} ({self.n_linked} at known sites, "
            f"{self.n_new_sites} new site(s)), {self.n_tasks_added} task(s)"
        )


def register_run(
    register: str | Path,
    run_dir: str | Path,
    *,
    flight_date: str | None = None,
    admin: str | Path | None = None,
    admin_fields: Sequence[str] | None = None,
    admin_gcj02: bool = False,
    link_distance_m: float = 15.0,
) -> RegisterSummary:
    """Add the detect run in ``run_dir`` to ``register`` (created if missing). Idempotent.

    Parameters
    ----------
    register, run_dir
        The register file and a ``poppyscan detect`` output folder.
    flight_date
        ``YYYY-MM-DD``, when the run does not record it (or to correct it).
    admin, admin_fields, admin_gcj02
        The options of ``poppyscan tasks``: boundary file, unit name fields (largest first, at most
        three; default: the admin fields of the run's tasks), GCJ-02 boundaries (see :mod:`.units`).
    link_distance_m
        Plots whose centroids are this close are the same site.

    Notes
    -----
    Registering the same run again adds tasks made since (``poppyscan tasks`` run later), takes over
    changed desk decisions, recomputes the surveyed area (footprint, hectares, hectares per unit: a
    register written by an older poppyscan gets today's figures) and, with ``admin``, re-assigns units;
    nothing else changes. Hectares split by unit by an earlier ``admin`` are recomputed only with
    ``admin`` (a warning says so when they differ). A different run over the same mosaics is refused, so a
    flight is never counted twice.
    """
    run = read_run(run_dir, flight_date=flight_date, admin=admin, admin_fields=admin_fields,
                   admin_gcj02=admin_gcj02)
    conn = connect(register, create=True)
    try:
        begin(conn, register)
        try:
            summary = _register(conn, run, link_distance_m)
            conn.execute("COMMIT")
        except BaseException:
            conn.execute("ROLLBACK")
            raise
    finally:
        conn.close()
    log.info(summary.describe())
    for warning in summary.warnings:
        log.warning("%s", warning)
    return summary


def _register(conn: sqlite3.Connection, run: RunData, link_distance_m: float) -> RegisterSummary:
    row = conn.execute("SELECT fid, flight_date FROM runs WHERE run_key = ?", (run.run_key,)).fetchone()
    if row is not None:
        added = _add_tasks(conn, row["fid"], run)
        if added:
            conn.execute("UPDATE runs SET n_tasks = n_tasks + ? WHERE fid = ?", (added, row["fid"]))
            touch_contents(conn, "tasks")
        n_updated = _refresh_run(conn, row["fid"], run)
        area = refresh_area(conn, row["fid"], run)
        return RegisterSummary(
            row["fid"], False, row["flight_date"], len(run.plots), added, 0, 0, area.surveyed_ha,
            run.n_dismissed, n_updated, area.units_updated, area.warnings, area.area_changed,
            area.surveyed_ha_before,
        )
    keys = (run.mosaic_key, *run.legacy_keys)
    twin = conn.execute(
        f"SELECT fid, run_dir, flight_date FROM runs WHERE mosaic_key IN ({', '.join('?' * len(keys))}) "  # noqa: S608
        "ORDER BY fid LIMIT 1",
        keys,
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
    insert_units(conn, run_id, run)
    site_ids, n_new, n_linked = link_sites(conn, run, link_distance_m)
    _insert_plots(conn, run_id, run, site_ids)
    refresh_sites(conn, set(site_ids))
    added = _add_tasks(conn, run_id, run)
    conn.execute("UPDATE runs SET n_tasks = ? WHERE fid = ?", (added, run_id))
    for table in ("runs", "plots", "sites", "tasks"):
        touch_contents(conn, table)
    return RegisterSummary(
        run_id, True, run.flight_date, len(run.plots), added, n_new, n_linked, run.surveyed_ha,
        run.n_dismissed, warnings=tuple(run.warnings),
    )


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
                str(p["review"]),
                int(p["dismissed"]),
                _num(p.get("mosaic_index"), int),
            )
        )
    conn.executemany(
        "INSERT INTO plots (geom, run_id, plot_id, site_id, flight_date, year, area_m2, area_mu, est_plants, "
        "over_500_plants, prob_mean, prob_max, lon, lat, mosaic, model_version, county, township, village, "
        "minx, miny, maxx, maxy, review, dismissed, mosaic_index) "
        "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
        rows,
    )


def _refresh_run(conn: sqlite3.Connection, run_id: int, run: RunData) -> int:
    """A run registered again: take over changed desk decisions and, when the run was read with a
    boundary file, its plots' and tasks' units (the surveyed area: :func:`refresh_area`). Returns how
    many plots changed."""
    cols = ("review", "dismissed", *(ADMIN_FIELDS if run.admin_given else ()))
    stored = {
        r["plot_id"]: r
        for r in conn.execute(
            f"SELECT fid, plot_id, site_id, {', '.join(cols)} FROM plots WHERE run_id = ?",  # noqa: S608
            (run_id,),
        )
    }
    sites: set[int] = set()
    n_plots = 0
    for pid, *values in zip(run.plots["plot_id"], *(run.plots[c] for c in cols), strict=True):
        old = stored.get(int(pid))
        if old is None:
            continue
        diff = {c: (int(v) if c == "dismissed" else str(v)) for c, v in zip(cols, values, strict=True)}
        diff = {c: v for c, v in diff.items() if old[c] != v}
        if not diff:
            continue
        sets = ", ".join(f"{c} = ?" for c in diff)
        conn.execute(f"UPDATE plots SET {sets} WHERE fid = ?", (*diff.values(), old["fid"]))  # noqa: S608
        n_plots += 1
        if "dismissed" in diff:
            sites.add(old["site_id"])
    refresh_sites(conn, sites)
    _fill_mosaic_index(conn, run_id, run)
    if run.admin_given:
        before = conn.total_changes
        conn.execute(
            "UPDATE tasks SET (county, township, village) = "
            "(SELECT county, township, village FROM plots WHERE fid = tasks.plot_fid) "
            "WHERE run_id = ? AND plot_fid IS NOT NULL AND (county, township, village) IS NOT "
            "(SELECT county, township, village FROM plots WHERE fid = tasks.plot_fid)",
            (run_id,),
        )
        if conn.total_changes > before:
            touch_contents(conn, "tasks")
    if n_plots:
        touch_contents(conn, "plots")
    if sites:
        touch_contents(conn, "sites")
    return n_plots


def _fill_mosaic_index(conn: sqlite3.Connection, run_id: int, run: RunData) -> None:
    """Each plot's ``mosaic_index`` as detect recorded it: filled in for plots registered before the
    register kept it (schema 3), and cleared where an earlier poppyscan stored a guess for a run folder
    that does not record it (export-labels places those plots when it exports them)."""
    before = conn.total_changes
    conn.executemany(
        "UPDATE plots SET mosaic_index = ? WHERE run_id = ? AND plot_id = ? AND mosaic_index IS NOT ?",
        [(k, run_id, int(pid), k)
         for pid, v in zip(run.plots["plot_id"], run.plots["mosaic_index"], strict=True)
         for k in (_num(v, int),)],
    )
    if conn.total_changes > before:
        touch_contents(conn, "plots")


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
