"""Object-level and pixel-level scoring of detected plots against truth polygons.

Object matching is one-to-one (Hungarian, :func:`scipy.optimize.linear_sum_assignment`) on polygon
IoU; a pair counts as a true positive when IoU >= ``iou_min`` (0.25 by default: small plots drawn a
little generously by a detector still match, two plots never match one truth). Reported:

- ``tp``, ``fp``, ``fn``, ``precision``, ``recall``, ``f1``
- ``pixel_iou``: area IoU of the union of predicted vs the union of truth polygons
- ``centroid_error_m``: mean / median / max centroid distance over matched pairs (metres)
- ``area_ratio``: median predicted/truth area over matched pairs
- ``false_plots_per_ha``: false positives per hectare of valid (imaged) area

Areas and distances are computed in a metric CRS (the input CRS if projected, else its UTM zone).
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from scipy import ndimage
from scipy.optimize import linear_sum_assignment

from .errors import InputError


# ---------------------------------------------------------------------------------------------- masks
def match_masks(
    pred: np.ndarray,
    truth: np.ndarray,
    *,
    valid: np.ndarray | None = None,
    min_px: int = 0,
    iou_min: float = 0.25,
) -> tuple[int, int, int]:
    """Object counts ``(tp, fp, fn)`` between two boolean masks (8-connected components).

    Components smaller than ``min_px`` are dropped from both sides; ``valid`` (bool) removes
    predicted pixels outside the valid area. Used for cheap validation during training.
    """
    pred = pred.astype(bool)
    truth = truth.astype(bool)
    if valid is not None:
        pred = pred & valid
    structure = np.ones((3, 3), bool)
    pl, npred = ndimage.label(pred, structure)
    tl, ntruth = ndimage.label(truth, structure)
    if min_px > 0:
        pl, npred = _drop_small(pl, npred, min_px)
        tl, ntruth = _drop_small(tl, ntruth, min_px)
    if npred == 0 or ntruth == 0:
        return 0, npred, ntruth
    joint = np.bincount(
        pl.ravel().astype(np.int64) * (ntruth + 1) + tl.ravel(), minlength=(npred + 1) * (ntruth + 1)
    ).reshape(npred + 1, ntruth + 1)
    inter = joint[1:, 1:].astype(np.float64)
    pa = joint[1:, :].sum(axis=1, keepdims=True)
    ta = joint[:, 1:].sum(axis=0, keepdims=True)
    iou = inter / np.maximum(pa + ta - inter, 1)
    tp = _hungarian_count(iou, iou_min)
    return tp, npred - tp, ntruth - tp


def _drop_small(labels: np.ndarray, n: int, min_px: int) -> tuple[np.ndarray, int]:
    sizes = np.bincount(labels.ravel(), minlength=n + 1)
    keep = sizes >= min_px
    keep[0] = False
    remap = np.zeros(n + 1, np.int64)
    remap[keep] = np.arange(1, int(keep.sum()) + 1)
    return remap[labels], int(keep.sum())


def _hungarian_pairs(iou: np.ndarray, iou_min: float) -> list[tuple[int, int, float]]:
    if iou.size == 0:
        return []
    rows, cols = linear_sum_assignment(-np.where(iou >= iou_min, iou, 0.0))
    return [
        (int(r), int(c), float(iou[r, c])) for r, c in zip(rows, cols, strict=True) if iou[r, c] >= iou_min
    ]


def _hungarian_count(iou: np.ndarray, iou_min: float) -> int:
    return len(_hungarian_pairs(iou, iou_min))


def prf(tp: int, fp: int, fn: int) -> dict[str, float | None]:
    """Precision, recall, F1 (``None`` where undefined, e.g. recall on a poppy-free scene)."""
    p = tp / (tp + fp) if tp + fp else None
    r = tp / (tp + fn) if tp + fn else None
    if tp + fp + fn == 0:
        f1 = None
    else:
        f1 = 2 * tp / (2 * tp + fp + fn)
    return {"precision": p, "recall": r, "f1": f1}


# ------------------------------------------------------------------------------------------- polygons
def _metric(gdf, crs=None):  # noqa: ANN001, ANN202
    if gdf.crs is None:
        if crs is None:
            raise InputError("polygons have no CRS; set one before evaluating")
        gdf = gdf.set_crs(crs)
    if gdf.crs.is_geographic:
        gdf = gdf.to_crs(gdf.estimate_utm_crs() if len(gdf) else "EPSG:3857")
    return gdf


def match_polygons(pred: list, truth: list, iou_min: float = 0.25) -> list[tuple[int, int, float]]:
    """One-to-one matches ``(pred_index, truth_index, iou)`` with IoU >= ``iou_min`` (Hungarian)."""
    from shapely import STRtree

    if not pred or not truth:
        return []
    iou = np.zeros((len(pred), len(truth)))
    tree = STRtree(truth)
    pi, ti = tree.query(pred, predicate="intersects")
    for p, t in zip(pi, ti, strict=True):
        a, b = pred[p], truth[t]
        inter = a.intersection(b).area
        union = a.area + b.area - inter
        iou[p, t] = inter / union if union > 0 else 0.0
    return _hungarian_pairs(iou, iou_min)


@dataclass
class ObjectScore:
    tp: int
    fp: int
    fn: int
    inter_area: float
    pred_area: float
    truth_area: float
    valid_area_m2: float | None
    centroid_errors: list[float]
    area_ratios: list[float]
    missed: Any = None  # truth rows left unmatched (GeoDataFrame, metric CRS); not summed
    false: Any = None  # predicted rows left unmatched (GeoDataFrame, metric CRS); not summed

    def __add__(self, other: ObjectScore) -> ObjectScore:
        va = (
            None
            if self.valid_area_m2 is None or other.valid_area_m2 is None
            else self.valid_area_m2 + other.valid_area_m2
        )
        return ObjectScore(
            self.tp + other.tp,
            self.fp + other.fp,
            self.fn + other.fn,
            self.inter_area + other.inter_area,
            self.pred_area + other.pred_area,
            self.truth_area + other.truth_area,
            va,
            self.centroid_errors + other.centroid_errors,
            self.area_ratios + other.area_ratios,
        )

    def report(self) -> dict[str, Any]:
        union = self.pred_area + self.truth_area - self.inter_area
        ce = np.asarray(self.centroid_errors)
        out: dict[str, Any] = {
            "tp": self.tp,
            "fp": self.fp,
            "fn": self.fn,
            **prf(self.tp, self.fp, self.fn),
            "pixel_iou": self.inter_area / union if union > 0 else None,
            "centroid_error_m": {
                "mean": float(ce.mean()),
                "median": float(np.median(ce)),
                "max": float(ce.max()),
            }
            if ce.size
            else None,
            "area_ratio": float(np.median(self.area_ratios)) if self.area_ratios else None,
            "valid_area_ha": self.valid_area_m2 / 1e4 if self.valid_area_m2 is not None else None,
        }
        out["false_plots_per_ha"] = self.fp / (self.valid_area_m2 / 1e4) if self.valid_area_m2 else None
        return out


def score_polygons(
    pred_gdf, truth_gdf, *, valid_area_m2: float | None = None, iou_min: float = 0.25, crs=None
) -> ObjectScore:  # noqa: ANN001
    """Score predicted vs truth polygons (GeoDataFrames, any CRS; truth is reprojected to pred's)."""
    from shapely import unary_union

    truth_gdf = _metric(truth_gdf, crs)
    pred_gdf = _metric(pred_gdf, crs)
    if pred_gdf.crs != truth_gdf.crs:
        pred_gdf = pred_gdf.to_crs(truth_gdf.crs)
    def _nonempty(gdf):  # noqa: ANN001, ANN202
        keep = np.array([g is not None and not g.is_empty for g in gdf.geometry], dtype=bool)
        return gdf.loc[keep].reset_index(drop=True)

    pred_gdf, truth_gdf = _nonempty(pred_gdf), _nonempty(truth_gdf)
    pred, truth = list(pred_gdf.geometry), list(truth_gdf.geometry)
    pairs = match_polygons(pred, truth, iou_min)
    pu = unary_union(pred) if pred else None
    tu = unary_union(truth) if truth else None
    inter = pu.intersection(tu).area if pu is not None and tu is not None else 0.0
    cerr = [pred[p].centroid.distance(truth[t].centroid) for p, t, _ in pairs]
    ratio = [pred[p].area / truth[t].area for p, t, _ in pairs if truth[t].area > 0]
    tp = len(pairs)
    return ObjectScore(
        tp,
        len(pred) - tp,
        len(truth) - tp,
        inter,
        pu.area if pu is not None else 0.0,
        tu.area if tu is not None else 0.0,
        valid_area_m2,
        cerr,
        ratio,
        missed=truth_gdf.drop(index=[t for _, t, _ in pairs]),
        false=pred_gdf.drop(index=[p for p, _, _ in pairs]),
    )


def error_layers(scores: list[tuple[str, ObjectScore]]) -> dict[str, Any]:
    """The missed true plots and the false plots of scored scenes as two WGS84 GeoDataFrames
    (``{"missed": ..., "false": ...}``), each row with its ``scene``, ``area_m2`` (measured in the
    metric CRS it was scored in) and the columns it had (e.g. ``prob_mean`` of a detect run's plots, the
    attributes of a truth file scored by :func:`evaluate_files`)."""
    import geopandas as gpd
    import pandas as pd

    out = {}
    for key in ("missed", "false"):
        parts = []
        for scene, sc in scores:
            g = getattr(sc, key)
            if g is None or not len(g):
                continue
            g = g.copy()
            g["area_m2"] = g.geometry.area.round(2)  # replaces a detect run's own area_m2 (same measure)
            g["scene"] = scene
            g = g[["scene", "area_m2", *[c for c in g.columns if c not in ("scene", "area_m2")]]]
            parts.append(g.to_crs("EPSG:4326"))
        out[key] = (
            gpd.GeoDataFrame(pd.concat(parts, ignore_index=True), crs="EPSG:4326")
            if parts
            else gpd.GeoDataFrame({"scene": [], "area_m2": []}, geometry=[], crs="EPSG:4326")
        )
    return out


def write_error_layers(
    path: str | Path, scores: list[tuple[str, ObjectScore]], overwrite: bool = False
) -> None:
    """Write :func:`error_layers` to a GeoPackage (layers ``missed`` and ``false``), atomically."""
    from .fsutil import atomic_path

    layers = error_layers(scores)
    with atomic_path(path, overwrite) as tmp:
        for name, gdf in layers.items():
            gdf.to_file(tmp, layer=name, driver="GPKG", mode="a" if tmp.exists() else "w")


def valid_area_m2(mosaic: str | Path) -> float:
    """Area (m²) of the valid-data mask of a raster (alpha/nodata/internal mask), read at reduced size."""
    import rasterio

    from .traindata import pixel_size_m

    with rasterio.open(mosaic) as ds:
        f = max(1, int(math.ceil(max(ds.width, ds.height) / 2048)))
        shape = (max(1, ds.height // f), max(1, ds.width // f))
        mask = ds.read_masks(1, out_shape=shape) > 0
        px = pixel_size_m(ds)
        return float(mask.mean() * ds.width * ds.height * px * px)


def read_polygons(path: str | Path, layer: str | None = None):  # noqa: ANN201
    """Read a polygon layer (``plots`` when present, else the first layer)."""
    import geopandas as gpd
    import pyogrio

    path = Path(path)
    if not path.exists():
        raise InputError(f"vector file '{path}' does not exist; check the path")
    try:
        layers = [n for n, _ in pyogrio.list_layers(path)]
    except Exception as exc:  # noqa: BLE001
        raise InputError(f"'{path}' is not a readable vector file ({exc})") from None
    if layer is None:
        layer = "plots" if "plots" in layers else layers[0]
    elif layer not in layers:
        raise InputError(f"'{path}' has no layer '{layer}'; layers: {', '.join(layers)}")
    return gpd.read_file(path, layer=layer)


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


def format_table(rows: list[tuple[str, dict[str, Any]]]) -> str:
    """A readable fixed-width table of reports, one row per (name, report)."""
    cols = [
        ("tp", "{:d}"),
        ("fp", "{:d}"),
        ("fn", "{:d}"),
        ("precision", "{:.3f}"),
        ("recall", "{:.3f}"),
        ("f1", "{:.3f}"),
        ("pixel_iou", "{:.3f}"),
        ("centroid_m", "{:.2f}"),
        ("area_ratio", "{:.2f}"),
        ("fp_per_ha", "{:.2f}"),
    ]
    width = max([len("scene")] + [len(n) for n, _ in rows])
    lines = ["scene".ljust(width) + "".join(f"{c:>11}" for c, _ in cols)]
    for name, r in rows:
        vals = dict(r)
        vals["centroid_m"] = (r.get("centroid_error_m") or {}).get("mean")
        vals["fp_per_ha"] = r.get("false_plots_per_ha")
        cells = []
        for c, fmt in cols:
            v = vals.get(c)
            cells.append(f"{'-' if v is None else fmt.format(v):>11}")
        lines.append(name.ljust(width) + "".join(cells))
    return "\n".join(lines)


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
    """Run ``bundle`` over labelled scenes and score each one (see :func:`poppyscan.traindata.find_scenes`).

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

    from .bundle import check_min_gsd, gsd_floor_m, load_bundle, make_predictor
    from .scene_predict import predict_scene
    from .traindata import find_scenes, positive_rows, scene_name

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

    from .bundle import make_predictor, plot_decision
    from .scene_predict import probability_polygons, scene_probability
    from .traindata import read_labels

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
