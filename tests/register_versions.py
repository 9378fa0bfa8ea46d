"""Registers as older poppyscan versions wrote them, to test the schema upgrades step by step.

:func:`as_version` turns a register written now into a faithful register of an older schema version:
it drops every column, index and table a later migration adds, so opening it runs each migration step
(an ALTER that finds its column already there would be skipped, and the step left untested).
:data:`V1_DDL` is the schema version 1 created (poppyscan <= 0.4, before desk decisions); the tests
check that a register made "version 1" here has exactly that schema.
"""

from __future__ import annotations

import sqlite3
from pathlib import Path

V1_DDL = """
CREATE TABLE survey_meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE runs (
  fid INTEGER PRIMARY KEY AUTOINCREMENT, geom BLOB, run_key TEXT NOT NULL UNIQUE, run_dir TEXT NOT NULL,
  flight_date TEXT NOT NULL, year INTEGER NOT NULL, mosaics TEXT NOT NULL,
  mosaic_paths TEXT NOT NULL DEFAULT '[]', mosaic_key TEXT NOT NULL,
  model_version TEXT, crs TEXT, surveyed_ha REAL, n_plots INTEGER NOT NULL,
  n_tasks INTEGER NOT NULL DEFAULT 0,
  registered_at TEXT NOT NULL, minx REAL, miny REAL, maxx REAL, maxy REAL);
CREATE TABLE run_units (
  run_id INTEGER NOT NULL REFERENCES runs(fid), county TEXT NOT NULL DEFAULT '',
  township TEXT NOT NULL DEFAULT '',
  village TEXT NOT NULL DEFAULT '', surveyed_ha REAL NOT NULL,
  PRIMARY KEY (run_id, county, township, village));
CREATE TABLE sites (
  fid INTEGER PRIMARY KEY AUTOINCREMENT, geom BLOB, site_code TEXT NOT NULL UNIQUE,
  first_seen TEXT NOT NULL, last_seen TEXT NOT NULL, n_detections INTEGER NOT NULL,
  minx REAL, miny REAL, maxx REAL, maxy REAL);
CREATE TABLE plots (
  fid INTEGER PRIMARY KEY AUTOINCREMENT, geom BLOB, run_id INTEGER NOT NULL REFERENCES runs(fid),
  plot_id INTEGER NOT NULL, site_id INTEGER NOT NULL REFERENCES sites(fid), flight_date TEXT NOT NULL,
  year INTEGER NOT NULL, area_m2 REAL, area_mu REAL, est_plants REAL, over_500_plants INTEGER, prob_mean REAL,
  prob_max REAL, lon REAL, lat REAL, mosaic TEXT, model_version TEXT,
  county TEXT NOT NULL DEFAULT '', township TEXT NOT NULL DEFAULT '', village TEXT NOT NULL DEFAULT '',
  minx REAL, miny REAL, maxx REAL, maxy REAL, UNIQUE (run_id, plot_id));
CREATE INDEX plots_bbox ON plots (minx, maxx, miny, maxy);
CREATE INDEX plots_site ON plots (site_id);
CREATE TABLE tasks (
  fid INTEGER PRIMARY KEY AUTOINCREMENT, geom BLOB, task_id TEXT NOT NULL UNIQUE, task_code TEXT,
  run_id INTEGER NOT NULL REFERENCES runs(fid), plot_fid INTEGER REFERENCES plots(fid), plot_id INTEGER,
  lon REAL, lat REAL, priority TEXT, route_seq INTEGER,
  county TEXT NOT NULL DEFAULT '', township TEXT NOT NULL DEFAULT '', village TEXT NOT NULL DEFAULT '',
  status TEXT NOT NULL DEFAULT 'pending', result TEXT, plants_eradicated INTEGER, checked_by TEXT,
  checked_at TEXT, onsite_lon REAL, onsite_lat REAL, photo TEXT, notes TEXT, updated_at TEXT,
  minx REAL, miny REAL, maxx REAL, maxy REAL);
CREATE TABLE status_history (
  fid INTEGER PRIMARY KEY AUTOINCREMENT, task_id TEXT NOT NULL, field TEXT NOT NULL, old_value TEXT,
  new_value TEXT, changed_by TEXT, checked_at TEXT, recorded_at TEXT NOT NULL, source_file TEXT NOT NULL,
  source_row INTEGER, import_id INTEGER REFERENCES imports(fid));
CREATE INDEX history_task ON status_history (task_id);
CREATE TABLE imports (
  fid INTEGER PRIMARY KEY AUTOINCREMENT, source_file TEXT NOT NULL, sha256 TEXT NOT NULL,
  imported_at TEXT NOT NULL,
  n_rows INTEGER NOT NULL, n_changed INTEGER NOT NULL, n_rejected INTEGER NOT NULL);
"""

# what each schema version added: columns (table, column) and indexes
ADDED: dict[int, dict[str, list]] = {
    2: {"columns": [("plots", "review"), ("plots", "dismissed"), ("imports", "n_skipped")], "indexes": []},
    3: {"columns": [("plots", "mosaic_index")], "indexes": []},
    4: {"columns": [], "indexes": ["tasks_plot"]},
}


def as_version(register: Path, version: int) -> None:
    """Make ``register`` (written now) what poppyscan wrote at schema ``version``."""
    with sqlite3.connect(register) as conn:
        for v in sorted(ADDED, reverse=True):
            if v <= version:
                break
            for index in ADDED[v]["indexes"]:
                conn.execute(f"DROP INDEX IF EXISTS {index}")
            for table, column in ADDED[v]["columns"]:
                if any(r[1] == column for r in conn.execute(f"PRAGMA table_info({table})")):
                    conn.execute(f"ALTER TABLE {table} DROP COLUMN {column}")
        conn.execute("UPDATE survey_meta SET value = ? WHERE key = 'schema_version'", (str(version),))
    conn.close()


def schema(source: Path | str) -> dict[str, object]:
    """The register tables' columns (name, type, not null, default) and the indexes of ``source`` (a file,
    or DDL text)."""
    if isinstance(source, Path):
        conn = sqlite3.connect(f"{source.resolve().as_uri()}?mode=ro", uri=True)
    else:
        conn = sqlite3.connect(":memory:")
        conn.executescript(source)
    try:
        tables = [r[0] for r in conn.execute(
            "SELECT name FROM sqlite_master WHERE type = 'table' AND name NOT LIKE 'gpkg%' "
            "AND name NOT LIKE 'sqlite%' ORDER BY name")]
        out: dict[str, object] = {
            t: sorted((r[1], r[2], r[3], r[4]) for r in conn.execute(f"PRAGMA table_info({t})"))
            for t in tables
        }
        out["indexes"] = sorted(r[0] for r in conn.execute(
            "SELECT name FROM sqlite_master WHERE type = 'index' AND sql IS NOT NULL"))
        return out
    finally:
        conn.close()


def version_of(register: Path) -> int:
    conn = sqlite3.connect(f"{register.resolve().as_uri()}?mode=ro", uri=True)
    try:
        return int(conn.execute("SELECT value FROM survey_meta WHERE key = 'schema_version'").fetchone()[0])
    finally:
        conn.close()
