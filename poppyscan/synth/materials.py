"""Ground materials: textures for soil, crops, paving and roofs, plus the canvas they are painted on.

Each texture function has the signature ``tex(cv, h, w, x0, y0, p) -> float32 (h, w, 3)`` in [0, 1],
where ``cv`` is the :class:`Canvas` (for ``rng`` and ``ppm``, pixels per metre), ``(x0, y0)`` is the
window's origin in scene pixels (so row patterns line up across windows) and ``p`` a parameter dict
(``angle`` in radians for row crops, colours). Sizes are given in metres and converted with ``ppm``.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from .noise import fbm, poisson_points, polygon_mask, soften, splat


def rgb(*c: float) -> np.ndarray:
    return np.array(c, np.float32) / 255.0


def jitter_colour(rng: np.random.Generator, c: np.ndarray, amount: float = 0.08) -> np.ndarray:
    """Scale brightness and shift hue-ish channels a little."""
    b = rng.uniform(1 - amount, 1 + amount)
    ch = rng.uniform(1 - amount / 2, 1 + amount / 2, 3)
    return np.clip(c * b * ch, 0, 1).astype(np.float32)


@dataclass
class Canvas:
    """The scene being painted: float RGB image, pixels per metre, the generator, shadow accumulator."""

    rng: np.random.Generator
    h: int
    w: int
    ppm: float
    img: np.ndarray = field(init=False)
    shadow: np.ndarray = field(init=False)

    def __post_init__(self) -> None:
        self.img = np.zeros((self.h, self.w, 3), np.float32)
        self.shadow = np.zeros((self.h, self.w), np.float32)

    def px(self, metres: float) -> float:
        return metres * self.ppm

    def window(self, poly, pad: int = 2):
        """Integer window (x0, y0, x1, y1) of ``poly``'s bounds clipped to the image, or None."""
        if poly.is_empty:  # e.g. a parcel clipped away entirely: its bounds are NaN
            return None
        minx, miny, maxx, maxy = poly.bounds
        x0, y0 = max(0, int(np.floor(minx)) - pad), max(0, int(np.floor(miny)) - pad)
        x1, y1 = min(self.w, int(np.ceil(maxx)) + pad), min(self.h, int(np.ceil(maxy)) + pad)
        if x1 <= x0 or y1 <= y0:
            return None
        return x0, y0, x1, y1

    def paint(
        self,
        poly,
        tex,
        p: dict | None = None,
        edge_soft: float = 0.0,
        mask: np.ndarray | None = None,
        alpha: float = 1.0,
    ) -> None:
        """Composite texture ``tex`` inside ``poly`` (or inside ``mask``, a window-sized array)."""
        win = self.window(poly)
        if win is None:
            return
        x0, y0, x1, y1 = win
        h, w = y1 - y0, x1 - x0
        m = polygon_mask(h, w, poly, (x0, y0)).astype(np.float32) if mask is None else mask.astype(np.float32)
        if not m.any():
            return
        if edge_soft > 0:
            m = soften(m, edge_soft)
        t = tex(self, h, w, x0, y0, p or {})
        m = (m * alpha)[..., None]
        sub = self.img[y0:y1, x0:x1]
        sub += (t - sub) * m

    def coords(self, h: int, w: int, x0: int, y0: int):
        yy, xx = np.mgrid[y0 : y0 + h, x0 : x0 + w].astype(np.float32)
        return xx, yy


def _across(cv: Canvas, h, w, x0, y0, angle: float) -> np.ndarray:
    """Coordinate across rows running along ``angle``, in pixels."""
    xx, yy = cv.coords(h, w, x0, y0)
    return -xx * np.sin(angle) + yy * np.cos(angle)


def _along(cv: Canvas, h, w, x0, y0, angle: float) -> np.ndarray:
    xx, yy = cv.coords(h, w, x0, y0)
    return xx * np.cos(angle) + yy * np.sin(angle)


def _mix(base: np.ndarray, other: np.ndarray, a: np.ndarray) -> np.ndarray:
    return base + (other - base) * a[..., None]


def _shade(col: np.ndarray, n: np.ndarray, amount: float) -> np.ndarray:
    return col[None, None, :] * (1 + amount * n)[..., None]


# --------------------------------------------------------------------------------------------- soil

SOILS = [
    rgb(168, 146, 118),
    rgb(150, 128, 100),
    rgb(128, 108, 86),
    rgb(182, 165, 138),
    rgb(140, 122, 104),
    rgb(112, 96, 80),
    rgb(160, 150, 135),
]


def soil(cv: Canvas, h, w, x0, y0, p) -> np.ndarray:
    rng = cv.rng
    c = p.get("colour")
    if c is None:
        c = jitter_colour(rng, SOILS[rng.integers(len(SOILS))], 0.1)
    n = fbm(rng, h, w, cv.px(rng.uniform(1.5, 6)), 4) * 0.07 + fbm(rng, h, w, cv.px(0.08), 2) * 0.06
    out = _shade(c, n, 1.0)
    if p.get("furrows", rng.random() < 0.5):
        a = p.get("angle", 0.0)
        sp = cv.px(rng.uniform(0.25, 0.7))
        v = _across(cv, h, w, x0, y0, a)
        out *= (1 + 0.06 * np.sin(2 * np.pi * v / max(sp, 2.0)))[..., None]
    # clods / stones
    if cv.ppm > 15:
        xs, ys = poisson_points(rng, h, w, h * w / cv.ppm**2 * rng.uniform(5, 40))
        lab = splat(h, w, xs, ys, cv.px(0.02))
        out = np.where(lab[..., None] > 0, out * rng.uniform(0.8, 1.15), out)
    return out


# --------------------------------------------------------------------------------------------- crops


def wheat(cv: Canvas, h, w, x0, y0, p) -> np.ndarray:
    rng = cv.rng
    ripeness = p.get("ripeness", rng.uniform(0, 0.6))
    green = jitter_colour(rng, rgb(70, 112, 48), 0.12)
    ripe = jitter_colour(rng, rgb(165, 160, 88), 0.08)
    c = green * (1 - ripeness) + ripe * ripeness
    a = p.get("angle", 0.0)
    n = fbm(rng, h, w, cv.px(rng.uniform(2, 8)), 4) * 0.09 + fbm(rng, h, w, cv.px(0.05), 2) * 0.1
    out = _shade(c, n, 1.0)
    v = _across(cv, h, w, x0, y0, a)
    sp = cv.px(rng.uniform(0.15, 0.25))
    if sp >= 2.5:
        out *= (1 + 0.08 * np.cos(2 * np.pi * v / sp))[..., None]
    # tractor tramlines
    if rng.random() < 0.6:
        tl = cv.px(rng.uniform(1.5, 3.0))
        d = np.abs(((v / tl) % 1.0) - 0.5) * tl
        track = (d < cv.px(0.12)).astype(np.float32)
        out = _mix(out, soil(cv, h, w, x0, y0, {"furrows": False}) * 0.95, soften(track, 0.7) * 0.7)
    # patchy thin stand
    if rng.random() < 0.4:
        thin = np.clip(fbm(rng, h, w, cv.px(3), 3) - 0.8, 0, 1)
        out = _mix(out, soil(cv, h, w, x0, y0, {}), thin * 0.6)
    return out


def row_crop(cv: Canvas, h, w, x0, y0, p) -> np.ndarray:
    """Plants (discs) in rows on soil: maize seedlings, garlic, lettuce, cabbage, vegetables."""
    rng = cv.rng
    a = p.get("angle", 0.0)
    ground = soil(cv, h, w, x0, y0, {"angle": a, "furrows": True}) if p.get("mulch") is None else None
    if ground is None:
        film = jitter_colour(rng, rgb(205, 205, 200) if p["mulch"] == "white" else rgb(45, 45, 48), 0.06)
        ground = _shade(film, fbm(rng, h, w, cv.px(1.0), 3), 0.08)
        v = _across(cv, h, w, x0, y0, a)
        bed = cv.px(rng.uniform(0.9, 1.6))
        gap = np.abs(((v / bed) % 1.0) - 0.5) * bed < cv.px(0.15)
        ground = np.where(gap[..., None], soil(cv, h, w, x0, y0, {"furrows": False}), ground)
    row_sp, plant_sp = p.get("row_spacing", 0.5), p.get("plant_spacing", 0.3)
    radius = p.get("radius", 0.08)
    col = p.get("colour", rgb(80, 140, 50))
    # lattice of plants in rows, jittered, with gaps
    diag = np.hypot(h, w)
    rsp, psp = max(cv.px(row_sp), 1.5), max(cv.px(plant_sp), 1.0)
    nr, npl = int(diag / rsp) + 3, int(diag / psp) + 3
    if nr * npl > 400_000:
        # too many to place: fall back to a striped texture
        v = _across(cv, h, w, x0, y0, a)
        cover = np.clip(0.5 + 0.6 * np.cos(2 * np.pi * v / rsp) + 0.3 * fbm(rng, h, w, 3, 2), 0, 1)
        return _mix(ground, _shade(col, fbm(rng, h, w, 2, 2), 0.15), cover * 0.8)
    i, j = np.meshgrid(np.arange(nr) - nr / 2, np.arange(npl) - npl / 2, indexing="ij")
    across = i.ravel() * rsp + rng.uniform(-0.08, 0.08, i.size) * rsp
    along = j.ravel() * psp + rng.uniform(-0.3, 0.3, i.size) * psp
    ca, sa = np.cos(a), np.sin(a)
    cx, cy = w / 2 + along * ca - across * sa, h / 2 + along * sa + across * ca
    # global alignment so neighbouring windows share rows roughly
    keep = rng.random(cx.size) < p.get("fill", 0.9)
    cx, cy = cx[keep], cy[keep]
    rpx = cv.px(radius)
    radii = rng.uniform(0.7, 1.2, cx.size) * rpx
    out = ground.copy()
    for lo, hi in ((0, 0.85), (0.85, 1.0), (1.0, 1.3)):
        sel = (radii >= lo * rpx) & (radii < hi * rpx)
        if not sel.any():
            continue
        r = np.median(radii[sel])
        lab = splat(h, w, cx[sel], cy[sel], r)
        m = lab > 0
        if not m.any():
            continue
        shade = np.ones(int(lab.max()) + 1, np.float32)
        shade[1:] = rng.uniform(0.82, 1.15, shade.size - 1)
        s = shade[lab.astype(np.intp)]
        tex = col[None, None, :] * (s * (1 + 0.12 * fbm(rng, h, w, max(r / 2, 1), 2)))[..., None]
        mf = soften(m.astype(np.float32), 0.5 if r > 1.5 else 0.0)
        out = _mix(out, tex, mf)
    return out


def rapeseed(cv: Canvas, h, w, x0, y0, p) -> np.ndarray:
    rng = cv.rng
    flowering = p.get("flowering", rng.random() < 0.6)
    green = jitter_colour(rng, rgb(88, 125, 55), 0.1)
    n = fbm(rng, h, w, cv.px(rng.uniform(1, 5)), 4)
    out = _shade(green, n, 0.12)
    if flowering:
        yellow = jitter_colour(rng, rgb(228, 205, 45), 0.07)
        cover = np.clip(rng.uniform(0.45, 0.9) + 0.25 * fbm(rng, h, w, cv.px(0.4), 3), 0, 1)
        fine = fbm(rng, h, w, cv.px(0.06), 2)
        out = _mix(out, _shade(yellow, fine, 0.1), cover * np.clip(0.8 + 0.4 * fine, 0, 1))
    else:  # pods: grey-green speckle
        out = _mix(out, _shade(rgb(140, 150, 90), n, 0.1), np.clip(0.4 + 0.3 * fbm(rng, h, w, 2, 2), 0, 1))
    return out


def grass(cv: Canvas, h, w, x0, y0, p) -> np.ndarray:
    rng = cv.rng
    c = p.get("colour", jitter_colour(rng, rgb(95, 120, 60), 0.15))
    n = fbm(rng, h, w, cv.px(rng.uniform(0.5, 3)), 4) * 0.14 + fbm(rng, h, w, cv.px(0.05), 2) * 0.1
    out = _shade(c, n, 1.0)
    bare = np.clip(fbm(rng, h, w, cv.px(1.5), 3) - rng.uniform(0.6, 1.6), 0, 1)
    return _mix(out, soil(cv, h, w, x0, y0, {"furrows": False}), bare)


# --------------------------------------------------------------------------------------------- built surfaces


def concrete(cv: Canvas, h, w, x0, y0, p) -> np.ndarray:
    rng = cv.rng
    c = p.get("colour", jitter_colour(rng, rgb(172, 170, 164), 0.1))
    n = fbm(rng, h, w, cv.px(rng.uniform(0.5, 3)), 4) * 0.06 + fbm(rng, h, w, cv.px(0.03), 1) * 0.04
    out = _shade(c, n, 1.0)
    # stains
    st = np.clip(fbm(rng, h, w, cv.px(1.0), 3) - 1.2, 0, 1)
    out *= (1 - 0.3 * st)[..., None]
    # joints
    if rng.random() < 0.6:
        a = p.get("angle", 0.0)
        sp = cv.px(rng.uniform(3, 6))
        u, v = _along(cv, h, w, x0, y0, a), _across(cv, h, w, x0, y0, a)
        j = (np.abs(((u / sp) % 1) - 0.5) * sp < 0.6) | (np.abs(((v / sp) % 1) - 0.5) * sp < 0.6)
        out *= (1 - 0.12 * j)[..., None]
    return out


def asphalt(cv: Canvas, h, w, x0, y0, p) -> np.ndarray:
    return concrete(cv, h, w, x0, y0, {**p, "colour": jitter_colour(cv.rng, rgb(78, 78, 80), 0.12)})


def dirt(cv: Canvas, h, w, x0, y0, p) -> np.ndarray:
    rng = cv.rng
    c = jitter_colour(rng, rgb(175, 160, 135), 0.1)
    out = soil(cv, h, w, x0, y0, {"colour": c, "furrows": False})
    weeds = np.clip(fbm(rng, h, w, cv.px(0.5), 3) - 0.7, 0, 1)
    return _mix(out, _shade(rgb(90, 115, 60), fbm(rng, h, w, 2, 2), 0.2), weeds)


def bricks(cv: Canvas, h, w, x0, y0, p) -> np.ndarray:
    rng = cv.rng
    c = jitter_colour(rng, [rgb(150, 90, 75), rgb(130, 128, 125), rgb(160, 120, 100)][rng.integers(3)], 0.08)
    a = p.get("angle", 0.0)
    u, v = _along(cv, h, w, x0, y0, a), _across(cv, h, w, x0, y0, a)
    bl, bw = cv.px(0.24), cv.px(0.12)
    row = np.floor(v / max(bw, 1))
    joint = (
        (
            (np.abs(((v / max(bw, 1)) % 1) - 0.5) > 0.42)
            | (np.abs((((u + (row % 2) * bl / 2) / max(bl, 1)) % 1) - 0.5) > 0.45)
        )
        if bw >= 2
        else np.zeros((h, w), bool)
    )
    out = _shade(c, fbm(rng, h, w, cv.px(0.3), 3), 0.08)
    return out * (1 - 0.15 * joint)[..., None]


ROOF_COLOURS = {
    "grey": rgb(105, 108, 112),
    "blue": rgb(55, 100, 165),
    "red": rgb(160, 72, 52),
    "white": rgb(215, 215, 210),
    "terracotta": rgb(178, 98, 70),
    "dark": rgb(70, 72, 78),
    "green": rgb(80, 130, 110),
}


def roof(cv: Canvas, h, w, x0, y0, p) -> np.ndarray:
    """Roof: tile rows (tiles) or ribs (steel) along ``angle``; ridge splits lit/shaded halves."""
    rng = cv.rng
    c = p.get("colour", ROOF_COLOURS["grey"])
    a = p.get("angle", 0.0)
    out = _shade(c, fbm(rng, h, w, cv.px(1.5), 3), 0.05)
    v = _across(cv, h, w, x0, y0, a)
    u = _along(cv, h, w, x0, y0, a)
    kind = p.get("kind", "tile")
    if kind in ("tile", "steel"):
        sp = cv.px(0.22 if kind == "tile" else 0.25)
        if sp >= 2:
            out *= (1 + 0.08 * np.cos(2 * np.pi * u / sp))[..., None]
    if p.get("gable", True) and "ridge" in p:
        side = (v - p["ridge"]) > 0
        k = p.get("light", 1.12)
        out *= np.where(side, k, 1 / k)[..., None]
    else:  # flat roof: parapet shading, clutter
        out *= (1 + 0.05 * fbm(rng, h, w, cv.px(0.6), 2))[..., None]
    return out


TEXTURES = {
    "soil": soil,
    "wheat": wheat,
    "row_crop": row_crop,
    "rapeseed": rapeseed,
    "grass": grass,
    "concrete": concrete,
    "asphalt": asphalt,
    "dirt": dirt,
    "bricks": bricks,
    "roof": roof,
}
