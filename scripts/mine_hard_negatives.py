#!/usr/bin/env python
"""Mine hard negatives: where a bundle makes false plots on *training* scenes, for the next stage.

    python scripts/mine_hard_negatives.py BUNDLE SCENES.csv OUTDIR --out-csv MINED.csv \
        [--threshold 0.5] [--threads 1]

Runs the bundle's whole-scene predictor (``poppyscan.scene_predict``) on every scene of SCENES (a
``mosaic,labels`` CSV or anything ``find_scenes`` takes) at a threshold below the bundle's own (default
0.5, so near-misses count too). Every predicted component that lies mostly outside the scene's poppy
polygons (less than half of its area inside one) is a *mined negative*. For each scene with any, a
copy of its label file with an extra layer ``mined_negatives`` is written to ``OUTDIR/<scene>.gpkg``;
MINED.csv lists all scenes (the mined label file where there is one, the original labels otherwise).
Training with ``train.mined_fraction`` > 0 then centres that share of non-positive tiles on them.
Mining again with a newer model keeps the negatives an earlier round put in the label file (a
mined-labels CSV can be the input): the layer then holds both rounds' places.

Only ever mine training scenes: never validation or test scenes.
"""

from __future__ import annotations

import argparse
import shutil
import sys
import time
from pathlib import Path


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("bundle", type=Path)
    ap.add_argument("scenes", nargs="+")
    ap.add_argument("outdir", type=Path)
    ap.add_argument("--out-csv", type=Path, required=True)
    ap.add_argument("--threshold", type=float, default=0.5)
    ap.add_argument("--min-area", type=float, default=0.5, help="smallest mined component, m2")
    ap.add_argument("--threads", type=int, default=1)
    args = ap.parse_args(argv)

    import geopandas as gpd
    from shapely.ops import unary_union

    from poppyscan.model import load_bundle, make_predictor
    from poppyscan.scene_predict import predict_scene
    from poppyscan.traindata import MINED_LAYER, find_scenes, read_labels, read_mined

    bundle = load_bundle(args.bundle)
    predict = make_predictor(bundle, device="cpu", threads=args.threads)
    pairs = find_scenes(args.scenes)
    args.outdir.mkdir(parents=True, exist_ok=True)
    rows, n_mined, n_scenes, t0 = [], 0, 0, time.time()
    for i, (mosaic, labels) in enumerate(pairs):
        sp = predict_scene(predict, bundle, mosaic, threshold=args.threshold, min_prob_mean=0.0,
                           plot_scorer=False, min_area_m2=args.min_area)
        pos = read_labels(labels, sp.crs)[0] if labels else []
        inside = unary_union(pos) if pos else None
        mined = [
            g for g in sp.polygons
            if inside is None or g.intersection(inside).area < 0.5 * g.area
        ]
        earlier = read_mined(labels, sp.crs) if labels else []
        n_new = len(mined)
        mined = earlier + mined
        out_labels = labels
        if mined:
            name = mosaic.parent.name if mosaic.name == "mosaic.tif" else mosaic.stem
            out_labels = args.outdir / f"{name}.gpkg"
            if labels is not None and labels.suffix.lower() == ".gpkg":
                shutil.copyfile(labels, out_labels)
            else:  # no label file (poppy-free) or another format: only the mined layer
                out_labels.unlink(missing_ok=True)
                gpd.GeoDataFrame({"label": []}, geometry=[], crs=sp.crs).to_file(
                    out_labels, layer="plots", driver="GPKG"
                )
            gpd.GeoDataFrame({"kind": ["mined"] * len(mined)}, geometry=mined, crs=sp.crs).to_file(
                out_labels, layer=MINED_LAYER, driver="GPKG"
            )
            n_mined += n_new
            n_scenes += 1
        rows.append(f"{mosaic},{out_labels or ''}")
        if (i + 1) % 50 == 0:
            print(f"{i + 1}/{len(pairs)} scenes, {n_mined} mined negatives in {n_scenes} scenes "
                  f"({time.time() - t0:.0f} s)", flush=True)
    args.out_csv.write_text("mosaic,labels\n" + "\n".join(rows) + "\n", encoding="utf-8")
    print(f"{len(pairs)} scenes: {n_mined} mined negatives in {n_scenes} scenes at threshold "
          f"{args.threshold} ({time.time() - t0:.0f} s) -> {args.out_csv}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
