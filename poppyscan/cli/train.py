"""``poppyscan train`` (train or fine-tune a model bundle) and ``poppyscan export-onnx`` (re-export ONNX)."""

from __future__ import annotations

import click

from ..errors import ConfigError

_OVERRIDES = (
    "arch",
    "gsd_m",
    "tile_size",
    "epochs",
    "steps_per_epoch",
    "batch_size",
    "lr",
    "seed",
    "val_fraction",
    "pretrained",
)


# Training hyper-parameters shared by `train` and `retrain`; each overrides the `train.<name>` config key.
_TRAINING_OPTIONS = (
    click.option("--tile-size", type=int, help="Training tile size, px."),
    click.option("--epochs", type=int, help="Epochs."),
    click.option("--steps-per-epoch", type=int, help="Optimiser steps per epoch."),
    click.option("--batch-size", type=int, help="Tiles per step."),
    click.option("--lr", type=float, help="Peak learning rate (AdamW, warm-up then cosine)."),
    click.option("--seed", type=int, help="Seed for the split, sampling and initialisation."),
    click.option(
        "--val-fraction", type=float, help="Share of scenes held out for validation (split by scene)."
    ),
)


def training_options(command):  # noqa: ANN001, ANN201
    """Add the shared training hyper-parameter options to a click command."""
    for option in reversed(_TRAINING_OPTIONS):
        command = option(command)
    return command


@click.command("train")
@click.argument("sources", nargs=-1, required=True, type=click.Path())
@click.option(
    "--out",
    "out_dir",
    required=True,
    type=click.Path(file_okay=False),
    help="Run directory: checkpoints/, history.jsonl and the final bundle/.",
)
@click.option("--config", "config_path", type=click.Path(), help="YAML config (its train: section is used).")
@click.option(
    "--bundle-out",
    type=click.Path(file_okay=False),
    help="Also write the final bundle here; an existing bundle is replaced only with --overwrite, and never "
    "a directory that is not a bundle.",
)
@click.option(
    "--init", "init_bundle", type=click.Path(), help="Fine-tune from this bundle (keeps its arch and GSD)."
)
@click.option(
    "--val",
    "val_sources",
    multiple=True,
    type=click.Path(),
    help="Explicit validation scenes (repeatable); default: --val-fraction of SOURCES, split by scene.",
)
@click.option("--resume", is_flag=True, help="Continue from OUT/checkpoints/last.pt.")
@click.option(
    "--overwrite",
    is_flag=True,
    help="Start again in an existing OUT directory; replace a --bundle-out bundle.",
)
@click.option("--arch", help="Network: unet_mnv3s (default), unet_mnv3l, lraspp_mnv3l.")
@click.option(
    "--gsd", "gsd_m", type=float, help="Model ground pixel size, m/px (training data is resampled)."
)
@training_options
@click.option(
    "--pretrained/--no-pretrained",
    default=None,
    help="ImageNet backbone from the local torch cache (never downloaded).",
)
@click.option("--name", default="poppyscan-custom", show_default=True, help="Bundle name.")
@click.option("--model-version", "version", default="0.1.0", show_default=True, help="Bundle version string.")
def train(
    sources,
    out_dir,
    config_path,
    bundle_out,
    init_bundle,
    val_sources,
    resume,
    overwrite,
    name,
    version,
    **opts,
):
    """Train a model bundle on SOURCES: scene directories (mosaic.tif + truth.gpkg), directories of them,
    CSV/YAML scene lists (columns mosaic, labels) or GeoTIFFs (a GeoTIFF without labels is poppy-free)."""
    from ..config import load_config
    from ..train import train as run_train

    if resume and overwrite:
        raise ConfigError("'--resume' and '--overwrite' exclude each other: resume a run or start it again")
    overrides = {f"train.{k}": v for k, v in opts.items() if k in _OVERRIDES}
    cfg = load_config(config_path, overrides).train
    result = run_train(
        list(sources),
        out_dir,
        cfg,
        resume=resume,
        overwrite=overwrite,
        init=init_bundle,
        bundle_out=bundle_out,
        val_sources=list(val_sources) or None,
        name=name,
        version=version,
        progress=click.echo,
    )
    m = result.meta.metrics.get("validation_tiles") or {}
    click.echo(
        f"done: {result.bundle_path} threshold {result.meta.threshold:.2f}"
        + (f", validation pixel IoU {m['pixel_iou']:.3f}, object F1 {m['f1'] or 0:.3f}" if m else "")
    )


@click.command("export-onnx")
@click.argument("bundle", type=click.Path())
def export_onnx(bundle):
    """Re-export BUNDLE/model.onnx from its torch weights (model.pt)."""
    from ..bundle_io import reexport_onnx

    click.echo(f"wrote {reexport_onnx(bundle)}")
