"""``poppyscan stats``: statistics from the survey register for supervisors' reports."""

from __future__ import annotations

import click

from .results import CONFIG_OPTION, REGISTER_OPTION, resolve_register


@click.command("stats")
@click.option(
    "--by",
    type=click.Choice(["county", "township", "village", "all"]),
    default="county",
    show_default=True,
    help="Admin level to group by ('all' = one row per year).",
)
@click.option(
    "--year", type=int, help="Only this flight year (year-on-year change still against the year before)."
)
@click.option(
    "--out",
    "out_dir",
    type=click.Path(file_okay=False),
    help="Folder for stats_by_<level>.csv/.xlsx and PNG charts.",
)
@click.option("--no-charts", is_flag=True, help="Skip the PNG charts.")
@click.option("--overwrite", is_flag=True, help="Replace existing output files.")
@REGISTER_OPTION
@CONFIG_OPTION
def stats(
    by: str,
    year: int | None,
    out_dir: str | None,
    no_charts: bool,
    overwrite: bool,
    register_path: str | None,
    config_path: str | None,
) -> None:
    """Plots found, checked, verified, false positives, eradicated, areas, precision and y-o-y change."""
    from ..survey.report import format_table, write_outputs
    from ..survey.stats import compute_stats

    _, register = resolve_register(config_path, register_path)
    table = compute_stats(register, by=by, year=year)
    click.echo(format_table(table))
    if out_dir:
        paths = write_outputs(table, out_dir, overwrite=overwrite, charts=not no_charts)
        click.echo("wrote " + ", ".join(str(p) for p in paths.values()))
