#!/usr/bin/env python
"""Measure a bundle on held-out rendered scenes (seeds never used in training) and record the figures.

    python scripts/eval_default.py models/poppyscan-default --data /tmp/poppy_data/test \
        --report models/poppyscan-default-eval.json --update-bundle

Renders (once) 16 poppy scenes, seeds 900000-900015, four per GSD band 2-3, 3-4.5, 4.5-6 and 6-8 cm,
and 8 poppy-free scenes of 2048 px, seeds 900100-900107 (GSD 2-8 cm); training and validation used seeds
10000-10815. ``--extended`` adds 32 poppy scenes (8 per band, seeds 901000 + 100 x band + k) and 16
poppy-free 2048 px scenes (seeds 901900-901915), never used for any decision about the shipped model:

    python scripts/eval_default.py models/poppyscan-default --extended \
        --report models/poppyscan-default-eval-extended.json

The extended set then decided whether stage 4 (0.4.0) shipped, so ``--final`` measures a fresh set
instead (only it, not the scenes above): 32 poppy scenes (8 per band, seeds 902000 + 100 x band + k)
and 16 poppy-free 2048 px scenes (seeds 902900-902915), rendered into ``poppy_final`` and
``poppy_free_final``. Measure it once, after a decision, never to make one:

    python scripts/eval_default.py models/poppyscan-default --final \
        --report models/poppyscan-default-eval-final.json

Later decisions each take a set no model has seen: ``--decision2`` (seeds 906000-906915, stage 6b) and
``--fresh SEED`` (same shape from SEED, a multiple of 1000 from 908000 on; stage 7 used 908000).

Each scene runs through ``poppyscan.detect`` (the production path; ``--engine simple`` for the small
in-memory predictor). Prints a table and breakdowns by GSD band, growth stage, setting and plot size,
writes the JSON report, and with ``--update-bundle`` stores the summary in the bundle's metrics
(``heldout_synthetic``; ``heldout_synthetic_extended`` / ``_final`` for those sets).
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import sys
import time
from collections import defaultdict
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
BANDS = [(0.02, 0.03), (0.03, 0.045), (0.045, 0.06), (0.06, 0.08)]


def _render_module():
    spec = importlib.util.spec_from_file_location("render_training_set", HERE / "render_training_set.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def render_test_set(root: Path, extended: bool = False, final: bool = False,
                    wild: bool = False, decision2: bool = False, fresh: int | None = None,
                    free_count: int = 16) -> list[Path]:
    """The held-out scenes (rendered once). ``extended`` adds 8 more poppy scenes per GSD band (seeds
    901000 + 100 x band + k) and 16 more poppy-free 2048 px scenes (seeds 901900-901915). ``final`` is
    only the final set: 8 poppy scenes per band (seeds 902000 + 100 x band + k) and 16 poppy-free
    2048 px scenes (seeds 902900-902915). ``wild`` is only the wild-land set: 16 poppy-free 2048 px
    scenes of meadow, shrubs and forest edge (seeds 903000-903015, ``poppy_free_wild``). ``decision2``
    is only a fresh set for stage 6's second decision (``scripts/train_default_stage6.yaml``): 8 poppy
    scenes per band (seeds 906000 + 100 x band + k) and 16 poppy-free 2048 px scenes (906900-906915).
    ``fresh=S`` is only a fresh set of the same shape from seed S (``poppy_fresh_S``: seeds S + 100 x band
    + k; ``poppy_free_fresh_S``: ``free_count`` scenes from S + 900), for a later decision on seeds no
    model has seen."""
    render = _render_module()
    dirs = []
    if wild:
        render.main([str(root / "poppy_free_wild"), "--first-seed", "903000", "--count", "16",
                     "--wild", "1.0", "--size", "2048"])
        return sorted(d for d in (root / "poppy_free_wild").iterdir() if d.is_dir())
    sets = [("poppy", 900000, 4, "poppy_free", 900100, 8)]
    if extended:
        sets.append(("poppy_ext", 901000, 8, "poppy_free_ext", 901900, 16))
    if final:
        sets = [("poppy_final", 902000, 8, "poppy_free_final", 902900, 16)]
    if decision2:
        sets = [("poppy_dec2", 906000, 8, "poppy_free_dec2", 906900, 16)]
    if fresh is not None:
        sets = [(f"poppy_fresh_{fresh}", fresh, 8, f"poppy_free_fresh_{fresh}", fresh + 900, free_count)]
    for poppy_dir, poppy_seed, per_band, free_dir, free_seed, n_free in sets:
        _render_set(render, root, poppy_dir, poppy_seed, per_band, free_dir, free_seed, n_free)
        for sub in (poppy_dir, free_dir):
            dirs += sorted(d for d in (root / sub).iterdir() if d.is_dir())
    return dirs


def _render_set(render, root: Path, poppy_dir: str, poppy_seed: int, per_band: int,  # noqa: ANN001
                free_dir: str, free_seed: int, n_free: int) -> None:
    for i, (lo, hi) in enumerate(BANDS):
        first = poppy_seed + (4 * i if poppy_seed == 900000 else 100 * i)
        render.main(
            [
                str(root / poppy_dir),
                "--first-seed",
                str(first),
                "--count",
                str(per_band),
                "--poppy-free",
                "0",
                "--gsd-min",
                str(lo),
                "--gsd-max",
                str(hi),
            ]
        )
    # poppy-free scenes are 4x larger (2048 px): one false plot is then ~0.1-0.2 /ha, not ~0.5 /ha
    render.main(
        [
            str(root / free_dir),
            "--first-seed",
            str(free_seed),
            "--count",
            str(n_free),
            "--poppy-free",
            "1",
            "--size",
            "2048",
        ]
    )


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("bundle", nargs="?", default="models/poppyscan-default")
    ap.add_argument("--data", type=Path, default=Path("/tmp/poppy_data/test"))
    ap.add_argument("--report", type=Path, help="write the JSON report here")
    ap.add_argument("--engine", choices=["detect", "simple"], default="detect")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--threshold", type=float)
    ap.add_argument("--tta", action="store_true", help="flip test-time augmentation (detect --tta)")
    ap.add_argument("--min-gsd", type=float, metavar="M",
                    help="run scenes finer than the model at their own GSD down to M m/px (detect --min-gsd; "
                    "default: the bundle's)")
    ap.add_argument("--update-bundle", action="store_true", help="store the summary in bundle.json metrics")
    ap.add_argument("--extended", action="store_true",
                    help="also 32 more poppy scenes (8 per GSD band) and 16 more poppy-free scenes")
    ap.add_argument("--final", action="store_true",
                    help="only the final set: 32 poppy scenes (8 per GSD band) and 16 poppy-free scenes, "
                    "seeds 902000-902915; measure once, after a decision")
    ap.add_argument("--wild", action="store_true",
                    help="only the wild-land set: 16 poppy-free 2048 px scenes of meadow, shrubs and forest "
                    "edge (seeds 903000-903015), a landscape the farmland training scenes do not show")
    ap.add_argument("--metrics-key", help="with --update-bundle: store under this key in the bundle's "
                    "metrics (default heldout_synthetic[_extended|_final|_wild|_decision2])")
    ap.add_argument("--metrics-scenes", help="with --update-bundle: the stored description of the scenes")
    ap.add_argument("--decision2", action="store_true",
                    help="only the fresh set of stage 6's second decision: 32 poppy scenes (8 per GSD band) "
                    "and 16 poppy-free scenes, seeds 906000-906915")
    ap.add_argument("--fresh", type=int, metavar="SEED",
                    help="only a fresh set from seed SEED (a multiple of 1000 from 908000 on; 900000-907999 "
                    "are used): 32 poppy scenes, seeds SEED + 100 x band + k, and 16 poppy-free 2048 px "
                    "scenes from SEED + 900 (--free-count)")
    ap.add_argument("--free-count", type=int, default=16, metavar="N",
                    help="with --fresh: N poppy-free scenes (1-99, default 16)")
    args = ap.parse_args(argv)
    if args.final + args.extended + args.wild + args.decision2 + (args.fresh is not None) > 1:
        ap.error("--final, --extended, --wild, --decision2 and --fresh are separate sets; give one")
    if not 1 <= args.free_count <= 99:
        ap.error(f"--free-count must be in 1-99, not {args.free_count}")
    if args.tta and args.update_bundle:
        ap.error("--tta and --update-bundle: the bundle's metrics are for detect without TTA (its default); "
                 "write TTA figures with --report")
    if args.min_gsd is not None and args.update_bundle:
        ap.error("--min-gsd and --update-bundle: the bundle's metrics are for its own min_gsd_m; write the "
                 "figures with --report, or set min_gsd_m in the bundle first")
    if args.fresh is not None and (args.fresh % 1000 or args.fresh < 908000):
        ap.error("--fresh must be a multiple of 1000 from 908000 on (lower seeds are taken), "
                 f"not {args.fresh}")

    import geopandas as gpd

    from poppyscan.bundle import check_min_gsd, gsd_floor_m
    from poppyscan.errors import PoppyscanError
    from poppyscan.evaluate import (
        _detect_polygons,
        format_table,
        match_polygons,
        read_polygons,
        score_polygons,
        valid_area_m2,
    )
    from poppyscan.model import load_bundle, make_predictor, update_meta
    from poppyscan.scene_predict import predict_scene, scene_gsd_m

    try:  # before rendering, which can take many minutes
        bundle = load_bundle(args.bundle)
        check_min_gsd(bundle.meta, args.min_gsd, "--min-gsd")
    except PoppyscanError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    scenes = render_test_set(args.data, extended=args.extended, final=args.final, wild=args.wild,
                             decision2=args.decision2, fresh=args.fresh, free_count=args.free_count)
    thr = bundle.meta.threshold if args.threshold is None else args.threshold
    predict = make_predictor(bundle, device="cpu", threads=args.threads) if args.engine == "simple" else None
    if predict is not None and args.tta:
        from poppyscan.infer import flip_averaged

        predict = flip_averaged(predict)
    rows, per_plot, totals = [], [], {}
    t_all = time.time()
    for d in scenes:
        mosaic = d / "mosaic.tif"
        if args.engine == "simple":
            sp = predict_scene(predict, bundle, mosaic, threshold=thr, min_gsd_m=args.min_gsd)
            pred, area, secs = (
                gpd.GeoDataFrame(geometry=sp.polygons, crs=sp.crs),
                sp.valid_area_m2,
                sp.seconds,
            )
        else:
            pred, secs = _detect_polygons(
                bundle, mosaic, device="cpu", threads=args.threads, threshold=thr, min_area_m2=1.0,
                tta=args.tta, min_gsd_m=args.min_gsd,
            )
            area = valid_area_m2(mosaic)
        truth = read_polygons(d / "truth.gpkg", "plots").to_crs(pred.crs)
        score = score_polygons(pred, truth, valid_area_m2=area)
        gsd = scene_gsd_m(mosaic)
        kind = "poppy_free" if d.parent.name.startswith("poppy_free") else "poppy"
        rep = {
            "scene": d.name,
            "kind": kind,
            "gsd_m": round(gsd, 4),
            "seconds": round(secs, 2),
            **score.report(),
        }
        rows.append(rep)
        for key in ("total", kind) + ((f"gsd_{_band(gsd)}",) if kind == "poppy" else ()):
            totals[key] = score if key not in totals else totals[key] + score
        # per truth plot: matched or not (for the stage / setting / size breakdowns)
        tg = [g for g in truth.geometry]
        hit = {t for _, t, _ in match_polygons([g for g in pred.geometry], tg)}
        for i, r in enumerate(truth.itertuples()):
            per_plot.append(
                {
                    "stage": r.stage,
                    "setting": r.setting,
                    "area_m2": float(r.area_m2),
                    "gsd_band": _band(gsd),
                    "found": i in hit,
                }
            )
        print(
            f"{d.name} ({kind}, {gsd * 100:.1f} cm): tp {score.tp} fp {score.fp} fn {score.fn} "
            f"({secs:.1f} s)",
            flush=True,
        )

    def recall_by(key, fn=lambda v: v):
        groups = defaultdict(list)
        for p in per_plot:
            groups[fn(p[key])].append(p["found"])
        return {str(k): {"plots": len(v), "recall": float(np.mean(v))} for k, v in sorted(groups.items())}

    summary = {k: v.report() for k, v in totals.items()}
    report = {
        "bundle": str(args.bundle),
        "version": bundle.meta.version,
        "engine": args.engine,
        "tta": args.tta,
        "min_gsd_m": gsd_floor_m(bundle.meta, args.min_gsd),
        "threshold": thr,
        "min_prob_mean": bundle.meta.min_prob_mean,
        "plot_scorer": bundle.meta.plot_scorer,  # when set it decides (at plot_scorer_cut), not min_prob_mean
        "plot_scorer_cut": bundle.meta.plot_scorer_cut if bundle.meta.plot_scorer else None,
        "iou_min": 0.25,
        "min_area_m2": 1.0,
        "data": str(args.data),
        "test_seeds": (
            "wild: 903000-903015 (poppy-free wild land, 2048 px)" if args.wild
            else "decision2: 906000-906307 (8 per GSD band), 906900-906915 (poppy-free, 2048 px)"
            if args.decision2
            else f"fresh: {args.fresh}-{args.fresh + 307} (8 per GSD band), {args.fresh + 900}-"
            f"{args.fresh + 899 + args.free_count} (poppy-free, 2048 px)" if args.fresh is not None
            else "final: 902000-902307 (8 per GSD band), 902900-902915 (poppy-free, 2048 px)" if args.final
            else "900000-900015 (poppy), 900100-900107 (poppy-free, 2048 px)"
            + ("; extended: 901000-901307 (8 per GSD band), 901900-901915 (poppy-free, 2048 px)"
               if args.extended else "")
        )
        + "; training and validation used 10000-10815",
        "summary": summary,
        "recall_by_stage": recall_by("stage"),
        "recall_by_setting": recall_by("setting"),
        "recall_by_size_m2": recall_by(
            "area_m2", lambda a: "2-10" if a < 10 else "10-50" if a < 50 else "50+"
        ),
        "scenes": rows,
        "seconds": round(time.time() - t_all, 1),
    }
    table = [(r["scene"], r) for r in rows] + [(k, summary[k]) for k in sorted(summary)]
    print(format_table(table))
    for key in ("recall_by_stage", "recall_by_setting", "recall_by_size_m2"):
        print(key, json.dumps(report[key]))
    if args.report:
        args.report.write_text(json.dumps(report, indent=2) + "\n", encoding="utf-8")
        print(f"report written to {args.report}")
    if args.update_bundle:
        p, f = summary.get("poppy", {}), summary.get("poppy_free", {})
        metrics = dict(bundle.meta.metrics)
        key = args.metrics_key or "heldout_synthetic" + (
            "_final" if args.final else "_extended" if args.extended else "_wild" if args.wild
            else "_decision2" if args.decision2 else f"_fresh{args.fresh}" if args.fresh is not None else "")
        metrics[key] = {
            "scenes": args.metrics_scenes or f"{sum(r['kind'] == 'poppy' for r in rows)} poppy + "
            f"{sum(r['kind'] == 'poppy_free' for r in rows)}"
            " poppy-free rendered scenes, GSD 2-8 cm, seeds never used in training",
            "engine": args.engine,
            "threshold": thr,
            "min_prob_mean": bundle.meta.min_prob_mean,
            "plot_scorer_cut": bundle.meta.plot_scorer_cut if bundle.meta.plot_scorer else None,
            "object_precision": p.get("precision"),
            "object_recall": p.get("recall"),
            "object_f1": p.get("f1"),
            "pixel_iou": p.get("pixel_iou"),
            "centroid_error_m_mean": (p.get("centroid_error_m") or {}).get("mean"),
            "false_plots_per_ha_poppy_free": f.get("false_plots_per_ha"),
            "false_plots_per_ha_all": summary["total"].get("false_plots_per_ha"),
        }
        update_meta(args.bundle, metrics=metrics)
        print(f"metrics stored in {args.bundle}/bundle.json ({key})")
    return 0


def _band(gsd: float) -> str:
    for lo, hi in BANDS:
        if gsd < hi + 1e-9:
            return f"{lo * 100:g}-{hi * 100:g}cm"
    return "8cm+"


if __name__ == "__main__":
    sys.exit(main())
