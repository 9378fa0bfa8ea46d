"""Run detect's per-mosaic work locally or as tasks on a Dask distributed cluster, journaling each one.

:func:`run_mosaics` is the loop over mosaics inside :func:`poppyscan.detect.detect`. Each mosaic is
one unit of work: read, infer, blend, write its probability COG into the run's work area and
polygonise (``detect._run_mosaic``), then journal it (:class:`~poppyscan.resume.WorkArea.record`), so
finished mosaics survive a crash and ``--resume`` skips them.

With a scheduler address (``--scheduler tcp://host:8786`` or config ``detect.scheduler``) the
unfinished mosaics are submitted as tasks to an existing ``dask.distributed`` cluster; each worker
opens the mosaic and the model itself (cached per worker process) and writes into the work area, so
**the mosaics, the model bundle and the run directory's parent must be at the same paths on every
worker** (a shared filesystem). The task runs the same code as a local run, so the results are the
same; the client merges the detections in mosaic order exactly as a local run does. Tasks are
whole mosaics: a single large mosaic is one task (its row bands are not split across workers).
"""

from __future__ import annotations

import contextlib
import logging
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import rasterio

from .errors import DependencyError, InputError
from .mosaic import Mosaic
from .resume import WorkArea

log = logging.getLogger(__name__)

_MODELS: dict[str, Any] = {}  # per worker process: model reference -> resolved model


def prob_name(index: int) -> str:
    """File name of mosaic ``index``'s probability raster in the run directory."""
    return "probability.tif" if index == 0 else f"probability_{index + 1}.tif"


def run_mosaics(opened: Sequence[Mosaic], resolved: Any, work: WorkArea, *, model_ref: Any, config: Any,
                device: str, tile_size: int, overlap: int, threshold: float,
                progress: Any) -> tuple[list[dict[str, Any]], list[str]]:
    """Results (``detect._run_mosaic`` dicts) and probability file names of all ``opened`` mosaics."""
    from .detect import _gdal_cache_mb, _run_mosaic

    gsd = float(resolved.meta.gsd_m)
    done = work.finished()
    results: dict[int, dict[str, Any]] = {}
    for i, m in enumerate(opened):
        if i in done:
            results[i] = WorkArea.restore(done[i], m.crs, m.grid(gsd))
            progress.update(results[i]["tiles"] + results[i]["skipped"], results[i]["ha"])
            log.info("%s: finished in the interrupted run, reused", m.path.name)
    todo = [i for i in range(len(opened)) if i not in results]
    scheduler = config.detect.scheduler
    if todo and scheduler:
        results.update(_run_on_cluster(scheduler, opened, todo, resolved, work, model_ref=model_ref,
                                       config=config, device=device, tile_size=tile_size, overlap=overlap,
                                       threshold=threshold, progress=progress))
    elif todo:
        with rasterio.Env(GDAL_CACHEMAX=_gdal_cache_mb(list(opened), tile_size, gsd)):
            for i in todo:
                results[i] = _run_mosaic(opened[i], resolved, tmp=work.path, prob_name=prob_name(i),
                                         config=config, tile_size=tile_size, overlap=overlap,
                                         threshold=threshold, progress=progress)
                work.record(i, prob_name(i), results[i])
    return [results[i] for i in range(len(opened))], [prob_name(i) for i in range(len(opened))]


def connect(address: str, timeout_s: float = 10.0) -> Any:
    """A ``distributed.Client`` on the scheduler at ``address``; one-line errors when it cannot be had."""
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


def _run_on_cluster(address: str, opened: Sequence[Mosaic], todo: list[int], resolved: Any, work: WorkArea,
                    *, model_ref: Any, config: Any, device: str, tile_size: int, overlap: int,
                    threshold: float, progress: Any) -> dict[int, dict[str, Any]]:
    # a bundle travels by path (each worker loads it once); a ready predictor object by pickle
    ref = resolved.path or model_ref
    client = connect(address)
    futures: dict[Any, int] = {}
    try:
        nworkers = len(client.scheduler_info().get("workers", {}))
        log.info("running %d mosaic(s) on the Dask cluster at %s (%d worker(s))", len(todo), address,
                 nworkers)
        for i in todo:
            fut = client.submit(mosaic_task, i, str(opened[i].path.resolve()), str(work.path), ref, config,
                                device, tile_size, overlap, threshold, pure=False,
                                key=f"poppyscan-mosaic-{i}-{time.time_ns()}")
            futures[fut] = i
        out: dict[int, dict[str, Any]] = {}
        for fut, i in futures.items():  # in mosaic order; each worker has journaled its own mosaic
            out[i] = fut.result()  # re-raises the worker's error (e.g. InputError) here
            progress.update(out[i]["tiles"] + out[i]["skipped"], out[i]["ha"])
        return out
    finally:
        with contextlib.suppress(Exception):  # after an error: stop the other mosaics' tasks
            client.cancel(list(futures))
        client.close()


def _model(ref: Any, config: Any, device: str) -> Any:
    from .detect import _resolve_model

    if not isinstance(ref, (str, Path)):
        return _resolve_model(ref, config, device)
    key = f"{ref}|{device}"
    if key not in _MODELS:
        _MODELS[key] = _resolve_model(str(ref), config, device)
    return _MODELS[key]


def mosaic_task(index: int, path: str, work_dir: str, model_ref: Any, config: Any, device: str,
                tile_size: int, overlap: int, threshold: float) -> dict[str, Any]:
    """One mosaic on a Dask worker: the same work as a local run, journaled into the work area."""
    from .detect import _gdal_cache_mb, _Progress, _run_mosaic, _tune_heap
    from .mosaic import open_mosaic

    _tune_heap()
    resolved = _model(model_ref, config, device)
    work = WorkArea(Path(work_dir), Path(work_dir))
    with rasterio.Env(GDAL_CACHEMAX=64):
        mosaic = open_mosaic(path)
    try:
        with rasterio.Env(GDAL_CACHEMAX=_gdal_cache_mb([mosaic], tile_size, float(resolved.meta.gsd_m))):
            result = _run_mosaic(mosaic, resolved, tmp=work.path, prob_name=prob_name(index), config=config,
                                 tile_size=tile_size, overlap=overlap, threshold=threshold,
                                 progress=_Progress(0, False))
    finally:
        mosaic.close()
    work.record(index, prob_name(index), result)
    return result
