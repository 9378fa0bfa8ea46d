"""Drawing primitives of the alternative renderer: smooth noise by spline-upsampled random lattices,
point splatting (impulses convolved with supersampled sprite kernels), polygon rasterising and
alpha compositing. Written independently of :mod:`poppyscan.synth`.
"""

from __future__ import annotations

import numpy as np
from scipy import signal


def lattice_noise(rng: np.random.Generator, h: int, w: int, cell_px: float, octaves: int = 3) -> np.ndarray:
    """Zero-mean noise (roughly in [-1, 1]) with features ``cell_px`` pixels across and finer octaves."""
    out = np.zeros((h, w), np.float32)
    amp, total = 1.0, 0.0
    cell = max(float(cell_px), 1.0)
    for _ in range(octaves):
        gh, gw = int(np.ceil(h / cell)) + 3, int(np.ceil(w / cell)) + 3
        grid = rng.standard_normal((gh, gw)).astype(np.float32)
        if cell > 1:  # bicubic upsampling of the lattice (PIL, float mode): smooth and fast
            from PIL import Image

            size = (int(round(gw * cell)), int(round(gh * cell)))
            up = np.asarray(Image.fromarray(grid, mode="F").resize(size, Image.BICUBIC))[:h, :w]
        else:
            up = grid[:h, :w]
        out += amp * up  # lattice values are unit normal (not re-normalised: crops may be tiny)
        total += amp
        amp *= 0.5
        cell = max(cell / 2.3, 1.0)
    return np.clip(out / total / 1.5, -1.5, 1.5)


def rasterize(polys: list, h: int, w: int, values: list | None = None, dtype: str = "uint8") -> np.ndarray:
    """Burn shapely polygons (pixel coordinates: x = column, y = row) with rasterio's pixel-centre rule."""
    from affine import Affine
    from rasterio.features import rasterize as _rz

    polys = [p for p in polys if p is not None and not p.is_empty]
    if not polys:
        return np.zeros((h, w), dtype)
    vals = values if values is not None else [1] * len(polys)
    shapes = [(p, v) for p, v in zip(polys, vals, strict=False)]
    return _rz(shapes, out_shape=(h, w), transform=Affine.identity(), dtype=dtype, fill=0)


def ellipse_kernel(rx: float, ry: float, angle: float = 0.0, ss: int = 4, soft: float = 0.0) -> np.ndarray:
    """Coverage (0..1) of a rotated ellipse with semi-axes ``rx``, ``ry`` pixels, supersampled ``ss``x so
    sub-pixel shapes keep their area."""
    r = max(rx, ry) + 1.5
    n = int(np.ceil(r)) * 2 + 1
    c = (n * ss - 1) / 2
    yy, xx = np.mgrid[0 : n * ss, 0 : n * ss].astype(np.float32)
    xx, yy = (xx - c) / ss, (yy - c) / ss
    ca, sa = np.cos(angle), np.sin(angle)
    u, v = xx * ca + yy * sa, -xx * sa + yy * ca
    d = (u / max(rx, 1e-3)) ** 2 + (v / max(ry, 1e-3)) ** 2
    k = (d <= 1.0).astype(np.float32)
    if soft > 0:
        k = np.clip((1.0 - d) / soft, 0, 1).astype(np.float32)
    return k.reshape(n, ss, n, ss).mean(axis=(1, 3))


def petals_kernel(radius: float, n_petals: int, angle: float, ss: int = 4) -> np.ndarray:
    """A flower seen from above: ``n_petals`` rounded petals around the centre (supersampled)."""
    n = int(np.ceil(radius + 1.5)) * 2 + 1
    c = (n * ss - 1) / 2
    yy, xx = np.mgrid[0 : n * ss, 0 : n * ss].astype(np.float32)
    xx, yy = (xx - c) / ss, (yy - c) / ss
    rr = np.hypot(xx, yy)
    th = np.arctan2(yy, xx) - angle
    edge = radius * (0.78 + 0.22 * np.abs(np.cos(th * n_petals / 2)))
    k = (rr <= edge).astype(np.float32)
    return k.reshape(n, ss, n, ss).mean(axis=(1, 3))


def splat(
    h: int, w: int, xs: np.ndarray, ys: np.ndarray, kernel: np.ndarray, weights: np.ndarray | None = None
) -> np.ndarray:
    """Sum of ``kernel`` copies centred at sub-pixel points (bilinear impulses convolved with the kernel)."""
    imp = np.zeros((h + 2, w + 2), np.float32)
    xs = np.asarray(xs, np.float64) - 0.5
    ys = np.asarray(ys, np.float64) - 0.5
    wt = np.ones(len(xs), np.float32) if weights is None else np.asarray(weights, np.float32)
    ok = (xs > -1) & (ys > -1) & (xs < w) & (ys < h)
    xs, ys, wt = xs[ok], ys[ok], wt[ok]
    if len(xs) == 0:
        return np.zeros((h, w), np.float32)
    x0, y0 = np.floor(xs).astype(int), np.floor(ys).astype(int)
    fx, fy = (xs - x0).astype(np.float32), (ys - y0).astype(np.float32)
    for dx, dy, f in (
        (0, 0, (1 - fx) * (1 - fy)),
        (1, 0, fx * (1 - fy)),
        (0, 1, (1 - fx) * fy),
        (1, 1, fx * fy),
    ):
        np.add.at(imp, (y0 + dy + 1, x0 + dx + 1), f * wt)
    out = signal.oaconvolve(imp, kernel, mode="same")[1:-1, 1:-1]
    return np.maximum(out, 0).astype(np.float32)


def composite(img: np.ndarray, alpha: np.ndarray, colour, mask: np.ndarray | None = None) -> None:
    """In place: ``img = img * (1 - a) + colour * a`` with ``a = clip(alpha) * mask``; ``colour`` is an
    RGB triple or an (H, W, 3) array."""
    a = np.clip(alpha, 0, 1)
    if mask is not None:
        a = a * mask
    a = a[..., None]
    col = np.asarray(colour, np.float32)
    img *= 1 - a
    img += a * col


def rgb(r: float, g: float, b: float) -> np.ndarray:
    """An sRGB colour in 0..1 from 0..255 components."""
    return np.array([r, g, b], np.float32) / 255.0


def jitter(rng: np.random.Generator, c: np.ndarray, amount: float = 0.06) -> np.ndarray:
    """A colour with a random brightness and hue-ish shift."""
    return np.clip(c * rng.uniform(1 - amount, 1 + amount) * (1 + rng.normal(0, amount / 2, 3)), 0, 1).astype(
        np.float32
    )
