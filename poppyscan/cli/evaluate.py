"""``poppyscan evaluate``: score detected plots against truth polygons (object P/R/F1, IoU, centroids)."""

from __future__ import annotations

import json
from pathlib import Path

import click

from ..errors import ConfigError


@click.command("evaluate")
@click.argument("pred", required=False, type=click.Path())
@click.argument("truth", required=False, type=click.Path())
@click.option("--mosaic", type=click.Path(), help="Mosaic whose valid area gives false plots per hectare.")
@click.option("--model", "model", type=click.Path(), help="Run this bundle over --scenes and score it.")
@click.option(
    "--scenes",
    multiple=True,
    type=click.Path(),
    help="Labelled scenes for --model (scene dirs, dirs of them, CSV/YAML lists); repeatable.",
)
@click.option("--threshold", type=float, help="Probability threshold for --model (default: the bundle's).")
@click.option("--min-prob-mean", type=float,
              help="Plot decision for --model: regions with a lower mean probability are dropped "
                   "(default: the bundle's; with its plot scorer: none, and this a floor besides the score).")
@click.option("--min-plot-score", type=float,
              help="With --model and its plot scorer: a region is a plot when its score reaches this "
                   "(default: the bundle's plot_scorer_cut).")
@click.option("--plot-scorer/--no-plot-scorer", default=True, show_default=True,
              help="With --model: use the bundle's plot scorer when it has one, as detect does.")
@click.option(
    "--min-area",
    "min_area_m2",
    type=float,
    default=1.0,
    show_default=True,
    help="Drop predicted plots smaller than this (m²) with --model.",
)
@click.option("--iou-min", type=float, default=0.25, show_default=True, help="Match IoU for a true positive.")
@click.option("--tta", is_flag=True, help="With --model: flip test-time augmentation, as detect --tta.")
@click.option("--min-gsd", "min_gsd_m", type=float,
              help="With --model: run scenes finer than the model at their own GSD down to this (m/px), as "
                   "detect --min-gsd (default: the bundle's).")
@click.option("--device", type=click.Choice(["auto", "cpu", "cuda"]), default="auto", show_default=True)
@click.option("--threads", type=int, default=0, show_default=True, help="CPU threads (0 = all).")
@click.option("--json", "json_out", type=click.Path(dir_okay=False), help="Write the JSON report here.")
@click.option(
    "--errors",
    "errors_out",
    type=click.Path(dir_okay=False),
    help="Write the missed true plots and the false plots here (GeoPackage, layers 'missed' and 'false', "
    "WGS84) to look at in QGIS.",
)
@click.option("--overwrite", is_flag=True, help="Replace an existing --json / --errors file.")
def evaluate(
    pred, truth, mosaic, model, scenes, threshold, min_prob_mean, min_plot_score, plot_scorer, min_area_m2,
    iou_min, tta, min_gsd_m, device, threads, json_out, errors_out, overwrite,
):
    """Score PRED (plots.gpkg or a detect run directory) against TRUTH (truth.gpkg), or run --model over
    --scenes. Prints a table; --json writes the full report."""
    from ..eval_io import format_table
    from ..evaluate import evaluate_files, evaluate_scenes
    from ..fsutil import atomic_path, check_writable

    if not 0 < iou_min <= 1:
        raise ConfigError(f"'--iou-min' must be in (0, 1], got {iou_min}")
    if threshold is not None and not 0 < threshold < 1:
        raise ConfigError(f"'--threshold' must be in (0, 1), got {threshold}")
    if min_prob_mean is not None and not 0 <= min_prob_mean < 1:
        raise ConfigError(f"'--min-prob-mean' must be in [0, 1), got {min_prob_mean}")
    if min_plot_score is not None and not 0 < min_plot_score < 1:
        raise ConfigError(f"'--min-plot-score' must be in (0, 1), got {min_plot_score}")
    if json_out:
        check_writable(json_out, overwrite)
    if errors_out:
        if Path(errors_out).suffix.lower() != ".gpkg":
            raise ConfigError(f"'--errors' writes a GeoPackage: give a .gpkg path, not '{errors_out}'")
        check_writable(errors_out, overwrite)
    scores: list | None = [] if errors_out else None  # per-scene scores, for --errors only
    if model or scenes:
        if not (model and scenes) or pred or truth:
            raise ConfigError(
                "'--model' needs '--scenes' (and no PRED/TRUTH arguments); or give PRED and TRUTH"
            )
        report = evaluate_scenes(
            model,
            list(scenes),
            device=device,
            threads=threads,
            threshold=threshold,
            min_prob_mean=min_prob_mean,
            min_area_m2=min_area_m2,
            iou_min=iou_min,
            progress=None,
            scores=scores,
            tta=tta,
            min_gsd_m=min_gsd_m,
            plot_scorer=plot_scorer,
            min_plot_score=min_plot_score,
        )
        rows = [(s["scene"], s) for s in report["scenes"]]
        rows += [(k, report[k]) for k in ("poppy_scenes", "poppy_free_scenes", "total") if report[k]]
    else:
        for flag, given in (("--tta", tta), ("--min-gsd", min_gsd_m is not None),
                            ("--min-plot-score", min_plot_score is not None),
                            ("--no-plot-scorer", not plot_scorer)):
            if given:
                raise ConfigError(f"'{flag}' applies to --model runs; a detect run's plots are scored as "
                                  "they are")
        if not (pred and truth):
            raise ConfigError(
                "give PRED (plots.gpkg or a detect run directory) and TRUTH (truth.gpkg), "
                "or --model BUNDLE --scenes DIR"
            )
        report = evaluate_files(pred, truth, mosaic=mosaic, iou_min=iou_min, scores=scores)
        rows = [(Path(pred).name, report)]
    click.echo(format_table(rows))
    if json_out:
        with atomic_path(json_out, overwrite) as tmp:
            tmp.write_text(json.dumps(report, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
        click.echo(f"report written to {json_out}")
    if errors_out:
        from ..eval_io import write_error_layers

        write_error_layers(errors_out, scores, overwrite)
        n_miss = sum(sc.fn for _, sc in scores)
        n_false = sum(sc.fp for _, sc in scores)
        click.echo(f"{n_miss} missed and {n_false} false plot(s) written to {errors_out}")
