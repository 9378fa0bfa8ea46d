"""``poppyscan tasks RUN_DIR``: thin wrapper over :func:`poppyscan.tasks.build_tasks`.

Bad values (a missing run directory, a boundary file without the named fields, a malformed --start)
are one-line :class:`~poppyscan.errors.PoppyscanError` messages, not click usage text.
"""

from __future__ import annotations

import click

from .options import admin_options, parse_fields


@click.command("tasks")
@click.argument("run_dir", metavar="RUN_DIR")
@admin_options("config tasks.admin_fields, county,township,village")
@click.option("--start", metavar="LON,LAT", help="WGS84 point where each unit's route starts (team base).")
@click.option(
    "--split-by",
    "split_by",
    metavar="FIELD",
    help="Write one package per value of FIELD (e.g. township) under RUN_DIR/units/.",
)
@click.option(
    "--include-rejected",
    is_flag=True,
    default=None,
    help="Also make tasks for plots rejected at the desk review.",
)
@click.option("--config", "config_file", metavar="FILE", help="YAML config with the keys to change.")
@click.option("-q", "--quiet", is_flag=True, help="No summary line.")
@click.pass_context
def tasks(
    ctx: click.Context,
    run_dir: str,
    admin: str | None,
    admin_fields: str | None,
    admin_gcj02: bool,
    start: str | None,
    split_by: str | None,
    include_rejected: bool | None,
    config_file: str | None,
    quiet: bool,
) -> None:
    """Turn a detect run into field-verification tasks: GPKG layer + QGIS styles, CSV, XLSX, KMZ, GPX,
    GeoJSON, image chips and printable work orders."""
    from ..config import load_config
    from ..tasks import build_tasks

    quiet = quiet or bool((ctx.obj or {}).get("quiet"))
    config = load_config(config_file)
    fields = parse_fields(admin_fields)
    summary = build_tasks(
        run_dir,
        config=config,
        admin=admin,
        admin_fields=fields,
        start=start,
        split_by=split_by,
        include_rejected=include_rejected or None,
        admin_gcj02=admin_gcj02,
    )
    if not quiet:
        units = f", {len(summary.units)} unit(s)" if len(summary.units) > 1 or split_by else ""
        outside = f", {summary.n_outside} outside every admin unit" if admin else ""
        chips = f", {summary.chips_missing} without an image chip" if summary.chips_missing else ""
        click.echo(
            f"{summary.n_tasks} task(s) from {summary.n_plots} plot(s) ({summary.n_rejected} rejected at "
            f"the desk, {summary.n_criminal} criminal-size){units}{outside}{chips} -> {summary.run_dir}"
        )
