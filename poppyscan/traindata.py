"""Training tiles: drawn from labelled scenes at the model GSD, with weights for which plots they centre on.

Tiles are read on demand with rasterio windowed reads resampled to the model GSD (times a random
scale factor, which is the GSD/scale augmentation), so a mosaic of any size costs only its open file
handle. Label polygons are rasterised into each tile; pixels outside the valid-data mask or the raster
get the ignore label :data:`IGNORE`. Mined negatives (:data:`~poppyscan.scenes.MINED_LAYER`) get their
own share of tiles (``mined_fraction`` of :class:`TileSampler`).

The training data as a whole: scenes (finding them, opening them, reading their labels) live in
:mod:`poppyscan.scenes`, the augmentation of drawn tiles in :mod:`poppyscan.augment`; their public names
are importable from here too.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import rasterio
from rasterio.enums import Resampling
from rasterio.features import rasterize
from rasterio.windows import Window

from .augment import augment, camera_effects, coarsen
from .scenes import (
    LABEL_COLUMNS,
    LABEL_NAMES,
    MINED_LAYER,
    MOSAIC_NAMES,
    NEGATIVE_LAYERS,
    NEGATIVE_VALUES,
    POSITIVE_VALUES,
    Scene,
    find_scenes,
    open_scene,
    pixel_size_m,
    positive_rows,
    read_labels,
    read_mined,
    scene_name,
)

__all__ = [
    # tiles and sampling (this module)
    "IGNORE",
    "TileSampler",
    "matches",
    "plot_weight",
    "polygon_pixel_centres",
    "positive_chances",
    "read_tile",
    # scenes (poppyscan.scenes)
    "LABEL_COLUMNS",
    "LABEL_NAMES",
    "MINED_LAYER",
    "MOSAIC_NAMES",
    "NEGATIVE_LAYERS",
    "NEGATIVE_VALUES",
    "POSITIVE_VALUES",
    "Scene",
    "find_scenes",
    "open_scene",
    "pixel_size_m",
    "positive_rows",
    "read_labels",
    "read_mined",
    "scene_name",
    # augmentation (poppyscan.augment)
    "augment",
    "camera_effects",
    "coarsen",
]

IGNORE = 255


def read_tile(scene: Scene, cx: float, cy: float, size: int, gsd: float) -> tuple[np.ndarray, np.ndarray]:
    """Read a ``size`` x ``size`` tile at ``gsd`` m/px centred on raster pixel (cx, cy).

    Returns ``(rgb uint8 (size, size, 3), label uint8 (size, size))`` with labels 0 background,
    1 poppy, :data:`IGNORE` for invalid/outside/ignored pixels.
    """
    ds = scene.ds
    span = size * gsd / scene.gsd_m  # source pixels covered
    step = span / size
    col0, row0 = cx - span / 2, cy - span / 2
    window = Window(col0, row0, span, span)
    # output pixels that fall inside the raster; read exactly those, aligned to the tile grid
    i0, j0 = max(0, math.ceil(-col0 / step)), max(0, math.ceil(-row0 / step))
    i1 = min(size, math.floor((ds.width - col0) / step))
    j1 = min(size, math.floor((ds.height - row0) / step))
    rgb = np.zeros((3, size, size), np.uint8)
    valid = np.zeros((size, size), bool)
    if i1 > i0 and j1 > j0:
        sub = Window(col0 + i0 * step, row0 + j0 * step, (i1 - i0) * step, (j1 - j0) * step)
        shape = (j1 - j0, i1 - i0)
        rgb[:, j0:j1, i0:i1] = ds.read(
            list(scene._rgb), window=sub, out_shape=(3, *shape), resampling=Resampling.bilinear
        )
        valid[j0:j1, i0:i1] = ds.read_masks(1, window=sub, out_shape=shape, resampling=Resampling.nearest) > 0
    transform = ds.window_transform(window) @ rasterio.Affine.scale(span / size)
    label = np.zeros((size, size), np.uint8)
    shapes = [(g, 1) for g in _near(scene.positives, transform, size)]
    shapes += [(g, IGNORE) for g in _near(scene.ignored, transform, size)]
    if shapes:
        rasterize(shapes, out=label, transform=transform)
    label[~valid] = IGNORE
    return np.ascontiguousarray(rgb.transpose(1, 2, 0)), label


def _near(geoms: list, transform, size: int) -> list:  # noqa: ANN001
    if not geoms:
        return []
    x0, y0 = transform @ (0, 0)
    x1, y1 = transform @ (size, size)
    minx, maxx, miny, maxy = min(x0, x1), max(x0, x1), min(y0, y1), max(y0, y1)
    out = []
    for g in geoms:
        b = g.bounds
        if b[0] <= maxx and b[2] >= minx and b[1] <= maxy and b[3] >= miny:
            out.append(g)
    return out


def _as_text(v: Any) -> str | None:
    """A label value as comparable text: None for missing (None/NaN), ``2024`` for ``2024.0``."""
    if v is None or (isinstance(v, float) and v != v):
        return None
    if isinstance(v, float) and v.is_integer():
        v = int(v)
    return str(v).strip().lower()


def matches(attrs: dict, column: str, value: str) -> bool:
    """Whether a plot's label row has ``column == value`` (text, case-insensitive; missing never matches).

    >>> matches({"stage": " Rosette"}, "stage", "rosette"), matches({"year": 2024.0}, "year", "2024")
    (True, True)
    >>> matches({"stage": float("nan")}, "stage", "nan")
    False
    """
    return _as_text(attrs.get(column)) == value


def plot_weight(attrs: dict, weights: dict[tuple[str, str], float]) -> float:
    """The sampling weight of one plot: the product of the weights its attributes match.

    >>> plot_weight({"stage": "Rosette", "setting": "edge"}, {("stage", "rosette"): 3.0})
    3.0
    >>> plot_weight({"stage": None}, {("stage", "rosette"): 3.0})
    1.0
    """
    w = 1.0
    for (column, value), f in weights.items():
        if matches(attrs, column, value):
            w *= f
    return w


def positive_chances(scenes: list[Scene], weights: dict[tuple[str, str], float]
                     ) -> tuple[list[tuple[int, int]], list[dict], np.ndarray, np.ndarray]:
    """``(pairs, attrs, w, base)`` over every plot of ``scenes``: its (scene, plot) indices, its label
    row's attributes, its weight and its unweighted chance of centring a positive tile (a scene with
    plots, uniformly, then one of its plots)."""
    n_scenes = sum(1 for s in scenes if s.positives)
    pairs, attrs, base = [], [], []
    for si, scene in enumerate(scenes):
        n, rows = len(scene.positives), scene.positive_attrs
        for bi in range(n):
            pairs.append((si, bi))
            attrs.append(rows[bi] if bi < len(rows) else {})
            base.append(1.0 / (n_scenes * n))
    w = np.asarray([plot_weight(a, weights) for a in attrs], np.float64)
    return pairs, attrs, w, np.asarray(base, np.float64)


def _weighted_picks(scenes: list[Scene], weights: dict[tuple[str, str], float]
                    ) -> tuple[np.ndarray, np.ndarray] | None:
    """``(pairs, p)``: every (scene, plot) index pair and the chance a positive tile centres on it (the
    unweighted chance times the plot's weight, renormalised); None when no plot has a weight other than 1
    (the sampler then draws as it always did)."""
    if not weights:
        return None
    pairs, _, w, base = positive_chances(scenes, weights)
    if (w == 1.0).all():
        return None
    p = w * base
    return np.asarray(pairs, np.intp), p / p.sum()


def polygon_pixel_centres(scene: Scene, geoms: list) -> np.ndarray:
    """Centres (col, row) in raster pixels of polygons' bounding boxes, with their half-extents."""
    if not geoms:
        return np.zeros((0, 4))
    inv = ~scene.ds.transform
    rows = []
    for g in geoms:
        minx, miny, maxx, maxy = g.bounds
        c0, r0 = inv @ (minx, maxy)
        c1, r1 = inv @ (maxx, miny)
        rows.append(((c0 + c1) / 2, (r0 + r1) / 2, abs(c1 - c0) / 2, abs(r1 - r0) / 2))
    return np.asarray(rows, dtype=np.float64)


class TileSampler:
    """Draws training tiles from scenes: positive-centred, hard-negative-centred or random.

    Parameters
    ----------
    scenes
        Opened scenes.
    size, gsd
        Tile size in px at the model GSD (m/px).
    positive_fraction
        Share of tiles centred near a poppy polygon (when any scene has one).
    hard_negative_fraction
        Share of the remaining tiles centred on a hard-negative polygon (when any scene has one).
    scale_jitter
        Relative GSD jitter; each tile is read at ``gsd * U(1 - j, 1 + j)``.
    mined_fraction
        Share of the non-positive tiles centred on a mined false-plot place (``Scene.mined``), drawn
        before the hard-negative share (when any scene has one). 0 (the default) draws exactly the
        random numbers the sampler always did.
    positive_weights
        ``{(column, value): weight}`` (:func:`~poppyscan.config.parse_positive_weights`): a plot whose
        label row has ``column == value`` is drawn ``weight`` times as often as otherwise (weights of
        several matching columns multiply). Without it (or when no plot matches) a positive tile picks
        a scene, then one of its plots, uniformly, drawing the same random numbers as always.
    """

    def __init__(
        self,
        scenes: list[Scene],
        size: int,
        gsd: float,
        *,
        positive_fraction: float = 0.6,
        hard_negative_fraction: float = 0.3,
        scale_jitter: float = 0.25,
        mined_fraction: float = 0.0,
        positive_weights: dict[tuple[str, str], float] | None = None,
    ) -> None:
        self.scenes = scenes
        self.size = size
        self.gsd = gsd
        self.positive_fraction = positive_fraction
        self.hard_negative_fraction = hard_negative_fraction
        self.scale_jitter = scale_jitter
        self.mined_fraction = mined_fraction
        self._pos = [polygon_pixel_centres(s, s.positives) for s in scenes]
        self._neg = [polygon_pixel_centres(s, s.negatives) for s in scenes]
        self._pos_scenes = [i for i, p in enumerate(self._pos) if len(p)]
        self._neg_scenes = [i for i, p in enumerate(self._neg) if len(p)]
        self._mined = [polygon_pixel_centres(s, s.mined) for s in scenes]
        self._mined_scenes = [i for i, p in enumerate(self._mined) if len(p)]
        self._pos_pick = _weighted_picks(scenes, positive_weights or {})

    def sample(self, rng: np.random.Generator, *, jitter: bool = True) -> tuple[np.ndarray, np.ndarray, str]:
        """Return ``(rgb, label, kind)``, kind ``positive``, ``mined``, ``hard_negative`` or ``random``."""
        gsd = self.gsd * (rng.uniform(1 - self.scale_jitter, 1 + self.scale_jitter) if jitter else 1.0)
        r = rng.random()
        if self._pos_scenes and r < self.positive_fraction:
            if self._pos_pick is not None:
                return (*self._around(rng, self._pos_scenes, self._pos, gsd, self._pos_pick), "positive")
            return (*self._around(rng, self._pos_scenes, self._pos, gsd), "positive")
        if self._mined_scenes and self.mined_fraction > 0 and rng.random() < self.mined_fraction:
            return (*self._around(rng, self._mined_scenes, self._mined, gsd), "mined")
        r2 = rng.random()
        if self._neg_scenes and r2 < self.hard_negative_fraction:
            return (*self._around(rng, self._neg_scenes, self._neg, gsd), "hard_negative")
        return (*self._random(rng, gsd), "random")

    def _around(self, rng: np.random.Generator, which: list[int], boxes: list[np.ndarray], gsd: float,  # noqa: ANN202
                pick: tuple[np.ndarray, np.ndarray] | None = None):
        if pick is None:
            si = which[int(rng.integers(len(which)))]
            cx, cy, hx, hy = boxes[si][int(rng.integers(len(boxes[si])))]
        else:  # (scene index, box index) pairs and their probabilities
            si, bi = pick[0][int(rng.choice(len(pick[1]), p=pick[1]))]
            cx, cy, hx, hy = boxes[si][bi]
        scene = self.scenes[si]
        span = self.size * gsd / scene.gsd_m
        # a point of the object's box, shifted so the object lands anywhere in the tile's inner 70 %
        px = cx + rng.uniform(-hx, hx) + rng.uniform(-0.35, 0.35) * span
        py = cy + rng.uniform(-hy, hy) + rng.uniform(-0.35, 0.35) * span
        return read_tile(scene, px, py, self.size, gsd)

    def _random(self, rng: np.random.Generator, gsd: float):  # noqa: ANN202
        weights = np.array([s.width * s.height * s.gsd_m**2 for s in self.scenes], dtype=np.float64)
        best = None
        for _ in range(4):  # retry tiles that are mostly nodata
            scene = self.scenes[int(rng.choice(len(self.scenes), p=weights / weights.sum()))]
            rgb, label = read_tile(
                scene, rng.uniform(0, scene.width), rng.uniform(0, scene.height), self.size, gsd
            )
            frac = float((label != IGNORE).mean())
            if best is None or frac > best[2]:
                best = (rgb, label, frac)
            if frac > 0.5:
                break
        return best[0], best[1]
