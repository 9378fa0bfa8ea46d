"""Desk-review decisions of a detect run: ``RUN_DIR/review.json`` and what is derived from it.

``review.json`` is the one source of truth. Each decision is written the moment it is made, atomically
(temporary file + :func:`os.replace`), so a closed browser or a killed server loses nothing::

    {"format": "poppyscan-review", "format_version": 1, "updated": "2025-04-02T09:14:03+08:00",
     "decisions": {"17": {"decision": "rejected", "time": "...", "reviewer": "li.wei"}},
     "history": [{"plot_id": 17, "decision": "rejected", "previous": null, "time": "...",
                  "reviewer": "li.wei"}]}

``history`` is an append-only audit trail (a cleared decision is recorded as ``"decision": null``).
Derived from it on every save, best effort (``review.json`` stays authoritative):

- a ``review`` text column (``confirmed``, ``rejected``, ``unsure`` or empty) in ``plots.gpkg`` layer
  ``plots``, updated in place so QGIS users see the desk decision;
- ``hard_negatives.gpkg`` layer ``hard_negatives``: the rejected plot polygons, kept for retraining.

Other modules (tasks, the survey register) read decisions with :func:`load_decisions` and
:func:`rejected_plot_ids`.
"""

from __future__ import annotations

import datetime as _dt
import json
import logging
import sqlite3
import threading
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from ..errors import InputError
from ..fsutil import file_lock, write_bytes_atomic
from ..run_folder import PLOTS_FILE, PLOTS_LAYER

log = logging.getLogger(__name__)

REVIEW_FILE = "review.json"
HARD_NEGATIVES_FILE = "hard_negatives.gpkg"
HARD_NEGATIVES_LAYER = "hard_negatives"
DECISIONS: tuple[str, ...] = ("confirmed", "rejected", "unsure")
FORMAT = "poppyscan-review"
FORMAT_VERSION = 1

_locks: dict[str, threading.Lock] = {}
_locks_guard = threading.Lock()


def _lock_for(run_dir: Path) -> threading.Lock:
    key = str(run_dir.resolve())
    with _locks_guard:
        return _locks.setdefault(key, threading.Lock())


def _now() -> str:
    return _dt.datetime.now().astimezone().isoformat(timespec="seconds")


def review_path(run_dir: str | Path) -> Path:
    """Path of the run's ``review.json``."""
    return Path(run_dir) / REVIEW_FILE


def read_review(run_dir: str | Path) -> dict[str, Any]:
    """Return the whole review document (an empty one when the run has not been reviewed yet).

    Raises :class:`InputError` when ``review.json`` exists but is not a valid review file.
    """
    path = review_path(run_dir)
    empty: dict[str, Any] = {
        "format": FORMAT,
        "format_version": FORMAT_VERSION,
        "decisions": {},
        "history": [],
    }
    if not path.exists():
        return empty
    try:
        doc = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise InputError(
            f"review file '{path}' is not valid JSON ({exc}); restore it or move it away"
        ) from None
    if not isinstance(doc, dict) or doc.get("format") != FORMAT or not isinstance(doc.get("decisions"), dict):
        raise InputError(
            f"'{path}' is not a poppyscan review file (format {FORMAT!r}); restore it or move it away"
        )
    if doc.get("format_version", 0) > FORMAT_VERSION:
        raise InputError(
            f"review file '{path}' has format_version {doc['format_version']}, newer than this "
            f"poppyscan understands ({FORMAT_VERSION}); upgrade poppyscan"
        )
    doc.setdefault("history", [])
    for key, entry in doc["decisions"].items():
        if not (key.isdigit() and isinstance(entry, dict) and entry.get("decision") in DECISIONS):
            raise InputError(
                f"review file '{path}' has an invalid entry for plot {key!r}: {entry!r}; "
                f"decisions must be one of {', '.join(DECISIONS)}"
            )
    return doc


def load_decisions(run_dir: str | Path) -> dict[int, str]:
    """Return ``{plot_id: decision}`` (``confirmed``/``rejected``/``unsure``) for every reviewed plot.

    Plots never reviewed (or whose decision was cleared) are absent. An unreviewed run gives ``{}``.
    """
    doc = read_review(run_dir)
    return {int(k): v["decision"] for k, v in doc["decisions"].items()}


def plot_decisions(run_dir: str | Path, plots: Any) -> dict[int, str]:
    """``{plot_id: decision}`` of a run: the plots layer's ``review`` column (its mirror, text cells only),
    overridden by ``review.json``, which is authoritative. ``plots``: the run's plots layer."""
    decisions: dict[int, str] = {}
    if "review" in plots.columns:
        pairs = zip(plots["plot_id"], plots["review"], strict=True)
        decisions = {int(p): v for p, v in pairs if isinstance(v, str) and v}
    decisions.update(load_decisions(run_dir))
    return decisions


def rejected_plot_ids(run_dir: str | Path) -> set[int]:
    """Plot ids the desk reviewer rejected: left out of field tasks, kept as hard negatives."""
    return {pid for pid, decision in load_decisions(run_dir).items() if decision == "rejected"}


def read_plot_ids(run_dir: str | Path) -> set[int]:
    """The ``plot_id`` values of the run's ``plots.gpkg`` layer ``plots``."""
    import pyogrio

    path = Path(run_dir) / PLOTS_FILE
    if not path.is_file():
        raise InputError(
            f"'{path}' does not exist; pass a detect run directory (made by `poppyscan detect --out`)"
        )
    df = pyogrio.read_dataframe(path, layer=PLOTS_LAYER, columns=["plot_id"], read_geometry=False)
    return {int(v) for v in df["plot_id"]}


def save_decision(
    run_dir: str | Path,
    plot_id: int,
    decision: str | None,
    *,
    reviewer: str = "",
    valid_ids: Iterable[int] | None = None,
    derived: bool = True,
) -> dict[str, Any]:
    """Record one decision (``None`` clears it) and write ``review.json`` atomically.

    Parameters
    ----------
    run_dir
        The detect run directory.
    plot_id
        A ``plot_id`` of the run's plots; anything else raises :class:`InputError` and writes nothing.
    decision
        ``"confirmed"``, ``"rejected"``, ``"unsure"``, or ``None`` to clear an earlier decision.
    reviewer
        Who decided (kept with the decision and in the history).
    valid_ids
        The run's plot ids, when the caller already has them (the review server); read from
        ``plots.gpkg`` otherwise.
    derived
        Also update the ``review`` column of ``plots.gpkg`` and ``hard_negatives.gpkg``.

    Returns
    -------
    dict
        The stored entry: ``{"plot_id", "decision", "time", "reviewer"}``.
    """
    run_dir = Path(run_dir)
    if isinstance(plot_id, bool) or not isinstance(plot_id, int):
        raise InputError(f"'plot_id' must be an integer, got {plot_id!r}")
    if decision is not None and decision not in DECISIONS:
        raise InputError(
            f"'decision' must be one of {', '.join(DECISIONS)} (or null to clear), got {decision!r}"
        )
    ids = set(valid_ids) if valid_ids is not None else read_plot_ids(run_dir)
    if plot_id not in ids:
        raise InputError(f"'plot_id' {plot_id} is not a plot of run '{run_dir}'")
    reviewer = str(reviewer or "")[:100]
    with _lock_for(run_dir):
        doc = read_review(run_dir)
        key = str(plot_id)
        previous = doc["decisions"].get(key, {}).get("decision")
        time = _now()
        if decision is None:
            doc["decisions"].pop(key, None)
        else:
            doc["decisions"][key] = {"decision": decision, "time": time, "reviewer": reviewer}
        doc["history"].append(
            {
                "plot_id": plot_id,
                "decision": decision,
                "previous": previous,
                "time": time,
                "reviewer": reviewer,
            }
        )
        doc["format"], doc["format_version"], doc["updated"] = FORMAT, FORMAT_VERSION, time
        doc["decisions"] = dict(sorted(doc["decisions"].items(), key=lambda kv: int(kv[0])))
        _write_json_atomic(review_path(run_dir), doc)
        if derived:
            _update_derived(run_dir, plot_id, decision, previous)
    return {"plot_id": plot_id, "decision": decision, "time": time, "reviewer": reviewer}


def _write_json_atomic(path: Path, doc: dict[str, Any]) -> None:
    text = json.dumps(doc, ensure_ascii=False, indent=1) + "\n"
    write_bytes_atomic(path, text.encode("utf-8"), fsync=True)


def _update_derived(run_dir: Path, plot_id: int, decision: str | None, previous: str | None) -> None:
    """Mirror one decision into ``plots.gpkg`` and refresh hard negatives; never fails the save."""
    try:
        mirror_review_column(run_dir, {plot_id: decision or ""})
    except Exception as exc:  # noqa: BLE001 - review.json is authoritative; the mirror is a convenience
        log.warning("could not update the review column of %s: %s", run_dir / PLOTS_FILE, exc)
    if "rejected" in (decision, previous) or not (run_dir / HARD_NEGATIVES_FILE).exists():
        try:
            export_hard_negatives(run_dir)
        except Exception as exc:  # noqa: BLE001
            log.warning("could not write %s: %s", run_dir / HARD_NEGATIVES_FILE, exc)


def mirror_review_column(run_dir: str | Path, values: dict[int, str] | None = None) -> None:
    """Set the ``review`` column of ``plots.gpkg`` layer ``plots`` in place (added when missing).

    ``values`` maps plot ids to ``confirmed``/``rejected``/``unsure``/``""``; ``None`` writes every plot
    from ``review.json``. The GeoPackage is SQLite: one transaction, no rewrite of the geometries.
    """
    path = Path(run_dir) / PLOTS_FILE
    if not path.is_file():
        raise InputError(f"'{path}' does not exist")
    full = values is None
    if full:
        values = {pid: d for pid, d in load_decisions(run_dir).items()}
    with file_lock(path):  # poppyscan tasks may be replacing plots.gpkg with a copy (export/gpkg_styles.py)
        _mirror(path, values, full)


def _mirror(path: Path, values: dict[int, str], full: bool) -> None:
    con = sqlite3.connect(path, timeout=10)
    _register_gpkg_functions(con)
    try:
        with con:
            cols = [row[1] for row in con.execute(f'PRAGMA table_info("{PLOTS_LAYER}")')]
            if not cols:
                raise InputError(f"'{path}' has no layer '{PLOTS_LAYER}'")
            added = "review" not in cols
            if added:
                con.execute(f'ALTER TABLE "{PLOTS_LAYER}" ADD COLUMN review TEXT')
            if full or added:
                con.execute(f"UPDATE \"{PLOTS_LAYER}\" SET review = ''")
            con.executemany(
                f'UPDATE "{PLOTS_LAYER}" SET review = ? WHERE plot_id = ?',
                [(d or "", int(pid)) for pid, d in values.items()],
            )
    finally:
        con.close()


def _gpkg_bounds(blob: bytes | None) -> tuple[float, float, float, float] | None:
    """Envelope of a GeoPackage geometry blob (``GP`` header + WKB); ``None`` when null or empty."""
    import struct

    import shapely

    if blob is None or len(blob) < 8 or blob[:2] != b"GP":
        return None
    flags = blob[3]
    if flags & 0b10000:  # empty-geometry flag
        return None
    env = (flags >> 1) & 0b111
    size = 8 + {0: 0, 1: 32, 2: 48, 3: 48, 4: 64}.get(env, 0)
    if env:
        minx, maxx, miny, maxy = struct.unpack(("<" if flags & 1 else ">") + "4d", blob[8:40])
        return minx, miny, maxx, maxy
    geom = shapely.from_wkb(blob[size:])
    return None if geom.is_empty else geom.bounds


def _register_gpkg_functions(con: sqlite3.Connection) -> None:
    """The SQL functions GDAL's R-tree triggers name, so plain sqlite3 may update a GeoPackage table.

    Only attribute columns are updated here, so the triggers never fire; SQLite still needs the
    functions to exist to prepare the statement. They are implemented properly all the same.
    """

    def part(i: int):
        return lambda blob: None if (b := _gpkg_bounds(blob)) is None else b[i]

    con.create_function(
        "ST_IsEmpty", 1, lambda blob: 1 if _gpkg_bounds(blob) is None else 0, deterministic=True
    )
    for i, name in enumerate(("ST_MinX", "ST_MinY", "ST_MaxX", "ST_MaxY")):
        con.create_function(name, 1, part(i), deterministic=True)


def export_hard_negatives(
    run_dir: str | Path, path: str | Path | None = None, *, overwrite: bool = False
) -> Path:
    """Write the rejected plot polygons for retraining; return the path written.

    Writes ``path`` (default ``RUN_DIR/hard_negatives.gpkg``), layer ``hard_negatives``, atomically and
    in the plots' CRS, with ``plot_id``, ``prob_mean``, ``prob_max``, ``area_m2``, ``mosaic``,
    ``mosaic_index``, ``model_version`` (those the plots have), ``label`` (``"not_poppy"``), ``reviewer``
    and ``reviewed_at``.
    With no rejected plot the layer is written empty, so a stale file never outlives a changed mind.

    Parameters
    ----------
    run_dir
        The detect run directory.
    path
        Where to write; ``None`` for the run's own ``hard_negatives.gpkg``, which is derived from
        ``review.json`` and always replaced.
    overwrite
        Replace an existing file at an explicit ``path``; without it an existing file raises
        :class:`~poppyscan.errors.OutputExistsError` and is left as it was.
    """
    import pyogrio

    from ..fsutil import atomic_path, check_writable

    run_dir = Path(run_dir)
    out = Path(path) if path is not None else run_dir / HARD_NEGATIVES_FILE
    plots_path = run_dir / PLOTS_FILE
    if not plots_path.is_file():
        raise InputError(f"'{plots_path}' does not exist; pass a detect run directory")
    if path is not None:
        if out.is_dir():
            raise InputError(f"'{out}' is a directory; pass a file name such as {out / HARD_NEGATIVES_FILE}")
        check_writable(out, overwrite)
    doc = read_review(run_dir)
    rejected = {int(k): v for k, v in doc["decisions"].items() if v["decision"] == "rejected"}
    plots = pyogrio.read_dataframe(plots_path, layer=PLOTS_LAYER)
    keep = [
        c
        for c in ("plot_id", "prob_mean", "prob_max", "area_m2", "mosaic", "mosaic_index", "model_version")
        if c in plots.columns
    ]
    neg = plots.loc[plots["plot_id"].astype(int).isin(rejected), keep + ["geometry"]].copy()
    neg["label"] = "not_poppy"
    neg["reviewer"] = [rejected[int(p)]["reviewer"] for p in neg["plot_id"]]
    neg["reviewed_at"] = [rejected[int(p)]["time"] for p in neg["plot_id"]]
    neg = neg[[*keep, "label", "reviewer", "reviewed_at", "geometry"]]
    geometry_type = pyogrio.read_info(plots_path, layer=PLOTS_LAYER).get("geometry_type") or "Unknown"
    with atomic_path(out, overwrite=True) as tmp:
        pyogrio.write_dataframe(
            neg,
            tmp,
            layer=HARD_NEGATIVES_LAYER,
            driver="GPKG",
            geometry_type=geometry_type,
            promote_to_multi=geometry_type == "MultiPolygon",
        )
    return out
