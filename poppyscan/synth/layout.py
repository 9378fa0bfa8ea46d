"""Scene layout in pixel coordinates: farmland parcels, roads, hamlets (courtyard houses), sites for plots.

A :class:`Layout` is a plan, not pixels: ground items (polygon, texture, params) painted in order,
elevated items (roofs, walls, trees, vehicles) that cast shadows, and *sites* where poppy plots or
confusers may be placed (``field``, ``edge``, ``intercrop``, ``courtyard``, ``garden``, ``roadside``).
All sizes are drawn in metres and converted with ``ppm`` (pixels per metre).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
from shapely.geometry import LineString, Polygon, box
from shapely.ops import unary_union

from .materials import ROOF_COLOURS, jitter_colour, rgb
from .noise import blob_polygon, rotated_rect

CROPS = [
    "wheat",
    "garlic",
    "rapeseed",
    "maize",
    "vegetables",
    "soil",
    "orchard",
    "lettuce",
    "grass",
    "cabbage",
]
CROP_P = np.array([0.26, 0.09, 0.08, 0.08, 0.12, 0.12, 0.06, 0.06, 0.06, 0.07])


@dataclass
class Layout:
    h: int
    w: int
    ppm: float
    theta: float
    ground: list = field(default_factory=list)  # (poly, texture name, params)
    elevated: list = field(default_factory=list)  # dict(poly, height, tex, params, kind)
    sites: dict = field(default_factory=dict)  # setting -> list of (host poly, params)
    confusers: list = field(default_factory=list)  # dict(poly, kind)
    trees_later: list = field(default_factory=list)  # candidate tree crowns placed after plots

    def site(self, setting: str, host: Polygon, **params) -> None:
        if host.is_empty or host.area < 4 * self.ppm**2:
            return
        self.sites.setdefault(setting, []).append((host, params))

    def frame(self) -> Polygon:
        return box(0, 0, self.w, self.h)


class Frame:
    """A rotated (u along theta, v across) coordinate frame centred on the scene."""

    def __init__(self, cx: float, cy: float, theta: float) -> None:
        self.cx, self.cy, self.c, self.s = cx, cy, np.cos(theta), np.sin(theta)

    def xy(self, u, v):
        return self.cx + u * self.c - v * self.s, self.cy + u * self.s + v * self.c

    def rect(self, u0, v0, u1, v1) -> Polygon:
        return Polygon([self.xy(u, v) for u, v in ((u0, v0), (u1, v0), (u1, v1), (u0, v1))])

    def extent(self, w: int, h: int):
        us, vs = [], []
        for x, y in ((0, 0), (w, 0), (w, h), (0, h)):
            dx, dy = x - self.cx, y - self.cy
            us.append(dx * self.c + dy * self.s)
            vs.append(-dx * self.s + dy * self.c)
        return min(us), max(us), min(vs), max(vs)


def crop_params(rng: np.random.Generator, crop: str, angle: float) -> tuple[str, dict]:
    """Texture name and parameters for a crop."""
    if crop == "wheat":
        return "wheat", {
            "angle": angle,
            "ripeness": rng.uniform(0, 0.7) if rng.random() < 0.7 else rng.uniform(0.6, 1.0),
        }
    if crop == "garlic":
        return "row_crop", {
            "angle": angle,
            "row_spacing": rng.uniform(0.16, 0.25),
            "plant_spacing": rng.uniform(0.1, 0.15),
            "radius": rng.uniform(0.04, 0.07),
            "colour": jitter_colour(rng, rgb(92, 132, 100), 0.08),
            "mulch": "white" if rng.random() < 0.5 else None,
            "fill": 0.92,
        }
    if crop == "maize":
        return "row_crop", {
            "angle": angle,
            "row_spacing": rng.uniform(0.5, 0.7),
            "plant_spacing": rng.uniform(0.2, 0.3),
            "radius": rng.uniform(0.04, 0.13),
            "colour": jitter_colour(rng, rgb(86, 150, 52), 0.08),
            "fill": rng.uniform(0.8, 0.97),
        }
    if crop == "vegetables":
        return "row_crop", {
            "angle": angle,
            "row_spacing": rng.uniform(0.3, 0.55),
            "plant_spacing": rng.uniform(0.25, 0.4),
            "radius": rng.uniform(0.08, 0.2),
            "fill": rng.uniform(0.7, 0.97),
            "colour": jitter_colour(
                rng, [rgb(60, 110, 45), rgb(90, 140, 60), rgb(70, 120, 80)][rng.integers(3)], 0.1
            ),
            "mulch": rng.choice([None, None, "white", "black"]),
        }
    if crop == "cabbage":
        return "row_crop", {
            "angle": angle,
            "row_spacing": rng.uniform(0.4, 0.55),
            "plant_spacing": rng.uniform(0.35, 0.5),
            "radius": rng.uniform(0.13, 0.23),
            "colour": jitter_colour(rng, rgb(118, 152, 128), 0.08),
            "fill": 0.95,
        }
    if crop == "lettuce":
        return "lettuce", {"angle": angle}
    if crop == "rapeseed":
        return "rapeseed", {"flowering": bool(rng.random() < 0.65)}
    if crop == "orchard":
        return "grass", {}
    if crop == "grass":
        return "grass", {}
    return "soil", {"angle": angle, "furrows": bool(rng.random() < 0.7)}


def tree(rng: np.random.Generator, ppm: float, x: float, y: float, d_m: float) -> dict:
    r = d_m * ppm / 2
    return {
        "poly": blob_polygon(rng, x, y, r, r * rng.uniform(0.85, 1.0), rng.uniform(0, np.pi), 0.18, 16),
        "height": rng.uniform(max(3.0, d_m), d_m * 2.2),
        "tex": "crown",
        "kind": "tree",
        "params": {
            "colour": jitter_colour(
                rng,
                [rgb(52, 82, 40), rgb(66, 95, 48), rgb(45, 70, 42), rgb(80, 102, 55)][rng.integers(4)],
                0.1,
            )
        },
    }


def farmland(lay: Layout, rng: np.random.Generator, region: Polygon) -> None:
    ppm, th = lay.ppm, lay.theta
    fr = Frame(lay.w / 2, lay.h / 2, th)
    u0, u1, v0, v1 = fr.extent(lay.w, lay.h)
    lay.ground.append((region, rng.choice(["dirt", "grass"]), {}))
    v = v0 - rng.uniform(0, 15) * ppm
    while v < v1:
        width = rng.uniform(4, 28) * ppm
        gap = rng.choice([0.3, 0.5, 1.5, 2.5], p=[0.35, 0.3, 0.2, 0.15]) * ppm
        u = u0 - rng.uniform(0, 60) * ppm
        while u < u1:
            length = rng.uniform(15, 140) * ppm
            crop = str(rng.choice(CROPS, p=CROP_P))
            ang = th if rng.random() < 0.8 else th + np.pi / 2
            pg = fr.rect(u + gap / 2, v + gap / 2, u + length - gap / 2, v + width - gap / 2).intersection(
                region
            )
            u += length
            if pg.is_empty or pg.area < (1.5 * ppm) ** 2 or pg.geom_type not in ("Polygon", "MultiPolygon"):
                continue
            tex, params = crop_params(rng, crop, ang)
            lay.ground.append((pg, tex, params))
            if crop in ("lettuce", "cabbage"):  # rosettes in rows: the look-alikes of poppy rosettes
                lay.confusers.append({"poly": pg, "kind": crop})
            if crop == "rapeseed" and params["flowering"]:
                lay.confusers.append({"poly": pg, "kind": "rapeseed"})
            if crop == "orchard":
                sp = rng.uniform(3, 5)
                d = rng.uniform(2, 4.5)
                cu = np.arange(u - length + sp * ppm / 2, u, sp * ppm)
                cv_ = np.arange(v + sp * ppm / 2, v + width, sp * ppm * rng.uniform(1, 1.4))
                for a in cu:
                    for b in cv_:
                        x, y = fr.xy(a, b)
                        t = tree(rng, ppm, x, y, d * rng.uniform(0.8, 1.2))
                        if pg.contains(t["poly"].centroid):
                            lay.elevated.append(t)
                continue
            host = pg if pg.geom_type == "Polygon" else max(pg.geoms, key=lambda g: g.area)
            lay.site("edge", host, angle=ang, crop=crop)
            if crop in ("wheat", "garlic", "rapeseed"):
                lay.site("intercrop", host, angle=ang, crop=crop)
            else:
                lay.site("field", host, angle=ang, crop=crop)
        v += width


def road(lay: Layout, rng: np.random.Generator, region: Polygon) -> None:
    ppm = lay.ppm
    ang = lay.theta + (np.pi / 2 if rng.random() < 0.5 else 0)
    d = np.hypot(lay.w, lay.h)
    cx, cy = rng.uniform(0.15, 0.85) * lay.w, rng.uniform(0.15, 0.85) * lay.h
    width = rng.uniform(2.5, 7) * ppm
    line = LineString(
        [(cx - d * np.cos(ang), cy - d * np.sin(ang)), (cx + d * np.cos(ang), cy + d * np.sin(ang))]
    )
    surf = line.buffer(width / 2, cap_style=2).intersection(region)
    if surf.is_empty:
        return
    mat = str(rng.choice(["asphalt", "concrete", "dirt"], p=[0.35, 0.45, 0.2]))
    verge = line.buffer(width / 2 + rng.uniform(0.5, 2.0) * ppm, cap_style=2).intersection(region)
    lay.ground.append((verge, "grass", {}))
    lay.ground.append((surf, mat, {"angle": ang}))
    for side in (-1, 1):
        strip = line.buffer(side * (width / 2 + 1.2 * ppm), single_sided=True, cap_style=2).intersection(
            region
        )
        strip = strip.difference(surf) if not strip.is_empty else strip
        if not strip.is_empty and strip.geom_type == "Polygon":
            lay.site("roadside", strip, angle=ang)
        if rng.random() < 0.5:  # tree row (poplars) along the road
            sp, dm = rng.uniform(3, 6) * ppm, rng.uniform(2.5, 5.5)
            off = width / 2 + rng.uniform(1.5, 3.0) * ppm
            for t in np.arange(-d, d, sp):
                x = cx + t * np.cos(ang) - side * off * np.sin(ang)
                y = cy + t * np.sin(ang) + side * off * np.cos(ang)
                if 0 <= x < lay.w and 0 <= y < lay.h:
                    lay.trees_later.append(tree(rng, ppm, x, y, dm * rng.uniform(0.8, 1.2)))
    for _ in range(int(rng.poisson(0.8))):
        t = rng.uniform(-0.5, 0.5) * min(lay.w, lay.h)
        x, y = cx + t * np.cos(ang), cy + t * np.sin(ang)
        add_vehicle(lay, rng, x, y, ang + rng.choice([0, np.pi]), region)


def add_vehicle(
    lay: Layout, rng: np.random.Generator, x: float, y: float, ang: float, within: Polygon
) -> None:
    ppm = lay.ppm
    kind = rng.choice(["car", "car", "van", "tricycle", "truck"])
    length, width = {"car": (4.5, 1.8), "van": (5.0, 1.9), "tricycle": (2.8, 1.2), "truck": (7.0, 2.3)}[kind]
    poly = rotated_rect(x, y, length * ppm, width * ppm, ang)
    if not within.contains(poly):
        return
    colour = [
        rgb(200, 30, 35),
        rgb(230, 230, 228),
        rgb(160, 165, 170),
        rgb(35, 38, 45),
        rgb(40, 80, 160),
        rgb(210, 60, 40),
        rgb(120, 120, 125),
    ][rng.integers(7)]
    lay.elevated.append(
        {
            "poly": poly,
            "height": 1.5,
            "tex": "vehicle",
            "kind": "vehicle",
            "params": {"colour": jitter_colour(rng, colour, 0.05), "angle": ang},
        }
    )
    lay.confusers.append({"poly": poly, "kind": "vehicle"})


def village(lay: Layout, rng: np.random.Generator, region: Polygon) -> None:
    ppm, th = lay.ppm, lay.theta
    fr = Frame(lay.w / 2 + rng.uniform(-20, 20) * ppm, lay.h / 2 + rng.uniform(-20, 20) * ppm, th)
    u0, u1, v0, v1 = fr.extent(lay.w, lay.h)
    lane_mat = str(rng.choice(["concrete", "asphalt", "dirt"], p=[0.6, 0.2, 0.2]))
    lay.ground.append((region, lane_mat, {"angle": th}))
    lot_w, lot_d = rng.uniform(10, 16) * ppm, rng.uniform(14, 22) * ppm
    lane = rng.uniform(3, 6) * ppm
    v = v0 - rng.uniform(0, lot_d)
    while v < v1:
        u = u0 - rng.uniform(0, lot_w)
        while u < u1:
            lw = lot_w * rng.uniform(0.85, 1.15)
            lot = fr.rect(u, v, u + lw, v + lot_d)
            if lot.intersects(region) and region.buffer(3 * ppm).contains(lot.centroid):
                courtyard(lay, rng, fr, u, v, lw, lot_d, region)
            u += lw
        v += lot_d + lane
    for _ in range(int(rng.poisson(1.0))):
        x, y = rng.uniform(0, lay.w), rng.uniform(0, lay.h)
        add_vehicle(lay, rng, x, y, th + rng.choice([0, np.pi / 2]), region)


def courtyard(lay: Layout, rng, fr: Frame, u, v, lw, ld, region: Polygon) -> None:
    ppm = lay.ppm
    kind = rng.choice(["house", "garden", "vacant"], p=[0.78, 0.14, 0.08])
    lot = fr.rect(u, v, u + lw, v + ld).intersection(region)
    if lot.is_empty or lot.geom_type != "Polygon":
        return
    if kind == "vacant":
        lay.ground.append((lot, "grass" if rng.random() < 0.6 else "soil", {}))
        lay.site("garden", lot, angle=lay.theta, crop="grass")
        return
    if kind == "garden":
        lay.ground.append((lot, "soil", {"angle": lay.theta}))
        nb = int(rng.integers(2, 5))
        for i in range(nb):
            bed = fr.rect(
                u + 0.5 * ppm,
                v + ld * i / nb + 0.3 * ppm,
                u + lw - 0.5 * ppm,
                v + ld * (i + 1) / nb - 0.3 * ppm,
            )
            bed = bed.intersection(lot)
            if bed.is_empty or bed.geom_type != "Polygon":
                continue
            crop = str(rng.choice(["vegetables", "cabbage", "soil", "lettuce", "maize"]))
            tex, params = crop_params(rng, crop, lay.theta)
            lay.ground.append((bed, tex, params))
            if crop in ("lettuce", "cabbage"):
                lay.confusers.append({"poly": bed, "kind": crop})
            lay.site("garden", bed, angle=lay.theta, crop=crop)
        return
    wall = 0.25 * ppm
    yard_mat = str(rng.choice(["concrete", "bricks", "soil"], p=[0.55, 0.25, 0.2]))
    lay.ground.append((lot, yard_mat, {"angle": lay.theta}))
    # walls as thin elevated strips
    outer = fr.rect(u, v, u + lw, v + ld)
    inner = fr.rect(u + wall, v + wall, u + lw - wall, v + ld - wall)
    if rng.random() < 0.85:
        lay.elevated.append(
            {
                "poly": outer.difference(inner),
                "height": rng.uniform(1.8, 2.6),
                "tex": "wall",
                "kind": "wall",
                "params": {"colour": jitter_colour(rng, rgb(150, 148, 142), 0.1)},
            }
        )
    depth = rng.uniform(5, 8) * ppm
    flip = rng.random() < 0.15  # main house on the south side sometimes
    hv0, hv1 = (v + wall, v + depth) if not flip else (v + ld - depth, v + ld - wall)
    buildings = [(fr.rect(u + wall, hv0, u + lw - wall, hv1), (hv0 + hv1) / 2, rng.uniform(3, 7.5))]
    if rng.random() < 0.6:
        sw = rng.uniform(3, 4.5) * ppm
        left = rng.random() < 0.5
        su0, su1 = (u + wall, u + wall + sw) if left else (u + lw - wall - sw, u + lw - wall)
        sv0 = hv1 + 0.5 * ppm if not flip else v + wall
        sv1 = sv0 + rng.uniform(0.3, 0.6) * (ld - depth)
        side = fr.rect(su0, sv0, su1, sv1)
        buildings.append((side, None, rng.uniform(2.5, 4)))
    for poly, ridge_v, height in buildings:
        poly = poly.intersection(region)
        if poly.is_empty or poly.geom_type != "Polygon":
            continue
        colour_name = str(rng.choice(list(ROOF_COLOURS), p=[0.3, 0.13, 0.17, 0.17, 0.1, 0.1, 0.03]))
        flat = colour_name in ("white", "dark") or rng.random() < 0.15
        params = {
            "colour": jitter_colour(rng, ROOF_COLOURS[colour_name], 0.08),
            "angle": lay.theta,
            "kind": "steel" if colour_name in ("blue", "green") else ("flat" if flat else "tile"),
            "gable": not flat,
            "light": rng.uniform(1.05, 1.25),
        }
        if not flat and ridge_v is not None:
            params["ridge"] = ridge_v  # across-coordinate in the frame; converted in the renderer
            params["frame"] = fr
        lay.elevated.append({"poly": poly, "height": height, "tex": "roof", "kind": "roof", "params": params})
        if colour_name in ("red", "terracotta"):
            lay.confusers.append({"poly": poly, "kind": "red_roof"})
    yard = inner.difference(unary_union([b[0] for b in buildings]).buffer(0.3 * ppm)).intersection(region)
    if yard.geom_type == "MultiPolygon":
        yard = max(yard.geoms, key=lambda g: g.area)
    if yard.is_empty or yard.geom_type != "Polygon":
        return
    lay.site("courtyard", yard, angle=lay.theta, crop=yard_mat)
    if rng.random() < 0.35:  # vegetable bed in the yard
        c = yard.centroid
        bed = rotated_rect(
            c.x, c.y, rng.uniform(2, 5) * ppm, rng.uniform(1.2, 3) * ppm, lay.theta
        ).intersection(yard)
        if bed.geom_type == "Polygon" and not bed.is_empty:
            crop = str(rng.choice(["vegetables", "soil", "cabbage"]))
            tex, params = crop_params(rng, crop, lay.theta)
            lay.ground.append((bed, tex, params))
            if crop == "cabbage":
                lay.confusers.append({"poly": bed, "kind": "cabbage"})
            lay.site("garden", bed, angle=lay.theta, crop="vegetables")
    for _ in range(int(rng.poisson(0.8))):
        c = yard.representative_point()
        x, y = c.x + rng.normal(0, 2 * ppm), c.y + rng.normal(0, 2 * ppm)
        lay.trees_later.append(tree(rng, ppm, x, y, rng.uniform(2.5, 6)))
    if rng.random() < 0.2:
        c = yard.representative_point()
        add_vehicle(lay, rng, c.x, c.y, lay.theta + rng.choice([0, np.pi / 2]), yard)


def make_layout(rng: np.random.Generator, h: int, w: int, ppm: float) -> tuple[Layout, str]:
    """Plan a scene: farmland, hamlet, or a hamlet's edge with fields."""
    theta = (
        float(rng.normal(0, 0.06) + rng.integers(0, 2) * np.pi / 2)
        if rng.random() < 0.65
        else float(rng.uniform(0, np.pi))
    )
    lay = Layout(h, w, ppm, theta)
    frame = lay.frame()
    kind = str(rng.choice(["farm", "village", "edge"], p=[0.45, 0.22, 0.33]))
    if kind == "farm":
        farmland(lay, rng, frame)
        if rng.random() < 0.5:
            road(lay, rng, frame)
    elif kind == "village":
        village(lay, rng, frame)
    else:
        ang = theta + rng.choice([0, np.pi / 2])
        d = np.hypot(w, h)
        cx, cy = w / 2 + rng.normal(0, w * 0.15), h / 2 + rng.normal(0, h * 0.15)
        half = Polygon(
            [
                (cx - d * np.cos(ang), cy - d * np.sin(ang)),
                (cx + d * np.cos(ang), cy + d * np.sin(ang)),
                (cx + d * np.cos(ang) - d * np.sin(ang), cy + d * np.sin(ang) + d * np.cos(ang)),
                (cx - d * np.cos(ang) - d * np.sin(ang), cy - d * np.sin(ang) + d * np.cos(ang)),
            ]
        )
        a, b = frame.intersection(half), frame.difference(half)
        farmland(lay, rng, a)
        village(lay, rng, b)
        if rng.random() < 0.4:
            road(lay, rng, a)
    return lay, kind
