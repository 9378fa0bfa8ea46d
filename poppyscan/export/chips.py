"""Image chips: a north-up crop of the orthomosaic around each plot with its outline drawn.

The crop is north-up whichever way the mosaic's rows run (south-up mosaics included:
:func:`poppyscan.geo.raster.read_north_up`).

A chip is ``chip_size_m`` wide on the ground (more when the plot needs it: 1.25 × its extent),
resampled to ``chip_px`` pixels (a windowed, boundless read — GDAL uses the mosaic's overviews when they
exist, so memory is one chip at a time), with the plot outline in yellow, the task code and a scale
bar. Written as JPEG. A plot with no valid pixel of its mosaic under it gets no chip and a warning
(:func:`poppyscan.run_inputs.plot_on_data`): a blank chip would send a team out with a wrong picture.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np
import rasterio
from rasterio.enums import ColorInterp, Resampling

from ..errors import PlotOffMosaicError
from ..geo.crs import transform_geoms
from ..geo.raster import read_north_up
from ..run_inputs import plot_on_data

log = logging.getLogger(__name__)

OUTLINE_BGR = (0, 255, 255)  # yellow: visible on green crops and red flowers alike


@dataclass(frozen=True)
class ChipRequest:
    """One chip to cut: output file name, the plot polygon (in ``crs``) and the mosaic to cut from."""

    name: str
    geometry: object
    crs: object
    mosaic: Path
    label: str


def _rgb_indexes(src: rasterio.io.DatasetReader) -> tuple[list[int], int | None]:
    interp = list(src.colorinterp)
    alpha = interp.index(ColorInterp.alpha) + 1 if ColorInterp.alpha in interp else None
    try:
        rgb = [interp.index(c) + 1 for c in (ColorInterp.red, ColorInterp.green, ColorInterp.blue)]
    except ValueError:
        bands = [i for i in range(1, src.count + 1) if i != alpha]
        rgb = (bands * 3)[:3] if len(bands) < 3 else bands[:3]
    return rgb, alpha


def _to_uint8(arr: np.ndarray) -> np.ndarray:
    if arr.dtype == np.uint8:
        return arr
    valid = arr[np.isfinite(arr)] if np.issubdtype(arr.dtype, np.floating) else arr.ravel()
    valid = valid[valid > 0] if valid.size else valid
    if not valid.size:
        return np.zeros(arr.shape, np.uint8)
    lo, hi = np.percentile(valid, [1, 99])
    scaled = (arr.astype("float64") - lo) / max(hi - lo, 1e-9) * 255
    return np.clip(np.nan_to_num(scaled), 0, 255).astype(np.uint8)


def _scale_bar(img: np.ndarray, chip_size_m: float) -> None:
    px_per_m = img.shape[1] / chip_size_m
    nice = [1, 2, 5, 10, 20, 50, 100, 200]
    length_m = max([n for n in nice if n * px_per_m <= img.shape[1] * 0.3] or [1])
    x0, y0 = 10, img.shape[0] - 14
    x1 = x0 + int(round(length_m * px_per_m))
    cv2.rectangle(img, (x0 - 4, y0 - 18), (x1 + 40, y0 + 8), (255, 255, 255), -1)
    cv2.line(img, (x0, y0), (x1, y0), (0, 0, 0), 3)
    cv2.putText(
        img, f"{length_m} m", (x1 + 4, y0 + 4), cv2.FONT_HERSHEY_SIMPLEX, 0.45, (0, 0, 0), 1, cv2.LINE_AA
    )


def _rings(geom) -> Iterable[np.ndarray]:
    polys = getattr(geom, "geoms", [geom])
    for poly in polys:
        if poly.is_empty:
            continue
        yield np.asarray(poly.exterior.coords)[:, :2]
        for hole in poly.interiors:
            yield np.asarray(hole.coords)[:, :2]


def _in_crs_of(src: rasterio.io.DatasetReader, req: ChipRequest):
    return transform_geoms(req.geometry, req.crs, src.crs)


def cut_chip(
    src: rasterio.io.DatasetReader, req: ChipRequest, chip_size_m: float, chip_px: int
) -> np.ndarray:
    """Return the BGR uint8 chip for ``req`` cut from the open mosaic ``src``.

    Raises
    ------
    PlotOffMosaicError
        When ``src`` has no valid pixel under the plot (it lies outside the mosaic or over its nodata):
        such a chip would be blank, i.e. cut from the wrong mosaic.
    """
    geom = _in_crs_of(src, req)
    if not plot_on_data(src, geom):
        raise PlotOffMosaicError(f"plot {req.label} lies outside the valid data of mosaic '{req.mosaic}'")
    c = geom.centroid
    if src.crs is not None and src.crs.is_geographic:
        mx, my = 111_320.0 * max(math.cos(math.radians(c.y)), 1e-6), 110_574.0  # metres per degree
    else:
        mx = my = src.crs.linear_units_factor[1] if src.crs is not None else 1.0
    minx, miny, maxx, maxy = geom.bounds
    size_m = max(chip_size_m, 1.25 * max((maxx - minx) * mx, (maxy - miny) * my))  # grow to fit large plots
    hx, hy = size_m / 2.0 / mx, size_m / 2.0 / my
    left, right, bottom, top = c.x - hx, c.x + hx, c.y - hy, c.y + hy
    bounds = (left, bottom, right, top)
    rgb_idx, alpha_idx = _rgb_indexes(src)
    # north-up whatever way the mosaic's rows run (a south-up mosaic has a positive y pixel size)
    data = read_north_up(src, rgb_idx, bounds, (3, chip_px, chip_px), fill_value=0,
                         resampling=Resampling.bilinear)
    img = np.ascontiguousarray(np.transpose(_to_uint8(data), (1, 2, 0))[:, :, ::-1])  # RGB -> BGR
    if alpha_idx is not None:
        alpha = read_north_up(src, alpha_idx, bounds, (chip_px, chip_px), fill_value=0,
                              resampling=Resampling.nearest)
        img[alpha == 0] = (235, 235, 235)
    for ring in _rings(geom):
        cols = (ring[:, 0] - left) / (right - left) * chip_px
        rows = (top - ring[:, 1]) / (top - bottom) * chip_px
        pts = np.round(np.stack([cols, rows], axis=1) * 8).astype(np.int32).reshape(-1, 1, 2)
        cv2.polylines(img, [pts], True, OUTLINE_BGR, 2, cv2.LINE_AA, shift=3)
    cv2.rectangle(img, (0, 0), (8 + 11 * len(req.label), 24), (255, 255, 255), -1)
    cv2.putText(img, req.label, (5, 17), cv2.FONT_HERSHEY_SIMPLEX, 0.55, (0, 0, 0), 1, cv2.LINE_AA)
    _scale_bar(img, size_m)
    return img


def list_codes(codes: list[str]) -> str:
    """Up to ten task codes for a log line, ``", ..."`` after them when there are more."""
    return ", ".join(codes[:10]) + (", ..." if len(codes) > 10 else "")


def write_chips(
    requests: list[ChipRequest], out_dir: str | Path, *, chip_size_m: float, chip_px: int, quality: int = 85
) -> dict[str, Path]:
    """Cut every chip into ``out_dir`` (``<name>.jpg``); return ``{name: path}`` for those written.

    Chips whose mosaic is missing or unreadable, or has no valid pixel under the plot (the plot lies
    outside it: the chip would be blank), are skipped with a warning (the task keeps no chip).
    """
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    written: dict[str, Path] = {}
    by_mosaic: dict[Path, list[ChipRequest]] = {}
    for req in requests:
        by_mosaic.setdefault(req.mosaic, []).append(req)
    for mosaic, reqs in by_mosaic.items():
        try:
            src = rasterio.open(mosaic)
        except (rasterio.errors.RasterioIOError, OSError) as exc:
            log.warning("no chips for %d task(s): cannot open mosaic '%s' (%s)", len(reqs), mosaic, exc)
            continue
        off: list[str] = []
        with src:
            for req in reqs:
                try:
                    img = cut_chip(src, req, chip_size_m, chip_px)
                except PlotOffMosaicError:
                    off.append(req.label)
                    continue
                path = out_dir / f"{req.name}.jpg"
                ok, buf = cv2.imencode(".jpg", img, [cv2.IMWRITE_JPEG_QUALITY, quality])
                if ok:
                    path.write_bytes(buf.tobytes())
                    written[req.name] = path
        if off:
            log.warning(
                "no chip for %d task(s) (%s): the plot lies outside the valid data of mosaic '%s', the "
                "input run.json names for it; put the run's own mosaics at the paths in run.json inputs",
                len(off), list_codes(off), mosaic,
            )
    return written
