"""Statistics: the right counts after a two-year round trip, year-on-year change,
files a supervisor can use."""

from __future__ import annotations

import csv
import sqlite3

import pytest
from openpyxl import load_workbook
from survey_helpers import two_year_survey

from poppyscan.cli import main
from poppyscan.errors import OutputExistsError
from poppyscan.survey import compute_stats
from poppyscan.survey.report import format_table, write_outputs


@pytest.fixture(scope="module")
def survey(tmp_path_factory):
    return two_year_survey(tmp_path_factory.mktemp("survey"))


def by_key(table):
    return {(*(r[c] for c in table.unit_columns), r["year"]): r for r in table.all_rows()}


def test_round_trip_imports_were_clean(survey):
    assert survey["import2025"].n_changed_rows == 4 and not survey["import2025"].rejected
    assert survey["import2026"].n_changed_rows == 3 and not survey["import2026"].rejected


def test_counts_per_township_and_year(survey):
    rows = by_key(compute_stats(survey["register"], by="township"))
    jia25, yi25 = rows[("勐县", "甲镇", 2025)], rows[("勐县", "乙镇", 2025)]
    jia26, yi26 = rows[("勐县", "甲镇", 2026)], rows[("勐县", "乙镇", 2026)]
    assert (jia25["plots_found"], jia25["checked"], jia25["verified_poppy"], jia25["false_positives"]) == (
        2,
        2,
        1,
        1,
    )
    assert (jia25["plants_eradicated"], jia25["precision"], jia25["pending"]) == (120, 0.5, 0)
    assert (yi25["plots_found"], yi25["checked"], yi25["already_eradicated"], yi25["not_reached"]) == (
        2,
        1,
        1,
        1,
    )
    assert yi25["precision"] == 1.0  # an already-eradicated plot was poppy: the detection was right
    assert (jia26["plots_found"], jia26["sites"], jia26["repeat_sites"], jia26["verified_poppy"]) == (
        2,
        2,
        1,
        1,
    )
    assert (yi26["plots_found"], yi26["repeat_sites"], yi26["verified_poppy"], yi26["plants_eradicated"]) == (
        1,
        1,
        1,
        40,
    )
    # 6 m x 6 m plots: 36 m² each
    assert jia25["area_found_m2"] == pytest.approx(72.0, rel=1e-3)
    assert jia25["area_found_mu"] == pytest.approx(72.0 / 666.667, rel=1e-3)
    assert jia25["area_poppy_m2"] == pytest.approx(36.0, rel=1e-3)
    # year on year, per unit
    assert jia26["yoy_plots_found_pct"] == pytest.approx(0.0)
    assert yi26["yoy_plots_found_pct"] == pytest.approx(-50.0)
    assert yi26["yoy_verified_poppy_pct"] is None  # no verified poppy the year before: no percentage
    assert jia26["yoy_plants_eradicated_pct"] == pytest.approx(100 * (80 - 120) / 120)
    assert jia25["yoy_plots_found_pct"] is None


def test_totals_and_yoy_over_all_units(survey):
    table = compute_stats(survey["register"], by="all")
    t25, t26 = table.rows
    assert (t25["year"], t25["flights"], t25["plots_found"], t25["sites"], t25["checked"]) == (
        2025,
        1,
        4,
        4,
        3,
    )
    assert (t26["year"], t26["plots_found"], t26["sites"], t26["repeat_sites"], t26["verified_poppy"]) == (
        2026,
        3,
        3,
        2,
        2,
    )
    assert t25["surveyed_ha"] == pytest.approx(16.0, rel=1e-3) and t26["surveyed_ha"] == pytest.approx(
        25.0, rel=1e-3
    )
    assert t26["yoy_plots_found_pct"] == pytest.approx(-25.0)
    assert t26["yoy_verified_poppy_pct"] == pytest.approx(100.0)
    assert t26["yoy_plants_eradicated_pct"] == pytest.approx(0.0)
    assert t26["yoy_surveyed_ha_pct"] == pytest.approx(56.25, rel=1e-3)
    assert t26["plots_per_100ha"] == pytest.approx(12.0, rel=1e-3)
    assert t26["yoy_plots_per_100ha_pct"] == pytest.approx(100 * (12.0 - 25.0) / 25.0, rel=1e-3)
    assert t26["precision"] == pytest.approx(2 / 3)
    # the TOTAL rows of a per-unit table are the same figures
    totals = {r["year"]: r for r in compute_stats(survey["register"], by="village").totals}
    assert totals[2026]["plots_found"] == 3 and totals[2026]["village"] == "TOTAL"


def test_year_filter_keeps_yoy_against_year_before(survey):
    table = compute_stats(survey["register"], by="county", year=2026)
    # 勐县; the flown area, not split by unit (no boundary layer), as (unassigned); TOTAL
    assert [(r["county"], r["year"]) for r in table.all_rows()] == [
        ("(unassigned)", 2026),
        ("勐县", 2026),
        ("TOTAL", 2026),
    ]
    r = by_key(table)[("勐县", 2026)]
    assert r["plots_found"] == 3 and r["yoy_plots_found_pct"] == pytest.approx(-25.0)
    assert compute_stats(survey["register"], by="county", year=2019).rows == []


def test_outputs_csv_bom_xlsx_png(survey, tmp_path):
    table = compute_stats(survey["register"], by="township")
    paths = write_outputs(table, tmp_path / "report")
    raw = paths["csv"].read_bytes()
    assert raw.startswith(b"\xef\xbb\xbf")  # UTF-8 BOM for Excel
    with open(paths["csv"], encoding="utf-8-sig", newline="") as fh:
        rows = list(csv.DictReader(fh))
    assert rows[0].keys() >= {"county", "township", "year", "plots_found", "precision", "yoy_plots_found_pct"}
    jia26 = next(r for r in rows if r["township"] == "甲镇" and r["year"] == "2026")
    assert jia26["verified_poppy"] == "1" and jia26["yoy_plots_found_pct"] == "0.0"
    ws = load_workbook(paths["xlsx"]).active
    header = [c.value for c in ws[1]]
    assert "plots_found (发现地块)" in header and "precision (识别准确率)" in header
    assert ws.max_row == 1 + len(table.all_rows())
    for key in ("units_png", "trend_png"):
        data = paths[key].read_bytes()
        assert data.startswith(b"\x89PNG\r\n\x1a\n") and len(data) > 10_000
    with pytest.raises(OutputExistsError, match="--overwrite"):
        write_outputs(table, tmp_path / "report")
    write_outputs(table, tmp_path / "report", overwrite=True)


def test_terminal_table_aligns_chinese_names(survey):
    text = format_table(compute_stats(survey["register"], by="township"))
    lines = text.splitlines()
    assert lines[0].split()[:3] == ["county", "township", "year"]
    assert any("甲镇" in ln and "2026" in ln for ln in lines)
    assert any(ln.startswith("TOTAL") for ln in lines)


def test_cli_stats(survey, tmp_path, capsys):
    out = tmp_path / "o"
    assert main(["stats", "--by", "township", "--register", str(survey["register"]), "--out", str(out)]) == 0
    text = capsys.readouterr().out
    assert "甲镇" in text and "precision" in text and (out / "stats_by_township.csv").is_file()
    assert main(["stats", "--register", str(survey["register"]), "--out", str(out), "--by", "township"]) == 3
    assert "already exists" in capsys.readouterr().err
    assert main(["stats", "--register", str(tmp_path / "none.gpkg")]) == 2
    err = capsys.readouterr().err
    assert err.startswith("poppyscan: error: survey register") and len(err.strip().splitlines()) == 1


def test_stats_do_not_change_the_register(survey):
    with sqlite3.connect(survey["register"]) as conn:
        before = conn.execute("SELECT count(*) FROM status_history").fetchone()[0]
    compute_stats(survey["register"])
    with sqlite3.connect(survey["register"]) as conn:
        assert conn.execute("SELECT count(*) FROM status_history").fetchone()[0] == before


def test_real_detect_tasks_register_import_stats_chain(tmp_path):
    """The real chain: detect (colour stand-in model) -> tasks -> register -> results back (CSV, QField GPKG)
    -> import -> stats, over two flights of the same place a year apart."""
    import geopandas as gpd
    import numpy as np
    import shapely
    from detect_scenes import ColourPredictor, write_scene
    from shapely.geometry import box
    from survey_helpers import fill_csv, fill_gpkg

    from poppyscan.detect import detect
    from poppyscan.survey import import_results, register_run

    painted = {
        2025: {"A": box(100, 100, 160, 160), "B": box(300, 300, 380, 350), "C": box(450, 80, 500, 130)},
        2026: {"A": box(110, 105, 170, 165), "D": box(450, 450, 500, 500)},  # A again (overlaps), D new
    }
    reg = tmp_path / "register.gpkg"
    task_of = {}
    for year, plots in painted.items():
        scene = write_scene(tmp_path / f"m{year}.tif", plots_px=list(plots.values()), seed=year)
        run_dir = tmp_path / f"run{year}"
        detect([scene.path], run_dir, model=ColourPredictor(), progress=False)  # builds the tasks too
        assert (run_dir / "tasks.csv").is_file()
        summary = register_run(reg, run_dir, flight_date=f"{year}-04-20", link_distance_m=3)
        assert summary.n_plots == len(plots) and summary.n_tasks_added == len(plots)
        found = gpd.read_file(run_dir / "plots.gpkg", layer="plots", engine="pyogrio")
        tasks = gpd.read_file(run_dir / "plots.gpkg", layer="tasks", engine="pyogrio")
        for name, poly in zip(plots, scene.plots_crs(), strict=True):
            pid = int(found.loc[found.intersects(poly), "plot_id"].iloc[0])
            task_of[(year, name)] = tasks.loc[tasks["plot_id"] == pid, "task_id"].iloc[0]
    assert register_run(reg, tmp_path / "run2026", flight_date="2026-04-20").n_new_sites == 0  # idempotent

    fill_csv(tmp_path / "run2025" / "tasks.csv", tmp_path / "back2025.csv", {
        task_of[(2025, "A")]: {"result": "poppy", "plants_eradicated": 50, "checked_by": "王",
                               "checked_at": "2025-05-01"},
        task_of[(2025, "B")]: {"result": "not_poppy", "checked_by": "王", "checked_at": "2025-05-01"},
        task_of[(2025, "C")]: {"result": "already_eradicated", "checked_by": "李",
                               "checked_at": "2025-05-02"}})
    fill_gpkg(tmp_path / "run2026" / "plots.gpkg", tmp_path / "back2026.gpkg", {
        task_of[(2026, "A")]: {"result": "poppy", "plants_eradicated": 30, "checked_by": "王",
                               "checked_at": "2026-05-01"},
        task_of[(2026, "D")]: {"result": "not_reached", "checked_by": "李", "checked_at": "2026-05-01"}})
    for back in ("back2025.csv", "back2026.gpkg"):
        report = import_results(reg, tmp_path / back)
        assert not report.rejected and report.n_changed_rows >= 2, report.describe()
        assert import_results(reg, tmp_path / back).n_changed_rows == 0

    t25, t26 = compute_stats(reg, by="all").rows
    assert (t25["plots_found"], t25["checked"], t25["verified_poppy"], t25["false_positives"],
            t25["already_eradicated"], t25["plants_eradicated"]) == (3, 3, 1, 1, 1, 50)
    assert t25["precision"] == pytest.approx(2 / 3)
    assert (t26["plots_found"], t26["sites"], t26["repeat_sites"], t26["verified_poppy"], t26["not_reached"],
            t26["plants_eradicated"]) == (2, 2, 1, 1, 1, 30)
    assert t26["yoy_plots_found_pct"] == pytest.approx(-100 / 3)
    assert (t26["surveyed_ha"] == pytest.approx(t25["surveyed_ha"])
            and t26["yoy_surveyed_ha_pct"] == pytest.approx(0))
    assert t25["surveyed_ha"] == pytest.approx(0.09, rel=0.02)  # 30 m x 30 m mosaic, from probability.tif

    # retraining input: verified poppy -> positives, false positives -> hard negatives, the rest ignored
    from poppyscan.survey.labels import export_training_labels
    from poppyscan.traindata import find_scenes, open_scene

    exported = export_training_labels(reg, tmp_path / "labels")
    assert (exported.scenes, exported.positives, exported.hard_negatives, exported.ignored) == (2, 2, 1, 2)
    scenes = [open_scene(m, lab) for m, lab in find_scenes([exported.scenes_csv])]
    assert sorted(sc.mosaic.name for sc in scenes) == ["m2025.tif", "m2026.tif"]
    s25 = next(sc for sc in scenes if sc.mosaic.name == "m2025.tif")
    assert (len(s25.positives), len(s25.negatives), len(s25.ignored)) == (1, 1, 1)
    b_poly = box(300, 300, 380, 350)  # painted B, the false positive, in pixels
    import rasterio

    with rasterio.open(s25.mosaic) as ds:
        t = ds.transform
    px = shapely.transform(
        s25.negatives[0], lambda xy: np.column_stack([(xy[:, 0] - t.c) / t.a, (xy[:, 1] - t.f) / t.e])
    )
    assert px.intersection(b_poly).area > 0.5 * b_poly.area
    with pytest.raises(OutputExistsError):
        export_training_labels(reg, tmp_path / "labels")
    assert main(
        ["results", "export-labels", str(tmp_path / "labels"), "--overwrite", "--register", str(reg)]
    ) == 0
