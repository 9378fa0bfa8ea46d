"""The rules a bundle's metadata sets for running it: the GSD a mosaic is read and predicted at
(:func:`run_gsd_m`, :func:`gsd_floor_m`, :func:`check_min_gsd`) and which thresholded regions are
reported as plots (:func:`plot_decision`). One place for the rules ``detect``, the whole-scene predictor
and calibration share.
"""

from __future__ import annotations

from typing import Any

import numpy as np


def gsd_floor_m(meta: Any, min_gsd_m: float | None = None) -> float:
    """The finest GSD (m/px) any mosaic is read at: ``min_gsd_m`` (an override), else the bundle's
    ``min_gsd_m``, else its ``gsd_m`` (every mosaic resampled to it).

    >>> from poppyscan.bundle_meta import new_meta
    >>> gsd_floor_m(new_meta(gsd_m=0.04)), gsd_floor_m(new_meta(gsd_m=0.04, min_gsd_m=0.035), 0.03)
    (0.04, 0.03)
    """
    lo = min_gsd_m if min_gsd_m is not None else getattr(meta, "min_gsd_m", None)
    return float(meta.gsd_m) if lo is None else float(lo)


def run_gsd_m(meta: Any, mosaic_gsd_m: float, min_gsd_m: float | None = None) -> float:
    """The GSD (m/px) a mosaic of ``mosaic_gsd_m`` is read and predicted at.

    Coarser mosaics are resampled to the bundle's ``gsd_m``. A finer mosaic runs at its own GSD down to
    ``min_gsd_m`` (the argument, else the bundle's field, else ``gsd_m``): a model trained with scale
    jitter sees plants up to that much larger than at ``gsd_m``, so detail a fine flight recorded is not
    thrown away by downsampling. One rule for ``detect``, the whole-scene predictor and calibration.

    >>> from poppyscan.bundle_meta import new_meta
    >>> m = new_meta(gsd_m=0.04, min_gsd_m=0.035)
    >>> run_gsd_m(m, 0.06), run_gsd_m(m, 0.037), run_gsd_m(m, 0.02), run_gsd_m(m, 0.02, 0.04)
    (0.04, 0.037, 0.035, 0.04)
    """
    return min(float(meta.gsd_m), max(gsd_floor_m(meta, min_gsd_m), float(mosaic_gsd_m)))


def check_min_gsd(meta: Any, min_gsd_m: float | None, option: str = "detect.min_gsd_m") -> None:
    """Refuse (:class:`~poppyscan.errors.ConfigError`) a ``min_gsd_m`` override outside
    ``[gsd_m / 2, gsd_m]`` of the model ``meta``: finer than half the training GSD, plants are larger
    than any scale jitter showed the network."""
    from .errors import ConfigError

    g = float(meta.gsd_m)
    if min_gsd_m is not None and not 0.5 * g - 1e-12 <= min_gsd_m <= g + 1e-12:
        from .config import option_name

        name = f"'{option}'" if option.startswith("-") else f"'{option_name(option)}' (config '{option}')"
        raise ConfigError(f"{name} must be in [{0.5 * g:g}, {g:g}] m/px for this model "
                          f"(trained at {g:g} m/px), got {min_gsd_m:g}")


def plot_decision(prob_mean: Any, min_prob_mean: float, scores: Any = None,
                  min_score: float | None = None) -> np.ndarray:
    """The plot decision: True where a thresholded region's mean probability reaches ``min_prob_mean``
    (the bundle field; to within float rounding) and, with a plot scorer (``min_score`` given), its score
    reaches ``min_score``, i.e. the region is reported as a plot. One rule for ``detect``, the
    whole-scene predictor and the calibration grid (:func:`poppyscan.plot_scorer.decision_bounds` says
    which bounds are in effect).

    >>> plot_decision([0.84, 0.85, 0.9], 0.85).tolist()
    [False, True, True]
    >>> plot_decision([0.84, 0.85, 0.9], 0.0, [0.2, 0.4, 0.3], 0.3).tolist()
    [False, True, True]
    """
    keep = np.asarray(prob_mean, dtype=float) >= min_prob_mean - 1e-9
    if min_score is not None:
        keep &= np.asarray(scores, dtype=float) >= min_score - 1e-9
    return keep
