"""``poppyscan detect``: thin wrapper over :func:`poppyscan.detect.detect`.

Option values are checked here and refused with a one-line :class:`~poppyscan.errors.ConfigError`
naming the option (exit code 2), not with click's multi-line usage message.
"""

from __future__ import annotations

import click

from ..errors import ConfigError


class _Checked(click.ParamType):
    """A click type whose conversion errors are one-line ConfigErrors quoting the option."""

    def __init__(self, name: str, convert, describe: str) -> None:  # noqa: ANN001
        self.name = name
        self._convert = convert
        self._describe = describe

    def convert(self, value, param, ctx):  # noqa: ANN001, ANN201
        opt = param.opts[0] if param is not None and param.opts else self.name
        try:
            out = self._convert(value)
        except (TypeError, ValueError):
            out = None
        if out is None:
            raise ConfigError(f"'{opt}' must be {self._describe}, got {value!r}")
        return out


def _probability(value):  # noqa: ANN001, ANN202
    p = float(value)
    return p if 0 < p < 1 else None


def _fraction(value):  # noqa: ANN001, ANN202
    p = float(value)
    return p if 0 <= p < 1 else None


def _gsd(value):  # noqa: ANN001, ANN202
    g = float(value)
    return g if 0.005 <= g <= 0.5 else None


def _device(value):  # noqa: ANN001, ANN202
    return value if value in ("auto", "cpu", "cuda") else None


def _rows(value):  # noqa: ANN001, ANN202
    n = int(value)
    return n if n >= 0 else None


@click.command("detect")
@click.argument("mosaics", nargs=-1, metavar="MOSAIC [MOSAIC ...]")
@click.option("--out", "out", metavar="DIR",
              help="Run directory to write (plots.gpkg, probability.tif, run.json).")
@click.option("--model", metavar="BUNDLE", help="Model bundle directory (default: config detect.model).")
@click.option("--config", "config_file", metavar="FILE", help="YAML config with the keys to change.")
@click.option("--device", type=_Checked("device", _device, "auto, cpu or cuda"),
              help="auto (default), cpu (ONNX Runtime) or cuda (torch).")
@click.option("--threshold", type=_Checked("threshold", _probability, "a probability in (0, 1)"), metavar="P",
              help="Poppy probability cut for plot outlines (default: the bundle's).")
@click.option("--min-prob-mean", type=_Checked("min-prob-mean", _fraction, "a probability in [0, 1)"),
              metavar="P", help="Report an outlined region only if its mean probability reaches P "
                                "(default: the bundle's; 0 = every region; with a plot scorer: none, and P "
                                "a floor besides the score).")
@click.option("--min-plot-score", type=_Checked("min-plot-score", _probability, "a score in (0, 1)"),
              metavar="S", help="With the bundle's plot scorer: report a region if its score reaches S "
                                "(default: the bundle's plot_scorer_cut; lower finds more plots, and more "
                                "false ones).")
@click.option("--plot-scorer/--no-plot-scorer", default=None,
              help="Judge outlined regions with the bundle's plot scorer when it has one (default: config "
                   "detect.plot_scorer, on); off = the mean-probability rule alone.")
@click.option("--min-gsd", type=_Checked("min-gsd", _gsd, "a pixel size in [0.005, 0.5] m"), metavar="M",
              help="Run mosaics finer than the model's GSD at their own GSD down to M m/px, M between half "
                   "the model's GSD and its GSD (default: the bundle's min_gsd_m; the model's GSD = "
                   "resample every mosaic to it).")
@click.option("--tta/--no-tta", default=None,
              help="Average each tile's prediction with that of its mirror image (flip test-time "
                   "augmentation): fewer false alarms, 1.8x the run time (default: config detect.tta, off).")
@click.option("--overwrite", is_flag=True, help="Replace an existing run directory.")
@click.option("--resume", is_flag=True,
              help="Continue an interrupted run of --out from its finished mosaics and bands "
                   "(same inputs, model and config).")
@click.option("--scheduler", metavar="ADDRESS",
              help="Run the mosaics on a Dask cluster, e.g. tcp://10.0.0.5:8786 "
                   "(default: config detect.scheduler).")
@click.option("--band-rows", type=_Checked("band-rows", _rows, "a whole number of rows >= 0"), metavar="N",
              help="Cut mosaics taller than N model-GSD rows into row bands: units of work for --resume "
                   "and Dask tasks; 0 = whole mosaics (default: config detect.band_rows, 16384).")
@click.option("-q", "--quiet", is_flag=True, help="No progress bar, no summary line.")
@click.pass_context
def detect(ctx: click.Context, mosaics: tuple[str, ...], out: str | None, model: str | None,
           config_file: str | None, device: str | None, threshold: float | None,
           min_prob_mean: float | None, min_plot_score: float | None, plot_scorer: bool | None,
           min_gsd: float | None, tta: bool | None, overwrite: bool,
           resume: bool, scheduler: str | None, band_rows: int | None, quiet: bool) -> None:
    """Detect poppy plots in one or more orthomosaics of a flight (overlaps are merged)."""
    from ..config import load_config
    from ..detect import detect as run_detect
    from ..errors import InputError

    quiet = quiet or bool((ctx.obj or {}).get("quiet"))
    if quiet:
        import logging

        logging.getLogger("poppyscan").setLevel(logging.WARNING)
    if not out:
        raise ConfigError("'--out' is required: pass the run directory to write, e.g. --out runs/flight1")
    if not mosaics:
        raise InputError("no MOSAIC given: pass one or more orthomosaic files")
    config = load_config(config_file, {"detect.model": model, "detect.device": device,
                                       "detect.threshold": threshold, "detect.min_prob_mean": min_prob_mean,
                                       "detect.min_gsd_m": min_gsd, "detect.min_plot_score": min_plot_score,
                                       "detect.plot_scorer": plot_scorer,
                                       "detect.scheduler": scheduler, "detect.tta": tta,
                                       "detect.band_rows": band_rows})
    summary = run_detect(list(mosaics), out, config=config, overwrite=overwrite, progress=not quiet,
                         resume=resume)
    if not quiet:
        click.echo(f"{summary.plots} plots ({summary.plots_over_500} over {config.detect.criminal_plants} "
                   f"plants) in {summary.mosaics} mosaic(s), {summary.hectares:.2f} ha, "
                   f"{summary.seconds:.1f} s -> {summary.run_dir}")
