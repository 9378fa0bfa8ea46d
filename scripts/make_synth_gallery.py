#!/usr/bin/env python
"""Write docs/synth_gallery.jpg: a grid of synthetic scenes with truth outlines, plus native-resolution zooms.

Top rows: whole scenes (magenta = poppy plot truth polygons, yellow = labelled confusers, grey = footprint).
Bottom row: 1:1 crops around poppy plots and confusers, without outlines, as the model sees them.

    .venv/bin/python scripts/make_synth_gallery.py [--out docs/synth_gallery.jpg] [--seeds 1 2 3 ...]
"""

from __future__ import annotations

import argparse
from pathlib import Path

import cv2
import numpy as np

from poppyscan.synth import render_arrays

CELL = 420
GSDS = [0.02, 0.03, 0.04, 0.05, 0.035, 0.045, 0.025, 0.055]


def _outline(img: np.ndarray, poly, colour, scale: float, thick: int) -> None:
    for p in getattr(poly, "geoms", [poly]):
        pts = np.round(np.asarray(p.exterior.coords) * scale * 8).astype(np.int32)
        cv2.polylines(img, [pts], True, colour, thick, cv2.LINE_AA, shift=3)


def scene_cell(s) -> np.ndarray:
    h = s.rgb.shape[0]
    scale = CELL / h
    img = cv2.resize(s.rgb, (CELL, CELL), interpolation=cv2.INTER_AREA)
    img = np.ascontiguousarray(img[..., ::-1])
    for c in s.confusers:
        _outline(img, c["polygon"], (0, 230, 255), scale, 1)
    for p in s.plots:
        _outline(img, p["polygon"], (255, 0, 255), scale, 2)
    label = f"{s.meta['scene_kind']} gsd {s.meta['gsd'] * 100:.1f} cm, {len(s.plots)} plots"
    cv2.putText(img, label, (6, 18), cv2.FONT_HERSHEY_SIMPLEX, 0.5, (0, 0, 0), 3, cv2.LINE_AA)
    cv2.putText(img, label, (6, 18), cv2.FONT_HERSHEY_SIMPLEX, 0.5, (255, 255, 255), 1, cv2.LINE_AA)
    return img


def zoom(s, poly, text: str, size: int = CELL // 2) -> np.ndarray:
    c = poly.centroid
    h, w = s.rgb.shape[:2]
    x0 = int(np.clip(c.x - size / 2, 0, w - size))
    y0 = int(np.clip(c.y - size / 2, 0, h - size))
    crop = np.ascontiguousarray(s.rgb[y0 : y0 + size, x0 : x0 + size, ::-1])
    cv2.putText(crop, text, (4, 14), cv2.FONT_HERSHEY_SIMPLEX, 0.4, (0, 0, 0), 3, cv2.LINE_AA)
    cv2.putText(crop, text, (4, 14), cv2.FONT_HERSHEY_SIMPLEX, 0.4, (255, 255, 255), 1, cv2.LINE_AA)
    return crop


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", default="docs/synth_gallery.jpg")
    ap.add_argument("--seeds", type=int, nargs="+", default=[101, 102, 103, 104, 105, 106, 107, 108])
    ap.add_argument("--size", type=int, default=1024)
    ap.add_argument("--cols", type=int, default=4)
    ap.add_argument("--quality", type=int, default=82)
    ap.add_argument("--png", help="also write a PNG copy here (for viewers without JPEG)")
    args = ap.parse_args()
    cells, zooms_p, zooms_c = [], [], []
    for i, seed in enumerate(args.seeds):
        s = render_arrays(seed, args.size, GSDS[i % len(GSDS)], poppy=(i % 4 != 3))
        cells.append(scene_cell(s))
        for p in s.plots:
            txt = f"poppy {p['stage']} {p['flower_colour']} {p['setting']} {p['area_m2']:.0f}m2"
            zooms_p.append(zoom(s, p["polygon"], txt))
        for c in s.confusers:
            if c["kind"] in ("corn_poppy", "flowerbed", "lettuce", "red_object"):
                zooms_c.append(zoom(s, c["polygon"], c["kind"]))
    cols = args.cols
    while len(cells) % cols:
        cells.append(np.zeros_like(cells[0]))
    rows = [np.hstack(cells[i : i + cols]) for i in range(0, len(cells), cols)]
    per_row = cols * 2
    zs = (
        zooms_p[: per_row * 2 - per_row // 2]
        + zooms_c[: per_row // 2 + max(0, per_row * 2 - per_row // 2 - len(zooms_p))]
    )
    zs = zs[: per_row * 2]
    while len(zs) % per_row:
        zs.append(np.zeros_like(zs[0]) if zs else np.zeros((CELL // 2, CELL // 2, 3), np.uint8))
    rows += [np.hstack(zs[i : i + per_row]) for i in range(0, len(zs), per_row)]
    grid = np.vstack(rows)
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    cv2.imwrite(str(out), grid, [cv2.IMWRITE_JPEG_QUALITY, args.quality, cv2.IMWRITE_JPEG_OPTIMIZE, 1])
    if args.png:
        cv2.imwrite(args.png, grid)
    print(f"wrote {out} ({out.stat().st_size / 1e6:.2f} MB, {grid.shape[1]}x{grid.shape[0]})")


if __name__ == "__main__":
    main()
