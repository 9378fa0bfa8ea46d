"""The input mosaics of a detect run, and which one each plot was detected on.

Everything that reads a run's mosaics back (the field-task chips in :mod:`poppyscan.export`, the desk
review's chips in :mod:`poppyscan.review`) resolves plots to mosaics here, so both always cut a plot from
the same file.

A plot's input is ``run.json`` ``inputs[mosaic_index]`` (the ``mosaic_index`` column of layer ``plots``,
0-based, written by detect since the column exists). For a run folder written before it (or a value that
does not fit the run), the plot's ``mosaic`` file name decides; several inputs may share a name (every
OpenDroneMap output is ``odm_orthophoto.tif``), and then the one whose recorded bounds, in its own CRS,
contain the plot's centroid. Bounding boxes of neighbouring flights overlap, so when several do, the
files are read under the plot and the first with valid pixels there is taken (:func:`plot_on_data`; the
first whose bounds contain it when none has, or the files are missing). An input whose recorded path no
longer exists is looked for beside the run folder and in its parent (a run and its mosaics copied
elsewhere), and such a copy is taken only when its bounds are the recorded ones, so a same-named file of
another flight is never mistaken for it.

Whatever chose the mosaic, :func:`plot_on_data` checks that it has valid pixels under the plot before a
chip is cut, so a chip is never silently black because the plot lies outside its mosaic.
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import shapely

from .geo.crs import transform_geoms
from .geo.raster import ordered_bounds

log = logging.getLogger(__name__)

MASK_PX = 256
"""Largest side (pixels) of the decimated mask read by :func:`plot_on_data`."""


@dataclass(frozen=True)
class RunInput:
    """One input mosaic of a run (``run.json`` ``inputs[index]``).

    Attributes
    ----------
    index
        Position in ``run.json`` ``inputs`` (the plots' ``mosaic_index``).
    path
        The file to read: the recorded path, or its copy beside the run; the recorded path when neither
        exists.
    name
        The recorded file name (the plots' ``mosaic``).
    crs
        The recorded CRS (``EPSG:n`` or WKT), or None.
    bounds
        The recorded bounds ``(left, bottom, right, top)`` in ``crs`` (ordered: bottom <= top also for a
        south-up mosaic), or None.
    exists
        Whether ``path`` is a file.
    value_scale
        detect's uint16 -> uint8 factor (``inputs[].value_scale``), or None.
    """

    index: int
    path: Path
    name: str
    crs: str | None
    bounds: tuple[float, float, float, float] | None
    exists: bool
    value_scale: float | None = None

    @property
    def geographic(self) -> bool:
        """Whether the recorded CRS is geographic (lon/lat degrees)."""
        from pyproj import CRS

        return bool(self.crs) and CRS.from_user_input(self.crs).is_geographic


def number(value: Any) -> float | None:
    """``value`` as a finite float, or None (missing, text, NaN, infinite)."""
    try:
        f = float(value)
    except (TypeError, ValueError):
        return None
    return f if math.isfinite(f) else None


def _bounds(value: Any) -> tuple[float, float, float, float] | None:
    if not isinstance(value, list | tuple) or len(value) != 4:
        return None
    nums = [number(v) for v in value]
    return None if any(v is None for v in nums) else ordered_bounds(*nums)  # type: ignore[arg-type]


def _same_grid(path: Path, bounds: tuple[float, float, float, float] | None) -> bool:
    """Whether raster ``path`` lies where ``bounds`` say (within half a pixel); True without bounds."""
    if bounds is None:
        return True
    import rasterio

    try:
        with rasterio.open(path) as src:
            tol = 0.5 * max(abs(src.res[0]), abs(src.res[1]))
            return bool(np.allclose(ordered_bounds(*src.bounds), bounds, rtol=0.0, atol=tol))
    except (rasterio.errors.RasterioIOError, OSError):
        return False


def _locate(run_dir: Path, recorded: Path, bounds: tuple[float, float, float, float] | None) -> Path:
    if recorded.is_file():
        return recorded
    if recorded.name:
        for near in (run_dir / recorded.name, run_dir.parent / recorded.name):
            if near.is_file() and _same_grid(near, bounds):
                return near
    return recorded


def read_inputs(run_dir: str | Path, run: dict, names: Any = ()) -> list[RunInput]:
    """The run's input mosaics, in ``run.json`` order, each located on disk.

    Parameters
    ----------
    run_dir
        The detect run folder.
    run
        Its parsed ``run.json`` (``{}`` when missing).
    names
        The plots' ``mosaic`` names: used only when ``run.json`` lists no inputs, to take each named
        file found beside the run (or in its parent) as an input of unknown CRS and bounds.
    """
    run_dir = Path(run_dir)
    out: list[RunInput] = []
    items = run.get("inputs") or []
    for i, item in enumerate(items):
        if not isinstance(item, dict):
            continue  # keeps the others' indexes: they are positions in run.json
        recorded = Path(str(item.get("path") or ""))
        bounds = _bounds(item.get("bounds"))
        path = _locate(run_dir, recorded, bounds) if str(recorded) not in ("", ".") else recorded
        crs = item.get("crs") or run.get("crs")
        out.append(RunInput(index=i, path=path, name=recorded.name, crs=str(crs) if crs else None,
                            bounds=bounds, exists=path.is_file(),
                            value_scale=number(item.get("value_scale"))))
    if out:
        return out
    for name in dict.fromkeys(str(n) for n in names if n is not None and str(n) not in ("", "nan", "None")):
        near = (run_dir / Path(name).name, run_dir.parent / Path(name).name)
        path = next((p for p in near if p.is_file()), None)
        if path is not None:
            out.append(RunInput(index=len(out), path=path, name=path.name, crs=None, bounds=None,
                                exists=True))
    return out


def _index(value: Any) -> int | None:
    f = number(value)
    return int(f) if f is not None and f == int(f) and f >= 0 else None


def plot_inputs(inputs: list[RunInput], plots: Any, *, guess: bool = True) -> list[RunInput | None]:
    """The input each row of ``plots`` (the ``plots`` layer, a GeoDataFrame) was detected on.

    ``mosaic_index`` when it names an input of the same file name as the plot's ``mosaic``; otherwise
    (with ``guess``) the input of that name, and among several of that name (or, for a name no input has,
    among all inputs) the one whose recorded bounds contain the plot's centroid; when the bounds of
    several do, the first of those with valid pixels under the plot (files read only then, and only
    those that exist), else the first of them. ``None`` where nothing fits, e.g. a same-named input that
    does not contain the plot, or no inputs at all; without ``guess``, wherever ``mosaic_index`` does
    not decide (what detect recorded, nothing inferred).
    """
    n = len(plots)
    idx = plots["mosaic_index"].tolist() if "mosaic_index" in plots else [None] * n
    names = plots["mosaic"].tolist() if "mosaic" in plots else [None] * n
    centroids = shapely.centroid(np.asarray(plots.geometry.values)) if n else np.empty(0, object)
    inside: dict[int, np.ndarray] = {}

    def contains(item: RunInput, row: int) -> bool:
        if item.bounds is None:
            return len(inputs) == 1  # nothing to test against: the only input is the only choice
        if item.index not in inside:
            inside[item.index] = _centroids_within(centroids, plots.crs, item)
        return bool(inside[item.index][row])

    by_index = {i.index: i for i in inputs}
    out: list[RunInput | None] = []
    with _Rasters() as rasters:
        for row, (k, raw) in enumerate(zip(idx, names, strict=True)):
            name = Path(str(raw)).name if raw is not None and str(raw) not in ("", "nan", "None") else ""
            own = by_index.get(_index(k))
            if own is not None and (not name or own.name == name):
                out.append(own)
                continue
            if not guess:
                out.append(None)
                continue
            same = [i for i in inputs if name and i.name == name]
            if len(same) == 1:
                out.append(same[0])
                continue
            hits = [i for i in (same or inputs) if contains(i, row)]
            if len(hits) > 1:  # overlapping bounds: the mosaic with pixels under the plot
                geom = plots.geometry.iloc[row]
                hits = [i for i in hits if rasters.on_data(i, geom, plots.crs)] or hits
            out.append(hits[0] if hits else None)
    return out


class _Rasters:
    """Input mosaics opened on demand (once each) to test whether a plot lies on their valid pixels."""

    def __init__(self) -> None:
        self._open: dict[int, Any] = {}

    def __enter__(self) -> _Rasters:
        return self

    def __exit__(self, *exc: object) -> None:
        for src in self._open.values():
            if src is not None:
                src.close()

    def on_data(self, item: RunInput, geom: Any, crs: Any) -> bool:
        """Whether ``item``'s file has valid pixels under ``geom`` (in ``crs``); False when it cannot be
        read."""
        import rasterio

        if item.index not in self._open:
            try:
                self._open[item.index] = rasterio.open(item.path) if item.exists else None
            except (rasterio.errors.RasterioIOError, OSError):
                self._open[item.index] = None
        src = self._open[item.index]
        if src is None or src.crs is None or geom is None:
            return False
        geom = transform_geoms(geom, crs, src.crs)
        try:
            return plot_on_data(src, geom)
        except (rasterio.errors.RasterioIOError, OSError):
            return False


def _centroids_within(centroids: np.ndarray, crs: Any, item: RunInput) -> np.ndarray:
    """Whether each centroid (in ``crs``) lies within ``item``'s recorded bounds (in its own CRS)."""
    pts = transform_geoms(centroids, crs, item.crs or None)
    x, y = shapely.get_x(pts), shapely.get_y(pts)
    left, bottom, right, top = item.bounds
    with np.errstate(invalid="ignore"):
        return (x >= left) & (x <= right) & (y >= bottom) & (y <= top)


def plot_on_data(src: Any, geom: Any) -> bool:
    """Whether the open raster ``src`` has a valid pixel under ``geom`` (given in ``src``'s CRS).

    Reads the dataset mask (alpha band, nodata value or internal mask; every pixel of a raster without
    one) over the plot's extent, decimated to at most :data:`MASK_PX` pixels a side. False when the plot
    lies outside the raster or only over its nodata.
    """
    from affine import Affine
    from rasterio.enums import Resampling
    from rasterio.features import geometry_mask
    from rasterio.windows import Window

    if geom is None or geom.is_empty:
        return False
    minx, miny, maxx, maxy = geom.bounds
    inv = ~src.transform
    cols, rows = zip(*(inv @ (x, y) for x in (minx, maxx) for y in (miny, maxy)), strict=True)
    c0, c1 = max(math.floor(min(cols)), 0), min(math.ceil(max(cols)), src.width)
    r0, r1 = max(math.floor(min(rows)), 0), min(math.ceil(max(rows)), src.height)
    if c1 <= c0 or r1 <= r0:
        return False
    w, h = c1 - c0, r1 - r0
    step = max(1, math.ceil(max(w, h) / MASK_PX))
    shape = (math.ceil(h / step), math.ceil(w / step))
    window = Window(c0, r0, w, h)
    mask = src.read_masks(1, window=window, out_shape=shape, resampling=Resampling.nearest)
    transform = src.window_transform(window) @ Affine.scale(w / shape[1], h / shape[0])
    under = geometry_mask([geom], out_shape=shape, transform=transform, invert=True, all_touched=True)
    return bool((mask[under] > 0).any()) if under.any() else False
