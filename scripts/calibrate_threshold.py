#!/usr/bin/env python
"""Re-pick a bundle's decision threshold and plot decision on whole labelled scenes (best pooled
object F1).

    python scripts/calibrate_threshold.py models/poppyscan-default [SCENES...] [--threads 1]

Without SCENES, the bundle's own validation scenes (``training.scenes_val`` in bundle.json) are used:
the same step `poppyscan train` runs at its end. Never calibrate on the scenes you report test figures on.
Both the pixel threshold (plot outlines) and ``min_prob_mean`` (a region is a plot only if its mean
probability reaches it) are searched; ``--threshold-only`` keeps ``min_prob_mean`` at 0, the rule
before 0.4.1.

``--fp-cap-from OTHER_BUNDLE`` first measures OTHER_BUNDLE at its own threshold on the same scenes and
then lets only thresholds with no more false plots per hectare compete (``--fp-cap X`` gives the cap
directly): a new model then keeps the shipped model's false-alarm rate and gains only in recall.

    python scripts/calibrate_threshold.py /tmp/poppy_train_default6/bundle --threads 1 \
        --fp-cap-from models/poppyscan-default

``--report FILE`` writes every (threshold, min_prob_mean) pair's pooled figures as JSON; ``--dry-run``
prints the best pairs and leaves the bundle as it is (a study, not a calibration).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("bundle", type=Path)
    ap.add_argument("scenes", nargs="*", help="scene dirs / lists (default: the bundle's validation scenes)")
    ap.add_argument("--threads", type=int, default=0)
    ap.add_argument("--min-area", type=float, default=1.0)
    ap.add_argument("--fp-cap", type=float, help="at most this many false plots per hectare (pooled)")
    ap.add_argument("--fp-cap-from", type=Path, help="cap at this bundle's false plots/ha on the same scenes")
    ap.add_argument("--threshold-only", action="store_true",
                    help="search the pixel threshold only (min_prob_mean 0: every outlined region is a plot)")
    ap.add_argument("--report", type=Path, help="write the whole grid's pooled figures here (JSON)")
    ap.add_argument("--dry-run", action="store_true", help="print the best pairs; do not change the bundle")
    args = ap.parse_args(argv)

    import json

    from poppyscan.config import TrainConfig
    from poppyscan.evaluate import calibrate_threshold
    from poppyscan.model import load_bundle
    from poppyscan.train import CALIBRATION_MIN_PROB_MEANS, CALIBRATION_THRESHOLDS, calibrate_bundle
    from poppyscan.traindata import find_scenes

    bundle = load_bundle(args.bundle)
    if bundle.meta.plot_scorer and not args.dry_run:
        print(f"{args.bundle} has a plot scorer: it, not min_prob_mean, decides which regions are plots, "
              "and a new threshold would change the regions it was fitted on; refit it with "
              "scripts/train_plot_scorer.py (or see the grid with --dry-run)", file=sys.stderr)
        return 2
    if args.scenes:
        pairs = find_scenes(args.scenes)
    else:
        val = bundle.meta.training.get("scenes_val") or []
        if not val:
            print("the bundle records no validation scenes; pass SCENES", file=sys.stderr)
            return 2
        pairs = find_scenes([Path(m) for m in val])
    cfg = TrainConfig(threads=args.threads, min_area_m2=args.min_area)
    cap = args.fp_cap
    if args.fp_cap_from is not None:
        ref = load_bundle(args.fp_cap_from)
        t, m = float(ref.meta.threshold), float(ref.meta.min_prob_mean)
        if ref.meta.plot_scorer:  # its own decision, the scorer's, on the same scenes and engine
            from poppyscan.evaluate import evaluate_scenes

            rep = evaluate_scenes(ref, list(pairs), device="cpu", threads=args.threads, engine="simple",
                                  min_area_m2=args.min_area)["total"]
            rule = f"plot score >= {ref.meta.plot_scorer_cut:.3f}"
        else:
            rep = calibrate_threshold(ref, pairs, thresholds=(t,), min_prob_means=(m,), threads=args.threads,
                                      min_area_m2=args.min_area)["per_threshold"][t]
            rule = f"plot mean >= {m:.2f}"
        cap = rep["false_plots_per_ha"] or 0.0
        print(f"{args.fp_cap_from} at its threshold {t:.2f} ({rule}) on these {len(pairs)} "
              f"scenes: F1 {rep['f1'] or 0:.3f}, {cap:.3f} false plots/ha -> the cap")
    means = (0.0,) if args.threshold_only else CALIBRATION_MIN_PROB_MEANS
    cal = calibrate_threshold(bundle, pairs, thresholds=CALIBRATION_THRESHOLDS, min_prob_means=means,
                              threads=args.threads, min_area_m2=args.min_area, max_false_per_ha=cap)
    if args.report:
        args.report.write_text(json.dumps({"bundle": str(args.bundle), "scenes": len(pairs), "cap": cap,
                                           **{k: v for k, v in cal.items() if k != "per_threshold"}},
                                          indent=1) + "\n", encoding="utf-8")
        print(f"grid written to {args.report}")
    if args.dry_run:
        print("threshold  min_prob_mean     tp   fp   fn     F1  false plots/ha")
        for g in sorted(cal["grid"], key=lambda g: -(g["f1"] or 0.0))[:15]:
            print(f"{g['threshold']:9.2f}  {g['min_prob_mean']:13.2f}  {g['tp']:5d} {g['fp']:4d} "
                  f"{g['fn']:4d}  {g['f1'] or 0:.3f}  {g['false_plots_per_ha'] or 0:.3f}")
        print(f"best: threshold {cal['threshold']:.2f}, min_prob_mean {cal['min_prob_mean']:.2f} "
              f"(cap {'met' if cal['cap_met'] else 'NOT met'}); bundle unchanged (--dry-run)")
        return 0
    meta = calibrate_bundle(bundle, pairs, cfg, print, max_false_per_ha=cap, cal=cal)
    print(f"{args.bundle}: threshold {meta.threshold:.2f}, plot mean probability >= {meta.min_prob_mean:.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
