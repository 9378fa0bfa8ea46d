"""Real-file fixtures for the survey tests: detect run directories and returned field-result files.

A run directory is written the way ``poppyscan detect`` + ``poppyscan tasks`` write it
(docs/INTERFACES.md, issue 5 task fields): ``run.json``, ``plots.gpkg`` with a ``plots`` layer
(polygons in UTM 49N) and a ``tasks`` layer (WGS84 points), ``tasks.csv`` (UTF-8 with BOM) and
``tasks.xlsx``. Result files are filled in the way a team would: CSV re-saved, XLSX cells typed,
the GeoPackage ``tasks`` layer edited in place (as QField returns it).
"""

from __future__ import annotations

import csv
import json
import uuid
from dataclasses import dataclass
from pathlib import Path

import geopandas as gpd
import pandas as pd
from openpyxl import Workbook, load_workbook
from shapely.geometry import Point, box

CRS = "EPSG:32649"  # UTM 49N, in southern China
X0, Y0 = 500_000.0, 2_800_000.0
TASK_FIELDS = [
    "task_id",
    "task_code",
    "plot_id",
    "lon",
    "lat",
    "gcj02_lon",
    "gcj02_lat",
    "area_m2",
    "area_mu",
    "est_plants",
    "over_500_plants",
    "priority",
    "county",
    "township",
    "village",
    "route_seq",
    "status",
    "result",
    "plants_eradicated",
    "checked_by",
    "checked_at",
    "onsite_lon",
    "onsite_lat",
    "photo",
    "notes",
]


@dataclass(frozen=True)
class PlotSpec:
    """A square plot ``side`` m wide centred ``dx, dy`` m from the scene origin, in an admin unit."""

    dx: float
    dy: float
    side: float = 6.0
    county: str = "勐县"
    township: str = "甲镇"
    village: str = "一村"


def task_uuid(tag: str, plot_id: int) -> str:
    return str(uuid.uuid5(uuid.NAMESPACE_URL, f"poppyscan-test/{tag}/{plot_id}"))


def make_run(
    run_dir: Path,
    specs: list[PlotSpec],
    *,
    tag: str,
    flight_date: str | None = "2025-04-20",
    mosaic: str = "flight.tif",
    extent_m: float = 400.0,
    with_tasks: bool = True,
) -> gpd.GeoDataFrame:
    """Write a detect run directory; returns its tasks (WGS84 points, issue-5 fields)."""
    run_dir.mkdir(parents=True, exist_ok=True)
    polys = [
        box(X0 + s.dx - s.side / 2, Y0 + s.dy - s.side / 2, X0 + s.dx + s.side / 2, Y0 + s.dy + s.side / 2)
        for s in specs
    ]
    plots = gpd.GeoDataFrame(
        {
            "plot_id": list(range(1, len(specs) + 1)),
            "area_m2": [p.area for p in polys],
            "area_mu": [p.area / 666.6667 for p in polys],
            "prob_mean": 0.8,
            "prob_max": 0.95,
            "est_plants": [p.area * 6 for p in polys],
            "over_500_plants": [p.area * 6 >= 500 for p in polys],
            "mosaic": mosaic,
            "model_version": "0.1.0",
        },
        geometry=polys,
        crs=CRS,
    )
    cent = gpd.GeoSeries(plots.geometry.centroid, crs=CRS).to_crs(4326)
    plots["lon"], plots["lat"] = cent.x.values, cent.y.values
    bounds = [X0 - extent_m / 2, Y0 - extent_m / 2, X0 + extent_m / 2, Y0 + extent_m / 2]
    meta = {
        "poppyscan_version": "0.1.0",
        "created": f"{tag}-created",
        "inputs": [
            {
                "path": f"/data/{mosaic}",
                "crs": CRS,
                "gsd_m": 0.04,
                "width": 10000,
                "height": 10000,
                "bounds": bounds,
            }
        ],
        "crs": CRS,
        "model": {"path": "models/poppyscan-default", "version": "0.1.0", "gsd_m": 0.04},
        "config": {},
        "counts": {"plots": len(specs)},
        "timings": {},
    }
    if flight_date:
        meta["flight_date"] = flight_date
    (run_dir / "run.json").write_text(json.dumps(meta), encoding="utf-8")
    gpkg = run_dir / "plots.gpkg"
    plots.to_file(gpkg, layer="plots", driver="GPKG", engine="pyogrio")
    tasks = gpd.GeoDataFrame(
        {
            "task_id": [task_uuid(tag, i) for i in plots["plot_id"]],
            "task_code": [f"T{i:04d}" for i in plots["plot_id"]],
            "plot_id": plots["plot_id"],
            "lon": plots["lon"],
            "lat": plots["lat"],
            "gcj02_lon": plots["lon"] + 0.0045,
            "gcj02_lat": plots["lat"] - 0.0025,
            "area_m2": plots["area_m2"],
            "area_mu": plots["area_mu"],
            "est_plants": plots["est_plants"],
            "over_500_plants": plots["over_500_plants"],
            "priority": "normal",
            "county": [s.county for s in specs],
            "township": [s.township for s in specs],
            "village": [s.village for s in specs],
            "route_seq": list(range(1, len(specs) + 1)),
            "status": "pending",
            **{
                k: pd.Series([None] * len(specs), dtype=object)
                for k in ("result", "checked_by", "checked_at", "photo", "notes")
            },
            **{
                k: pd.Series([None] * len(specs), dtype="float64")
                for k in ("plants_eradicated", "onsite_lon", "onsite_lat")
            },
        },
        geometry=[Point(x, y) for x, y in zip(plots["lon"], plots["lat"], strict=True)],
        crs=4326,
    )
    if with_tasks:
        tasks.to_file(gpkg, layer="tasks", driver="GPKG", engine="pyogrio")
        write_csv(run_dir / "tasks.csv", [{k: _cell(r[k]) for k in TASK_FIELDS} for _, r in tasks.iterrows()])
        write_xlsx(
            run_dir / "tasks.xlsx", [{k: _cell(r[k]) for k in TASK_FIELDS} for _, r in tasks.iterrows()]
        )
    return tasks


def _cell(v):
    if v is None or (isinstance(v, float) and v != v):
        return ""
    return v


def read_csv(path: Path) -> list[dict]:
    with open(path, encoding="utf-8-sig", newline="") as fh:
        return list(csv.DictReader(fh))


def write_csv(path: Path, rows: list[dict], fields: list[str] | None = None) -> None:
    fields = fields or list(rows[0])
    with open(path, "w", encoding="utf-8-sig", newline="") as fh:
        w = csv.DictWriter(fh, fieldnames=fields)
        w.writeheader()
        w.writerows(rows)


def write_xlsx(path: Path, rows: list[dict]) -> None:
    wb = Workbook()
    ws = wb.active
    ws.title = "tasks"
    fields = list(rows[0])
    ws.append(fields)
    for r in rows:
        ws.append([r.get(k) for k in fields])
    wb.save(path)


def fill_csv(src: Path, dst: Path, results: dict[str, dict]) -> None:
    """Copy ``src`` tasks.csv to ``dst`` with the given task_id -> {column: value} filled in."""
    rows = read_csv(src)
    for r in rows:
        r.update({k: str(v) for k, v in results.get(r["task_id"], {}).items()})
    write_csv(dst, rows)


def fill_xlsx(src: Path, dst: Path, results: dict[str, dict]) -> None:
    wb = load_workbook(src)
    ws = wb.active
    header = [c.value for c in ws[1]]
    for row in ws.iter_rows(min_row=2):
        tid = row[header.index("task_id")].value
        for k, v in results.get(tid, {}).items():
            row[header.index(k)].value = v
    wb.save(dst)


def fill_gpkg(src: Path, dst: Path, results: dict[str, dict]) -> None:
    """Edit the ``tasks`` layer of ``src`` plots.gpkg into ``dst`` like QField does
    (same features, new values)."""
    import shutil

    shutil.copy(src, dst)
    tasks = gpd.read_file(dst, layer="tasks", engine="pyogrio")
    for tid, values in results.items():
        for k, v in values.items():
            tasks.loc[tasks["task_id"] == tid, k] = v
    tasks.to_file(dst, layer="tasks", driver="GPKG", engine="pyogrio")


# ---- a two-year survey over the same place ------------------------------------------------------------
# 2025: four plots in two townships; 2026: one plot overlapping a 2025 plot, one 10 m beside another
# (no overlap, centroid within the 15 m link distance), one new place.
SPECS_2025 = [
    PlotSpec(0, 0),
    PlotSpec(50, 0),
    PlotSpec(100, 20, township="乙镇", village="二村"),
    PlotSpec(-120, -100, township="乙镇", village="二村"),
]
SPECS_2026 = [PlotSpec(1.5, 1.0), PlotSpec(110, 20, township="乙镇", village="二村"), PlotSpec(150, 150)]


def results_2025(tasks) -> dict[str, dict]:
    t = list(tasks["task_id"])
    return {
        t[0]: {"result": "poppy", "plants_eradicated": 120, "checked_by": "王伟", "checked_at": "2025-05-02"},
        t[1]: {"result": "not_poppy", "checked_by": "王伟", "checked_at": "2025-05-02"},
        t[2]: {"result": "already_eradicated", "checked_by": "李娜", "checked_at": "2025-05-03 10:20"},
        t[3]: {
            "result": "not_reached",
            "checked_by": "李娜",
            "checked_at": "2025-05-03",
            "notes": "road washed out 路断",
        },
    }


def results_2026(tasks) -> dict[str, dict]:
    t = list(tasks["task_id"])
    return {
        t[0]: {"result": "poppy", "plants_eradicated": 80, "checked_by": "王伟", "checked_at": "2026-04-25"},
        t[1]: {"result": "poppy", "plants_eradicated": 40, "checked_by": "李娜", "checked_at": "2026-04-26"},
        t[2]: {"result": "not_poppy", "checked_by": "李娜", "checked_at": "2026-04-26"},
    }


def two_year_survey(tmp_path: Path) -> dict:
    """Both runs registered and both years' results imported (2025 as CSV, 2026 as a QField GeoPackage)."""
    from poppyscan.survey import import_results, register_run

    reg = tmp_path / "register.gpkg"
    t25 = make_run(tmp_path / "run2025", SPECS_2025, tag="r25", flight_date="2025-04-20", mosaic="a2025.tif")
    t26 = make_run(
        tmp_path / "run2026",
        SPECS_2026,
        tag="r26",
        flight_date="2026-04-18",
        mosaic="a2026.tif",
        extent_m=500.0,
    )
    s25 = register_run(reg, tmp_path / "run2025")
    s26 = register_run(reg, tmp_path / "run2026")
    fill_csv(tmp_path / "run2025" / "tasks.csv", tmp_path / "back2025.csv", results_2025(t25))
    fill_gpkg(tmp_path / "run2026" / "plots.gpkg", tmp_path / "back2026.gpkg", results_2026(t26))
    i25 = import_results(reg, tmp_path / "back2025.csv", today=_date(2026, 12, 31))
    i26 = import_results(reg, tmp_path / "back2026.gpkg", today=_date(2026, 12, 31))
    return {
        "register": reg,
        "tasks2025": t25,
        "tasks2026": t26,
        "reg2025": s25,
        "reg2026": s26,
        "import2025": i25,
        "import2026": i26,
    }


def _date(y, m, d):
    from datetime import date

    return date(y, m, d)


def dump(register: Path) -> dict[str, list]:
    """Every row of every table, to compare a register before and after an operation."""
    import sqlite3

    conn = sqlite3.connect(register)
    try:
        names = [
            r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type='table' ORDER BY name")
        ]
        return {n: conn.execute(f"SELECT * FROM {n}").fetchall() for n in names}  # noqa: S608
    finally:
        conn.close()
