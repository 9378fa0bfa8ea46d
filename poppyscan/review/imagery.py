"""Pictures for the review page: a chip per plot and a small overview of each mosaic.

Chips are cut on demand from the run's source mosaic (``run.json`` ``inputs[].path``) with a windowed,
decimated rasterio read, the plot outline drawn with OpenCV, and cached as JPEG under
``RUN_DIR/review/chips/`` — the first view of a plot costs one small read, later views none.
"""

from __future__ import annotations

import math
from pathlib import Path

import cv2
import numpy as np
from shapely.geometry.base import BaseGeometry

from ..errors import PlotOffMosaicError
from ..run_inputs import plot_on_data

CHIP_DIR = Path("review") / "chips"
OVERVIEW_DIR = Path("review") / "overview"
OUTLINE_BGR = (0, 235, 255)  # yellow: the plot under review
NEIGHBOUR_BGR = (255, 200, 0)  # cyan: other plots inside the chip
METRES_PER_DEGREE = 111_320.0


def to_uint8_rgb(data: np.ndarray, valid: np.ndarray, value_scale: float | None = None) -> np.ndarray:
    """Bands-first raster data -> (H, W, 3) uint8 RGB.

    Non-uint8 data is multiplied by ``value_scale`` (detect's uint16 scale from ``run.json``, the same
    for every chip) or, without one, stretched 2-98 % over the valid pixels.
    """
    if data.shape[0] >= 3:
        rgb = data[:3]
    else:
        rgb = np.repeat(data[:1], 3, axis=0)
    rgb = np.moveaxis(rgb, 0, -1)
    if rgb.dtype != np.uint8 and value_scale:
        rgb = np.clip(rgb.astype(np.float32) * value_scale + 0.5, 0, 255).astype(np.uint8)
    elif rgb.dtype != np.uint8:
        vals = rgb[valid] if valid.any() else rgb.reshape(-1, 3)
        lo, hi = np.percentile(vals, [2, 98]) if vals.size else (0.0, 1.0)
        scale = 255.0 / max(float(hi - lo), 1e-9)
        rgb = np.clip((rgb.astype(np.float32) - lo) * scale, 0, 255).astype(np.uint8)
    return np.ascontiguousarray(rgb)


def _rings(geom: BaseGeometry) -> list[np.ndarray]:
    polys = getattr(geom, "geoms", [geom])
    rings = []
    for poly in polys:
        if poly.is_empty or not hasattr(poly, "exterior"):
            continue
        rings.append(np.asarray(poly.exterior.coords)[:, :2])
        rings.extend(np.asarray(r.coords)[:, :2] for r in poly.interiors)
    return rings


def _draw_outline(
    img: np.ndarray,
    geom: BaseGeometry,
    bounds: tuple[float, float, float, float],
    colour: tuple[int, int, int],
    thickness: int,
) -> None:
    left, bottom, right, top = bounds
    h, w = img.shape[:2]
    sx, sy = w / (right - left), h / (top - bottom)
    pts = []
    for ring in _rings(geom):
        px = np.column_stack([(ring[:, 0] - left) * sx, (top - ring[:, 1]) * sy])
        pts.append(np.round(px * 16).astype(np.int32))  # 4 fractional bits for smooth antialiased lines
    if not pts:
        return
    cv2.polylines(img, pts, True, (0, 0, 0), thickness + 2, cv2.LINE_AA, shift=4)
    cv2.polylines(img, pts, True, colour, thickness, cv2.LINE_AA, shift=4)


def _scale_bar(img: np.ndarray, metres_per_px: float) -> None:
    h, w = img.shape[:2]
    target = w * 0.25 * metres_per_px
    length = max((v for v in (0.5, 1, 2, 5, 10, 20, 50, 100, 200, 500) if v <= target), default=0.5)
    bar = int(round(length / metres_per_px))
    x0, y0 = 10, h - 12
    cv2.rectangle(img, (x0 - 4, y0 - 18), (x0 + bar + 4, y0 + 6), (0, 0, 0), -1)
    cv2.line(img, (x0, y0), (x0 + bar, y0), (255, 255, 255), 2)
    label = f"{length:g} m"
    cv2.putText(img, label, (x0, y0 - 5), cv2.FONT_HERSHEY_SIMPLEX, 0.4, (255, 255, 255), 1, cv2.LINE_AA)


def chip_bounds(geom: BaseGeometry, *, size_m: float, geographic: bool) -> tuple[float, float, float, float]:
    """Square ground extent around ``geom``: at least ``size_m`` wide and 1.5x the plot's extent."""
    minx, miny, maxx, maxy = geom.bounds
    cx, cy = (minx + maxx) / 2, (miny + maxy) / 2
    kx = ky = 1.0  # metres per CRS unit
    if geographic:
        ky = METRES_PER_DEGREE
        kx = METRES_PER_DEGREE * max(math.cos(math.radians(cy)), 1e-6)
    half_m = max(size_m / 2, 0.75 * max((maxx - minx) * kx, (maxy - miny) * ky))
    return cx - half_m / kx, cy - half_m / ky, cx + half_m / kx, cy + half_m / ky


def render_chip(
    mosaic: str | Path,
    geom: BaseGeometry,
    *,
    size_m: float = 24.0,
    px: int = 320,
    neighbours: list[BaseGeometry] = (),
    value_scale: float | None = None,
) -> bytes:
    """JPEG bytes of the mosaic around ``geom`` (given in the mosaic's CRS) with its outline drawn.

    Parameters
    ----------
    mosaic
        The orthomosaic (any GDAL raster; bands 1-3 are taken as RGB).
    geom
        The plot polygon, in the mosaic's CRS.
    size_m
        Minimum ground width of the chip in metres (grows to fit large plots).
    px
        Chip width and height in pixels.
    neighbours
        Other plots to outline thinly for context (mosaic CRS).
    value_scale
        Factor from uint16 to uint8 values (``run.json`` ``inputs[].value_scale``); see :func:`to_uint8_rgb`.

    Raises
    ------
    PlotOffMosaicError
        When the mosaic has no valid pixel under ``geom`` (the chip would be blank).
    """
    import rasterio
    from rasterio.enums import Resampling

    from ..geo.raster import read_north_up

    with rasterio.open(mosaic) as src:
        if not plot_on_data(src, geom):
            raise PlotOffMosaicError(f"the plot lies outside the valid data of mosaic '{mosaic}'")
        geographic = bool(src.crs and src.crs.is_geographic)
        bounds = chip_bounds(geom, size_m=size_m, geographic=geographic)
        indexes = [1, 2, 3] if src.count >= 3 else [1]
        # north-up whatever way the mosaic's rows run (a south-up mosaic has a positive y pixel size)
        data = read_north_up(src, indexes, bounds, (len(indexes), px, px), fill_value=0,
                             resampling=Resampling.bilinear)
        mask = read_north_up(src, 1, bounds, (px, px), masks=True, resampling=Resampling.nearest)
    valid = mask > 0
    rgb = to_uint8_rgb(data, valid, value_scale)
    rgb[~valid] = (60, 60, 60)
    img = cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR)
    for other in neighbours:
        _draw_outline(img, other, bounds, NEIGHBOUR_BGR, 1)
    _draw_outline(img, geom, bounds, OUTLINE_BGR, 2)
    width_units = bounds[2] - bounds[0]
    metres_per_px = (
        width_units
        * (METRES_PER_DEGREE * math.cos(math.radians((bounds[1] + bounds[3]) / 2)) if geographic else 1.0)
        / px
    )
    _scale_bar(img, metres_per_px)
    ok, buf = cv2.imencode(".jpg", img, [cv2.IMWRITE_JPEG_QUALITY, 88])
    if not ok:  # pragma: no cover - OpenCV always encodes a uint8 BGR image
        raise RuntimeError("JPEG encoding failed")
    return buf.tobytes()


def placeholder_chip(text: str, px: int = 320) -> bytes:
    """A grey JPEG with a short message (e.g. the mosaic is missing), so the page stays usable."""
    img = np.full((px, px, 3), 70, np.uint8)
    y = px // 2 - 10
    for line in [text[i : i + 30] for i in range(0, min(len(text), 120), 30)]:
        cv2.putText(img, line, (8, y), cv2.FONT_HERSHEY_SIMPLEX, 0.45, (230, 230, 230), 1, cv2.LINE_AA)
        y += 20
    return cv2.imencode(".jpg", img)[1].tobytes()


def render_overview(mosaic: str | Path, max_px: int = 1024, value_scale: float | None = None) -> bytes:
    """PNG (RGBA, transparent outside the valid data) of the whole mosaic, at most ``max_px`` wide/high.

    Reads through the raster's overviews where it has them; otherwise GDAL decimates while reading. North
    up, like the footprint it is drawn into, also for a south-up mosaic.
    """
    import rasterio
    from rasterio.enums import Resampling

    from ..geo.raster import read_whole_north_up

    with rasterio.open(mosaic) as src:
        scale = min(1.0, max_px / max(src.width, src.height))
        h, w = max(1, round(src.height * scale)), max(1, round(src.width * scale))
        indexes = [1, 2, 3] if src.count >= 3 else [1]
        data = read_whole_north_up(src, indexes, (len(indexes), h, w), resampling=Resampling.average)
        mask = read_whole_north_up(src, 1, (h, w), masks=True, resampling=Resampling.nearest)
    valid = mask > 0
    rgb = to_uint8_rgb(data, valid, value_scale)
    bgra = cv2.cvtColor(rgb, cv2.COLOR_RGB2BGRA)
    bgra[..., 3] = np.where(valid, 255, 0).astype(np.uint8)
    return cv2.imencode(".png", bgra)[1].tobytes()
