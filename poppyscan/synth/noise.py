"""Noise, stamping and polygon-filling primitives shared by the synthetic renderer.

All functions take an explicit :class:`numpy.random.Generator`, so scenes are deterministic by seed.
Pixel coordinates follow rasterio's convention: pixel ``(row, col)`` covers ``[col, col+1) x [row, row+1)``,
so its centre is ``(col + 0.5, row + 0.5)``.
"""

from __future__ import annotations

import cv2
import numpy as np
from shapely.geometry import MultiPolygon, Polygon

_SHIFT = 4  # sub-pixel bits for cv2.fillPoly


def fbm(
    rng: np.random.Generator, h: int, w: int, scale_px: float, octaves: int = 3, gain: float = 0.5
) -> np.ndarray:
    """Fractal value noise, float32 (h, w), roughly zero mean and unit std.

    ``scale_px`` is the feature size of the coarsest octave in pixels.
    """
    out = np.zeros((h, w), np.float32)
    amp, total = 1.0, 0.0
    scale = max(float(scale_px), 1.0)
    for _ in range(octaves):
        gh, gw = max(2, int(h / scale) + 2), max(2, int(w / scale) + 2)
        grid = rng.standard_normal((gh, gw)).astype(np.float32)
        if scale <= 1.5:
            layer = cv2.resize(grid, (w, h), interpolation=cv2.INTER_NEAREST) if (gh, gw) != (h, w) else grid
        else:
            layer = cv2.resize(grid, (w, h), interpolation=cv2.INTER_CUBIC)
        out += amp * layer
        total += amp * amp
        amp *= gain
        scale /= 2.0
        if scale < 1.0:
            break
    return out / np.float32(np.sqrt(total))


def splat(
    h: int,
    w: int,
    xs: np.ndarray,
    ys: np.ndarray,
    radius_px: float,
    labels: np.ndarray | None = None,
) -> np.ndarray:
    """Discs of ``radius_px`` centred on the points; returns a float32 label image (0 = nothing).

    Labels default to ``1..n``; where discs overlap the larger label wins. Runs in time proportional
    to the image area, not the number of points (a point image dilated by a disc kernel).
    """
    img = np.zeros((h, w), np.float32)
    xs = np.asarray(xs)
    ys = np.asarray(ys)
    ok = (xs >= 0) & (xs < w) & (ys >= 0) & (ys < h)
    xi, yi = xs[ok].astype(np.intp), ys[ok].astype(np.intp)
    if labels is None:
        labels = np.arange(1, len(xs) + 1, dtype=np.float32)
    img[yi, xi] = np.asarray(labels, np.float32)[ok]
    r = max(0.0, float(radius_px))
    k = int(round(r))
    if k >= 1:
        kernel = cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (2 * k + 1, 2 * k + 1))
        img = cv2.dilate(img, kernel)
    return img


def poisson_points(rng: np.random.Generator, h: int, w: int, count: float, jitter_grid: float = 0.0):
    """``count`` (Poisson-drawn) uniform random points in an (h, w) box as float arrays (x, y)."""
    n = int(rng.poisson(max(count, 0.0)))
    return rng.uniform(0, w, n), rng.uniform(0, h, n)


def fill_polygon(
    mask: np.ndarray, poly: Polygon | MultiPolygon, value: int = 1, offset=(0.0, 0.0)
) -> np.ndarray:
    """Fill a shapely polygon (pixel coords, rasterio convention) into ``mask`` in place with cv2.

    ``offset`` (x0, y0) is subtracted from the coordinates (for drawing into a sub-window).
    """
    polys = poly.geoms if isinstance(poly, MultiPolygon) else [poly]
    rings = []
    for p in polys:
        if p.is_empty:
            continue
        for ring in [p.exterior, *p.interiors]:
            c = np.asarray(ring.coords, np.float64)
            c = (c - np.asarray(offset) - 0.5) * (1 << _SHIFT)
            rings.append(np.round(c).astype(np.int32))
    if rings:
        cv2.fillPoly(mask, rings, value, lineType=cv2.LINE_8, shift=_SHIFT)
    return mask


def polygon_mask(h: int, w: int, poly, offset=(0.0, 0.0)) -> np.ndarray:
    """A uint8 (h, w) mask of ``poly`` (see :func:`fill_polygon`)."""
    return fill_polygon(np.zeros((h, w), np.uint8), poly, 1, offset)


def rotated_rect(cx: float, cy: float, length: float, width: float, angle: float) -> Polygon:
    """A rectangle centred on (cx, cy), ``length`` along ``angle`` (radians), ``width`` across."""
    c, s = np.cos(angle), np.sin(angle)
    hl, hw = length / 2.0, width / 2.0
    pts = [(-hl, -hw), (hl, -hw), (hl, hw), (-hl, hw)]
    return Polygon([(cx + x * c - y * s, cy + x * s + y * c) for x, y in pts])


def blob_polygon(
    rng: np.random.Generator,
    cx: float,
    cy: float,
    rx: float,
    ry: float,
    angle: float,
    irregularity: float = 0.25,
    n: int = 18,
) -> Polygon:
    """An irregular star-shaped blob with radii ~(rx, ry), rotated by ``angle``."""
    t = np.linspace(0, 2 * np.pi, n, endpoint=False) + rng.uniform(-0.4, 0.4, n) * (np.pi / n)
    # smooth radial perturbation: low-order Fourier series
    rad = np.ones(n)
    for k in (2, 3, 5):
        rad += irregularity / k * rng.standard_normal() * np.cos(k * t + rng.uniform(0, 2 * np.pi))
    rad += irregularity * 0.3 * rng.standard_normal(n)
    rad = np.clip(rad, 0.45, 1.6)
    x, y = rx * rad * np.cos(t), ry * rad * np.sin(t)
    c, s = np.cos(angle), np.sin(angle)
    poly = Polygon(np.c_[cx + x * c - y * s, cy + x * s + y * c])
    return poly if poly.is_valid else poly.buffer(0)


def jitter_quad(
    rng: np.random.Generator,
    cx: float,
    cy: float,
    length: float,
    width: float,
    angle: float,
    jitter: float = 0.12,
) -> Polygon:
    """A roughly rectangular quadrilateral (a farmer's plot) with corners jittered by ``jitter`` x size."""
    c, s = np.cos(angle), np.sin(angle)
    hl, hw = length / 2.0, width / 2.0
    base = np.array([(-hl, -hw), (hl, -hw), (hl, hw), (-hl, hw)], float)
    # optional extra vertex on a long side for irregularity
    if rng.random() < 0.5:
        i = int(rng.integers(4))
        a, b = base[i], base[(i + 1) % 4]
        mid = (a + b) / 2
        base = np.insert(base, i + 1, mid, axis=0)
    base += rng.uniform(-jitter, jitter, base.shape) * np.array([length, width])
    pts = [(cx + x * c - y * s, cy + x * s + y * c) for x, y in base]
    poly = Polygon(pts)
    return poly if poly.is_valid else poly.convex_hull


def soften(img: np.ndarray, sigma: float) -> np.ndarray:
    """Gaussian blur with ``sigma`` in pixels (no-op for tiny sigma)."""
    if sigma < 0.3:
        return img
    return cv2.GaussianBlur(img, (0, 0), sigma)


def lattice(
    rng: np.random.Generator,
    h: int,
    w: int,
    angle: float,
    row_px: float,
    plant_px: float,
    fill: float = 0.9,
    jitter: float = 0.25,
    max_points: int = 400_000,
):
    """Plant positions in rows along ``angle`` over an (h, w) window: (x, y) arrays, or None if too many."""
    diag = float(np.hypot(h, w))
    row_px, plant_px = max(row_px, 1.0), max(plant_px, 1.0)
    nr, npl = int(diag / row_px) + 3, int(diag / plant_px) + 3
    if nr * npl > max_points:
        return None
    i, j = np.meshgrid(np.arange(nr) - nr / 2, np.arange(npl) - npl / 2, indexing="ij")
    across = i.ravel() * row_px + rng.uniform(-jitter / 3, jitter / 3, i.size) * row_px
    along = j.ravel() * plant_px + rng.uniform(-jitter, jitter, i.size) * plant_px
    ca, sa = np.cos(angle), np.sin(angle)
    ox, oy = rng.uniform(0, plant_px), rng.uniform(0, row_px)
    x = w / 2 + ox + along * ca - across * sa
    y = h / 2 + oy + along * sa + across * ca
    keep = (rng.random(x.size) < fill) & (x >= 0) & (x < w) & (y >= 0) & (y < h)
    return x[keep], y[keep]
