"""Tile geometry: pure functions over a raster grid and one frozen :class:`Tile` value.

Nothing here knows about models or files. Coordinates are integer pixel offsets on the *model grid*
(the mosaic resampled to the model's GSD); ``row``/``col`` are offsets, ``height``/``width`` sizes.

Grid rule (per axis, raster length ``L``, tile size ``T``, overlap ``o`` px, stride ``S = T - o``):
tiles start at ``0, S, 2S, ...`` and the last one is shifted back to end exactly at ``L``, so every
tile is a full ``T`` inside the raster and neighbours share at least ``o`` pixels. A raster shorter
than ``T`` gets one tile of length ``L`` on that axis (the caller pads it to ``T`` for the network).

>>> grid = tile_grid(1000, 700, tile_size=512, overlap=64)
>>> [(t.row, t.col) for t in grid]
[(0, 0), (0, 188), (448, 0), (448, 188), (488, 0), (488, 188)]
>>> axis_starts(100, 512, 64)
[0]
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
from rasterio.windows import Window


@dataclass(frozen=True, slots=True)
class Tile:
    """One tile of a grid: pixel offsets and size inside the raster, plus its grid index.

    ``edges`` says which sides lie on the raster border (top, bottom, left, right); the blending
    weights do not taper there, because no neighbour covers those pixels.
    """

    row: int
    col: int
    height: int
    width: int
    index: tuple[int, int]
    edges: tuple[bool, bool, bool, bool]

    @property
    def window(self) -> Window:
        """The tile as a rasterio :class:`~rasterio.windows.Window` (col_off, row_off, width, height)."""
        return Window(self.col, self.row, self.width, self.height)

    @property
    def slices(self) -> tuple[slice, slice]:
        """Row and column slices of the tile in a raster-sized array."""
        return slice(self.row, self.row + self.height), slice(self.col, self.col + self.width)


def overlap_px(tile_size: int, overlap: float) -> int:
    """Overlap in pixels for a fractional ``overlap`` of ``tile_size``.

    >>> overlap_px(512, 0.125)
    64
    """
    if not 0 <= overlap < 0.5:
        raise ValueError(f"'overlap' must be in [0, 0.5), got {overlap}")
    return int(round(tile_size * overlap))


def axis_starts(length: int, tile_size: int, overlap: int) -> list[int]:
    """Start offsets of tiles along one axis (see the module docstring for the rule).

    >>> axis_starts(1000, 512, 64)
    [0, 448, 488]
    >>> axis_starts(512, 512, 64)
    [0]
    """
    if length < 1:
        raise ValueError(f"'length' must be >= 1, got {length}")
    if tile_size < 1:
        raise ValueError(f"'tile_size' must be >= 1, got {tile_size}")
    if not 0 <= overlap < tile_size:
        raise ValueError(f"'overlap' must be in [0, tile_size), got {overlap}")
    if length <= tile_size:
        return [0]
    stride = tile_size - overlap
    n = math.ceil((length - tile_size) / stride) + 1
    return [min(i * stride, length - tile_size) for i in range(n)]


def tile_grid(height: int, width: int, *, tile_size: int, overlap: int) -> list[Tile]:
    """All tiles covering a ``height`` x ``width`` raster, in row-major order (top to bottom).

    Row-major order is what lets the blender finish and write rows while later tiles are pending.
    """
    rows = axis_starts(height, tile_size, overlap)
    cols = axis_starts(width, tile_size, overlap)
    th, tw = min(tile_size, height), min(tile_size, width)
    tiles = []
    for i, r in enumerate(rows):
        for j, c in enumerate(cols):
            edges = (r == 0, r + th == height, c == 0, c + tw == width)
            tiles.append(Tile(r, c, th, tw, (i, j), edges))
    return tiles


def taper(length: int, overlap: int, start_edge: bool, end_edge: bool) -> np.ndarray:
    """1-D cosine-tapered (Tukey) weights: ``sin²`` ramps over ``overlap`` px, flat 1 in between.

    Where two neighbours overlap by exactly ``overlap`` px their ramps sum to 1 (``sin² + cos²``);
    an end lying on the raster border (``start_edge``/``end_edge``) is not tapered. Weights are
    strictly positive, so every covered pixel gets a defined blended value.

    >>> [round(float(v), 3) for v in taper(8, 2, False, True)]
    [0.146, 0.854, 1.0, 1.0, 1.0, 1.0, 1.0, 1.0]
    """
    w = np.ones(length, np.float32)
    ramp_len = min(overlap, length // 2)
    if ramp_len > 0:
        ramp = np.sin(0.5 * np.pi * (np.arange(ramp_len) + 0.5) / ramp_len) ** 2
        if not start_edge:
            w[:ramp_len] = ramp
        if not end_edge:
            w[length - ramp_len:] = ramp[::-1]
    return w
