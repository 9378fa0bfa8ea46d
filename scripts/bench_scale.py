#!/usr/bin/env python
"""Benchmark detect at campaign scale: local vs a Dask LocalCluster, and the time ``--resume`` saves.

Renders ``--mosaics`` synthetic scenes (``--size`` px square at 4 cm), then, each run in a fresh
child process with the real model bundle on CPU:

1. **local**: ``detect`` on all mosaics, the default local way;
2. **cluster**: the same on a ``distributed.LocalCluster`` (``--workers`` worker processes, one
   thread each) via ``detect.scheduler``; cluster start-up is timed separately (once per campaign);
3. **resume**: ``detect`` started in a child, killed with SIGKILL as soon as half the mosaics are
   journaled, then ``--resume`` timed; the time saved is the full local run minus the resume.

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
keys = {"detect.run_tasks": False, "detect.device": "cpu"}
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


def child(mode: str, out: Path, model: str, workers: int, mosaics: list[Path]) -> dict:
    cmd = [sys.executable, "-c", CHILD, mode, str(out), model, str(workers), *map(str, mosaics)]
    res = subprocess.run(cmd, capture_output=True, text=True, cwd=REPO, check=False)
    if res.returncode != 0:
        raise SystemExit(f"{mode} run failed:\n{res.stderr[-3000:]}")
    return json.loads(res.stdout.strip().splitlines()[-1])


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
    if out.exists():
        import shutil

        shutil.rmtree(out)
    journal = work_path(out) / "journal"
    half = math.ceil(args.mosaics / 2)
    cmd = [sys.executable, "-c", CHILD, "local", str(out), args.model, "1", *map(str, mosaics)]
    t0 = time.perf_counter()
    proc = subprocess.Popen(cmd, cwd=REPO, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    while proc.poll() is None and not (journal.is_dir() and len(list(journal.glob("[0-9]*.json"))) >= half):
        time.sleep(0.05)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    killed_after = time.perf_counter() - t0
    done = len(list(journal.glob("[0-9]*.json")))
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
    (wd / "bench_scale.json").write_text(json.dumps({"local": local, "cluster": cluster, "resume": {
        "killed_after_s": killed_after, "journaled": done, **resumed, "saved_s": saved}}, indent=2))


if __name__ == "__main__":
    main()
