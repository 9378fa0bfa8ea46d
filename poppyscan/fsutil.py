"""Safe output handling: refuse to clobber without ``overwrite``, write to a temp name, then rename.

Nothing stands under its final name until it is complete, and an existing output is never touched
unless the user asked for ``--overwrite``.
"""

from __future__ import annotations

import contextlib
import errno
import os
import shutil
import tempfile
from collections.abc import Iterable, Iterator
from pathlib import Path

from .errors import InputError, OutputExistsError


def check_writable(path: str | Path, overwrite: bool) -> Path:
    """Raise :class:`OutputExistsError` if ``path`` exists and ``overwrite`` is false."""
    path = Path(path)
    if path.exists() and not overwrite:
        raise OutputExistsError(f"output '{path}' already exists; pass --overwrite to replace it or choose "
                                "another path")
    return path


@contextlib.contextmanager
def file_lock(path: str | Path) -> Iterator[None]:
    """Hold an exclusive inter-process lock on ``path`` (through ``.<name>.lock`` beside it).

    For read-modify-write of a shared file by separate programs, e.g. the review server updating the
    ``review`` column of a run's ``plots.gpkg`` while ``poppyscan tasks`` copies it, adds its layer
    and renames the copy over it. An OS lock (``flock``): released by the kernel if the process dies.
    The lock file is left in place (removing it would race with a waiting locker).
    """
    import fcntl

    path = Path(path)
    with open(path.with_name(f".{path.name}.lock"), "a+") as fh:
        fcntl.flock(fh, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)


def write_bytes_atomic(path: str | Path, data: bytes, *, fsync: bool = False) -> None:
    """Write ``data`` to ``path`` through :func:`atomic_path`, so a reader never sees half of it.

    The file is created by ``open``, so it gets the mode any new file gets (``0666`` less the umask,
    usually ``0644``): outputs on a shared drive stay readable by colleagues. A directory at ``path`` is
    never replaced (:class:`IsADirectoryError`).
    """
    path = Path(path)
    if path.is_dir():
        raise IsADirectoryError(errno.EISDIR, os.strerror(errno.EISDIR), str(path))
    with atomic_path(path, overwrite=True) as tmp, open(tmp, "wb") as fh:
        fh.write(data)
        if fsync:
            fh.flush()
            os.fsync(fh.fileno())


@contextlib.contextmanager
def atomic_path(final: str | Path, overwrite: bool = False) -> Iterator[Path]:
    """Yield a temporary path beside ``final``; rename it onto ``final`` when the block succeeds.

    On any error the temporary file is removed and ``final`` (old or absent) is left as it was.
    Works for files and for directories written at the temporary path.
    """
    final = check_writable(final, overwrite)
    final.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(prefix=f".{final.name}.", suffix=".part" + final.suffix, dir=final.parent)
    os.close(fd)
    tmp = Path(tmp_name)
    tmp.unlink()  # let the writer create it (GDAL drivers refuse some existing files)
    try:
        yield tmp
        if not tmp.exists():
            raise RuntimeError(f"writer produced nothing at {tmp}")
        if final.is_dir() and not tmp.is_dir():
            shutil.rmtree(final)
        elif tmp.is_dir() and final.exists():
            old = final.with_name(f".{final.name}.old")
            shutil.rmtree(old, ignore_errors=True)
            os.replace(final, old)
            os.replace(tmp, final)
            shutil.rmtree(old, ignore_errors=True)
            return
        os.replace(tmp, final)
    finally:
        if tmp.is_dir():
            shutil.rmtree(tmp, ignore_errors=True)
        elif tmp.exists():
            tmp.unlink()


def replace_together(pairs: Iterable[tuple[Path, Path]], remove: Iterable[Path] = ()) -> None:
    """Move each staged path onto its final path and delete each path of ``remove``: all of it or none.

    For a set of outputs that belong together (a field package): build them all first under temporary
    names beside their finals (same filesystem), then call this, so a failure while building leaves the
    previous set whole. A file is swapped in by one atomic rename over the old one (readers never see it
    missing); a directory's old version is renamed aside first. The old versions are kept until every
    path is in place: if any step fails, every path done so far is put back as it was and the error is
    raised again. Afterwards the old versions are deleted.

    Parameters
    ----------
    pairs
        ``(staged, final)``: a file or directory, and where it goes (replacing a file or directory there).
    remove
        Paths to delete along with the moves (e.g. an output the new set no longer has).
    """
    items: list[tuple[Path | None, Path]] = [(Path(s), Path(f)) for s, f in pairs]
    items += [(None, Path(r)) for r in remove]
    backup_dirs: dict[Path, Path] = {}
    done: list[list] = []  # [staged, final, backup or None, moved in]

    def backup_for(final: Path) -> Path:
        parent = final.parent
        if parent not in backup_dirs:
            backup_dirs[parent] = Path(tempfile.mkdtemp(prefix=".replaced.", suffix=".old", dir=parent))
        return backup_dirs[parent] / str(len(done))

    try:
        for staged, final in items:
            entry: list = [staged, final, None, False]
            done.append(entry)
            if os.path.lexists(final):
                entry[2] = backup = backup_for(final)
                if final.is_dir() and not final.is_symlink():
                    os.rename(final, backup)
                else:
                    try:
                        os.link(final, backup, follow_symlinks=False)  # the old file stays until all is in
                    except OSError:
                        shutil.copy2(final, backup, follow_symlinks=False)
                    if staged is None or staged.is_dir():
                        os.unlink(final)
            if staged is not None:
                os.replace(staged, final)
                entry[3] = True
    except BaseException:
        for staged, final, backup, moved in reversed(done):
            try:
                if moved:
                    os.replace(final, staged)
                if backup is not None:
                    os.replace(backup, final)
            except OSError:  # pragma: no cover - best effort; the error below is what matters
                pass
        raise
    finally:
        for d in backup_dirs.values():
            shutil.rmtree(d, ignore_errors=True)


def require_file(path: str | Path, what: str = "input") -> Path:
    """Return ``path`` as a Path, raising :class:`InputError` if it is not an existing file."""
    path = Path(path)
    if not path.exists():
        raise InputError(f"{what} '{path}' does not exist; check the path")
    if not path.is_file():
        raise InputError(f"{what} '{path}' is not a file; pass a file path")
    return path
