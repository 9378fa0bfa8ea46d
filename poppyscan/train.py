"""Training loop: scenes -> tiles -> network -> model bundle (with threshold and validation metrics).

``train(sources, out_dir, config)`` writes into ``out_dir``:

- ``checkpoints/last.pt`` (every epoch; ``resume=True`` continues from it) and ``checkpoints/best.pt``
- ``history.jsonl`` (one JSON line per epoch: loss, validation pixel IoU and object F1)
- ``bundle/`` (the final model bundle; also copied to ``bundle_out`` when given)

Validation is split by scene (never by tile): ``val_fraction`` of the scenes, stratified so that
poppy and poppy-free scenes both appear on each side when possible. Sampling is seeded per epoch
(``(seed, epoch)``), so a resumed run draws the same tiles as an uninterrupted one.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import os
import shutil
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from .augment import augment
from .bundle_io import check_bundle_target, load_bundle, save_bundle
from .bundle_meta import BundleMeta, new_meta
from .config import TrainConfig, parse_positive_weights
from .errors import ConfigError, InputError, OutputExistsError
from .eval_metrics import match_masks, prf
from .network import build_model, canonical_arch
from .scenes import Scene, find_scenes, open_scene
from .traindata import IGNORE, TileSampler, matches, positive_chances

log = logging.getLogger(__name__)

THRESHOLDS = tuple(round(float(t), 2) for t in np.arange(0.25, 0.96, 0.05))
# Whole-scene calibration also tries 0.96-0.99: the models' probabilities are peaked, and on the
# validation scenes the best pooled object F1 sat at the old grid's top (0.95).
CALIBRATION_THRESHOLDS = THRESHOLDS + (0.96, 0.97, 0.98, 0.99)
# The plot decision (bundle ``min_prob_mean``) is calibrated with the threshold: outlining at a lower
# threshold and keeping regions by their mean probability dropped about half of 0.4.0's false plots on
# validation scenes of both renderers without losing recall (a false alarm is a wide, weak region that
# a high pixel threshold breaks into several confident-looking fragments; model card).
CALIBRATION_MIN_PROB_MEANS = (0.0, 0.8, 0.85, 0.9, 0.93, 0.95, 0.96, 0.97, 0.98)
CKPT_VERSION = 1
@dataclass
class TrainResult:
    bundle_path: Path
    meta: BundleMeta
    history: list[dict[str, Any]]


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


def seg_loss(logits: torch.Tensor, target: torch.Tensor, poppy: int = 1) -> torch.Tensor:
    """Cross-entropy (ignore :data:`IGNORE`) + 0.5 x soft Dice on the poppy class over valid pixels."""
    target = target.long()
    ce = F.cross_entropy(logits, target, ignore_index=IGNORE)
    valid = (target != IGNORE).float()
    p = torch.softmax(logits, 1)[:, poppy] * valid
    t = (target == poppy).float() * valid
    dice = 1 - (2 * (p * t).sum() + 1) / (p.sum() + t.sum() + 1)
    return ce + 0.5 * dice


def _lr_lambda(total: int, warmup: int) -> Callable[[int], float]:
    def f(step: int) -> float:
        if step < warmup:
            return (step + 1) / warmup
        prog = min(1.0, (step - warmup) / max(1, total - warmup))
        return 0.02 + 0.98 * 0.5 * (1 + np.cos(np.pi * prog))

    return f


@torch.no_grad()
def validate(
    model: torch.nn.Module,
    tiles: tuple[np.ndarray, np.ndarray],
    mean: torch.Tensor,
    std: torch.Tensor,
    *,
    min_px: int,
    poppy: int = 1,
    batch: int = 8,
) -> dict[str, Any]:
    """Loss, pixel IoU and object P/R/F1 per threshold on fixed validation tiles; picks the best threshold."""
    model.eval()
    xs, ys = tiles
    probs, losses = [], []
    for i in range(0, len(xs), batch):
        x = torch.from_numpy(xs[i : i + batch])
        y = torch.from_numpy(ys[i : i + batch])
        logits = model(_normalise(x, mean, std))
        losses.append(float(seg_loss(logits, y, poppy)) * len(x))
        probs.append(torch.softmax(logits, 1)[:, poppy].numpy())
    prob = np.concatenate(probs)
    valid = ys != IGNORE
    truth = ys == 1
    per_t = {}
    for t in THRESHOLDS:
        pred = (prob >= t) & valid
        inter = float((pred & truth).sum())
        union = float((pred | truth).sum())
        counts = np.zeros(3, np.int64)
        for k in range(len(prob)):
            counts += match_masks(pred[k], truth[k], valid=valid[k], min_px=min_px)
        tp, fp, fn = (int(c) for c in counts)
        per_t[t] = {
            "pixel_iou": inter / union if union else 1.0,
            "tp": tp,
            "fp": fp,
            "fn": fn,
            **prf(tp, fp, fn),
        }
    best = max(THRESHOLDS, key=lambda t: ((per_t[t]["f1"] or 0.0), per_t[t]["pixel_iou"], -abs(t - 0.5)))
    return {
        "loss": sum(losses) / len(xs),
        "threshold": best,
        **per_t[best],
        "pixel_iou_at_0.5": per_t[0.5]["pixel_iou"],
    }


def _atomic_save(obj: Any, path: Path) -> None:
    tmp = path.with_name(path.name + ".part")
    torch.save(obj, tmp)
    os.replace(tmp, path)


def _fmt(v: Any) -> str:
    return "-" if v is None else f"{v:.3f}"


def calibrate_bundle(bundle, pairs: list, cfg: TrainConfig, say: Callable[[str], None],  # noqa: ANN001
                     max_false_per_ha: float | None = None,
                     min_prob_means: tuple[float, ...] = CALIBRATION_MIN_PROB_MEANS,
                     cal: dict[str, Any] | None = None) -> BundleMeta:
    """Set the bundle's threshold and plot decision (``min_prob_mean``) from whole validation scenes
    (best pooled object F1, optionally among pairs with at most ``max_false_per_ha`` false plots per
    hectare) and record the validation-scene metrics there in ``bundle.json``. ``cal``: the result of
    :func:`~poppyscan.evaluate.calibrate_threshold` on ``pairs`` when the caller already has it."""
    from .bundle_io import update_meta
    from .evaluate import calibrate_threshold

    if cal is None:
        say(f"calibrating the threshold and plot decision on {len(pairs)} whole validation scenes")
        cal = calibrate_threshold(
            bundle, pairs, thresholds=CALIBRATION_THRESHOLDS, threads=cfg.threads,
            min_area_m2=cfg.min_area_m2, max_false_per_ha=max_false_per_ha, min_prob_means=min_prob_means,
        )
    rep = cal["per_threshold"][cal["threshold"]]
    if not cal["cap_met"]:
        say(f"no threshold keeps the validation false plots at or below {max_false_per_ha:.3f}/ha; "
            f"took the highest, {cal['threshold']:.2f} (plot mean >= {cal['min_prob_mean']:.2f})")
    keys = (
        "tp",
        "fp",
        "fn",
        "precision",
        "recall",
        "f1",
        "pixel_iou",
        "centroid_error_m",
        "false_plots_per_ha",
    )
    metrics = dict(bundle.meta.metrics)
    metrics["validation_scenes"] = {
        "scenes": len(pairs),
        "threshold": cal["threshold"],
        "min_prob_mean": cal["min_prob_mean"],
        **{k: rep[k] for k in keys},
    }
    say(
        f"threshold {cal['threshold']:.2f}, plot mean >= {cal['min_prob_mean']:.2f}: validation scenes "
        f"object P {_fmt(rep['precision'])} "
        f"R {_fmt(rep['recall'])} F1 {_fmt(rep['f1'])}, {_fmt(rep['false_plots_per_ha'])} false plots/ha"
    )
    meta = update_meta(bundle.path, threshold=float(cal["threshold"]),
                       min_prob_mean=float(cal["min_prob_mean"]), metrics=metrics)
    bundle.meta = meta
    return meta


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


def train(
    sources: list[str | Path],
    out_dir: str | Path,
    config: TrainConfig | None = None,
    *,
    resume: bool = False,
    overwrite: bool = False,
    init: str | Path | None = None,
    bundle_out: str | Path | None = None,
    val_sources: list[str | Path] | None = None,
    name: str = "poppyscan-custom",
    version: str = "0.1.0",
    progress: Callable[[str], None] | None = None,
    log_every: int = 25,
    stop_after: int | None = None,
) -> TrainResult:
    """Train a bundle on ``sources`` (see :func:`poppyscan.traindata.find_scenes`).

    Parameters
    ----------
    sources
        Scene directories, scene-list CSV/YAML files or GeoTIFFs.
    out_dir
        Run directory for checkpoints, history and the final ``bundle/``.
    config
        Training options (``train`` section of the config).
    resume
        Continue from ``out_dir/checkpoints/last.pt``.
    overwrite
        Allow a fresh run in an existing ``out_dir`` (its checkpoints are replaced), and replace an existing
        bundle at ``bundle_out``.
    init
        A bundle whose weights start the training (fine-tuning); its arch, GSD and ``min_gsd_m`` are kept.
    bundle_out
        Also write the final bundle here. An existing path raises
        :class:`~poppyscan.errors.OutputExistsError` before training starts unless ``overwrite``, and even
        with it unless it is a model bundle (``bundle.json``) or an empty directory.
    val_sources
        Explicit validation scenes (then every scene of ``sources`` trains and ``val_fraction`` is unused);
        a scene in both raises :class:`InputError`.
    progress
        Called with each progress line (default: ``logging.info``).
    log_every
        Steps between progress lines within an epoch (0: only per-epoch lines).
    stop_after
        Stop after this many epochs in this session (checkpoint kept, bundle written from the best epoch
        so far); ``resume=True`` later continues on the same schedule.
    """
    cfg = config or TrainConfig()
    say = progress or log.info
    out = Path(out_dir)
    ckpt_dir = out / "checkpoints"
    last_ckpt = ckpt_dir / "last.pt"
    if resume:
        if not last_ckpt.is_file():
            raise InputError(f"cannot resume: '{last_ckpt}' does not exist; start without --resume")
    elif out.exists() and any(out.iterdir()) and not overwrite:
        raise OutputExistsError(
            f"training directory '{out}' already exists; pass --resume to continue it "
            "or --overwrite to start again"
        )
    # refuse now, not after training, a bundle place whose contents saving would replace or delete
    check_bundle_target(out / "bundle", True, option="--out")
    if bundle_out is not None:
        check_bundle_target(bundle_out, overwrite)
    torch.manual_seed(cfg.seed)
    if cfg.threads:
        torch.set_num_threads(cfg.threads)

    init_bundle = load_bundle(init, check_onnx=False) if init else None
    if cfg.widen_to and not init_bundle:
        raise ConfigError("train.widen_to widens the --init bundle's network; pass --init BUNDLE or drop it")
    arch = init_bundle.meta.arch if init_bundle else canonical_arch(cfg.arch)
    if cfg.widen_to:
        from .widen import widen

        model = widen(init_bundle.model, arch, cfg.widen_to, seed=cfg.seed)
        say(
            f"widened {init}'s {arch} into {canonical_arch(cfg.widen_to)} (Net2Net: the same outputs "
            "up to a 1 % symmetry-breaking noise on the copied channels)"
        )
        arch = canonical_arch(cfg.widen_to)
        init_bundle = dataclasses.replace(init_bundle, meta=dataclasses.replace(init_bundle.meta, arch=arch),
                                          model=model)
    gsd = init_bundle.meta.gsd_m if init_bundle else cfg.gsd_m
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
    min_px = max(1, int(round(cfg.min_area_m2 / gsd**2)))

    meta0 = init_bundle.meta if init_bundle else new_meta(arch=arch, gsd_m=gsd)
    model = init_bundle.model if init_bundle else build_model(arch, pretrained=cfg.pretrained)
    mean = torch.tensor(meta0.mean).view(1, 3, 1, 1) * 255
    std = torch.tensor(meta0.std).view(1, 3, 1, 1) * 255
    opt = torch.optim.AdamW(model.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
    total = cfg.epochs * cfg.steps_per_epoch
    sched = torch.optim.lr_scheduler.LambdaLR(opt, _lr_lambda(total, max(1, total // 30)))
    start_epoch, history, best = 0, [], None
    cfg_dict = dataclasses.asdict(cfg)
    coarse_p = float(cfg.coarse_aug)  # share of tiles coarsened (traindata.coarsen)
    if resume:
        ck = torch.load(last_ckpt, map_location="cpu", weights_only=False)
        # values of the keys added after the first checkpoints were written
        olddef = {"coarse_aug": 0.0, "color_aug": 1.0, "mined_fraction": 0.0, "camera_aug": 0.0,
                  "positive_weights": ()}
        for key in ("arch", "gsd_m", "tile_size", "seed", "steps_per_epoch", "batch_size", *olddef):
            old = ck["config"].get(key, olddef.get(key))
            now = {"arch": arch, "gsd_m": gsd}.get(key, cfg_dict.get(key))
            if old != now:
                raise ConfigError(
                    f"config 'train.{key}' is {now!r} but the checkpoint was trained with {old!r}; "
                    "resume with the same settings"
                )
        model.load_state_dict(ck["model"])
        opt.load_state_dict(ck["optimizer"])
        sched.load_state_dict(ck["scheduler"])
        start_epoch, history, best = ck["epoch"] + 1, ck["history"], ck.get("best")
        say(f"resumed from {last_ckpt} after epoch {start_epoch}")
    else:
        if out.exists() and overwrite:
            shutil.rmtree(ckpt_dir, ignore_errors=True)
            (out / "history.jsonl").unlink(missing_ok=True)
    ckpt_dir.mkdir(parents=True, exist_ok=True)

    t_start = time.time()
    end_epoch = cfg.epochs if stop_after is None else min(cfg.epochs, start_epoch + stop_after)
    for epoch in range(start_epoch, end_epoch):
        model.train()
        rng = np.random.default_rng([cfg.seed, epoch])
        torch.manual_seed(cfg.seed * 100_003 + epoch)
        t0, run_loss, n_loss, t_data = time.time(), 0.0, 0, 0.0
        for step in range(cfg.steps_per_epoch):
            td = time.time()
            x, y = _batch(sampler, rng, cfg.batch_size, aug=True, coarse_p=coarse_p, color=cfg.color_aug,
                          camera_p=cfg.camera_aug)
            t_data += time.time() - td
            loss = seg_loss(model(_normalise(x, mean, std)), y, meta0.poppy_class)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            sched.step()
            run_loss += float(loss.detach())
            n_loss += 1
            if log_every and (step + 1) % log_every == 0 and step + 1 < cfg.steps_per_epoch:
                say(
                    f"epoch {epoch + 1}/{cfg.epochs} step {step + 1}/{cfg.steps_per_epoch} "
                    f"loss {run_loss / n_loss:.4f} ({(time.time() - t0) / (step + 1):.2f} s/step, "
                    f"{t_data / (step + 1):.2f} s data)"
                )
        rec: dict[str, Any] = {
            "epoch": epoch + 1,
            "loss": run_loss / n_loss,
            "lr": sched.get_last_lr()[0],
            "seconds": round(time.time() - t0, 1),
        }
        if val_tiles is not None:
            v = validate(model, val_tiles, mean, std, min_px=min_px, poppy=meta0.poppy_class)
            rec["val"] = v
            key = ((v["f1"] or 0.0), v["pixel_iou"])
            if best is None or key >= tuple(best["key"]):
                best = {"key": list(key), "epoch": epoch + 1, "val": v}
                _atomic_save({"model": model.state_dict(), "epoch": epoch, "val": v}, ckpt_dir / "best.pt")
            say(
                f"epoch {epoch + 1}/{cfg.epochs} loss {rec['loss']:.4f} | val loss {v['loss']:.4f} "
                f"pixel IoU {v['pixel_iou']:.3f} object P {_fmt(v['precision'])} R {_fmt(v['recall'])} "
                f"F1 {_fmt(v['f1'])} @ {v['threshold']:.2f} | {rec['seconds']:.0f} s"
            )
        else:
            say(
                f"epoch {epoch + 1}/{cfg.epochs} loss {rec['loss']:.4f} (no validation scenes) "
                f"| {rec['seconds']:.0f} s"
            )
        history.append(rec)
        with (out / "history.jsonl").open("a", encoding="utf-8") as fh:
            fh.write(json.dumps(rec) + "\n")
        _atomic_save(
            {
                "version": CKPT_VERSION,
                "model": model.state_dict(),
                "optimizer": opt.state_dict(),
                "scheduler": sched.state_dict(),
                "epoch": epoch,
                "history": history,
                "best": best,
                "config": {**cfg_dict, "arch": arch, "gsd_m": gsd},
            },
            last_ckpt,
        )

    if best is not None and (ckpt_dir / "best.pt").is_file():
        model.load_state_dict(
            torch.load(ckpt_dir / "best.pt", map_location="cpu", weights_only=False)["model"]
        )
    model.eval()
    val = best["val"] if best else None
    summary = {
        "scenes_train": [str(s.mosaic) for s in tr_scenes],
        "scenes_val": [str(s.mosaic) for s in val_scenes],
        "plots_train": sum(len(s.positives) for s in tr_scenes),
        "hard_negatives_train": sum(len(s.negatives) for s in tr_scenes),
        "mined_negatives_train": n_mined,
        "poppy_free_scenes_train": sum(1 for s in tr_scenes if not s.positives),
        "tiles_seen": len(history) * cfg.steps_per_epoch * cfg.batch_size if history else 0,
        "epochs": len(history),
        "best_epoch": best["epoch"] if best else len(history),
        "init": str(init) if init else None,
        "config": {**cfg_dict, "arch": arch, "gsd_m": gsd},
        "train_seconds_this_session": round(time.time() - t_start, 1),
    }
    metrics = {}
    if val is not None:
        metrics["validation_tiles"] = {
            k: val[k]
            for k in ("pixel_iou", "precision", "recall", "f1", "tp", "fp", "fn", "threshold", "loss")
        }
        metrics["validation_tiles"]["n_tiles"] = int(len(val_tiles[0]))
    meta = dataclasses.replace(
        meta0,
        name=name,
        version=version,
        arch=arch,
        gsd_m=gsd,
        tile_size=cfg.infer_tile_size,
        overlap=cfg.overlap,
        threshold=float(val["threshold"]) if val else 0.5,
        training=summary,
        metrics=metrics,
        created=new_meta().created,
        plot_scorer=None,  # fitted to the old network's regions: refit it (scripts/train_plot_scorer.py)
    )
    if meta0.plot_scorer:
        say(f"note: the plot scorer of {init_bundle.path} is not carried over (it judges the regions of the "
            "network it was fitted with); the new bundle decides by mean probability until a scorer is "
            "fitted for it with scripts/train_plot_scorer.py")
    bundle = save_bundle(out / "bundle", model, meta, overwrite=True)
    for s in scenes:
        s.close()
    if val_scenes and cfg.calibrate_threshold:
        meta = calibrate_bundle(bundle, [(s.mosaic, s.labels) for s in val_scenes], cfg, say)
    if bundle_out is not None:
        save_bundle(bundle_out, model, meta, overwrite=overwrite)
    say(f"bundle written to {bundle_out or bundle.path} (threshold {meta.threshold:.2f}, "
        f"plot mean >= {meta.min_prob_mean:.2f})")
    return TrainResult(Path(bundle_out) if bundle_out else out / "bundle", meta, history)
