"""Plants of the alternative renderer, drawn as individual sprites splatted at plant positions.

Every function paints into an (h, w, 3) float image *view* of a region's bounding box, limited by a
float mask of the region; ``ppm`` is pixels per metre and ``shadow`` the (dx, dy) shadow offset in pixels
per metre of height. Looks follow the field facts in docs/DESIGN: opium poppy has glaucous blue-green
unlobed leaves with a white bloom, 8-12 cm flowers (red, pink, white, mauve, purple) with a dark basal
blotch, and upright pale capsules 4-7 cm across.
"""

from __future__ import annotations

import numpy as np

from .prims import composite, ellipse_kernel, jitter, lattice_noise, petals_kernel, rgb, splat

POPPY_COLOURS = {
    "red": rgb(200, 30, 38),
    "pink": rgb(232, 138, 168),
    "white": rgb(240, 238, 228),
    "mauve": rgb(182, 118, 168),
    "purple": rgb(118, 44, 112),
}
GLAUCOUS = rgb(120, 148, 128)
BLOTCH = rgb(48, 22, 38)


def points(
    rng: np.random.Generator,
    m: np.ndarray,
    ppm: float,
    density: float,
    rows: tuple[float, float] | None = None,
    angle: float = 0.0,
    cap: int = 300_000,
):
    """Plant centres inside mask ``m``: random at ``density`` per m², or in rows ``(row_m, step_m)``."""
    h, w = m.shape
    if rows is None:
        n = int(min(cap, rng.poisson(max(density * h * w / ppm**2, 0.0))))
        xs, ys = rng.uniform(0, w, n), rng.uniform(0, h, n)
    else:
        row, step = rows[0] * ppm, rows[1] * ppm
        diag = np.hypot(h, w)
        vs = np.arange(-diag / 2, diag / 2, max(row, 0.5))
        us = np.arange(-diag / 2, diag / 2, max(step, 0.5))
        if len(vs) * len(us) > cap:
            us = us[:: int(np.ceil(len(vs) * len(us) / cap))]
        uu, vv = np.meshgrid(us, vs)
        uu = uu + rng.normal(0, 0.15 * step, uu.shape)
        vv = vv + rng.normal(0, 0.08 * row, vv.shape)
        ca, sa = np.cos(angle), np.sin(angle)
        xs = (w / 2 + uu * ca - vv * sa).ravel()
        ys = (h / 2 + uu * sa + vv * ca).ravel()
        if rng.random() < 0.9:  # gaps where seeds failed
            keep = rng.random(len(xs)) < rng.uniform(0.8, 0.98)
            xs, ys = xs[keep], ys[keep]
    ix, iy = np.clip(xs.astype(int), 0, w - 1), np.clip(ys.astype(int), 0, h - 1)
    inside = (xs >= 0) & (ys >= 0) & (xs < w) & (ys < h) & (m[iy, ix] > 0.5)
    return xs[inside], ys[inside]


def rosette_kernel(rng: np.random.Generator, leaf_len: float, leaf_w: float, n_leaves: int) -> np.ndarray:
    """Leaves radiating from a centre (lengths in pixels)."""
    r = leaf_len + 2
    n = int(np.ceil(r)) * 2 + 1
    out = np.zeros((n, n), np.float32)
    a0 = rng.uniform(0, 2 * np.pi)
    for i in range(n_leaves):
        a = a0 + 2 * np.pi * i / n_leaves + rng.normal(0, 0.25)
        ln = leaf_len * rng.uniform(0.7, 1.0)
        k = ellipse_kernel(ln / 2, max(leaf_w / 2, 0.3), a)
        kh = k.shape[0]
        cx, cy = n // 2 + np.cos(a) * ln / 2, n // 2 + np.sin(a) * ln / 2
        x0, y0 = int(round(cx - kh // 2)), int(round(cy - kh // 2))
        xa, ya = max(x0, 0), max(y0, 0)
        xb, yb = min(x0 + kh, n), min(y0 + kh, n)
        if xb > xa and yb > ya:
            out[ya:yb, xa:xb] = np.maximum(out[ya:yb, xa:xb], k[ya - y0 : yb - y0, xa - x0 : xb - x0])
    return out


def _plants(
    img,
    m,
    rng,
    xs,
    ys,
    kernels,
    colours,
    shade_cell: float,
    shadow=None,
    height=0.0,
    ppm=1.0,
    shade_amp: float = 0.18,
) -> np.ndarray:
    """Splat plants (kernels chosen per plant, colour per plant) with their cast shadow; returns cover."""
    h, w = m.shape
    if len(xs) == 0:
        return np.zeros((h, w), np.float32)
    pick = rng.integers(len(kernels), size=len(xs))
    if shadow is not None and height > 0:
        sx, sy = shadow[0] * height * 0.5, shadow[1] * height * 0.5
        sh = np.zeros((h, w), np.float32)
        for k, kern in enumerate(kernels):
            sel = pick == k
            sh += splat(h, w, xs[sel] + sx, ys[sel] + sy, kern)
        img *= (1 - 0.42 * np.clip(sh, 0, 1) * m)[..., None] * np.array([1, 1, 1.04], np.float32)
    cover = np.zeros((h, w), np.float32)
    for k, kern in enumerate(kernels):
        sel = pick == k
        if sel.any():
            cover += splat(h, w, xs[sel], ys[sel], kern)
    # per-plant colour: a colour-weighted splat of all plants with one (the largest) kernel
    big = max(kernels, key=lambda k: k.sum())
    norm = splat(h, w, xs, ys, big)
    col = np.stack([splat(h, w, xs, ys, big, colours[:, c]) for c in range(3)], axis=-1)
    col = np.where((norm > 1e-3)[..., None], col / np.maximum(norm, 1e-3)[..., None], colours.mean(0))
    col = np.clip(col, 0, 1)
    col *= (1 + shade_amp * lattice_noise(rng, h, w, shade_cell, 2))[..., None]
    a = np.clip(cover, 0, 1)
    composite(img, a, col, m)
    return a


def poppy(img, m, rng, ppm: float, *, stage: str, colour: str, shadow, mixed: float = 0.0) -> None:
    """An opium-poppy stand: glaucous foliage, flowers (flowering) or capsules (capsule), or rosettes."""
    dens = rng.uniform(15, 45) if stage != "rosette" else rng.uniform(14, 60)
    rows = (rng.uniform(0.2, 0.4), 1 / np.sqrt(dens) * rng.uniform(0.6, 1.0)) if rng.random() < 0.35 else None
    xs, ys = points(rng, m, ppm, dens, rows, rng.uniform(0, np.pi))
    fol = jitter(rng, GLAUCOUS, 0.07)
    if stage == "capsule":  # late season: foliage paler and yellower
        fol = fol * (1 - (t := rng.uniform(0.1, 0.45))) + rgb(168, 170, 118) * t
    ck = [
        rosette_kernel(
            rng, rng.uniform(0.07, 0.15) * ppm, rng.uniform(0.03, 0.05) * ppm, int(rng.integers(5, 9))
        )
        for _ in range(4)
    ]
    if stage != "rosette":  # taller plants: stem leaves clasping, a broader, looser crown
        ck = [
            rosette_kernel(
                rng, rng.uniform(0.12, 0.24) * ppm, rng.uniform(0.05, 0.09) * ppm, int(rng.integers(5, 9))
            )
            for _ in range(4)
        ]
    n = len(xs)
    cols = np.clip(fol[None, :] * rng.uniform(0.88, 1.12, (n, 1)) + rng.normal(0, 0.02, (n, 3)), 0, 1)
    height = {"rosette": 0.1, "flowering": rng.uniform(0.5, 1.3), "capsule": rng.uniform(0.6, 1.4)}[stage]
    _plants(img, m, rng, xs, ys, ck, cols, max(0.05 * ppm, 1.0), shadow, height, ppm)
    # white bloom: pale speckle on the leaves
    bloom = lattice_noise(rng, *m.shape, max(0.03 * ppm, 1.0), 1)
    img += (0.05 * np.clip(bloom, 0, None) * m)[..., None]
    if stage == "rosette" or n == 0:
        return
    per = rng.uniform(0.5, 1.6) if stage == "flowering" else rng.uniform(0.8, 2.5)
    k = rng.poisson(per, n)
    fx = np.repeat(xs, k) + rng.normal(0, 0.07 * ppm, k.sum())
    fy = np.repeat(ys, k) + rng.normal(0, 0.07 * ppm, k.sum())
    if stage == "flowering":
        names = list(POPPY_COLOURS)
        probs = np.full(len(names), mixed / max(len(names) - 1, 1))
        probs[names.index(colour)] = 1 - mixed
        which = rng.choice(len(names), size=len(fx), p=probs / probs.sum())
        for i, name in enumerate(names):
            sel = which == i
            if not sel.any():
                continue
            r = rng.uniform(0.04, 0.06) * ppm
            kern = [petals_kernel(r * s, 4, rng.uniform(0, np.pi)) for s in (0.7, 1.0)]
            half = rng.random(sel.sum()) < 0.5
            a = np.clip(
                splat(*m.shape, fx[sel][half], fy[sel][half], kern[0])
                + splat(*m.shape, fx[sel][~half], fy[sel][~half], kern[1]),
                0,
                1,
            )
            petal = jitter(rng, POPPY_COLOURS[name], 0.05)
            shade = 1 + 0.12 * lattice_noise(rng, *m.shape, max(0.03 * ppm, 1.0), 1)
            composite(img, a, petal[None, None, :] * shade[..., None], m)
            centre = BLOTCH if name != "white" or rng.random() < 0.4 else rgb(200, 200, 120)
            ca = np.clip(splat(*m.shape, fx[sel], fy[sel], ellipse_kernel(r * 0.35, r * 0.35)), 0, 1)
            composite(img, ca * 0.9, centre, m)
    else:
        r = rng.uniform(0.02, 0.035) * ppm
        a = np.clip(splat(*m.shape, fx, fy, ellipse_kernel(r, r * rng.uniform(0.85, 1.0))), 0, 1)
        cap = jitter(rng, rgb(172, 188, 146), 0.06)
        composite(img, a, cap, m)
        hi = np.clip(splat(*m.shape, fx - 0.25 * r, fy - 0.25 * r, ellipse_kernel(r * 0.4, r * 0.4)), 0, 1)
        composite(img, hi * 0.5, rgb(215, 222, 200), m)
        st = np.clip(splat(*m.shape, fx, fy, ellipse_kernel(r * 0.45, r * 0.45)), 0, 1)
        composite(img, st * 0.6, rgb(118, 112, 84), m)


# --------------------------------------------------------------------------- other plants (crops, confusers)

# name: foliage colour, plant size (m), density or rows (row_m, step_m),
# flowers (colours, radius m, per plant)
PLANTS = {
    "garlic": dict(col=rgb(118, 146, 124), size=(0.12, 0.02), rows=(0.17, 0.1), leaves=(5, 7)),
    "onion": dict(col=rgb(112, 140, 128), size=(0.14, 0.015), rows=(0.2, 0.09), leaves=(4, 6)),
    "cabbage": dict(
        col=rgb(126, 162, 132), size=(0.2, 0.12), rows=(0.45, 0.45), leaves=(7, 10), centre=rgb(188, 208, 160)
    ),
    "lettuce": dict(col=rgb(128, 180, 78), size=(0.13, 0.07), rows=(0.3, 0.28), leaves=(7, 11)),
    "potato": dict(
        col=rgb(58, 104, 48),
        size=(0.3, 0.12),
        rows=(0.75, 0.3),
        leaves=(6, 9),
        flowers=([rgb(238, 236, 240), rgb(186, 160, 210)], 0.015, 3.0),
    ),
    "pea": dict(
        col=rgb(116, 160, 92),
        size=(0.16, 0.07),
        density=40,
        leaves=(6, 9),
        flowers=([rgb(242, 242, 238), rgb(170, 80, 150)], 0.012, 1.5),
    ),
    "rose": dict(
        col=rgb(46, 84, 44),
        size=(0.45, 0.16),
        rows=(1.2, 0.7),
        leaves=(8, 12),
        flowers=([rgb(196, 24, 40), rgb(226, 110, 150), rgb(236, 220, 210)], 0.04, 6.0),
    ),
    "tomato": dict(
        col=rgb(66, 114, 50),
        size=(0.32, 0.11),
        rows=(0.9, 0.45),
        leaves=(7, 10),
        flowers=([rgb(206, 44, 30), rgb(226, 96, 34)], 0.03, 4.0),
    ),
    "corn_poppy": dict(
        col=rgb(92, 150, 52),
        size=(0.1, 0.03),
        density=12,
        leaves=(6, 10),
        flowers=([rgb(222, 30, 28)], 0.028, 1.2),
        petals=4,
    ),
    "maize_young": dict(col=rgb(78, 132, 52), size=(0.35, 0.05), rows=(0.6, 0.28), leaves=(4, 7)),
    "maize": dict(col=rgb(52, 98, 40), size=(0.6, 0.08), rows=(0.6, 0.28), leaves=(8, 12), height=2.0),
    "rapeseed": dict(
        col=rgb(96, 140, 58),
        size=(0.22, 0.07),
        density=30,
        leaves=(6, 9),
        flowers=([rgb(240, 212, 36), rgb(232, 200, 30)], 0.05, 4.0),
    ),
    "weeds": dict(col=rgb(104, 134, 64), size=(0.12, 0.04), density=25, leaves=(5, 9)),
}


def plant_field(img, m, rng, ppm: float, kind: str, angle: float, shadow, cover_gap: float = 0.0) -> None:
    """A stand of one crop or confuser plant over the masked region."""
    p = PLANTS[kind]
    ln, lw = p["size"]
    if ln * ppm < 1.2 and "density" not in p and p["rows"][1] * ppm < 1.5:
        # too fine to draw plants: row texture only
        _row_texture(img, m, rng, ppm, p["col"], p["rows"][0], angle)
        return
    rows = p.get("rows")
    xs, ys = points(rng, m, ppm, p.get("density", 0), rows, angle)
    if cover_gap > 0:
        keep = rng.random(len(xs)) > cover_gap
        xs, ys = xs[keep], ys[keep]
    kerns = [
        rosette_kernel(
            rng, ln * ppm * rng.uniform(0.8, 1.1), max(lw * ppm, 0.4), int(rng.integers(*p["leaves"]))
        )
        for _ in range(3)
    ]
    base = jitter(rng, p["col"], 0.08)
    cols = np.clip(base[None, :] * rng.uniform(0.85, 1.15, (len(xs), 1)), 0, 1)
    _plants(
        img,
        m,
        rng,
        xs,
        ys,
        kerns,
        cols,
        max(0.08 * ppm, 1.0),
        shadow,
        p.get("height", 0.4),
        ppm,
        shade_amp=0.25,
    )
    if "centre" in p and len(xs):
        a = np.clip(splat(*m.shape, xs, ys, ellipse_kernel(0.08 * ppm, 0.08 * ppm)), 0, 1)
        composite(img, a, p["centre"], m)
    if "flowers" in p and len(xs):
        cols_f, r, per = p["flowers"]
        k = rng.poisson(per * rng.uniform(0.4, 1.2), len(xs))
        fx = np.repeat(xs, k) + rng.normal(0, ln * 0.5 * ppm, k.sum())
        fy = np.repeat(ys, k) + rng.normal(0, ln * 0.5 * ppm, k.sum())
        which = rng.integers(len(cols_f), size=len(fx)) if rng.random() < 0.5 else np.zeros(len(fx), int)
        for i, c in enumerate(cols_f):
            sel = which == i
            kern = (
                petals_kernel(r * ppm, p["petals"], rng.uniform(0, 3))
                if "petals" in p
                else ellipse_kernel(r * ppm, r * ppm * 0.9, rng.uniform(0, 3))
            )
            a = np.clip(splat(*m.shape, fx[sel], fy[sel], kern), 0, 1)
            composite(img, a, jitter(rng, c, 0.05), m)


def _row_texture(img, m, rng, ppm, col, row_m, angle) -> None:
    h, w = m.shape
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    v = (-xx * np.sin(angle) + yy * np.cos(angle)) / max(row_m * ppm, 1e-3)
    prof = 0.5 + 0.5 * np.cos(2 * np.pi * v)
    cover = np.clip(0.55 + 0.35 * prof + 0.25 * lattice_noise(rng, h, w, max(0.3 * ppm, 2), 2), 0, 1)
    composite(
        img,
        cover,
        jitter(rng, col, 0.06)[None, None, :] * (1 + 0.15 * lattice_noise(rng, h, w, 1.5, 1))[..., None],
        m,
    )
