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

A vectoriser may cover only a band of rows ``[start, stop)`` (a unit of work of a large mosaic, see
:mod:`~poppyscan.bands`): it is fed rows ``[start - halo, stop + halo)`` and keeps the pieces and seam
labels unmerged (:meth:`Vectorizer.partial`). :func:`merge_parts` joins the parts of all bands in order
with the same seam pairing; with band edges on multiples of ``window_rows`` the windows, pieces and
therefore the polygons are exactly those of one vectoriser over the whole grid.
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


Seam = tuple[np.ndarray, np.ndarray] | None
"""Labels on a window's first or last row: ``(columns, labels)`` of its labelled pixels, or ``None``
on the grid's border (nothing to pair with)."""


@dataclass
class VectorParts:
    """Unmerged output of a vectoriser: pieces with their ``(window, label)`` keys and each window's
    ``(top, bottom)`` seams, windows numbered from 0 in row order. Picklable (Dask) and
    serialisable with :meth:`to_arrays` / :meth:`from_arrays` (resume journal)."""

    pieces: list[_Piece]
    keys: list[tuple[int, int]]
    seams: list[tuple[Seam, Seam]]

    def to_arrays(self) -> dict[str, np.ndarray]:
        """Plain numpy arrays (for ``np.savez``; no pickle), exact float64 coordinates as WKB."""
        wkb = shapely.to_wkb([p.geom for p in self.pieces]) if self.pieces else np.array([], object)
        lens = np.array([len(b) for b in wkb], np.int64)
        out = {
            "wkb": np.frombuffer(b"".join(wkb), np.uint8), "wkb_len": lens,
            "count": np.array([p.count for p in self.pieces], np.int64),
            "psum": np.array([p.psum for p in self.pieces], np.float64),
            "pmax": np.array([p.pmax for p in self.pieces], np.int64),
            "keys": np.array(self.keys, np.int64).reshape(-1, 2),
        }
        for side, name in ((0, "top"), (1, "bottom")):
            present = np.array([s[side] is not None for s in self.seams], bool)
            cols = [s[side][0] for s in self.seams if s[side] is not None]
            labs = [s[side][1] for s in self.seams if s[side] is not None]
            out[f"{name}_present"] = present
            out[f"{name}_len"] = np.array([len(c) for c in cols], np.int64)
            out[f"{name}_cols"] = np.concatenate(cols).astype(np.int32) if cols else np.zeros(0, np.int32)
            out[f"{name}_labels"] = np.concatenate(labs).astype(np.int32) if labs else np.zeros(0, np.int32)
        return out

    @classmethod
    def from_arrays(cls, a: dict[str, np.ndarray]) -> VectorParts:
        ends = np.cumsum(a["wkb_len"])
        buf = a["wkb"].tobytes()
        geoms = shapely.from_wkb([buf[e - n:e] for e, n in zip(ends.tolist(), a["wkb_len"].tolist(),
                                                                strict=True)]) if len(ends) else []
        pieces = [_Piece(g, int(c), float(s), int(m))
                  for g, c, s, m in zip(geoms, a["count"], a["psum"], a["pmax"], strict=True)]
        sides = []
        for name in ("top", "bottom"):
            splits = np.cumsum(a[f"{name}_len"])[:-1]
            cols = iter(np.split(a[f"{name}_cols"], splits)) if len(a[f"{name}_len"]) else iter(())
            labs = iter(np.split(a[f"{name}_labels"], splits)) if len(a[f"{name}_len"]) else iter(())
            sides.append([(next(cols), next(labs)) if p else None for p in a[f"{name}_present"].tolist()])
        keys = [(int(w), int(k)) for w, k in a["keys"]]
        return cls(pieces, keys, list(zip(sides[0], sides[1], strict=True)))


def _sparse(labels: np.ndarray | None) -> Seam:
    if labels is None:
        return None
    cols = np.flatnonzero(labels).astype(np.int32)
    return cols, labels[cols].astype(np.int32)


def halo_rows(morph_radius_px: int) -> int:
    """Rows of context a window (or band) needs beyond its edge for the opening and closing."""
    return 2 * morph_radius_px + 1 if morph_radius_px else 0


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
    start, stop
        Polygonise only rows ``[start, stop)`` (a band; default the whole grid). Rows are then pushed
        from ``start - halo`` (clipped at 0) and rows past ``stop + halo`` are ignored.
    """

    def __init__(self, height: int, width: int, *, window_rows: int, threshold_pct: int = 50,
                 morph_radius_px: int = 1, min_area_px: float = 0.0, max_hole_px: float = 0.0,
                 start: int = 0, stop: int | None = None) -> None:
        if not 1 <= threshold_pct <= 100:
            raise ValueError(f"'threshold_pct' must be in [1, 100], got {threshold_pct}")
        stop = height if stop is None else stop
        if not 0 <= start < stop <= height:
            raise ValueError(f"band rows [{start}, {stop}) must lie inside the grid's {height} rows")
        self.height, self.width = height, width
        self.start, self.stop = start, stop
        self.window_rows = window_rows
        self.threshold_pct = threshold_pct
        self.radius = morph_radius_px
        self.halo = halo_rows(morph_radius_px)
        self.min_area_px, self.max_hole_px = min_area_px, max_hole_px
        self._kernel = (cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (2 * self.radius + 1,) * 2)
                        if self.radius else None)
        self._u8 = np.empty((window_rows + 2 * self.halo, width), np.uint8)
        self._mask = np.empty_like(self._u8)
        self._buf_top = max(0, start - self.halo)  # grid row of buffer row 0
        self._limit = min(height, stop + self.halo)  # rows from here on are not needed
        self._fill = 0  # buffer rows in use
        self._next = start  # first row of the next window
        self._pieces: list[_Piece] = []
        self._keys: list[tuple[int, int]] = []  # (window, label) of each piece
        self._seams: list[tuple[np.ndarray | None, np.ndarray | None]] = []  # (top, bottom) labels per window

    # -- streaming --------------------------------------------------------------------------------
    def push(self, row: int, u8: np.ndarray) -> None:
        """Add percent rows ``[row, row + len(u8))`` (must follow the previous ones)."""
        if row >= self._limit:
            return
        if row != self._buf_top + self._fill:
            expected = self._buf_top + self._fill
            raise ValueError(f"rows must arrive in order: expected row {expected}, got {row}")
        u8 = u8[:max(0, self._limit - row)]
        i = 0
        while i < len(u8):
            k = min(len(self._u8) - self._fill, len(u8) - i)
            self._u8[self._fill:self._fill + k] = u8[i:i + k]
            self._fill += k
            i += k
            self._drain(final=False)

    def _drain(self, final: bool) -> None:
        while self._next < self.stop:
            end = min(self._next + self.window_rows, self.stop)
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
        self._seams.append((_sparse(top), _sparse(bottom)))

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
            self._keys.append((w, offset + k - 1))
            self._pieces.append(_Piece(geom, int(area[k]), float(v.sum(dtype=np.int64)), int(v.max())))

    # -- finishing --------------------------------------------------------------------------------
    def partial(self) -> VectorParts:
        """Process the last rows and return the pieces and seams unmerged (see :func:`merge_parts`)."""
        self._drain(final=True)
        return VectorParts(self._pieces, self._keys, self._seams)

    def finish(self) -> PixelPolygons:
        """Process the last rows, merge across seams, fill holes, simplify, drop small ones."""
        return merge_parts([self.partial()], min_area_px=self.min_area_px, max_hole_px=self.max_hole_px)


def merge_parts(parts: list[VectorParts], *, min_area_px: float, max_hole_px: float) -> PixelPolygons:
    """Join the parts of consecutive bands (in row order): union pieces that touch across every seam,
    fill holes, simplify and drop small polygons."""
    pieces: list[_Piece] = []
    index: dict[tuple[int, int], int] = {}
    seams: list[tuple[Seam, Seam]] = []
    for part in parts:
        w0 = len(seams)
        for (w, label), piece in zip(part.keys, part.pieces, strict=True):
            index[(w0 + w, label)] = len(pieces)
            pieces.append(piece)
        seams.extend(part.seams)
    parent = list(range(len(pieces)))

    def find(i: int) -> int:
        while parent[i] != i:
            parent[i] = parent[parent[i]]
            i = parent[i]
        return i

    for w in range(len(seams) - 1):
        bottom, top = seams[w][1], seams[w + 1][0]
        if bottom is None or top is None:
            continue
        _, ib, it = np.intersect1d(bottom[0], top[0], assume_unique=True, return_indices=True)
        if not len(ib):
            continue
        for lb, lt in np.unique(np.stack([bottom[1][ib], top[1][it]], axis=1), axis=0):
            i, j = index[(w, int(lb))], index[(w + 1, int(lt))]
            parent[find(i)] = find(j)

    groups: dict[int, list[int]] = {}
    for i in range(len(pieces)):
        groups.setdefault(find(i), []).append(i)
    out_geoms, count, psum, pmax = [], [], [], []
    for members in groups.values():
        group = [pieces[i] for i in members]
        geom = group[0].geom if len(group) == 1 else shapely.union_all([p.geom for p in group])
        n = sum(p.count for p in group)
        if n < min_area_px:
            continue
        for part in getattr(geom, "geoms", [geom]):
            part = polish(part, max_hole_px)
            if part.is_empty or part.area < min_area_px:
                continue
            out_geoms.append(part)
            count.append(n)
            psum.append(sum(p.psum for p in group))
            pmax.append(max(p.pmax for p in group))
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
