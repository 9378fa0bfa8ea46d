"""``detect``: orthomosaics in, a run directory out (plots.gpkg, probability.tif, run.json).

Per mosaic the stages run as a pipeline: a reader thread reads strips of tiles at the model GSD
(:mod:`~poppyscan.infer`), the calling thread runs the network, a writer thread blends overlapping
tiles in a rolling band of rows (:mod:`~poppyscan.blend`), writes finished rows to the probability
raster and feeds them to the windowed polygoniser (:mod:`~poppyscan.vectorize`). Detections from all
mosaics are brought to the first mosaic's CRS, merged where they overlap and given their attributes
(:mod:`~poppyscan.plots`). Everything is written into a hidden work area beside ``out_dir``
(:mod:`~poppyscan.resume`: finished mosaics are journaled there, ``resume=True`` continues from them;
:mod:`~poppyscan.distributed` runs the mosaics locally or on a Dask cluster) that replaces ``out_dir`` only
when complete; an existing non-empty ``out_dir`` is refused unless
``overwrite``. Finally ``poppyscan.tasks.build_tasks(out_dir, config=...)`` runs when
``detect.run_tasks`` is set and that module is installed.
"""

from __future__ import annotations

import dataclasses
import datetime as _dt
import importlib
import importlib.util
import json
import logging
import os
import shutil
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import geopandas as gpd
import numpy as np
import pandas as pd

from . import __version__, plot_scorer
from .bands import model_gsd, mosaic_bands
from .bundle import check_min_gsd, gsd_floor_m, plot_decision
from .config import Config, load_config
from .distributed import run_mosaics
from .errors import InputError, OutputExistsError
from .infer import plan_streams
from .mosaic import Mosaic, block_cache, check_gsd, open_mosaic
from .plots import merge_overlapping, plot_table
from .resume import WorkArea, fingerprint
from .tiles import overlap_px

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class RunSummary:
    """What :func:`detect` did (also in ``run.json``)."""

    run_dir: Path
    plots: int
    plots_over_500: int
    mosaics: int
    tiles: int
    tiles_skipped: int
    hectares: float
    seconds: float
    forward_seconds: float
    files: tuple[str, ...] = field(default=())


@dataclass(frozen=True)
class _Model:
    meta: Any
    predict: Callable[[np.ndarray], np.ndarray]
    path: str | None
    device: str
    streams: int = 1
    batch_size: int = 8


def _resolve_model(model: Any, config: Config, device: str) -> _Model:
    """A bundle path, a loaded bundle, or a ready predictor (callable with ``.meta``) -> :class:`_Model`."""
    cfg = config.detect
    if model is None:
        model = cfg.model
    if callable(model) and hasattr(model, "meta"):
        dev = getattr(model, "device", "cpu")
        streams, _, per_call = plan_streams(dev, streams=cfg.streams, threads=cfg.threads,
                                            batch_size=cfg.batch_size)
        path = getattr(model, "path", None)
        path = str(Path(path).resolve()) if path else None
        return _Model(model.meta, model, path, dev, streams, per_call)
    from .bundle import Bundle, cuda_available, load_bundle, make_predictor, read_meta  # no torch on CPU

    if device == "auto":
        device = "cuda" if cuda_available() else "cpu"

    if isinstance(model, (str, Path)):
        path = Path(model)
        if not path.is_absolute() and not path.exists():
            beside = Path(__file__).resolve().parent.parent / path  # a source checkout's models/
            path = beside if beside.exists() else path
        if device == "cpu":
            # ONNX Runtime needs only bundle.json + model.onnx: skip building the torch network (~200 MB)
            model = Bundle(meta=read_meta(path), model=None, path=path)
        else:
            model = load_bundle(path)
    streams, threads, per_call = plan_streams(device, streams=cfg.streams, threads=cfg.threads,
                                              batch_size=cfg.batch_size)
    predictor = make_predictor(model, device=device, threads=threads)
    path = getattr(model, "path", None)
    return _Model(model.meta, predictor, str(Path(path).resolve()) if path else None, predictor.device,
                  streams, per_call)


def _gdal_cache_mb(mosaics: list[Mosaic], tile_size: int, gsd_m: float) -> int:
    """GDAL block cache: two strips of source blocks (overlapping tile rows re-read from cache), bounded.

    A size from the mosaic's width rather than GDAL's default (5 % of RAM) keeps RSS independent of
    the mosaic's height and area.
    """
    need = max(2 * (tile_size * max(1.0, gsd_m / m.gsd_xy[1]) + 512) * m.width * m.ds.count * m.dtype.itemsize
               for m in mosaics) / 2**20
    return int(min(max(need, 64), 1024))


_HEAP_TUNED = False


def _tune_heap() -> None:
    """Serve allocations >= 256 KiB by mmap and return them on free (glibc only, once per process).

    Tile batches, network outputs and row bands are allocated in one thread and freed in another;
    with glibc's default *dynamic* mmap threshold they end up in per-thread heap arenas that fragment,
    and RSS crept up with the mosaic's size (measured +24 % from 0.1 to 1 gigapixel). GDAL's cached
    source blocks (256 KiB per band of a 512 px block) churn the same way once the block cache is in
    use: with a 1 MiB threshold RSS still rose 534 -> 612 MB over the first 50 s of a 1 gigapixel run,
    with 256 KiB it stayed at 543-549 MB.
    """
    global _HEAP_TUNED
    if _HEAP_TUNED or not sys.platform.startswith("linux"):
        return
    _HEAP_TUNED = True
    try:
        import ctypes

        ctypes.CDLL("libc.so.6").mallopt(-3, 1 << 18)  # M_MMAP_THRESHOLD
    except (OSError, AttributeError):  # not glibc
        pass


def _check_out_dir(out_dir: Path, overwrite: bool, inputs: Sequence[Path] = ()) -> None:
    """Refuse an ``out_dir`` that may not be written: a file, an existing non-empty directory without
    ``overwrite``, and even with it anything but an earlier run (``run.json``), the working directory or
    a folder above it, or a folder holding one of the ``inputs`` (``--overwrite`` deletes the old
    folder: it must never delete a mosaic or a user's folder)."""
    if out_dir.exists() and not out_dir.is_dir():
        raise InputError(f"--out '{out_dir}' is a file; pass a directory path")
    if not out_dir.is_dir():
        return
    here = out_dir.resolve()
    for p in inputs:
        if here in Path(p).resolve().parents:
            raise InputError(f"--out '{out_dir}' holds the input mosaic '{p}', which replacing the folder "
                             "would delete; choose another --out")
    if not any(out_dir.iterdir()):
        return
    if not overwrite:
        raise OutputExistsError(f"output directory '{out_dir}' already exists and is not empty; "
                                "pass --overwrite to replace it or choose another --out")
    cwd = Path.cwd().resolve()
    if here == cwd or here in cwd.parents:
        raise InputError(f"--out '{out_dir}' is the working directory or a folder above it, which "
                         "--overwrite would delete; choose another --out")
    if not (out_dir / "run.json").is_file():
        raise InputError(f"--out '{out_dir}' is not an earlier detect run (no run.json), and --overwrite "
                         "replaces only those; choose another --out, or empty the folder yourself")


def _install(tmp: Path, out_dir: Path, overwrite: bool, inputs: Sequence[Path] = ()) -> None:
    """Move the finished ``tmp`` directory onto ``out_dir`` (replacing it only when allowed)."""
    _check_out_dir(out_dir, overwrite, inputs)
    if out_dir.is_dir():
        old = Path(tempfile.mkdtemp(prefix=f".{out_dir.name}.old-", dir=out_dir.parent))
        os.rmdir(old)
        os.replace(out_dir, old)
        try:
            os.replace(tmp, out_dir)
        except OSError:
            os.replace(old, out_dir)
            raise
        shutil.rmtree(old, ignore_errors=True)
    else:
        os.replace(tmp, out_dir)


class _Progress:
    """tqdm bar over tiles with hectares and ha/min; a no-op off a terminal or when disabled."""

    def __init__(self, total: int, enabled: bool) -> None:
        self.bar = None
        self.ha = 0.0
        self.t0 = time.perf_counter()
        if enabled and sys.stderr.isatty():
            from tqdm import tqdm

            self.bar = tqdm(total=total, unit="tile", dynamic_ncols=True, file=sys.stderr)

    def update(self, tiles: int, ha: float) -> None:
        self.ha += ha
        if self.bar is not None:
            minutes = max(time.perf_counter() - self.t0, 1e-6) / 60
            self.bar.set_postfix_str(f"{self.ha:.1f} ha, {self.ha / minutes:.1f} ha/min", refresh=False)
            self.bar.update(tiles)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()


def detect(mosaics: Sequence[str | Path], out_dir: str | Path, *, config: Config | None = None,
           model: Any = None, device: str | None = None, overwrite: bool = False,
           progress: bool = True, resume: bool = False) -> RunSummary:
    """Detect poppy plots in ``mosaics`` (overlapping mosaics of one flight allowed) into ``out_dir``.

    Parameters
    ----------
    mosaics
        Orthomosaic files (GeoTIFF/COG/VRT, RGB(A) uint8/uint16, with a CRS).
    out_dir
        Run directory to create; refused when it exists non-empty unless ``overwrite``.
    config
        Configuration (section ``detect``); the packaged defaults when ``None``.
    model
        A bundle directory, a loaded :class:`~poppyscan.model.Bundle`, or a ready predictor (any callable
        ``uint8 (N, H, W, 3) -> float32 (N, H, W)`` with a ``.meta`` carrying ``gsd_m``, ``tile_size``,
        ``overlap``, ``threshold`` and ``version``); ``config.detect.model`` when ``None``.
    device
        ``auto``, ``cpu`` or ``cuda``; ``config.detect.device`` when ``None``.
    overwrite
        Replace an existing ``out_dir``.
    progress
        Show a progress bar (only when stderr is a terminal).
    resume
        Continue an interrupted run of ``out_dir`` from its finished mosaics (:mod:`~poppyscan.resume`);
        with ``config.detect.scheduler`` the mosaics run on a Dask cluster (:mod:`~poppyscan.distributed`).

    Raises
    ------
    InputError, OutputExistsError, BundleError, ConfigError
        With one-line messages naming the file or option.
    """
    t0 = time.perf_counter()
    _tune_heap()
    config = config or load_config()
    cfg = config.detect
    device = device or cfg.device
    paths = [Path(p) for p in mosaics]
    if not paths:
        raise InputError("no mosaic given; pass one or more orthomosaic files")
    seen: dict[Path, Path] = {}
    for p in paths:
        key = p.resolve()
        if key in seen:
            raise InputError(f"mosaic '{p}' is given twice (also as '{seen[key]}'); pass each file once")
        seen[key] = p
    out_dir = Path(out_dir)
    _check_out_dir(out_dir, overwrite, paths)
    opened: list[Mosaic] = []
    try:
        with block_cache(64):  # bounded from the first read: blocks cached now stay
            for p in paths:
                opened.append(open_mosaic(p))
        t_model = time.perf_counter()
        resolved = _resolve_model(model, config, device)
        t_model = time.perf_counter() - t_model
        meta = resolved.meta
        for m in opened:  # before any work: a 30 m/px scene would be upsampled into gigapixels
            check_gsd(m, float(meta.gsd_m))
        check_min_gsd(meta, cfg.min_gsd_m)
        gsd_floor = gsd_floor_m(meta, cfg.min_gsd_m)
        tile_size = cfg.tile_size or int(meta.tile_size)
        overlap = overlap_px(tile_size, cfg.overlap if cfg.overlap is not None else float(meta.overlap))
        threshold = cfg.threshold if cfg.threshold is not None else float(meta.threshold)
        scorer = plot_scorer.load_for(meta, resolved.path) if cfg.plot_scorer else None
        min_prob_mean, min_score = plot_scorer.decision_bounds(
            meta, scorer, cfg.min_prob_mean, cfg.min_plot_score, "'detect.min_plot_score' (--min-plot-score)")
        if scorer is not None:  # the scorer decides; an explicit min_prob_mean is a floor besides it
            rule = f"plot score >= {min_score:.3f}" + (f", mean probability >= {min_prob_mean:.2f}"
                                                       if min_prob_mean else "")
            fitted_radius = int(scorer.training.get("morph_radius_px", 1))
            if cfg.morph_radius_px != fitted_radius:
                log.warning("detect.morph_radius_px %d is not the %d the plot scorer was fitted with: it "
                            "judges regions shaped otherwise", cfg.morph_radius_px, fitted_radius)
            if abs(threshold - float(meta.threshold)) > 1e-9:
                log.warning("threshold %.2f is not the bundle's %.2f: the plot scorer judges regions "
                            "outlined at another threshold than those it was fitted on", threshold,
                            meta.threshold)
        else:
            rule = f"plot mean probability >= {min_prob_mean:.2f}"
        log.info("model %s %s (%s, %d stream(s) of %d tiles), gsd %.3f m, tiles %d px overlap %d px, "
                 "threshold %.2f, %s", getattr(meta, "name", "?"), meta.version,
                 resolved.device, resolved.streams, resolved.batch_size, meta.gsd_m, tile_size, overlap,
                 threshold, rule)
        out_dir.parent.mkdir(parents=True, exist_ok=True)
        fp = fingerprint(paths, model_path=resolved.path, meta=meta, device=resolved.device,
                         params={"tile_size": tile_size, "overlap_px": overlap, "threshold": threshold,
                                 "tta": cfg.tta, "min_gsd_m": gsd_floor},
                         detect_config=dataclasses.asdict(cfg))
        work = WorkArea.open(out_dir, fp, resume=resume, overwrite=overwrite)
        tmp = work.path  # becomes out_dir when complete; journaled mosaics survive a crash
        try:
            t_open = time.perf_counter()
            plans = [mosaic_bands(m, config, gsd_m=model_gsd(m, meta, config), tile_size=tile_size,
                                  overlap=overlap)
                     for m in opened]
            bar = _Progress(sum(len(b.tiles) for bands in plans for b in bands), progress)
            try:
                results, prob_names = run_mosaics(opened, plans, resolved, work, model_ref=model,
                                                  config=config, device=device, tile_size=tile_size,
                                                  overlap=overlap, threshold=threshold, progress=bar)
            finally:
                bar.close()
            t_plots = time.perf_counter()
            crs = opened[0].crs
            frames = []
            n_regions = 0
            t_score = 0.0
            for i, r in enumerate(results):  # the plot decision: which outlined regions are plots
                n_regions += len(r["gdf"])
                if scorer is not None:
                    t = time.perf_counter()
                    score = plot_scorer.mosaic_region_scores(opened[i], r["grid"], tmp / prob_names[i],
                                                             r["gdf"].geometry, scorer, threshold,
                                                             cfg.morph_radius_px)
                    t_score += time.perf_counter() - t
                    r["gdf"] = r["gdf"].assign(score=score)
                r["gdf"] = r["gdf"][plot_decision(r["gdf"]["prob_mean"], min_prob_mean,
                                                  r["gdf"].get("score"), min_score)]
            if n_regions:
                log.info("%d of %d thresholded regions are plots (%s)",
                         sum(len(r["gdf"]) for r in results), n_regions, rule)
            for i, r in enumerate(results):
                gdf = r["gdf"].to_crs(crs) if r["gdf"].crs != crs else r["gdf"]
                frames.append(gdf.assign(source=i))
            merged = merge_overlapping(gpd.GeoDataFrame(pd.concat(frames, ignore_index=True),
                                                        geometry="geometry", crs=crs))
            plots = plot_table(merged, plants_per_m2=cfg.plants_per_m2, criminal_plants=cfg.criminal_plants,
                               min_area_m2=cfg.min_area_m2, model_version=str(meta.version))
            plots.to_file(tmp / "plots.gpkg", layer="plots", driver="GPKG", engine="pyogrio",
                          geometry_type="Polygon")
            t_end = time.perf_counter()
            n_over = int(plots["over_500_plants"].sum()) if len(plots) else 0
            warnings = implausible_rates(opened, results, cfg.warn_plots_per_ha)
            for w in warnings:
                log.warning("%s", w)
            summary = RunSummary(
                run_dir=out_dir, plots=len(plots), plots_over_500=n_over, mosaics=len(opened),
                tiles=sum(r["tiles"] for r in results), tiles_skipped=sum(r["skipped"] for r in results),
                hectares=round(sum(r["ha"] for r in results), 4), seconds=round(t_end - t0, 3),
                forward_seconds=round(sum(r["timings"]["forward_s"] for r in results), 3),
                files=("plots.gpkg", *prob_names, "run.json"))
            run = {
                "poppyscan_version": __version__,
                "created": _dt.datetime.now(_dt.UTC).isoformat(timespec="seconds"),
                "inputs": [m.describe(r["grid"]) for m, r in zip(opened, results, strict=True)],
                "crs": opened[0].describe()["crs"],
                "model": {"path": resolved.path, "name": getattr(meta, "name", None), "version": meta.version,
                          "arch": getattr(meta, "arch", None), "gsd_m": meta.gsd_m,
                          "device": resolved.device},
                "params": {"tile_size": tile_size, "overlap_px": overlap, "threshold": threshold,
                           "min_prob_mean": min_prob_mean,
                           "plot_scorer": meta.plot_scorer if scorer is not None else None,
                           "min_plot_score": min_score,
                           "min_gsd_m": gsd_floor, "streams": resolved.streams,
                           "tiles_per_call": resolved.batch_size, "tta": cfg.tta},
                "config": config.to_dict(),
                "counts": {"mosaics": len(opened), "tiles": summary.tiles,
                           "tiles_skipped": summary.tiles_skipped,
                           "regions": n_regions,
                           "detections": int(sum(len(r["gdf"]) for r in results)), "plots": summary.plots,
                           "plots_over_500": n_over, "hectares": summary.hectares},
                "timings": {"total_s": summary.seconds, "open_s": round(t_open - t0 - t_model, 3),
                            "model_load_s": round(t_model, 3),
                            "plots_s": round(t_end - t_plots, 3), "plot_score_s": round(t_score, 3),
                            "mosaics": [{k: round(v, 3) for k, v in r["timings"].items()} for r in results]},
                "outputs": {"plots": "plots.gpkg", "probability": prob_names},
                "warnings": warnings,
            }
            (tmp / "run.json").write_text(json.dumps(run, indent=2, ensure_ascii=False, default=str) + "\n",
                                          encoding="utf-8")
            work.seal()
            _install(tmp, out_dir, overwrite, paths)
        finally:
            work.cleanup()  # after a failure: kept for --resume when it holds finished mosaics
    finally:
        for m in opened:
            m.close()
    log.info("wrote %s: %d plots (%d over %d plants), %.1f ha in %.1f s",
             out_dir, summary.plots, n_over, cfg.criminal_plants, summary.hectares, summary.seconds)
    _maybe_build_tasks(out_dir, config)
    return summary


WARN_MIN_HA = 2.0


def implausible_rates(mosaics: list[Mosaic], results: list[dict[str, Any]], per_ha: float) -> list[str]:
    """One message per mosaic of :data:`WARN_MIN_HA` or more whose suspected plots per hectare exceed
    ``per_ha`` (0 = never), counted from each mosaic's own detections (file names need not be unique).
    Covert plots are rare (tens to hundreds of plants hidden in a watershed), so a high rate means the
    imagery is unlike what the model learnt from, not a poppy boom: on real airborne imagery of meadow
    and forest model 0.3.0 reported 7.6 false plots per hectare (0.4.0: 0.8)."""
    if per_ha <= 0:
        return []
    out = []
    for m, r in zip(mosaics, results, strict=True):
        n, ha = len(r["gdf"]), float(r["ha"])
        if ha >= WARN_MIN_HA and n > per_ha * ha:
            out.append(f"{m.path.name}: {n} suspected plots on {ha:.1f} ha = {n / ha:.1f} per ha, above "
                       f"detect.warn_plots_per_ha = {per_ha:g}; the imagery is probably unlike the model's "
                       "training data (GSD, season, landscape, camera): check a sample of plots before "
                       "sending field teams")
    return out


def _maybe_build_tasks(run_dir: Path, config: Config) -> None:
    if not config.detect.run_tasks:
        return
    if importlib.util.find_spec("poppyscan.tasks") is None:
        log.info("poppyscan.tasks is not installed; skipping field tasks (run `poppyscan tasks` later)")
        return
    tasks = importlib.import_module("poppyscan.tasks")
    build = getattr(tasks, "build_tasks", None)
    if build is None:
        log.warning("poppyscan.tasks has no build_tasks(); skipping field tasks")
        return
    build(run_dir, config=config)
