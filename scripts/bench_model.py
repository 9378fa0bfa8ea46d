#!/usr/bin/env python
"""Bare model throughput of a bundle (Mpx/s of model input), as detect runs it: ONNX Runtime on CPU, or
torch on a CUDA GPU.

    python scripts/bench_model.py models/poppyscan-default --threads 2 --batch 4 --repeat 10
    python scripts/bench_model.py models/poppyscan-default --device cuda --batch 32

Times ``make_predictor(bundle, device=D, threads=T)`` on random uint8 tiles of the bundle's tile size
(the input pixels are at the bundle's GSD), including the host-device copies on CUDA. Prints the
median and best over the repeats.
"""

from __future__ import annotations

import argparse
import sys
import time

import numpy as np


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("bundle", nargs="?", default="models/poppyscan-default")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--batch", type=int, default=4)
    ap.add_argument("--tile", type=int, help="tile size (default: the bundle's)")
    ap.add_argument("--repeat", type=int, default=10)
    ap.add_argument("--device", choices=["cpu", "cuda"], default="cpu")
    args = ap.parse_args(argv)

    from poppyscan.model import load_bundle, make_predictor

    bundle = load_bundle(args.bundle, with_torch=args.device == "cuda")
    tile = args.tile or bundle.meta.tile_size
    predict = make_predictor(bundle, device=args.device, threads=args.threads)
    x = np.random.default_rng(0).integers(0, 256, (args.batch, tile, tile, 3), dtype=np.uint8)
    predict(x)  # warm-up
    times = []
    for _ in range(args.repeat):
        t = time.perf_counter()
        predict(x)
        times.append(time.perf_counter() - t)
    mpx = args.batch * tile * tile / 1e6
    med, best = mpx / float(np.median(times)), mpx / min(times)
    print(
        f"{bundle.meta.name} {bundle.meta.version} ({bundle.meta.arch}): "
        + (f"ONNX Runtime CPU, {args.threads} threads, " if args.device == "cpu" else "torch CUDA, ")
        + f"tile {tile} px, batch {args.batch}: median {med:.1f} Mpx/s, best {best:.1f} Mpx/s "
        f"({args.repeat} runs; {med * bundle.meta.gsd_m**2 * 1e6 / 1e4:.1f} ha/s at {bundle.meta.gsd_m} m/px)"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
