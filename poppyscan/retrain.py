"""Retraining from the field: survey labels -> fine-tuned bundle -> held-out comparison -> guarded promotion.

``retrain(register, current, holdout, out)`` does, in ``out/``:

1. ``labels/``: :func:`poppyscan.survey.labels.export_training_labels` (verified poppy plots = positives,
   false positives = hard negatives, unverified plots ignored) and ``labels/scenes.csv``;
2. ``train/``: :func:`poppyscan.train.train` on those labels plus any more labelled scenes, initialised
   from the ``current`` bundle (``train/bundle/`` is the new bundle);
3. ``comparison.json`` / ``comparison.txt``: the current and the new bundle run through
   :func:`poppyscan.evaluate.evaluate_scenes` on the *same* held-out scenes with the same settings;
4. the decision by a stated :class:`PromotionRule`, and only when it says so and ``promote_to`` is
   given, :func:`promote_bundle`: the new bundle is copied beside the target, then renamed into place,
   the old one kept as ``<name>.bak-<UTC time>``. A target that is not the bundle evaluated as current
   (compared by content digest) is refused, so a bundle nobody compared is never replaced.

Held-out scenes must not be among the training or validation scenes (refused), and must contain at
least one poppy plot (object F1 is undefined otherwise).
"""

from __future__ import annotations

import dataclasses
import datetime as _dt
import hashlib
import json
import logging
import os
import shutil
import tempfile
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .errors import InputError, OutputExistsError

log = logging.getLogger(__name__)

_EPS = 1e-9


@dataclass(frozen=True)
class PromotionRule:
    """When a new bundle replaces the current one, judged on the pooled held-out metrics.

    Promote only if ``new.f1 > current.f1 + min_f1_gain`` **and**
    ``new.false_plots_per_ha <= current.false_plots_per_ha + max_fp_per_ha_increase``.
    """

    min_f1_gain: float = 0.0
    max_fp_per_ha_increase: float = 0.0

    def __post_init__(self) -> None:
        if not 0 <= self.min_f1_gain < 1:
            raise InputError(f"'min_f1_gain' must be in [0, 1), got {self.min_f1_gain}")
        if self.max_fp_per_ha_increase < 0:
            raise InputError(f"'max_fp_per_ha_increase' must be >= 0, got {self.max_fp_per_ha_increase}")

    def describe(self) -> str:
        gain = f" by more than {self.min_f1_gain:g}" if self.min_f1_gain else ""
        tol = f" by more than {self.max_fp_per_ha_increase:g}" if self.max_fp_per_ha_increase else ""
        return (
            f"promote only if the new bundle's held-out object F1 is higher than the current one's{gain} "
            f"and its false plots per hectare are not higher{tol}"
        )


@dataclass
class Decision:
    promote: bool
    reasons: list[str]
    rule: str

    def describe(self) -> str:
        head = "PROMOTE: the new bundle is better" if self.promote else "KEEP the current bundle"
        return f"{head} ({'; '.join(self.reasons)})"


def _num(v: Any) -> str:
    return "-" if v is None else f"{v:.3f}"


def decide(current: dict[str, Any], new: dict[str, Any], rule: PromotionRule | None = None) -> Decision:
    """Apply ``rule`` to two pooled evaluation reports (``evaluate_scenes(...)["total"]``)."""
    rule = rule or PromotionRule()
    reasons: list[str] = []
    f_cur, f_new = current.get("f1"), new.get("f1")
    if f_cur is None or f_new is None:
        return Decision(
            False, ["object F1 is undefined: the held-out scenes have no poppy plots"], rule.describe()
        )
    f1_ok = f_new > f_cur + rule.min_f1_gain + _EPS
    reasons.append(
        f"object F1 {_num(f_new)} vs {_num(f_cur)}: "
        + ("higher" if f1_ok else "not higher")
        + (f" by more than {rule.min_f1_gain:g}" if rule.min_f1_gain else "")
    )
    fp_cur, fp_new = current.get("false_plots_per_ha"), new.get("false_plots_per_ha")
    if fp_cur is None or fp_new is None:  # valid area unknown: compare the counts on the same scenes
        fp_ok = new.get("fp", 0) <= current.get("fp", 0)
        reasons.append(
            f"false plots {new.get('fp')} vs {current.get('fp')}: " + ("not worse" if fp_ok else "worse")
        )
    else:
        fp_ok = fp_new <= fp_cur + rule.max_fp_per_ha_increase + _EPS
        reasons.append(f"false plots/ha {fp_new:.2f} vs {fp_cur:.2f}: " + ("not worse" if fp_ok else "worse"))
    return Decision(f1_ok and fp_ok, reasons, rule.describe())


def bundle_digest(path: str | Path) -> str:
    """SHA-256 over a bundle directory's regular files (names and contents), to tell bundles apart."""
    h = hashlib.sha256()
    root = Path(path)
    for f in sorted(p for p in root.rglob("*") if p.is_file()):
        h.update(str(f.relative_to(root)).encode() + b"\0")
        with f.open("rb") as fh:
            for chunk in iter(lambda: fh.read(1 << 20), b""):
                h.update(chunk)
    return h.hexdigest()


def promote_bundle(
    new: str | Path, target: str | Path, *, expected_digest: str | None, now: _dt.datetime | None = None
) -> Path | None:
    """Install bundle ``new`` at ``target``; the old ``target`` becomes ``<target>.bak-<UTC time>``.

    ``new`` is copied (and loaded, as a check) beside ``target`` first; then two renames on the same
    file system swap it in, so ``target`` is always either the whole old or the whole new bundle.
    When ``target`` exists its content must have digest ``expected_digest`` (the bundle that was
    evaluated as current), else :class:`InputError` and nothing changes. Returns the backup path.
    """
    from .bundle import load_bundle

    new, target = Path(new), Path(target)
    if target.exists():
        if expected_digest is None or bundle_digest(target) != expected_digest:
            raise InputError(
                f"'{target}' is not the bundle that was evaluated as current (its content differs); "
                "nothing was promoted: re-run the comparison against it"
            )
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{target.name}.", suffix=".promote", dir=target.parent))
    backup = None
    try:
        shutil.rmtree(tmp)
        shutil.copytree(new, tmp)
        load_bundle(tmp, with_torch=False)  # complete and readable before it goes in
        if target.exists():
            stamp = (now or _dt.datetime.now(_dt.UTC)).strftime("%Y%m%dT%H%M%SZ")
            backup = target.with_name(f"{target.name}.bak-{stamp}")
            n = 1
            while backup.exists():
                n += 1
                backup = target.with_name(f"{target.name}.bak-{stamp}-{n}")
            os.replace(target, backup)
        os.replace(tmp, target)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return backup


def compare_bundles(
    current: str | Path,
    new: str | Path,
    holdout: list[str | Path],
    *,
    rule: PromotionRule | None = None,
    engine: str = "auto",
    device: str = "auto",
    threads: int = 0,
    min_area_m2: float = 1.0,
    iou_min: float = 0.25,
    progress: Callable[[str], None] | None = None,
) -> dict[str, Any]:
    """Evaluate both bundles (each at its own threshold) on the same held-out scenes and decide."""
    from .evaluate import evaluate_scenes

    say = progress or log.info
    rule = rule or PromotionRule()
    reports = {}
    for role, path in (("current", current), ("new", new)):
        say(f"evaluating the {role} bundle {path} on {len(holdout)} held-out source(s)")
        reports[role] = evaluate_scenes(
            path,
            list(holdout),
            engine=engine,
            device=device,
            threads=threads,
            min_area_m2=min_area_m2,
            iou_min=iou_min,
        )
    decision = decide(reports["current"]["total"], reports["new"]["total"], rule)
    return {
        "created": _dt.datetime.now(_dt.UTC).isoformat(timespec="seconds"),
        "holdout": [str(h) for h in holdout],
        "current": reports["current"],
        "new": reports["new"],
        "current_digest": bundle_digest(current),
        "decision": {
            "promote": decision.promote,
            "reasons": decision.reasons,
            "rule": decision.rule,
            **dataclasses.asdict(rule),
        },
    }


def format_comparison(report: dict[str, Any]) -> str:
    """Readable tables: pooled held-out metrics of both bundles, then per scene; then the decision."""
    from .evaluate import format_table

    cur, new = report["current"], report["new"]
    label = {r: f"{r} {report[r]['model_version']} @{report[r]['threshold']:.2f}" for r in ("current", "new")}
    rows = []
    for key in ("total", "poppy_scenes", "poppy_free_scenes"):
        for role, rep in (("current", cur), ("new", new)):
            if rep.get(key):
                rows.append((f"{key}: {label[role]}", rep[key]))
    per_scene = []
    for sc, sn in zip(cur["scenes"], new["scenes"], strict=True):
        per_scene += [(f"{sc['scene']}: current", sc), (f"{sn['scene']}: new", sn)]
    d = report["decision"]
    head = "PROMOTE: the new bundle is better" if d["promote"] else "KEEP the current bundle"
    return "\n".join(
        [
            f"held-out comparison on {len(cur['scenes'])} scene(s): {', '.join(report['holdout'])}",
            f"current: {cur['model']}",
            f"new:     {new['model']}",
            "",
            format_table(rows),
            "",
            format_table(per_scene),
            "",
            f"rule: {d['rule']}",
            f"decision: {head} ({'; '.join(d['reasons'])})",
        ]
    )


@dataclass
class RetrainResult:
    out_dir: Path
    new_bundle: Path
    report: dict[str, Any]
    promoted: bool
    backup: Path | None = None
    messages: list[str] = field(default_factory=list)


def _mosaics(sources: list[str | Path]) -> set[Path]:
    from .traindata import find_scenes

    return {m.resolve() for m, _ in find_scenes(list(sources))}


def _check_holdout(holdout: list[str | Path], training: list[str | Path]) -> None:
    from .traindata import find_scenes, open_scene

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
    from .bundle import load_bundle, update_meta
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
