"""Scene composition of the alternative renderer and its file output.

:func:`render_alt_arrays` plans a landscape (:mod:`.land`), sows covert poppy plots and confusers,
casts shadows, and runs the camera model (:mod:`.optics`). :func:`render_alt_scene` writes the
scene in the on-disk format the evaluation reads (``mosaic.tif`` + ``truth.gpkg`` with layers
``plots``, ``confusers`` and ``footprint``), through the georeferencing helpers of
:mod:`poppyscan.synth.georef` (file writing only; nothing of that renderer's drawing is used).
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from scipy import ndimage
from shapely import affinity
from shapely.geometry import Polygon, shape

from ..errors import ConfigError
from ..fsutil import atomic_path, check_writable
from . import flora, land, paint
from .optics import expose, footprint
from .prims import rasterize

STAGES = {"flowering": 0.5, "capsule": 0.3, "rosette": 0.2}
COLOURS = {"red": 0.3, "pink": 0.2, "white": 0.2, "purple": 0.15, "mauve": 0.15}
SETTINGS = {"field": 0.25, "edge": 0.2, "intercrop": 0.25, "courtyard": 0.15, "garden": 0.15}
CRSS = {"EPSG:32649": (108.5, 113.9), "EPSG:4547": (112.6, 115.4)}  # CRS: centre longitude range
MASK_MODES = ("alpha", "nodata")


@dataclass
class AltScene:
    """A rendered scene in memory (pixel coordinates: x = column, y = row)."""

    rgb: np.ndarray
    valid: np.ndarray
    poppy: np.ndarray
    plots: list[dict]
    confusers: list[dict]
    footprint: Polygon
    meta: dict = field(default_factory=dict)


def _plot_shape(rng, setting: str, area: float, cx: float, cy: float, angle: float) -> Polygon:
    """An irregular plot outline of ~``area`` px² around (cx, cy)."""
    if setting == "edge" or (setting == "field" and rng.random() < 0.4):
        aspect = rng.uniform(3, 10) if setting == "edge" else rng.uniform(1.5, 4)
        ln, wd = math.sqrt(area * aspect), math.sqrt(area / aspect)
        t = np.linspace(0, 1, 7)
        top = np.c_[(t - 0.5) * ln, wd / 2 + rng.normal(0, 0.08 * wd, 7)]
        bot = np.c_[(0.5 - t) * ln, -wd / 2 + rng.normal(0, 0.08 * wd, 7)]
        pts = np.r_[top, bot]
    elif setting in ("courtyard", "garden") and rng.random() < 0.7:
        aspect = rng.uniform(1, 2.5)
        ln, wd = math.sqrt(area * aspect), math.sqrt(area / aspect)
        pts = np.array([[-ln / 2, -wd / 2], [ln / 2, -wd / 2], [ln / 2, wd / 2], [-ln / 2, wd / 2]])
        if rng.random() < 0.4:  # L-shaped corner bed
            cut = rng.uniform(0.3, 0.6)
            pts = np.array(
                [
                    [-ln / 2, -wd / 2],
                    [ln / 2, -wd / 2],
                    [ln / 2, wd / 2 - cut * wd],
                    [ln / 2 - cut * ln, wd / 2 - cut * wd],
                    [ln / 2 - cut * ln, wd / 2],
                    [-ln / 2, wd / 2],
                ]
            )
        pts = pts + rng.normal(0, 0.02 * math.sqrt(area), pts.shape)
    else:  # irregular patch: radius with a few random harmonics
        n = 24
        th = np.linspace(0, 2 * np.pi, n, endpoint=False)
        r = np.ones(n)
        for k in (2, 3, 5):
            r += rng.uniform(0, 0.25 / k * 2) * np.cos(k * th + rng.uniform(0, 6))
        aspect = rng.uniform(1, 2.2)
        pts = np.c_[r * np.cos(th) * math.sqrt(aspect), r * np.sin(th) / math.sqrt(aspect)]
        pts *= math.sqrt(area / Polygon(pts).area)
    ca, sa = math.cos(angle), math.sin(angle)
    poly = Polygon(np.c_[cx + pts[:, 0] * ca - pts[:, 1] * sa, cy + pts[:, 0] * sa + pts[:, 1] * ca])
    return poly if poly.is_valid else poly.buffer(0)


class _Sites:
    """Finds room for plots: inside one parcel, the footprint, off buildings/trees and other plots."""

    def __init__(self, lay: land.Layout, inner: np.ndarray, ppm: float):
        self.lay, self.ppm = lay, ppm
        h, w = lay.lab.shape
        elev = (
            rasterize([e["poly"] for e in lay.elevated], h, w) if lay.elevated else np.zeros((h, w), np.uint8)
        )
        self.free = inner.astype(bool) & ~ndimage.binary_dilation(elev > 0, iterations=max(1, int(0.3 * ppm)))
        self.slices = land.parcel_slices(lay.lab, len(lay.parcels))
        crops = set(land.CROPS) | set(flora.PLANTS) | set(land.GARDEN)
        self.by_setting: dict[str, list[int]] = {s: [] for s in SETTINGS}
        for i, p in enumerate(lay.parcels):
            if self.slices[i] is None:
                continue
            if p["setting"] in self.by_setting:
                self.by_setting[p["setting"]].append(i)
            if p["kind"] in crops and p["kind"] not in ("orchard",):
                self.by_setting["edge"].append(i)

    def place(self, rng, weights: dict, area_m2: tuple[float, float], tries: int = 60):
        avail = {s: w for s, w in weights.items() if self.by_setting.get(s)}
        if not avail:
            return None
        h, w = self.lay.lab.shape
        for _ in range(tries):
            setting = land._pick(rng, avail)
            pid = int(rng.choice(self.by_setting[setting]))
            sl = self.slices[pid]
            m = self.lay.lab[sl] == pid
            if setting == "edge":
                dist = ndimage.distance_transform_edt(m)
                cand = np.argwhere((dist > 0.5 * self.ppm) & (dist < 2.5 * self.ppm) & self.free[sl])
            else:
                cand = np.argwhere(m & self.free[sl])
            if len(cand) == 0:
                continue
            r, c = cand[int(rng.integers(len(cand)))]
            area = math.exp(rng.uniform(math.log(area_m2[0]), math.log(area_m2[1]))) * self.ppm**2
            area = min(area, 0.5 * m.sum())
            if area < area_m2[0] * self.ppm**2:
                continue
            ang = self.lay.parcels[pid]["angle"] + (
                rng.normal(0, 0.08) if rng.random() < 0.7 else rng.uniform(0, 3)
            )
            poly = _plot_shape(rng, setting, area, c + sl[1].start + 0.5, r + sl[0].start + 0.5, ang)
            if poly.is_empty or poly.geom_type != "Polygon":
                continue
            x0, y0, x1, y1 = (int(math.floor(v)) for v in poly.bounds)
            if x0 < 0 or y0 < 0 or x1 + 2 > w or y1 + 2 > h:
                continue
            win = (slice(y0, y1 + 2), slice(x0, x1 + 2))
            pm = rasterize([affinity.translate(poly, -x0, -y0)], y1 - y0 + 2, x1 - x0 + 2).astype(bool)
            if pm.sum() < area_m2[0] * 0.8 * self.ppm**2:
                continue
            if not (np.all(self.lay.lab[win][pm] == pid) and np.all(self.free[win][pm])):
                continue
            grown = ndimage.binary_dilation(pm, iterations=max(1, int(0.5 * self.ppm)))
            self.free[win][grown] = False
            return poly, setting, pid, win, pm
        return None


def _sow(rng, img, poly, setting: str, win, pm, ppm: float, shadow) -> dict:
    """Paint a poppy plot (soil, then the stand) into its window; the plot's truth record."""
    stage = land._pick(rng, STAGES)
    colour = land._pick(rng, COLOURS)
    m = pm.astype(np.float32)
    if setting != "intercrop" or rng.random() < 0.5:
        paint.soil(img[win], m, rng, ppm, land.SOILS["loess"] * rng.uniform(0.8, 1.0))
    flora.poppy(img[win], m, rng, ppm, stage=stage, colour=colour, shadow=shadow,
                mixed=rng.uniform(0, 0.35) if rng.random() < 0.4 else 0.0)
    return {"polygon": poly, "stage": stage, "setting": setting,
            "flower_colour": colour if stage == "flowering" else "none", "area_m2": float(poly.area / ppm**2)}


def render_alt_arrays(seed: int, size: int = 1024, gsd: float = 0.04, *, poppy: bool = True) -> AltScene:
    """Render a scene of the alternative renderer in memory; the same arguments give the same arrays."""
    rng = np.random.default_rng([int(seed), 731, int(bool(poppy))])
    h = w = int(size)
    ppm = 1.0 / float(gsd)
    fp = footprint(rng, h, w)
    valid = rasterize([fp], h, w)
    inner = rasterize([fp.buffer(-max(1.0, 0.5 * ppm))], h, w)
    lay = land.make_layout(rng, h, w, ppm, poppy)
    az, elev = np.deg2rad(rng.uniform(100, 260)), np.deg2rad(rng.uniform(25, 70))
    sun = (float(np.sin(az)), float(-np.cos(az)))  # towards the sun, image x east / y south
    shadow = (-sun[0] * ppm / np.tan(elev), -sun[1] * ppm / np.tan(elev))
    img = np.empty((h, w, 3), np.float32)
    img[:] = land.SOILS["loess"]
    paint.paint_ground(img, lay, rng, ppm, shadow)
    sites = _Sites(lay, inner, ppm)
    plots: list[dict] = []
    if poppy:
        for _ in range(int(rng.integers(1, 6))):
            big = rng.random() < 0.3
            got = sites.place(rng, SETTINGS, (8.0, 300.0) if big else (2.0, 60.0))
            if got is None:
                continue
            poly, setting, pid, win, pm = got
            plots.append(_sow(rng, img, poly, setting, win, pm, ppm, shadow))
    for _ in range(3 if poppy and not plots else 0):  # a poppy scene always gets a plot, if any fits
        got = sites.place(rng, SETTINGS, (1.5, 15.0), tries=300)
        if got is not None:
            poly, setting, pid, win, pm = got
            plots.append(_sow(rng, img, poly, setting, win, pm, ppm, shadow))
            break
    confusers = _confusers(rng, img, lay, sites, ppm, shadow, poppy)
    paint.paint_elevated(img, lay, rng, ppm, shadow, sun)
    out, cam = expose(rng, np.clip(img, 0, 1), ppm)
    out = np.maximum(out, 1) * valid[..., None]
    poppy_mask = rasterize([p["polygon"] for p in plots], h, w) & valid
    meta = {
        "seed": int(seed),
        "size": h,
        "gsd": float(gsd),
        "scene_kind": f"alt_{lay.landform}",
        "renderer": "poppyscan.synth_alt",
        "n_plots": len(plots),
        "landform": lay.landform,
        "sun_azimuth_deg": float(np.rad2deg(az)),
        "sun_elevation_deg": float(np.rad2deg(elev)),
        "camera": cam,
    }
    return AltScene(out, valid, poppy_mask, plots, confusers, fp, meta)


def _confusers(rng, img, lay: land.Layout, sites: _Sites, ppm, shadow, poppy: bool) -> list[dict]:
    """Corn poppy, rose beds, lettuce, red plastic placed like plots; plus confuser-crop parcels."""
    found = []
    n = int(rng.integers(0, 3)) if poppy else int(rng.integers(2, 6))
    for _ in range(n):
        kind = str(
            rng.choice(
                ["corn_poppy", "rose", "lettuce", "red_plastic", "garlic", "rapeseed"],
                p=[0.3, 0.2, 0.1, 0.2, 0.1, 0.1],
            )
        )
        weights = (
            {"edge": 0.4, "intercrop": 0.3, "field": 0.3}
            if kind in ("corn_poppy", "rapeseed")
            else ({"courtyard": 0.5, "garden": 0.3, "field": 0.2})
        )
        area = (0.3, 6.0) if kind == "red_plastic" else (1.0, 80.0)
        got = sites.place(rng, weights, area)
        if got is None:
            continue
        poly, _, _, win, pm = got
        m = pm.astype(np.float32)
        if kind == "red_plastic":
            paint.red_plastic(img[win], m, rng, ppm)
        else:
            paint.paint_kind(img[win], m, rng, ppm, kind, lay.angle, shadow)
        found.append({"polygon": poly, "kind": kind})
    from rasterio.features import shapes

    for i, p in enumerate(lay.parcels):
        sl = sites.slices[i] if i < len(sites.slices) else None
        if sl is None or p["kind"] not in land.CONFUSERS:
            continue
        m = (lay.lab[sl] == i).astype(np.uint8)
        polys = [
            affinity.translate(shape(g), sl[1].start, sl[0].start) for g, v in shapes(m, mask=m > 0) if v
        ]
        found += [{"polygon": g.simplify(1.0), "kind": p["kind"]} for g in polys if g.area > 4]
    return found


def _validate(seed, size, gsd, gsd_range, crs, mask_mode) -> None:
    if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)) or seed < 0:
        raise ConfigError(f"'seed' must be a non-negative integer, got {seed!r}")
    if isinstance(size, bool) or not isinstance(size, (int, np.integer)) or not 64 <= int(size) <= 8192:
        raise ConfigError(f"'size' must be an integer in [64, 8192] pixels, got {size!r}: e.g. size=1024")
    lo, hi = gsd_range
    if not (0.005 <= lo <= hi <= 0.5):
        raise ConfigError(f"'gsd_range' must satisfy 0.005 <= min <= max <= 0.5 m, got {gsd_range!r}")
    if gsd is not None and not (isinstance(gsd, (int, float)) and math.isfinite(gsd) and 0.005 <= gsd <= 0.5):
        raise ConfigError(f"'gsd' must be in [0.005, 0.5] metres per pixel, got {gsd!r}")
    if crs is not None and crs not in CRSS:
        raise ConfigError(f"'crs' must be one of {', '.join(CRSS)} (projected), got {crs!r}")
    if mask_mode is not None and mask_mode not in MASK_MODES:
        raise ConfigError(f"'mask_mode' must be one of {', '.join(MASK_MODES)}, got {mask_mode!r}")


def scene_params(seed: int, gsd_range=(0.02, 0.08)) -> dict:
    """GSD (log-uniform in ``gsd_range``), CRS, centre and mask mode of a scene, from its seed alone."""
    rng = np.random.default_rng([int(seed), 90417])
    gsd = float(np.exp(rng.uniform(np.log(gsd_range[0]), np.log(gsd_range[1]))))
    crs = "EPSG:32649" if rng.random() < 0.6 else "EPSG:4547"
    lon = float(rng.uniform(*CRSS[crs]))
    lat = float(rng.uniform(34.5, 38.5))
    return {
        "gsd": round(gsd, 4),
        "crs": crs,
        "center_lonlat": (round(lon, 4), round(lat, 4)),
        "mask_mode": "alpha" if rng.random() < 0.6 else "nodata",
    }


def render_alt_scene(
    seed: int,
    out_dir,
    size: int = 1024,
    poppy: bool = True,
    *,
    gsd: float | None = None,
    gsd_range: tuple[float, float] = (0.02, 0.08),
    crs: str | None = None,
    mask_mode: str | None = None,
    overwrite: bool = False,
) -> Path:
    """Render a scene and write ``out_dir/mosaic.tif``, ``out_dir/truth.gpkg`` and ``out_dir/alt_meta.json``.

    Args:
        seed: the only source of randomness; the same arguments give the same files.
        out_dir: scene directory (created).
        size: width and height in pixels (64..8192).
        poppy: False renders a poppy-free scene (confusers only; the ``plots`` layer is empty).
        gsd: ground pixel size in metres; default drawn log-uniformly from ``gsd_range`` by the seed.
        gsd_range: (min, max) metres for the drawn GSD.
        crs: ``"EPSG:32649"`` (UTM 49N) or ``"EPSG:4547"`` (CGCS2000 3-degree GK CM 114E); default by seed.
        mask_mode: ``"alpha"`` (RGBA) or ``"nodata"`` (RGB, nodata 0); default by seed.
        overwrite: replace existing files; otherwise :class:`~poppyscan.errors.OutputExistsError`.

    Returns:
        The scene directory.
    """
    _validate(seed, size, gsd, gsd_range, crs, mask_mode)
    from ..synth.georef import parse_crs, scene_transform, write_mosaic, write_truth

    p = scene_params(seed, gsd_range)
    gsd = float(gsd) if gsd is not None else p["gsd"]
    crs = crs or p["crs"]
    mask_mode = mask_mode or p["mask_mode"]
    lon_range = CRSS[crs]
    centre = (
        p["center_lonlat"]
        if lon_range[0] <= p["center_lonlat"][0] <= lon_range[1]
        else (round(sum(lon_range) / 2, 4), p["center_lonlat"][1])
    )
    out_dir = Path(out_dir)
    mosaic, truth, meta_path = out_dir / "mosaic.tif", out_dir / "truth.gpkg", out_dir / "alt_meta.json"
    for f in (mosaic, truth, meta_path):
        check_writable(f, overwrite)
    crs_obj = parse_crs(crs)
    transform = scene_transform(crs_obj, int(size), gsd, centre)
    scene = render_alt_arrays(int(seed), int(size), gsd, poppy=poppy)
    out_dir.mkdir(parents=True, exist_ok=True)
    with atomic_path(mosaic, overwrite) as tmp:
        write_mosaic(tmp, scene, crs_obj, transform, mask_mode, "deflate")
    with atomic_path(truth, overwrite) as tmp:
        write_truth(tmp, scene, crs_obj, transform)
    info = {
        **scene.meta,
        "crs": crs,
        "mask_mode": mask_mode,
        "center_lonlat": list(centre),
        "poppy": bool(poppy),
        "plots": [{k: v for k, v in pl.items() if k != "polygon"} for pl in scene.plots],
        "confusers": sorted({c["kind"] for c in scene.confusers}),
    }
    with atomic_path(meta_path, overwrite) as tmp:
        tmp.write_text(json.dumps(info, indent=1) + "\n", encoding="utf-8")
    return out_dir
