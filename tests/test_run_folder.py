"""A damaged or foreign run folder (audit item 1): every stage that reads a run back (``tasks``,
``review``, ``results register``) refuses it with one line naming the file and the fix, through one
validated reader (:mod:`poppyscan.run_folder`), and writes nothing: no task file, no register change.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pyogrio
import pytest
from conftest_tasks import make_run as make_task_run
from survey_helpers import SPECS_2025, SPECS_2026, dump
from survey_helpers import make_run as make_survey_run

from poppyscan.cli import main


def _one_line_error(capsys, code, *needles):
    err = capsys.readouterr().err
    assert code == 2, err
    assert "Traceback" not in err and len(err.strip().splitlines()) == 1, err
    assert err.startswith("poppyscan: error:"), err
    for needle in needles:
        assert needle.lower() in err.lower(), err
    return err


def _plots(run: Path):
    return pyogrio.read_dataframe(run / "plots.gpkg", layer="plots")


def _rewrite_plots(run: Path, plots) -> None:
    pyogrio.write_dataframe(plots, run / "plots.gpkg", layer="plots")


# what `poppyscan tasks` writes into a run folder, and what it leaves while writing: the package is built in
# a hidden staging folder (``.tasks.*.part``) and files are written beside their target (``.NAME.*.part*``,
# fsutil.atomic_path), the replaced ones kept as ``.NAME.old`` until the swap
TASK_OUTPUTS = {"tasks.csv", "tasks.xlsx", "tasks.gpx", "tasks.kmz", "plots.geojson", "chips", "work_orders",
                "units", "probability.qml"}


def _no_task_files(run: Path) -> None:
    left = sorted(p.name for p in run.iterdir()
                  if p.name in TASK_OUTPUTS or (p.name.startswith(".") and (".part" in p.name
                                                                             or p.name.endswith(".old"))))
    assert not left, f"poppyscan tasks left {left} in {run}"


def test_no_task_files_sees_what_tasks_leaves_behind(task_run):
    """The check above must see the staging folder and temporary files tasks really makes."""
    import tempfile

    _no_task_files(task_run)
    stage = Path(tempfile.mkdtemp(prefix=".tasks.", suffix=".part", dir=task_run))  # as export.package
    with pytest.raises(AssertionError, match=r"\.tasks\..*\.part"):
        _no_task_files(task_run)
    stage.rmdir()
    (task_run / ".tasks.csv.x1y2.part.csv").write_text("")  # as fsutil.atomic_path
    with pytest.raises(AssertionError, match="tasks.csv"):
        _no_task_files(task_run)


@pytest.fixture()
def task_run(tmp_path):
    return make_task_run(tmp_path / "run", n=3)


@pytest.fixture()
def survey(tmp_path):
    """A register holding one run, and a second run folder to damage before registering it."""
    make_survey_run(tmp_path / "good", SPECS_2025, tag="good", mosaic="good.tif")
    make_survey_run(tmp_path / "bad", SPECS_2026, tag="bad", mosaic="bad.tif")
    reg = tmp_path / "reg.gpkg"
    assert main(["results", "register", str(tmp_path / "good"), "--register", str(reg)]) == 0
    return {"reg": reg, "bad": tmp_path / "bad", "fresh": tmp_path / "fresh.gpkg", "before": dump(reg)}


def _register_refused(capsys, survey, *needles) -> None:
    """Both into the register and into a new one: refused in one line, nothing written or created."""
    capsys.readouterr()
    for reg in (survey["reg"], survey["fresh"]):
        code = main(["results", "register", str(survey["bad"]), "--register", str(reg)])
        _one_line_error(capsys, code, *needles)
    assert dump(survey["reg"]) == survey["before"]
    assert not survey["fresh"].exists()


@pytest.mark.parametrize("content", [b"", b"plots, as a text file\n1,2,3\n"], ids=["empty", "text"])
def test_an_empty_or_text_plots_gpkg_is_refused_by_tasks_and_register(task_run, survey, capsys, content):
    (task_run / "plots.gpkg").write_bytes(content)
    needle = "is empty (0 bytes)" if not content else "is not a readable GeoPackage"
    _one_line_error(capsys, main(["tasks", str(task_run)]), "plots.gpkg", needle, "re-run")
    _no_task_files(task_run)
    (survey["bad"] / "plots.gpkg").write_bytes(content)
    _register_refused(capsys, survey, "plots.gpkg", needle)


def test_run_json_that_is_not_an_object_is_refused_by_tasks_review_and_register(task_run, survey, capsys):
    (task_run / "run.json").write_text("[1, 2]", encoding="utf-8")
    _one_line_error(capsys, main(["tasks", str(task_run)]), "run.json", "JSON list, not the object")
    _no_task_files(task_run)
    code = main(["review", str(task_run), "--no-browser", "--port", "0"])
    _one_line_error(capsys, code, "run.json", "JSON list")
    assert not (task_run / "review.json").exists()
    (survey["bad"] / "run.json").write_text('"a string"', encoding="utf-8")
    _register_refused(capsys, survey, "run.json", "JSON str")


def test_a_plots_layer_of_points_is_refused(task_run, capsys):
    plots = _plots(task_run)
    _rewrite_plots(task_run, plots.set_geometry(plots.geometry.centroid))
    _one_line_error(capsys, main(["tasks", str(task_run)]), "plots.gpkg", "Point geometries",
                    "not plot polygons")
    _no_task_files(task_run)


def test_text_in_a_numeric_column_is_refused_and_numbers_stored_as_text_are_read(task_run, capsys):
    plots = _plots(task_run)
    text = plots.assign(area_m2=[f"{a:.3f}" for a in plots["area_m2"]])
    _rewrite_plots(task_run, text)
    assert main(["tasks", str(task_run), "-q"]) == 0  # numbers as text: read as numbers
    tasks = pyogrio.read_dataframe(task_run / "plots.gpkg", layer="tasks").set_index("plot_id")
    assert tasks.loc[2, "area_m2"] == pytest.approx(plots.set_index("plot_id").loc[2, "area_m2"], abs=0.01)
    text.loc[1, "area_m2"] = "about 90"
    _rewrite_plots(task_run, text)
    _one_line_error(capsys, main(["tasks", str(task_run)]), "plots.gpkg", "'area_m2' must hold numbers",
                    "plot_id 2", "about 90")


def test_a_missing_lon_is_computed_from_the_plot(task_run, capsys):
    plots = _plots(task_run)
    expected = plots.set_index("plot_id")[["lon", "lat"]]
    plots.loc[0, "lon"] = np.nan
    _rewrite_plots(task_run, plots)
    assert main(["tasks", str(task_run), "-q"]) == 0, capsys.readouterr().err
    tasks = pyogrio.read_dataframe(task_run / "plots.gpkg", layer="tasks").set_index("plot_id")
    assert tasks.loc[1, "lon"] == pytest.approx(expected.loc[1, "lon"], abs=1e-6)
    assert tasks.loc[1, "lat"] == pytest.approx(expected.loc[1, "lat"], abs=1e-6)


def test_repeated_plot_ids_are_refused_and_the_register_rolls_back(survey, capsys):
    plots = _plots(survey["bad"])
    plots.loc[2, "plot_id"] = plots.loc[0, "plot_id"]
    _rewrite_plots(survey["bad"], plots)
    _register_refused(capsys, survey, "plots.gpkg", f"plot_id {plots.loc[0, 'plot_id']} more than once")


def test_a_plot_without_geometry_is_refused_and_the_register_rolls_back(survey, capsys):
    plots = _plots(survey["bad"])
    plots.loc[1, "geometry"] = None
    _rewrite_plots(survey["bad"], plots)
    _register_refused(capsys, survey, "plots.gpkg", "1 plot(s) without a geometry (plot_id 2)")


def test_a_file_passed_as_run_directory_is_named_as_such(tmp_path, capsys):
    """Audit item 4: `tasks some_file.tif` said the file "does not exist"."""
    f = tmp_path / "some_file.tif"
    f.write_bytes(b"II*\x00")
    for args in (["tasks", str(f)], ["review", str(f), "--no-browser"],
                 ["results", "register", str(f), "--register", str(tmp_path / "r.gpkg")]):
        _one_line_error(capsys, main(args), "some_file.tif", "is a file, not a run directory")
    assert not (tmp_path / "r.gpkg").exists()


def test_a_valid_run_still_reads_the_same(task_run):
    from poppyscan.run_folder import read_plots, read_run_json

    plots = read_plots(task_run)
    assert plots["plot_id"].tolist() == [1, 2, 3] and plots["plot_id"].dtype == np.int64
    assert plots["over_500_plants"].tolist() == [False, True, False]
    assert read_run_json(task_run)["inputs"][0]["path"].endswith("mosaic.tif")
    meta = json.loads((task_run / "run.json").read_text(encoding="utf-8"))
    assert read_run_json(task_run) == meta
