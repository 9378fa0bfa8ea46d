"""Painting the planned landscape of the alternative renderer (:mod:`.land`): parcels (soil, then their
plants), red plastic, and the elevated things (compound walls and roofs, greenhouses, trees) with their
shadows."""

from __future__ import annotations

import numpy as np
from scipy import ndimage
from shapely import affinity

from . import flora
from .land import SOILS, Layout, parcel_slices
from .prims import composite, jitter, lattice_noise, rasterize, rgb


def paint_ground(img: np.ndarray, lay: Layout, rng: np.random.Generator, ppm: float, shadow) -> None:
    """Paint every parcel (soil, then its plants) into ``img``."""
    h, w = lay.lab.shape
    for i, sl in enumerate(parcel_slices(lay.lab, len(lay.parcels))):
        if sl is None:
            continue
        m = (lay.lab[sl] == i).astype(np.float32)
        paint_kind(img[sl], m, rng, ppm, lay.parcels[i]["kind"], lay.parcels[i]["angle"], shadow)


def soil(img, m, rng, ppm, colour) -> None:
    """Loess-like soil: low-frequency moisture patches and clods."""
    hh, ww = m.shape
    tone = 1 + 0.08 * lattice_noise(rng, hh, ww, 6 * ppm, 3) + 0.06 * lattice_noise(rng, hh, ww, 1.2, 1)
    composite(img, m, jitter(rng, colour, 0.05)[None, None, :] * tone[..., None])


def paint_kind(img, m, rng, ppm: float, kind: str, angle: float, shadow) -> None:
    """Paint one parcel of ``kind`` into the image view ``img`` where ``m`` is set."""
    hh, ww = m.shape
    if kind in flora.PLANTS:
        base = "fallow" if kind in ("weeds", "corn_poppy", "rose") else "loess"
        soil(img, m, rng, ppm, SOILS[base] * rng.uniform(0.85, 1.0))
        if kind in ("maize", "maize_young") or rng.random() < 0.3:
            flora.plant_field(img, m, rng, ppm, "weeds", angle, shadow, cover_gap=0.85)
        flora.plant_field(img, m, rng, ppm, kind, angle, shadow)
        return
    soil(img, m, rng, ppm, SOILS.get(kind, SOILS["loess"]))
    yy, xx = np.mgrid[0:hh, 0:ww].astype(np.float32)
    v = -xx * np.sin(angle) + yy * np.cos(angle)
    if kind == "plough":
        ph = (v / (rng.uniform(0.25, 0.4) * ppm)) % 1.0
        img *= (1 - 0.18 * m * (ph < 0.35))[..., None]
    elif kind == "wheat":
        flora._row_texture(img, m, rng, ppm, SOILS["wheat"], rng.uniform(0.15, 0.25), angle)
    elif kind == "stubble":
        ph = (v / (rng.uniform(0.15, 0.25) * ppm)) % 1.0
        img *= (1 + 0.08 * m * np.cos(2 * np.pi * ph))[..., None]
        img += (0.05 * m * np.clip(lattice_noise(rng, hh, ww, 1.0, 1), 0, None))[..., None]
    elif kind == "mulch":
        period = rng.uniform(1.2, 1.8) * ppm
        film = ((v / period) % 1.0) < rng.uniform(0.5, 0.7)
        sheen = 1 + 0.08 * lattice_noise(rng, hh, ww, 0.8 * ppm, 2)
        composite(img, m * film, SOILS["mulch"][None, None, :] * sheen[..., None])
        if rng.random() < 0.6:
            flora.plant_field(
                img,
                m * film,
                rng,
                ppm,
                "lettuce" if rng.random() < 0.5 else "maize_young",
                angle,
                shadow,
                cover_gap=0.3,
            )
    elif kind == "fallow":
        flora.plant_field(img, m, rng, ppm, "weeds", angle, shadow)
    elif kind == "orchard":
        flora.plant_field(img, m, rng, ppm, "weeds", angle, shadow, cover_gap=0.3)
    elif kind == "track":
        ph = np.abs(((v / (rng.uniform(1.5, 2.0) * ppm)) % 1.0) - 0.5)
        img *= (1 - 0.08 * m * (ph < 0.08))[..., None]
    elif kind == "water":
        img += (0.04 * m * lattice_noise(rng, hh, ww, 2 * ppm, 2))[..., None]
    elif kind in ("riser", "bund"):
        flora.plant_field(img, m, rng, ppm, "weeds", angle, shadow, cover_gap=0.4)


def red_plastic(img, m, rng, ppm) -> None:
    """Red plastic sheeting or bags: saturated red with wrinkle highlights."""
    hh, ww = m.shape
    wr = lattice_noise(rng, hh, ww, max(0.15 * ppm, 1.5), 2)
    col = jitter(rng, [rgb(196, 32, 36), rgb(176, 26, 50), rgb(212, 64, 46)][int(rng.integers(3))], 0.06)
    composite(img, m, col[None, None, :] * (1 + 0.25 * wr)[..., None])


def paint_elevated(
    img: np.ndarray,
    lay: Layout,
    rng: np.random.Generator,
    ppm: float,
    shadow,
    sun: tuple[float, float],
    skip=None,
) -> None:
    """Cast shadows of walls, roofs, greenhouses and trees, then draw them (north-up image)."""
    h, w = img.shape[:2]
    if not lay.elevated:
        return
    sh_polys = []
    for e in lay.elevated:
        moved = affinity.translate(e["poly"], shadow[0] * e["height"], shadow[1] * e["height"])
        sh_polys.append(moved.union(e["poly"]).convex_hull if e["kind"] != "wall" else moved)
    sh = ndimage.gaussian_filter(rasterize(sh_polys, h, w).astype(np.float32), max(0.05 * ppm, 0.6))
    img *= (1 - rng.uniform(0.35, 0.55) * sh)[..., None] * np.array([0.97, 0.99, 1.05], np.float32)
    for e in lay.elevated:
        m = rasterize([e["poly"]], h, w).astype(np.float32)
        ys, xs = np.nonzero(m)
        if len(xs) == 0:
            continue
        sl = (slice(ys.min(), ys.max() + 1), slice(xs.min(), xs.max() + 1))
        mm, view = m[sl], img[sl]
        hh, ww = mm.shape
        yy, xx = np.mgrid[sl[0], sl[1]].astype(np.float32)
        if e["kind"] == "tree":
            c = e["poly"].centroid
            r = max(np.sqrt(e["poly"].area / np.pi), 1.0)
            lit = np.clip(((xx - c.x) * sun[0] + (yy - c.y) * sun[1]) / r, -1, 1)
            clumps = lattice_noise(rng, hh, ww, max(0.5 * ppm, 1.5), 2)
            edge = np.clip(1 - np.hypot(xx - c.x, yy - c.y) / r, 0, 1)
            composite(
                view,
                mm * np.clip(edge * 3 + 0.2 * clumps, 0, 1),
                e["colour"][None, None, :] * (1 + 0.25 * lit + 0.25 * clumps)[..., None],
            )
        elif e["kind"] == "roof":
            a = e["angle"]
            v = -xx * np.sin(a) + yy * np.cos(a)
            vc = -e["poly"].centroid.x * np.sin(a) + e["poly"].centroid.y * np.cos(a)
            face = np.where(v > vc, 1.0, -1.0)
            facing = np.sign(-np.sin(a) * sun[0] + np.cos(a) * sun[1]) * face
            ribs = 1 + 0.06 * np.cos(2 * np.pi * (xx * np.cos(a) + yy * np.sin(a)) / max(0.2 * ppm, 2.0))
            composite(view, mm, e["colour"][None, None, :] * ((1 + 0.12 * facing) * ribs)[..., None])
        elif e["kind"] == "greenhouse":
            a = e["angle"]
            u = xx * np.cos(a) + yy * np.sin(a)
            ribs = 1 - 0.12 * (((u / max(1.0 * ppm, 2.0)) % 1.0) < 0.08)
            film = (
                e["colour"][None, None, :] * (ribs + 0.05 * lattice_noise(rng, hh, ww, 2 * ppm, 2))[..., None]
            )
            composite(view, mm, film)
            quilt = e["poly"].difference(
                affinity.translate(e["poly"], -np.sin(a) * -1.0 * ppm, np.cos(a) * -1.0 * ppm)
            )
            qm = rasterize([affinity.translate(quilt, -sl[1].start, -sl[0].start)], hh, ww).astype(np.float32)
            composite(view, qm, rgb(92, 76, 58))
        else:
            composite(view, mm, e["colour"])
