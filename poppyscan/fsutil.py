"""Safe output handling: refuse to clobber without ``overwrite``, write to a temp name, then rename.

Nothing stands under its final name until it is complete, and an existing output is never touched
unless the user asked for ``--overwrite``.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import tempfile
from collections.abc import Iterator
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


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def write_bytes_atomic(path: str | Path, data: bytes, *, fsync: bool = False) -> None:
    """Write ``data`` to ``path`` through a temporary file beside it, so a reader never sees half of it.

    The file gets the mode any new file gets (``0666`` less the umask, usually ``0644``), not the
    ``0600`` of :func:`tempfile.mkstemp`: outputs on a shared drive stay readable by colleagues.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".part", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
            if fsync:
                fh.flush()
                os.fsync(fh.fileno())
        os.chmod(tmp, 0o666 & ~_umask())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise


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


def require_file(path: str | Path, what: str = "input") -> Path:
    """Return ``path`` as a Path, raising :class:`InputError` if it is not an existing file."""
    path = Path(path)
    if not path.exists():
        raise InputError(f"{what} '{path}' does not exist; check the path")
    if not path.is_file():
        raise InputError(f"{what} '{path}' is not a file; pass a file path")
    return path
