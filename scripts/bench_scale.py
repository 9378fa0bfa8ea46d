#!/usr/bin/env python
"""Benchmark detect at campaign scale: local vs a Dask LocalCluster, and the time ``--resume`` saves.

Renders ``--mosaics`` synthetic scenes (``--size`` px square at 4 cm), then, each run in a fresh
child process with the real model bundle on CPU:

1. **local**: ``detect`` on all mosaics, the default local way;
2. **cluster**: the same on a ``distributed.LocalCluster`` (``--workers`` worker processes, one
   thread each) via ``detect.scheduler``; cluster start-up is timed separately (once per campaign);
3. **resume**: ``detect`` started in a child, killed with SIGKILL as soon as half the mosaics are
   journaled, then ``--resume`` timed; the time saved is the full local run minus the resume;
4. **bands** (one tall mosaic, the scenes stacked, cut into row bands of ``--band-rows``): local in one
   pass vs in bands (the cost of the tile rows both neighbours run), on the cluster (bands as tasks),
   and a run killed once half its bands are journaled, then resumed.

Plots of the cluster and resumed runs are checked to equal the local run's. Figures are printed and
written to ``WORKDIR/bench_scale.json``.

Usage: ``.venv/bin/python scripts/bench_scale.py [--workdir /tmp/poppyscan-scale] [--mosaics 4]``
"""

from __future__ import annotations

import argparse
import json
import math
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent

CHILD = r"""
import json, sys, time
from poppyscan.config import load_config
from poppyscan.detect import detect
mode, out, model, workers, *mosaics = sys.argv[1:]
import os
keys = {"detect.run_tasks": False, "detect.device": "cpu",
        "detect.band_rows": int(os.environ.get("BENCH_BAND_ROWS", "16384"))}
startup = 0.0
if mode == "cluster":
    from distributed import LocalCluster
    t = time.perf_counter()
    cluster = LocalCluster(n_workers=int(workers), threads_per_worker=1, processes=True,
                           dashboard_address=None, silence_logs=40)
    startup = time.perf_counter() - t
    keys["detect.scheduler"] = cluster.scheduler_address
config = load_config(overrides=keys)
t = time.perf_counter()
s = detect(mosaics, out, config=config, model=model, overwrite=(mode != "resume"), progress=False,
           resume=(mode == "resume"))
seconds = time.perf_counter() - t
warm = None
if mode == "cluster":  # again on the same workers: imports done and the model loaded in each of them
    t = time.perf_counter()
    detect(mosaics, out + "_warm", config=config, model=model, overwrite=True, progress=False)
    warm = time.perf_counter() - t
model_load = json.load(open(out + "/run.json"))["timings"]["model_load_s"]
print(json.dumps({"seconds": seconds, "warm_s": warm, "startup_s": startup, "plots": s.plots,
                  "tiles": s.tiles, "hectares": s.hectares, "model_load_s": model_load}))
"""


def child(mode: str, out: Path, model: str, workers: int, mosaics: list[Path],
          band_rows: int = 16384) -> dict:
    cmd = [sys.executable, "-c", CHILD, mode, str(out), model, str(workers), *map(str, mosaics)]
    env = {**os.environ, "BENCH_BAND_ROWS": str(band_rows)}
    res = subprocess.run(cmd, capture_output=True, text=True, cwd=REPO, check=False, env=env)
    if res.returncode != 0:
        raise SystemExit(f"{mode} run failed:\n{res.stderr[-3000:]}")
    return json.loads(res.stdout.strip().splitlines()[-1])


def run_and_kill(out: Path, model: str, mosaics: list[Path], journal: Path, pattern: str, n: int, *,
                 band_rows: int) -> tuple[float, int]:
    """Start a local detect into ``out`` in a child, SIGKILL it once ``n`` entries matching ``pattern``
    are journaled in ``journal``; return the seconds it ran and the entries journaled."""
    import shutil

    shutil.rmtree(out, ignore_errors=True)
    env = {**os.environ, "BENCH_BAND_ROWS": str(band_rows)}
    t0 = time.perf_counter()
    proc = subprocess.Popen([sys.executable, "-c", CHILD, "local", str(out), model, "1", *map(str, mosaics)],
                            cwd=REPO, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=env)
    while proc.poll() is None and not (journal.is_dir() and len(list(journal.glob(pattern))) >= n):
        time.sleep(0.05)
    if proc.poll() is None:
        os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    return time.perf_counter() - t0, len(list(journal.glob(pattern)))


def same_plots(a: Path, b: Path) -> bool:
    import geopandas as gpd

    pa, pb = (gpd.read_file(p / "plots.gpkg", layer="plots") for p in (a, b))
    return len(pa) == len(pb) and all(x.equals_exact(y, 1e-6) for x, y in zip(pa.geometry, pb.geometry,
                                                                               strict=True))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--workdir", type=Path, default=Path("/tmp/poppyscan-scale"))
    ap.add_argument("--mosaics", type=int, default=4)
    ap.add_argument("--size", type=int, default=1024)
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--model", default=str(REPO / "models" / "poppyscan-default"))
    ap.add_argument("--band-rows", type=int, default=1024, help="band height for the tall-mosaic runs")
    args = ap.parse_args()
    sys.path.insert(0, str(REPO))
    from poppyscan.resume import work_path
    from poppyscan.synth import render_scene

    wd = args.workdir
    wd.mkdir(parents=True, exist_ok=True)
    mosaics = []
    for i in range(args.mosaics):
        scene = wd / "scenes" / f"s{i}"
        if not (scene / "mosaic.tif").exists():
            render_scene(scene, seed=100 + i, size=args.size, overwrite=True)
        mosaics.append(scene / "mosaic.tif")
    print(f"{args.mosaics} mosaics of {args.size}x{args.size} px at 4 cm, model {args.model}, "
          f"{os.cpu_count()} CPUs, load average {os.getloadavg()[0]:.1f}", flush=True)

    local = child("local", wd / "local", args.model, args.workers, mosaics)
    mpx = args.mosaics * args.size**2 / 1e6
    print(f"local:   {local['seconds']:6.1f} s  {mpx / local['seconds']:.2f} Mpx/s  "
          f"{60 * local['hectares'] / local['seconds']:.2f} ha/min  ({local['tiles']} tiles, "
          f"{local['plots']} plots)", flush=True)

    cluster = child("cluster", wd / "cluster", args.model, args.workers, mosaics)
    for label, sec in (("cold", cluster["seconds"]), ("warm", cluster["warm_s"])):
        print(f"cluster: {sec:6.1f} s  {mpx / sec:.2f} Mpx/s  {60 * cluster['hectares'] / sec:.2f} ha/min  "
              f"({args.workers} worker processes, {label}: "
              + ("first run, workers import and load the model" if label == "cold" else
                 "second run on the same workers") + ")", flush=True)
    print(f"         cluster start-up {cluster['startup_s']:.1f} s; plots equal local: "
          f"{same_plots(wd / 'local', wd / 'cluster')}; load average now {os.getloadavg()[0]:.1f}",
          flush=True)

    out = wd / "resumed"
    killed_after, done = run_and_kill(out, args.model, mosaics, work_path(out) / "journal", "[0-9]*.json",
                                      math.ceil(args.mosaics / 2), band_rows=16384)
    resumed = child("resume", out, args.model, 1, mosaics)
    saved = local["seconds"] - resumed["seconds"]
    print(f"resume:  killed (SIGKILL) after {killed_after:.1f} s with {done}/{args.mosaics} mosaics "
          "journaled; "
          f"--resume took {resumed['seconds']:.1f} s vs {local['seconds']:.1f} s for a full run: saved "
          f"{saved:.1f} s ({100 * saved / local['seconds']:.0f} %)  plots equal local: "
          f"{same_plots(wd / 'local', out)}", flush=True)
    fixed_full, fixed_resumed = local["model_load_s"], resumed["model_load_s"]
    work_full, work_resumed = local["seconds"] - fixed_full, resumed["seconds"] - fixed_resumed
    print(f"         without the fixed model load ({fixed_full:.1f} s / {fixed_resumed:.1f} s): "
          f"{work_resumed:.1f} s vs {work_full:.1f} s of mosaic work, saved "
          f"{100 * (1 - work_resumed / work_full):.0f} %", flush=True)
    bands = bench_bands(wd, mosaics, args)
    (wd / "bench_scale.json").write_text(json.dumps({"local": local, "cluster": cluster, "resume": {
        "killed_after_s": killed_after, "journaled": done, **resumed, "saved_s": saved}, "bands": bands},
        indent=2))


def stack_mosaics(mosaics: list[Path], path: Path) -> Path:
    """The scenes' pixels stacked top to bottom into one tall 4 cm UTM GeoTIFF (alpha from their masks)."""
    import numpy as np
    import rasterio
    from affine import Affine

    if path.exists():
        return path
    rgba = []
    for m in mosaics:
        with rasterio.open(m) as ds:
            rgba.append(np.concatenate([ds.read([1, 2, 3]), ds.read_masks(1)[None]]))
    width = min(a.shape[2] for a in rgba)
    data = np.concatenate([a[:, :, :width] for a in rgba], axis=1)
    profile = dict(driver="GTiff", width=width, height=data.shape[1], count=4, dtype="uint8",
                   crs="EPSG:32649",
                   transform=Affine(0.04, 0, 400000.0, 0, -0.04, 2800000.0), tiled=True, blockxsize=512,
                   blockysize=512, compress="deflate", photometric="RGB", alpha="YES")
    tmp = path.with_name(f".{path.name}.tmp")
    with rasterio.open(tmp, "w", **profile) as dst:
        dst.write(data)
    os.replace(tmp, path)
    return path


def bench_bands(wd: Path, mosaics: list[Path], args: argparse.Namespace) -> dict:
    from poppyscan.resume import work_path

    tall = stack_mosaics(mosaics, wd / "tall.tif")
    import rasterio

    with rasterio.open(tall) as ds:
        mpx, rows = ds.width * ds.height / 1e6, ds.height
    n_bands = -(-rows // args.band_rows)
    print(f"bands:   one {mpx:.0f} Mpx mosaic ({rows} rows), bands of {args.band_rows} rows -> "
          f"{n_bands} bands", flush=True)
    one = child("local", wd / "tall_one", args.model, 1, [tall], band_rows=0)
    banded = child("local", wd / "tall_bands", args.model, 1, [tall], band_rows=args.band_rows)
    print(f"         local, one pass: {one['seconds']:.1f} s ({one['tiles']} tiles); in bands: "
          f"{banded['seconds']:.1f} s ({banded['tiles']} tiles, "
          f"+{100 * (banded['tiles'] / one['tiles'] - 1):.1f} %)"
          f"; plots equal: {same_plots(wd / 'tall_one', wd / 'tall_bands')}", flush=True)
    cl = child("cluster", wd / "tall_cluster", args.model, args.workers, [tall],
               band_rows=args.band_rows)
    print(f"         cluster ({args.workers} workers, bands as tasks): cold {cl['seconds']:.1f} s, "
          f"warm {cl['warm_s']:.1f} s; plots equal: {same_plots(wd / 'tall_one', wd / 'tall_cluster')}",
          flush=True)
    out = wd / "tall_resumed"
    killed_after, done = run_and_kill(out, args.model, [tall], work_path(out) / "journal" / "0000.bands",
                                      "[0-9]*.npz", math.ceil(n_bands / 2), band_rows=args.band_rows)
    resumed = child("resume", out, args.model, 1, [tall], band_rows=args.band_rows)
    saved = banded["seconds"] - resumed["seconds"]
    print(f"         killed after {killed_after:.1f} s with {done}/{n_bands} bands journaled; --resume took "
          f"{resumed['seconds']:.1f} s vs {banded['seconds']:.1f} s: saved {saved:.1f} s "
          f"({100 * saved / banded['seconds']:.0f} %); plots equal: {same_plots(wd / 'tall_one', out)}",
          flush=True)
    return {"mpx": mpx, "band_rows": args.band_rows, "bands": n_bands, "one_pass": one, "banded": banded,
            "cluster": cl, "resume": {"killed_after_s": killed_after, "journaled": done, **resumed,
                                      "saved_s": saved}}


if __name__ == "__main__":
    main()
