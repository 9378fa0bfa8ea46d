"""Probability rows -> plot polygons, window by window, with pieces cut by window seams merged.

:class:`Vectorizer` receives the blended rows in order as uint8 percent (nodata 255) - exactly what
``probability.tif`` stores, so the plots can be reproduced from it: a pixel is poppy when its value is
in ``[round(100 * threshold), 100]``. It buffers ``window_rows`` rows plus a small halo and per window:

1. thresholds, then finds *boxes* around the positive pixels (runs of positive rows, then of positive
   columns inside them), so the work below scales with the detections, not with the window's area;
2. light morphology per box (opening then closing, elliptic radius ``morph_radius_px``; the halo rows
   and box padding make it identical to doing it on the whole raster), then ``& valid`` so nothing lies
   in nodata;
3. 4-connected components (OpenCV) with their pixel count, sum and max of probability;
4. each component kept (big enough, or touching a seam) is polygonised on its bounding box with
   :func:`rasterio.features.shapes` (4-connectivity, the same as the labelling: one polygon each).

Geometry stays in *pixel coordinates* (x = column, y = row of the model grid) until the end, so the
pieces on both sides of a seam share exactly equal vertices. Components that touch on the seam rows
(found by pairing the labels of the last row of one window with the first row of the next) are
unioned; their statistics are combined exactly. Then holes smaller than ``max_hole_px`` are filled,
the outline is simplified at ~1 px (0.75 px Douglas-Peucker) and pieces smaller than ``min_area_px``
are dropped.
:func:`to_crs` maps the result through the grid's geotransform.
"""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np
import shapely
from affine import Affine
from rasterio.features import shapes
from shapely.geometry import Polygon

from .blend import NODATA

SIMPLIFY_PX = 0.75  # Douglas-Peucker; 1.0 cuts 1-px corner notches into chords (-4 % on a rectangle)


@dataclass
class PixelPolygons:
    """Polygons in pixel coordinates with per-polygon statistics (parallel lists)."""

    geoms: list[Polygon]
    count: np.ndarray  # pixels
    prob_sum: np.ndarray  # sum of percent values
    prob_max: np.ndarray  # max percent value

    def __len__(self) -> int:
        return len(self.geoms)


@dataclass
class _Piece:
    geom: Polygon
    count: int
    psum: float
    pmax: int


class Vectorizer:
    """Streamed polygonisation of a ``height`` x ``width`` percent raster (see the module docstring).

    Parameters
    ----------
    height, width
        Size of the model grid.
    window_rows
        Rows per polygonising window.
    threshold_pct
        A pixel is poppy when its percent value is in ``[threshold_pct, 100]`` (nodata 255 never is).
    morph_radius_px
        Opening/closing radius (0 = none).
    min_area_px, max_hole_px
        Drop smaller polygons / fill smaller holes (pixel units).
    """

    def __init__(self, height: int, width: int, *, window_rows: int, threshold_pct: int = 50,
                 morph_radius_px: int = 1, min_area_px: float = 0.0, max_hole_px: float = 0.0) -> None:
        if not 1 <= threshold_pct <= 100:
            raise ValueError(f"'threshold_pct' must be in [1, 100], got {threshold_pct}")
        self.height, self.width = height, width
        self.window_rows = window_rows
        self.threshold_pct = threshold_pct
        self.radius = morph_radius_px
        self.halo = 2 * morph_radius_px + 1 if morph_radius_px else 0
        self.min_area_px, self.max_hole_px = min_area_px, max_hole_px
        self._kernel = (cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (2 * self.radius + 1,) * 2)
                        if self.radius else None)
        self._u8 = np.empty((window_rows + 2 * self.halo, width), np.uint8)
        self._mask = np.empty_like(self._u8)
        self._buf_top = 0  # grid row of buffer row 0
        self._fill = 0  # buffer rows in use
        self._next = 0  # first row of the next window
        self._pieces: list[_Piece] = []
        self._index: dict[tuple[int, int], int] = {}  # (window, label) -> piece
        self._seams: list[tuple[np.ndarray | None, np.ndarray | None]] = []  # (top, bottom) labels per window

    # -- streaming --------------------------------------------------------------------------------
    def push(self, row: int, u8: np.ndarray) -> None:
        """Add percent rows ``[row, row + len(u8))`` (must follow the previous ones)."""
        if row != self._buf_top + self._fill:
            expected = self._buf_top + self._fill
            raise ValueError(f"rows must arrive in order: expected row {expected}, got {row}")
        i = 0
        while i < len(u8):
            k = min(len(self._u8) - self._fill, len(u8) - i)
            self._u8[self._fill:self._fill + k] = u8[i:i + k]
            self._fill += k
            i += k
            self._drain(final=False)

    def _drain(self, final: bool) -> None:
        while self._next < self.height:
            end = min(self._next + self.window_rows, self.height)
            have = self._buf_top + self._fill
            if have < min(end + self.halo, self.height) and not final:
                return
            self._window(self._next, end)
            self._next = end
            drop = max(0, end - self.halo - self._buf_top)
            keep = self._fill - drop
            if drop and keep:
                self._u8[:keep] = self._u8[drop:self._fill]
            self._buf_top += drop
            self._fill = keep

    def _window(self, start: int, end: int) -> None:
        """Polygonise window rows ``[start, end)``: only boxes around positive pixels are processed."""
        w = len(self._seams)
        lo = max(start - self.halo, self._buf_top)
        hi = min(end + self.halo, self._buf_top + self._fill)
        u8 = self._u8[lo - self._buf_top:hi - self._buf_top]
        mask = cv2.inRange(u8, self.threshold_pct, 100, dst=self._mask[:len(u8)])  # 0/255; nodata excluded
        a, b = start - lo, end - lo  # the window's own rows inside the halo-extended block
        first, last = start > 0, end < self.height
        top = np.zeros(self.width, np.int32) if first else None
        bottom = np.zeros(self.width, np.int32) if last else None
        next_label = 1
        # Boxes: runs of positive rows, then runs of positive columns within them, split only at gaps
        # wider than the morphology can bridge and padded by its reach, so each component (before and
        # after morphology) lies in exactly one box and every box sees the same neighbourhood as the
        # whole window would.
        gap, pad = 2 * self.halo + 1, self.halo
        for r0, r1 in _runs(cv2.reduce(mask, 1, cv2.REDUCE_MAX).ravel(), gap, pad, len(mask)):
            for c0, c1 in _runs(mask[r0:r1].max(axis=0), gap, pad, self.width):
                box = mask[r0:r1, c0:c1]
                if self._kernel is not None:
                    box = cv2.morphologyEx(box, cv2.MORPH_OPEN, self._kernel)
                    box = cv2.morphologyEx(box, cv2.MORPH_CLOSE, self._kernel)
                    box &= cv2.compare(u8[r0:r1, c0:c1], NODATA, cv2.CMP_NE)
                y0, y1 = max(r0, a), min(r1, b)  # crop to the window's own rows
                if y0 >= y1:
                    continue
                sub = box[y0 - r0:y1 - r0]
                n, labels, stats, _ = cv2.connectedComponentsWithStats(sub, connectivity=4, ltype=cv2.CV_32S)
                if n < 2:
                    continue
                self._pieces_of_box(w, labels, stats, next_label, u8[y0:y1, c0:c1], col=c0,
                                    row=start + y0 - a, start=start, first=first, last=last, rows=end - start)
                if top is not None and y0 == a:
                    row = labels[0]
                    top[c0:c1] = np.where(row > 0, row + (next_label - 1), 0)
                if bottom is not None and y1 == b:
                    row = labels[-1]
                    bottom[c0:c1] = np.where(row > 0, row + (next_label - 1), 0)
                next_label += n - 1
        self._seams.append((top, bottom))

    def _pieces_of_box(self, w: int, labels: np.ndarray, stats: np.ndarray, offset: int, vals: np.ndarray, *,
                       col: int, row: int, start: int, first: bool, last: bool, rows: int) -> None:
        """Statistics and polygons of the components of one box that are kept (big enough or on a seam).

        ``col``/``row``: grid offset of the box; ``start``/``rows``: the window's first row and height.
        """
        area = stats[:, cv2.CC_STAT_AREA]
        wy = (row - start) + stats[:, cv2.CC_STAT_TOP]  # each component's first row inside the window
        on_seam = (first & (wy == 0)) | (last & (wy + stats[:, cv2.CC_STAT_HEIGHT] == rows))
        keep = (area >= self.min_area_px) | on_seam
        keep[0] = False
        for k in np.flatnonzero(keep).tolist():
            x, y, cw, ch = (int(v) for v in stats[k, :4])
            crop = labels[y:y + ch, x:x + cw] == k
            v = vals[y:y + ch, x:x + cw][crop]
            polys = [_polygon(g["coordinates"]) for g, _ in
                     shapes(crop.view(np.uint8), mask=crop, connectivity=4,
                            transform=Affine.translation(col + x, row + y))]
            geom = polys[0] if len(polys) == 1 else shapely.union_all(polys)
            self._index[(w, offset + k - 1)] = len(self._pieces)
            self._pieces.append(_Piece(geom, int(area[k]), float(v.sum(dtype=np.int64)), int(v.max())))

    # -- finishing --------------------------------------------------------------------------------
    def finish(self) -> PixelPolygons:
        """Process the last rows, merge across seams, fill holes, simplify, drop small ones."""
        self._drain(final=True)
        parent = list(range(len(self._pieces)))

        def find(i: int) -> int:
            while parent[i] != i:
                parent[i] = parent[parent[i]]
                i = parent[i]
            return i

        for w in range(len(self._seams) - 1):
            bottom, top = self._seams[w][1], self._seams[w + 1][0]
            if bottom is None or top is None:
                continue
            both = (bottom > 0) & (top > 0)
            if not both.any():
                continue
            for lb, lt in np.unique(np.stack([bottom[both], top[both]], axis=1), axis=0):
                i, j = self._index[(w, int(lb))], self._index[(w + 1, int(lt))]
                parent[find(i)] = find(j)

        groups: dict[int, list[int]] = {}
        for i in range(len(self._pieces)):
            groups.setdefault(find(i), []).append(i)
        out_geoms, count, psum, pmax = [], [], [], []
        for members in groups.values():
            pieces = [self._pieces[i] for i in members]
            geom = pieces[0].geom if len(pieces) == 1 else shapely.union_all([p.geom for p in pieces])
            n = sum(p.count for p in pieces)
            if n < self.min_area_px:
                continue
            for part in getattr(geom, "geoms", [geom]):
                part = polish(part, self.max_hole_px)
                if part.is_empty or part.area < self.min_area_px:
                    continue
                out_geoms.append(part)
                count.append(n)
                psum.append(sum(p.psum for p in pieces))
                pmax.append(max(p.pmax for p in pieces))
        return PixelPolygons(out_geoms, np.array(count, np.int64), np.array(psum, np.float64),
                             np.array(pmax, np.int64))


def _polygon(rings: list) -> Polygon:
    """A polygon from GeoJSON rings, through numpy (shapely's ``shape()`` loops over points in Python)."""
    shell = np.asarray(rings[0], dtype=np.float64)
    return Polygon(shell, [np.asarray(r, dtype=np.float64) for r in rings[1:]])


def _runs(flags: np.ndarray, gap: int, pad: int, limit: int) -> list[tuple[int, int]]:
    """``[start, end)`` runs of nonzero ``flags``, merged across gaps shorter than ``gap``, padded by
    ``pad`` and clipped to ``[0, limit)``.

    >>> _runs(np.array([0, 1, 1, 0, 0, 1, 0, 0, 0, 0, 0, 0, 0, 1]), 3, 1, 14)
    [(0, 7), (12, 14)]
    """
    idx = np.flatnonzero(flags)
    if idx.size == 0:
        return []
    breaks = np.flatnonzero(np.diff(idx) > gap)
    starts = np.r_[idx[0], idx[breaks + 1]]
    ends = np.r_[idx[breaks], idx[-1]] + 1
    return [(max(int(s) - pad, 0), min(int(e) + pad, limit)) for s, e in zip(starts, ends, strict=True)]


def fill_holes(poly: Polygon, max_hole: float) -> Polygon:
    """``poly`` without the holes whose area is below ``max_hole``.

    >>> ring = Polygon([(0, 0), (10, 0), (10, 10), (0, 10)], [[(4, 4), (5, 4), (5, 5), (4, 5)]])
    >>> fill_holes(ring, 2.0).area, fill_holes(ring, 0.5).area
    (100.0, 99.0)
    """
    if not poly.interiors or max_hole <= 0:
        return poly
    keep = [r for r in poly.interiors if Polygon(r).area >= max_hole]
    return Polygon(poly.exterior, keep)


def polish(poly: Polygon, max_hole_px: float) -> Polygon:
    """Fill small holes, simplify at :data:`SIMPLIFY_PX`; an invalid result is repaired (largest part)."""
    poly = fill_holes(poly, max_hole_px)
    simple = shapely.simplify(poly, SIMPLIFY_PX, preserve_topology=False)  # 7x faster; repaired below
    if not simple.is_valid:
        simple = shapely.make_valid(simple)
    if simple.geom_type != "Polygon":
        parts = [g for g in getattr(simple, "geoms", []) if g.geom_type == "Polygon"]
        simple = max(parts, key=lambda g: g.area) if parts else poly
    return simple


def to_crs(geoms: list[Polygon], transform: Affine) -> np.ndarray:
    """Map pixel-coordinate geometries through ``transform`` (the model grid's geotransform)."""
    a, b, c, d, e, f = transform[:6]
    m = np.array([[a, d], [b, e]], np.float64)
    offset = np.array([c, f], np.float64)
    return shapely.transform(np.asarray(geoms, dtype=object), lambda xy: xy @ m + offset)
