"""Running an evaluation: scoring a detect run (or a plots file) against its truth file, running a
bundle over labelled scenes and scoring each scene, and calibrating the threshold and plot decision on
validation scenes.

Matching and metrics (one-to-one IoU matching, precision/recall/F1, false plots per hectare ...) live in
:mod:`poppyscan.eval_metrics`, reading and writing evaluation files in :mod:`poppyscan.eval_io`; their
public names are importable from here too.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from .errors import InputError
from .eval_io import error_layers, format_table, read_polygons, valid_area_m2, write_error_layers
from .eval_metrics import ObjectScore, match_masks, match_polygons, prf, score_polygons

__all__ = [
    # running an evaluation (this module)
    "calibrate_threshold",
    "evaluate_files",
    "evaluate_scenes",
    # matching and metrics (poppyscan.eval_metrics)
    "ObjectScore",
    "match_masks",
    "match_polygons",
    "prf",
    "score_polygons",
    # evaluation files (poppyscan.eval_io)
    "error_layers",
    "format_table",
    "read_polygons",
    "valid_area_m2",
    "write_error_layers",
]


def evaluate_files(
    pred: str | Path,
    truth: str | Path,
    *,
    mosaic: str | Path | None = None,
    iou_min: float = 0.25,
    scores: list | None = None,
) -> dict[str, Any]:
    """Score ``pred`` (a plots.gpkg or a detect run directory) against ``truth`` (truth.gpkg).
    ``scores``: a list that receives ``(name, ObjectScore)`` (for :func:`write_error_layers`).

    The valid area for false plots per hectare comes from ``mosaic`` when given, else from the run's
    ``run.json`` inputs (first mosaic) when ``pred`` is a run directory.
    """
    pred = Path(pred)
    if pred.is_dir():
        run_json = pred / "run.json"
        if mosaic is None and run_json.is_file():
            inputs = json.loads(run_json.read_text(encoding="utf-8")).get("inputs") or []
            if len(inputs) == 1 and Path(inputs[0].get("path", "")).is_file():
                mosaic = inputs[0]["path"]
        pred = pred / "plots.gpkg"
    pred_gdf = read_polygons(pred)
    truth_gdf = read_polygons(truth)
    area = valid_area_m2(mosaic) if mosaic is not None else None
    score = score_polygons(pred_gdf, truth_gdf, valid_area_m2=area, iou_min=iou_min)
    if scores is not None:
        scores.append((pred.parent.name, score))
    return {
        "pred": str(pred),
        "truth": str(truth),
        "mosaic": str(mosaic) if mosaic else None,
        "iou_min": iou_min,
        **score.report(),
    }


def _detect_polygons(
    bundle,
    mosaic: Path,
    *,
    device: str,
    threads: int,
    threshold: float,  # noqa: ANN001
    min_area_m2: float,
    min_prob_mean: float | None = None,
    tta: bool = False,
    min_gsd_m: float | None = None,
    plot_scorer: bool = True,
    min_plot_score: float | None = None,
):  # noqa: ANN202
    """Plot polygons of one mosaic from ``poppyscan.detect`` (the production path), in a temporary run.
    ``min_prob_mean`` None: the bundle's plot decision; ``tta``: detect's flip test-time augmentation."""
    import tempfile
    import time

    from .config import load_config
    from .detect import detect

    cfg = load_config(
        overrides={
            "detect.run_tasks": False,
            "detect.threshold": threshold,
            "detect.min_prob_mean": min_prob_mean,
            "detect.min_area_m2": min_area_m2,
            "detect.threads": threads,
            "detect.tta": tta,
            "detect.min_gsd_m": min_gsd_m,
            "detect.plot_scorer": plot_scorer,
            "detect.min_plot_score": min_plot_score,
        }
    )
    t0 = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="poppyscan-eval-") as tmp:
        run = Path(tmp) / "run"
        detect([mosaic], run, config=cfg, model=bundle, device=device, progress=False)
        gdf = read_polygons(run / "plots.gpkg")
    return gdf, time.perf_counter() - t0


def evaluate_scenes(
    bundle,
    sources: list[str | Path],
    *,
    device: str = "auto",
    threads: int = 0,  # noqa: ANN001
    threshold: float | None = None,
    min_area_m2: float = 1.0,
    iou_min: float = 0.25,
    engine: str = "auto",
    progress=None,
    min_prob_mean: float | None = None,
    scores: list | None = None,
    tta: bool = False,
    min_gsd_m: float | None = None,
    plot_scorer: bool = True,
    min_plot_score: float | None = None,
) -> dict[str, Any]:  # noqa: ANN001
    """Run ``bundle`` over labelled scenes and score each one (see :func:`poppyscan.scenes.find_scenes`).

    ``engine``: ``"detect"`` runs :func:`poppyscan.detect.detect` (the production path), ``"simple"`` the
    small in-memory :func:`poppyscan.scene_predict.predict_scene`; ``"auto"`` prefers detect.
    Returns ``{"model", "threshold", "scenes": [per-scene reports], "total", "poppy_scenes",
    "poppy_free_scenes"}``; the aggregates sum counts and areas over scenes. ``scores``: a list that
    receives each scene's ``(name, ObjectScore)`` (for :func:`write_error_layers`). ``tta``: average
    each tile's prediction with that of its left-right mirror image, as ``detect.tta`` does.
    ``min_gsd_m``: as ``detect.min_gsd_m`` (None: the bundle's). ``plot_scorer`` / ``min_plot_score``:
    as ``detect.plot_scorer`` / ``detect.min_plot_score`` (use the bundle's plot scorer, at its cut).
    """
    import importlib.util

    import geopandas as gpd

    from .bundle_io import load_bundle
    from .bundle_rules import check_min_gsd, gsd_floor_m
    from .predictor import make_predictor
    from .scene_predict import predict_scene
    from .scenes import find_scenes, positive_rows, scene_name

    if engine == "auto":
        engine = "detect" if importlib.util.find_spec("poppyscan.detect") else "simple"
    if engine not in ("detect", "simple"):
        raise InputError(f"'engine' must be auto, detect or simple, got {engine!r}")
    if not hasattr(bundle, "meta"):
        bundle = load_bundle(bundle)
    check_min_gsd(bundle.meta, min_gsd_m, "--min-gsd")
    predict = make_predictor(bundle, device=device, threads=threads) if engine == "simple" else None
    if predict is not None and tta:
        from .infer import flip_averaged

        predict = flip_averaged(predict)
    thr = bundle.meta.threshold if threshold is None else threshold
    from .plot_scorer import decision_bounds, load_for

    scorer = load_for(bundle.meta, bundle.path) if plot_scorer else None  # read once for all scenes
    scorer_name = bundle.meta.plot_scorer if scorer is not None else None
    # the plot decision as detect makes it: with a scorer, min_prob_mean only as an explicit floor
    keep, cut = decision_bounds(bundle.meta, scorer, min_prob_mean, min_plot_score)
    scenes, agg = [], {"total": None, "poppy_scenes": None, "poppy_free_scenes": None}
    for mosaic, truth in find_scenes(sources):
        if engine == "simple":
            sp = predict_scene(predict, bundle, mosaic, threshold=thr, min_prob_mean=keep,
                               min_area_m2=min_area_m2, min_gsd_m=min_gsd_m,
                               plot_scorer=scorer if scorer is not None else False,
                               min_plot_score=min_plot_score)
            pred, area, secs = (
                gpd.GeoDataFrame(geometry=sp.polygons, crs=sp.crs),
                sp.valid_area_m2,
                sp.seconds,
            )
        else:
            pred, secs = _detect_polygons(
                bundle, mosaic, device=device, threads=threads, threshold=thr, min_area_m2=min_area_m2,
                min_prob_mean=keep, tta=tta, min_gsd_m=min_gsd_m, plot_scorer=plot_scorer,
                min_plot_score=min_plot_score,
            )
            area = valid_area_m2(mosaic)
        # truth rows keep their columns, so a missed plot in ``scores`` carries its stage, setting ...
        truth_rows = positive_rows(truth, pred.crs) if truth else gpd.GeoDataFrame(geometry=[], crs=pred.crs)
        score = score_polygons(pred, truth_rows, valid_area_m2=area, iou_min=iou_min)
        name = scene_name(mosaic)
        rep = {
            "scene": name,
            "mosaic": str(mosaic),
            "truth": str(truth) if truth else None,
            "seconds": round(secs, 2),
            **score.report(),
        }
        scenes.append(rep)
        if scores is not None:
            scores.append((name, score))
        for key in ("total", "poppy_scenes" if len(truth_rows) else "poppy_free_scenes"):
            agg[key] = score if agg[key] is None else agg[key] + score
        if progress:
            progress(f"{name}: tp {score.tp} fp {score.fp} fn {score.fn} ({secs:.1f} s)")
    return {
        "model": str(bundle.path),
        "model_version": bundle.meta.version,
        "engine": engine,
        "tta": tta,
        "min_gsd_m": gsd_floor_m(bundle.meta, min_gsd_m),
        "threshold": thr,
        "min_prob_mean": keep,
        "plot_scorer": scorer_name,
        "min_plot_score": cut,
        "iou_min": iou_min,
        "min_area_m2": min_area_m2,
        "scenes": scenes,
        **{k: (v.report() if v is not None else None) for k, v in agg.items()},
    }


def calibrate_threshold(
    bundle,  # noqa: ANN001
    pairs: list[tuple[Path, Path | None]],
    *,
    thresholds: tuple[float, ...] = tuple(round(0.25 + 0.05 * i, 2) for i in range(15)),
    device: str = "cpu",
    threads: int = 0,
    min_area_m2: float = 1.0,
    iou_min: float = 0.25,
    max_false_per_ha: float | None = None,
    min_prob_means: tuple[float, ...] = (0.0,),
) -> dict[str, Any]:
    """Pick the pixel threshold and plot decision with the best pooled object F1 over whole labelled
    scenes (validation scenes).

    Each scene is predicted once; every candidate threshold is then polygonised, and for every value of
    ``min_prob_means`` the regions whose mean probability falls short are dropped before scoring (the
    plot decision ``detect`` applies with the bundle's ``min_prob_mean``). Ties go to fewer false plots
    per hectare, then to the higher ``min_prob_mean`` and threshold. With ``max_false_per_ha`` only pairs
    whose pooled false plots per hectare are at most that compete (none: the highest of both, and
    ``cap_met`` is False). Returns ``{"threshold", "min_prob_mean", "cap_met", "scenes",
    "per_threshold": {t: report at the chosen min_prob_mean}, "grid": [{"threshold", "min_prob_mean",
    **report}]}``.
    """
    import geopandas as gpd

    from .bundle_rules import plot_decision
    from .predictor import make_predictor
    from .scene_predict import probability_polygons, scene_probability
    from .scenes import read_labels

    predict = make_predictor(bundle, device=device, threads=threads)
    totals: dict[tuple[float, float], ObjectScore] = {}
    for mosaic, truth in pairs:
        sp = scene_probability(predict, bundle, mosaic)
        positives = read_labels(truth, sp.crs)[0] if truth else []
        tgdf = gpd.GeoDataFrame(geometry=positives, crs=sp.crs)
        for t in thresholds:
            polys, _, means = probability_polygons(sp, t, min_area_m2=min_area_m2)
            for m in min_prob_means:
                plots = [g for g, ok in zip(polys, plot_decision(means, m), strict=True) if ok]
                score = score_polygons(
                    gpd.GeoDataFrame(geometry=plots, crs=sp.crs),
                    tgdf,
                    valid_area_m2=sp.valid_area_m2,
                    iou_min=iou_min,
                )
                totals[t, m] = score if (t, m) not in totals else totals[t, m] + score
    reports = {k: s.report() for k, s in totals.items()}

    def fph(k: tuple[float, float]) -> float:
        return reports[k]["false_plots_per_ha"] or 0.0

    allowed = [k for k in reports if max_false_per_ha is None or fph(k) <= max_false_per_ha + 1e-9]
    best = max(allowed or [(max(thresholds), max(min_prob_means))],
               key=lambda k: ((reports[k]["f1"] or 0.0), -fph(k), k[1], k[0]))
    return {"threshold": best[0], "min_prob_mean": best[1], "cap_met": bool(allowed), "scenes": len(pairs),
            "per_threshold": {t: reports[t, best[1]] for t in thresholds},
            "grid": [{"threshold": t, "min_prob_mean": m, **r} for (t, m), r in reports.items()]}
