"""Run detect's per-mosaic work locally or as tasks on a Dask distributed cluster, journaling it.

:func:`run_mosaics` is the loop over mosaics inside :func:`poppyscan.detect.detect`. A mosaic is cut
into row bands (:mod:`~poppyscan.bands`; one band unless it is taller than ``detect.band_rows``). Each
band is a unit of work: read, infer, blend, write its probability rows into the run's work area and
polygonise; a mosaic of several bands journals each finished band
(:meth:`~poppyscan.resume.WorkArea.record_band`). When all its bands are done the mosaic is finished:
pieces merged across band seams, probability COG written, mosaic journaled
(:meth:`~poppyscan.resume.WorkArea.record`) and its band journal dropped. ``--resume`` skips journaled
mosaics and bands.

With a scheduler address (``--scheduler tcp://host:8786`` or config ``detect.scheduler``) every
unfinished band of every unfinished mosaic is a task on an existing ``dask.distributed`` cluster, and
each mosaic's finishing step is a task that depends on its bands; each worker opens the mosaic and the
model itself (cached per worker process) and writes into the work area, so **the mosaics, the model
bundle and the run directory's parent must be at the same paths on every worker** (a shared
filesystem). Tasks run the same code as a local run, so the results are identical; the client merges
the detections in mosaic order exactly as a local run does.
"""

from __future__ import annotations

import contextlib
import logging
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from .bands import Band, BandResult, finish_mosaic, model_gsd, run_band
from .errors import DependencyError, InputError
from .mosaic import Mosaic, block_cache
from .resume import WorkArea

log = logging.getLogger(__name__)

_MODELS: dict[str, Any] = {}  # per worker process: model reference -> resolved model


def prob_name(index: int) -> str:
    """File name of mosaic ``index``'s probability raster in the run directory."""
    return "probability.tif" if index == 0 else f"probability_{index + 1}.tif"


def run_mosaics(opened: Sequence[Mosaic], plans: Sequence[list[Band]], resolved: Any, work: WorkArea, *,
                model_ref: Any, config: Any, device: str, tile_size: int, overlap: int, threshold: float,
                progress: Any) -> tuple[list[dict[str, Any]], list[str]]:
    """Results (:func:`~poppyscan.bands.finish_mosaic` dicts) and probability file names of all mosaics;
    ``plans[i]``: the bands of mosaic ``i`` (:func:`~poppyscan.bands.mosaic_bands`)."""
    from .detect import _gdal_cache_mb

    gsd = float(resolved.meta.gsd_m)  # the coarsest any mosaic runs at (sizes the block cache)
    done = work.finished()
    results: dict[int, dict[str, Any]] = {}
    for i, m in enumerate(opened):
        if i in done:
            results[i] = WorkArea.restore(done[i], m.crs, m.grid(model_gsd(m, resolved.meta, config)))
            progress.update(results[i]["tiles"] + results[i]["skipped"], results[i]["ha"])
            log.info("%s: finished in the interrupted run, reused", m.path.name)
    todo = [i for i in range(len(opened)) if i not in results]
    scheduler = config.detect.scheduler
    if todo and scheduler:
        results.update(_run_on_cluster(scheduler, opened, plans, todo, resolved, work, model_ref=model_ref,
                                       config=config, device=device, tile_size=tile_size, overlap=overlap,
                                       threshold=threshold, progress=progress))
    elif todo:
        with block_cache(_gdal_cache_mb(list(opened), tile_size, gsd)):
            for i in todo:
                results[i] = _detect_mosaic(i, opened[i], plans[i], resolved, work, config=config,
                                            tile_size=tile_size, overlap=overlap, threshold=threshold,
                                            progress=progress)
    return [results[i] for i in range(len(opened))], [prob_name(i) for i in range(len(opened))]


def _detect_mosaic(index: int, mosaic: Mosaic, bands: list[Band], model: Any, work: WorkArea, *, config: Any,
                   tile_size: int, overlap: int, threshold: float, progress: Any) -> dict[str, Any]:
    """One mosaic in this process, band by band (journaled ones reused), then finished and journaled."""
    gsd = model_gsd(mosaic, model.meta, config)
    grid = mosaic.grid(gsd)
    planned = sum(len(b.tiles) for b in bands)
    ha_per_tile = grid.width * grid.height * gsd**2 / 1e4 / planned
    log.info("reading %s: %dx%d px, %s, %.3f m/px, mask %s -> model grid %dx%d at %.3f m/px, %d tiles in "
             "%d band(s)", mosaic.path, mosaic.width, mosaic.height, mosaic.describe()["crs"], mosaic.gsd_m,
             mosaic.mask_kind, grid.width, grid.height, grid.gsd_m, planned, len(bands))
    hint = mosaic.overview_hint(gsd)
    if hint:
        log.info("hint: %s", hint)
    done = work.finished_bands(index, bands) if len(bands) > 1 else {}
    if done:
        log.info("%s: %d of %d band(s) finished in the interrupted run, reused", mosaic.path.name, len(done),
                 len(bands))
    results = []
    for band in bands:
        if band.index in done:
            results.append(done[band.index])
            progress.update(len(band.tiles), ha_per_tile * len(band.tiles))
            continue
        r = run_band(mosaic, model, band, work_dir=work.path, prob_name=prob_name(index), config=config,
                     tile_size=tile_size, overlap=overlap, threshold=threshold,
                     on_tiles=lambda n: progress.update(n, ha_per_tile * n))
        if len(bands) > 1:
            work.record_band(index, r)
        results.append(r)
    out = finish_mosaic(mosaic, grid, results, work_dir=work.path, prob_name=prob_name(index), config=config,
                        threshold=threshold)
    work.record(index, prob_name(index), out)
    work.clear_bands(index)
    return out


def connect(address: str, timeout_s: float = 10.0) -> Any:
    """A ``distributed.Client`` on the scheduler at ``address``; one-line errors when it cannot be had.

    A malformed address is refused before a client is made: ``distributed.Client`` would fail on it only
    after starting its event loop, and the half-made client then hangs ~20 s when garbage-collected and
    prints an "Exception ignored ... TimeoutError" traceback.
    """
    from .config import scheduler_problem

    problem = scheduler_problem(address)
    if problem is not None:
        raise InputError(f"--scheduler '{address}' is not a Dask scheduler address ({problem}); give "
                         "tcp://HOST:PORT, e.g. tcp://10.0.0.5:8786, or drop --scheduler to run locally")
    try:
        from distributed import Client
    except ImportError:
        raise DependencyError("--scheduler needs dask.distributed; install it with "
                              "pip install 'poppyscan[distributed]'") from None
    try:
        return Client(address, timeout=timeout_s, set_as_default=False)
    except (OSError, TimeoutError, ValueError) as exc:
        first = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise InputError(f"cannot reach the Dask scheduler at '{address}' ({first}); start one with "
                         "`dask scheduler` and workers with `dask worker ADDRESS`, or drop --scheduler "
                         "to run locally") from None


def _run_on_cluster(address: str, opened: Sequence[Mosaic], plans: Sequence[list[Band]], todo: list[int],
                    resolved: Any, work: WorkArea, *, model_ref: Any, config: Any, device: str,
                    tile_size: int, overlap: int, threshold: float,
                    progress: Any) -> dict[int, dict[str, Any]]:
    from distributed import as_completed

    # a bundle travels by path (each worker loads it once); a ready predictor object by pickle
    ref = resolved.path or model_ref
    client = connect(address)
    band_futures: dict[Any, tuple[int, int]] = {}
    finish_futures: dict[int, Any] = {}
    try:
        nworkers = len(client.scheduler_info().get("workers", {}))
        stamp = time.time_ns()
        n_tasks = 0
        for i in todo:
            path = str(opened[i].path.resolve())
            bands = plans[i]
            done = work.finished_bands(i, bands) if len(bands) > 1 else {}
            inputs: list[Any] = []
            for band in bands:
                if band.index in done:
                    inputs.append(done[band.index])
                    progress.update(len(band.tiles), 0.0)
                    continue
                fut = client.submit(band_task, i, len(bands), band, path, str(work.path), ref, config, device,
                                    tile_size, overlap, threshold, pure=False,
                                    key=f"poppyscan-band-{i}-{band.index}-{stamp}")
                band_futures[fut] = (i, len(band.tiles))
                inputs.append(fut)
                n_tasks += 1
            gsd = model_gsd(opened[i], resolved.meta, config)
            finish_futures[i] = client.submit(finish_task, i, path, str(work.path), config, gsd, threshold,
                                              *inputs, pure=False, key=f"poppyscan-finish-{i}-{stamp}")
        log.info("running %d mosaic(s) as %d band task(s) on the Dask cluster at %s (%d worker(s))",
                 len(todo), n_tasks, address, nworkers)
        for fut in as_completed(list(band_futures), loop=client.loop):
            fut.result()  # re-raises the worker's error (e.g. InputError) here
            progress.update(band_futures[fut][1], 0.0)
        out: dict[int, dict[str, Any]] = {}
        for i in todo:  # in mosaic order; each finishing task has journaled its mosaic
            out[i] = finish_futures[i].result()
            progress.update(0, out[i]["ha"])
        return out
    finally:
        with contextlib.suppress(Exception):  # after an error: stop the other tasks
            client.cancel([*band_futures, *finish_futures.values()])
        client.close()


def _model(ref: Any, config: Any, device: str) -> Any:
    from .detect import _resolve_model

    if not isinstance(ref, (str, Path)):
        return _resolve_model(ref, config, device)
    key = f"{ref}|{device}"
    if key not in _MODELS:
        _MODELS[key] = _resolve_model(str(ref), config, device)
    return _MODELS[key]


def band_task(index: int, n_bands: int, band: Band, path: str, work_dir: str, model_ref: Any, config: Any,
              device: str, tile_size: int, overlap: int, threshold: float) -> BandResult:
    """One band of mosaic ``index`` on a Dask worker: the same work as a local run, journaled when the
    mosaic has several bands."""
    from .detect import _gdal_cache_mb, _tune_heap

    _tune_heap()
    resolved = _model(model_ref, config, device)
    work = WorkArea(Path(work_dir), Path(work_dir))
    with _open(path) as mosaic, \
            block_cache(_gdal_cache_mb([mosaic], tile_size, float(resolved.meta.gsd_m))):
        result = run_band(mosaic, resolved, band, work_dir=work.path, prob_name=prob_name(index),
                          config=config, tile_size=tile_size, overlap=overlap, threshold=threshold)
    if n_bands > 1:
        work.record_band(index, result)
    return result


def finish_task(index: int, path: str, work_dir: str, config: Any, gsd_m: float, threshold: float,
                *results: BandResult) -> dict[str, Any]:
    """Join the bands of mosaic ``index`` on a Dask worker: merged plots, probability COG, journal."""
    work = WorkArea(Path(work_dir), Path(work_dir))
    with _open(path) as mosaic:
        out = finish_mosaic(mosaic, mosaic.grid(gsd_m), list(results), work_dir=work.path,
                            prob_name=prob_name(index), config=config, threshold=threshold)
    work.record(index, prob_name(index), out)
    work.clear_bands(index)
    return out


def _open(path: str) -> Mosaic:
    """Open a mosaic on a worker (a context manager) with the small block cache detect opens them with."""
    from .mosaic import open_mosaic

    with block_cache(64):
        return open_mosaic(path)
