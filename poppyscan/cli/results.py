"""``poppyscan results``: put detect runs and returned field results into the survey register."""

from __future__ import annotations

import math
from pathlib import Path

import click

from ..config import load_config
from ..errors import PoppyscanError
from .options import admin_options, parse_fields

CONFIG_OPTION = click.option(
    "--config",
    "config_path",
    type=click.Path(dir_okay=False),
    help="YAML config file (survey.register, survey.site_link_distance_m).",
)
REGISTER_OPTION = click.option(
    "--register",
    "register_path",
    type=click.Path(dir_okay=False),
    help="Survey register file (default: config survey.register).",
)


def resolve_register(config_path: str | None, register_path: str | None):
    """The config and the register path: ``--register`` wins over ``survey.register``."""
    config = load_config(config_path)
    return config, Path(register_path or config.survey.register)


@click.group("results")
def results() -> None:
    """Register detect runs and import field-verification results."""


@results.command("register")
@click.argument("run_dir", type=click.Path())
@click.option("--flight-date", help="Flight date YYYY-MM-DD (default: what run.json / plots.gpkg record).")
@admin_options("the admin fields of the run's tasks, else county,township,village")
@REGISTER_OPTION
@CONFIG_OPTION
def register_cmd(
    run_dir: str,
    flight_date: str | None,
    admin: str | None,
    admin_fields: str | None,
    admin_gcj02: bool,
    register_path: str | None,
    config_path: str | None,
) -> None:
    """Add the detect run RUN_DIR (plots, tasks, footprint) to the survey register. Idempotent.

    Pass the --admin options given to 'poppyscan tasks' to count plots and surveyed hectares by unit
    (--admin-fields defaults to the admin fields of the run's tasks; at most three, largest first).
    Registering again takes over new tasks, changed desk decisions and, with --admin, the units.
    """
    from ..survey import register_run

    config, register = resolve_register(config_path, register_path)
    summary = register_run(
        register,
        run_dir,
        flight_date=flight_date,
        admin=admin,
        admin_fields=parse_fields(admin_fields),
        admin_gcj02=admin_gcj02,
        link_distance_m=config.survey.site_link_distance_m,
    )
    click.echo(f"{register}: {summary.describe()}")


@results.command("import")
@click.argument("file", type=click.Path(dir_okay=False))
@click.option(
    "--layer", help="GeoPackage layer / XLSX sheet holding the tasks (default: tasks, else the first sheet)."
)
@click.option(
    "--max-distance",
    "max_distance_m",
    type=float,
    default=None,
    show_default=False,
    help="Reject on-site positions farther than this from the plot, in metres [default: 200].",
)
@click.option("--dry-run", is_flag=True, help="Validate and report, change nothing.")
@REGISTER_OPTION
@CONFIG_OPTION
def import_cmd(
    file: str,
    layer: str | None,
    max_distance_m: float | None,
    dry_run: bool,
    register_path: str | None,
    config_path: str | None,
) -> None:
    """Merge a returned task list (QField .gpkg, .csv or .xlsx) into the register by task_id.

    Valid rows are applied in one transaction; rejected rows are listed by row number and reason and
    the command then exits with status 1 so scripts notice. Importing the same file again changes nothing.
    """
    from ..errors import ConfigError
    from ..survey import DEFAULT_MAX_DISTANCE_M, import_results

    if max_distance_m is not None and not 0 < max_distance_m < math.inf:  # NaN too
        raise ConfigError(f"'--max-distance' must be a distance > 0 in metres, got {max_distance_m}: "
                          f"e.g. --max-distance {DEFAULT_MAX_DISTANCE_M:g}")
    _, register = resolve_register(config_path, register_path)
    report = import_results(
        register,
        file,
        layer=layer,
        dry_run=dry_run,
        max_distance_m=DEFAULT_MAX_DISTANCE_M if max_distance_m is None else max_distance_m,
    )
    click.echo(report.describe())
    if report.rejected and not dry_run:
        raise RejectedRowsError(
            f"{len(report.rejected)} of {report.n_rows} row(s) rejected (listed above); the valid "
            "rows were applied: fix the rejected rows and import the file again"
        )
    if report.rejected:
        raise RejectedRowsError(
            f"{len(report.rejected)} of {report.n_rows} row(s) would be rejected (listed above)"
        )


class RejectedRowsError(PoppyscanError):
    """Some rows of a results file were rejected (the valid ones were applied); exit status 1."""

    exit_code = 1


@results.command("export-labels")
@click.argument("out_dir", type=click.Path(file_okay=False))
@click.option("--year", type=int, help="Only flights of this year.")
@click.option("--overwrite", is_flag=True, help="Replace label files and scenes.csv already in OUT_DIR.")
@REGISTER_OPTION
@CONFIG_OPTION
def export_labels_cmd(out_dir: str, year: int | None, overwrite: bool, register_path: str | None,
                      config_path: str | None) -> None:
    """Write training labels from verified results: verified poppy as positives, false positives as hard
    negatives, unverified plots ignored; OUT_DIR/scenes.csv feeds 'poppyscan train'."""
    from ..survey.labels import export_training_labels

    _, register = resolve_register(config_path, register_path)
    click.echo(export_training_labels(register, out_dir, year=year, overwrite=overwrite).describe())
