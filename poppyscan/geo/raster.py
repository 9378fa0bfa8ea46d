"""Read a ground extent of a raster as a north-up image, whichever way its rows and columns run.

Most orthomosaics are north-up (``Affine(a, 0, c, 0, -|e|, top)``: rows run south), but GDAL accepts any
geotransform, and some tools write south-up rasters (positive ``e``: rows run north) or east-to-west
columns (negative ``a``). :func:`rasterio.windows.from_bounds` refuses those ("Bounds and transform are
inconsistent"); here the window is computed from the extent's corners in pixel space and the pixels read
are flipped into north-up order, so a chip of a south-up copy of a mosaic equals the chip of the original.
A rotated or sheared geotransform is read through a :class:`rasterio.vrt.WarpedVRT` (a north-up warp).
"""

from __future__ import annotations

from typing import Any

import numpy as np
from affine import Affine
from rasterio.windows import Window


def axis_aligned(transform: Affine) -> bool:
    """Whether the raster's rows and columns run along the CRS axes (no rotation or shear)."""
    return transform.b == 0 and transform.d == 0


def flips(transform: Affine) -> tuple[bool, bool]:
    """``(flip_rows, flip_cols)``: whether an axis-aligned raster's rows run north (positive ``e``) and its
    columns west (negative ``a``), i.e. which axes to reverse for a north-up image; neither for a rotated one.
    """
    if not axis_aligned(transform):
        return False, False
    return transform.e > 0, transform.a < 0


def to_north_up(data: np.ndarray, transform: Affine) -> np.ndarray:
    """``data`` (``(..., rows, cols)`` as stored under ``transform``) in north-up order, contiguous."""
    flip_rows, flip_cols = flips(transform)
    return np.ascontiguousarray(data[..., :: -1 if flip_rows else 1, :: -1 if flip_cols else 1])


def north_up_transform(transform: Affine, width: int, height: int) -> Affine:
    """The geotransform of a ``width x height`` raster's pixels once :func:`to_north_up` ordered them.

    >>> tuple(north_up_transform(Affine(1, 0, 10, 0, 1, 20), 3, 2))[:6]  # south-up: rows run north
    (1.0, 0.0, 10.0, 0.0, -1.0, 22.0)
    """
    flip_rows, flip_cols = flips(transform)
    if not (flip_rows or flip_cols):
        return transform
    t = transform
    west = t.c + t.a * width if flip_cols else t.c
    north = t.f + t.e * height if flip_rows else t.f
    return Affine(abs(t.a), 0, west, 0, -abs(t.e), north)


def ordered_bounds(x0: float, y0: float, x1: float, y1: float) -> tuple[float, float, float, float]:
    """``(west, south, east, north)`` with west <= east and south <= north: rasterio gives a south-up
    raster's bounds with bottom > top (its last row is its northernmost), and ``run.json`` kept them so
    before.

    >>> ordered_bounds(100, 60, 120, 50)
    (100, 50, 120, 60)
    """
    return min(x0, x1), min(y0, y1), max(x0, x1), max(y0, y1)


def north_up_window(transform: Affine, bounds: tuple[float, float, float, float]) -> Window:
    """The pixel window covering ``bounds`` (left, bottom, right, top) of an axis-aligned raster, in the
    raster's stored order (reverse the pixels read with :func:`to_north_up`); it may reach beyond the
    raster (read it ``boundless``)."""
    if not axis_aligned(transform):
        raise ValueError("north_up_window needs an axis-aligned transform (no rotation or shear)")
    left, bottom, right, top = bounds
    inv = ~transform
    c0, r0 = inv * (left, top)
    c1, r1 = inv * (right, bottom)
    return Window(min(c0, c1), min(r0, r1), abs(c1 - c0), abs(r1 - r0))


def read_north_up(
    src: Any,
    indexes: int | list[int],
    bounds: tuple[float, float, float, float],
    out_shape: tuple[int, ...],
    *,
    resampling: Any,
    fill_value: float = 0,
    masks: bool = False,
) -> np.ndarray:
    """Read ``bounds`` (left, bottom, right, top, in ``src``'s CRS) of ``src`` as a north-up array.

    Parameters
    ----------
    src
        An open rasterio dataset, with any geotransform.
    indexes, out_shape
        As for :meth:`rasterio.io.DatasetReader.read`: band index(es) and the shape to resample to.
    resampling
        A :class:`rasterio.enums.Resampling`.
    fill_value
        Value of pixels outside the raster (the read is boundless).
    masks
        Read the dataset masks (:meth:`~rasterio.io.DatasetReader.read_masks`) instead of the pixels;
        outside the raster they are 0.

    Returns
    -------
    numpy.ndarray
        ``out_shape``, first row north, first column west.
    """
    if not axis_aligned(src.transform):
        return _read_warped(src, indexes, bounds, out_shape, resampling=resampling, fill_value=fill_value,
                            masks=masks)
    window = north_up_window(src.transform, bounds)
    if masks:
        data = src.read_masks(indexes, window=window, out_shape=out_shape, boundless=True,
                              resampling=resampling)
    else:
        data = src.read(indexes, window=window, out_shape=out_shape, boundless=True, fill_value=fill_value,
                        resampling=resampling)
    return to_north_up(data, src.transform)


def _read_warped(
    src: Any,
    indexes: int | list[int],
    bounds: tuple[float, float, float, float],
    out_shape: tuple[int, ...],
    *,
    resampling: Any,
    fill_value: float,
    masks: bool,
) -> np.ndarray:
    """:func:`read_north_up` for a rotated or sheared raster: through a north-up :class:`WarpedVRT`, which
    allows no boundless read, so the part of ``bounds`` inside it is read and pasted into a filled array."""
    from rasterio.vrt import WarpedVRT
    from rasterio.windows import from_bounds

    out = np.full(out_shape, 0 if masks else fill_value, dtype="uint8" if masks else src.dtypes[0])
    with WarpedVRT(src, resampling=resampling) as vrt:  # north-up grid of the same CRS
        window = from_bounds(*bounds, transform=vrt.transform)
        sx, sy = out_shape[-1] / window.width, out_shape[-2] / window.height
        c0, r0 = max(window.col_off, 0), max(window.row_off, 0)
        c1 = min(window.col_off + window.width, vrt.width)
        r1 = min(window.row_off + window.height, vrt.height)
        x0, x1 = round((c0 - window.col_off) * sx), round((c1 - window.col_off) * sx)
        y0, y1 = round((r0 - window.row_off) * sy), round((r1 - window.row_off) * sy)
        if x1 <= x0 or y1 <= y0:
            return out
        part = Window(c0, r0, c1 - c0, r1 - r0)
        shape = (*out_shape[:-2], y1 - y0, x1 - x0)
        read = vrt.read_masks if masks else vrt.read
        out[..., y0:y1, x0:x1] = read(indexes, window=part, out_shape=shape, resampling=resampling)
    return out


def read_whole_north_up(src: Any, indexes: int | list[int], out_shape: tuple[int, ...], *, resampling: Any,
                        masks: bool = False) -> np.ndarray:
    """The whole raster resampled to ``out_shape``, flipped to north-up when its axes run otherwise.

    Only axis-aligned rasters are flipped; a rotated one is returned in its own pixel order.
    """
    if masks:
        data = src.read_masks(indexes, out_shape=out_shape, resampling=resampling)
    else:
        data = src.read(indexes, out_shape=out_shape, resampling=resampling)
    return to_north_up(data, src.transform)
