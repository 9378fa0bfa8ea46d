"""One mosaic's detection as units of work: row bands, each read, inferred, blended, written and
polygonised on its own, then joined.

A mosaic taller than ``detect.band_rows`` model-grid rows is cut into bands of whole vectorising
windows (:func:`plan_bands`). A band owns the output rows ``[row0, row1)``; it runs every tile that
reaches into ``[row0 - halo, row1 + halo)`` (``halo``: the morphology's reach), so its blended rows,
and the windows, pieces and seam labels it polygonises, are exactly those one pass over the whole
mosaic would produce. The price is the one or two tile rows either side of a band edge that both
neighbours run (~1 tile row per band edge: 3.1 % more tiles at the default 16384 rows).

:func:`run_band` writes the band's probability rows into a GeoTIFF part in the run's work area and
returns its unmerged polygon pieces (:class:`~poppyscan.vectorize.VectorParts`). :func:`finish_mosaic`
joins the pieces of all bands (:func:`~poppyscan.vectorize.merge_parts`) and writes the probability COG
from the parts (stitched into one GeoTIFF first). Bands are what ``--resume`` journals inside a mosaic
and what a Dask cluster runs as separate tasks (:mod:`~poppyscan.distributed`); a mosaic of one band
runs as before.
"""

from __future__ import annotations

import contextlib
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import geopandas as gpd
import numpy as np
from affine import Affine

from .blend import Blender, ProbabilityWriter, assemble_cog, to_percent
from .infer import Worker, iter_batches, run_inference
from .mosaic import ModelGrid, Mosaic
from .regions import threshold_pct
from .tiles import Tile, tile_grid
from .vectorize import Vectorizer, VectorParts, halo_rows, merge_parts, to_crs

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Band:
    """Output rows ``[row0, row1)`` of a model grid and the tiles (row-major) needed to make them."""

    index: int
    row0: int
    row1: int
    tiles: tuple[Tile, ...]


@dataclass
class BandResult:
    """A finished band: its probability part file (in the work area) and unmerged polygon pieces."""

    index: int
    row0: int
    row1: int
    part: str
    parts: VectorParts
    tiles: int
    skipped: int
    timings: dict[str, float] = field(default_factory=dict)


def plan_bands(height: int, width: int, *, tile_size: int, overlap: int, band_rows: int, window_rows: int,
               halo: int) -> list[Band]:
    """Cut a ``height`` x ``width`` grid into bands of ``band_rows`` rows rounded down to whole windows
    (``0``: one band). Band edges on multiples of ``window_rows`` keep the windows of a single pass.

    >>> [(b.row0, b.row1, len(b.tiles)) for b in plan_bands(2500, 500, tile_size=512, overlap=64,
    ...                                                     band_rows=1024, window_rows=512, halo=3)]
    [(0, 1024, 3), (1024, 2048, 4), (2048, 2500, 2)]
    """
    tiles = tile_grid(height, width, tile_size=tile_size, overlap=overlap)
    step = band_rows // window_rows * window_rows if band_rows else 0
    if not step or height <= step:
        return [Band(0, 0, height, tuple(tiles))]
    rows: dict[int, list[Tile]] = {}  # tile rows (row-major, so bands keep the order)
    for t in tiles:
        rows.setdefault(t.row, []).append(t)
    edges = [*range(0, height, step), height]
    bands = []
    for i, (r0, r1) in enumerate(zip(edges[:-1], edges[1:], strict=True)):
        lo, hi = max(0, r0 - halo), min(height, r1 + halo)
        needed = (ts for row, ts in rows.items() if row < hi and row + ts[0].height > lo)
        bands.append(Band(i, r0, r1, tuple(t for ts in needed for t in ts)))
    return bands


def band_file(prob_name: str, band: int) -> str:
    """Work-area file name of band ``band`` of probability raster ``prob_name``."""
    return f".{prob_name}.band{band:04d}.tif"


def _vector_params(config: Any, grid: ModelGrid, threshold: float) -> dict[str, Any]:
    cfg, px_area = config.detect, grid.gsd_m**2
    return {"window_rows": cfg.window_rows, "threshold_pct": threshold_pct(threshold),
            "morph_radius_px": cfg.morph_radius_px, "min_area_px": cfg.min_area_m2 / px_area,
            "max_hole_px": cfg.max_hole_m2 / px_area}


def model_gsd(mosaic: Mosaic, meta: Any, config: Any) -> float:
    """The GSD ``mosaic`` is predicted at under ``config`` (:func:`poppyscan.bundle.run_gsd_m`)."""
    from .bundle_rules import run_gsd_m

    return run_gsd_m(meta, mosaic.gsd_m, config.detect.min_gsd_m)


def mosaic_bands(mosaic: Mosaic, config: Any, *, gsd_m: float, tile_size: int, overlap: int) -> list[Band]:
    """The bands of ``mosaic`` at the model GSD under ``config``."""
    grid = mosaic.grid(gsd_m)
    return plan_bands(grid.height, grid.width, tile_size=tile_size, overlap=overlap,
                      band_rows=config.detect.band_rows, window_rows=config.detect.window_rows,
                      halo=halo_rows(config.detect.morph_radius_px))


def run_band(mosaic: Mosaic, model: Any, band: Band, *, work_dir: Path, prob_name: str, config: Any,
             tile_size: int, overlap: int, threshold: float,
             on_tiles: Callable[[int], None] | None = None) -> BandResult:
    """Infer, blend, write and polygonise one band (``model``: ``detect._Model``)."""
    t_start = time.perf_counter()
    grid = mosaic.grid(model_gsd(mosaic, model.meta, config))
    h, w = grid.height, grid.width
    vec = Vectorizer(h, w, start=band.row0, stop=band.row1, **_vector_params(config, grid, threshold))
    lo, hi = max(0, band.row0 - vec.halo), min(h, band.row1 + vec.halo)
    part = Path(work_dir) / band_file(prob_name, band.index)
    writer = ProbabilityWriter(part, width=w, height=band.row1 - band.row0, crs=mosaic.crs,
                               transform=grid.transform * Affine.translation(0, band.row0))
    u8_buf = np.empty((min(tile_size, h), w), np.uint8)

    def sink(row: int, prob: np.ndarray, valid: np.ndarray) -> None:
        a, b = max(row, lo), min(row + len(prob), hi)  # rows this band polygonises or writes
        if a >= b:
            return
        u8 = to_percent(prob[a - row:b - row], valid[a - row:b - row], out=u8_buf[:b - a])
        vec.push(a, u8)
        c, d = max(a, band.row0), min(b, band.row1)
        if c < d:
            writer.write(c - band.row0, u8[c - a:d - a])

    blender = Blender(h, w, tile_size=tile_size, overlap=overlap, sink=sink, top=band.tiles[0].row)

    def handle(item: tuple[Any, np.ndarray]) -> None:
        batch, prob = item
        for i, tile in enumerate(batch.tiles):
            blender.add(tile, prob[i], batch.valid[i])

    worker = Worker(handle)
    batches = iter_batches(mosaic, grid, band.tiles, tile_size=tile_size, batch_size=model.batch_size)
    try:
        stats = run_inference(batches, model.predict, tta=config.detect.tta,
                              consume=lambda b, p: worker.put((b, p)),
                              progress=(lambda n, _: on_tiles(n)) if on_tiles else None,
                              streams=model.streams)
        worker.close()
        blender.flush(hi)
        parts = vec.partial()
    except BaseException:
        with contextlib.suppress(BaseException):  # the first error is the one to report
            worker.close()
        writer.close()
        part.unlink(missing_ok=True)
        raise
    writer.close()
    return BandResult(band.index, band.row0, band.row1, part.name, parts, stats.tiles, stats.skipped,
                      {"infer_s": time.perf_counter() - t_start, "forward_s": stats.forward_s,
                       "forward_cpu_s": stats.forward_cpu_s,
                       "reader_wait_s": stats.read_wait_s, "writer_busy_s": worker.busy_s})


def finish_mosaic(mosaic: Mosaic, grid: ModelGrid, results: list[BandResult], *, work_dir: Path,
                  prob_name: str, config: Any, threshold: float) -> dict[str, Any]:
    """Join the bands of a mosaic: merged polygons (a GeoDataFrame in the mosaic's CRS), the
    probability COG ``work_dir/prob_name``, and the figures (``tiles``, ``skipped``, ``ha``, ``timings``)."""
    results = sorted(results, key=lambda r: r.index)
    t0 = time.perf_counter()
    vp = _vector_params(config, grid, threshold)
    polys = merge_parts([r.parts for r in results], min_area_px=vp["min_area_px"],
                        max_hole_px=vp["max_hole_px"])
    t_vec = time.perf_counter()
    work_dir = Path(work_dir)
    assemble_cog([(work_dir / r.part, r.row0) for r in results], work_dir / prob_name, width=grid.width,
                 height=grid.height, crs=mosaic.crs, transform=grid.transform)
    t_cog = time.perf_counter()
    geoms = to_crs(polys.geoms, grid.transform)
    count = np.maximum(polys.count, 1)
    gdf = gpd.GeoDataFrame({"prob_mean": polys.prob_sum / count / 100.0, "prob_max": polys.prob_max / 100.0,
                            "mosaic": mosaic.path.name}, geometry=gpd.GeoSeries(geoms, crs=mosaic.crs))
    timings = {k: sum(r.timings.get(k, 0.0) for r in results)
               for k in ("infer_s", "forward_s", "forward_cpu_s", "reader_wait_s", "writer_busy_s")}
    timings.update(vectorize_finish_s=t_vec - t0, cog_s=t_cog - t_vec, bands=len(results))
    tiles, skipped = sum(r.tiles for r in results), sum(r.skipped for r in results)
    log.info("%s: %d band(s), %d tiles (%d without valid pixels skipped), %d detections; wrote %s",
             mosaic.path.name, len(results), tiles, skipped, len(gdf), prob_name)
    return {"gdf": gdf, "grid": grid, "tiles": tiles, "skipped": skipped,
            "ha": grid.width * grid.height * grid.gsd_m**2 / 1e4, "timings": timings}
