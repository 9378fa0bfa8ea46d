"""Statistics from the survey register, per admin unit and year, with year-on-year change.

Definitions (per unit and flight year; a plot's year is its flight's):

- ``plots_found``: detected plots that are findings (:data:`~.schema.FINDING`): not those rejected at the
  desk review and sent to no field team, which are counted as ``dismissed`` and nowhere else;
  ``sites``: distinct places among the findings; ``repeat_sites``: those with a finding in an earlier
  year; ``flights``: registered runs with plots or surveyed area there.
- ``checked``: tasks with an on-site verdict (poppy, not_poppy, already_eradicated);
  ``verified_poppy`` / ``false_positives`` / ``already_eradicated`` / ``not_reached`` by result;
  ``pending``: findings without a result yet.
- ``plants_eradicated``: sum reported by the teams.
- ``dismissed``: plots rejected at the desk review and sent to no field team.
- ``area_found_m2``/``_mu``: area of all detected plots; ``area_poppy_m2``/``_mu``: of verified poppy.
- ``surveyed_ha``: area flown (footprint ∩ unit when the run had a boundary layer).
- ``precision``: share of checked detections that were poppy, i.e.
  (verified_poppy + already_eradicated) / checked — an already-eradicated plot was poppy, so the
  detector was right about it.
- ``yoy_*_pct``: change against the same unit the year before, in %; empty when there was no figure
  (or zero) the year before.
"""

from __future__ import annotations

import sqlite3
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path

from ..plots import M2_PER_MU
from .schema import ADMIN_FIELDS, FINDING, connect

LEVELS = ("county", "township", "village", "all")
UNASSIGNED = "(unassigned)"
TOTAL = "TOTAL"

COLUMNS = (
    "year",
    "flights",
    "surveyed_ha",
    "plots_found",
    "dismissed",
    "sites",
    "repeat_sites",
    "checked",
    "verified_poppy",
    "false_positives",
    "already_eradicated",
    "not_reached",
    "pending",
    "plants_eradicated",
    "area_found_m2",
    "area_found_mu",
    "area_poppy_m2",
    "area_poppy_mu",
    "plots_per_100ha",
    "precision",
)
YOY = (
    "plots_found",
    "sites",
    "verified_poppy",
    "plants_eradicated",
    "area_found_m2",
    "surveyed_ha",
    "plots_per_100ha",
)

LABELS_ZH = {
    "county": "县",
    "township": "乡镇",
    "village": "村",
    "year": "年份",
    "flights": "架次",
    "surveyed_ha": "航测面积(公顷)",
    "plots_found": "发现地块",
    "dismissed": "内业排除",
    "sites": "点位",
    "repeat_sites": "复种点位",
    "checked": "已核查",
    "verified_poppy": "核实罂粟",
    "false_positives": "误报",
    "already_eradicated": "已铲除",
    "not_reached": "未到达",
    "pending": "待核查",
    "plants_eradicated": "铲除株数",
    "area_found_m2": "发现面积(m²)",
    "area_found_mu": "发现面积(亩)",
    "area_poppy_m2": "罂粟面积(m²)",
    "area_poppy_mu": "罂粟面积(亩)",
    "plots_per_100ha": "每百公顷地块",
    "precision": "识别准确率",
    **{
        f"yoy_{k}_pct": f"同比{v}(%)"
        for k, v in {
            "plots_found": "发现地块",
            "sites": "点位",
            "verified_poppy": "核实罂粟",
            "plants_eradicated": "铲除株数",
            "area_found_m2": "发现面积",
            "surveyed_ha": "航测面积",
            "plots_per_100ha": "每百公顷地块",
        }.items()
    },
}


@dataclass
class StatsTable:
    """Rows of statistics (dicts keyed by :attr:`columns`), sorted by unit then year."""

    by: str
    unit_columns: tuple[str, ...]
    columns: tuple[str, ...]
    rows: list[dict]
    totals: list[dict]  # one row per year over all units (unit columns say TOTAL)

    def all_rows(self) -> list[dict]:
        """Unit rows, then the per-year totals (when grouped by a unit)."""
        return self.rows + self.totals if self.unit_columns else self.rows


def unit_columns(by: str) -> tuple[str, ...]:
    if by not in LEVELS:
        from ..errors import InputError

        raise InputError(f"'by' must be one of {', '.join(LEVELS)}, got {by!r}")
    return () if by == "all" else ADMIN_FIELDS[: ADMIN_FIELDS.index(by) + 1]


def compute_stats(register: str | Path, *, by: str = "county", year: int | None = None) -> StatsTable:
    """Statistics per unit (``by``) and year; with ``year`` only that year's rows (y-o-y still vs year-1)."""
    ucols = unit_columns(by)
    conn = connect(register, readonly=True)  # never writes: an older register is upgraded in memory
    try:
        rows = _compute(conn, ucols)
        totals = _compute(conn, ()) if ucols else rows
    finally:
        conn.close()
    totals = [{c: TOTAL for c in ucols} | r for r in totals]
    if year is not None:
        rows = [r for r in rows if r["year"] == year]
        totals = [r for r in totals if r["year"] == year]
    columns = (*ucols, *COLUMNS, *(f"yoy_{k}_pct" for k in YOY))
    return StatsTable(by, ucols, columns, rows, totals)


def _unit(row: sqlite3.Row, ucols: tuple[str, ...]) -> tuple[str, ...]:
    return tuple((row[c] or UNASSIGNED) for c in ucols)


def _compute(conn: sqlite3.Connection, ucols: tuple[str, ...]) -> list[dict]:
    acc: dict[tuple, dict] = defaultdict(
        lambda: (
            {k: 0 for k in COLUMNS if k not in ("year", "precision")}
            | {"_runs": set(), "_sites": set(), "_repeat": set()}
        )
    )
    first_year = {
        r["site_id"]: r["y"]
        for r in conn.execute(
            f"SELECT p.site_id, min(p.year) AS y FROM plots p WHERE {FINDING} GROUP BY p.site_id"  # noqa: S608
        )
    }
    plots = conn.execute(
        f"SELECT p.run_id, p.site_id, p.year, p.area_m2, p.county, p.township, p.village, "  # noqa: S608
        f"{FINDING} AS finding, t.result, t.plants_eradicated "
        "FROM plots p LEFT JOIN tasks t ON t.plot_fid = p.fid"
    )
    for r in plots:
        a = acc[(_unit(r, ucols), r["year"])]
        a["_runs"].add(r["run_id"])
        if not r["finding"]:
            a["dismissed"] += 1
            continue
        a["_sites"].add(r["site_id"])
        if first_year[r["site_id"]] < r["year"]:
            a["_repeat"].add(r["site_id"])
        a["plots_found"] += 1
        area = r["area_m2"] or 0.0
        a["area_found_m2"] += area
        res = r["result"]
        if res in ("poppy", "not_poppy", "already_eradicated"):
            a["checked"] += 1
        key = {
            "poppy": "verified_poppy",
            "not_poppy": "false_positives",
            "already_eradicated": "already_eradicated",
            "not_reached": "not_reached",
        }.get(res or "", "pending")
        a[key] += 1
        if res == "poppy":
            a["area_poppy_m2"] += area
        a["plants_eradicated"] += r["plants_eradicated"] or 0
    for r in conn.execute(
        "SELECT u.run_id, r.year, u.county, u.township, u.village, u.surveyed_ha "
        "FROM run_units u JOIN runs r ON r.fid = u.run_id"
    ):
        a = acc[(_unit(r, ucols), r["year"])]
        a["surveyed_ha"] += r["surveyed_ha"] or 0.0
        a["_runs"].add(r["run_id"])

    out = []
    for (unit, yr), a in acc.items():
        row = dict(zip(ucols, unit, strict=True)) | {"year": yr}
        row |= {k: v for k, v in a.items() if not k.startswith("_")}
        row["flights"] = len(a["_runs"])
        row["sites"] = len(a["_sites"])
        row["repeat_sites"] = len(a["_repeat"])
        row["area_found_mu"] = row["area_found_m2"] / M2_PER_MU
        row["area_poppy_mu"] = row["area_poppy_m2"] / M2_PER_MU
        row["plots_per_100ha"] = 100 * row["plots_found"] / row["surveyed_ha"] if row["surveyed_ha"] else None
        true_pos = row["verified_poppy"] + row["already_eradicated"]
        row["precision"] = true_pos / row["checked"] if row["checked"] else None
        if not row["surveyed_ha"]:
            row["surveyed_ha"] = None if not a["surveyed_ha"] else a["surveyed_ha"]
        out.append(row)
    index = {(tuple(r[c] for c in ucols), r["year"]): r for r in out}
    for r in out:
        prev = index.get((tuple(r[c] for c in ucols), r["year"] - 1))
        for k in YOY:
            before = prev.get(k) if prev else None
            now = r.get(k) or 0
            r[f"yoy_{k}_pct"] = 100.0 * (now - before) / before if before else None
    out.sort(key=lambda r: (tuple(r[c] for c in ucols), r["year"]))
    return out
