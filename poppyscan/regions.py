"""Per-region features of a thresholded probability map: what a second look at each candidate plot sees.

A *candidate* is a connected region of pixels at or above the bundle's threshold (after the light
morphology ``detect`` applies). The plot decision so far looks only at its mean probability
(:func:`poppyscan.bundle.plot_decision`). :func:`region_features` measures more of each region: its
size and shape, how its probability is distributed, the probability around it, and the colour and
texture of the image inside it against a ring of ground around it. All at the grid the model ran at.
"""

from __future__ import annotations

import cv2
import numpy as np

RING_M = 0.6
"""Width (m) of the ring of ground around a region that its inside is compared with."""

PROB_FEATURES = [
    "log_area_m2", "prob_mean", "prob_max", "prob_p10", "prob_p50", "prob_p90", "frac_90", "frac_97",
    "ring_prob_mean", "ring_prob_max", "compactness", "solidity", "extent", "aspect", "gsd_cm",
]
IMAGE_FEATURES = [
    "in_r", "in_g", "in_b", "in_sat", "in_exg", "in_std", "in_lap",
    "d_r", "d_g", "d_b", "d_sat", "d_exg", "d_std", "d_lap",
]
FEATURES = PROB_FEATURES + IMAGE_FEATURES


def percent_steps(prob: np.ndarray) -> np.ndarray:
    """Probabilities rounded to the percent steps of ``detect``'s uint8 raster (which it thresholds and
    measures), so the whole-scene engines see the values detect sees.

    >>> percent_steps(np.array([0.004, 0.516, 0.996])).tolist()
    [0.0, 0.52, 1.0]
    """
    return np.round(prob * 100) / 100


def threshold_pct(threshold: float) -> int:
    """The percent step ``detect`` thresholds its uint8 probability raster at: a pixel is poppy when its
    value (0-100) is at least this.

    >>> threshold_pct(0.5), threshold_pct(0.345), threshold_pct(0.001)
    (50, 34, 1)
    """
    return min(max(round(100 * threshold), 1), 100)


def candidate_labels(prob: np.ndarray, valid: np.ndarray, threshold: float, morph_radius_px: int = 1):
    """Connected regions (4-connectivity) of the pixels whose probability, in ``detect``'s percent steps,
    reaches ``threshold`` (:func:`threshold_pct`), inside ``valid``, after an opening and a closing of
    ``morph_radius_px``: as ``detect`` forms them. Returns ``(n, labels, stats)`` as
    :func:`cv2.connectedComponentsWithStats` (label 0 is the background)."""
    v = valid.astype(np.uint8)
    mask = (np.rint(np.asarray(prob, np.float64) * 100) >= threshold_pct(threshold)).astype(np.uint8) & v
    if morph_radius_px > 0:
        k = cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (2 * morph_radius_px + 1,) * 2)
        mask = cv2.morphologyEx(cv2.morphologyEx(mask, cv2.MORPH_OPEN, k), cv2.MORPH_CLOSE, k) & v
    n, labels, stats, _ = cv2.connectedComponentsWithStats(mask, connectivity=4)
    return n, labels, stats


def _colour(rgb: np.ndarray) -> dict[str, np.ndarray]:
    """Per-pixel colour measures of an ``(N, 3)`` uint8 array (values 0-1)."""
    f = rgb.astype(np.float32) / 255.0
    mx, mn = f.max(axis=1), f.min(axis=1)
    sat = np.where(mx > 0, (mx - mn) / np.maximum(mx, 1e-6), 0.0)
    return {"r": f[:, 0], "g": f[:, 1], "b": f[:, 2], "sat": sat, "exg": 2 * f[:, 1] - f[:, 0] - f[:, 2]}


def region_features(
    prob: np.ndarray, valid: np.ndarray, rgb: np.ndarray | None, labels: np.ndarray, stats: np.ndarray,
    gsd_m: float, ids: list[int] | None = None,
) -> dict[str, np.ndarray]:
    """Features (:data:`FEATURES`; :data:`PROB_FEATURES` only when ``rgb`` is None) of the regions
    ``ids`` (default all: ``1..n-1``) of ``labels`` with ``stats`` as :func:`candidate_labels` returns
    them; ``prob`` float in 0-1, ``valid`` bool, ``rgb`` uint8 ``(H, W, 3)``, ``gsd_m`` the grid's
    pixel size."""
    ids = list(range(1, len(stats))) if ids is None else list(ids)
    names = FEATURES if rgb is not None else PROB_FEATURES
    out = {k: np.zeros(len(ids), np.float64) for k in names}
    ring_px = max(2, round(RING_M / gsd_m))
    kr = cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (2 * ring_px + 1,) * 2)
    k1 = cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (3, 3))
    gray = lap = None
    if rgb is not None:
        gray = cv2.cvtColor(rgb, cv2.COLOR_RGB2GRAY).astype(np.float32) / 255.0
        lap = np.abs(cv2.Laplacian(gray, cv2.CV_32F, ksize=3))
    h, w = labels.shape
    for j, i in enumerate(ids):
        x, y, bw, bh, area = (int(v) for v in stats[i])
        x0, y0 = max(0, x - ring_px - 1), max(0, y - ring_px - 1)
        x1, y1 = min(w, x + bw + ring_px + 1), min(h, y + bh + ring_px + 1)
        sl = (slice(y0, y1), slice(x0, x1))
        m = (labels[sl] == i).astype(np.uint8)
        near = cv2.dilate(m, k1)
        ring = (cv2.dilate(m, kr) > 0) & (near == 0) & valid[sl]
        inside = m > 0
        p = prob[sl][inside]
        out["log_area_m2"][j] = np.log(area * gsd_m * gsd_m)
        out["prob_mean"][j] = p.mean()
        out["prob_max"][j] = p.max()
        q = np.quantile(p, [0.1, 0.5, 0.9])
        out["prob_p10"][j], out["prob_p50"][j], out["prob_p90"][j] = q
        out["frac_90"][j] = (p >= 0.9).mean()
        out["frac_97"][j] = (p >= 0.97).mean()
        pr = prob[sl][ring]
        out["ring_prob_mean"][j] = pr.mean() if pr.size else 0.0
        out["ring_prob_max"][j] = pr.max() if pr.size else 0.0
        contours, _ = cv2.findContours(m, cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_SIMPLE)
        c = max(contours, key=cv2.contourArea)
        perim = max(cv2.arcLength(c, True), 1.0)
        out["compactness"][j] = min(1.0, 4 * np.pi * area / perim**2)
        hull = max(cv2.contourArea(cv2.convexHull(c)), 1.0)
        out["solidity"][j] = min(1.0, area / hull)
        out["extent"][j] = area / (bw * bh)
        (_, _), (rw, rh), _ = cv2.minAreaRect(c)
        out["aspect"][j] = max(rw, rh, 1.0) / max(min(rw, rh), 1.0)
        # the grid's GSD to 1 mm: detect passes the exact run GSD, the whole-scene engine one a rounded
        # grid size makes differ in the 4th digit (trees fitted on that noise would tell scenes apart)
        out["gsd_cm"][j] = round(gsd_m * 100, 1)
        if rgb is not None:
            cin = _colour(rgb[sl][inside])
            cring = _colour(rgb[sl][ring]) if ring.any() else cin
            g_in, g_ring = gray[sl][inside], gray[sl][ring] if ring.any() else gray[sl][inside]
            l_in, l_ring = lap[sl][inside], lap[sl][ring] if ring.any() else lap[sl][inside]
            for k in ("r", "g", "b", "sat", "exg"):
                a, b = float(cin[k].mean()), float(cring[k].mean())
                out[f"in_{k}"][j] = a
                out[f"d_{k}"][j] = a - b
            out["in_std"][j] = g_in.std()
            out["d_std"][j] = g_in.std() - g_ring.std()
            out["in_lap"][j] = l_in.mean()
            out["d_lap"][j] = l_in.mean() - l_ring.mean()
    return out
