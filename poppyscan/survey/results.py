"""Import field-verification results into the survey register.

Rows are merged by the immutable ``task_id`` (never by row order or feature id). Every row is
validated; a rejected row is reported by its row number (feature id for a GeoPackage) and reason and
changes nothing, while the valid rows are applied together in one transaction. A row is one visit's
verdict (:mod:`.verdicts`): a later one replaces the recorded verdict as a whole, an earlier one is
skipped and reported, and within the same visit an empty cell means "no news" and never clears a value
already recorded, so partial files from several teams merge. Each changed field adds one
``status_history`` row (who, when, old → new, source file and row); a field that already holds the same
value adds nothing, so importing a file twice changes nothing.
"""

from __future__ import annotations

import hashlib
import sqlite3
from dataclasses import dataclass, field
from datetime import date
from pathlib import Path
from typing import Any

from ..errors import InputError
from ..tasks import RESERVED
from .fieldfile import read_field_table
from .schema import ADMIN_FIELDS, begin, connect, now_iso
from .sites import refresh_sites
from .verdicts import VERDICT_FIELDS, OlderRow, resolve, same_value, validate_row

RESULT_FIELDS = VERDICT_FIELDS  # the field team's columns (status is ours, not theirs)
# columns poppyscan tasks writes that describe the task, not the result: read and ignored
ISSUE_FIELDS = {
    *(c for c in RESERVED if c not in VERDICT_FIELDS),  # every column poppyscan tasks writes
    "probability",
    "amap_url",
    "baidu_url",
    "amap_link",
    "baidu_link",
    "site_code",
    "fid",
    "geom",
    "model_version",
    "flight_date",
    "outside_units",
    "admin_flag",
    *ADMIN_FIELDS,
    *(f"{a}_code" for a in ADMIN_FIELDS),
}
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
    skipped: list[RejectedRow] = field(default_factory=list)  # older than the verdict recorded
    ignored_columns: list[str] = field(default_factory=list)
    dry_run: bool = False

    def describe(self) -> str:
        verb = "would update" if self.dry_run else "updated"
        older = f", {len(self.skipped)} skipped as older than the verdict recorded" if self.skipped else ""
        lines = [
            f"{self.source.name}: {self.n_rows} row(s): {verb} {self.n_changed_rows} task(s) "
            f"({self.n_field_changes} field change(s)), {self.n_unchanged_rows} unchanged{older}, "
            f"{len(self.rejected)} rejected"
        ]
        if self.ignored_columns:
            lines.append(f"ignored column(s) not known to poppyscan: {', '.join(self.ignored_columns)}")
        lines += [f"  skipped {r}" for r in self.skipped]
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
    conn = connect(register, copy=dry_run)  # a dry run works on a copy in memory
    try:
        begin(conn, register)
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
            new = resolve(current, validate_row(cells, current, conn, max_d, today))
        except OlderRow as exc:
            report.skipped.append(RejectedRow(n, tid, str(exc), table.row_label))
            continue
        except ValueError as exc:
            reject(str(exc))
            continue
        diff = {k: v for k, v in new.items() if not same_value(current[k], v)}
        if diff:
            changes.append((n, tid, diff, current))
        else:
            report.n_unchanged_rows += 1
    if not changes:
        return
    now = now_iso()
    cur = conn.execute(
        "INSERT INTO imports (source_file, sha256, imported_at, n_rows, n_changed, n_rejected, n_skipped) "
        "VALUES (?, ?, ?, ?, ?, ?, ?)",
        (source, digest, now, report.n_rows, len(changes), len(report.rejected), len(report.skipped)),
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
    # a verdict on a plot dismissed at the desk makes it a finding again: its site counts it
    fids = [c[3]["plot_fid"] for c in changes if "result" in c[2] and c[3]["plot_fid"] is not None]
    sites = conn.execute(
        f"SELECT DISTINCT site_id FROM plots WHERE dismissed = 1 AND fid IN ({', '.join('?' * len(fids))})",  # noqa: S608
        fids,
    ).fetchall()
    refresh_sites(conn, {r[0] for r in sites})


def _text(v: Any) -> str | None:
    return None if v is None else str(v)


