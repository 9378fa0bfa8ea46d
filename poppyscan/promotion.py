"""Held-out comparison of two model bundles and guarded promotion of the better one.

:func:`compare_bundles` runs the current and a new bundle through
:func:`poppyscan.evaluate.evaluate_scenes` on the *same* held-out scenes and applies a stated
:class:`PromotionRule` (:func:`decide`); :func:`format_comparison` prints it. :func:`promote_bundle`
swaps a bundle into place by renames, keeping the old one as ``<name>.bak-<UTC time>``, and only when
the target is the bundle that was evaluated as current (:func:`bundle_digest`). Used by
:func:`poppyscan.retrain.retrain` and ``poppyscan retrain``.
"""

from __future__ import annotations

import dataclasses
import datetime as _dt
import hashlib
import logging
import os
import shutil
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .errors import InputError

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
        if not self.max_fp_per_ha_increase >= 0:  # NaN too
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
    from .bundle_io import load_bundle

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
    from .eval_io import format_table

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
