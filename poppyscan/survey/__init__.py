"""The survey register: flights, plots, sites across years, field tasks and their results, statistics.

One GeoPackage file per office (config ``survey.register``), written with ``sqlite3``:

>>> from poppyscan.survey import register_run, import_results, compute_stats
>>> register_run("register.gpkg", "runs/2026-04-18")              # doctest: +SKIP
>>> import_results("register.gpkg", "returned/tasks.csv")         # doctest: +SKIP
>>> compute_stats("register.gpkg", by="township", year=2026)      # doctest: +SKIP
"""

from .register import RegisterSummary, register_run
from .results import DEFAULT_MAX_DISTANCE_M, ImportReport, RejectedRow, import_results
from .schema import RESULT_VALUES, SCHEMA_VERSION, connect
from .stats import StatsTable, compute_stats

__all__ = [
    "DEFAULT_MAX_DISTANCE_M",
    "ImportReport",
    "RESULT_VALUES",
    "RegisterSummary",
    "RejectedRow",
    "SCHEMA_VERSION",
    "StatsTable",
    "compute_stats",
    "connect",
    "import_results",
    "register_run",
]
