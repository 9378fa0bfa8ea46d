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

from dataclasses import dataclass
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

