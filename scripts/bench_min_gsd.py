#!/usr/bin/env python
"""What reading a fine mosaic at its own GSD costs: ``poppyscan detect`` on one rendered mosaic finer than
the model, at several ``--min-gsd`` values, alternated (each a fresh CLI process, as an analyst runs it).

    python scripts/bench_min_gsd.py [--gsd 0.025] [--values 0.04,0.035] [--repeat 2] [--overviews]

Builds an 8192 x 4096 px DEFLATE mosaic of rendered scenes at ``--gsd`` (``bench_detect.build_mosaic``)
under ``--workdir`` and prints, per run, the wall time, the model grid, the tiles predicted and the plots.
``--overviews`` runs on a copy with 2x and 4x overviews (``gdaladdo -r average`` levels 2 4, as most
delivered orthomosaics and COGs have): GDAL reads an overview only where its pixels are at least as
fine as the GSD the mosaic is read at.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--model", default=str(HERE.parent / "models" / "poppyscan-default"))
    ap.add_argument("--gsd", type=float, default=0.025, help="the mosaic's GSD, m/px")
    ap.add_argument("--values", default="0.04,0.035", help="--min-gsd values to compare, comma-separated")
    ap.add_argument("--repeat", type=int, default=2)
    ap.add_argument("--workdir", type=Path, default=Path("/tmp/poppyscan-bench"))
    ap.add_argument("--overviews", action="store_true", help="give the mosaic 2x and 4x overviews first")
    args = ap.parse_args(argv)
    sys.path.insert(0, str(HERE))
    from bench_detect import build_mosaic

    args.workdir.mkdir(parents=True, exist_ok=True)
    mosaic = args.workdir / f"fine_8192x4096_{args.gsd}.tif"
    if not mosaic.exists():
        build_mosaic(mosaic, 8192, 4096, args.gsd)
    if args.overviews:
        import shutil

        import rasterio
        from rasterio.enums import Resampling

        with_ovr = mosaic.with_name(mosaic.stem + "_ovr.tif")
        if not with_ovr.exists():
            part = with_ovr.with_suffix(".part.tif")
            shutil.copyfile(mosaic, part)
            with rasterio.open(part, "r+") as ds:
                ds.build_overviews([2, 4], Resampling.average)
            part.replace(with_ovr)
        mosaic = with_ovr
    exe = Path(sys.executable).parent / "poppyscan"
    for k in range(args.repeat):
        for value in args.values.split(","):
            out = args.workdir / f"min_gsd_{value}"
            t = time.perf_counter()
            proc = subprocess.run([str(exe), "detect", str(mosaic), "--out", str(out), "--overwrite", "-q",
                                   "--model", args.model, "--min-gsd", value], capture_output=True, text=True)
            wall = time.perf_counter() - t
            if proc.returncode:
                sys.exit(f"detect failed: {proc.stderr.strip().splitlines()[-1]}")
            run = json.loads((out / "run.json").read_text())
            grid = run["inputs"][0]["model_grid"]
            print(f"#{k + 1} --min-gsd {value}: {wall:.1f} s (process), model grid "
                  f"{grid['width']}x{grid['height']} at {grid['gsd_m']} m, {run['counts']['tiles']} tiles, "
                  f"{run['counts']['plots']} plots",
                  flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
