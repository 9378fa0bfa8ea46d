"""Desk review in the survey register: plots rejected at the desk (and so sent to no field team) are
counted as dismissed, never as plots found, sites, pending work or, a year later, repeat sites."""

from __future__ import annotations

import json
import shutil
import sqlite3

import geopandas as gpd
import pytest
from conftest_tasks import make_plots, make_run
from survey_helpers import dump, fill_csv

from poppyscan.review.store import save_decision
from poppyscan.survey import compute_stats, import_results, register_run
from poppyscan.tasks import build_tasks


def reviewed_run(path, rejected=(4, 6), *, created=None, mosaic=None):
    """The tasks fixture's six-plot run, desk-reviewed (plot 1 confirmed, ``rejected`` rejected), with tasks
    made after the review (so the rejected plots have none)."""
    run = make_run(path)
    if created or mosaic:  # another flight over the same ground
        meta = json.loads((run / "run.json").read_text())
        meta["created"] = created or meta["created"]
        meta["inputs"][0]["path"] = str(run / (mosaic or "mosaic.tif"))
        (run / "run.json").write_text(json.dumps(meta))
    save_decision(run, 1, "confirmed", reviewer="li.wei")
    for pid in rejected:
        save_decision(run, pid, "rejected", reviewer="li.wei")
    build_tasks(run)
    return run


def totals(reg, year=2025):
    return next(r for r in compute_stats(reg, by="all").rows if r["year"] == year)


def test_desk_rejected_plots_are_dismissed_not_found_sites_or_pending(tmp_path):
    run = reviewed_run(tmp_path / "run")
    reg = tmp_path / "reg.gpkg"
    s = register_run(reg, run, flight_date="2025-04-20")
    assert (s.n_plots, s.n_dismissed, s.n_tasks_added, s.n_new_sites) == (6, 2, 4, 4)
    assert "6 plot(s), 2 dismissed at the desk (0 at known sites, 4 new site(s)), 4 task(s)" in s.describe()
    t = totals(reg)
    assert (t["plots_found"], t["dismissed"], t["sites"], t["pending"], t["checked"]) == (4, 2, 4, 4, 0)
    area = make_plots().set_index("plot_id")["area_m2"]
    assert t["area_found_m2"] == pytest.approx(area[[1, 2, 3, 5]].sum(), rel=1e-6)
    plots = gpd.read_file(reg, layer="plots", engine="pyogrio").set_index("plot_id")
    assert plots.loc[1, "review"] == "confirmed" and plots.loc[4, "review"] == "rejected"
    assert sorted(plots.index[plots["dismissed"] == 1]) == [4, 6]
    sites = gpd.read_file(reg, layer="sites", engine="pyogrio")
    assert sorted(sites["n_detections"]) == [0, 0, 1, 1, 1, 1]  # the dismissed plots' places: none
    # the office sends the rejected plots out after all (tasks.include_rejected): they are findings again
    before = dump(reg)
    assert register_run(reg, run, flight_date="2025-04-20").n_updated == 0 and dump(reg) == before
    build_tasks(run, include_rejected=True)
    again = register_run(reg, run, flight_date="2025-04-20")
    assert (again.n_tasks_added, again.n_updated, again.n_dismissed) == (2, 2, 0)
    t = totals(reg)
    assert (t["plots_found"], t["dismissed"], t["sites"], t["pending"]) == (6, 0, 6, 6)


def test_a_place_dismissed_last_year_is_not_a_repeat_site_next_year(tmp_path):
    reg = tmp_path / "reg.gpkg"
    register_run(reg, reviewed_run(tmp_path / "y25"), flight_date="2025-04-20")
    y26 = reviewed_run(tmp_path / "y26", rejected=(), created="2026-04-01T09:00:00+00:00", mosaic="m26.tif")
    s26 = register_run(reg, y26, flight_date="2026-04-18")
    assert (s26.n_linked, s26.n_new_sites, s26.n_dismissed) == (6, 0, 0)  # same places (6 overlaps)
    t26 = totals(reg, 2026)
    # plots 4 and 6 were dismissed in 2025: found in 2026 for the first time, so not repeats
    assert (t26["plots_found"], t26["sites"], t26["repeat_sites"], t26["dismissed"]) == (6, 6, 4, 0)
    assert t26["yoy_plots_found_pct"] == pytest.approx(50.0)  # 4 -> 6
    with sqlite3.connect(reg) as conn:
        seen = conn.execute(
            "SELECT p.plot_id, s.first_seen, s.n_detections FROM plots p JOIN sites s ON s.fid = p.site_id "
            "WHERE p.year = 2026 ORDER BY p.plot_id"
        ).fetchall()
    assert seen[3] == (4, "2026-04-18", 1) and seen[0] == (1, "2025-04-20", 2)


def test_a_plot_rejected_after_registration_is_dismissed_unless_the_field_checks_it(tmp_path):
    """Registered straight after detect (tasks for every plot), rejected at the desk later: registering
    again takes the decision over; a verdict the team returns for it anyway counts."""
    run = make_run(tmp_path / "run")
    build_tasks(run)
    shutil.copy(run / "tasks.csv", tmp_path / "issued.csv")  # the list the teams already have
    reg = tmp_path / "reg.gpkg"
    assert register_run(reg, run, flight_date="2025-04-20").n_tasks_added == 6
    save_decision(run, 3, "rejected")
    build_tasks(run)  # plot 3's task is withdrawn
    again = register_run(reg, run, flight_date="2025-04-20")
    assert (again.n_updated, again.n_dismissed) == (1, 1)
    t = totals(reg)
    assert (t["plots_found"], t["dismissed"], t["sites"], t["pending"]) == (5, 1, 5, 5)
    with sqlite3.connect(reg) as conn:
        tid = conn.execute("SELECT task_id FROM tasks WHERE plot_id = 3").fetchone()[0]
    verdict = {"result": "poppy", "plants_eradicated": 70, "checked_by": "王", "checked_at": "2025-05-02"}
    fill_csv(tmp_path / "issued.csv", tmp_path / "back.csv", {tid: verdict})
    assert import_results(reg, tmp_path / "back.csv").n_changed_rows == 1
    t = totals(reg)
    found = (t["plots_found"], t["dismissed"], t["sites"], t["verified_poppy"], t["pending"])
    assert found == (6, 0, 6, 1, 5)
    with sqlite3.connect(reg) as conn:
        n = conn.execute(
            "SELECT s.n_detections FROM sites s JOIN plots p ON p.site_id = s.fid WHERE p.plot_id = 3"
        ).fetchone()[0]
    assert n == 1


def test_desk_rejections_are_exported_as_hard_negatives_marked_desk(tmp_path):
    from poppyscan.survey.labels import export_training_labels
    from poppyscan.traindata import find_scenes, open_scene

    reg = tmp_path / "reg.gpkg"
    register_run(reg, reviewed_run(tmp_path / "run"), flight_date="2025-04-20")  # no field verdict yet
    report = export_training_labels(reg, tmp_path / "labels")
    assert (report.scenes, report.positives, report.hard_negatives, report.desk_negatives) == (1, 0, 2, 2)
    assert "2 false positive(s) as hard negatives (2 of them rejected at the desk)" in report.describe()
    (labels,) = (tmp_path / "labels").glob("*.gpkg")
    got = gpd.read_file(labels, layer="plots", engine="pyogrio").set_index("plot_id")
    assert sorted(got.index[got["label"] == "not_poppy"]) == [4, 6]
    assert set(got.loc[[4, 6], "source"]) == {"desk"} and set(got.loc[[1, 2, 3, 5], "label"]) == {"unknown"}
    (scene,) = [open_scene(m, lab) for m, lab in find_scenes([report.scenes_csv])]
    assert (len(scene.positives), len(scene.negatives), len(scene.ignored)) == (0, 2, 4)
