#!/usr/bin/env python
"""At which GSD should a mosaic be predicted? Score a bundle on rendered held-out sets, running each
scene at ``clip(scene GSD, LO, HI)`` for several ``LO:HI`` ranges (the in-memory engine of
``poppyscan evaluate``; threshold and plot decision the bundle's).

Decision 10's exploration (model card), scenes finer than 4 cm of the five fresh sets 908000-916000::

    python scripts/gsd_sweep.py models/poppyscan-default --sets 908000,910000,912000,914000,916000 \\
        --runs 0.04:0.04,0.035:0.04,0.03:0.04,0.02:0.04 --scene-gsd 0,0.04

``LO:HI`` = ``0.04:0.04`` resamples every scene to 4 cm (0.4.1); ``0.035:0.04`` is ``min_gsd_m`` 0.035.
Sets are the folders ``eval_default.py --fresh SEED`` renders (``poppy_fresh_SEED``,
``poppy_free_fresh_SEED`` under ``--data``). Prints pooled TP/FP/FN, F1, recall by stage and false
plots per hectare on the poppy-free scenes for each range.
"""

from __future__ import annotations

import argparse
import dataclasses
import sys
import time
from pathlib import Path


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("bundle")
    ap.add_argument("--data", type=Path, default=Path("/tmp/poppy_data/test"))
    ap.add_argument("--sets", required=True,
                    help="first seeds of eval_default.py --fresh sets, comma-separated")
    ap.add_argument("--runs", required=True, help="LO:HI GSD ranges (m/px), comma-separated")
    ap.add_argument("--scene-gsd", default="0,1", help="only scenes whose GSD lies in [A, B) (m/px): A,B")
    ap.add_argument("--threads", type=int, default=2)
    args = ap.parse_args(argv)
    try:
        runs = [tuple(float(x) for x in r.split(":")) for r in args.runs.split(",")]
        lo_src, hi_src = (float(x) for x in args.scene_gsd.split(","))
        if not all(len(r) == 2 and 0 < r[0] <= r[1] for r in runs):
            raise ValueError
    except ValueError:
        ap.error(f"--runs takes LO:HI pairs with 0 < LO <= HI and --scene-gsd A,B; got {args.runs!r}, "
                 f"{args.scene_gsd!r}")

    import geopandas as gpd

    from poppyscan.evaluate import score_polygons
    from poppyscan.model import load_bundle, make_predictor
    from poppyscan.scene_predict import predict_scene, scene_gsd_m
    from poppyscan.traindata import positive_rows

    bundle = load_bundle(args.bundle)
    predict = make_predictor(bundle, device="cpu", threads=args.threads)
    dirs = []
    for seed in args.sets.split(","):
        for kind in ("poppy_fresh_", "poppy_free_fresh_"):
            d = args.data / f"{kind}{seed.strip()}"
            if not d.is_dir():
                sys.exit(f"error: set '{d}' does not exist; render it with "
                         f"`python scripts/eval_default.py --fresh {seed.strip()}`")
            dirs += [(sd, kind == "poppy_fresh_") for sd in sorted(d.glob("scene_*"))]
    scenes = [(sd, poppy, g) for sd, poppy in dirs
              if lo_src <= (g := scene_gsd_m(sd / "mosaic.tif")) < hi_src]
    print(f"{len(scenes)} scenes with GSD in [{lo_src}, {hi_src}) m/px", flush=True)
    for lo, hi in runs:
        tp = fp = fn = free_fp = 0
        free_ha, secs, stages = 0.0, 0.0, {}
        for sd, poppy, g in scenes:
            run_gsd = min(max(lo, g), hi)
            meta = dataclasses.replace(bundle.meta, gsd_m=run_gsd, min_gsd_m=None)
            b = dataclasses.replace(bundle, meta=meta)
            t = time.perf_counter()
            sp = predict_scene(predict, b, sd / "mosaic.tif")
            secs += time.perf_counter() - t
            pred = gpd.GeoDataFrame(geometry=sp.polygons, crs=sp.crs)
            truth = positive_rows(sd / "truth.gpkg", sp.crs)
            sc = score_polygons(pred, truth, valid_area_m2=sp.valid_area_m2)
            if poppy:
                tp, fp, fn = tp + sc.tp, fp + sc.fp, fn + sc.fn
                missed = set(sc.missed.index) if sc.missed is not None else set()
                for i, stage in enumerate(truth["stage"] if len(truth) else []):
                    found, total = stages.get(stage, (0, 0))
                    stages[stage] = (found + (i not in missed), total + 1)
            else:
                free_fp, free_ha = free_fp + sc.fp, free_ha + sp.valid_area_m2 / 1e4
        p, r = tp / max(1, tp + fp), tp / max(1, tp + fn)
        f1 = 2 * p * r / (p + r) if p + r else 0.0
        by_stage = ", ".join(f"{k} {a}/{n}" for k, (a, n) in sorted(stages.items()))
        print(f"run at clip(GSD, {lo:g}, {hi:g}): TP/FP/FN {tp}/{fp}/{fn}, F1 {f1:.3f}; found by stage: "
              f"{by_stage}; poppy-free: {free_fp} false plots on {free_ha:.1f} ha = "
              f"{free_fp / max(free_ha, 1e-9):.2f}/ha ({secs:.0f} s)", flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
