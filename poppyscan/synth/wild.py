"""Wild land without poppy: meadow, shrubland, wildflowers, conifers, dead trees, fallen logs and rocks.

The farmland scenes teach the model what poppy is *not* among crops and villages. Survey flights also
cross hillside pasture, scrub and forest edges, and a first run on real airborne imagery of such land
(``scripts/eval_real_negatives.py``: NEON crops at 10 cm/px) found most false alarms in grey-green
sagebrush meadow speckled with bright spots and on white dead trees. These scenes draw that kind of land
so the model sees it as background. They never hold poppy (no planting sites are offered).

Grey-green shrub foliage overlaps the glaucous poppy colours on purpose; what differs is structure:
irregular clumps of mixed sizes instead of evenly spaced plants, and no 10 cm flowers (wildflowers are
2-5 cm and scattered).
"""

from __future__ import annotations

import numpy as np

from .layout import Layout, tree
from .materials import Canvas, _mix, _shade, jitter_colour, rgb, soil
from .noise import blob_polygon, fbm, poisson_points, rotated_rect
from .plants import _flowers, _plants

MEADOW = [rgb(96, 124, 62), rgb(120, 132, 70), rgb(146, 146, 96), rgb(128, 136, 110), rgb(110, 118, 84)]
SHRUB = [rgb(136, 146, 124), rgb(120, 134, 114), rgb(150, 152, 130), rgb(70, 92, 56), rgb(98, 112, 80),
         rgb(112, 140, 126)]
WILDFLOWERS = [rgb(238, 214, 60), rgb(240, 238, 228), rgb(170, 120, 200), rgb(230, 150, 185),
               rgb(120, 130, 210), rgb(225, 120, 60)]
DEAD = [rgb(200, 198, 190), rgb(176, 170, 160), rgb(214, 210, 204), rgb(150, 140, 128)]


def meadow(cv: Canvas, h, w, x0, y0, p) -> np.ndarray:
    """Grass with clumped shrubs, scattered wildflowers and bare patches. ``p``: colour, shrubs (cover
    0-0.6), flowers (per m²)."""
    rng = cv.rng
    c = p["colour"]
    n = fbm(rng, h, w, cv.px(rng.uniform(1, 6)), 4) * 0.16 + fbm(rng, h, w, cv.px(0.06), 2) * 0.12
    out = _shade(c, n, 1.0)
    bare = np.clip(fbm(rng, h, w, cv.px(rng.uniform(1, 4)), 3) - rng.uniform(0.5, 1.4), 0, 1)
    out = _mix(out, soil(cv, h, w, x0, y0, {"furrows": False}), bare)
    shrubs = p.get("shrubs", 0.0)
    if shrubs > 0:
        clump = fbm(rng, h, w, cv.px(rng.uniform(3, 12)), 3)
        for _ in range(int(rng.integers(1, 3))):  # one or two shrub species, each its own size and colour
            r_m = rng.uniform(0.2, 0.8)
            count = shrubs * h * w / (np.pi * cv.px(r_m) ** 2) * rng.uniform(0.5, 1.2)
            xs, ys = poisson_points(rng, h, w, count)
            if len(xs):
                at = clump[ys.astype(int).clip(0, h - 1), xs.astype(int).clip(0, w - 1)]
                keep = at > rng.uniform(-0.4, 0.3)
                colour = jitter_colour(rng, SHRUB[rng.integers(len(SHRUB))], 0.08)
                out = _plants(cv, out, xs[keep], ys[keep], cv.px(r_m), colour, shade=(0.65, 1.2), fine=0.3)
    flowers = p.get("flowers", 0.0)
    if flowers > 0:
        patch = np.clip(fbm(rng, h, w, cv.px(rng.uniform(2, 8)), 3) + 0.6, 0, 1.5)
        xs, ys = poisson_points(rng, h, w, flowers * h * w / cv.ppm**2)
        if len(xs):
            keep = rng.random(len(xs)) < patch[ys.astype(int).clip(0, h - 1), xs.astype(int).clip(0, w - 1)]
            k = int(rng.integers(1, 4))
            palette = [WILDFLOWERS[i] for i in rng.choice(len(WILDFLOWERS), k, replace=False)]
            out = _flowers(cv, out, xs[keep], ys[keep], cv.px(rng.uniform(0.01, 0.025)), palette)
    return out


def deadwood(cv: Canvas, h, w, x0, y0, p) -> np.ndarray:
    """Bleached wood or rock: a pale grey with grain."""
    rng = cv.rng
    n = fbm(rng, h, w, cv.px(0.08), 2) * 0.12 + fbm(rng, h, w, cv.px(0.5), 2) * 0.08
    return _shade(p["colour"], n, 1.0)


def wildland(lay: Layout, rng: np.random.Generator) -> None:
    """Plan a wild-land scene over the whole frame: meadow zones, then conifers, dead trees, logs, rocks."""
    ppm = lay.ppm
    frame = lay.frame()
    lay.ground.append((frame, "meadow", _meadow_params(rng)))
    for _ in range(int(rng.integers(0, 4))):  # zones of another meadow (drier, shrubbier, flowery)
        r = rng.uniform(0.15, 0.5) * max(lay.w, lay.h)
        zone = blob_polygon(rng, rng.uniform(0, lay.w), rng.uniform(0, lay.h), r, r * rng.uniform(0.5, 1),
                            rng.uniform(0, np.pi), 0.35, 24).intersection(frame)
        if not zone.is_empty and zone.geom_type == "Polygon":
            lay.ground.append((zone, "meadow", _meadow_params(rng)))
    for _ in range(int(rng.poisson(1.5))):  # fallen logs and rocks: pale, on the ground
        x, y = rng.uniform(0, lay.w), rng.uniform(0, lay.h)
        if rng.random() < 0.6:
            shape = rotated_rect(x, y, rng.uniform(3, 14) * ppm, rng.uniform(0.15, 0.45) * ppm,
                                 rng.uniform(0, np.pi))
        else:
            r = rng.uniform(0.3, 1.5) * ppm
            shape = blob_polygon(rng, x, y, r, r * rng.uniform(0.6, 1), rng.uniform(0, np.pi), 0.25, 12)
        shape = shape.intersection(frame)
        if not shape.is_empty and shape.geom_type == "Polygon":
            colour = jitter_colour(rng, DEAD[rng.integers(len(DEAD))], 0.05)
            lay.ground.append((shape, "deadwood", {"colour": colour}))
    # conifer stands (dark crowns with long shadows) and single dead trees (pale crowns)
    for _ in range(int(rng.poisson(1.2))):
        cx, cy, spread = rng.uniform(0, lay.w), rng.uniform(0, lay.h), rng.uniform(8, 40) * ppm
        for _ in range(int(rng.integers(3, 25))):
            x, y = cx + rng.normal(0, spread), cy + rng.normal(0, spread)
            t = tree(rng, ppm, x, y, rng.uniform(1.5, 6))
            t["params"]["colour"] = jitter_colour(rng, rgb(40, 62, 38), 0.15)
            if frame.contains(t["poly"].centroid):
                lay.elevated.append(t)
    for _ in range(int(rng.poisson(1.0))):
        t = tree(rng, ppm, rng.uniform(0, lay.w), rng.uniform(0, lay.h), rng.uniform(1.5, 5))
        t["params"]["colour"] = jitter_colour(rng, DEAD[rng.integers(len(DEAD))], 0.05)
        t["height"] *= 0.7
        if frame.contains(t["poly"].centroid):
            lay.elevated.append(t)
            lay.confusers.append({"poly": t["poly"], "kind": "dead_tree"})


def _meadow_params(rng: np.random.Generator) -> dict:
    return {
        "colour": jitter_colour(rng, MEADOW[rng.integers(len(MEADOW))], 0.1),
        "shrubs": float(rng.choice([0.0, rng.uniform(0.05, 0.25), rng.uniform(0.25, 0.6)],
                                   p=[0.2, 0.45, 0.35])),
        "flowers": float(rng.choice([0.0, rng.uniform(0.5, 5), rng.uniform(5, 40)], p=[0.3, 0.45, 0.25])),
    }


def wild_layout(rng: np.random.Generator, h: int, w: int, ppm: float) -> Layout:
    lay = Layout(h, w, ppm, float(rng.uniform(0, np.pi)))
    wildland(lay, rng)
    return lay


WILD_TEXTURES = {"meadow": meadow, "deadwood": deadwood}

__all__ = ["WILD_TEXTURES", "deadwood", "meadow", "wild_layout", "wildland"]
