"""Resumable ``detect`` runs: a work area beside the run directory and a journal of finished mosaics.

``detect(..., out_dir="runs/f1")`` works in ``runs/.f1.partial/``; the run directory appears only
when everything is finished, by one rename, so a partial output never stands under a final name.
The work area holds:

- ``fingerprint.json`` - what the results depend on: each input's absolute path, size and mtime,
  the model (path, version, GSD, size/mtime of its files), the effective tile size, overlap,
  threshold and TTA, the result-affecting ``detect`` config keys and the poppyscan version;
- the probability rasters of finished mosaics, under the names they will have in the run directory;
- ``journal/NNNN.json``, one per finished mosaic, written atomically (temp file, fsync, rename)
  *after* its probability COG is complete: figures, timings, COG size and the detections as WKB
  (exact float64 coordinates, so a resumed run's plots equal an uninterrupted run's).

- ``journal/NNNN.bands/BBBB.npz``, one per finished row band of a mosaic cut into bands
  (:mod:`~poppyscan.bands`), written atomically after the band's probability part
  ``.<probability name>.bandBBBB.tif`` is complete: its rows, figures and unmerged polygon pieces
  (numpy arrays, no pickle). They are dropped once the whole mosaic is journaled.

After a crash or ``kill -9``, ``detect(..., resume=True)`` checks the fingerprint (a different input,
model or config is refused by name), reuses every journaled mosaic whose COG is intact and every
journaled band of an unfinished mosaic whose part is intact, and runs the rest: a mosaic killed
half-way loses at most the band that was running.

Without ``resume`` an existing work area is replaced when it holds no finished mosaic (nothing to
lose) and refused otherwise, unless ``overwrite``. After a failure the work area is kept when it
holds finished mosaics (the log says how to resume) and removed otherwise.
"""

from __future__ import annotations

import fcntl
import json
import logging
import os
import shutil
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import geopandas as gpd
import numpy as np
import shapely

from . import __version__
from .errors import InputError, OutputExistsError

log = logging.getLogger(__name__)

# detect keys that do not change the results (how and where the work runs)
_NEUTRAL_KEYS = {"scheduler", "run_tasks", "streams", "threads", "batch_size", "model", "device",
                 "plot_scorer", "min_plot_score"}  # the scorer judges regions after all journaled work


def work_path(out_dir: Path) -> Path:
    """The work area of run directory ``out_dir``: a hidden sibling ``.NAME.partial``."""
    return out_dir.parent / f".{out_dir.name}.partial"


def _file_id(path: Path) -> dict[str, Any]:
    st = path.stat()
    return {"path": str(path.resolve()), "size": st.st_size, "mtime_ns": st.st_mtime_ns}


def fingerprint(mosaic_paths: Sequence[Path], *, model_path: str | None, meta: Any, device: str,
                params: dict[str, Any], detect_config: dict[str, Any]) -> dict[str, Any]:
    """Everything a run's results depend on, as plain JSON data."""
    model: dict[str, Any] = {"path": model_path, "version": str(getattr(meta, "version", "")),
                             "gsd_m": float(meta.gsd_m), "device": device}
    if model_path:
        root = Path(model_path)
        model["files"] = [_file_id(p) for p in sorted(root.iterdir()) if p.is_file()] if root.is_dir() else []
    return {
        "poppyscan_version": __version__,
        "inputs": [_file_id(Path(p)) for p in mosaic_paths],
        "model": model,
        "params": params,
        "config": {k: v for k, v in sorted(detect_config.items()) if k not in _NEUTRAL_KEYS},
    }


def _first_difference(old: Any, new: Any, where: str = "") -> str:
    if where == "inputs" and isinstance(old, list) and isinstance(new, list):
        return _inputs_difference(old, new)
    if isinstance(old, dict) and isinstance(new, dict):
        for key in list(old) + [k for k in new if k not in old]:
            if old.get(key) != new.get(key):
                return _first_difference(old.get(key), new.get(key), f"{where}.{key}" if where else str(key))
    if isinstance(old, list) and isinstance(new, list) and len(old) == len(new):
        for i, (a, b) in enumerate(zip(old, new, strict=True)):
            if a != b:
                return _first_difference(a, b, f"{where}[{i}]")
    return f"{where}: {_short(old)} then, {_short(new)} now"


def _inputs_difference(old: list, new: list) -> str:
    """The input mosaics added, removed, reordered or changed (by path), not both lists in full."""
    def path(item: Any) -> str:
        return str(item.get("path")) if isinstance(item, dict) else str(item)

    before, now = [path(i) for i in old], [path(i) for i in new]
    added = [p for p in now if p not in before]
    removed = [p for p in before if p not in now]
    if added or removed:
        parts = [f"added {_few(added)}"] if added else []
        parts += [f"removed {_few(removed)}"] if removed else []
        return f"input mosaics changed: {'; '.join(parts)}"
    if before != now:
        return "input mosaics given in another order"
    i = next((k for k, (a, b) in enumerate(zip(old, new, strict=True)) if a != b), 0)
    return f"input mosaic '{now[i]}' changed since (size or modification time)"


def _few(paths: list[str], n: int = 3) -> str:
    shown = ", ".join(f"'{p}'" for p in paths[:n])
    return shown + (f" and {len(paths) - n} more" if len(paths) > n else "")


def _short(value: Any, limit: int = 120) -> str:
    text = repr(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _write_atomic(path: Path, write: Any) -> None:
    """``write(fh)`` into a temporary binary file beside ``path``, fsync it, then rename it to ``path``."""
    tmp = path.with_name(f".{path.name}.tmp")
    with open(tmp, "wb") as fh:
        write(fh)
        fh.flush()
        os.fsync(fh.fileno())
    os.replace(tmp, path)


def _write_json_atomic(path: Path, data: Any) -> None:
    text = json.dumps(data, ensure_ascii=False, default=str)
    _write_atomic(path, lambda fh: fh.write(text.encode("utf-8")))


@dataclass
class WorkArea:
    """The work area of one run (see the module docstring). ``path`` becomes the run directory."""

    path: Path
    out_dir: Path
    _lock: Any = field(default=None, repr=False)

    @property
    def journal_dir(self) -> Path:
        return self.path / "journal"

    @classmethod
    def open(cls, out_dir: Path, fp: dict[str, Any], *, resume: bool, overwrite: bool) -> WorkArea:
        """Create, reuse (``resume``) or replace the work area of ``out_dir`` for fingerprint ``fp``."""
        work = cls(work_path(out_dir), out_dir)
        work._acquire()
        try:
            work._prepare(fp, resume=resume, overwrite=overwrite)
        except BaseException:
            work._release()
            raise
        return work

    def _acquire(self) -> None:
        """Hold ``.NAME.lock`` beside the run directory: one detect run per ``out_dir`` at a time.

        An OS lock (``flock``), released by the kernel when the process dies, so a run killed with
        ``kill -9`` never leaves a stale lock behind.
        """
        lock_path = self.out_dir.parent / f".{self.out_dir.name}.lock"
        fh = open(lock_path, "a+")  # held until _release()
        try:
            fcntl.flock(fh, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            fh.close()
            msg = (f"another detect run is writing '{self.out_dir}' (it holds '{lock_path}'); wait for it "
                   "to finish or choose another --out")
            raise OutputExistsError(msg) from None
        self._lock = (fh, lock_path)

    def _release(self) -> None:
        if self._lock is not None:
            fh, lock_path = self._lock
            self._lock = None
            lock_path.unlink(missing_ok=True)
            fh.close()

    def _prepare(self, fp: dict[str, Any], *, resume: bool, overwrite: bool) -> None:
        work, out_dir = self, self.out_dir
        if work.path.exists():
            if resume:
                old = work._read_fingerprint()
                if old is None:
                    log.info("%s holds no readable fingerprint; starting the run afresh", work.path)
                elif old != fp:
                    raise InputError(
                        f"cannot --resume '{out_dir}': the partial run was started with different settings "
                        f"({_first_difference(old, fp)}); rerun without --resume and with --overwrite to "
                        "start over")
                else:
                    log.info("resuming %s: %s already finished", out_dir, work.describe_work())
                    return
            elif work.has_work() and not overwrite:
                raise OutputExistsError(
                    f"a partial run of '{out_dir}' with {work.describe_work()} is in "
                    f"'{work.path}'; pass --resume to continue it or --overwrite to start over")
            shutil.rmtree(work.path)
        elif resume:
            log.info("nothing to resume for %s; starting the run", out_dir)
        work.path.mkdir(parents=True)
        work.path.chmod(0o755)
        work.journal_dir.mkdir()
        _write_json_atomic(work.path / "fingerprint.json", fp)

    def _read_fingerprint(self) -> dict[str, Any] | None:
        try:
            return json.loads((self.path / "fingerprint.json").read_text(encoding="utf-8"))
        except (OSError, ValueError):
            return None

    def finished(self) -> dict[int, dict[str, Any]]:
        """Journal entries of finished mosaics whose probability COG is intact, by mosaic index."""
        out: dict[int, dict[str, Any]] = {}
        if not self.journal_dir.is_dir():
            return out
        for f in sorted(self.journal_dir.glob("[0-9]*.json")):
            try:
                entry = json.loads(f.read_text(encoding="utf-8"))
                prob = self.path / entry["prob_name"]
                if prob.stat().st_size != entry["prob_size"]:
                    continue
                out[int(entry["index"])] = entry
            except (OSError, ValueError, KeyError):
                continue  # torn or stale: that mosaic is run again
        return out

    def record(self, index: int, prob_name: str, result: dict[str, Any]) -> None:
        """Journal a finished mosaic (after its COG ``prob_name`` is complete)."""
        gdf = result["gdf"]
        entry = {
            "index": index, "prob_name": prob_name, "prob_size": (self.path / prob_name).stat().st_size,
            "tiles": result["tiles"], "skipped": result["skipped"], "ha": result["ha"],
            "timings": result["timings"],
            "detections": {"wkb": shapely.to_wkb(gdf.geometry.values, hex=True).tolist(),
                           "prob_mean": gdf["prob_mean"].tolist(), "prob_max": gdf["prob_max"].tolist(),
                           "mosaic": gdf["mosaic"].tolist()},
        }
        _write_json_atomic(self.journal_dir / f"{index:04d}.json", entry)

    # -- row bands of unfinished mosaics ----------------------------------------------------------
    def band_dir(self, index: int) -> Path:
        return self.journal_dir / f"{index:04d}.bands"

    def record_band(self, index: int, result: Any) -> None:
        """Journal a finished band (a :class:`~poppyscan.bands.BandResult`) of mosaic ``index``."""
        d = self.band_dir(index)
        d.mkdir(exist_ok=True)
        meta = {"index": result.index, "row0": result.row0, "row1": result.row1, "part": result.part,
                "part_size": (self.path / result.part).stat().st_size, "tiles": result.tiles,
                "skipped": result.skipped, "timings": result.timings}
        _write_atomic(d / f"{result.index:04d}.npz",
                      lambda fh: np.savez(fh, meta=np.array(json.dumps(meta)), **result.parts.to_arrays()))

    def finished_bands(self, index: int, bands: Sequence[Any]) -> dict[int, Any]:
        """Journaled bands of mosaic ``index`` that match the plan ``bands`` and whose part is intact."""
        from .bands import BandResult
        from .vectorize import VectorParts

        out: dict[int, Any] = {}
        plan = {b.index: (b.row0, b.row1) for b in bands}
        for f in sorted(self.band_dir(index).glob("[0-9]*.npz")):
            try:
                with np.load(f, allow_pickle=False) as z:
                    arrays = {k: z[k] for k in z.files}
                meta = json.loads(str(arrays.pop("meta")))
                if plan.get(meta["index"]) != (meta["row0"], meta["row1"]):
                    continue
                if (self.path / meta["part"]).stat().st_size != meta["part_size"]:
                    continue
                out[meta["index"]] = BandResult(meta["index"], meta["row0"], meta["row1"], meta["part"],
                                                VectorParts.from_arrays(arrays), meta["tiles"],
                                                meta["skipped"], meta["timings"])
            except (OSError, ValueError, KeyError, TypeError):
                continue  # torn or stale: that band is run again
        return out

    def clear_bands(self, index: int) -> None:
        """Drop the band journal of mosaic ``index`` (its COG and mosaic entry are written)."""
        shutil.rmtree(self.band_dir(index), ignore_errors=True)

    def _band_count(self) -> int:
        if not self.journal_dir.is_dir():
            return 0
        return sum(1 for _ in self.journal_dir.glob("[0-9]*.bands/[0-9]*.npz"))

    def has_work(self) -> bool:
        """Whether anything finished (mosaics or bands) would be lost by starting over."""
        return bool(self.finished()) or self._band_count() > 0

    def describe_work(self) -> str:
        return f"{len(self.finished())} finished mosaic(s) and {self._band_count()} finished band(s)"

    @staticmethod
    def restore(entry: dict[str, Any], crs: Any, grid: Any) -> dict[str, Any]:
        """A journal entry -> a :func:`~poppyscan.bands.finish_mosaic` result
        (``grid`` recomputed by the caller)."""
        det = entry["detections"]
        geoms = shapely.from_wkb(det["wkb"]) if det["wkb"] else []
        gdf = gpd.GeoDataFrame({"prob_mean": det["prob_mean"], "prob_max": det["prob_max"],
                                "mosaic": det["mosaic"]}, geometry=gpd.GeoSeries(geoms, crs=crs))
        return {"gdf": gdf, "grid": grid, "tiles": entry["tiles"], "skipped": entry["skipped"],
                "ha": entry["ha"], "timings": entry["timings"]}

    def seal(self) -> None:
        """Drop the journal and fingerprint: the work area is about to become the run directory."""
        shutil.rmtree(self.journal_dir, ignore_errors=True)
        (self.path / "fingerprint.json").unlink(missing_ok=True)

    def cleanup(self) -> None:
        """Release the run lock; after a failure keep the work area when it holds finished mosaics."""
        try:
            self._cleanup()
        finally:
            self._release()

    def _cleanup(self) -> None:
        if not self.path.exists():
            return
        if self.has_work():
            log.warning("kept %s in %s; rerun the same command with --resume to continue",
                        self.describe_work(), self.path)
        else:
            shutil.rmtree(self.path, ignore_errors=True)
