"""How training is scored: the segmentation loss, the per-epoch validation on fixed tiles, and the
calibration of the final bundle's threshold and plot decision on whole validation scenes.

The threshold grids (:data:`THRESHOLDS` for the validation tiles, :data:`CALIBRATION_THRESHOLDS` and
:data:`CALIBRATION_MIN_PROB_MEANS` for whole scenes) live here; :mod:`poppyscan.train` re-exports them.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from .bundle_meta import BundleMeta
from .config import TrainConfig
from .eval_metrics import match_masks, prf
from .train_inputs import _normalise
from .traindata import IGNORE

THRESHOLDS = tuple(round(float(t), 2) for t in np.arange(0.25, 0.96, 0.05))
# Whole-scene calibration also tries 0.96-0.99: the models' probabilities are peaked, and on the
# validation scenes the best pooled object F1 sat at the old grid's top (0.95).
CALIBRATION_THRESHOLDS = THRESHOLDS + (0.96, 0.97, 0.98, 0.99)
# The plot decision (bundle ``min_prob_mean``) is calibrated with the threshold: outlining at a lower
# threshold and keeping regions by their mean probability dropped about half of 0.4.0's false plots on
# validation scenes of both renderers without losing recall (a false alarm is a wide, weak region that
# a high pixel threshold breaks into several confident-looking fragments; model card).
CALIBRATION_MIN_PROB_MEANS = (0.0, 0.8, 0.85, 0.9, 0.93, 0.95, 0.96, 0.97, 0.98)


def seg_loss(logits: torch.Tensor, target: torch.Tensor, poppy: int = 1) -> torch.Tensor:
    """Cross-entropy (ignore :data:`IGNORE`) + 0.5 x soft Dice on the poppy class over valid pixels."""
    target = target.long()
    ce = F.cross_entropy(logits, target, ignore_index=IGNORE)
    valid = (target != IGNORE).float()
    p = torch.softmax(logits, 1)[:, poppy] * valid
    t = (target == poppy).float() * valid
    dice = 1 - (2 * (p * t).sum() + 1) / (p.sum() + t.sum() + 1)
    return ce + 0.5 * dice


@torch.no_grad()
def validate(
    model: torch.nn.Module,
    tiles: tuple[np.ndarray, np.ndarray],
    mean: torch.Tensor,
    std: torch.Tensor,
    *,
    min_px: int,
    poppy: int = 1,
    batch: int = 8,
) -> dict[str, Any]:
    """Loss, pixel IoU and object P/R/F1 per threshold on fixed validation tiles; picks the best threshold."""
    model.eval()
    xs, ys = tiles
    probs, losses = [], []
    for i in range(0, len(xs), batch):
        x = torch.from_numpy(xs[i : i + batch])
        y = torch.from_numpy(ys[i : i + batch])
        logits = model(_normalise(x, mean, std))
        losses.append(float(seg_loss(logits, y, poppy)) * len(x))
        probs.append(torch.softmax(logits, 1)[:, poppy].numpy())
    prob = np.concatenate(probs)
    valid = ys != IGNORE
    truth = ys == 1
    per_t = {}
    for t in THRESHOLDS:
        pred = (prob >= t) & valid
        inter = float((pred & truth).sum())
        union = float((pred | truth).sum())
        counts = np.zeros(3, np.int64)
        for k in range(len(prob)):
            counts += match_masks(pred[k], truth[k], valid=valid[k], min_px=min_px)
        tp, fp, fn = (int(c) for c in counts)
        per_t[t] = {
            "pixel_iou": inter / union if union else 1.0,
            "tp": tp,
            "fp": fp,
            "fn": fn,
            **prf(tp, fp, fn),
        }
    best = max(THRESHOLDS, key=lambda t: ((per_t[t]["f1"] or 0.0), per_t[t]["pixel_iou"], -abs(t - 0.5)))
    return {
        "loss": sum(losses) / len(xs),
        "threshold": best,
        **per_t[best],
        "pixel_iou_at_0.5": per_t[0.5]["pixel_iou"],
    }


def _fmt(v: Any) -> str:
    return "-" if v is None else f"{v:.3f}"


def calibrate_bundle(bundle, pairs: list, cfg: TrainConfig, say: Callable[[str], None],  # noqa: ANN001
                     max_false_per_ha: float | None = None,
                     min_prob_means: tuple[float, ...] = CALIBRATION_MIN_PROB_MEANS,
                     cal: dict[str, Any] | None = None) -> BundleMeta:
    """Set the bundle's threshold and plot decision (``min_prob_mean``) from whole validation scenes
    (best pooled object F1, optionally among pairs with at most ``max_false_per_ha`` false plots per
    hectare) and record the validation-scene metrics there in ``bundle.json``. ``cal``: the result of
    :func:`~poppyscan.evaluate.calibrate_threshold` on ``pairs`` when the caller already has it."""
    from .bundle_io import update_meta
    from .evaluate import calibrate_threshold

    if cal is None:
        say(f"calibrating the threshold and plot decision on {len(pairs)} whole validation scenes")
        cal = calibrate_threshold(
            bundle, pairs, thresholds=CALIBRATION_THRESHOLDS, threads=cfg.threads,
            min_area_m2=cfg.min_area_m2, max_false_per_ha=max_false_per_ha, min_prob_means=min_prob_means,
        )
    rep = cal["per_threshold"][cal["threshold"]]
    if not cal["cap_met"]:
        say(f"no threshold keeps the validation false plots at or below {max_false_per_ha:.3f}/ha; "
            f"took the highest, {cal['threshold']:.2f} (plot mean >= {cal['min_prob_mean']:.2f})")
    keys = (
        "tp",
        "fp",
        "fn",
        "precision",
        "recall",
        "f1",
        "pixel_iou",
        "centroid_error_m",
        "false_plots_per_ha",
    )
    metrics = dict(bundle.meta.metrics)
    metrics["validation_scenes"] = {
        "scenes": len(pairs),
        "threshold": cal["threshold"],
        "min_prob_mean": cal["min_prob_mean"],
        **{k: rep[k] for k in keys},
    }
    say(
        f"threshold {cal['threshold']:.2f}, plot mean >= {cal['min_prob_mean']:.2f}: validation scenes "
        f"object P {_fmt(rep['precision'])} "
        f"R {_fmt(rep['recall'])} F1 {_fmt(rep['f1'])}, {_fmt(rep['false_plots_per_ha'])} false plots/ha"
    )
    meta = update_meta(bundle.path, threshold=float(cal["threshold"]),
                       min_prob_mean=float(cal["min_prob_mean"]), metrics=metrics)
    bundle.meta = meta
    return meta
