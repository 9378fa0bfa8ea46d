#!/usr/bin/env python
"""How much each rendered poppy plot actually shows in its image, measured without any model.

For each rendered scene (``poppyscan synth`` / ``render_scene`` output: the mosaic's tags name its
seed and GSD) the scene is rendered twice: as written, and with ``draw_plots=False``, which places and
labels the plots identically but leaves the ground under them unpainted while drawing the same random
numbers, so trees, shadows, camera noise and JPEG are the same. The difference between the two is
exactly what each plot adds to the image. Per truth plot it reports

- ``signal_dn``: the mean, over the plot's pixels, of the largest per-channel difference (0-255 DN);
- ``clutter_dn``: the standard deviation of the unpainted ground's brightness inside the plot (the
  texture a plot must stand out from), and ``scr`` = signal / clutter.

With ``--errors`` (the file ``poppyscan evaluate --model M --scenes S --errors E.gpkg`` writes), it
also gives the model's recall per signal band: are the plots it misses the ones the renderer barely
draws?

    .venv/bin/python scripts/plot_visibility.py /tmp/scenes.csv --errors /tmp/errors.gpkg --json vis.json

Each re-render is checked against the mosaic's pixels first (same code, same seed; within 3 DN on
average for JPEG-compressed mosaics, whose signal is then measured before compression); a scene that
does not reproduce is reported and skipped.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np
import rasterio

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from poppyscan.errors import PoppyscanError  # noqa: E402
from poppyscan.synth.scene import _rasterize, render_arrays  # noqa: E402
from poppyscan.traindata import find_scenes, scene_name  # noqa: E402

BANDS = [(0, 5), (5, 10), (10, 20), (20, 40), (40, 256)]


def _has_plots(labels: Path) -> bool:
    import pyogrio

    try:
        return pyogrio.read_info(labels, layer="plots")["features"] > 0
    except Exception:  # noqa: BLE001 - not a rendered truth file: let scene_signal say why
        return True


def scene_signal(mosaic: Path) -> tuple[list[dict], str | None]:
    """Per-plot signal of one rendered scene, or ``([], reason)`` when it cannot be reproduced."""
    with rasterio.open(mosaic) as ds:
        tags = ds.tags()
        if "POPPYSCAN_SYNTH_SEED" not in tags:
            return [], "not a rendered scene (no POPPYSCAN_SYNTH_SEED tag)"
        seed, gsd, size = int(tags["POPPYSCAN_SYNTH_SEED"]), float(tags["POPPYSCAN_GSD_M"]), ds.width
        img = ds.read([1, 2, 3]).transpose(1, 2, 0)
        lossy = ds.compression is not None and ds.compression.value == "JPEG"
    landscape = "wild" if tags.get("POPPYSCAN_SCENE") == "wild" else "farmland"
    for footprint in (True, False):
        a = render_arrays(seed, size, gsd, footprint=footprint, landscape=landscape)
        ok = a.valid.astype(bool)
        if lossy:  # JPEG-in-GeoTIFF: the same image within compression error
            if np.abs(a.rgb[ok].astype(np.int16) - img[ok]).mean() < 3:
                break
        elif np.array_equal(a.rgb[ok], img[ok]):
            break
    else:
        return [], "the re-render differs from the mosaic (written by another renderer version?)"
    b = render_arrays(seed, size, gsd, footprint=footprint, landscape=landscape, draw_plots=False)
    diff = np.abs(a.rgb.astype(np.int16) - b.rgb.astype(np.int16)).max(axis=2)
    lum = b.rgb.astype(np.float32) @ np.array([0.299, 0.587, 0.114], np.float32)
    rows = []
    for i, p in enumerate(a.plots):
        m = _rasterize([p["polygon"]], a.rgb.shape[0], a.rgb.shape[1]).astype(bool) & ok
        if not m.any():
            continue
        signal, clutter = float(diff[m].mean()), float(lum[m].std())
        rows.append({"scene": scene_name(mosaic), "plot_id": i + 1, "gsd_m": gsd, "stage": p["stage"],
                     "setting": p["setting"], "area_m2": round(p["area_m2"], 2),
                     "signal_dn": round(signal, 2), "clutter_dn": round(clutter, 2),
                     "scr": round(signal / max(clutter, 1.0), 3),
                     "share_over_10dn": round(float((diff[m] >= 10).mean()), 3)})
    return rows, None


def read_missed(path: Path) -> set[tuple[str, int]]:
    """``(scene, plot_id)`` of the ``missed`` layer that ``evaluate --model --scenes --errors`` writes."""
    import geopandas as gpd
    import pyogrio

    try:
        layers = [name for name, _ in pyogrio.list_layers(path)]
    except Exception as exc:  # noqa: BLE001
        raise SystemExit(f"error: --errors '{path}' cannot be read as a GeoPackage ({exc})") from None
    if "missed" not in layers:
        raise SystemExit(f"error: --errors '{path}' has no 'missed' layer: write it with "
                         "`poppyscan evaluate --model M --scenes S --errors FILE.gpkg`")
    m = gpd.read_file(path, layer="missed")
    if not {"scene", "plot_id"} <= set(m.columns) or m["plot_id"].isna().any():
        raise SystemExit(f"error: --errors '{path}' needs 'scene' and 'plot_id' on every missed plot: write "
                         "it with `poppyscan evaluate --model M --scenes S` (truth files with plot_id)")
    return {(str(sc), int(i)) for sc, i in zip(m["scene"], m["plot_id"], strict=True)}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("scenes", nargs="+", help="scene dirs, dirs of them, or CSV/YAML lists (as evaluate)")
    ap.add_argument("--errors", type=Path, help="errors.gpkg from `poppyscan evaluate --scenes ... --errors`")
    ap.add_argument("--json", type=Path, help="write every plot's figures here")
    args = ap.parse_args(argv)

    try:
        pairs = find_scenes(args.scenes)
    except PoppyscanError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    missed = read_missed(args.errors) if args.errors else None
    rows: list[dict] = []
    for mosaic, labels in pairs:
        if labels is None or not _has_plots(labels):
            continue  # a poppy-free scene: nothing to measure
        got, why = scene_signal(mosaic)
        if why:
            print(f"skipped {mosaic}: {why}", file=sys.stderr)
        rows += got
    if not rows:
        print("error: no rendered poppy plots found in the scenes given", file=sys.stderr)
        return 1
    if missed is not None:
        keys = {(r["scene"], r["plot_id"]) for r in rows}
        unknown = sorted(missed - keys)
        if unknown:
            print(f"error: {len(unknown)} missed plot(s) in --errors are not among these scenes' plots (e.g. "
                  f"scene {unknown[0][0]!r} plot {unknown[0][1]}): pass the scenes that evaluate ran on",
                  file=sys.stderr)
            return 1
        for r in rows:
            r["found"] = (r["scene"], r["plot_id"]) not in missed

    print(f"{len(rows)} plots in {len({r['scene'] for r in rows})} scenes")
    head = f"{'signal (DN)':>12} {'plots':>6} {'median SCR':>11}"
    print(head + (f" {'found':>6} {'recall':>7}" if missed is not None else ""))
    for lo, hi in BANDS:
        band = [r for r in rows if lo <= r["signal_dn"] < hi]
        if not band:
            continue
        line = f"{f'{lo}-{hi}':>12} {len(band):>6} {np.median([r['scr'] for r in band]):>11.2f}"
        if missed is not None:
            found = sum(r["found"] for r in band)
            line += f" {found:>6} {found / len(band):>7.2f}"
        print(line)
    for stage in sorted({r["stage"] for r in rows}):
        sig = [r["signal_dn"] for r in rows if r["stage"] == stage]
        print(f"{stage:>10}: {len(sig)} plots, signal median {np.median(sig):.1f} DN, "
              f"{sum(s < 10 for s in sig)} under 10 DN")
    if args.json:
        args.json.write_text(json.dumps(rows, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
