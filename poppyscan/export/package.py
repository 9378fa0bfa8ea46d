"""Write a full task package (every format) for a run, and one per unit with ``split_by``.

Layout written by :func:`write_all`::

    RUN_DIR/plots.gpkg            + layer ``tasks`` and ``layer_styles`` (``plots`` untouched)
    RUN_DIR/tasks.csv, tasks.xlsx, tasks.kmz, tasks.gpx, plots.geojson
    RUN_DIR/chips/<task_code>.jpg
    RUN_DIR/work_orders/<unit>.html
    RUN_DIR/probability.qml       (and probability_N.qml: one beside each probability raster of the run)
    RUN_DIR/units/<unit>/         (with split_by) plots.gpkg (only the unit's plots + tasks), tasks.csv,
                                  tasks.xlsx, tasks.kmz, tasks.gpx, plots.geojson, work_order.html, chips/

The package is all new or all old: every output is built in a hidden staging folder in ``RUN_DIR``
first and only then moved into place together (:func:`write_all`), so a run that fails (a bad value, a
full disk) leaves the previous package whole rather than a mix of two runs. Without ``split_by`` a stale
``units/`` from an earlier split run is removed along with the move. Text for XML formats (XLSX, KML,
GPX) and the HTML work orders goes through :func:`~poppyscan.export.xmltext.xml_safe`.
"""

from __future__ import annotations

import logging
import re
import shutil
import tempfile
from pathlib import Path

import geopandas as gpd
import pandas as pd

from .. import run_inputs
from ..config import TasksConfig
from ..fsutil import file_lock, replace_together
from . import chips as chips_mod
from .csv_xlsx import write_csv, write_xlsx
from .geojson import write_geojson
from .gpkg_styles import write_gpkg, write_probability_style
from .gpx import write_gpx
from .kmz import write_kmz
from .sheet import write_sheet
from .xmltext import xml_safe, xml_safe_frame

log = logging.getLogger(__name__)

PLOT_TASK_COLUMNS = ["task_id", "task_code", "unit", "route_seq", "priority", "priority_class", "status"]


def safe_name(unit: str) -> str:
    """File-system-safe folder/file name for a unit (Chinese kept; separators and reserved chars replaced)."""
    name = re.sub(r'[\\/:*?"<>|\s\x00-\x1f]+', "_", str(unit)).strip("._")
    return name[:80] or "unit"


def _unit_dirs(units: list[str]) -> dict[str, str]:
    out: dict[str, str] = {}
    used: set[str] = set()
    for u in units:
        base = name = safe_name(u)
        k = 2
        while name.lower() in used:
            name = f"{base}_{k}"
            k += 1
        used.add(name.lower())
        out[u] = name
    return out


def chip_requests(
    run_dir: Path, run: dict, plots: gpd.GeoDataFrame, tasks: gpd.GeoDataFrame
) -> list[chips_mod.ChipRequest]:
    """One chip request per task, cut from the input its plot was detected on (:mod:`..run_inputs`).

    A task whose plot no input fits, or whose mosaic file is missing, gets none, with a warning.
    """
    inputs = run_inputs.read_inputs(run_dir, run, plots["mosaic"] if "mosaic" in plots else ())
    source = dict(zip(plots["plot_id"], run_inputs.plot_inputs(inputs, plots), strict=True))
    geom_by_plot = dict(zip(plots["plot_id"], plots.geometry, strict=True))
    requests, unmatched, missing = [], [], {}
    for code, pid in zip(tasks["task_code"], tasks["plot_id"], strict=True):
        item, geom = source.get(pid), geom_by_plot.get(pid)
        if item is None or geom is None:
            unmatched.append(code)
        elif not item.exists:
            missing.setdefault(item.path, []).append(code)
        else:
            requests.append(chips_mod.ChipRequest(code, geom, plots.crs, item.path, code))
    if unmatched:
        log.warning("no chip for %d task(s) (%s): no input mosaic in run.json fits the plot (by its "
                    "mosaic_index, file name and position)", len(unmatched), chips_mod.list_codes(unmatched))
    for path, codes in missing.items():
        log.warning("no chip for %d task(s) (%s): mosaic '%s' not found; put it back there or beside the "
                    "run folder", len(codes), chips_mod.list_codes(codes), path)
    return requests


_PROBABILITY = re.compile(r"probability(_[0-9]+)?\.tif")


def probability_rasters(run_dir: Path, run: dict) -> list[Path]:
    """The run's probability rasters that exist: ``run.json`` ``outputs.probability`` (one per input
    mosaic), then any other ``probability.tif`` / ``probability_N.tif`` in the run folder, N in order."""
    outputs = run.get("outputs")
    names = outputs.get("probability") if isinstance(outputs, dict) else None
    listed = [run_dir / Path(str(n)).name for n in names] if isinstance(names, list) else []
    found = sorted(
        (p for p in run_dir.glob("probability*.tif") if _PROBABILITY.fullmatch(p.name)),
        key=lambda p: int(p.stem.partition("_")[2] or 1),
    )
    return [p for p in dict.fromkeys(listed + found) if p.is_file()]


def plots_with_tasks(plots: gpd.GeoDataFrame, tasks: gpd.GeoDataFrame) -> gpd.GeoDataFrame:
    """The plots that have tasks, with the task's key attributes joined on ``plot_id``."""
    extra = [
        c
        for c in PLOT_TASK_COLUMNS + tasks.attrs.get("admin_columns", []) + ["admin_status"]
        if c not in plots.columns or c == "plot_id"
    ]
    sub = plots[plots["plot_id"].isin(tasks["plot_id"])]
    merged = sub.merge(pd.DataFrame(tasks[["plot_id", *extra]]), on="plot_id", how="left")
    return gpd.GeoDataFrame(
        merged.sort_values(["unit", "route_seq"]).reset_index(drop=True),
        geometry=plots.geometry.name,
        crs=plots.crs,
    )


def write_package(
    dest: Path,
    tasks: gpd.GeoDataFrame,
    plots: gpd.GeoDataFrame,
    *,
    formats: set[str],
    title: str,
    chip_files: dict[str, Path],
) -> list[Path]:
    """Write the tabular/vector formats of one package into ``dest``; return the paths written."""
    files: list[Path] = []
    plots_t = plots_with_tasks(plots, tasks)
    prefixes = tasks.attrs.get("unit_prefixes", {})
    if "gpkg" in formats:
        files.append(write_gpkg(dest / "plots.gpkg", tasks, plots=plots_t))
    if "csv" in formats:
        files.append(write_csv(tasks, dest / "tasks.csv"))
    if "xlsx" in formats:
        files.append(write_xlsx(tasks, dest / "tasks.xlsx", title=title))
    if "kmz" in formats or "gpx" in formats or "geojson" in formats:
        plots_wgs84 = plots_t.to_crs("EPSG:4326") if plots_t.crs is not None else plots_t
    if "kmz" in formats:  # KML is XML: strings without the control characters XML 1.0 forbids
        kml_tasks, kml_plots = xml_safe_frame(tasks), xml_safe_frame(plots_wgs84)
        fields = [c for c in kml_tasks.columns if c != kml_tasks.geometry.name]
        files.append(
            write_kmz(
                kml_tasks, kml_plots, dest / "tasks.kmz", title=xml_safe(title), chip_files=chip_files,
                fields=fields,
            )
        )
    if "gpx" in formats:
        files.append(write_gpx(tasks, dest / "tasks.gpx", title=title, unit_labels=prefixes))
    if "geojson" in formats:
        files.append(write_geojson(plots_wgs84, dest / "plots.geojson"))
    return files


def _sheet(
    tasks: gpd.GeoDataFrame, path: Path, unit: str, run_name: str, chip_files: dict[str, Path], start
) -> Path:
    return write_sheet(
        tasks[tasks["unit"] == unit],
        path,
        unit=unit,
        run_name=run_name,
        admin_columns=[c for c in tasks.attrs.get("admin_columns", []) if not c.endswith("_code")],
        chips=chip_files,
        start=start,
    )


def write_all(
    run_dir: Path,
    tasks: gpd.GeoDataFrame,
    plots: gpd.GeoDataFrame,
    run: dict,
    *,
    cfg: TasksConfig,
    split_by: str | None,
    start,
) -> tuple[list[Path], int]:
    """Write every output of ``poppyscan tasks`` into ``run_dir``; return (files, chips missing).

    All or nothing: every output is first built in a hidden staging folder in ``run_dir``
    (``.tasks.*.part``), ``plots.gpkg`` last (a copy of the run's with the ``tasks`` layer, made while
    holding its :func:`~poppyscan.fsutil.file_lock`, so a review decision saved meanwhile is not lost);
    then, still under the lock, they are moved into place together (:func:`~poppyscan.fsutil.
    replace_together`). A failure before that leaves the previous package exactly as it was.
    """
    formats = set(cfg.formats)
    run_name = run_dir.resolve().name
    units = list(dict.fromkeys(tasks["unit"]))
    dirs = _unit_dirs(units)
    gpkg = run_dir / "plots.gpkg"
    stage = Path(tempfile.mkdtemp(prefix=".tasks.", suffix=".part", dir=run_dir))
    try:
        chip_files = chips_mod.write_chips(
            chip_requests(run_dir, run, plots, tasks), stage / "chips", chip_size_m=cfg.chip_size_m,
            chip_px=cfg.chip_px,
        )
        missing = len(tasks) - len(chip_files)
        if missing:
            log.warning("%d of %d task(s) have no image chip (see the warnings above)", missing, len(tasks))
        tasks = tasks.copy()
        tasks["chip"] = [f"chips/{c}.jpg" if c in chip_files else "" for c in tasks["task_code"]]
        staged = write_package(
            stage,
            tasks,
            plots,
            formats=formats - {"gpkg"},  # plots.gpkg last, under its lock
            title=f"poppyscan tasks {run_name}",
            chip_files=chip_files,
        )
        for raster in probability_rasters(run_dir, run):
            qml = write_probability_style(raster, stage / raster.with_suffix(".qml").name)
            if qml:
                staged.append(qml)
        if "html" in formats:
            (stage / "work_orders").mkdir()
            for u in units:
                sheet = stage / "work_orders" / f"{dirs[u]}.html"
                staged.append(_sheet(tasks, sheet, u, run_name, chip_files, start))
        if split_by:
            (stage / "units").mkdir()  # replaces the old units/ even when no unit has a task
            for u in units:
                d = stage / "units" / dirs[u]
                (d / "chips").mkdir(parents=True)
                sub = tasks[tasks["unit"] == u].copy()
                sub.attrs = dict(tasks.attrs)
                own = {c: chip_files[c] for c in sub["task_code"] if c in chip_files}
                for p in own.values():
                    shutil.copy2(p, d / "chips" / p.name)
                write_package(
                    d,
                    sub,
                    plots,
                    formats=formats,
                    title=f"poppyscan tasks {run_name} {u}",
                    chip_files=own,
                )
                if "html" in formats:
                    _sheet(sub, d / "work_order.html", u, run_name, own, start)
            staged += sorted(p for p in (stage / "units").rglob("*") if p.is_file())
        stale = [run_dir / "units"] if not split_by and (run_dir / "units").exists() else []
        if stale:
            log.info("removing stale '%s' from an earlier --split-by run", run_dir / "units")
        staged += sorted((stage / "chips").glob("*.jpg"))
        with file_lock(gpkg):
            if "gpkg" in formats:
                staged.insert(0, write_gpkg(stage / "plots.gpkg", tasks, base=gpkg, lock=False))
            replace_together([(p, run_dir / p.name) for p in sorted(stage.iterdir())], remove=stale)
    finally:
        shutil.rmtree(stage, ignore_errors=True)
    return [run_dir / p.relative_to(stage) for p in staged], missing
