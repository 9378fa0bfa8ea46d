"""Each plot is cut from the mosaic it was detected on, also when input mosaics share a file name.

Every OpenDroneMap output is ``odm_orthophoto.tif``: a run of two flights has two inputs of one name.
The run folders here are real: two tinted GeoTIFFs named ``result.tif`` in two folders (one in UTM 49N,
one in CGCS2000 Gauss-Krüger), run through ``detect`` with the colour model, then through ``tasks`` and
the review server. The tint tells which mosaic a chip came from: blue ground (input 0) or green (input 1).
"""

from __future__ import annotations

import json
import logging
import shutil
import xml.etree.ElementTree as ET
from pathlib import Path

import cv2
import geopandas as gpd
import numpy as np
import pyogrio
import pytest
import rasterio
from detect_scenes import MAGENTA, ColourPredictor, write_scene
from rasterio.transform import from_origin
from shapely.geometry import Point, box

from poppyscan.cli import main
from poppyscan.config import load_config
from poppyscan.detect import detect
from poppyscan.errors import PlotOffMosaicError
from poppyscan.export.package import probability_rasters
from poppyscan.review.server import ReviewRun
from poppyscan.run_inputs import RunInput, plot_inputs, plot_on_data, read_inputs
from poppyscan.tasks import build_tasks

TINTS = ((40, 110, 200), (40, 200, 40))  # RGB ground of input 0 (blue) and input 1 (green)
PLOTS_PX = ([Point(150, 150).buffer(30), box(380, 380, 440, 440)], [Point(300, 200).buffer(30)])


def _tinted(path: Path, crs: str, origin, plots, tint) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    write_scene(path, plots_px=plots, size=(600, 600), crs=crs, origin=origin)
    with rasterio.open(path, "r+") as ds:
        img = ds.read()
        ground = ~np.all(img == np.array(MAGENTA, np.uint8)[:, None, None], axis=0)
        for band, v in enumerate(tint):
            img[band][ground] = v
        ds.write(img)
    return path


def _detect(root: Path) -> Path:
    a = _tinted(root / "fa" / "result.tif", "EPSG:32649", (400000.0, 2800000.0), PLOTS_PX[0], TINTS[0])
    b = _tinted(root / "fb" / "result.tif", "EPSG:4547", (401000.0, 2800000.0), PLOTS_PX[1], TINTS[1])
    config = load_config(overrides={"detect.window_rows": 256, "detect.run_tasks": False})
    detect([a, b], root / "run", config=config, model=ColourPredictor(), progress=False)
    return root / "run"


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory) -> Path:
    return _detect(tmp_path_factory.mktemp("sources"))


def _copy_run(run_dir: Path, dest: Path, *, legacy: bool = False) -> Path:
    """A copy of the run; ``legacy``: its plots layer without ``mosaic_index``, as written before it."""
    shutil.copytree(run_dir, dest)
    if legacy and "mosaic_index" in pyogrio.read_info(dest / "plots.gpkg", layer="plots")["fields"]:
        plots = pyogrio.read_dataframe(dest / "plots.gpkg", layer="plots").drop(columns="mosaic_index")
        (dest / "plots.gpkg").unlink()
        pyogrio.write_dataframe(plots, dest / "plots.gpkg", layer="plots", driver="GPKG")
    return dest


def _source_of(img: np.ndarray) -> int | None:
    """Which tint dominates a BGR chip: 0 (blue), 1 (green), None (neither: black, grey)."""
    b, g = float(img[..., 0].mean()), float(img[..., 1].mean())
    if max(b, g) < 60 or abs(b - g) < 30:
        return None
    return 0 if b > g else 1


def _task_sources(run_dir: Path) -> dict[int, int | None]:
    tasks = pyogrio.read_dataframe(run_dir / "plots.gpkg", layer="tasks")
    out = {}
    for pid, chip in zip(tasks["plot_id"], tasks["chip"], strict=True):
        out[int(pid)] = _source_of(cv2.imread(str(run_dir / chip))) if chip else None
    return out


def _expected(run_dir: Path) -> dict[int, int]:
    """The input each plot lies on: 0 within the 30 m of input 0 (UTM 49N, the plots' CRS), else 1 (the
    Gauss-Krüger 114E mosaic lies ~300 km east)."""
    plots = pyogrio.read_dataframe(run_dir / "plots.gpkg", layer="plots")
    east = plots.geometry.centroid.x > 400000 + 30
    return {int(p): int(e) for p, e in zip(plots["plot_id"], east, strict=True)}


def test_detect_names_each_plots_input_by_index(run_dir):
    plots = gpd.read_file(run_dir / "plots.gpkg", layer="plots")
    run = json.loads((run_dir / "run.json").read_text())
    assert [Path(i["path"]).name for i in run["inputs"]] == ["result.tif", "result.tif"]
    assert (plots["mosaic"] == "result.tif").all()
    assert plots["mosaic_index"].dtype == np.int64 and sorted(plots["mosaic_index"]) == [0, 0, 1]
    expected = _expected(run_dir)
    assert [expected[int(p)] for p in plots["plot_id"]] == plots["mosaic_index"].tolist()


def test_tasks_cut_each_chip_from_its_own_mosaic(run_dir, tmp_path):
    run = _copy_run(run_dir, tmp_path / "run")
    summary = build_tasks(run)
    assert summary.chips_missing == 0
    assert _task_sources(run) == _expected(run)


def test_tasks_on_a_run_written_before_mosaic_index_place_plots_by_position(run_dir, tmp_path):
    expected = _expected(run_dir)
    run = _copy_run(run_dir, tmp_path / "old", legacy=True)
    assert "mosaic_index" not in pyogrio.read_info(run / "plots.gpkg", layer="plots")["fields"]
    assert build_tasks(run).chips_missing == 0
    assert _task_sources(run) == expected


def _moved_run(run_dir, tmp_path):
    """A copy of the run whose second mosaic was replaced by a copy of the first: same name, another place."""
    root = tmp_path / "moved"
    shutil.copytree(run_dir.parent / "fa", root / "fa")
    (root / "fb").mkdir()
    shutil.copy(root / "fa" / "result.tif", root / "fb" / "result.tif")
    run = _copy_run(run_dir, root / "run")
    meta = json.loads((run / "run.json").read_text())
    for item, folder in zip(meta["inputs"], ("fa", "fb"), strict=True):
        item["path"] = str(root / folder / "result.tif")
    (run / "run.json").write_text(json.dumps(meta))
    return run


def test_a_plot_outside_the_mosaic_at_its_path_gets_no_chip_and_a_warning(run_dir, tmp_path, caplog, capsys):
    run = _moved_run(run_dir, tmp_path)
    with caplog.at_level(logging.WARNING, logger="poppyscan"):
        assert main(["tasks", str(run)]) == 0
    assert "1 without an image chip" in capsys.readouterr().out
    sources = _task_sources(run)
    assert sources == {p: (None if m == 1 else 0) for p, m in _expected(run).items()}
    warned = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert any("outside the valid data of mosaic" in w and "fb" in w for w in warned), warned


def test_review_shows_each_plot_from_its_own_mosaic_new_and_old_runs(run_dir, tmp_path):
    expected = _expected(run_dir)
    for name, legacy in (("new", False), ("old", True)):
        review = ReviewRun(_copy_run(run_dir, tmp_path / name, legacy=legacy))
        for pid, source in expected.items():
            img = cv2.imdecode(np.frombuffer(review.chip(pid), np.uint8), cv2.IMREAD_COLOR)
            assert _source_of(img) == source, (name, pid)


def test_review_never_serves_a_blank_chip_nor_a_chip_cached_from_another_input(run_dir, tmp_path, caplog):
    run = _moved_run(run_dir, tmp_path)
    expected = _expected(run)
    first = next(p for p, m in expected.items() if m == 0)
    stale = run / "review" / "chips" / f"{first}_480px_16m.jpg"  # the name chips were cached under before
    stale.parent.mkdir(parents=True)
    stale.write_bytes(cv2.imencode(".jpg", np.zeros((480, 480, 3), np.uint8))[1].tobytes())
    review = ReviewRun(run)
    with caplog.at_level(logging.WARNING, logger="poppyscan"):
        chips = {pid: review.chip(pid) for pid in expected}
    for pid, source in expected.items():
        img = cv2.imdecode(np.frombuffer(chips[pid], np.uint8), cv2.IMREAD_COLOR)
        assert _source_of(img) == (0 if source == 0 else None), pid
    off = [p for p, m in expected.items() if m == 1]
    assert any(f"no chip for plot {off[0]}" in r.getMessage() and "outside" in r.getMessage()
               for r in caplog.records)
    assert not list((run / "review" / "chips").glob(f"{off[0]}_*.jpg"))  # placeholders are not cached


def test_plot_on_data_sees_outside_and_nodata(tmp_path):
    scene = write_scene(tmp_path / "m.tif", plots_px=[], size=(200, 200), mask="nodata",
                        footprint_px=box(0, 0, 100, 200))
    t = scene.transform
    with rasterio.open(scene.path) as src:
        def at(col, row, r=5):
            x, y = t @ (col, row)
            return Point(x, y).buffer(r * t.a)

        assert plot_on_data(src, at(50, 100))
        assert plot_on_data(src, at(99, 100, r=8))  # partly on data
        assert not plot_on_data(src, at(150, 100))  # inside the raster, over nodata only
        assert not plot_on_data(src, at(450, 100))  # outside the raster
        with pytest.raises(PlotOffMosaicError):
            from poppyscan.review.imagery import render_chip

            render_chip(scene.path, at(150, 100))


def test_inputs_resolve_by_index_name_and_position(tmp_path):
    items = []
    for folder, x0 in (("a", 400000.0), ("b", 400100.0)):  # two 5 m mosaics 100 m apart, one file name
        (tmp_path / folder).mkdir()
        scene = write_scene(tmp_path / folder / "odm.tif", plots_px=[], size=(100, 100),
                            origin=(x0, 2800000.0))
        with rasterio.open(scene.path) as src:
            items.append({"path": str(scene.path), "crs": "EPSG:32649", "bounds": list(src.bounds)})
    run = {"crs": "EPSG:32649", "inputs": items}
    inputs = read_inputs(tmp_path / "run", run)
    assert [i.index for i in inputs] == [0, 1] and all(i.exists for i in inputs)
    in_b = Point(400102.0, 2799998.0).buffer(1)
    plots = gpd.GeoDataFrame({"mosaic": ["odm.tif"] * 4, "mosaic_index": [1, None, 0, 7]},
                             geometry=[in_b, in_b, in_b, in_b], crs="EPSG:32649")
    # index 1; no index: by position; index 0 is trusted (its file name fits); index 7: by position
    assert [r.index for r in plot_inputs(inputs, plots)] == [1, 1, 0, 1]
    named = plots.assign(mosaic=["other.tif"] * 4, mosaic_index=[0] * 4)
    assert [r.index for r in plot_inputs(inputs, named)] == [1] * 4  # a name that fits no input: position
    far = plots.assign(geometry=[Point(0, 0).buffer(1)] * 4, mosaic_index=[None] * 4)
    assert plot_inputs(inputs, far) == [None] * 4


def _odm(path: Path, left: float, valid_cols: int) -> dict:
    """A 40 m x 40 m odm_orthophoto.tif (0.1 m pixels, nodata 0) with imagery in its first ``valid_cols``
    columns only, as run.json records it."""
    path.parent.mkdir(parents=True, exist_ok=True)
    data = np.zeros((3, 400, 400), np.uint8)
    data[:, :, :valid_cols] = 120
    with rasterio.open(path, "w", driver="GTiff", width=400, height=400, count=3, dtype="uint8", nodata=0,
                       crs="EPSG:32649", transform=from_origin(left, 2800000.0, 0.1, 0.1)) as dst:
        dst.write(data)
        return {"path": str(path), "crs": "EPSG:32649", "bounds": list(dst.bounds), "width": 400,
                "height": 400}


def test_overlapping_inputs_of_one_name_go_to_the_one_with_pixels_under_the_plot(tmp_path):
    """Flight A has imagery in its west half only, flight B starts 20 m further east: a plot at 32-36 m
    lies in both bounding boxes, on B's pixels and A's nodata (the review's /tmp/rev/odm case)."""
    x0 = 500000.0
    run = {"crs": "EPSG:32649", "inputs": [_odm(tmp_path / "A" / "odm_orthophoto.tif", x0, 200),
                                           _odm(tmp_path / "B" / "odm_orthophoto.tif", x0 + 20, 400)]}
    on_b = box(x0 + 32, 2800000.0 - 22, x0 + 36, 2800000.0 - 18)
    on_a = box(x0 + 5, 2800000.0 - 22, x0 + 9, 2800000.0 - 18)
    plots = gpd.GeoDataFrame({"mosaic": ["odm_orthophoto.tif"] * 3, "mosaic_index": [None, None, 0]},
                             geometry=[on_b, on_a, on_b], crs="EPSG:32649")
    inputs = read_inputs(tmp_path / "run", run)
    assert [i.index for i in plot_inputs(inputs, plots)] == [1, 0, 0]  # a recorded index is not doubted
    assert [i.index for i in plot_inputs(inputs, plots.to_crs(4326))] == [1, 0, 0]
    assert [i and i.index for i in plot_inputs(inputs, plots, guess=False)] == [None, None, 0]
    shutil.move(tmp_path / "B", tmp_path / "B-elsewhere")  # a file to read is missing: the bounds decide
    gone = read_inputs(tmp_path / "run", run)
    assert [i.index for i in plot_inputs(gone, plots)] == [0, 0, 0]


def test_a_same_named_file_beside_a_moved_run_is_taken_only_if_it_lies_where_recorded(tmp_path):
    scene = write_scene(tmp_path / "odm.tif", plots_px=[], size=(100, 100))
    with rasterio.open(scene.path) as src:
        bounds = list(src.bounds)
    run_dir = tmp_path / "laptop" / "run"
    run_dir.mkdir(parents=True)
    gone = str(tmp_path / "gone" / "odm.tif")
    shutil.copy(scene.path, tmp_path / "laptop" / "odm.tif")
    ok = read_inputs(run_dir, {"inputs": [{"path": gone, "crs": "EPSG:32649", "bounds": bounds}]})
    assert ok[0].exists and ok[0].path == tmp_path / "laptop" / "odm.tif"
    shifted = [bounds[0] + 500, bounds[1], bounds[2] + 500, bounds[3]]
    other = read_inputs(run_dir, {"inputs": [{"path": gone, "crs": "EPSG:32649", "bounds": shifted}]})
    assert not other[0].exists and other[0].path == Path(gone)
    assert isinstance(other[0], RunInput)


def test_every_probability_raster_gets_its_qgis_style(run_dir, tmp_path):
    run = _copy_run(run_dir, tmp_path / "run")
    assert json.loads((run / "run.json").read_text())["outputs"]["probability"] == [
        "probability.tif", "probability_2.tif"]
    files = build_tasks(run).files
    for name in ("probability.qml", "probability_2.qml"):
        assert run / name in files
        root = ET.parse(run / name).getroot()
        assert root.find("pipe/rasterrenderer").get("type") == "singlebandpseudocolor"
    # a run.json without outputs (older or hand-made): the rasters found in the folder, in order
    for n in (3, 10):
        shutil.copy(run / "probability_2.tif", run / f"probability_{n}.tif")
    (run / "probability_x.tif").write_bytes(b"")
    names = [p.name for p in probability_rasters(run, {})]
    assert names == ["probability.tif", "probability_2.tif", "probability_3.tif", "probability_10.tif"]


def test_a_merged_plot_takes_name_and_index_from_the_same_member():
    from poppyscan.plots import COLUMNS, merge_overlapping, plot_table

    x, y = 400000.0, 2800000.0
    dets = gpd.GeoDataFrame(
        {"prob_mean": [0.9, 0.8, 0.7], "prob_max": [0.95, 0.99, 0.9], "mosaic": ["odm.tif"] * 3,
         "source": [0, 1, 2]},
        geometry=[box(x, y, x + 6, y + 6), box(x + 3, y, x + 9, y + 6), box(x + 50, y, x + 56, y + 6)],
        crs="EPSG:32649")
    plots = plot_table(merge_overlapping(dets), plants_per_m2=6.0, criminal_plants=500, min_area_m2=1.0,
                       model_version="t")
    assert list(plots.columns) == COLUMNS + ["geometry"] and COLUMNS.index("mosaic_index") > 0
    assert sorted(zip(plots.area_m2.round(), plots.mosaic_index, plots.prob_max, strict=True)) == [
        (36.0, 2, 0.9), (54.0, 1, 0.99)]  # the clearest view (highest prob_max) of the merged pair
