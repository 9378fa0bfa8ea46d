"""Schema of the survey register, its version, and opening/creating/migrating the file.

Tables (all geometries WGS84 lon/lat, see :mod:`.gpkg`):

- ``runs`` (features, footprint polygons): one row per registered detect run — flight date, mosaics,
  surveyed area, model version, where it came from.
- ``run_units``: surveyed hectares per run and admin unit (one row with empty names when the run had
  no boundary layer), so statistics per unit can divide by the area actually flown.
- ``sites`` (features, points): the same place across flights and years.
- ``plots`` (features, polygons): every detected plot of every run, linked to a site, with the desk
  review decision (``review``), ``dismissed`` = rejected at the desk and sent to no field team
  (see :data:`FINDING`), and ``mosaic_index``: the position in the run's ``mosaic_paths`` of the mosaic
  the plot was detected on (several mosaics of a run may share a file name; NULL for plots registered
  before version 3, which are placed by name and bounds).
- ``tasks`` (features, points): field-verification tasks, keyed by the immutable ``task_id``; holds
  the current field result.
- ``status_history``: one row per changed task field — who, when (in the field and when recorded),
  old and new value, the source file.
- ``imports``: one row per import that changed something (``n_skipped``: rows older than the verdict
  already recorded).
- ``survey_meta``: ``schema_version`` and creation time.
"""

from __future__ import annotations

import re
import sqlite3
from datetime import UTC, datetime
from pathlib import Path

from ..errors import InputError
from .gpkg import init_gpkg, register_table

SCHEMA_VERSION = 3

ADMIN_FIELDS = ("county", "township", "village")
RESULT_VALUES = ("poppy", "not_poppy", "already_eradicated", "not_reached")
# SQL (plots aliased ``p``): the plot counts as a finding. A plot dismissed at the desk review is not one,
# unless a field team returned a verdict for it anyway (then the verdict counts).
FINDING = (
    "(p.dismissed = 0 OR EXISTS (SELECT 1 FROM tasks ft WHERE ft.plot_fid = p.fid AND ft.result IS NOT NULL))"
)

_DDL = """
CREATE TABLE IF NOT EXISTS survey_meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS runs (
  fid INTEGER PRIMARY KEY AUTOINCREMENT, geom BLOB, run_key TEXT NOT NULL UNIQUE, run_dir TEXT NOT NULL,
  flight_date TEXT NOT NULL, year INTEGER NOT NULL, mosaics TEXT NOT NULL,
  mosaic_paths TEXT NOT NULL DEFAULT '[]', mosaic_key TEXT NOT NULL,
  model_version TEXT, crs TEXT, surveyed_ha REAL, n_plots INTEGER NOT NULL,
  n_tasks INTEGER NOT NULL DEFAULT 0,
  registered_at TEXT NOT NULL, minx REAL, miny REAL, maxx REAL, maxy REAL);
CREATE TABLE IF NOT EXISTS run_units (
  run_id INTEGER NOT NULL REFERENCES runs(fid), county TEXT NOT NULL DEFAULT '',
  township TEXT NOT NULL DEFAULT '',
  village TEXT NOT NULL DEFAULT '', surveyed_ha REAL NOT NULL,
  PRIMARY KEY (run_id, county, township, village));
CREATE TABLE IF NOT EXISTS sites (
  fid INTEGER PRIMARY KEY AUTOINCREMENT, geom BLOB, site_code TEXT NOT NULL UNIQUE,
  first_seen TEXT NOT NULL, last_seen TEXT NOT NULL, n_detections INTEGER NOT NULL,
  minx REAL, miny REAL, maxx REAL, maxy REAL);
CREATE TABLE IF NOT EXISTS plots (
  fid INTEGER PRIMARY KEY AUTOINCREMENT, geom BLOB, run_id INTEGER NOT NULL REFERENCES runs(fid),
  plot_id INTEGER NOT NULL, site_id INTEGER NOT NULL REFERENCES sites(fid), flight_date TEXT NOT NULL,
  year INTEGER NOT NULL, area_m2 REAL, area_mu REAL, est_plants REAL, over_500_plants INTEGER, prob_mean REAL,
  prob_max REAL, lon REAL, lat REAL, mosaic TEXT, model_version TEXT,
  county TEXT NOT NULL DEFAULT '', township TEXT NOT NULL DEFAULT '', village TEXT NOT NULL DEFAULT '',
  minx REAL, miny REAL, maxx REAL, maxy REAL, review TEXT NOT NULL DEFAULT '',
  dismissed INTEGER NOT NULL DEFAULT 0, mosaic_index INTEGER, UNIQUE (run_id, plot_id));
CREATE INDEX IF NOT EXISTS plots_bbox ON plots (minx, maxx, miny, maxy);
CREATE INDEX IF NOT EXISTS plots_site ON plots (site_id);
CREATE TABLE IF NOT EXISTS tasks (
  fid INTEGER PRIMARY KEY AUTOINCREMENT, geom BLOB, task_id TEXT NOT NULL UNIQUE, task_code TEXT,
  run_id INTEGER NOT NULL REFERENCES runs(fid), plot_fid INTEGER REFERENCES plots(fid), plot_id INTEGER,
  lon REAL, lat REAL, priority TEXT, route_seq INTEGER,
  county TEXT NOT NULL DEFAULT '', township TEXT NOT NULL DEFAULT '', village TEXT NOT NULL DEFAULT '',
  status TEXT NOT NULL DEFAULT 'pending', result TEXT, plants_eradicated INTEGER, checked_by TEXT,
  checked_at TEXT, onsite_lon REAL, onsite_lat REAL, photo TEXT, notes TEXT, updated_at TEXT,
  minx REAL, miny REAL, maxx REAL, maxy REAL);
CREATE TABLE IF NOT EXISTS status_history (
  fid INTEGER PRIMARY KEY AUTOINCREMENT, task_id TEXT NOT NULL, field TEXT NOT NULL, old_value TEXT,
  new_value TEXT, changed_by TEXT, checked_at TEXT, recorded_at TEXT NOT NULL, source_file TEXT NOT NULL,
  source_row INTEGER, import_id INTEGER REFERENCES imports(fid));
CREATE INDEX IF NOT EXISTS history_task ON status_history (task_id);
CREATE TABLE IF NOT EXISTS imports (
  fid INTEGER PRIMARY KEY AUTOINCREMENT, source_file TEXT NOT NULL, sha256 TEXT NOT NULL,
  imported_at TEXT NOT NULL,
  n_rows INTEGER NOT NULL, n_changed INTEGER NOT NULL, n_rejected INTEGER NOT NULL,
  n_skipped INTEGER NOT NULL DEFAULT 0);
"""

_CONTENTS = [
    ("runs", "Registered detect runs (flight footprints)", "POLYGON"),
    ("sites", "Places where poppy was detected, linked across flights and years", "POINT"),
    ("plots", "Every detected plot of every registered run", "POLYGON"),
    ("tasks", "Field-verification tasks with their current result", "POINT"),
    ("run_units", "Surveyed area per run and admin unit", None),
    ("status_history", "Every change to a task: who, when, what, from which file", None),
    ("imports", "Field-result files imported", None),
]

# version -> SQL that upgrades a register from version-1 to version
MIGRATIONS: dict[int, str] = {
    # desk review decisions; import rows skipped as older than the recorded verdict. Runs registered
    # before keep dismissed = 0 until registered again (which reads their review.json).
    2: "ALTER TABLE plots ADD COLUMN review TEXT NOT NULL DEFAULT ''; "
    "ALTER TABLE plots ADD COLUMN dismissed INTEGER NOT NULL DEFAULT 0; "
    "ALTER TABLE imports ADD COLUMN n_skipped INTEGER NOT NULL DEFAULT 0",
    # each plot's own mosaic among the run's mosaic_paths (runs registered before: NULL, placed by name and
    # bounds when labels are exported, and filled in when the run is registered again)
    3: "ALTER TABLE plots ADD COLUMN mosaic_index INTEGER",
}
_ADD_COLUMN = re.compile(r"^\s*ALTER TABLE (\w+) ADD COLUMN (\w+)", re.IGNORECASE)


def now_iso() -> str:
    """Current UTC time, ISO 8601 to the second."""
    return datetime.now(UTC).replace(microsecond=0).isoformat().replace("+00:00", "Z")


def connect(path: str | Path, *, create: bool = False) -> sqlite3.Connection:
    """Open (or, with ``create``, create) the register at ``path`` and bring its schema up to date.

    Raises :class:`InputError` when the file is missing (and ``create`` is false), is not a poppyscan
    register, or was written by a newer poppyscan.
    """
    path = Path(path)
    if not path.exists():
        if not create:
            raise InputError(
                f"survey register '{path}' does not exist; add a run first with "
                f"'poppyscan results register RUN_DIR --register {path}' or pass --register"
            )
        path.parent.mkdir(parents=True, exist_ok=True)
    elif not path.is_file():
        raise InputError(
            f"survey register '{path}' is not a file; pass the register's .gpkg file to --register"
        )
    is_new = not path.exists() or path.stat().st_size == 0
    try:
        conn = sqlite3.connect(path, timeout=30, isolation_level=None)
        conn.execute("PRAGMA foreign_keys = ON")
        if is_new:
            _create(conn)
        else:
            _check_and_migrate(conn, path)
    except sqlite3.DatabaseError as exc:
        raise InputError(
            f"survey register '{path}' is not a readable SQLite/GeoPackage file ({exc}); "
            "check the path or restore it from a backup"
        ) from None
    conn.row_factory = sqlite3.Row
    return conn


def _create(conn: sqlite3.Connection) -> None:
    conn.execute("BEGIN IMMEDIATE")
    try:
        init_gpkg(conn)
        for statement in _DDL.split(";"):
            if statement.strip():
                conn.execute(statement)
        for table, description, geometry in _CONTENTS:
            register_table(conn, table, description=description, geometry=geometry)
        conn.executemany(
            "INSERT OR REPLACE INTO survey_meta VALUES (?, ?)",
            [("schema_version", str(SCHEMA_VERSION)), ("created", now_iso()), ("format", "poppyscan-survey")],
        )
        conn.execute("COMMIT")
    except BaseException:
        conn.execute("ROLLBACK")
        raise


def _check_and_migrate(conn: sqlite3.Connection, path: Path) -> None:
    has_meta = conn.execute(
        "SELECT 1 FROM sqlite_master WHERE type='table' AND name='survey_meta'"
    ).fetchone()
    if not has_meta:
        raise InputError(
            f"'{path}' is not a poppyscan survey register (no survey_meta table); "
            "pass the register file to --register, or a new path to create one"
        )
    row = conn.execute("SELECT value FROM survey_meta WHERE key='schema_version'").fetchone()
    version = int(row[0]) if row else 0
    if version > SCHEMA_VERSION:
        raise InputError(
            f"survey register '{path}' has schema version {version}, newer than this poppyscan "
            f"understands ({SCHEMA_VERSION}); upgrade poppyscan"
        )
    if version < SCHEMA_VERSION:
        conn.execute("BEGIN IMMEDIATE")
        try:
            for v in range(version + 1, SCHEMA_VERSION + 1):
                for statement in MIGRATIONS[v].split(";"):
                    if statement.strip() and not _has_column(conn, statement):
                        conn.execute(statement)
            conn.execute("UPDATE survey_meta SET value=? WHERE key='schema_version'", (str(SCHEMA_VERSION),))
            conn.execute("COMMIT")
        except BaseException:
            conn.execute("ROLLBACK")
            raise


def _has_column(conn: sqlite3.Connection, statement: str) -> bool:
    """Whether ``statement`` adds a column the table already has: adding it again would fail the whole
    migration (e.g. a register whose recorded version is older than its tables)."""
    m = _ADD_COLUMN.match(statement)
    if m is None:
        return False
    return any(row[1] == m.group(2) for row in conn.execute(f"PRAGMA table_info({m.group(1)})"))
