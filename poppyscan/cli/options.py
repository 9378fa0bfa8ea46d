"""Command-line options shared by several commands.

``poppyscan tasks`` and ``poppyscan results register`` take the same admin boundary options, so a run's
units are named the same way in its tasks and in the survey register.
"""

from __future__ import annotations

from collections.abc import Callable

import click


def admin_options(fields_default: str) -> Callable[[Callable], Callable]:
    """Decorator adding ``--admin BOUNDARIES``, ``--admin-fields F1,F2,...`` and ``--admin-gcj02``.

    Parameters
    ----------
    fields_default
        What ``--admin-fields`` defaults to, for its help text.
    """
    options = [
        click.option(
            "--admin",
            "admin",
            metavar="BOUNDARIES",
            help="Admin boundary layer (GPKG/SHP/GeoJSON, any CRS, e.g. CGCS2000 EPSG:4490/4547).",
        ),
        click.option(
            "--admin-fields",
            "admin_fields",
            metavar="F1,F2,...",
            help=f"Name fields to copy from BOUNDARIES, largest unit first [default: {fields_default}].",
        ),
        click.option(
            "--admin-gcj02",
            "admin_gcj02",
            is_flag=True,
            help="BOUNDARIES were digitised on Amap/Tencent (GCJ-02 lon/lat, whatever the label): "
            "shift them back to WGS84 before the join.",
        ),
    ]

    def decorate(command: Callable) -> Callable:
        for option in reversed(options):
            command = option(command)
        return command

    return decorate


def parse_fields(text: str | None) -> list[str] | None:
    """``"县, 乡镇,村"`` -> ``["县", "乡镇", "村"]``; None stays None."""
    if text is None:
        return None
    return [f.strip() for f in text.split(",") if f.strip()]
