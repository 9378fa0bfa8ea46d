"""What a training run reads: its scenes, split into training and validation, and the tiles drawn from them.

:func:`prepare_inputs` opens the scenes of ``train(sources, ...)``, splits them by scene
(:func:`split_scenes`; never by tile) or takes explicit validation scenes, builds the training tile
sampler (:class:`~poppyscan.traindata.TileSampler`) and draws the fixed validation tiles. The training
loop (:mod:`poppyscan.train`) draws each step's batch with :func:`_batch` and normalises it with
:func:`_normalise`.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from .augment import augment
from .config import TrainConfig, parse_positive_weights
from .errors import InputError
from .scenes import Scene, find_scenes, open_scene
from .traindata import TileSampler, matches, positive_chances


@dataclass
class TrainInputs:
    """The scenes and tiles of one training run (see :func:`prepare_inputs`).

    Attributes
    ----------
    scenes
        Every scene opened (training and validation); the caller closes them.
    train_scenes, val_scenes
        The training and the validation scenes.
    sampler
        Draws the training tiles.
    val_tiles
        Fixed validation tiles ``(rgb, label)``, or None without validation scenes.
    n_mined
        Mined hard negatives in the training scenes.
    """

    scenes: list[Scene]
    train_scenes: list[Scene]
    val_scenes: list[Scene]
    sampler: TileSampler
    val_tiles: tuple[np.ndarray, np.ndarray] | None
    n_mined: int


def split_scenes(scenes: list[Scene], val_fraction: float, seed: int) -> tuple[list[int], list[int]]:
    """Indices (train, val): ``val_fraction`` of poppy scenes and of poppy-free scenes, by seeded shuffle."""
    rng = np.random.default_rng([seed, 7])
    pos = [i for i, s in enumerate(scenes) if s.positives]
    neg = [i for i, s in enumerate(scenes) if not s.positives]
    val: list[int] = []
    if val_fraction > 0 and len(scenes) >= 2:
        for group in (pos, neg):
            group = list(rng.permutation(group)) if group else []
            k = int(round(val_fraction * len(group)))
            if group and k == 0 and len(group) >= 3:
                k = 1
            val += [int(i) for i in group[:k]]
        if not val:
            val = [int(rng.permutation(pos or neg)[0])]
        if len(val) == len(scenes):
            val = val[:-1]
    train = [i for i in range(len(scenes)) if i not in val]
    return train, sorted(val)


def _batch(
    sampler: TileSampler, rng: np.random.Generator, n: int, aug: bool, coarse_p: float = 0.0,
    color: float = 1.0, camera_p: float = 0.0,
) -> tuple[torch.Tensor, torch.Tensor]:
    xs, ys = [], []
    for _ in range(n):
        rgb, label, _ = sampler.sample(rng, jitter=aug)
        if aug:
            rgb, label = augment(rgb, label, rng, coarse_p=coarse_p, color=color, camera_p=camera_p)
        xs.append(rgb)
        ys.append(label)
    return torch.from_numpy(np.stack(xs)), torch.from_numpy(np.stack(ys))


def _normalise(x: torch.Tensor, mean: torch.Tensor, std: torch.Tensor) -> torch.Tensor:
    return (x.permute(0, 3, 1, 2).float() - mean) / std


def _weighted_share(scenes: list[Scene], weights: dict[tuple[str, str], float]) -> str:
    """Say, per ``train.positive_weights`` entry, how many training plots it matches and the share of
    positive tiles they now get (and got unweighted); refuse an entry that matches no plot (a typo in a
    column or value would otherwise train unweighted without a word)."""
    pairs, attrs, w, base = positive_chances(scenes, weights)
    parts = []
    for (column, value), f in weights.items():
        hit = np.array([matches(a, column, value) for a in attrs], bool)
        if not hit.any():
            columns = sorted({c for a in attrs for c in a})
            raise InputError(f"train.positive_weights '{column}={value}:{f:g}' matches no training plot "
                             f"(label columns: {', '.join(columns) or 'none'}); check the column and value")
        parts.append(f"{column}={value} x{f:g}: {int(hit.sum())} of {len(pairs)} plots, "
                     f"{(w * base)[hit].sum() / (w * base).sum():.0%} of positive tiles "
                     f"(unweighted {base[hit].sum():.0%})")
    return "; ".join(parts)


def prepare_inputs(
    sources: list[str | Path],
    val_sources: list[str | Path] | None,
    cfg: TrainConfig,
    gsd: float,
    arch: str,
    say: Callable[[str], None],
) -> TrainInputs:
    """Open the scenes of a training run, split them and set up its tile sampling.

    Parameters
    ----------
    sources
        Scene directories, scene-list CSV/YAML files or GeoTIFFs (see :func:`poppyscan.scenes.find_scenes`).
    val_sources
        Explicit validation scenes (then every scene of ``sources`` trains and ``cfg.val_fraction`` is
        unused); a scene in both raises :class:`~poppyscan.errors.InputError`.
    cfg
        Training options (``train`` section of the config).
    gsd
        Ground pixel size the tiles are drawn at, m/px.
    arch
        The network's architecture (named in the progress line only).
    say
        Called with each progress line.

    Returns
    -------
    TrainInputs
        The opened scenes (the caller closes ``scenes``), the training sampler and the validation tiles.
    """
    pairs = find_scenes(sources)
    scenes = [open_scene(m, lab) for m, lab in pairs]
    if val_sources:
        tr_scenes = scenes
        val_scenes = [open_scene(m, lab) for m, lab in find_scenes(val_sources)]
        overlap = {s.mosaic.resolve() for s in tr_scenes} & {s.mosaic.resolve() for s in val_scenes}
        if overlap:
            raise InputError(
                f"{len(overlap)} scene(s) are in both the training and the validation inputs "
                f"(e.g. '{sorted(overlap)[0]}'); validation must be split by scene"
            )
        scenes = scenes + val_scenes
    else:
        tr_idx, val_idx = split_scenes(scenes, cfg.val_fraction, cfg.seed)
        tr_scenes = [scenes[i] for i in tr_idx]
        val_scenes = [scenes[i] for i in val_idx]
    if not any(s.positives for s in tr_scenes):
        raise InputError("no poppy polygons in the training scenes; at least one labelled plot is needed")
    samp = dict(
        positive_fraction=cfg.positive_fraction,
        hard_negative_fraction=cfg.hard_negative_fraction,
        scale_jitter=cfg.scale_jitter,
    )
    weights = parse_positive_weights(cfg.positive_weights)
    sampler = TileSampler(tr_scenes, cfg.tile_size, gsd, mined_fraction=cfg.mined_fraction,
                          positive_weights=weights, **samp)
    if weights:
        say("plot weights: " + _weighted_share(tr_scenes, weights))
    n_mined = sum(len(s.mined) for s in tr_scenes)
    say(
        f"scenes: {len(tr_scenes)} train ({sum(len(s.positives) for s in tr_scenes)} plots, "
        f"{sum(len(s.negatives) for s in tr_scenes)} hard negatives"
        + (f", {n_mined} mined negatives" if n_mined else "")
        + f"), {len(val_scenes)} validation; "
        f"arch {arch}, {gsd} m/px, tiles {cfg.tile_size} px"
    )
    val_tiles = None
    if val_scenes:
        vs = TileSampler(val_scenes, cfg.tile_size, gsd, **samp)
        vrng = np.random.default_rng([cfg.seed, 99991])
        items = [vs.sample(vrng, jitter=False) for _ in range(cfg.val_tiles)]
        val_tiles = (np.stack([i[0] for i in items]), np.stack([i[1] for i in items]))
    return TrainInputs(scenes, tr_scenes, val_scenes, sampler, val_tiles, n_mined)
