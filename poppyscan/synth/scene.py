"""In-memory scene rendering: :func:`render_arrays` plans a layout, places poppy plots and confusers,
paints everything, casts shadows and applies camera effects.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field

import numpy as np
from shapely import affinity
from shapely.geometry import Polygon
from shapely.ops import unary_union

from . import plants
from .camera import apply_camera, flight_footprint
from .layout import Layout, make_layout
from .materials import TEXTURES, Canvas, _mix, jitter_colour, rgb
from .noise import blob_polygon, fbm, fill_polygon, jitter_quad, polygon_mask, rotated_rect, soften
from .wild import WILD_TEXTURES, wild_layout

STAGES = ["flowering", "rosette", "capsule"]
STAGE_P = [0.55, 0.2, 0.25]
SETTINGS = ["field", "edge", "intercrop", "courtyard", "garden"]
SETTING_W = {"field": 0.27, "edge": 0.2, "intercrop": 0.25, "courtyard": 0.16, "garden": 0.12}
COLOUR_P = [0.3, 0.2, 0.15, 0.1, 0.1, 0.15]


@dataclass
class SceneArrays:
    """A rendered scene in memory.

    Attributes:
        rgb: uint8 (H, W, 3) image; zero outside the footprint.
        valid: uint8 (H, W), 1 inside the flight footprint.
        poppy: uint8 (H, W), 1 on poppy plot pixels (exactly the plot polygons rasterised).
        plots: one dict per plot: ``polygon`` (shapely, pixel coordinates: x = column, y = row, pixel
            (r, c) covers [c, c+1) x [r, r+1)), ``stage``, ``flower_colour``, ``setting``, ``area_m2``.
        confusers: dicts with ``polygon`` (pixel coordinates, clipped to the footprint) and ``kind``.
        footprint: the valid-area polygon in pixel coordinates.
        meta: scene kind, gsd, camera settings, timings.
    """

    rgb: np.ndarray
    valid: np.ndarray
    poppy: np.ndarray
    plots: list[dict]
    confusers: list[dict]
    footprint: Polygon
    meta: dict = field(default_factory=dict)


# ----------------------------------------------------------------------------------------- elevated textures


def crown(cv: Canvas, h, w, x0, y0, p):
    rng = cv.rng
    c = p["colour"]
    bumps = fbm(rng, h, w, max(cv.px(rng.uniform(0.4, 0.9)), 1.5), 3)
    xx, yy = cv.coords(h, w, x0, y0)
    cx, cy, r = p["cx"], p["cy"], max(p["r"], 1.0)
    sx, sy = p["sun"]
    lit = np.clip(((xx - cx) * sx + (yy - cy) * sy) / r, -1, 1)  # towards the sun is brighter
    return c[None, None, :] * (1 + 0.22 * bumps + 0.22 * lit)[..., None]


def wall(cv: Canvas, h, w, x0, y0, p):
    return np.broadcast_to(p["colour"], (h, w, 3)) * (1 + 0.05 * fbm(cv.rng, h, w, 3, 2))[..., None]


def vehicle(cv: Canvas, h, w, x0, y0, p):
    rng = cv.rng
    out = np.broadcast_to(p["colour"], (h, w, 3)).copy()
    xx, yy = cv.coords(h, w, x0, y0)
    a = p["angle"]
    u = (xx - p["cx"]) * np.cos(a) + (yy - p["cy"]) * np.sin(a)
    v = -(xx - p["cx"]) * np.sin(a) + (yy - p["cy"]) * np.cos(a)
    L, W = p["length"], p["width"]
    glass = (np.abs(u - L * 0.12) < L * 0.1) & (np.abs(v) < W * 0.4)
    out[glass] = rgb(40, 45, 55) * rng.uniform(0.8, 1.2)
    out *= (1 + 0.15 * np.clip(-np.abs(v) / (W / 2) + 0.5, -0.5, 0.5))[..., None]
    return out


ELEVATED_TEX = {"crown": crown, "wall": wall, "vehicle": vehicle}


def red_object(cv: Canvas, h, w, x0, y0, p):
    """Red ground clutter: plastic sheeting, drying chillies, red mats."""
    rng = cv.rng
    c = jitter_colour(
        rng, [rgb(200, 35, 35), rgb(175, 30, 30), rgb(215, 60, 50), rgb(150, 25, 40)][rng.integers(4)], 0.08
    )
    n = fbm(rng, h, w, cv.px(rng.uniform(0.05, 0.5)), 3)
    return c[None, None, :] * (1 + rng.uniform(0.08, 0.25) * n)[..., None]


# ----------------------------------------------------------------------------------------- placement


def _shape(rng, setting: str, area: float, host: Polygon, angle: float, ppm: float):
    """A candidate plot polygon of ~``area`` px² inside ``host``."""
    if setting in ("edge", "roadside"):
        width = min(rng.uniform(0.6, 3.0) * ppm, np.sqrt(area))
        length = area / width
        rect = host.minimum_rotated_rectangle
        pts = np.asarray(rect.exterior.coords)[:4]
        i = int(rng.integers(4))
        a, b = pts[i], pts[(i + 1) % 4]
        edge_len = float(np.hypot(*(b - a)))
        if edge_len < length:
            length = edge_len * 0.9
        d = (b - a) / max(edge_len, 1e-9)
        nrm = np.array([-d[1], d[0]])
        if host.contains(Polygon([a + nrm * 1, b + nrm * 1, a + nrm * 2]).centroid) is False:
            nrm = -nrm
        t = rng.uniform(0, max(edge_len - length, 0))
        off = rng.uniform(0.1, 0.6) * ppm + width / 2
        c = a + d * (t + length / 2) + nrm * off
        ang = float(np.arctan2(d[1], d[0]))
        return jitter_quad(rng, c[0], c[1], length, width, ang, 0.04)
    aspect = rng.uniform(1.0, 3.0)
    length, width = np.sqrt(area * aspect), np.sqrt(area / aspect)
    minx, miny, maxx, maxy = host.bounds
    c = host.representative_point() if rng.random() < 0.2 else None
    cx = c.x if c is not None else rng.uniform(minx, maxx)
    cy = c.y if c is not None else rng.uniform(miny, maxy)
    ang = angle + (rng.normal(0, 0.05) if rng.random() < 0.75 else rng.uniform(0, np.pi))
    if setting == "courtyard" or rng.random() < 0.55:
        return jitter_quad(rng, cx, cy, length, width, ang, 0.02 if setting == "courtyard" else 0.1)
    return blob_polygon(rng, cx, cy, length / 2 * 1.1, width / 2 * 1.1, ang, 0.3, 20)


def place(rng, lay: Layout, settings: dict, area_m2_range, avoid: list, inner: Polygon, tries: int = 40):
    """Pick a site and a polygon inside it that avoids ``avoid``; returns (poly, setting, params) or None."""
    avail = [s for s in settings if lay.sites.get(s)]
    if not avail:
        return None
    wts = np.array([settings[s] for s in avail], float)
    ppm2 = lay.ppm**2
    for _ in range(tries):
        setting = str(rng.choice(avail, p=wts / wts.sum()))
        host, params = lay.sites[setting][int(rng.integers(len(lay.sites[setting])))]
        host = host.intersection(inner)
        if host.is_empty or host.area < area_m2_range[0] * ppm2 * 1.3:
            continue
        if host.geom_type != "Polygon":
            host = max(getattr(host, "geoms", [host]), key=lambda g: g.area)
            if host.geom_type != "Polygon":
                continue
        hi = min(area_m2_range[1], host.area / ppm2 * 0.6)
        lo = area_m2_range[0]
        if hi <= lo:
            continue
        area = float(np.exp(rng.uniform(np.log(lo), np.log(hi)))) * ppm2
        poly = _shape(rng, setting, area, host, params.get("angle", lay.theta), lay.ppm)
        if poly.is_empty or not poly.is_valid or not host.contains(poly):
            continue
        if any(poly.intersects(a) for a in avoid):
            continue
        return poly, setting, params
    return None


# ----------------------------------------------------------------------------------------- render


def render_arrays(
    seed: int,
    size: int = 1024,
    gsd: float = 0.04,
    *,
    poppy: bool = True,
    footprint: bool = True,
    camera: bool = True,
    landscape: str = "farmland",
    draw_plots: bool = True,
) -> SceneArrays:
    """Render a synthetic drone orthomosaic scene in memory.

    Args:
        seed: the only source of randomness (numpy Generator); same seed, same arrays.
        size: width and height in pixels.
        gsd: ground sample distance, metres per pixel; all object sizes are in metres.
        poppy: False renders confusers and farmland without any poppy plot (false-alarm scenes).
        footprint: False makes the whole frame valid (no irregular flight footprint).
        camera: False skips illumination, seamline, blur, noise and JPEG effects (for debugging).
        landscape: ``"farmland"`` (fields, hamlets, roads: where poppy is planted) or ``"wild"``
            (meadow, shrubland, wildflowers, conifers, dead wood: never any poppy, see :mod:`.wild`).
        draw_plots: False places the poppy plots and labels them as usual but leaves the ground under
            them unpainted, drawing the same random numbers, so everything else is identical: the
            difference from the ``True`` render is exactly what the plots add to the image
            (``scripts/plot_visibility.py``).
    """
    if landscape not in ("farmland", "wild"):
        raise ValueError(f"'landscape' must be 'farmland' or 'wild', got {landscape!r}")
    t0 = time.perf_counter()
    rng = np.random.default_rng(seed)
    h = w = int(size)
    ppm = 1.0 / float(gsd)
    cv = Canvas(rng, h, w, ppm)
    fp = flight_footprint(rng, h, w) if footprint else Polygon([(0, 0), (w, 0), (w, h), (0, h)])
    inner = fp.buffer(-max(2.0, 0.2 * ppm))
    if landscape == "wild":
        lay, kind = wild_layout(rng, h, w, ppm), "wild"
    else:
        lay, kind = make_layout(rng, h, w, ppm)
    # sun: azimuth east..south..west, elevation 30-72 deg; shadow vector (px per metre of height)
    az = np.deg2rad(rng.uniform(95, 265))
    elev = np.deg2rad(rng.uniform(30, 72))
    sh_len = ppm / np.tan(elev)
    sdx, sdy = -np.sin(az) * sh_len, np.cos(az) * sh_len  # image y points south
    sun = (np.sin(az), -np.cos(az))

    # ------------------------------------------------------------------ ground
    cv.img[:] = rgb(150, 135, 110)
    for poly, tex, params in lay.ground:
        _paint(cv, poly, tex, params)

    # ------------------------------------------------------------------ poppy plots
    avoid = [e["poly"].buffer(0.2 * ppm) for e in lay.elevated]
    plots: list[dict] = []
    if poppy:
        n = min(1 + int(rng.poisson(1.3)), 7)
        for _ in range(n):
            got = place(
                rng, lay, SETTING_W, (2.0, 400.0) if rng.random() < 0.5 else (15.0, 400.0), avoid, inner
            )
            if got is None:
                got = place(rng, lay, SETTING_W, (2.0, 400.0), avoid, inner)
            if got is None:
                continue
            poly, setting, params = got
            stage = str(rng.choice(STAGES, p=STAGE_P))
            colour = str(rng.choice(plants.POPPY_COLOUR_NAMES, p=COLOUR_P))
            base = {"intercrop": "existing"}.get(setting, "host" if params.get("crop") == "soil" else "soil")
            cv.paint(
                poly,
                plants.poppy if draw_plots else _unpainted(plants.poppy),
                {
                    "stage": stage,
                    "colour": colour,
                    "base": base,
                    "angle": params.get("angle", lay.theta),
                    "share": rng.uniform(0.4, 0.8),
                },
            )
            plots.append(
                {
                    "polygon": poly,
                    "stage": stage,
                    "flower_colour": colour if stage != "rosette" else "none",
                    "setting": setting,
                    "area_m2": poly.area / ppm**2,
                }
            )
            avoid.append(poly.buffer(0.5 * ppm))
    plot_union = unary_union([p["polygon"] for p in plots]) if plots else Polygon()

    # ------------------------------------------------------------------ ground confusers
    confusers = list(lay.confusers)
    kinds = {"corn_poppy": 0.4, "flowerbed": 0.25, "lettuce": 0.15, "red_object": 0.2}
    n_conf = min(int(rng.poisson(1.6 if poppy else 2.2)) + (0 if poppy else 1), 7)
    for _ in range(n_conf):
        kind_c = str(rng.choice(list(kinds), p=np.array(list(kinds.values())) / sum(kinds.values())))
        if kind_c == "corn_poppy":
            got = place(
                rng,
                lay,
                {"edge": 0.35, "intercrop": 0.25, "roadside": 0.2, "garden": 0.1, "courtyard": 0.1},
                (1.0, 150.0),
                avoid,
                inner,
            )
            if got:
                ornamental = got[1] in ("garden", "courtyard", "roadside") and rng.random() < 0.7
                cv.paint(
                    got[0],
                    plants.corn_poppy,
                    {"base": "soil" if ornamental else "existing", "ornamental": ornamental},
                )
        elif kind_c == "flowerbed":
            got = place(
                rng, lay, {"courtyard": 0.4, "roadside": 0.35, "garden": 0.25}, (0.8, 40.0), avoid, inner
            )
            if got:
                _flowerbed(cv, rng, got[0], lay.theta)
        elif kind_c == "lettuce":
            got = place(rng, lay, {"field": 0.5, "garden": 0.5}, (2.0, 200.0), avoid, inner)
            if got:
                cv.paint(got[0], plants.lettuce, {"angle": got[2].get("angle", lay.theta)})
        else:
            got = place(rng, lay, {"courtyard": 0.7, "roadside": 0.2, "edge": 0.1}, (0.5, 8.0), avoid, inner)
            if got:
                cv.paint(got[0], red_object, {})
        if got:
            confusers.append({"poly": got[0], "kind": kind_c})
            avoid.append(got[0].buffer(0.3 * ppm))

    # trees planned for roadsides/yards go in where they do not cover a plot
    for t in lay.trees_later:
        if not t["poly"].intersects(plot_union):
            lay.elevated.append(t)

    # ------------------------------------------------------------------ shadows, then elevated objects
    shadow = np.zeros((h, w), np.uint8)
    for e in lay.elevated:
        hgt = e["height"]
        moved = affinity.translate(e["poly"], sdx * hgt, sdy * hgt)
        if e["kind"] == "tree":
            trunk = rotated_rect(
                *_mid(e["poly"].centroid, moved.centroid),
                np.hypot(sdx, sdy) * hgt * 0.8,
                max(0.25 * ppm, 1.0),
                np.arctan2(sdy, sdx),
            )
            sh = unary_union([moved, trunk])
        else:
            sh = unary_union([e["poly"], moved]).convex_hull if e["poly"].geom_type == "Polygon" else moved
        fill_polygon(shadow, sh, 1)
    strength = rng.uniform(0.35, 0.6)
    s = soften(shadow.astype(np.float32), max(0.5, 0.05 * ppm))
    tint = np.array([1.0, 0.97, 0.88], np.float32)  # shadows are bluish (sky light)
    cv.img *= 1 - strength * s[..., None] * tint
    for e in lay.elevated:
        _paint_elevated(cv, e, sun)

    # ------------------------------------------------------------ poppy mask (the truth), camera, footprint
    poppy_mask = _rasterize([p["polygon"] for p in plots], h, w)
    valid = polygon_mask(h, w, fp) if footprint else np.ones((h, w), np.uint8)
    t1 = time.perf_counter()
    if camera:
        out, cam = apply_camera(rng, np.clip(cv.img, 0, 1), ppm)
    else:
        out, cam = np.clip(cv.img * 255 + 0.5, 0, 255).astype(np.uint8), {}
    out = np.maximum(out, 1)  # keep valid pixels distinct from nodata 0
    out *= valid[..., None]
    poppy_mask &= valid
    conf = []
    for c in confusers:
        g = c["poly"].intersection(fp)
        if not g.is_empty and g.area > 0:
            conf.append({"polygon": g, "kind": c["kind"]})
    meta = {
        "seed": seed,
        "size": size,
        "gsd": gsd,
        "scene_kind": kind,
        "theta": lay.theta,
        "n_plots": len(plots),
        "sun_azimuth_deg": float(np.rad2deg(az)),
        "sun_elevation_deg": float(np.rad2deg(elev)),
        "camera": cam,
        "render_s": time.perf_counter() - t0,
        "camera_s": time.perf_counter() - t1,
    }
    return SceneArrays(out, valid, poppy_mask, plots, conf, fp, meta)


def _unpainted(tex):
    """``tex`` run for its random draws only: returns the canvas as it is, so painting changes nothing."""

    def keep(cv: Canvas, h, w, x0, y0, p) -> np.ndarray:
        tex(cv, h, w, x0, y0, p)
        return cv.img[y0:y0 + h, x0:x0 + w].copy()

    return keep


def _mid(a, b):
    return (a.x + b.x) / 2, (a.y + b.y) / 2


def _rasterize(polys: list, h: int, w: int) -> np.ndarray:
    """Rasterise plot polygons with rasterio's rule (pixel centres inside), as the tests/evaluation do."""
    if not polys:
        return np.zeros((h, w), np.uint8)
    from affine import Affine
    from rasterio.features import rasterize

    return rasterize([(p, 1) for p in polys], out_shape=(h, w), transform=Affine.identity(), dtype="uint8")


def _paint(cv: Canvas, poly, tex: str, params: dict) -> None:
    if tex == "lettuce":
        cv.paint(poly, plants.lettuce, params)
    elif tex in WILD_TEXTURES:
        cv.paint(poly, WILD_TEXTURES[tex], params, edge_soft=0.6)
    else:
        cv.paint(poly, TEXTURES[tex], params, edge_soft=0.6)


def _flowerbed(cv: Canvas, rng, poly, theta):
    kerb = rng.random() < 0.6
    if kerb:
        cv.paint(poly, TEXTURES["concrete"], {"angle": theta})
        inner = poly.buffer(-max(0.12 * cv.ppm, 1.0))
        if not inner.is_empty:
            cv.paint(inner, plants.flowerbed, {"angle": theta})
    else:
        cv.paint(poly, plants.flowerbed, {"angle": theta})


def _paint_elevated(cv: Canvas, e: dict, sun) -> None:
    p = dict(e["params"])
    poly = e["poly"]
    if e["tex"] == "roof":
        fr = p.pop("frame", None)
        if fr is not None and "ridge" in p:  # ridge: frame v -> global across coordinate
            p["ridge"] = p["ridge"] - fr.cx * fr.s + fr.cy * fr.c
        # the half facing the sun is lit
        p["light"] = (
            p.get("light", 1.1)
            if (-sun[0] * np.sin(p["angle"]) + sun[1] * np.cos(p["angle"])) > 0
            else 1 / p.get("light", 1.1)
        )
        cv.paint(poly, TEXTURES["roof"], p)
        # eaves: a thin darker rim
        rim = poly.difference(poly.buffer(-max(0.15 * cv.ppm, 1.0)))
        if not rim.is_empty:
            cv.paint(rim, lambda c, h, w, x0, y0, q: c.img[y0 : y0 + h, x0 : x0 + w] * 0.8, {})
    elif e["tex"] == "crown":
        c = poly.centroid
        p.update(cx=c.x, cy=c.y, r=np.sqrt(poly.area / np.pi), sun=sun)
        cv.paint(poly, crown, p, edge_soft=0.8)
    elif e["tex"] == "vehicle":
        c = poly.centroid
        L = np.hypot(*np.diff(np.asarray(poly.exterior.coords)[:2], axis=0)[0])
        W = poly.area / max(L, 1e-6)
        p.update(cx=c.x, cy=c.y, length=L, width=W)
        cv.paint(poly, vehicle, p, edge_soft=0.5)
    else:
        cv.paint(poly, ELEVATED_TEX[e["tex"]], p)


__all__ = ["SceneArrays", "render_arrays", "_mix"]
