"""Poppy plots and plant confusers (corn poppy, ornamental flowerbeds, lettuce/endive seedlings).

Opium poppy (*Papaver somniferum*): glaucous blue-green foliage with a whitish bloom, plants 0.3-1.5 m,
flowers ~10 cm (red, white, pink, mauve, purple), upright capsules 4-7 cm. Corn poppy (*P. rhoeas*):
bright-green divided leaves, smaller (5-6 cm) scarlet flowers, sparser and weedier. These functions are
texture functions (see :mod:`.materials`) so they compose with :meth:`Canvas.paint`.
"""

from __future__ import annotations

import numpy as np

from .materials import Canvas, _mix, jitter_colour, rgb, soil
from .noise import fbm, lattice, poisson_points, soften, splat

FLOWER_COLOURS = {
    "red": [rgb(205, 32, 38), rgb(220, 50, 45), rgb(185, 25, 40)],
    "white": [rgb(240, 238, 232), rgb(232, 230, 235)],
    "pink": [rgb(238, 150, 180), rgb(228, 120, 160), rgb(245, 185, 200)],
    "mauve": [rgb(192, 132, 188), rgb(175, 120, 180)],
    "purple": [rgb(128, 55, 125), rgb(110, 45, 120), rgb(150, 70, 150)],
}
POPPY_COLOUR_NAMES = ["red", "white", "pink", "mauve", "purple", "mixed"]

GLAUCOUS = [
    rgb(108, 142, 128),
    rgb(98, 134, 120),
    rgb(120, 150, 138),
    rgb(112, 140, 114),
    rgb(126, 152, 140),
    rgb(94, 126, 116),
    rgb(132, 150, 134),
    rgb(104, 138, 132),
]

ORNAMENTAL = [
    rgb(242, 200, 40),
    rgb(240, 140, 30),
    rgb(212, 32, 42),
    rgb(236, 130, 175),
    rgb(150, 60, 160),
    rgb(238, 236, 230),
    rgb(215, 40, 120),
    rgb(250, 230, 120),
    rgb(90, 80, 190),
]


def _plants(
    cv: Canvas,
    base: np.ndarray,
    xs,
    ys,
    radius_px: float,
    colour: np.ndarray,
    shade=(0.8, 1.15),
    fine: float = 0.12,
) -> np.ndarray:
    """Composite disc-shaped plant canopies (per-plant brightness) over ``base``."""
    h, w = base.shape[:2]
    out = base
    if len(xs) == 0:
        return out
    rng = cv.rng
    radii = rng.uniform(0.7, 1.25, len(xs)) * radius_px
    for lo, hi in ((0, 0.85), (0.85, 1.05), (1.05, 2.0)):
        sel = (radii >= lo * radius_px) & (radii < hi * radius_px)
        if not sel.any():
            continue
        r = float(np.median(radii[sel]))
        lab = splat(h, w, xs[sel], ys[sel], r, labels=rng.permutation(int(sel.sum())) + 1)
        m = lab > 0
        if not m.any():
            continue
        s = np.ones(int(lab.max()) + 1, np.float32)
        s[1:] = rng.uniform(*shade, s.size - 1)
        tex = (
            colour[None, None, :]
            * (s[lab.astype(np.intp)] * (1 + fine * fbm(rng, h, w, max(r / 1.5, 1), 2)))[..., None]
        )
        mf = soften(m.astype(np.float32), 0.45 if r >= 1.5 else 0.0)
        if r < 1.0:
            mf *= min(1.0, np.pi * max(r, 0.35) ** 2)
        out = _mix(out, tex, mf)
    return out


def _flowers(
    cv: Canvas,
    base: np.ndarray,
    xs,
    ys,
    radius_px: float,
    palette: list[np.ndarray],
    centre: np.ndarray | None = None,
) -> np.ndarray:
    """Composite flowers (small discs, one colour per flower from ``palette``) over ``base``."""
    h, w = base.shape[:2]
    if len(xs) == 0:
        return base
    rng = cv.rng
    pal = np.stack([jitter_colour(rng, c, 0.05) for c in palette])
    idx = rng.integers(0, len(pal), len(xs))
    lab = splat(h, w, xs, ys, radius_px, labels=(idx + 1).astype(np.float32) + rng.random(len(xs)) * 0.5)
    li = np.floor(lab).astype(np.intp)
    m = li > 0
    if not m.any():
        return base
    tex = np.concatenate([np.zeros((1, 3), np.float32), pal])[li]
    tex *= (1 + 0.08 * fbm(rng, h, w, 1.5, 1))[..., None]
    a = m.astype(np.float32)
    if radius_px < 0.8:
        a *= min(1.0, np.pi * max(radius_px, 0.3) ** 2 + 0.15)
    elif radius_px >= 1.5:
        a = soften(a, 0.4)
    out = _mix(base, tex, a)
    if centre is not None and radius_px >= 2.5:  # dark basal blotch / boss at the flower centre
        c = splat(h, w, xs, ys, radius_px * 0.25)
        out = _mix(out, np.broadcast_to(centre, out.shape), (c > 0).astype(np.float32) * 0.7)
    return out


def _positions(cv: Canvas, h, w, p, spacing_m: float, fill: float):
    rng = cv.rng
    if p.get("rows", rng.random() < 0.55):
        row_m = spacing_m * rng.uniform(1.0, 2.0)
        pts = lattice(rng, h, w, p.get("angle", 0.0), cv.px(row_m), cv.px(spacing_m), fill, 0.3)
        if pts is not None:
            return pts
    return poisson_points(rng, h, w, fill * h * w / (cv.px(spacing_m) ** 2))


def poppy(cv: Canvas, h, w, x0, y0, p) -> np.ndarray:
    """Opium poppy plot texture. ``p``: stage, colour (flower colour name), base ("soil"|"existing")."""
    rng = cv.rng
    stage = p.get("stage", "flowering")
    existing = cv.img[y0 : y0 + h, x0 : x0 + w].copy()
    if p.get("base") in ("existing", "host"):
        base = existing
    else:
        base = soil(cv, h, w, x0, y0, {"angle": p.get("angle", 0.0), "furrows": rng.random() < 0.4})
        base *= rng.uniform(0.8, 1.0)
    leaf = jitter_colour(rng, GLAUCOUS[rng.integers(len(GLAUCOUS))], 0.07)
    spacing = rng.uniform(0.13, 0.3)
    if stage == "rosette":
        density, radius = rng.uniform(0.6, 0.97), spacing * rng.uniform(0.3, 0.55)
        leaf = np.clip(leaf * rng.uniform(1.0, 1.1), 0, 1)
    elif stage == "capsule":
        density, radius = rng.uniform(0.6, 1.0), spacing * rng.uniform(0.45, 0.8)
        leaf = np.clip(leaf * 0.75 + rgb(150, 150, 112) * 0.25, 0, 1)
    else:
        density, radius = rng.uniform(0.75, 1.0), spacing * rng.uniform(0.5, 0.9)
    xs, ys = _positions(cv, h, w, p, spacing, density)
    out = base
    # a darker, shadowed under-layer then the lit canopy: gives depth between plants
    if stage != "rosette":
        out = _plants(cv, out, xs, ys, cv.px(radius) * 1.2, leaf * 0.55, (0.85, 1.1), 0.1)
    out = _plants(
        cv,
        out,
        xs + cv.px(radius) * 0.12,
        ys - cv.px(radius) * 0.12,
        cv.px(radius) * 0.9,
        leaf,
        (0.82, 1.15),
        0.2,
    )
    if stage == "rosette" and radius * cv.ppm >= 2.5:  # lighter rosette hearts
        out = _plants(
            cv,
            out,
            xs + cv.px(radius) * 0.12,
            ys - cv.px(radius) * 0.12,
            cv.px(radius) * 0.35,
            np.clip(leaf * 1.12, 0, 1),
            (0.9, 1.1),
            0.05,
        )
    # whitish bloom (wax) sheen, subtle
    bloom = np.clip(fbm(rng, h, w, max(cv.px(0.05), 1), 2) - 0.8, 0, 1) * rng.uniform(0.05, 0.2)
    out = _mix(out, np.broadcast_to(rgb(190, 205, 200), out.shape), bloom)
    area_m2 = h * w / cv.ppm**2
    name = p.get("colour", "red")
    palette = (
        [c for k in FLOWER_COLOURS for c in FLOWER_COLOURS[k]] if name == "mixed" else FLOWER_COLOURS[name]
    )
    if stage == "flowering":
        n = area_m2 * rng.uniform(8, 60) * density
        fx, fy = _flower_near(rng, xs, ys, n, cv.px(radius))
        out = _flowers(
            cv,
            out,
            fx,
            fy,
            cv.px(rng.uniform(0.035, 0.055)),
            palette,
            centre=rgb(60, 30, 40) if name != "white" else rgb(120, 110, 60),
        )
    elif stage == "capsule":
        n = area_m2 * rng.uniform(10, 45) * density
        fx, fy = _flower_near(rng, xs, ys, n, cv.px(radius))
        out = _flowers(
            cv, out, fx, fy, cv.px(rng.uniform(0.022, 0.035)), [rgb(172, 186, 158), rgb(156, 170, 140)]
        )
        fx, fy = _flower_near(rng, xs, ys, n * rng.uniform(0, 0.15), cv.px(radius))
        out = _flowers(cv, out, fx, fy, cv.px(0.035), palette)
    elif rng.random() < 0.3:  # a few buds / early flowers
        fx, fy = _flower_near(rng, xs, ys, area_m2 * rng.uniform(0.2, 2), cv.px(radius))
        out = _flowers(cv, out, fx, fy, cv.px(0.03), palette)
    if (
        p.get("base") == "existing"
    ):  # inter-cropped: alternate poppy and crop rows, or poppy clumps in the crop
        share = p.get("share", 0.6)
        if rng.random() < 0.6:
            xx, yy = cv.coords(h, w, x0, y0)
            a = p.get("angle", 0.0)
            v = -xx * np.sin(a) + yy * np.cos(a)
            period = cv.px(rng.uniform(0.5, 2.0))
            sel = (((v / max(period, 2.0)) % 1.0) < share).astype(np.float32)
        else:
            sel = (fbm(rng, h, w, cv.px(rng.uniform(0.3, 1.0)), 2) > (0.5 - share)).astype(np.float32)
        out = _mix(existing, out, soften(sel, 0.6) * 0.85 + 0.15)
    return out


def _flower_near(rng, xs, ys, n: float, spread: float):
    """Flower positions on top of plants (each flower at a random plant, offset within its crown)."""
    k = int(rng.poisson(max(n, 0)))
    if k == 0 or len(xs) == 0:
        return np.zeros(0), np.zeros(0)
    i = rng.integers(0, len(xs), k)
    return xs[i] + rng.normal(0, spread * 0.5, k), ys[i] + rng.normal(0, spread * 0.5, k)


def corn_poppy(cv: Canvas, h, w, x0, y0, p) -> np.ndarray:
    """Papaver rhoeas: bright-green finely divided foliage, sparse small scarlet flowers; weedy or planted."""
    rng = cv.rng
    base = (
        cv.img[y0 : y0 + h, x0 : x0 + w].copy() if p.get("base") == "existing" else soil(cv, h, w, x0, y0, {})
    )
    leaf = jitter_colour(rng, [rgb(82, 142, 48), rgb(96, 150, 55), rgb(70, 128, 45)][rng.integers(3)], 0.08)
    density = rng.uniform(0.3, 0.95)
    spacing, radius = rng.uniform(0.1, 0.25), rng.uniform(0.05, 0.14)
    xs, ys = poisson_points(rng, h, w, density * h * w / cv.px(spacing) ** 2)
    out = _plants(cv, base, xs, ys, cv.px(radius), leaf, (0.8, 1.2), 0.25)
    ornamental = p.get("ornamental", False)
    n = h * w / cv.ppm**2 * (rng.uniform(30, 120) if ornamental else rng.uniform(5, 40))
    reds = [rgb(222, 40, 30), rgb(230, 70, 35), rgb(200, 25, 35)]
    pal = reds + (
        [rgb(236, 140, 170), rgb(240, 236, 228), rgb(225, 90, 130)]
        if ornamental and rng.random() < 0.6
        else []
    )
    fx, fy = poisson_points(rng, h, w, n)
    return _flowers(cv, out, fx, fy, cv.px(rng.uniform(0.022, 0.032)), pal, centre=rgb(40, 30, 30))


def flowerbed(cv: Canvas, h, w, x0, y0, p) -> np.ndarray:
    """Ornamental bed: blocks/stripes of different species and colours, often with a kerb."""
    rng = cv.rng
    out = soil(cv, h, w, x0, y0, {"colour": rgb(95, 80, 65), "furrows": False})
    k = int(rng.integers(1, 5))
    a = p.get("angle", 0.0) + rng.choice([0, np.pi / 2])
    xx, yy = cv.coords(h, w, x0, y0)
    v = -xx * np.sin(a) + yy * np.cos(a)
    band = np.floor((v - v.min()) / max((v.max() - v.min()) / k, 1)).astype(int) % k
    if rng.random() < 0.4:  # concentric / patchy arrangement instead of stripes
        band = (np.floor((fbm(rng, h, w, cv.px(rng.uniform(0.8, 2)), 2) + 2) * k / 4).astype(int)) % k
    for s in range(k):
        sel = band == s
        leaf = jitter_colour(
            rng, [rgb(60, 110, 45), rgb(90, 130, 60), rgb(110, 140, 90), rgb(70, 95, 60)][rng.integers(4)]
        )
        xs, ys = poisson_points(rng, h, w, h * w / cv.px(rng.uniform(0.08, 0.2)) ** 2)
        layer = _plants(cv, out, xs, ys, cv.px(rng.uniform(0.05, 0.15)), leaf, (0.8, 1.2), 0.2)
        ncol = int(rng.integers(1, 3))
        pal = [ORNAMENTAL[i] for i in rng.choice(len(ORNAMENTAL), ncol, replace=False)]
        fx, fy = poisson_points(rng, h, w, h * w / cv.ppm**2 * rng.uniform(20, 150))
        layer = _flowers(cv, layer, fx, fy, cv.px(rng.uniform(0.015, 0.05)), pal)
        out = np.where(sel[..., None], layer, out)
    return out


def lettuce(cv: Canvas, h, w, x0, y0, p) -> np.ndarray:
    """Lettuce/endive seedlings: yellow-green rosettes in a grid, on soil or plastic mulch."""
    from .materials import row_crop

    rng = cv.rng
    colour = jitter_colour(
        rng,
        [rgb(150, 186, 78), rgb(130, 175, 70), rgb(165, 190, 95), rgb(120, 160, 60)][rng.integers(4)],
        0.06,
    )
    mulch = rng.choice([None, None, "white", "black"])
    return row_crop(
        cv,
        h,
        w,
        x0,
        y0,
        {
            "angle": p.get("angle", 0.0),
            "row_spacing": rng.uniform(0.25, 0.4),
            "plant_spacing": rng.uniform(0.22, 0.35),
            "radius": rng.uniform(0.06, 0.14),
            "colour": colour,
            "mulch": mulch,
            "fill": rng.uniform(0.8, 0.98),
        },
    )
