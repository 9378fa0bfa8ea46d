"""``poppyscan retrain``: field labels from the survey register -> fine-tuned bundle -> held-out comparison
-> promotion only when the new bundle is better (see :mod:`poppyscan.retrain`)."""

from __future__ import annotations

import math

import click

from ..errors import ConfigError, InputError
from .train import training_options


@click.command("retrain")
@click.option(
    "--from-survey",
    "register_path",
    type=click.Path(),
    help="Survey register with field results (default: config survey.register).",
)
@click.option(
    "--current", required=True, type=click.Path(), help="The bundle in use: training starts from it."
)
@click.option(
    "--holdout",
    multiple=True,
    required=True,
    type=click.Path(),
    help="Held-out labelled scenes both bundles are scored on (repeatable; never trained on).",
)
@click.option(
    "--scenes",
    multiple=True,
    type=click.Path(),
    help="More labelled imagery to train on (scene dirs, CSV/YAML lists; repeatable).",
)
@click.option("--val", multiple=True, type=click.Path(), help="Explicit validation scenes (repeatable).")
@click.option(
    "--out",
    "out_dir",
    required=True,
    type=click.Path(file_okay=False),
    help="Work directory: labels/, train/ (new bundle in train/bundle), comparison.json/.txt.",
)
@click.option(
    "--promote-to",
    type=click.Path(file_okay=False),
    help="Install the new bundle here if it wins (must hold the --current bundle or not exist); "
    "the old one is kept as <dir>.bak-<time>. Without it nothing is installed.",
)
@click.option(
    "--min-f1-gain",
    type=float,
    default=0.0,
    show_default=True,
    help="New held-out object F1 must exceed the current one by more than this.",
)
@click.option(
    "--max-fp-increase",
    type=float,
    default=0.0,
    show_default=True,
    help="Allowed rise of held-out false plots per hectare.",
)
@click.option("--year", type=int, help="Only flights of this year from the register.")
@click.option("--config", "config_path", type=click.Path(), help="YAML config (train:, survey: sections).")
@click.option("--resume", is_flag=True, help="Continue an interrupted run in OUT.")
@click.option("--overwrite", is_flag=True, help="Start again in an existing OUT.")
@training_options
@click.option("--name", help="New bundle name (default: the current bundle's).")
@click.option("--model-version", "version", help="New bundle version (default: <current>+field<date>).")
@click.option("--device", type=click.Choice(["auto", "cpu", "cuda"]), default="auto", show_default=True)
@click.option(
    "--engine",
    type=click.Choice(["auto", "detect", "simple"]),
    default="auto",
    show_default=True,
    help="How held-out scenes are predicted: the detect pipeline or the small in-memory predictor.",
)
def retrain(
    register_path,
    current,
    holdout,
    scenes,
    val,
    out_dir,
    promote_to,
    min_f1_gain,
    max_fp_increase,
    year,
    config_path,
    resume,
    overwrite,
    name,
    version,
    device,
    engine,
    **opts,
):
    """Retrain from field results: export verified plots (poppy = positives, not_poppy = hard negatives),
    fine-tune --current on them plus --scenes, score both bundles on --holdout, and promote the new one
    to --promote-to only if its object F1 is higher and its false plots/ha are not."""
    from pathlib import Path

    from ..config import load_config
    from ..retrain import PromotionRule
    from ..retrain import retrain as run_retrain

    if resume and overwrite:
        raise ConfigError("'--resume' and '--overwrite' exclude each other: resume a run or start it again")
    for flag, value, ok, span in (("--min-f1-gain", min_f1_gain, 0 <= min_f1_gain < 1, "in [0, 1)"),
                                  ("--max-fp-increase", max_fp_increase, 0 <= max_fp_increase < math.inf,
                                   ">= 0 (false plots per hectare)")):
        if not ok:  # NaN too
            raise ConfigError(f"'{flag}' must be a number {span}, got {value}")
    overrides = {f"train.{k}": v for k, v in opts.items()}  # the training_options
    config = load_config(config_path, overrides)
    register = Path(register_path or config.survey.register)
    if not register.is_file():
        given = "--from-survey" if register_path else "config survey.register (the default register)"
        what = "is not a file" if register.exists() else "does not exist"
        raise InputError(f"survey register '{register}' ({given}) {what}; pass the register with field "
                         "results as --from-survey REGISTER.gpkg")
    result = run_retrain(
        register,
        current,
        list(holdout),
        out_dir,
        scenes=list(scenes),
        val=list(val) or None,
        promote_to=promote_to,
        config=config.train,
        rule=PromotionRule(min_f1_gain=min_f1_gain, max_fp_per_ha_increase=max_fp_increase),
        year=year,
        resume=resume,
        overwrite=overwrite,
        name=name,
        version=version,
        device=device,
        engine=engine,
        progress=click.echo,
    )
    click.echo(result.messages[-1].rstrip())
    click.echo(f"report: {Path(out_dir) / 'comparison.json'}, {Path(out_dir) / 'comparison.txt'}")
