"""A small whole-scene predictor for evaluation: mosaic -> blended probability -> plot polygons.

Used by ``poppyscan evaluate --model`` and the model benchmarks on rendered scenes. It reads the whole
scene into memory at the bundle GSD, so it is meant for evaluation scenes (up to ~100 Mpx at model GSD);
``poppyscan detect`` is the streaming, production path for real mosaics.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import rasterio
from rasterio.enums import Resampling
from rasterio.features import shapes
from shapely.geometry import Polygon, shape

from .blend import Blender
from .bundle_io import Bundle
from .bundle_rules import plot_decision, run_gsd_m
from .errors import InputError
from .geo.raster import north_up_transform, read_whole_north_up
from .predictor import Predictor
from .regions import percent_steps
from .scenes import _rgb_bands, pixel_size_m
from .tiles import overlap_px, tile_grid

MAX_PIXELS = 100_000_000


@dataclass
class ScenePrediction:
    polygons: list[Polygon]  # mosaic CRS
    prob_max: list[float]
    prob_mean: list[float]
    crs: object
    valid_area_m2: float
    prob: np.ndarray  # float32 (H, W) at model GSD, NaN outside the valid area
    seconds: float
    scores: list | None = None  # plot scores (None each without a plot scorer)


def predict_array(
    predict: Predictor, rgb: np.ndarray, tile: int, overlap: float, batch: int = 4
) -> np.ndarray:
    """Blend tiled predictions of an ``(H, W, 3)`` uint8 image into ``(H, W)`` float32 probability.

    The tile grid (:func:`~poppyscan.tiles.tile_grid`) and blending weights
    (:class:`~poppyscan.blend.Blender`) are detect's, in detect's order, so validation, threshold
    calibration and hard-negative mining see the probabilities production will compute.
    """
    h, w = rgb.shape[:2]
    ov = overlap_px(tile, overlap)
    out = np.empty((h, w), np.float32)

    def sink(row: int, prob: np.ndarray, valid: np.ndarray) -> None:
        out[row : row + len(prob)] = prob

    blender = Blender(h, w, tile_size=tile, overlap=ov, sink=sink)
    tiles = tile_grid(h, w, tile_size=tile, overlap=ov)
    images = np.zeros((batch, tile, tile, 3), np.uint8)  # tiles of a raster smaller than `tile`: 0-padded
    for i in range(0, len(tiles), batch):
        chunk = tiles[i : i + batch]
        for k, t in enumerate(chunk):
            images[k, : t.height, : t.width] = rgb[t.slices]
        prob = predict(images[: len(chunk)])
        for t, p in zip(chunk, prob, strict=True):
            blender.add(t, p)
    blender.finish()
    return out


@dataclass
class SceneProbability:
    """Blended probability of one mosaic at the model GSD, with its grid."""

    prob: np.ndarray  # float32 (H, W)
    valid: np.ndarray  # bool (H, W)
    transform: rasterio.Affine
    crs: object
    px_area_m2: float
    seconds: float
    rgb: np.ndarray | None = None  # uint8 (H, W, 3) as predicted, kept only when asked (``keep_rgb``)
    gsd_m: float = 0.0  # the GSD detect runs this mosaic at (its grid here is that to within a rounded pixel)

    @property
    def valid_area_m2(self) -> float:
        return float(self.valid.sum() * self.px_area_m2)


def scene_probability(
    predict: Predictor, bundle: Bundle, mosaic: str | Path, *, batch: int = 4, min_gsd_m: float | None = None,
    keep_rgb: bool = False,
) -> SceneProbability:
    """Read ``mosaic`` at the GSD ``detect`` runs it at (:func:`~poppyscan.bundle.run_gsd_m`; ``min_gsd_m``
    as ``detect.min_gsd_m``) and predict its blended probability (``keep_rgb``: keep the image too)."""
    import time

    t0 = time.perf_counter()
    meta = bundle.meta
    from .mosaic import ground_pixel_size

    with rasterio.open(mosaic) as ds:
        src_gsd = pixel_size_m(ds)
        scale = src_gsd / run_gsd_m(meta, src_gsd, min_gsd_m)
        # detect's figure for the same mosaic (geodesic pixel size), for features that must match its own
        ground = ground_pixel_size(ds.crs, ds.transform, ds.width, ds.height)
        run_gsd = run_gsd_m(meta, float(sum(ground) / 2), min_gsd_m)
        h, w = max(1, round(ds.height * scale)), max(1, round(ds.width * scale))
        if h * w > MAX_PIXELS:
            raise InputError(
                f"mosaic '{mosaic}' is {h}x{w} px at the GSD it is read at; too big for the evaluation "
                "predictor: run `poppyscan detect` and evaluate its plots.gpkg instead"
            )
        bands = list(_rgb_bands(ds))
        # north-up whatever the storage order, as detect reads it (the network sees the same image)
        rgb = read_whole_north_up(ds, bands, (3, h, w), resampling=Resampling.bilinear).transpose(1, 2, 0)
        valid = read_whole_north_up(ds, 1, (h, w), masks=True, resampling=Resampling.nearest) > 0
        scaled = ds.transform @ rasterio.Affine.scale(ds.width / w, ds.height / h)
        transform = north_up_transform(scaled, w, h)
        crs = ds.crs
        px_area = (src_gsd * ds.width / w) * (src_gsd * ds.height / h)
    rgb = np.ascontiguousarray(rgb)
    prob = predict_array(predict, rgb, meta.tile_size, meta.overlap, batch)
    return SceneProbability(prob, valid, transform, crs, px_area, time.perf_counter() - t0,
                            rgb if keep_rgb else None, run_gsd)


def probability_polygons(
    sp: SceneProbability,
    threshold: float,
    *,
    min_area_m2: float = 1.0,
    max_hole_m2: float = 1.0,
    morph_radius_px: int = 1,
) -> tuple[list[Polygon], list[float], list[float]]:
    """Threshold, light morphology, polygonise; returns polygons (mosaic CRS) and their max and mean
    probability (over the region's pixels, as ``detect`` computes them)."""
    polys, pmax, pmean, _ = _regions(sp, sp.prob, threshold, min_area_m2=min_area_m2, max_hole_m2=max_hole_m2,
                                     morph_radius_px=morph_radius_px)
    return polys, pmax, pmean


def _regions(sp: SceneProbability, prob: np.ndarray, threshold: float, *, min_area_m2: float,
             max_hole_m2: float, morph_radius_px: int, scorer=None):  # noqa: ANN001, ANN202
    """:func:`probability_polygons` of ``prob`` plus each polygon's plot score (``scorer``) or None."""
    from scipy import ndimage

    from .regions import candidate_labels, region_features

    n, labels, stats = candidate_labels(prob, sp.valid, threshold, morph_radius_px)
    if n <= 1:
        return [], [], [], []
    maxima = ndimage.maximum(prob, labels, index=np.arange(n))
    means = ndimage.mean(prob, labels, index=np.arange(n))
    min_px, hole_px = min_area_m2 / sp.px_area_m2, max_hole_m2 / sp.px_area_m2
    polys, pmax, pmean, ids = [], [], [], []
    for geom, val in shapes(labels.astype(np.int32), mask=labels > 0, connectivity=4):
        poly = shape(geom)
        if poly.area < min_px:
            continue
        poly = Polygon(poly.exterior, [r for r in poly.interiors if Polygon(r).area >= hole_px])
        polys.append(_apply(poly.simplify(0.5), sp.transform))
        pmax.append(float(maxima[int(val)]))
        pmean.append(float(means[int(val)]))
        ids.append(int(val))
    scores: list = [None] * len(ids)
    if scorer is not None and ids:
        feats = region_features(prob, sp.valid, sp.rgb, labels, stats, sp.gsd_m, ids=ids)
        scores = scorer.score(feats).tolist()
    return polys, pmax, pmean, scores


def predict_scene(
    predict: Predictor,
    bundle: Bundle,
    mosaic: str | Path,
    *,
    threshold: float | None = None,
    min_prob_mean: float | None = None,
    min_area_m2: float = 1.0,
    max_hole_m2: float = 1.0,
    morph_radius_px: int = 1,
    batch: int = 4,
    min_gsd_m: float | None = None,
    plot_scorer: Any = True,
    min_plot_score: float | None = None,
) -> ScenePrediction:
    """Predict plot polygons for one mosaic (see the module docstring). ``threshold`` defaults to the
    bundle's. The plot decision is ``detect``'s: with the bundle's plot scorer (``plot_scorer``; a
    region is a plot when its score reaches ``min_plot_score``, default the bundle's cut, and its mean
    probability reaches ``min_prob_mean`` when that is given) or else the mean-probability rule
    (``min_prob_mean``, default the bundle's). ``plot_scorer``: True for the bundle's (read here), False
    for none, or a :class:`~poppyscan.plot_scorer.PlotScorer` read once by a caller predicting many
    scenes. ``min_gsd_m`` as ``detect.min_gsd_m``."""
    from .plot_scorer import decision_bounds, load_for

    scorer = load_for(bundle.meta, bundle.path) if plot_scorer is True else plot_scorer or None
    keep_mean, min_score = decision_bounds(bundle.meta, scorer, min_prob_mean, min_plot_score)
    sp = scene_probability(predict, bundle, mosaic, batch=batch, min_gsd_m=min_gsd_m,
                           keep_rgb=scorer is not None)
    thr = bundle.meta.threshold if threshold is None else threshold
    prob = percent_steps(sp.prob)  # detect thresholds and measures its uint8 percent raster
    polys, pmax, pmean, scores = _regions(sp, prob, thr, min_area_m2=min_area_m2, max_hole_m2=max_hole_m2,
                                          morph_radius_px=morph_radius_px, scorer=scorer)
    kept = np.flatnonzero(plot_decision(pmean, keep_mean, scores, min_score)).tolist()
    polys, pmax, pmean = [polys[i] for i in kept], [pmax[i] for i in kept], [pmean[i] for i in kept]
    prob = np.where(sp.valid, sp.prob, np.nan).astype(np.float32)
    return ScenePrediction(polys, pmax, pmean, sp.crs, sp.valid_area_m2, prob, sp.seconds,
                           [scores[i] for i in kept])


def _apply(poly: Polygon, t: rasterio.Affine) -> Polygon:
    from shapely import affinity

    return affinity.affine_transform(poly, [t.a, t.b, t.d, t.e, t.c, t.f])


def scene_gsd_m(mosaic: str | Path) -> float:
    with rasterio.open(mosaic) as ds:
        return pixel_size_m(ds)
