"""Error hierarchy.

Every error a user can cause derives from :class:`PoppyscanError`; the CLI prints its message on one
line and exits with :attr:`PoppyscanError.exit_code`, without a traceback. Messages quote the offending
parameter or file and name the fix, e.g. ``"'overlap' must be in [0, 0.5), got 0.7: lower it"``.
Subclasses also derive from the matching builtin so library callers can catch ``ValueError`` etc.
"""

from __future__ import annotations


class PoppyscanError(Exception):
    """Root of all poppyscan errors."""

    exit_code = 1


class ConfigError(PoppyscanError, ValueError):
    """A configuration file or option is invalid (names the field)."""

    exit_code = 2


class InputError(PoppyscanError, ValueError):
    """An input file (raster, vector, table) is missing, unreadable or unsuitable."""

    exit_code = 2


class PlotOffMosaicError(InputError):
    """A plot has no valid pixel of the mosaic it is to be cut from (it lies outside it): the run folder
    and the mosaics at the paths ``run.json`` names do not belong together."""


class OutputExistsError(PoppyscanError, FileExistsError):
    """An output already exists and ``--overwrite`` was not given."""

    exit_code = 3


class BundleError(PoppyscanError, ValueError):
    """A model bundle is missing, corrupt or incompatible with this version."""

    exit_code = 4


class DependencyError(PoppyscanError, RuntimeError):
    """An optional dependency or resource (e.g. pretrained weights) is not available offline."""

    exit_code = 5


IO_EXIT_CODE = 6
"""Exit code of the CLI for an operating-system error (a path that cannot be read or written)."""


def describe_os_error(exc: OSError) -> str:
    """One line for an :class:`OSError` no poppyscan check caught: the path, the reason, the fix.

    >>> describe_os_error(PermissionError(13, "Permission denied", "/sys/x")).split(";")[0]
    "cannot write or read '/sys/x': Permission denied"
    """
    reason = exc.strerror or str(exc) or type(exc).__name__
    if isinstance(exc, FileExistsError | NotADirectoryError) and exc.filename is not None:
        from pathlib import Path

        path = Path(str(exc.filename))
        in_way = next((p for p in (path, *path.parents) if p.exists() and not p.is_dir()), path)
        return f"'{in_way}' is a file where a folder is needed; choose another path"
    if exc.filename is None:
        return f"{reason} (a file could not be read or written); check the input files and the output folder"
    return (f"cannot write or read '{exc.filename}': {reason}; check the path and its permissions, or "
            "choose another path")
