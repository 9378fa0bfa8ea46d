#!/usr/bin/env python
"""Render a varied set of synthetic scenes (poppyscan.synth.render_scene) for training or testing.

Each scene's parameters are drawn from its own seed, so a set is reproducible and any two sets with
disjoint seed ranges never share a scene. Varied: GSD 2-8 cm (log-uniform), poppy-free share, mask
mode (alpha / nodata / none), JPEG-in-GeoTIFF, CRS (UTM 49N, CGCS2000 3-degree GK zone, CGCS2000
geographic).

    python scripts/render_training_set.py OUTDIR --first-seed 10000 --count 240 --poppy-free 0.2

``--alt`` draws the scenes with the second, independently written renderer (:mod:`poppyscan.synth_alt`:
loess terraces and strip fields, plant sprites, photo-patchwork camera; CRS UTM 49N or CGCS2000 GK,
alpha or nodata) instead, with the same seed-drawn poppy-free share and GSD range.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np

CRSS = [("EPSG:32649", 0.6), ("EPSG:4547", 0.2), ("EPSG:4490", 0.2)]


def scene_params(seed: int, poppy_free: float, gsd_min: float, gsd_max: float, wild: float = 0.0) -> dict:
    """A scene's parameters from its seed. ``wild``: share of scenes drawn as poppy-free wild land
    (decided from a separate stream, so the other parameters of a seed never change with it)."""
    is_wild = bool(np.random.default_rng([seed, 515151]).random() < wild)
    rng = np.random.default_rng([seed, 424242])
    gsd = float(np.exp(rng.uniform(np.log(gsd_min), np.log(gsd_max))))
    mask_mode = str(rng.choice(["alpha", "nodata", "none"], p=[0.5, 0.25, 0.25]))
    compress = "jpeg" if mask_mode == "alpha" and rng.random() < 0.3 else "deflate"
    crs = str(rng.choice([c for c, _ in CRSS], p=[p for _, p in CRSS]))
    lon, lat = float(rng.uniform(111.0, 116.9)), float(rng.uniform(34.5, 38.5))
    return {
        "seed": seed,
        "gsd": round(gsd, 4),
        "mask_mode": mask_mode,
        "compress": compress,
        "crs": crs,
        "poppy": bool(rng.random() >= poppy_free) and not is_wild,
        "center_lonlat": (round(lon, 4), round(lat, 4)),
        "landscape": "wild" if is_wild else "farmland",
    }


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("outdir", type=Path)
    ap.add_argument("--first-seed", type=int, required=True)
    ap.add_argument("--count", type=int, required=True)
    ap.add_argument("--size", type=int, default=1024)
    ap.add_argument("--poppy-free", type=float, default=0.2, help="share of scenes without poppy")
    ap.add_argument("--gsd-min", type=float, default=0.02)
    ap.add_argument("--gsd-max", type=float, default=0.08)
    ap.add_argument("--crs", help="force one CRS for every scene")
    ap.add_argument("--wild", type=float, default=0.0,
                    help="share of scenes drawn as poppy-free wild land (meadow, shrubs, forest edge)")
    ap.add_argument("--alt", action="store_true",
                    help="draw with the independent renderer poppyscan.synth_alt instead")
    args = ap.parse_args(argv)
    if args.alt:
        return _main_alt(args)

    from poppyscan.synth import render_scene

    args.outdir.mkdir(parents=True, exist_ok=True)
    manifest, skipped = [], []
    t0 = time.time()
    for seed in range(args.first_seed, args.first_seed + args.count):
        p = scene_params(seed, args.poppy_free, args.gsd_min, args.gsd_max, args.wild)
        if args.crs:
            p["crs"] = args.crs
        d = args.outdir / f"scene_{seed}"
        if (d / "truth.gpkg").is_file() and (d / "mosaic.tif").is_file():
            info = None  # already rendered (resumable)
        else:
            try:
                info = render_scene(d, size=args.size, overwrite=True, **p)
            except Exception as exc:  # a renderer bug on one seed must not stop a long data build
                print(f"{d.name}: SKIPPED, the renderer failed: {type(exc).__name__}: {exc}", flush=True)
                skipped.append(seed)
                continue
        manifest.append(
            {
                **p,
                "dir": d.name,
                "n_plots": info.n_plots if info else None,
                "scene_kind": info.scene_kind if info else None,
            }
        )
        print(
            f"{d.name}: gsd {p['gsd']} {p['mask_mode']} {p['compress']} {p['crs']} poppy={p['poppy']} "
            f"{p['landscape']}"
            + (f" plots={info.n_plots} {info.scene_kind}" if info else " (kept)"),
            flush=True,
        )
    (args.outdir / "manifest.json").write_text(json.dumps(manifest, indent=1) + "\n", encoding="utf-8")
    print(
        f"{len(manifest)} scenes in {time.time() - t0:.0f} s -> {args.outdir}"
        + (f"; skipped seeds {skipped}" if skipped else "")
    )
    return 0


def _main_alt(args: argparse.Namespace) -> int:
    from poppyscan.synth_alt import render_alt_scene

    args.outdir.mkdir(parents=True, exist_ok=True)
    manifest, t0 = [], time.time()
    for seed in range(args.first_seed, args.first_seed + args.count):
        poppy = bool(np.random.default_rng([seed, 616161]).random() >= args.poppy_free)
        d = args.outdir / f"scene_{seed}"
        kept = (d / "truth.gpkg").is_file() and (d / "mosaic.tif").is_file()
        if not kept:
            render_alt_scene(seed, d, size=args.size, poppy=poppy, gsd_range=(args.gsd_min, args.gsd_max),
                             crs=args.crs, overwrite=True)
        meta = json.loads((d / "alt_meta.json").read_text()) if (d / "alt_meta.json").is_file() else {}
        manifest.append({"seed": seed, "renderer": "synth_alt", "poppy": poppy, "dir": d.name,
                         **{k: meta[k] for k in ("gsd", "crs", "mask_mode") if k in meta}})
        print(f"{d.name}: alt poppy={poppy}" + (" (kept)" if kept else ""), flush=True)
    (args.outdir / "manifest.json").write_text(json.dumps(manifest, indent=1) + "\n", encoding="utf-8")
    print(f"{len(manifest)} scenes in {time.time() - t0:.0f} s -> {args.outdir}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
