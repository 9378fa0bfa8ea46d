#!/usr/bin/env python
"""Bare model throughput of a bundle (Mpx/s of model input), as detect runs it: ONNX Runtime on CPU, or
torch on a CUDA GPU.

    python scripts/bench_model.py models/poppyscan-default --threads 2 --batch 4 --repeat 10
    python scripts/bench_model.py models/poppyscan-default --device cuda --batch 32

Times ``make_predictor(bundle, device=D, threads=T)`` on random uint8 tiles of the bundle's tile size
(the input pixels are at the bundle's GSD), including the host-device copies on CUDA. Prints the
median and best over the repeats.

``--arch NAME`` times an untrained network of another architecture instead (random weights, exported to a
temporary bundle with the default 512 px tiles and 0.04 m/px): the cost of an architecture before any
training, e.g. ``--arch unet_mnv3s15``.
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
    ap.add_argument("--arch", help="time an untrained network of this architecture instead of BUNDLE")
    args = ap.parse_args(argv)

    import tempfile

    from poppyscan.errors import PoppyscanError
    from poppyscan.model import build_model, load_bundle, make_predictor, new_meta, save_bundle

    tmp = tempfile.TemporaryDirectory(prefix="poppyscan-bench-")
    try:
        if args.arch:
            path = f"{tmp.name}/bundle"
            save_bundle(path, build_model(args.arch), new_meta(arch=args.arch, name="untrained", gsd_m=0.04))
        else:
            path = args.bundle
        bundle = load_bundle(path, with_torch=args.device == "cuda")
    except PoppyscanError as e:
        print(f"bench_model: error: {e}", file=sys.stderr)
        return 2
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
