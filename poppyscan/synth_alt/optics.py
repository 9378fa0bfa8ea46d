"""Camera and stitching model of the alternative renderer.

An orthomosaic is a patchwork of photos: each Voronoi cell around a photo centre gets its own exposure,
white balance and vignetting (so brightness jumps at the seamlines), then the whole scene gets haze, a
tone curve, lens blur, lateral chromatic aberration, unsharp-mask sharpening (halos), sensor noise and
a JPEG round trip. The flight footprint is a union of flight strips with ragged ends.
"""

from __future__ import annotations

import io

import numpy as np
from scipy import ndimage
from shapely import affinity
from shapely.geometry import Polygon, box
from shapely.ops import unary_union

from .prims import lattice_noise


def footprint(rng: np.random.Generator, h: int, w: int) -> Polygon:
    """Valid area: flight strips (rotated) of ragged length, clipped to the frame, >= ~55 % of it."""
    frame = box(0, 0, w, h)
    for _ in range(20):
        ang = rng.uniform(0, 180)
        span = np.hypot(h, w)
        n = int(rng.integers(3, 7))
        sw = span / n
        strips = []
        for i in range(n):
            a = -span / 2 + rng.uniform(-0.35, 0.05) * span
            b = span / 2 - rng.uniform(-0.05, 0.35) * span
            strips.append(box(a, -span / 2 + i * sw - 1, b, -span / 2 + (i + 1) * sw + 1))
        poly = affinity.translate(affinity.rotate(unary_union(strips), ang, origin=(0, 0)), w / 2, h / 2)
        poly = poly.intersection(frame).buffer(-2).buffer(1)
        if poly.geom_type == "MultiPolygon":
            poly = max(poly.geoms, key=lambda g: g.area)
        if poly.geom_type == "Polygon" and poly.area >= 0.55 * h * w:
            return Polygon(np.round(np.asarray(poly.exterior.coords), 2))
    return frame.buffer(-2)


def expose(rng: np.random.Generator, img: np.ndarray, ppm: float) -> tuple[np.ndarray, dict]:
    """Apply the photo patchwork and lens/sensor effects to a float image in 0..1; returns uint8 RGB."""
    h, w = img.shape[:2]
    # photo cells: centres on a jittered grid 25-60 m apart, seamlines wobble
    pitch = rng.uniform(25, 60) * ppm
    ny, nx = int(np.ceil(h / pitch)) + 1, int(np.ceil(w / pitch)) + 1
    cy, cx = np.meshgrid((np.arange(ny) - 0.25) * pitch, (np.arange(nx) - 0.25) * pitch, indexing="ij")
    cy = cy.ravel() + rng.normal(0, 0.2 * pitch, cy.size)
    cx = cx.ravel() + rng.normal(0, 0.2 * pitch, cx.size)
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    wy = yy + lattice_noise(rng, h, w, max(4.0, 4 * ppm), 2) * 0.12 * pitch  # seamlines wobble
    wx = xx + lattice_noise(rng, h, w, max(4.0, 4 * ppm), 2) * 0.12 * pitch
    cell = np.zeros((h, w), np.int32)
    best = np.full((h, w), np.inf, np.float32)
    for k in range(cx.size):
        d2 = (wy - cy[k]) ** 2 + (wx - cx[k]) ** 2
        closer = d2 < best
        best[closer], cell[closer] = d2[closer], k
    del wy, wx, best
    gains = rng.normal(1.0, rng.uniform(0.015, 0.05), (cx.size, 1)) * rng.normal(1, 0.012, (cx.size, 3))
    vig = rng.uniform(0.05, 0.25)
    r2 = ((yy - cy[cell]) ** 2 + (xx - cx[cell]) ** 2) / (0.9 * pitch) ** 2
    img = img * gains[cell].astype(np.float32) * (1 - vig * np.clip(r2, 0, 1.5))[..., None]
    # haze and tone curve (exposure, gamma, saturation)
    haze = rng.uniform(0.0, 0.2) if rng.random() < 0.6 else 0.0
    img = img * (1 - haze) + haze * np.array([0.74, 0.79, 0.86], np.float32)
    expo = rng.uniform(0.85, 1.2)
    gamma = rng.uniform(0.85, 1.15)
    img = np.clip(img * expo, 0, 1) ** gamma
    sat = rng.uniform(0.8, 1.25)
    grey = img.mean(axis=-1, keepdims=True)
    img = grey + (img - grey) * sat
    # lens blur, lateral chromatic aberration (red and blue channels scaled about the centre)
    sigma = rng.uniform(0.3, 0.9)
    img = ndimage.gaussian_filter(img, (sigma, sigma, 0))
    ca = rng.uniform(0.0, 1.2) / max(h, w)
    for ch, s in ((0, 1 + ca), (2, 1 - ca)):
        img[..., ch] = ndimage.affine_transform(
            img[..., ch],
            [1 / s, 1 / s],
            offset=[(h / 2) * (1 - 1 / s), (w / 2) * (1 - 1 / s)],
            order=1,
            mode="nearest",
        )
    # unsharp mask: halos along edges
    amount, radius = rng.uniform(0.2, 1.0), rng.uniform(0.8, 2.0)
    img = img + amount * (img - ndimage.gaussian_filter(img, (radius, radius, 0)))
    img = img + rng.normal(0, rng.uniform(0.004, 0.014), img.shape).astype(np.float32) * np.sqrt(
        np.clip(img, 0.02, 1)
    )
    out = np.clip(img * 255 + 0.5, 0, 255).astype(np.uint8)
    q = int(rng.integers(70, 93)) if rng.random() < 0.8 else 0
    if q:
        from PIL import Image

        buf = io.BytesIO()
        Image.fromarray(out).save(buf, "JPEG", quality=q, subsampling=2)
        out = np.asarray(Image.open(io.BytesIO(buf.getvalue())).convert("RGB")).copy()
    cam = {
        "photo_pitch_m": float(pitch / ppm),
        "vignetting": float(vig),
        "haze": float(haze),
        "exposure": float(expo),
        "gamma": float(gamma),
        "saturation": float(sat),
        "blur_px": float(sigma),
        "sharpen": float(amount),
        "jpeg_quality": q,
    }
    return out, cam
