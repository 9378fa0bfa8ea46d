"""Fit a plot scorer (poppyscan.plot_scorer) on candidate regions and put it into a copy of a bundle.

    python scripts/region_study.py BUNDLE --set NAME=DIR[,DIR] ... --out regions.csv
    python scripts/train_plot_scorer.py BUNDLE regions.csv --train-sets NAME,NAME,... --out NEW_BUNDLE

The regions file holds every candidate region (pixels at the bundle's threshold, before any plot
decision) of labelled scenes, with its features and whether it matches a true plot (IoU >= 0.25);
``region_study.py`` writes it. The scenes should be ones the network never trained on, so that the
probabilities look as they will on new imagery.

The cut is chosen out of sample: each set of ``--train-sets`` in turn is scored by trees fitted on the
others (leave one set out; ``--folds-by scene --folds K`` instead deals the scenes into K groups, for
the scenes of one flight), and of the cuts whose pooled object F1 is at least that of the bundle's own
plot decision on the same regions (``min_prob_mean``; less ``--f1-tolerance``), the one with the fewest
false plots per hectare on the poppy-free scenes is taken (``--rule same-f1``; ``--rule best-f1`` takes
the highest F1). ``--features prob`` leaves the image's colour and texture out of the features. Then
the trees are fitted on all the sets, and the new bundle is the old one with ``plot_scorer.json``, the
fields ``plot_scorer`` / ``plot_scorer_cut`` and a ``training.plot_scorer`` summary (``--version``).
Needs scikit-learn (``pip install 'poppyscan[scorer]'``) to fit; detect does not.
"""

from __future__ import annotations

import argparse
import csv
import shutil
import sys
from pathlib import Path

import numpy as np

from poppyscan.bundle import plot_decision, read_meta, update_meta
from poppyscan.errors import PoppyscanError
from poppyscan.plot_scorer import fit, onnx_digest
from poppyscan.regions import FEATURES, PROB_FEATURES

CUTS = np.round(np.arange(0.05, 0.951, 0.025), 3)


def read_regions(path: Path, min_area_m2: float = 0.0) -> tuple[list[dict], list[dict]]:
    """Scene and region rows of a regions file; regions smaller than ``min_area_m2`` left out."""
    try:
        with open(path, newline="") as fh:
            rows = list(csv.DictReader(fh))
    except (OSError, UnicodeDecodeError, csv.Error) as exc:
        raise PoppyscanError(f"regions file '{path}' cannot be read ({exc})") from None
    need = {"kind", "set", "scene", "n_truth", "valid_ha", "iou", "truth_id", *FEATURES}
    missing = sorted(need - set(rows[0])) if rows else ["all"]
    if missing:
        raise PoppyscanError(f"'{path}' is not a regions file written by scripts/region_study.py "
                             f"(missing columns: {', '.join(missing)})")
    scenes = [r for r in rows if r["kind"] == "scene"]
    regions = [r for r in rows if r["kind"] == "region"]
    try:
        regions = [r for r in regions if float(r["log_area_m2"]) >= np.log(min_area_m2) - 1e-9] \
            if min_area_m2 > 0 else regions
        for r in regions:
            for f in FEATURES:
                float(r[f])
    except ValueError as exc:
        raise PoppyscanError(f"regions file '{path}' has a value that is not a number ({exc})") from None
    return scenes, regions


def score_rule(keep: np.ndarray, regions: list[dict], scenes: list[dict]) -> dict:
    """Object TP/FP/FN and F1 on the poppy scenes, false plots per ha on the poppy-free ones, of the
    regions kept (a true plot counts once however many kept regions match it)."""
    poppy = {(s["set"], s["scene"]) for s in scenes if int(s["n_truth"]) > 0}
    truths = sum(int(s["n_truth"]) for s in scenes)
    free_ha = sum(float(s["valid_ha"]) for s in scenes if int(s["n_truth"]) == 0)
    matched, kept_poppy, kept_free = set(), 0, 0
    for k, r in zip(keep, regions, strict=True):
        if not k:
            continue
        key = (r["set"], r["scene"])
        if key in poppy:
            kept_poppy += 1
            if float(r["iou"]) >= 0.25:
                matched.add((*key, r["truth_id"]))
        else:
            kept_free += 1
    tp = len(matched)
    fp, fn = kept_poppy - tp, truths - tp
    f1 = 2 * tp / max(2 * tp + fp + fn, 1)
    return {"tp": tp, "fp": fp, "fn": fn, "f1": round(f1, 4),
            "false_per_ha": round(kept_free / max(free_ha, 1e-9), 4), "false_plots": kept_free,
            "poppy_free_ha": round(free_ha, 2)}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("bundle", type=Path)
    ap.add_argument("regions", type=Path)
    ap.add_argument("--train-sets", required=True, help="comma-separated set names of the regions file")
    ap.add_argument("--out", type=Path, required=True, help="the new bundle directory (must not exist)")
    ap.add_argument("--version", help="version of the new bundle (default: the old one's)")
    ap.add_argument("--rule", choices=("same-f1", "best-f1"), default="same-f1")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--folds-by", choices=("set", "scene"), default="set",
                    help="hold out one set at a time (default), or, for one flight's scenes, --folds "
                         "groups of scenes (each scene's regions stay together)")
    ap.add_argument("--folds", type=int, default=5, help="number of scene groups with --folds-by scene")
    ap.add_argument("--f1-tolerance", type=float, default=0.0,
                    help="with --rule same-f1: cuts whose out-of-sample F1 is within this of the bundle's "
                         "rule count as equal (0: at least as high)")
    ap.add_argument("--min-area", type=float, default=1.0,
                    help="leave out regions smaller than this (m²): detect drops them before any plot "
                         "decision (detect.min_area_m2, default 1)")
    ap.add_argument("--features", choices=("all", "prob"), default="all",
                    help="all region features, or only those of the probability map (size, shape, "
                         "probability inside and around: nothing of the image's colour or texture)")
    a = ap.parse_args(argv)
    try:
        meta = read_meta(a.bundle)
        if a.out.exists():
            raise PoppyscanError(f"'{a.out}' exists; choose a new bundle directory")
        if not a.regions.is_file():
            raise PoppyscanError(f"regions file '{a.regions}' does not exist; "
                                 "write it with scripts/region_study.py")
        scenes, regions = read_regions(a.regions, a.min_area)
        if any(not s.get("model_digest") or not s.get("threshold") for s in scenes):
            raise PoppyscanError(f"'{a.regions}' does not say which network made its regions (written by an "
                                 "older region_study.py); run scripts/region_study.py again")
        digest = onnx_digest(a.bundle / meta.onnx_file)
        for made, thr in {(s["model_digest"], s["threshold"]) for s in scenes}:
            if made != digest:
                raise PoppyscanError(f"the regions were made by another network than the one in "
                                     f"'{a.bundle}' (ONNX digest {made}, not {digest}): a scorer judges the "
                                     "regions of the network it is fitted on")
            if abs(float(thr) - meta.threshold) > 1e-9:
                raise PoppyscanError(f"the regions were outlined at threshold {thr}, the bundle's is "
                                     f"{meta.threshold}; run region_study.py without --threshold")
        radii = {int(s.get("morph_radius_px") or 1) for s in scenes}
        if len(radii) > 1:
            raise PoppyscanError(f"the regions were outlined with different morphology radii "
                                 f"{sorted(radii)}; use one region_study.py --morph-radius for all")
        sets = [s for s in a.train_sets.split(",") if s]
        known = {s["set"] for s in scenes}
        unknown = [s for s in sets if s not in known]
        if unknown or not sets or (len(sets) < 2 and a.folds_by == "set"):
            raise PoppyscanError(f"--train-sets must name sets of the regions file (at least two, or use "
                                 f"--folds-by scene; it has {', '.join(sorted(known))}); unknown: "
                                 f"{', '.join(unknown) or '-'}")
        if not 0 <= a.f1_tolerance < 0.1:
            raise PoppyscanError(f"--f1-tolerance must be in [0, 0.1), got {a.f1_tolerance}")
        if not 2 <= a.folds <= 50:
            raise PoppyscanError(f"--folds must be in [2, 50], got {a.folds}")
        scenes = [s for s in scenes if s["set"] in sets]
        regions = [r for r in regions if r["set"] in sets]
        names = list(FEATURES if a.features == "all" else PROB_FEATURES)
        x = np.array([[float(r[f]) for f in names] for r in regions])
        y = np.array([float(r["iou"]) >= 0.25 for r in regions], dtype=int)
        if a.folds_by == "set":
            group = np.array([r["set"] for r in regions])
        else:  # scenes dealt into --folds groups in a seeded random order
            keys = sorted({(r["set"], r["scene"]) for r in scenes})
            if len(keys) < a.folds:
                raise PoppyscanError(f"--folds {a.folds} needs at least as many scenes; "
                                     f"there are {len(keys)}")
            order = np.random.default_rng(a.seed).permutation(len(keys))
            fold_of = {keys[k]: int(i % a.folds) for i, k in enumerate(order)}
            group = np.array([fold_of[(r["set"], r["scene"])] for r in regions])
        oof = np.zeros(len(regions))
        for g in np.unique(group):  # each group scored by trees fitted on the others
            te = group == g
            if te.all():
                raise PoppyscanError("one group holds every region; give more sets or use --folds-by scene")
            feats = {f: x[te, i] for i, f in enumerate(names)}
            oof[te] = fit(x[~te], y[~te], names, seed=a.seed).score(feats)
        base = score_rule(plot_decision([float(r["prob_mean"]) for r in regions], meta.min_prob_mean),
                          regions, scenes)
        grid = {float(c): score_rule(oof >= c - 1e-9, regions, scenes) for c in CUTS}
        print(f"{len(regions)} regions ({y.sum()} matching a true plot) of {len(scenes)} scenes in "
              f"{len(sets)} sets")
        print(f"bundle's decision (mean probability >= {meta.min_prob_mean}): {base}")
        for c, r in grid.items():
            print(f"  cut {c:.3f}: {r}")
        if a.rule == "best-f1":
            cut = max(grid, key=lambda c: (grid[c]["f1"], -grid[c]["false_per_ha"]))
        else:
            ok = [c for c in grid if grid[c]["f1"] >= base["f1"] - a.f1_tolerance - 1e-12]
            if not ok:
                raise PoppyscanError("no cut reaches the F1 of the bundle's own decision out of sample; "
                                     "the scorer would not help (try --rule best-f1 to see the best)")
            cut = min(ok, key=lambda c: (grid[c]["false_per_ha"], -grid[c]["f1"]))
        print(f"chosen cut {cut:.3f}: {grid[cut]}")
        training = {"regions": str(a.regions), "sets": sets, "features": a.features,
                    "threshold": meta.threshold, "morph_radius_px": radii.pop(),
                    "min_area_m2": a.min_area, "folds_by": a.folds_by,
                    **({"folds": a.folds} if a.folds_by == "scene" else {}), "regions_n": len(regions),
                    "positives": int(y.sum()), "rule": a.rule, "f1_tolerance": a.f1_tolerance, "cut": cut,
                    "out_of_sample": grid[cut],
                    "bundle_decision": base, "seed": a.seed}
        scorer = fit(x, y, names, seed=a.seed, training=training)
        tmp = a.out.with_name(f".{a.out.name}.part")
        shutil.rmtree(tmp, ignore_errors=True)
        try:
            shutil.copytree(a.bundle, tmp)
            scorer.save(tmp / "plot_scorer.json")
            tr = dict(meta.training)
            tr["plot_scorer"] = {k: v for k, v in training.items() if k != "regions"}
            update_meta(tmp, plot_scorer="plot_scorer.json", plot_scorer_cut=cut, training=tr,
                        **({"version": a.version} if a.version else {}))
            tmp.rename(a.out)
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
        print(f"wrote {a.out}")
    except PoppyscanError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except (ValueError, RuntimeError) as exc:  # scikit-learn refusing the data, or trees it cannot convert
        print(f"error: fitting failed ({exc})", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
