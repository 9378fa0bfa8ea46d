"""Tile augmentation: flips/rot90, photometric jitter, coarsening to imitate coarser imagery, and the
effects of other cameras, photogrammetry software and weather.

Every function draws from the random generator it is given. With ``coarse_p=0``, ``color=1`` and
``camera_p=0`` (the defaults) :func:`augment` draws exactly the random numbers it always did.
"""

from __future__ import annotations

import cv2
import numpy as np


def coarsen(rgb: np.ndarray, factor: float) -> np.ndarray:
    """Imitate imagery ``factor`` times coarser, resampled back to this GSD (as ``detect`` upsamples
    a 6-8 cm mosaic to the model's 4 cm): area-downsample, then bilinear upsample to the same shape."""
    h, w = rgb.shape[:2]
    size = (max(1, round(w / factor)), max(1, round(h / factor)))
    small = cv2.resize(rgb, size, interpolation=cv2.INTER_AREA)
    return cv2.resize(small, (w, h), interpolation=cv2.INTER_LINEAR)


def augment(
    rgb: np.ndarray,
    label: np.ndarray,
    rng: np.random.Generator,
    *,
    coarse_p: float = 0.0,
    coarse_max: float = 2.2,
    color: float = 1.0,
    camera_p: float = 0.0,
) -> tuple[np.ndarray, np.ndarray]:
    """Flips/rot90, brightness/contrast/saturation/hue/gamma jitter, blur, noise, JPEG artefacts.

    With ``coarse_p`` > 0, that share of tiles is first :func:`coarsened <coarsen>` by a factor drawn
    from U(1.25, ``coarse_max``): the fine-GSD scenes then also teach what coarse imagery looks like,
    with exact labels. ``coarse_p=0`` (the default) draws exactly the random numbers it always did.
    ``color`` scales the photometric ranges (brightness, contrast, gamma, white balance, saturation)
    around no change: 1.5 gives brightness x U(0.55, 1.45) instead of U(0.7, 1.3). The hue shift is not
    scaled (flower colour is a cue). ``color=1`` (the default) gives exactly the old augmentation.
    With ``camera_p`` > 0, that share of tiles gets :func:`camera_effects` (vignetting, lateral chromatic
    aberration, sharpening halos, haze, a stitching seamline) after the colour jitter; ``camera_p=0``
    (the default) draws exactly the random numbers it always did.
    """
    k = int(rng.integers(4))
    rgb, label = np.rot90(rgb, k), np.rot90(label, k)
    if rng.random() < 0.5:
        rgb, label = rgb[:, ::-1], label[:, ::-1]
    rgb = np.ascontiguousarray(rgb)
    label = np.ascontiguousarray(label)
    if coarse_p > 0 and rng.random() < coarse_p:
        rgb = coarsen(rgb, float(rng.uniform(1.25, max(1.25, coarse_max))))
    x = rgb.astype(np.float32)
    # brightness / contrast / gamma
    x = x * rng.uniform(*_widen(0.7, 1.3, color))
    mean = x.mean()
    x = (x - mean) * rng.uniform(*_widen(0.75, 1.25, color)) + mean
    x = np.clip(x, 0, 255)
    if rng.random() < 0.5:
        lo, hi = (0.75, 1.33) if color == 1 else (0.75**color, 1.33**color)  # log-symmetric
        x = 255.0 * (x / 255.0) ** rng.uniform(lo, hi)
    # per-channel gain (white balance) and saturation
    x = x * rng.uniform(*_widen(0.9, 1.1, color), size=3).astype(np.float32)
    grey = x.mean(axis=2, keepdims=True)
    x = grey + (x - grey) * rng.uniform(*_widen(0.7, 1.3, color))
    x = np.clip(x, 0, 255).astype(np.uint8)
    if camera_p > 0 and rng.random() < camera_p:
        x = camera_effects(x, rng)
    if rng.random() < 0.3:  # small hue shift (flower colour is a cue: keep it small)
        hsv = cv2.cvtColor(x, cv2.COLOR_RGB2HSV)
        hsv[..., 0] = ((hsv[..., 0].astype(np.int16) + int(rng.integers(-5, 6))) % 180).astype(np.uint8)
        x = cv2.cvtColor(hsv, cv2.COLOR_HSV2RGB)
    if rng.random() < 0.3:
        x = cv2.GaussianBlur(x, (0, 0), float(rng.uniform(0.4, 1.3)))
    if rng.random() < 0.2:
        noise = rng.normal(0, rng.uniform(2, 8), x.shape).astype(np.float32)
        x = np.clip(x.astype(np.float32) + noise, 0, 255).astype(np.uint8)
    if rng.random() < 0.3:
        ok, buf = cv2.imencode(".jpg", x[..., ::-1], [cv2.IMWRITE_JPEG_QUALITY, int(rng.integers(35, 95))])
        if ok:
            x = np.ascontiguousarray(cv2.imdecode(buf, cv2.IMREAD_COLOR)[..., ::-1])
    return x, label


def camera_effects(rgb: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """What other cameras, photogrammetry software and weather do to a uint8 RGB tile, each effect
    with its own chance (labels stay valid: nothing moves by more than 1.5 px).

    - vignetting: a radial gain falling by 5-30 % towards a corner of the photo the tile was cut from;
    - lateral chromatic aberration: red and blue shifted by up to 1.5 px in opposite directions;
    - sharpening: an unsharp mask (amount 0.3-1.5, radius 0.8-2 px) with its bright/dark halos;
    - haze: a blend of 5-30 % towards a bluish-grey airlight;
    - a seamline: on one side of a random straight line the exposure and white balance differ, as
      where an orthomosaic switches from one photo to the next.

    >>> x = np.full((64, 64, 3), 120, np.uint8)
    >>> y = camera_effects(x, np.random.default_rng(0))
    >>> y.shape, y.dtype
    ((64, 64, 3), dtype('uint8'))
    """
    h, w = rgb.shape[:2]
    x = rgb.astype(np.float32)
    if rng.random() < 0.5:  # vignetting: the tile is somewhere inside a photo
        cy, cx = rng.uniform(-1.5, 1.5, 2) * (h, w)
        yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
        r2 = ((yy - cy) ** 2 + (xx - cx) ** 2) / float((2.5 * max(h, w)) ** 2)
        x *= (1 - rng.uniform(0.05, 0.3) * np.minimum(r2, 1.0))[..., None]
    if rng.random() < 0.5:  # lateral chromatic aberration
        dx, dy = rng.uniform(-1.5, 1.5, 2)
        for ch, sign in ((0, 1.0), (2, -1.0)):
            m = np.float32([[1, 0, sign * dx], [0, 1, sign * dy]])
            x[..., ch] = cv2.warpAffine(x[..., ch], m, (w, h), flags=cv2.INTER_LINEAR,
                                        borderMode=cv2.BORDER_REFLECT)
    if rng.random() < 0.5:  # in-camera sharpening
        blur = cv2.GaussianBlur(x, (0, 0), float(rng.uniform(0.8, 2.0)))
        x += float(rng.uniform(0.3, 1.5)) * (x - blur)
    if rng.random() < 0.3:  # haze
        air = np.float32([200, 205, 215]) * rng.uniform(0.85, 1.15)
        a = float(rng.uniform(0.05, 0.3))
        x = x * (1 - a) + air * a
    if rng.random() < 0.3:  # seamline between two photos
        ang = rng.uniform(0, np.pi)
        yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
        side = (xx - rng.uniform(0, w)) * np.cos(ang) + (yy - rng.uniform(0, h)) * np.sin(ang) > 0
        x[side] *= rng.uniform(0.8, 1.25) * rng.uniform(0.95, 1.05, 3).astype(np.float32)
    return np.clip(x, 0, 255).astype(np.uint8)


def _widen(lo: float, hi: float, s: float) -> tuple[float, float]:
    """The range (lo, hi) around 1 scaled by ``s`` (unchanged for s = 1), never below 0.05."""
    if s == 1:
        return lo, hi
    return max(0.05, 1 + (lo - 1) * s), 1 + (hi - 1) * s
