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
  the plot was detected on, as detect recorded it (several mosaics of a run may share a file name; NULL
  for plots registered before version 3 or from run folders older than detect's ``mosaic_index``,
  which export-labels places by name, bounds and pixels).
- ``tasks`` (features, points): field-verification tasks, keyed by the immutable ``task_id``; holds
  the current field result.
- ``status_history``: one row per changed task field — who, when (in the field and when recorded),
  old and new value, the source file.
- ``imports``: one row per import that changed something (``n_skipped``: rows older than the verdict
  already recorded).
- ``survey_meta``: ``schema_version`` and creation time.

Commands that only read the register (``stats``, ``results export-labels``, ``results import --dry-run``)
open it read-only (:func:`connect` ``readonly``) and never write it: a register of an older schema is
upgraded in a copy in memory, so a register on a read-only share can be read as it is. Commands that
write it (``results register``, ``results import``) upgrade it in place, once.
"""

from __future__ import annotations

import os
import re
import sqlite3
from datetime import UTC, datetime
from pathlib import Path

from ..errors import InputError
from .gpkg import init_gpkg, register_table

SCHEMA_VERSION = 4

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
CREATE INDEX IF NOT EXISTS tasks_plot ON tasks (plot_fid);
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
    # the finding test (FINDING) and the plot-task joins look tasks up by plot: without an index, statistics
    # and registering took time in plots x tasks
    4: "CREATE INDEX IF NOT EXISTS tasks_plot ON tasks (plot_fid)",
}
_ADD_COLUMN = re.compile(r"^\s*ALTER TABLE (\w+) ADD COLUMN (\w+)", re.IGNORECASE)


def now_iso() -> str:
    """Current UTC time, ISO 8601 to the second."""
    return datetime.now(UTC).replace(microsecond=0).isoformat().replace("+00:00", "Z")


def connect(
    path: str | Path, *, create: bool = False, readonly: bool = False, copy: bool = False
) -> sqlite3.Connection:
    """Open (or, with ``create``, create) the register at ``path`` with its schema up to date.

    Parameters
    ----------
    path
        The register file.
    create
        Create it when it does not exist (writers only).
    readonly
        Never write the file: it is opened read-only, and a register of an older schema is upgraded in a
        copy in memory (the file keeps its version until a writer opens it).
    copy
        Work on a copy in memory (implies ``readonly``): changes made through the connection are
        discarded on close, e.g. for a dry run.

    Raises
    ------
    InputError
        The file is missing (and ``create`` is false) or empty for a reader, is not a poppyscan register,
        was written by a newer poppyscan, is locked by a writer, or must be written (created, upgraded,
        added to) by a user without write access to it and its folder (one line saying so).
    """
    path = Path(path)
    if not path.exists():
        if not create or readonly or copy:
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
    if is_new and (readonly or copy):
        raise InputError(
            f"survey register '{path}' is empty; add a run first with "
            f"'poppyscan results register RUN_DIR --register {path}'"
        )
    version = None if is_new else SCHEMA_VERSION  # until read: for the messages
    conn = None
    try:
        if readonly or copy:
            return _open_read(path, copy=copy)
        if is_new:
            _require_write(path, None)
        conn = sqlite3.connect(path, timeout=30, isolation_level=None)
        conn.execute("PRAGMA foreign_keys = ON")
        if is_new:
            _create(conn)
        else:
            version = _version(conn, path)
            _require_write(path, version)
            _migrate(conn, version)
    except BaseException as exc:
        if conn is not None:
            conn.close()
        if isinstance(exc, sqlite3.OperationalError):
            raise _operational(path, exc, version) from None
        if isinstance(exc, sqlite3.DatabaseError):
            raise InputError(
                f"survey register '{path}' is not a readable SQLite/GeoPackage file ({exc}); "
                "check the path or restore it from a backup"
            ) from None
        raise
    conn.row_factory = sqlite3.Row
    return conn


def begin(conn: sqlite3.Connection, path: str | Path) -> None:
    """Start a command's write transaction on the register at ``path``: a register that cannot be written,
    or stays locked past the timeout, is a one-line :class:`InputError`."""
    try:
        conn.execute("BEGIN IMMEDIATE")
    except sqlite3.OperationalError as exc:
        raise _operational(Path(path), exc, SCHEMA_VERSION) from None


READ_IN_PLACE_FROM = 3
"""Oldest schema a reader queries as it is: version 4 only adds an index (slower without, same rows)."""


def _open_read(path: Path, *, copy: bool) -> sqlite3.Connection:
    """The register opened for reading, never written: in place when its schema has every column
    (:data:`READ_IN_PLACE_FROM`), else (or for ``copy``) a copy in memory, upgraded there.

    A user who may write the file gets a read-write connection all the same, so SQLite rolls back the
    journal an interrupted writer left (a read-only one cannot, and would fail)."""
    writable = os.access(path, os.W_OK) and os.access(path.resolve().parent, os.W_OK)
    uri = path.resolve().as_uri() + ("" if writable else "?mode=ro")
    conn = sqlite3.connect(uri, uri=True, timeout=30, isolation_level=None)
    try:
        version = _version(conn, path)
        if version < READ_IN_PLACE_FROM or copy:
            mem = sqlite3.connect(":memory:", isolation_level=None)
            conn.backup(mem)
            conn.close()
            conn = mem
            _migrate(conn, version)
        conn.execute("PRAGMA foreign_keys = ON")
    except BaseException:
        conn.close()
        raise
    conn.row_factory = sqlite3.Row
    return conn


def _require_write(path: Path, version: int | None) -> None:
    """Raise a one-line :class:`InputError` when this user may not write ``path`` and its folder (SQLite
    writes a journal beside the file). ``version``: the register's schema version (None: a new one)."""
    folder = path.resolve().parent
    if (path.exists() and not os.access(path, os.W_OK)) or not os.access(folder, os.W_OK):
        raise InputError(_no_write(path, version))


def _no_write(path: Path, version: int | None) -> str:
    if version is not None and version < SCHEMA_VERSION:
        return (
            f"survey register '{path}' has schema version {version} and needs a one-time upgrade to "
            f"version {SCHEMA_VERSION}, which needs write access to the file and its folder; run "
            "'poppyscan results register' or 'results import' once as a user who may write it "
            "('poppyscan stats' and 'results export-labels' read it as it is meanwhile)"
        )
    what = "creating it" if version is None else "adding to it"
    return (
        f"survey register '{path}' cannot be written by this user ({what} needs write access to the file "
        "and its folder); ask for write access, or work on a copy"
    )


SQLITE_READONLY_ROLLBACK = 776


def _operational(path: Path, exc: sqlite3.OperationalError, version: int | None) -> InputError:
    text = str(exc)
    if getattr(exc, "sqlite_errorcode", None) == SQLITE_READONLY_ROLLBACK:
        return InputError(
            f"survey register '{path}' holds an interrupted write (its '{path.name}-journal') that only a "
            "user with write access can roll back; run any 'poppyscan results' command once as such a user"
        )
    if "readonly" in text or "read-only" in text:
        return InputError(_no_write(path, version))
    if "locked" in text or "busy" in text:
        return InputError(
            f"survey register '{path}' is locked ({text}): another command (or QGIS editing it) is writing "
            "it; try again when it has finished"
        )
    return InputError(
        f"survey register '{path}' cannot be opened ({text}); check the path and its permissions"
    )


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


def _version(conn: sqlite3.Connection, path: Path) -> int:
    """The register's schema version; :class:`InputError` for a foreign file or a newer register."""
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
    return version


def _migrate(conn: sqlite3.Connection, version: int) -> None:
    """Run the migrations after ``version``, in one transaction."""
    if version >= SCHEMA_VERSION:
        return
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
