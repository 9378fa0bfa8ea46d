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
    args = ap.parse_args(argv)

    from poppyscan.config import TrainConfig
    from poppyscan.model import load_bundle
    from poppyscan.train import CALIBRATION_MIN_PROB_MEANS, calibrate_bundle
    from poppyscan.traindata import find_scenes

    bundle = load_bundle(args.bundle)
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
        from poppyscan.evaluate import calibrate_threshold

        ref = load_bundle(args.fp_cap_from)
        t, m = float(ref.meta.threshold), float(ref.meta.min_prob_mean)
        rep = calibrate_threshold(ref, pairs, thresholds=(t,), min_prob_means=(m,), threads=args.threads,
                                  min_area_m2=args.min_area)["per_threshold"][t]
        cap = rep["false_plots_per_ha"] or 0.0
        print(f"{args.fp_cap_from} at its threshold {t:.2f} (plot mean >= {m:.2f}) on these {len(pairs)} "
              f"scenes: F1 {rep['f1']:.3f}, {cap:.3f} false plots/ha -> the cap")
    meta = calibrate_bundle(bundle, pairs, cfg, print, max_false_per_ha=cap,
                            min_prob_means=(0.0,) if args.threshold_only else CALIBRATION_MIN_PROB_MEANS)
    print(f"{args.bundle}: threshold {meta.threshold:.2f}, plot mean probability >= {meta.min_prob_mean:.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
