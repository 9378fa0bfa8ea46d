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
