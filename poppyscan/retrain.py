"""Retraining from the field: survey labels -> fine-tuned bundle -> held-out comparison -> guarded promotion.

``retrain(register, current, holdout, out)`` does, in ``out/``:

1. ``labels/``: :func:`poppyscan.survey.labels.export_training_labels` (verified poppy plots = positives,
   false positives = hard negatives, unverified plots ignored) and ``labels/scenes.csv``;
2. ``train/``: :func:`poppyscan.train.train` on those labels plus any more labelled scenes, initialised
   from the ``current`` bundle (``train/bundle/`` is the new bundle);
3. ``comparison.json`` / ``comparison.txt``: the current and the new bundle run through
   :func:`poppyscan.evaluate.evaluate_scenes` on the *same* held-out scenes with the same settings;
4. the decision by a stated :class:`~poppyscan.promotion.PromotionRule`, and only when it says so and
   ``promote_to`` is given, :func:`~poppyscan.promotion.promote_bundle`: the new bundle is copied beside
   the target, then renamed into place, the old one kept as ``<name>.bak-<UTC time>``. A target that is
   not the bundle evaluated as current (compared by content digest) is refused, so a bundle nobody
   compared is never replaced.

Held-out scenes must not be among the training or validation scenes (refused), and must contain at
least one poppy plot (object F1 is undefined otherwise).
"""

from __future__ import annotations

import datetime as _dt
import json
import logging
import shutil
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .errors import InputError, OutputExistsError
from .promotion import (  # noqa: F401  (re-exported: the public names of retraining)
    Decision,
    PromotionRule,
    bundle_digest,
    compare_bundles,
    decide,
    format_comparison,
    promote_bundle,
)

log = logging.getLogger(__name__)


@dataclass
class RetrainResult:
    out_dir: Path
    new_bundle: Path
    report: dict[str, Any]
    promoted: bool
    backup: Path | None = None
    messages: list[str] = field(default_factory=list)


def _mosaics(sources: list[str | Path]) -> set[Path]:
    from .scenes import find_scenes

    return {m.resolve() for m, _ in find_scenes(list(sources))}


def _check_holdout(holdout: list[str | Path], training: list[str | Path]) -> None:
    from .scenes import find_scenes, open_scene

    if not holdout:
        raise InputError("'--holdout' is required: labelled scenes that neither bundle was trained on")
    both = _mosaics(holdout) & _mosaics(training)
    if both:
        raise InputError(
            f"{len(both)} held-out scene(s) are also training/validation scenes (e.g. '{sorted(both)[0]}'); "
            "the comparison needs scenes neither bundle learnt from"
        )
    n = 0
    for m, lab in find_scenes(list(holdout)):
        if lab is not None:
            sc = open_scene(m, lab)
            n += len(sc.positives)
            sc.close()
    if n == 0:
        raise InputError("the held-out scenes hold no poppy plots; object F1 cannot compare the bundles")


def retrain(
    register: str | Path,
    current: str | Path,
    holdout: list[str | Path],
    out_dir: str | Path,
    *,
    scenes: list[str | Path] = (),
    val: list[str | Path] | None = None,
    promote_to: str | Path | None = None,
    config=None,  # noqa: ANN001 - TrainConfig
    rule: PromotionRule | None = None,
    year: int | None = None,
    resume: bool = False,
    overwrite: bool = False,
    name: str | None = None,
    version: str | None = None,
    engine: str = "auto",
    device: str = "auto",
    iou_min: float = 0.25,
    progress: Callable[[str], None] | None = None,
) -> RetrainResult:
    """Export field labels from ``register``, fine-tune ``current`` on them (+ ``scenes``), compare the
    two bundles on ``holdout`` and promote the new one to ``promote_to`` only if ``rule`` says so."""
    from .bundle_io import load_bundle, update_meta
    from .config import TrainConfig
    from .survey.labels import export_training_labels
    from .train import train

    cfg = config or TrainConfig()
    say = progress or log.info
    rule = rule or PromotionRule()
    out = Path(out_dir)
    if resume and overwrite:
        raise InputError("'resume' and 'overwrite' exclude each other: resume a run or start it again")
    if out.exists() and any(out.iterdir()) and not (resume or overwrite):
        raise OutputExistsError(
            f"retrain directory '{out}' already exists; "
            "pass --resume to continue it or --overwrite to start again"
        )
    cur_meta = load_bundle(current, with_torch=False).meta
    cur_digest = bundle_digest(current)
    if promote_to is not None and Path(promote_to).exists() and bundle_digest(promote_to) != cur_digest:
        raise InputError(
            f"'--promote-to {promote_to}' holds a different bundle than '--current {current}'; "
            "promotion must replace the bundle that is compared"
        )
    if overwrite:
        for p in ("labels", "comparison.json", "comparison.txt"):
            q = out / p
            shutil.rmtree(q) if q.is_dir() else q.unlink(missing_ok=True)

    exported = export_training_labels(register, out / "labels", year=year, overwrite=resume)
    say(exported.describe())
    sources: list[str | Path] = ([exported.scenes_csv] if exported.scenes else []) + list(scenes)
    if not sources:
        raise InputError(
            f"register '{register}' has no verified plots on mosaics that still exist and no '--scenes' were "
            "given: nothing to train on"
        )
    _check_holdout(list(holdout), sources + list(val or []))

    ckpt = out / "train" / "checkpoints" / "last.pt"
    stamp = _dt.datetime.now(_dt.UTC).strftime("%Y%m%d")
    result = train(
        sources,
        out / "train",
        cfg,
        resume=resume and ckpt.is_file(),
        overwrite=overwrite or resume,
        init=current,
        val_sources=list(val) if val else None,
        name=name or cur_meta.name,
        version=version or f"{cur_meta.version}+field{stamp}",
        progress=say,
    )
    summ = result.meta.training
    say(
        f"training data: {len(summ['scenes_train'])} scene(s), {summ['plots_train']} poppy plot(s), "
        f"{summ['hard_negatives_train']} hard negative(s); {len(summ['scenes_val'])} validation scene(s)"
    )
    survey_mosaics = _mosaics([exported.scenes_csv]) if exported.scenes else set()
    in_val = survey_mosaics & {Path(s).resolve() for s in summ["scenes_val"]}
    if in_val:
        say(
            f"note: {len(in_val)} field-labelled mosaic(s) went to validation, not training; "
            "pass --val to keep "
            "them all in training"
        )

    report = compare_bundles(
        current,
        result.bundle_path,
        list(holdout),
        rule=rule,
        engine=engine,
        device=device,
        threads=cfg.threads,
        min_area_m2=cfg.min_area_m2,
        iou_min=iou_min,
        progress=say,
    )
    report["labels"] = {
        "scenes": exported.scenes,
        "positives": exported.positives,
        "hard_negatives": exported.hard_negatives,
        "ignored": exported.ignored,
        "missing_mosaics": exported.missing_mosaics,
    }
    report["training"] = {
        k: summ[k]
        for k in (
            "plots_train",
            "hard_negatives_train",
            "poppy_free_scenes_train",
            "scenes_train",
            "scenes_val",
            "epochs",
            "best_epoch",
            "init",
        )
    }
    report["promote_to"] = str(promote_to) if promote_to else None
    d = report["decision"]
    keys = ("tp", "fp", "fn", "precision", "recall", "f1", "false_plots_per_ha")
    update_meta(
        result.bundle_path,
        training={**summ, "from_survey": {"register": str(register), **report["labels"]}},
        metrics={
            **result.meta.metrics,
            "holdout_comparison": {
                "holdout": report["holdout"],
                "current_version": cur_meta.version,
                "current": {k: report["current"]["total"][k] for k in keys},
                "new": {k: report["new"]["total"][k] for k in keys},
                "promote": d["promote"],
            },
        },
    )

    promoted, backup = False, None
    if d["promote"] and promote_to is not None:
        backup = promote_bundle(result.bundle_path, promote_to, expected_digest=cur_digest)
        promoted = True
        d["action"] = f"promoted to {promote_to}" + (f"; previous bundle kept as {backup}" if backup else "")
    elif d["promote"]:
        d["action"] = "not installed: no --promote-to given (the new bundle stays in the work directory)"
    else:
        d["action"] = "not promoted: " + (
            f"'{promote_to}' left unchanged" if promote_to else "the current bundle stays"
        )
    report["backup"] = str(backup) if backup else None
    (out / "comparison.json").write_text(
        json.dumps(report, indent=2, ensure_ascii=False, default=str) + "\n", encoding="utf-8"
    )
    lab, tr = report["labels"], report["training"]
    text = (
        f"field labels from {register}: {lab['scenes']} mosaic(s), "
        f"{lab['positives']} verified poppy plot(s), "
        f"{lab['hard_negatives']} false positive(s) as hard negatives, {lab['ignored']} unverified ignored\n"
        f"trained from {current}: {len(tr['scenes_train'])} scene(s), {tr['plots_train']} poppy plot(s), "
        f"{tr['hard_negatives_train']} hard negative(s), {tr['epochs']} epoch(s)\n\n"
        + format_comparison(report)
        + f"\naction: {d['action']}\n"
    )
    (out / "comparison.txt").write_text(text, encoding="utf-8")
    return RetrainResult(out, result.bundle_path, report, promoted, backup, [text])
