"""Dump the features of every candidate region (poppyscan.regions) of labelled scenes, with whether it
matches a true plot, for studying a second-stage plot decision.

    python scripts/region_study.py BUNDLE --set NAME=DIR[,DIR...] [--set ...] --out regions.csv

Each DIR is anything ``poppyscan train`` reads as scenes: a scene directory (mosaic.tif [+ truth.gpkg]),
a directory of them, or a CSV ``mosaic,labels`` such as ``poppyscan results export-labels`` writes from
the field teams' verdicts. Candidates are the regions at the bundle's threshold (``--threshold``) before
the plot decision, on the in-memory engine's probability rounded to detect's percent steps. A
candidate's ``iou`` is its best pixel IoU with one true plot (``truth_id``); a candidate lying mostly
(at least a quarter of its pixels) in a polygon of unknown status (label ``unknown``: a plot nobody
confirmed) is left out, as it is neither a plot nor a false alarm. Per-scene rows (``kind=scene``) give
the number of true plots and the valid area, so object F1 and false plots per hectare of any rule can be
recomputed from the file.
"""

from __future__ import annotations

import argparse
import csv
import sys
import time
from pathlib import Path

import numpy as np
import rasterio
from rasterio.features import rasterize

from poppyscan.bundle import load_bundle, make_predictor
from poppyscan.errors import InputError, PoppyscanError
from poppyscan.fsutil import atomic_path, check_writable
from poppyscan.plot_scorer import onnx_digest
from poppyscan.regions import FEATURES, candidate_labels, percent_steps, region_features
from poppyscan.scene_predict import scene_probability
from poppyscan.traindata import find_scenes, positive_rows, read_labels, scene_name


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("bundle")
    ap.add_argument("--set", action="append", required=True, help="NAME=DIR[,DIR...]")
    ap.add_argument("--out", required=True)
    ap.add_argument("--threads", type=int, default=0)
    ap.add_argument("--min-gsd", type=float, default=None)
    ap.add_argument("--threshold", type=float, default=None, help="pixel threshold (default: the bundle's)")
    ap.add_argument("--morph-radius", type=int, default=1,
                    help="opening/closing radius (px), as detect.morph_radius_px of the runs to score "
                         "(default 1)")
    ap.add_argument("--overwrite", action="store_true", help="replace an existing --out")
    a = ap.parse_args(argv)
    try:
        return _run(a)
    except PoppyscanError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2


def _run(a: argparse.Namespace) -> int:
    sets = []
    for spec in a.set:
        name, _, dirs = spec.partition("=")
        if not name or not dirs:
            raise InputError(f"--set {spec!r}: write NAME=DIR[,DIR...], e.g. --set flight1=labels/scenes.csv")
        if name in [n for n, _ in sets]:
            raise InputError(f"--set {name} is given twice; list all its sources once: --set {name}=A,B")
        pairs = find_scenes(dirs.split(","))  # checks every path before any work
        for mosaic, labels in pairs:
            for f, what in ((mosaic, "mosaic"), (labels, "labels")):
                if f is not None and not Path(f).is_file():
                    raise InputError(f"{what} '{f}' (set {name}) does not exist; fix the path in its list")
        sets.append((name, pairs))
    if not 0 <= a.morph_radius <= 10:
        raise InputError(f"--morph-radius must be in [0, 10], got {a.morph_radius}")
    if a.threshold is not None and not 0 < a.threshold < 1:
        raise InputError(f"--threshold must be in (0, 1), got {a.threshold}")
    out = check_writable(a.out, a.overwrite)
    bundle = load_bundle(a.bundle)
    predict = make_predictor(bundle, device="cpu", threads=a.threads)
    thr = bundle.meta.threshold if a.threshold is None else a.threshold
    # scene rows say which network and threshold made the regions: a scorer judges that network's regions
    cols = ["kind", "set", "scene", "n_truth", "valid_ha", "model_version", "model_digest", "threshold",
            "morph_radius_px", "iou", "truth_id", *FEATURES]
    digest = onnx_digest(bundle.path / bundle.meta.onnx_file)
    t0 = time.perf_counter()
    with atomic_path(out, overwrite=a.overwrite) as tmp, open(tmp, "w", newline="") as fh:
        wr = csv.DictWriter(fh, fieldnames=cols)
        wr.writeheader()
        for name, pairs in sets:
            seen: dict[str, int] = {}
            for mosaic, truth in pairs:
                try:
                    sp = scene_probability(predict, bundle, mosaic, min_gsd_m=a.min_gsd, keep_rgb=True)
                except rasterio.errors.RasterioIOError as exc:
                    raise InputError(f"mosaic '{mosaic}' cannot be read ({exc})") from None
                prob = percent_steps(sp.prob)  # detect's uint8 percent
                gsd = sp.gsd_m  # the GSD detect runs the mosaic at: the features detect will compute
                n, labels, stats = candidate_labels(prob, sp.valid, thr, a.morph_radius)
                feats = region_features(prob, sp.valid, sp.rgb, labels, stats, gsd)
                tr = positive_rows(truth, sp.crs) if truth else None
                skip = np.zeros(n, bool)
                ignored = read_labels(truth, sp.crs)[2] if truth else []
                if ignored and n > 1:
                    ig = rasterize(ignored, out_shape=prob.shape, transform=sp.transform, fill=0,
                                   dtype="uint8").astype(bool)
                    share = np.bincount(labels[ig], minlength=n) / np.maximum(np.bincount(labels.ravel(),
                                                                                          minlength=n), 1)
                    skip = share >= 0.25
                n_truth = 0 if tr is None else len(tr)
                iou = np.zeros(n - 1)
                tid = np.full(n - 1, -1)
                if n_truth and n > 1:
                    tl = rasterize(((g, k + 1) for k, g in enumerate(tr.geometry)), out_shape=prob.shape,
                                   transform=sp.transform, fill=0, dtype="int32")
                    inter = np.zeros((n, n_truth + 1))
                    np.add.at(inter, (labels.ravel(), tl.ravel()), 1)
                    ra = inter.sum(1)
                    ta = inter.sum(0)
                    for i in range(1, n):
                        ious = inter[i, 1:] / np.maximum(ra[i] + ta[1:] - inter[i, 1:], 1)
                        k = int(np.argmax(ious))
                        iou[i - 1], tid[i - 1] = ious[k], k
                sc = scene_name(mosaic)  # made unique in its set: every ODM flight's odm_orthophoto.tif ...
                seen[sc] = seen.get(sc, 0) + 1
                if seen[sc] > 1:
                    sc = f"{sc}~{seen[sc]}"
                wr.writerow({"kind": "scene", "set": name, "scene": sc, "n_truth": n_truth,
                             "valid_ha": sp.valid_area_m2 / 1e4, "model_version": bundle.meta.version,
                             "model_digest": digest, "threshold": thr, "morph_radius_px": a.morph_radius})
                for j in range(n - 1):
                    if skip[j + 1]:
                        continue
                    row = {"kind": "region", "set": name, "scene": sc, "iou": round(float(iou[j]), 4),
                           "truth_id": int(tid[j])}
                    row.update({k: round(float(v[j]), 5) for k, v in feats.items()})
                    wr.writerow(row)
                fh.flush()
            print(f"{name}: done at {time.perf_counter() - t0:.0f} s", file=sys.stderr, flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
