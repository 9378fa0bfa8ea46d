"""Landscapes of the alternative renderer, planned as a raster label map of parcels.

Two landforms: loess-plateau terraces (contour strips from a tilted, warped height field, with sunlit or
shaded risers) and plain strip fields (long narrow holdings with earth bunds and dirt tracks). On top
come hamlets of walled farm compounds (steel or tile roofs, yards, vegetable gardens), solar
greenhouses, a stream, orchards and roadside trees. Parcels carry a ``kind`` (soil, crop or confuser
plant) and a poppy ``setting`` where a covert plot could be sown.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
from scipy import ndimage
from shapely import affinity
from shapely.geometry import LineString, Point, box

from . import flora
from .prims import jitter, lattice_noise, rasterize, rgb

SOILS = {
    "loess": rgb(186, 160, 118),
    "plough": rgb(150, 126, 94),
    "stubble": rgb(194, 178, 132),
    "fallow": rgb(154, 148, 100),
    "track": rgb(198, 180, 142),
    "riser": rgb(160, 136, 98),
    "bund": rgb(128, 136, 80),
    "water": rgb(84, 96, 86),
    "yard_concrete": rgb(170, 168, 160),
    "yard_earth": rgb(168, 148, 116),
    "mulch": rgb(222, 224, 218),
    "wheat": rgb(90, 128, 54),
    "orchard": rgb(132, 140, 84),
}
# crop mix of ordinary parcels (kind: weight)
CROPS = {
    "loess": 0.12,
    "plough": 0.08,
    "wheat": 0.16,
    "stubble": 0.06,
    "maize_young": 0.07,
    "maize": 0.05,
    "mulch": 0.08,
    "fallow": 0.1,
    "garlic": 0.05,
    "potato": 0.04,
    "orchard": 0.07,
    "cabbage": 0.03,
    "rapeseed": 0.03,
    "pea": 0.02,
    "onion": 0.02,
    "lettuce": 0.01,
}
GARDEN = {
    "cabbage": 0.2,
    "lettuce": 0.12,
    "garlic": 0.15,
    "onion": 0.1,
    "tomato": 0.12,
    "pea": 0.08,
    "potato": 0.08,
    "loess": 0.15,
}
CONFUSERS = [
    "rapeseed",
    "pea",
    "potato",
    "rose",
    "garlic",
    "onion",
    "cabbage",
    "tomato",
    "lettuce",
    "corn_poppy",
]
SETTING_OF = {
    "loess": "field",
    "plough": "field",
    "fallow": "field",
    "wheat": "intercrop",
    "maize_young": "intercrop",
    "maize": "intercrop",
    "garlic": "intercrop",
    "rapeseed": "intercrop",
    "stubble": "field",
}
ROOFS = [rgb(64, 106, 164), rgb(150, 154, 158), rgb(92, 94, 100), rgb(158, 76, 60), rgb(182, 180, 172)]


@dataclass
class Layout:
    """The planned scene: ``lab`` (H, W) parcel ids into ``parcels``; ``elevated`` objects with heights."""

    lab: np.ndarray
    parcels: list[dict]
    elevated: list[dict] = field(default_factory=list)
    landform: str = "terraces"
    angle: float = 0.0


def parcel_slices(lab: np.ndarray, n: int) -> list:
    """Bounding-box slices of parcel ids ``0..n-1`` (None where a parcel has no pixel left)."""
    sl = ndimage.find_objects(lab + 1, max_label=n)
    return list(sl) + [None] * (n - len(sl))


def _pick(rng, table: dict) -> str:
    keys = list(table)
    w = np.array([table[k] for k in keys], float)
    return str(rng.choice(keys, p=w / w.sum()))


def make_layout(rng: np.random.Generator, h: int, w: int, ppm: float, poppy: bool) -> Layout:
    """Plan a landscape of ``h`` x ``w`` pixels at ``ppm`` pixels per metre."""
    landform = "terraces" if rng.random() < 0.5 else "strips"
    theta = float(rng.uniform(0, np.pi))
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    parcels: list[dict] = []
    if landform == "terraces":
        step = rng.uniform(5, 22) * ppm
        warp = lattice_noise(rng, h, w, rng.uniform(25, 60) * ppm, 2) * rng.uniform(8, 30) * ppm
        z = xx * np.cos(theta) + yy * np.sin(theta) + warp
        gy, gx = np.gradient(z)
        gmag = np.maximum(np.hypot(gx, gy), 0.2)
        idx = np.floor(z / step).astype(np.int64)
        frac = (z / step) - idx
        split = np.digitize(lattice_noise(rng, h, w, rng.uniform(20, 50) * ppm, 1), [-0.3, 0.3])
        raw = idx * 3 + split
        riser = frac * step / gmag < rng.uniform(0.4, 1.2) * ppm
        along = np.arctan2(gy, gx) + np.pi / 2  # contour direction, per pixel
    else:
        ca, sa = np.cos(theta), np.sin(theta)
        u, v = xx * ca + yy * sa, -xx * sa + yy * ca
        span = np.hypot(h, w)
        v_edges = np.cumsum(rng.uniform(4, 28, 200) * ppm) - span
        u_edges = np.cumsum(rng.uniform(40, 140, 60) * ppm) - span
        iv, iu = np.searchsorted(v_edges, v), np.searchsorted(u_edges, u)
        raw = iv.astype(np.int64) * 1000 + iu
        dv = np.minimum(
            np.abs(v - v_edges[np.clip(iv, 0, len(v_edges) - 1)]),
            np.abs(v - v_edges[np.clip(iv - 1, 0, len(v_edges) - 1)]),
        )
        du = np.minimum(
            np.abs(u - u_edges[np.clip(iu, 0, len(u_edges) - 1)]),
            np.abs(u - u_edges[np.clip(iu - 1, 0, len(u_edges) - 1)]),
        )
        riser = dv < rng.uniform(0.2, 0.5) * ppm  # earth bunds between holdings
        track = du < rng.uniform(1.2, 2.2) * ppm
        along = None
    _, lab = np.unique(raw, return_inverse=True)
    lab = lab.reshape(h, w).astype(np.int32)
    for _ in range(int(lab.max()) + 1):
        kind = _pick(rng, CROPS)
        if not poppy and rng.random() < 0.25:
            kind = str(rng.choice(CONFUSERS[:-1]))
        parcels.append(
            {
                "kind": kind,
                "angle": theta + np.pi / 2 if landform == "terraces" else theta,
                "setting": SETTING_OF.get(kind),
            }
        )
    if landform == "terraces":
        # each terrace strip keeps the contour's direction at its centre for its rows
        for i, sl in enumerate(parcel_slices(lab, len(parcels))):
            if sl is not None:
                cy, cx = (sl[0].start + sl[0].stop) // 2, (sl[1].start + sl[1].stop) // 2
                parcels[i]["angle"] = float(along[cy, cx])
    new = len(parcels)
    lab[riser] = new
    parcels.append(
        {"kind": "riser" if landform == "terraces" else "bund", "angle": theta, "setting": None, "gmag": None}
    )
    if landform == "strips":
        lab[track] = new + 1
        parcels.append({"kind": "track", "angle": theta + np.pi / 2, "setting": None})
    lay = Layout(lab, parcels, [], landform, theta)
    if rng.random() < 0.35:
        _stream(rng, lay, h, w, ppm)
    if rng.random() < 0.5:
        _road(rng, lay, h, w, ppm)
    if rng.random() < (0.75 if poppy else 0.6):
        _hamlet(rng, lay, h, w, ppm)
    if rng.random() < 0.3:
        _greenhouses(rng, lay, h, w, ppm)
    _orchard_trees(rng, lay, ppm)
    return lay


def _add_poly(lay: Layout, poly, kind: str, angle: float, setting: str | None = None) -> int:
    h, w = lay.lab.shape
    m = rasterize([poly], h, w).astype(bool)
    lay.lab[m] = len(lay.parcels)
    lay.parcels.append({"kind": kind, "angle": angle, "setting": setting, "poly": poly})
    return len(lay.parcels) - 1


def _wiggle_line(rng, h, w, ppm) -> LineString:
    a = rng.uniform(0, np.pi)
    c = np.array([rng.uniform(0.2, 0.8) * w, rng.uniform(0.2, 0.8) * h])
    t = np.linspace(-1.5, 1.5, 60) * max(h, w)
    d = np.array([np.cos(a), np.sin(a)])
    n = np.array([-d[1], d[0]])
    off = np.cumsum(rng.normal(0, 1, 60)) * rng.uniform(0.5, 3) * ppm
    off += rng.uniform(3, 15) * ppm * np.sin(t / (rng.uniform(20, 60) * ppm) + rng.uniform(0, 6))
    pts = c[None, :] + t[:, None] * d[None, :] + off[:, None] * n[None, :]
    return LineString(pts)


def _stream(rng, lay: Layout, h, w, ppm) -> None:
    line = _wiggle_line(rng, h, w, ppm)
    width = rng.uniform(1.5, 6) * ppm
    _add_poly(lay, line.buffer(width / 2 + rng.uniform(0.8, 2.5) * ppm), "fallow", lay.angle, "edge")
    _add_poly(lay, line.buffer(width / 2), "water", lay.angle)


def _road(rng, lay: Layout, h, w, ppm) -> None:
    line = _wiggle_line(rng, h, w, ppm).simplify(3 * ppm)
    _add_poly(lay, line.buffer(rng.uniform(1.5, 3) * ppm, cap_style="flat"), "track", lay.angle)
    if rng.random() < 0.6:  # poplars along the road
        for dist in np.arange(0, line.length, rng.uniform(4, 8) * ppm):
            p = line.interpolate(dist)
            side = rng.choice([-1, 1]) * rng.uniform(3, 4.5) * ppm
            q = line.interpolate(min(dist + 1, line.length))
            d = np.array([q.x - p.x, q.y - p.y])
            d /= max(np.hypot(*d), 1e-6)
            c = Point(p.x - d[1] * side, p.y + d[0] * side)
            lay.elevated.append(
                {
                    "kind": "tree",
                    "poly": c.buffer(rng.uniform(1.2, 2.5) * ppm, 12),
                    "height": rng.uniform(6, 14),
                    "colour": jitter(rng, rgb(60, 100, 48), 0.1),
                }
            )


def _hamlet(rng, lay: Layout, h, w, ppm) -> None:
    cx, cy = rng.uniform(0.15, 0.85) * w, rng.uniform(0.15, 0.85) * h
    ang = float(rng.normal(0, 0.12))  # compounds face south, roughly north-up
    n = int(rng.integers(1, 7))
    cols = int(np.ceil(np.sqrt(n)))
    pitch_x, pitch_y = rng.uniform(20, 28) * ppm, rng.uniform(20, 28) * ppm
    for k in range(n):
        i, j = divmod(k, cols)
        ox, oy = (j - cols / 2) * pitch_x, (i - cols / 2) * pitch_y
        px = cx + ox * np.cos(ang) - oy * np.sin(ang)
        py = cy + ox * np.sin(ang) + oy * np.cos(ang)
        cw, ch = rng.uniform(13, 22) * ppm, rng.uniform(12, 20) * ppm
        yard = affinity.rotate(
            box(px - cw / 2, py - ch / 2, px + cw / 2, py + ch / 2), ang, (px, py), use_radians=True
        )
        if not yard.intersects(box(0, 0, w, h)):
            continue
        _add_poly(lay, yard, "yard_concrete" if rng.random() < 0.5 else "yard_earth", ang, "courtyard")
        wall_t = max(0.25 * ppm, 1.0)
        lay.elevated.append(
            {
                "kind": "wall",
                "poly": yard.difference(yard.buffer(-wall_t)),
                "height": 2.0,
                "colour": jitter(rng, rgb(150, 140, 128), 0.08),
            }
        )
        depth = rng.uniform(5, 7.5) * ppm
        top = py - ch / 2 + wall_t
        main = (px - cw / 2 + wall_t, top, px + cw / 2 - wall_t, top + depth)
        _roof(rng, lay, main, ang, (px, py), (3, 6), ang)
        if rng.random() < 0.5:  # side wing
            wing = (px + cw / 2 - wall_t - rng.uniform(3, 5) * ppm, py - ch / 2 + depth,
                    px + cw / 2 - wall_t, py + ch / 2 - rng.uniform(3, 6) * ppm)
            _roof(rng, lay, wing, ang, (px, py), (2.5, 4), ang + np.pi / 2)
        if rng.random() < 0.4:
            lay.elevated.append(
                {
                    "kind": "tree",
                    "poly": Point(px + rng.uniform(-0.3, 0.3) * cw, py + 0.3 * ch).buffer(
                        rng.uniform(1.5, 3) * ppm
                    ),
                    "height": rng.uniform(5, 10),
                    "colour": jitter(rng, rgb(56, 98, 44), 0.1),
                }
            )
        if rng.random() < 0.75:  # vegetable garden beside the compound
            gw, gh = rng.uniform(5, 14) * ppm, rng.uniform(4, 10) * ppm
            gx = px + (cw / 2 + gw / 2 + rng.uniform(0.5, 2) * ppm) * rng.choice([-1, 1])
            garden = affinity.rotate(
                box(gx - gw / 2, py - gh / 2, gx + gw / 2, py + gh / 2), ang, (px, py), use_radians=True
            )
            _add_poly(lay, garden, _pick(rng, GARDEN), ang, "garden")


def _roof(rng, lay: Layout, rect: tuple, ang: float, centre: tuple, heights: tuple, ridge: float) -> None:
    """A roofed building: ``rect`` (x0, y0, x1, y1) rotated by ``ang`` about ``centre``, a height drawn
    from ``heights`` (m), one of :data:`ROOFS` jittered, ridge direction ``ridge``."""
    lay.elevated.append(
        {
            "kind": "roof",
            "poly": affinity.rotate(box(*rect), ang, centre, use_radians=True),
            "height": rng.uniform(*heights),
            "colour": jitter(rng, ROOFS[int(rng.integers(len(ROOFS)))], 0.06),
            "angle": ridge,
        }
    )


def _greenhouses(rng, lay: Layout, h, w, ppm) -> None:
    cx, cy = rng.uniform(0.1, 0.9) * w, rng.uniform(0.1, 0.9) * h
    ang = float(rng.normal(0, 0.1))  # east-west ridges, lit from the south
    length, width = rng.uniform(40, 80) * ppm, rng.uniform(7, 10) * ppm
    for k in range(int(rng.integers(2, 6))):
        y = cy + k * (width + rng.uniform(4, 8) * ppm)
        gh = affinity.rotate(
            box(cx - length / 2, y, cx + length / 2, y + width), ang, (cx, cy), use_radians=True
        )
        lay.elevated.append(
            {
                "kind": "greenhouse",
                "poly": gh,
                "height": rng.uniform(2.5, 4),
                "angle": ang,
                "colour": jitter(rng, rgb(224, 228, 230), 0.03),
            }
        )


def _orchard_trees(rng, lay: Layout, ppm) -> None:
    for i, sl in enumerate(parcel_slices(lay.lab, len(lay.parcels))):
        if sl is None or lay.parcels[i]["kind"] != "orchard":
            continue
        m = lay.lab[sl] == i
        spacing = rng.uniform(3.5, 6) * ppm
        xs, ys = flora.points(
            rng, m.astype(np.float32), ppm, 0, (spacing / ppm, spacing / ppm * 0.9), lay.parcels[i]["angle"]
        )
        r = rng.uniform(1.2, 2.4) * ppm
        col = jitter(rng, rgb(58, 96, 46), 0.1)
        for x, y in zip(xs, ys, strict=False):
            c = Point(x + sl[1].start, y + sl[0].start)
            lay.elevated.append(
                {
                    "kind": "tree",
                    "poly": c.buffer(r * rng.uniform(0.8, 1.15), 12),
                    "height": rng.uniform(2.5, 5),
                    "colour": col,
                }
            )


# ----------------------------------------------------------------------------------------------- painting
