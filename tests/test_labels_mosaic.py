"""Training labels go with the mosaic each plot was detected on (audit item 2).

Every OpenDroneMap output is ``odm_orthophoto.tif``: a run over two such mosaics used to have every
field verdict paired with the first input of that name, so retraining learnt plots on the wrong image.
The register now keeps each plot's ``mosaic_index``; registers written before it place plots by file
name and the bounds of the mosaic files.
"""

from __future__ import annotations

import json
import sqlite3
from datetime import date
from pathlib import Path

import geopandas as gpd
import numpy as np
import pyogrio
import rasterio
from rasterio.transform import from_origin
from register_versions import as_version, version_of
from shapely.geometry import box
from survey_helpers import CRS, X0, Y0, PlotSpec, fill_csv, make_run, read_csv

from poppyscan.cli import main
from poppyscan.survey import import_results, register_run

# plot centre offsets (m) from the scene origin: west of X0 lies flight A, east of it flight B
SPECS = [PlotSpec(-100, 0), PlotSpec(100, 0), PlotSpec(-50, 50), PlotSpec(60, -60)]
ON_B = {2, 4}


def _mosaic(path: Path, left: float) -> Path:
    """A 200 m x 400 m RGB GeoTIFF whose left edge is at ``left`` (UTM 49N), 10 m pixels."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with rasterio.open(path, "w", driver="GTiff", width=20, height=40, count=3, dtype="uint8", crs=CRS,
                       transform=from_origin(left, Y0 + 200, 10, 10)) as dst:
        dst.write(np.full((3, 40, 20), 90, np.uint8))
    return path


def _odm_run(tmp_path: Path) -> tuple[Path, list[Path]]:
    """A detect run over two mosaics both named odm_orthophoto.tif (flights A and B side by side)."""
    run = tmp_path / "run"
    make_run(run, SPECS, tag="odm", mosaic="odm_orthophoto.tif")
    paths = [_mosaic(tmp_path / "A" / "odm_orthophoto.tif", X0 - 200),
             _mosaic(tmp_path / "B" / "odm_orthophoto.tif", X0)]
    meta = json.loads((run / "run.json").read_text(encoding="utf-8"))
    with_bounds = []
    for p in paths:
        with rasterio.open(p) as src:
            with_bounds.append({**meta["inputs"][0], "path": str(p), "bounds": list(src.bounds),
                                "width": src.width, "height": src.height})
    meta["inputs"] = with_bounds
    (run / "run.json").write_text(json.dumps(meta), encoding="utf-8")
    plots = pyogrio.read_dataframe(run / "plots.gpkg", layer="plots")
    plots["mosaic_index"] = [1 if pid in ON_B else 0 for pid in plots["plot_id"]]
    pyogrio.write_dataframe(plots, run / "plots.gpkg", layer="plots")
    return run, paths


def _verdicts(run: Path, reg: Path, tmp_path: Path) -> None:
    rows = read_csv(run / "tasks.csv")
    verdict = {1: "poppy", 2: "not_poppy", 3: "poppy", 4: "poppy"}
    results = {r["task_id"]: {"result": verdict[int(r["plot_id"])], "checked_by": "王伟",
                              "checked_at": "2025-05-02"} for r in rows}
    fill_csv(run / "tasks.csv", tmp_path / "back.csv", results)
    import_results(reg, tmp_path / "back.csv", today=date(2026, 1, 1))


def _labelled(out: Path) -> dict[str, set[int]]:
    """scenes.csv as {mosaic folder name: plot ids in its label file}, each plot checked to lie on it."""
    got = {}
    for row in read_csv(out / "scenes.csv"):
        mosaic = Path(row["mosaic"])
        labels = gpd.read_file(out / row["labels"], layer="plots")
        with rasterio.open(mosaic) as src:
            footprint = box(*src.bounds)
        inside = labels.to_crs(CRS).geometry.within(footprint)
        assert inside.all(), f"{row['labels']}: plots {list(labels['plot_id'][~inside])} are not on {mosaic}"
        got[mosaic.parent.name] = set(labels["plot_id"].astype(int))
    return got


def test_labels_of_same_named_mosaics_go_with_each_plots_own_mosaic(tmp_path, capsys):
    run, _ = _odm_run(tmp_path)
    reg = tmp_path / "reg.gpkg"
    register_run(reg, run)
    _verdicts(run, reg, tmp_path)
    assert main(["results", "export-labels", str(tmp_path / "labels"), "--register", str(reg)]) == 0
    assert "2 scene(s)" in capsys.readouterr().out
    assert _labelled(tmp_path / "labels") == {"A": {1, 3}, "B": {2, 4}}
    names = sorted(p.name for p in (tmp_path / "labels").glob("*.gpkg"))
    assert names == ["run0001_odm_orthophoto_1.gpkg", "run0001_odm_orthophoto_2.gpkg"]


def test_a_register_written_before_mosaic_index_places_plots_by_name_and_bounds(tmp_path):
    run, _ = _odm_run(tmp_path)
    reg = tmp_path / "reg.gpkg"
    register_run(reg, run)
    _verdicts(run, reg, tmp_path)
    as_version(reg, 2)  # what poppyscan wrote before schema 3
    from poppyscan.survey.labels import export_training_labels

    report = export_training_labels(reg, tmp_path / "old")  # upgraded in memory: mosaic_index NULL
    assert (report.scenes, report.unplaced) == (2, 0)
    assert _labelled(tmp_path / "old") == {"A": {1, 3}, "B": {2, 4}}
    assert version_of(reg) == 2  # export-labels only reads the register
    register_run(reg, run)  # registered again: upgraded, the index filled in
    with sqlite3.connect(reg) as conn:
        rows = dict(conn.execute("SELECT plot_id, mosaic_index FROM plots").fetchall())
    assert rows == {1: 0, 2: 1, 3: 0, 4: 1}


def _odm_mosaic(path: Path, left: float, valid_px: int) -> dict:
    """A 200 m x 200 m odm_orthophoto.tif (10 m pixels, nodata 0) whose first ``valid_px`` columns hold
    imagery, as run.json records it."""
    path.parent.mkdir(parents=True, exist_ok=True)
    data = np.zeros((3, 20, 20), np.uint8)
    data[:, :, :valid_px] = 90
    with rasterio.open(path, "w", driver="GTiff", width=20, height=20, count=3, dtype="uint8", crs=CRS,
                       nodata=0, transform=from_origin(left, Y0 + 100, 10, 10)) as dst:
        dst.write(data)
        bounds = list(dst.bounds)
    return {"path": str(path), "crs": CRS, "gsd_m": 10.0, "width": 20, "height": 20, "bounds": bounds}


def test_an_old_run_over_overlapping_mosaics_of_one_name_is_labelled_on_the_pixels_under_each_plot(tmp_path):
    """A run folder written before detect recorded mosaic_index, over two odm_orthophoto.tif whose bounding
    boxes overlap: flight A has imagery only west of X0, flight B starts 40 m west of it. Plot 2 lies in
    both boxes but on B's pixels only; the register stores no guess, export-labels reads the pixels."""
    run = tmp_path / "run"
    make_run(run, [PlotSpec(-60, 0), PlotSpec(50, 0), PlotSpec(130, 0)], tag="ovl",
             mosaic="odm_orthophoto.tif")
    meta = json.loads((run / "run.json").read_text(encoding="utf-8"))
    meta["inputs"] = [_odm_mosaic(tmp_path / "A" / "odm_orthophoto.tif", X0 - 100, 10),
                      _odm_mosaic(tmp_path / "B" / "odm_orthophoto.tif", X0 - 40, 20)]
    (run / "run.json").write_text(json.dumps(meta), encoding="utf-8")
    reg = tmp_path / "reg.gpkg"
    register_run(reg, run)

    def stored() -> dict[int, int | None]:
        with sqlite3.connect(reg) as conn:
            return dict(conn.execute("SELECT plot_id, mosaic_index FROM plots").fetchall())

    assert stored() == {1: None, 2: None, 3: None}  # detect recorded none: nothing guessed is kept as fact
    results = {r["task_id"]: {"result": "poppy", "checked_by": "王伟", "checked_at": "2025-05-02"}
               for r in read_csv(run / "tasks.csv")}
    fill_csv(run / "tasks.csv", tmp_path / "back.csv", results)
    import_results(reg, tmp_path / "back.csv", today=date(2026, 1, 1))
    assert main(["results", "export-labels", str(tmp_path / "labels"), "--register", str(reg)]) == 0
    assert _labelled(tmp_path / "labels") == {"A": {1}, "B": {2, 3}}
    # a register that stored the guess of the bounds alone (A for plot 2): registering again clears it
    with sqlite3.connect(reg) as conn:
        conn.execute("UPDATE plots SET mosaic_index = CASE plot_id WHEN 3 THEN 1 ELSE 0 END")
    register_run(reg, run)
    assert stored() == {1: None, 2: None, 3: None}
