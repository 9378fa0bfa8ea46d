"""The second look at each candidate plot: a small gradient-boosted classifier over region features.

The network outlines regions at the bundle's ``threshold``; the first plot decision kept a region when
its mean probability reached ``min_prob_mean``. A bundle may also carry a *plot scorer*
(``plot_scorer.json``, named by the bundle field ``plot_scorer``): boosted decision trees over the
features of :mod:`poppyscan.regions` (size and shape, how the probability is spread inside and around
the region, colour and texture against the ground around it) that give each region a score in 0-1; a
region is a plot when its score reaches the bundle's ``plot_scorer_cut``. ``detect``, the evaluation
predictor and ``plots.gpkg`` (column ``score``) use the same scorer.

Trees are fitted with scikit-learn's ``HistGradientBoostingClassifier`` (``scripts/train_plot_scorer.py``,
an optional dependency needed only to fit) and stored as plain JSON arrays, evaluated here in numpy: the
bundle loads without scikit-learn, no pickle is ever read, and the file is the model, readable and diffable.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from .errors import BundleError, DependencyError
from .regions import FEATURES

FORMAT = "poppyscan-plot-scorer"
FORMAT_VERSION = 1
_TREE_KEYS = ("feature", "threshold", "left", "right", "value", "missing_left")


@dataclass(frozen=True)
class PlotScorer:
    """Boosted trees: ``score = sigmoid(baseline + sum of one leaf value per tree)``; at a split a
    region goes left when ``feature <= threshold`` (NaN: ``missing_left``). Leaves have ``feature`` -1."""

    features: tuple[str, ...]
    baseline: float
    trees: tuple[dict[str, np.ndarray], ...]
    training: dict[str, Any]

    def score(self, feats: dict[str, np.ndarray]) -> np.ndarray:
        """Scores (0-1) of the regions whose features are ``feats`` (name -> array, one value per region)."""
        missing = [f for f in self.features if f not in feats]
        if missing:
            raise ValueError(f"region features missing: {', '.join(missing)}")
        x = np.column_stack([np.asarray(feats[f], np.float64).reshape(-1) for f in self.features])
        n = len(x)
        raw = np.full(n, self.baseline)
        rows = np.arange(n)
        for t in self.trees:
            node = np.zeros(n, np.int64)
            while True:
                f = t["feature"][node]
                inner = f >= 0
                if not inner.any():
                    break
                i = rows[inner]
                v = x[i, f[inner]]
                at = node[inner]
                go_left = np.where(np.isnan(v), t["missing_left"][at], v <= t["threshold"][at])
                node[inner] = np.where(go_left, t["left"][at], t["right"][at])
            raw += t["value"][node]
        return 1.0 / (1.0 + np.exp(-raw))

    def to_dict(self) -> dict[str, Any]:
        return {"format": FORMAT, "format_version": FORMAT_VERSION, "features": list(self.features),
                "baseline": self.baseline, "training": self.training,
                "trees": [{k: t[k].tolist() for k in _TREE_KEYS} for t in self.trees]}

    @classmethod
    def from_dict(cls, d: Any, source: str = "plot scorer") -> PlotScorer:
        """Validate and build (:class:`~poppyscan.errors.BundleError` naming what is wrong)."""
        def bad(msg: str) -> BundleError:
            return BundleError(f"{source}: {msg}; re-create it with scripts/train_plot_scorer.py")

        if not isinstance(d, dict) or d.get("format") != FORMAT:
            raise bad(f"not a {FORMAT} file")
        if d.get("format_version") != FORMAT_VERSION:
            raise bad(f"format_version {d.get('format_version')!r}, this poppyscan reads {FORMAT_VERSION}")
        feats = d.get("features")
        if not isinstance(feats, list) or not feats or any(f not in FEATURES for f in feats):
            raise bad(f"'features' must list names from poppyscan.regions.FEATURES, got {feats!r}")
        base = d.get("baseline")
        if not isinstance(base, (int, float)) or not math.isfinite(base):
            raise bad(f"'baseline' must be a number, got {base!r}")
        trees = []
        raw_trees = d.get("trees")
        if not isinstance(raw_trees, list) or not raw_trees:
            raise bad("'trees' must be a non-empty list")
        for k, t in enumerate(raw_trees):
            try:
                arr = {
                    "feature": np.asarray(t["feature"], np.int64),
                    "threshold": np.asarray(t["threshold"], np.float64),
                    "left": np.asarray(t["left"], np.int64),
                    "right": np.asarray(t["right"], np.int64),
                    "value": np.asarray(t["value"], np.float64),
                    "missing_left": np.asarray(t["missing_left"], bool),
                }
            except (KeyError, TypeError, ValueError) as exc:
                raise bad(f"tree {k} is malformed ({exc})") from None
            n = len(arr["feature"])
            if n == 0 or any(a.ndim != 1 or len(a) != n for a in arr.values()):
                raise bad(f"tree {k}: its arrays must be 1-D and of one length")
            inner = arr["feature"] >= 0
            own = np.flatnonzero(inner)
            children = np.concatenate([arr["left"][inner], arr["right"][inner]])
            # children come after their parent (as sklearn stores them), so a walk always ends at a leaf
            if (arr["feature"] >= len(feats)).any() or (children >= n).any() or (
                    children <= np.concatenate([own, own])).any():
                raise bad(f"tree {k}: a feature or child index is out of range")
            if not np.isfinite(arr["value"]).all():
                raise bad(f"tree {k}: leaf values must be finite")
            trees.append(arr)
        return cls(tuple(feats), float(base), tuple(trees), dict(d.get("training") or {}))

    @classmethod
    def load(cls, path: str | Path) -> PlotScorer:
        path = Path(path)
        try:
            data = json.loads(path.read_text())
        except FileNotFoundError:
            raise BundleError(f"plot scorer '{path}' is missing; restore it or remove 'plot_scorer' "
                              "from bundle.json") from None
        except (OSError, ValueError) as exc:
            raise BundleError(f"plot scorer '{path}' cannot be read ({exc})") from None
        return cls.from_dict(data, f"plot scorer '{path}'")

    def save(self, path: str | Path) -> Path:
        from .fsutil import atomic_path

        with atomic_path(path, overwrite=True) as tmp:
            tmp.write_text(json.dumps(self.to_dict(), separators=(",", ":")) + "\n")
        return Path(path)


def fit(x: np.ndarray, y: np.ndarray, features: list[str], *, seed: int = 0, max_iter: int = 200,
        learning_rate: float = 0.05, max_leaf_nodes: int = 15, min_samples_leaf: int = 20,
        l2_regularization: float = 1.0, training: dict[str, Any] | None = None) -> PlotScorer:
    """Fit boosted trees on region features ``x`` (n, len(features)) and 0/1 labels ``y`` with
    scikit-learn, and convert them to a :class:`PlotScorer` (which must reproduce sklearn's scores)."""
    try:
        from sklearn.ensemble import HistGradientBoostingClassifier
    except ImportError:
        raise DependencyError("fitting a plot scorer needs scikit-learn: "
                              "pip install 'poppyscan[scorer]'") from None
    clf = HistGradientBoostingClassifier(
        max_iter=max_iter, learning_rate=learning_rate, max_leaf_nodes=max_leaf_nodes,
        min_samples_leaf=min_samples_leaf, l2_regularization=l2_regularization, random_state=seed,
        early_stopping=False)
    clf.fit(x, y)
    trees = []
    for (pred,) in clf._predictors:  # one predictor per iteration for a binary classifier
        nodes = pred.nodes
        leaf = nodes["is_leaf"].astype(bool)
        if nodes["is_categorical"].any():
            raise ValueError("categorical splits are not supported")
        trees.append({
            "feature": np.where(leaf, -1, nodes["feature_idx"]).astype(np.int64),
            "threshold": np.where(leaf, 0.0, nodes["num_threshold"]).astype(np.float64),
            "left": np.where(leaf, 0, nodes["left"]).astype(np.int64),
            "right": np.where(leaf, 0, nodes["right"]).astype(np.int64),
            "value": np.where(leaf, nodes["value"], 0.0).astype(np.float64),
            "missing_left": nodes["missing_go_to_left"].astype(bool),
        })
    scorer = PlotScorer(tuple(features), float(np.ravel(clf._baseline_prediction)[0]), tuple(trees),
                        dict(training or {}))
    ref = clf.predict_proba(x)[:, 1]
    got = scorer.score({f: x[:, i] for i, f in enumerate(features)})
    if not np.allclose(ref, got, atol=1e-6):
        raise RuntimeError("the converted trees do not reproduce scikit-learn's scores "
                           f"(max difference {np.abs(ref - got).max():.2g}); "
                           "this scikit-learn version is not supported")
    return scorer


def decision_bounds(meta: Any, scorer: PlotScorer | None, min_prob_mean: float | None,
                    min_plot_score: float | None,
                    option: str = "--min-plot-score") -> tuple[float, float | None]:
    """The plot decision in effect, ``(min_prob_mean, min_score)`` for
    :func:`poppyscan.bundle.plot_decision`. With a ``scorer`` the score decides (at ``min_plot_score``,
    else the bundle's ``plot_scorer_cut``) and ``min_prob_mean`` is only an explicit floor (0 when None);
    without one the mean rule decides (``min_prob_mean``, else the bundle's) and a ``min_plot_score``
    is refused (:class:`~poppyscan.errors.ConfigError` naming ``option``)."""
    from .errors import ConfigError

    if scorer is None:
        if min_plot_score is not None:
            raise ConfigError(f"{option} needs a model with a plot scorer and the scorer on; this run has "
                              "none: leave it unset")
        mean = float(getattr(meta, "min_prob_mean", 0.0)) if min_prob_mean is None else min_prob_mean
        return mean, None
    return (min_prob_mean or 0.0), (float(meta.plot_scorer_cut) if min_plot_score is None else min_plot_score)


def onnx_digest(path: str | Path) -> str:
    """SHA-256 (first 16 hex digits) of a bundle's ONNX network: which network made a regions file."""
    import hashlib

    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()[:16]


def load_for(meta: Any, bundle_dir: str | Path | None) -> PlotScorer | None:
    """The plot scorer the bundle ``meta`` names (field ``plot_scorer``), read from ``bundle_dir``;
    ``None`` when it names none."""
    name = getattr(meta, "plot_scorer", None)
    if not name:
        return None
    if isinstance(bundle_dir, str) and not bundle_dir:
        bundle_dir = None
    if bundle_dir is None:
        raise BundleError(f"the model names a plot scorer '{name}' but has no bundle directory to read it "
                          "from; pass the bundle directory as the model")
    return PlotScorer.load(Path(bundle_dir) / name)


def mosaic_region_scores(mosaic: Any, grid: Any, prob_path: str | Path, geoms: Any, scorer: PlotScorer,
                         threshold: float, morph_radius_px: int = 1) -> np.ndarray:
    """Scores of the regions ``detect`` outlined in one mosaic (:func:`mosaic_region_features`)."""
    geoms = list(geoms)
    if not geoms:
        return np.zeros(0)
    return scorer.score(mosaic_region_features(mosaic, grid, prob_path, geoms, threshold, morph_radius_px))


def mosaic_region_features(mosaic: Any, grid: Any, prob_path: str | Path, geoms: Any, threshold: float,
                           morph_radius_px: int = 1) -> dict[str, np.ndarray]:
    """Features (:data:`poppyscan.regions.FEATURES`) of the regions ``detect`` outlined in one mosaic.

    ``geoms``: the regions' polygons in the mosaic's CRS; ``prob_path``: the run's probability raster of
    the mosaic (uint8 percent, 255 = nodata) on ``grid``. Each region is found again in a window of the
    raster around it (the connected region at ``threshold`` it was outlined from, as
    :func:`poppyscan.regions.candidate_labels` forms it over a whole scene) and the mosaic is read on the
    model grid there, so the features are those the scorer was fitted on.
    """
    import rasterio
    from rasterio.features import rasterize
    from rasterio.transform import Affine
    from rasterio.windows import Window

    from .regions import RING_M, candidate_labels, region_features

    geoms = list(geoms)
    feats: dict[str, list[float]] = {f: [] for f in FEATURES}
    margin = max(2, round(RING_M / grid.gsd_m)) + 2 * morph_radius_px + 4
    inv = ~grid.transform
    with rasterio.open(prob_path) as ds:
        for g in geoms:
            x0, y0, x1, y1 = g.bounds
            cs, rs = zip(*(inv * (x, y) for x in (x0, x1) for y in (y0, y1)), strict=True)
            c0, r0 = max(0, int(np.floor(min(cs))) - margin), max(0, int(np.floor(min(rs))) - margin)
            c1 = min(grid.width, int(np.ceil(max(cs))) + margin)
            r1 = min(grid.height, int(np.ceil(max(rs))) + margin)
            w, h = max(1, c1 - c0), max(1, r1 - r0)
            u8 = ds.read(1, window=Window(c0, r0, w, h))
            valid = u8 <= 100
            prob = np.where(valid, u8, 0).astype(np.float32) / 100.0
            rgb, _ = mosaic.read_window(grid, r0, c0, h, w)
            n, labels, stats = candidate_labels(prob, valid, threshold, morph_radius_px)
            inside = rasterize([g], out_shape=(h, w), transform=grid.transform * Affine.translation(c0, r0),
                               fill=0, default_value=1, dtype="uint8").astype(bool)
            hits = np.bincount(labels[inside], minlength=n)[1:] if n > 1 else np.zeros(0)
            if hits.size and hits.max() > 0:
                k = int(np.argmax(hits)) + 1
            else:  # not found again (should not happen): the outline itself is the region
                labels = inside.astype(np.int32)
                ys, xs = np.nonzero(inside)
                if len(ys) == 0:
                    for f in feats:
                        feats[f].append(np.nan)
                    continue
                stats = np.array([[0, 0, w, h, w * h], [xs.min(), ys.min(), xs.max() - xs.min() + 1,
                                                        ys.max() - ys.min() + 1, len(ys)]])
                k = 1
            one = region_features(prob, valid, rgb, labels, stats, grid.gsd_m, ids=[k])
            for f in feats:
                feats[f].append(float(one[f][0]))
    return {f: np.asarray(v, np.float64) for f, v in feats.items()}
