"""Import field-verification results into the survey register.

Rows are merged by the immutable ``task_id`` (never by row order or feature id). Every row is
validated; a rejected row is reported by its row number (feature id for a GeoPackage) and reason and
changes nothing, while the valid rows are applied together in one transaction. An empty cell means
"no news" and never clears a value already recorded, so partial files from several teams merge.
Each changed field adds one ``status_history`` row (who, when, old → new, source file and row);
a field that already holds the same value adds nothing, so importing a file twice changes nothing.
"""

from __future__ import annotations

import hashlib
import math
import sqlite3
from dataclasses import dataclass, field
from datetime import date, datetime, timedelta
from functools import lru_cache
from pathlib import Path
from typing import Any

import numpy as np
import shapely
from pyproj import Transformer

from ..errors import InputError
from ..geo.utm import utm_epsg
from ..tasks import RESULT_COLUMNS
from .fieldfile import read_field_table
from .gpkg import from_blob
from .schema import ADMIN_FIELDS, RESULT_VALUES, connect, now_iso

# the field team's columns, as `poppyscan tasks` writes them (status is ours, not theirs)
RESULT_FIELDS = tuple(c for c in RESULT_COLUMNS if c != "status")
# columns poppyscan tasks writes that describe the task, not the result: read and ignored
ISSUE_FIELDS = {
    "task_code",
    "plot_id",
    "lon",
    "lat",
    "gcj02_lon",
    "gcj02_lat",
    "area_m2",
    "area_mu",
    "est_plants",
    "over_500_plants",
    "priority",
    "route_seq",
    "status",
    "prob_mean",
    "prob_max",
    "probability",
    "amap_url",
    "baidu_url",
    "amap_link",
    "baidu_link",
    "nav_amap",
    "nav_baidu",
    "chip",
    "site_code",
    "fid",
    "geometry",
    "admin_status",
    "geom",
    "mosaic",
    "model_version",
    "flight_date",
    "outside_units",
    "admin_flag",
    *ADMIN_FIELDS,
    *(f"{a}_code" for a in ADMIN_FIELDS),
}
RESULT_ALIASES = {
    "罂粟": "poppy",
    "是罂粟": "poppy",
    "非罂粟": "not_poppy",
    "不是罂粟": "not_poppy",
    "误报": "not_poppy",
    "已铲除": "already_eradicated",
    "未到达": "not_reached",
    "未到": "not_reached",
    "notpoppy": "not_poppy",
    "false_positive": "not_poppy",
    "eradicated": "already_eradicated",
}
VERDICTS = ("poppy", "not_poppy", "already_eradicated")
DEFAULT_MAX_DISTANCE_M = 200.0


@dataclass(frozen=True)
class RejectedRow:
    row: int
    task_id: str | None
    reason: str
    label: str = "row"

    def __str__(self) -> str:
        tid = f" (task_id {self.task_id})" if self.task_id else ""
        return f"{self.label} {self.row}{tid}: {self.reason}"


@dataclass
class ImportReport:
    """What :func:`import_results` found and did."""

    source: Path
    n_rows: int = 0
    n_changed_rows: int = 0
    n_unchanged_rows: int = 0
    n_field_changes: int = 0
    rejected: list[RejectedRow] = field(default_factory=list)
    ignored_columns: list[str] = field(default_factory=list)
    dry_run: bool = False

    def describe(self) -> str:
        verb = "would update" if self.dry_run else "updated"
        lines = [
            f"{self.source.name}: {self.n_rows} row(s): {verb} {self.n_changed_rows} task(s) "
            f"({self.n_field_changes} field change(s)), {self.n_unchanged_rows} unchanged, "
            f"{len(self.rejected)} rejected"
        ]
        if self.ignored_columns:
            lines.append(f"ignored column(s) not known to poppyscan: {', '.join(self.ignored_columns)}")
        lines += [f"  rejected {r}" for r in self.rejected]
        if (
            self.rejected
            and all(r.reason.startswith("unknown task_id") for r in self.rejected)
            and self.n_changed_rows + self.n_unchanged_rows == 0
        ):
            lines.append(
                "no task_id in the file is in the register: register its run first with "
                "'poppyscan results register RUN_DIR'"
            )
        return "\n".join(lines)


def import_results(
    register: str | Path,
    path: str | Path,
    *,
    layer: str | None = None,
    max_distance_m: float = DEFAULT_MAX_DISTANCE_M,
    dry_run: bool = False,
    today: date | None = None,
) -> ImportReport:
    """Validate ``path`` against ``register`` and apply its valid rows in one transaction."""
    if not max_distance_m > 0:
        raise InputError(f"'max_distance_m' must be > 0, got {max_distance_m}")
    table = read_field_table(path, layer=layer)
    if "task_id" not in table.columns:
        raise InputError(
            f"results file '{table.path}' has no 'task_id' column (columns: "
            f"{', '.join(table.columns) or 'none'}); send back the task list poppyscan wrote, "
            "with its task_id column"
        )
    present = [c for c in RESULT_FIELDS if c in table.columns]
    if not present:
        raise InputError(
            f"results file '{table.path}' has none of the result columns ({', '.join(RESULT_FIELDS)}); "
            f"its columns are {', '.join(table.columns)}"
        )
    report = ImportReport(
        source=table.path,
        n_rows=len(table.rows),
        dry_run=dry_run,
        ignored_columns=[
            c for c in table.columns if c not in RESULT_FIELDS and c not in ISSUE_FIELDS and c != "task_id"
        ],
    )
    today = today or date.today()
    source = str(table.path.resolve())
    digest = hashlib.sha256(table.path.read_bytes()).hexdigest()
    conn = connect(register)
    try:
        conn.execute("BEGIN IMMEDIATE")
        try:
            _apply(conn, table, report, max_distance_m, today, source, digest)
            conn.execute("ROLLBACK" if dry_run else "COMMIT")
        except BaseException:
            conn.execute("ROLLBACK")
            raise
    finally:
        conn.close()
    return report


def _apply(
    conn: sqlite3.Connection, table, report: ImportReport, max_d: float, today: date, source: str, digest: str
) -> None:
    seen: dict[str, int] = {}
    changes: list[tuple[int, str, dict[str, Any], sqlite3.Row]] = []
    for n, cells in table.rows:
        tid = cells.get("task_id")
        tid = str(tid).strip() if tid is not None else None

        def reject(reason: str, n=n, tid=tid) -> None:
            report.rejected.append(RejectedRow(n, tid, reason, table.row_label))

        if not tid:
            reject("task_id is empty")
            continue
        if tid in seen:
            reject(f"duplicate task_id (first on {table.row_label} {seen[tid]})")
            continue
        seen[tid] = n
        current = conn.execute("SELECT * FROM tasks WHERE task_id = ?", (tid,)).fetchone()
        if current is None:
            reject(f"unknown task_id '{tid}' (not in the register)")
            continue
        try:
            new = _validate(cells, current, conn, max_d, today)
        except ValueError as exc:
            reject(str(exc))
            continue
        diff = {k: v for k, v in new.items() if not _same(current[k], v)}
        if diff:
            changes.append((n, tid, diff, current))
        else:
            report.n_unchanged_rows += 1
    if not changes:
        return
    now = now_iso()
    cur = conn.execute(
        "INSERT INTO imports (source_file, sha256, imported_at, n_rows, n_changed, n_rejected) "
        "VALUES (?, ?, ?, ?, ?, ?)",
        (source, digest, now, report.n_rows, len(changes), len(report.rejected)),
    )
    import_id = cur.lastrowid
    for n, tid, diff, current in changes:
        who = diff.get("checked_by", current["checked_by"])
        when = diff.get("checked_at", current["checked_at"])
        conn.executemany(
            "INSERT INTO status_history (task_id, field, old_value, new_value, changed_by, checked_at, "
            "recorded_at, source_file, source_row, import_id) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
            [
                (tid, k, _text(current[k]), _text(v), who, when, now, source, n, import_id)
                for k, v in diff.items()
            ],
        )
        sets = ", ".join(f"{k} = ?" for k in diff)
        conn.execute(
            f"UPDATE tasks SET {sets}, updated_at = ? WHERE task_id = ?",  # noqa: S608 - names are ours
            (*diff.values(), now, tid),
        )
        report.n_changed_rows += 1
        report.n_field_changes += len(diff)


def _text(v: Any) -> str | None:
    return None if v is None else str(v)


def _same(old: Any, new: Any) -> bool:
    if old is None or new is None:
        return old is None and new is None
    if isinstance(new, float) or isinstance(old, float):
        try:
            return math.isclose(float(old), float(new), rel_tol=0, abs_tol=1e-9)
        except (TypeError, ValueError):
            return False
    return str(old) == str(new)


def _validate(
    cells: dict[str, Any], current: sqlite3.Row, conn: sqlite3.Connection, max_d: float, today: date
) -> dict[str, Any]:
    """The task fields this row sets (empty cells set nothing); raises ValueError with the reason."""
    new: dict[str, Any] = {}
    problems: list[str] = []
    raw = cells.get("result")
    if raw is not None:
        key = str(raw).strip().lower().replace(" ", "_").replace("-", "_")
        value = RESULT_ALIASES.get(key, RESULT_ALIASES.get(str(raw).strip(), key))
        if value in RESULT_VALUES:
            new["result"] = value
            new["status"] = "done"  # the task statuses poppyscan tasks styles: pending / done
        else:
            problems.append(f"invalid result '{raw}' (expected one of {', '.join(RESULT_VALUES)})")
    raw = cells.get("plants_eradicated")
    if raw is not None:
        try:
            number = float(str(raw).replace(",", "")) if not isinstance(raw, (int, float)) else float(raw)
            if not math.isfinite(number) or number != int(number):
                raise ValueError
            if number < 0:
                problems.append(f"plants_eradicated {raw} is negative")
            else:
                new["plants_eradicated"] = int(number)
        except (TypeError, ValueError):
            problems.append(f"plants_eradicated '{raw}' is not a whole number")
    raw = cells.get("checked_at")
    if raw is not None:
        try:
            when = parse_when(raw)
            if when[:10] > (today + timedelta(days=1)).isoformat():
                problems.append(f"checked_at '{raw}' is in the future")
            else:
                new["checked_at"] = when
        except ValueError:
            problems.append(f"checked_at '{raw}' is not a date (use YYYY-MM-DD or YYYY-MM-DD HH:MM)")
    for name in ("checked_by", "photo", "notes"):
        if cells.get(name) is not None:
            new[name] = str(cells[name]).strip()
    lon, lat = cells.get("onsite_lon"), cells.get("onsite_lat")
    if (lon is None) != (lat is None):
        problems.append("onsite_lon and onsite_lat must be given together")
    elif lon is not None:
        try:
            x, y = float(lon), float(lat)
        except (TypeError, ValueError):
            problems.append(f"onsite position '{lon}, {lat}' is not a WGS84 lon/lat in degrees")
        else:
            dist = _distance_to_plot(conn, current, x, y)
            if dist is not None and dist > max_d:
                swapped = _distance_to_plot(conn, current, y, x)
                hint = (
                    "lon and lat look swapped"
                    if swapped is not None and swapped <= max_d
                    else "check it is WGS84 lon/lat (not GCJ-02/Amap) and the right task"
                )
                where = (
                    f"is {dist:,.0f} m from the plot (limit {max_d:g} m)"
                    if dist < 1e6
                    else "is not near the plot"
                )
                problems.append(f"onsite position '{lon}, {lat}' {where}; {hint}")
            else:
                new["onsite_lon"], new["onsite_lat"] = x, y
    result = new.get("result", current["result"])
    plants = new.get("plants_eradicated", current["plants_eradicated"])
    if result in ("not_poppy", "not_reached") and plants:
        problems.append(f"plants_eradicated is {plants} but result is {result}")
    if problems:
        raise ValueError("; ".join(problems))
    return new


_FORMATS = ("%Y/%m/%d %H:%M:%S", "%Y/%m/%d %H:%M", "%Y/%m/%d", "%Y.%m.%d", "%Y年%m月%d日", "%Y-%m-%d %H:%M")


def parse_when(value: Any) -> str:
    """An ISO 8601 string (date, or date and time to the second) from a cell; ValueError if unparseable."""
    if isinstance(value, datetime):
        return value.replace(microsecond=0).isoformat()
    if isinstance(value, date):
        return value.isoformat()
    if hasattr(value, "to_pydatetime"):  # pandas Timestamp from a GeoPackage DateTime field
        return value.to_pydatetime().replace(microsecond=0).isoformat()
    text = str(value).strip()
    if len(text) == 10 and text[4] == "-":
        return date.fromisoformat(text).isoformat()
    try:
        return datetime.fromisoformat(text).replace(microsecond=0).isoformat()
    except ValueError:
        pass
    for fmt in _FORMATS:
        try:
            parsed = datetime.strptime(text, fmt)
        except ValueError:
            continue
        return parsed.date().isoformat() if "%H" not in fmt else parsed.isoformat()
    raise ValueError(text)


@lru_cache(maxsize=64)
def _to_utm(zone_epsg: int) -> Transformer:
    return Transformer.from_crs(4326, zone_epsg, always_xy=True)


def _distance_to_plot(conn: sqlite3.Connection, task: sqlite3.Row, lon: float, lat: float) -> float | None:
    """Metres from (lon, lat) to the task's plot polygon (0 inside), else to the task point."""
    geom = None
    if task["plot_fid"] is not None:
        row = conn.execute("SELECT geom FROM plots WHERE fid = ?", (task["plot_fid"],)).fetchone()
        geom = from_blob(row["geom"]) if row else None
    if geom is None and task["lon"] is not None and task["lat"] is not None:
        geom = shapely.Point(task["lon"], task["lat"])
    if geom is None:
        return None
    if not (math.isfinite(lon) and math.isfinite(lat) and -180 <= lon <= 180 and -90 <= lat <= 90):
        return math.inf
    c = geom.centroid
    if abs(lat) > 84 or abs(c.y - lat) > 5 or abs(c.x - lon) > 5:
        return math.inf  # far beyond any limit; avoid projecting across zones
    tr = _to_utm(utm_epsg(c.x, c.y))
    g = shapely.transform(geom, lambda xy: np.column_stack(tr.transform(xy[:, 0], xy[:, 1])))
    return float(shapely.distance(g, shapely.Point(*tr.transform(lon, lat))))
