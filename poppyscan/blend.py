"""Blend overlapping tile predictions in a rolling band of rows and write the probability raster.

:class:`Blender` keeps a float32 accumulator of weighted probability (the weights are a partition of
unity) and a uint8 coverage mask, ``tile_size`` rows high and the model grid wide. Tiles arrive in
row-major order, so when a tile starting at row ``r`` comes in, every row above ``r`` is final: those
rows are handed to a sink, and the band moves down. Memory is proportional to the mosaic's width,
never its area.

:class:`ProbabilityWriter` writes the rows, as uint8 percent (0-100, nodata 255), into a tiled
GeoTIFF and finally converts it to a Cloud-Optimized GeoTIFF with GDAL's COG driver.
"""

from __future__ import annotations

import logging
from collections import OrderedDict
from collections.abc import Callable
from pathlib import Path

import cv2
import numpy as np
import rasterio
import rasterio.shutil
from affine import Affine
from rasterio.enums import Resampling
from rasterio.windows import Window

from .tiles import Tile, axis_starts, taper

log = logging.getLogger(__name__)

NODATA = 255

RowSink = Callable[[int, np.ndarray, np.ndarray], None]
"""``sink(row, prob, valid)``: rows ``[row, row + len(prob))`` of the blended float32 probability
and their validity (covered by at least one valid tile pixel). Both are buffers reused by the next
call: consume or copy them before returning."""


class Blender:
    """Weighted average of overlapping tile probabilities, emitted row band by row band.

    The weights are a partition of unity: each tile's cosine taper (:func:`~poppyscan.tiles.taper`) is
    divided, per axis, by the sum of the tapers of all tiles of the grid covering that row/column, so
    the normalised weights of the tiles covering any pixel sum to 1. A valid pixel is valid in every
    tile covering it (validity comes from the mosaic, and a tile is skipped only when it has no valid
    pixel), so the accumulated ``sum(weight x probability)`` already *is* the weighted mean: no weight
    sum is accumulated and no division is made (0.70 -> 0.31 ms per 512 px tile, A/B in one process).
    Validity of an emitted pixel is whether any tile covered it as valid.

    Parameters
    ----------
    height, width
        Size of the model grid.
    tile_size
        Tile size in pixels (the band height).
    overlap
        Tile overlap in pixels (for the cosine taper of the weights).
    sink
        Receives finished rows, see :data:`RowSink`.
    top
        First row to emit: the row of the first tile (a band of a larger grid); rows above it are
        never emitted.

    Tiles must be those of :func:`~poppyscan.tiles.tile_grid` for this grid.
    """

    def __init__(self, height: int, width: int, *, tile_size: int, overlap: int, sink: RowSink,
                 top: int = 0) -> None:
        self.height, self.width = height, width
        self.band = min(tile_size, height)
        self.sink = sink
        self._rows = _unit_tapers(height, tile_size, overlap)
        self._cols = _unit_tapers(width, tile_size, overlap)
        self._cache: OrderedDict[tuple[int, int], np.ndarray] = OrderedDict()
        self._acc = np.zeros((self.band, width), np.float32)
        self._cover = np.zeros((self.band, width), np.uint8)  # 1 where a tile covered the pixel as valid
        self._tmp = np.empty((self.band, min(tile_size, width)), np.float32)
        self._all_valid = np.ones((self.band, width), bool)
        self._all_valid.setflags(write=False)
        self.top = top  # model-grid row of accumulator row 0; rows above it have been emitted

    def _weights(self, tile: Tile) -> np.ndarray:
        try:
            (cy, wy), (cx, wx) = self._rows[tile.row], self._cols[tile.col]
        except KeyError:
            raise ValueError(f"tile at ({tile.row}, {tile.col}) is not on this blender's tile grid") from None
        key = (cy, cx)
        w = self._cache.get(key)
        if w is None:
            w = np.outer(wy, wx).astype(np.float32)
            w.setflags(write=False)
            self._cache[key] = w
            if len(self._cache) > 16:  # a few classes per axis (first, interior, last...): bounded anyway
                self._cache.popitem(last=False)
        return w

    def add(self, tile: Tile, prob: np.ndarray, valid: np.ndarray | None = None) -> None:
        """Accumulate one tile. ``prob``/``valid`` may be padded beyond the tile's size (cropped here);
        ``valid=None`` means valid everywhere."""
        if tile.row < self.top:
            raise ValueError(f"tiles must arrive in row-major order: row {tile.row} < band top {self.top}")
        self.flush(tile.row)
        h, w = tile.height, tile.width
        r = tile.row - self.top
        cols = slice(tile.col, tile.col + w)
        weights = self._weights(tile)
        cover = self._cover[r:r + h, cols]
        if valid is None:
            cover[:] = 1
        else:
            v = valid[:h, :w]
            weights = np.multiply(weights, v, out=self._tmp[:h, :w])
            np.bitwise_or(cover, v.view(np.uint8), out=cover)
        cv2.accumulateProduct(prob[:h, :w], weights, self._acc[r:r + h, cols])  # one SIMD pass in place

    def flush(self, until: int) -> None:
        """Emit all rows above ``until`` (no later tile may start above it)."""
        until = min(until, self.height)
        while self.top < until:
            n = min(until - self.top, self.band)
            cover = self._cover[:n]
            valid = self._all_valid[:n] if cv2.countNonZero(cover) == cover.size else cover.view(bool)
            self.sink(self.top, self._acc[:n], valid)
            keep = self.band - n
            if keep:
                self._acc[:keep] = self._acc[n:]
                self._cover[:keep] = self._cover[n:]
            self._acc[keep:] = 0
            self._cover[keep:] = 0
            self.top += n

    def finish(self) -> None:
        """Emit the remaining rows down to the bottom of the grid."""
        self.flush(self.height)


def _unit_tapers(length: int, tile_size: int, overlap: int) -> dict[int, tuple[int, np.ndarray]]:
    """Per tile start along one axis: ``(class, weights)``, the tile's taper divided by the sum of the
    tapers of all tiles covering each pixel; equal weight vectors share a class (for caching).

    >>> w = _unit_tapers(1000, 512, 64)
    >>> sorted(w), round(float(w[448][1][10] + w[0][1][458]), 6)
    ([0, 448, 488], 1.0)
    """
    starts = axis_starts(length, tile_size, overlap)
    size = min(tile_size, length)
    tapers = [taper(size, overlap, s == 0, s + size == length).astype(np.float64) for s in starts]
    total = np.zeros(length, np.float64)
    for s, t in zip(starts, tapers, strict=True):
        total[s:s + size] += t
    classes: dict[bytes, int] = {}
    out = {}
    for s, t in zip(starts, tapers, strict=True):
        w = (t / total[s:s + size]).astype(np.float32)
        out[s] = (classes.setdefault(w.tobytes(), len(classes)), w)
    return out


def to_percent(prob: np.ndarray, valid: np.ndarray | None = None,
               out: np.ndarray | None = None) -> np.ndarray:
    """Float probability rows -> uint8 percent 0-100, :data:`NODATA` where not valid.

    >>> to_percent(np.array([[0.0, 0.504, 1.0]], np.float32), np.array([[True, True, False]])).tolist()
    [[0, 50, 255]]
    """
    out = cv2.convertScaleAbs(prob, dst=out, alpha=100)  # round(|p| * 100), saturated, in one pass
    if valid is not None and not valid.all():
        out[~valid] = NODATA
    return out


class ProbabilityWriter:
    """Write uint8 probability rows into a tiled GeoTIFF, then make it a COG.

    ``write(row, data)`` may be called with any row bands in order; ``close()`` finishes the temp
    GTiff and ``to_cog(path)`` writes the COG (ZSTD level 1 + horizontal predictor, 512 px blocks,
    nearest-neighbour overviews). Measured on a 100 Mpx probability raster: ZSTD needs ~3x less CPU
    than DEFLATE at about the same size (GDAL >= 2.3 / QGIS 3 read it), and AVERAGE overviews cost
    2.5x the CPU of NEAREST (~1 ms per tile, 3 % of the network's time on 2 cores).
    """

    def __init__(self, tmp_path: Path, *, width: int, height: int, crs, transform: Affine) -> None:  # noqa: ANN001
        self.tmp_path = Path(tmp_path)
        self._ds = rasterio.open(
            self.tmp_path, "w", driver="GTiff", width=width, height=height, count=1, dtype="uint8",
            crs=crs, transform=transform, nodata=NODATA, tiled=True, blockxsize=512, blockysize=512,
            compress="ZSTD", zstd_level=1, bigtiff="IF_SAFER")

    def write(self, row: int, data: np.ndarray) -> None:
        self._ds.write(data, 1, window=Window(0, row, data.shape[1], data.shape[0]))

    def close(self) -> None:
        if not self._ds.closed:
            self._ds.close()

    def to_cog(self, path: Path) -> Path:
        self.close()
        _copy_cog(self.tmp_path, path)
        self.tmp_path.unlink(missing_ok=True)
        return path


def overview_factors(width: int, height: int, block: int = 512) -> list[int]:
    """Decimation factors 2, 4, ... until the overview fits in one ``block`` (the COG driver's rule).

    >>> overview_factors(8192, 12288), overview_factors(500, 400)
    ([2, 4, 8, 16, 32], [])
    """
    factors, f = [], 1
    while max(width, height) / f > block:
        f *= 2
        factors.append(f)
    return factors


def _copy_cog(src: Path, path: Path) -> None:
    """Write the COG ``path`` from the tiled GeoTIFF ``src`` (which gains overviews on the way).

    The overviews are built into ``src`` first, uncompressed, and the COG driver copies them: measured
    on a 100 Mpx probability raster, 0.35 s wall / 0.5 s CPU instead of 0.55 s / 1.0 s when the COG
    driver builds them (it compresses them into a temporary file and decompresses them again).
    """
    with rasterio.Env(COMPRESS_OVERVIEW="NONE"), rasterio.open(src, "r+") as ds:
        factors = overview_factors(ds.width, ds.height)
        if factors:
            ds.build_overviews(factors, Resampling.nearest)
    rasterio.shutil.copy(src, path, driver="COG", compress="ZSTD", level=1, predictor="YES",
                         blocksize=512, overviews="FORCE_USE_EXISTING",
                         num_threads="ALL_CPUS", bigtiff="IF_SAFER")


def assemble_cog(parts: list[tuple[Path, int]], path: Path, *, width: int, height: int, crs,  # noqa: ANN001
                 transform: Affine, chunk_rows: int = 1024) -> Path:
    """Write the COG ``path`` from row-band GeoTIFFs ``(file, first row)`` that tile the grid, then
    delete the parts. Several parts are first stitched into one tiled GeoTIFF, ``chunk_rows`` at a time
    (measured 1.3-1.6x faster than the COG driver reading a VRT of the parts, whose overviews it
    builds slowly)."""
    if len(parts) == 1:
        _copy_cog(parts[0][0], path)
    else:
        stitched = path.with_name(f".{path.name}.stitch.tif")
        writer = ProbabilityWriter(stitched, width=width, height=height, crs=crs, transform=transform)
        try:
            for part, row in parts:
                with rasterio.open(part) as src:
                    if src.width != width or not 0 <= row < row + src.height <= height:
                        raise ValueError(f"band raster {part.name} ({src.width}x{src.height} at row {row}) "
                                         f"does not fit the {width}x{height} grid")
                    for r in range(0, src.height, chunk_rows):
                        n = min(chunk_rows, src.height - r)
                        writer.write(row + r, src.read(1, window=Window(0, r, width, n)))
            writer.to_cog(path)
        finally:
            writer.close()
            stitched.unlink(missing_ok=True)
    for part, _ in parts:
        part.unlink(missing_ok=True)
    return path
