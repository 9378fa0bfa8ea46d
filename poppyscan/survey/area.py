"""The surveyed area of a run registered again: footprint, hectares and hectares per unit, kept together.

A register keeps a run's surveyed area three times: the footprint (``runs.geom`` and its bounds), the
hectares (``runs.surveyed_ha``) and the hectares per admin unit (``run_units``, which statistics divide
by). Registers written before the surveyed area became the union of every probability raster of a run
(or whose run folder gained a raster since) hold an older figure. Registering the run again recomputes
all three together, so the register never disagrees with itself. Hectares split by unit by an earlier
``--admin`` can only be split again with the boundary file: without ``--admin`` all three are kept as
recorded, and a warning gives the figure they would become.
"""

from __future__ import annotations

import math
import sqlite3
from dataclasses import dataclass

from .gpkg import to_blob, touch_contents
from .rundir import RunData


@dataclass(frozen=True)
class AreaUpdate:
    """What :func:`refresh_area` did."""

    surveyed_ha: float | None  # recorded now
    area_changed: bool  # the footprint or the hectares were recomputed
    surveyed_ha_before: float | None  # the hectares recorded before
    units_updated: bool  # the hectares per named unit changed
    warnings: tuple[str, ...]


def ha_text(value: float | None) -> str:
    return "unknown" if value is None else f"{value:.2f} ha"


def _same_ha(a: float | None, b: float | None) -> bool:
    if a is None or b is None:
        return a is None and b is None
    return math.isclose(a, b, rel_tol=0.0, abs_tol=1e-6)


def _units_key(units) -> list[tuple]:  # noqa: ANN001
    return sorted((*u[:3], round(u[3], 6)) for u in units)


def insert_units(conn: sqlite3.Connection, run_id: int, run: RunData) -> None:
    """Record ``run``'s surveyed hectares per unit for the registered run ``run_id``."""
    conn.executemany("INSERT INTO run_units VALUES (?, ?, ?, ?, ?)", [(run_id, *u) for u in run.units])


def refresh_area(conn: sqlite3.Connection, run_id: int, run: RunData) -> AreaUpdate:
    """Bring the recorded footprint, surveyed hectares and hectares per unit of the registered run
    ``run_id`` to those of ``run`` (read now), all three or none (see the module docstring)."""
    row = conn.execute("SELECT geom, surveyed_ha FROM runs WHERE fid = ?", (run_id,)).fetchone()
    old_units = conn.execute(
        "SELECT county, township, village, surveyed_ha FROM run_units WHERE run_id = ?", (run_id,)
    ).fetchall()
    recorded, now = row["surveyed_ha"], run.surveyed_ha
    if recorded is not None and not run.footprint_complete:
        kept = (f"the probability rasters of run #{run_id} cannot all be read now (moved or archived?), so "
                f"its recorded surveyed area {ha_text(recorded)} was kept (from what is left: "
                f"{ha_text(now)}); register it again with the run folder complete to recompute it")
    elif not run.admin_given and any(any(u[:3]) for u in old_units):
        kept = (f"the surveyed area of run #{run_id} is now {ha_text(now)} (recorded: "
                f"{ha_text(recorded)}) but its hectares are split by unit, so the recorded area was kept; "
                "register the run again with --admin BOUNDARIES (the file given before) to recompute it")
    else:
        kept = None
    if kept is not None:
        return AreaUpdate(recorded, False, recorded, False, () if _same_ha(recorded, now) else (kept,))
    units_changed = _units_key(old_units) != _units_key(run.units)
    if units_changed:
        conn.execute("DELETE FROM run_units WHERE run_id = ?", (run_id,))
        insert_units(conn, run_id, run)
    blob = to_blob(run.footprint)
    area_changed = not _same_ha(recorded, now) or blob != row["geom"]
    if area_changed:
        bounds = run.footprint.bounds if blob is not None else (None,) * 4
        conn.execute(
            "UPDATE runs SET geom = ?, surveyed_ha = ?, minx = ?, miny = ?, maxx = ?, maxy = ? WHERE fid = ?",
            (blob, now, *bounds, run_id),
        )
        touch_contents(conn, "runs")
    named = any(any(u[:3]) for u in (*old_units, *run.units))
    return AreaUpdate(now, area_changed, recorded, units_changed and named, tuple(run.warnings))
