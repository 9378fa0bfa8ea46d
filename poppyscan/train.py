"""Training loop: scenes -> tiles -> network -> model bundle (with threshold and validation metrics).

``train(sources, out_dir, config)`` writes into ``out_dir``:

- ``checkpoints/last.pt`` (every epoch; ``resume=True`` continues from it) and ``checkpoints/best.pt``
- ``history.jsonl`` (one JSON line per epoch: loss, validation pixel IoU and object F1)
- ``bundle/`` (the final model bundle; also copied to ``bundle_out`` when given)

Validation is split by scene (never by tile): ``val_fraction`` of the scenes, stratified so that
poppy and poppy-free scenes both appear on each side when possible. Sampling is seeded per epoch
(``(seed, epoch)``), so a resumed run draws the same tiles as an uninterrupted one.

This module holds the loop, its learning-rate schedule and checkpoints, and the final bundle. Opening,
splitting and sampling the scenes live in :mod:`poppyscan.train_inputs`; the loss, the per-epoch
validation and the calibration of the final bundle in :mod:`poppyscan.train_validate`. Their public
names are importable from here too.
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

from .bundle_io import check_bundle_target, load_bundle, save_bundle
from .bundle_meta import BundleMeta, new_meta
from .config import TrainConfig
from .errors import ConfigError, InputError, OutputExistsError
from .network import build_model, canonical_arch
from .train_inputs import TrainInputs, _batch, _normalise, prepare_inputs, split_scenes
from .train_inputs import _weighted_share as _weighted_share  # re-exported: tests import it from here
from .train_validate import (
    CALIBRATION_MIN_PROB_MEANS,
    CALIBRATION_THRESHOLDS,
    THRESHOLDS,
    _fmt,
    calibrate_bundle,
    seg_loss,
    validate,
)

__all__ = [
    # the training loop (this module)
    "CKPT_VERSION",
    "TrainResult",
    "train",
    # scenes and tiles (poppyscan.train_inputs)
    "TrainInputs",
    "prepare_inputs",
    "split_scenes",
    # loss, validation, calibration (poppyscan.train_validate)
    "CALIBRATION_MIN_PROB_MEANS",
    "CALIBRATION_THRESHOLDS",
    "THRESHOLDS",
    "calibrate_bundle",
    "seg_loss",
    "validate",
]

log = logging.getLogger(__name__)

CKPT_VERSION = 1


@dataclass
class TrainResult:
    bundle_path: Path
    meta: BundleMeta
    history: list[dict[str, Any]]


def _lr_lambda(total: int, warmup: int) -> Callable[[int], float]:
    def f(step: int) -> float:
        if step < warmup:
            return (step + 1) / warmup
        prog = min(1.0, (step - warmup) / max(1, total - warmup))
        return 0.02 + 0.98 * 0.5 * (1 + np.cos(np.pi * prog))

    return f


def _atomic_save(obj: Any, path: Path) -> None:
    tmp = path.with_name(path.name + ".part")
    torch.save(obj, tmp)
    os.replace(tmp, path)

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
    inputs = prepare_inputs(sources, val_sources, cfg, gsd, arch, say)
    scenes, tr_scenes, val_scenes = inputs.scenes, inputs.train_scenes, inputs.val_scenes
    sampler, val_tiles, n_mined = inputs.sampler, inputs.val_tiles, inputs.n_mined
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
