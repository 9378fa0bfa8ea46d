"""Camera and mosaicking effects: footprint, illumination, seamline exposure steps, blur, noise, JPEG."""

from __future__ import annotations

import cv2
import numpy as np
from shapely import affinity
from shapely.geometry import Polygon, box
from shapely.ops import unary_union

from .noise import fbm, rotated_rect


def flight_footprint(rng: np.random.Generator, h: int, w: int) -> Polygon:
    """An irregular mosaic footprint: a union of image footprints along flight strips, clipped to the frame.

    Covers the frame centre and typically 60-97 % of the frame, with the stepped edges of stitched photos.
    """
    frame = box(0, 0, w, h)
    for _ in range(20):
        ang = rng.uniform(0, np.pi)
        cx, cy = w / 2 + rng.normal(0, w * 0.08), h / 2 + rng.normal(0, h * 0.08)
        diag = np.hypot(w, h)
        photo_l, photo_w = diag * rng.uniform(0.18, 0.35), diag * rng.uniform(0.14, 0.25)
        n_strips = int(rng.integers(3, 7))
        spacing = photo_w * rng.uniform(0.6, 0.8)
        # block half-extent along the strips, differs per strip
        parts = []
        for s in range(n_strips):
            off = (s - (n_strips - 1) / 2) * spacing
            reach = diag * rng.uniform(0.25, 0.6)
            start = -reach * rng.uniform(0.6, 1.0)
            t = start
            while t < reach:
                ox = cx + t * np.cos(ang) - off * np.sin(ang) + rng.normal(0, photo_w * 0.05)
                oy = cy + t * np.sin(ang) + off * np.cos(ang) + rng.normal(0, photo_w * 0.05)
                parts.append(rotated_rect(ox, oy, photo_l, photo_w, ang + rng.normal(0, 0.04)))
                t += photo_l * rng.uniform(0.3, 0.5)
        fp = unary_union(parts).intersection(frame)
        if fp.geom_type == "MultiPolygon":
            fp = max(fp.geoms, key=lambda g: g.area)
        fp = Polygon(fp.exterior)  # no holes
        cover = fp.area / frame.area
        if 0.5 <= cover <= 0.985 and fp.contains(box(w * 0.4, h * 0.4, w * 0.6, h * 0.6)):
            return fp.simplify(0.5)
    # fallback: a jittered octagon
    t = np.linspace(0, 2 * np.pi, 9)[:-1] + rng.uniform(-0.2, 0.2, 8)
    r = rng.uniform(0.55, 0.75, 8)
    return Polygon(np.c_[w / 2 + r * w * np.cos(t), h / 2 + r * h * np.sin(t)]).intersection(frame)


def seam_regions(rng: np.random.Generator, h: int, w: int, n: int) -> np.ndarray:
    """Label image (h, w) of irregular seamline regions (noisy Voronoi cells), computed at low resolution."""
    s = 8
    lh, lw = max(h // s, 4), max(w // s, 4)
    seeds = np.c_[rng.uniform(0, lw, n), rng.uniform(0, lh, n)]
    yy, xx = np.mgrid[0:lh, 0:lw].astype(np.float32)
    wobble = fbm(rng, lh, lw, max(lw / 6, 2), 3) * (lw / n**0.5) * 0.25
    d = np.stack([np.hypot(xx - sx, yy - sy) for sx, sy in seeds]) + wobble[None] * rng.uniform(
        0.5, 1.5, (n, 1, 1)
    )
    lab = np.argmin(d, axis=0).astype(np.uint8)
    return cv2.resize(lab, (w, h), interpolation=cv2.INTER_NEAREST)


def apply_camera(rng: np.random.Generator, img: np.ndarray, ppm: float) -> tuple[np.ndarray, dict]:
    """Photometric and optical effects on a float RGB image in [0, 1]; returns uint8 RGB and the settings."""
    h, w = img.shape[:2]
    info: dict = {}
    # global white balance, exposure, contrast, saturation, haze
    wb = rng.uniform(0.92, 1.08, 3).astype(np.float32)
    gain = rng.uniform(0.8, 1.2)
    img = img * (wb * gain)
    grey = img.mean(axis=2, keepdims=True)
    sat = rng.uniform(0.75, 1.25)
    img = grey + (img - grey) * sat
    haze = rng.uniform(0, 0.08)
    img = img * (1 - haze) + haze * np.float32(0.75)
    info.update(gain=float(gain), saturation=float(sat), haze=float(haze))
    # illumination gradient (sun angle across the block, thin clouds)
    grad = fbm(rng, h, w, max(h, w) / rng.uniform(0.7, 2.0), 2) * rng.uniform(0.03, 0.1)
    img = img * (1 + grad)[..., None]
    # exposure / colour steps along seamlines between source photos
    n = int(rng.integers(2, 9))
    lab = seam_regions(rng, h, w, n)
    gains = rng.normal(1, rng.uniform(0.01, 0.05), (n, 3)).astype(np.float32)
    gains *= rng.normal(1, 0.03, (n, 1)).astype(np.float32)
    img = img * gains[lab]
    # optics: slight blur (defocus / motion / resampling)
    sigma = rng.uniform(0.0, 1.1)
    if sigma > 0.3:
        img = cv2.GaussianBlur(img, (0, 0), sigma)
    if rng.random() < 0.15:
        k = int(rng.integers(3, 6))
        kern = np.zeros((k, k), np.float32)
        kern[k // 2, :] = 1.0 / k
        rot = cv2.getRotationMatrix2D((k / 2 - 0.5, k / 2 - 0.5), float(rng.uniform(0, 180)), 1.0)
        kern = cv2.warpAffine(kern, rot, (k, k))
        img = cv2.filter2D(img, -1, kern / max(kern.sum(), 1e-6))
    info["blur_sigma"] = float(sigma)
    # gamma and sensor noise (partly correlated, as after demosaicing and resampling)
    img = np.clip(img, 0, 1) ** np.float32(rng.uniform(0.85, 1.15))
    noise_sd = rng.uniform(0.004, 0.02)
    noise = rng.standard_normal((h, w, 3), dtype=np.float32) * noise_sd
    if rng.random() < 0.5:
        noise = cv2.GaussianBlur(noise, (0, 0), 0.7) * 1.6
    img = img + noise
    out = np.clip(img * 255 + 0.5, 0, 255).astype(np.uint8)
    # JPEG artefacts from the source photos / mosaic export
    q = int(rng.integers(55, 96))
    if rng.random() < 0.85:
        ok, buf = cv2.imencode(".jpg", out[..., ::-1], [cv2.IMWRITE_JPEG_QUALITY, q])
        out = np.ascontiguousarray(cv2.imdecode(buf, cv2.IMREAD_COLOR)[..., ::-1])
        info["jpeg_quality"] = q
    info["seam_regions"] = n
    return out, info


def rotate_about(poly, angle_rad: float, origin):
    return affinity.rotate(poly, angle_rad, origin=origin, use_radians=True)
