"""build_tasks: task table rules, admin join, stable ids, split packages, empty runs, CLI errors."""

from __future__ import annotations

import csv
import shutil
import uuid

import numpy as np
import pandas as pd
import pyogrio
import pytest
from conftest_tasks import VILLAGES, flipped_copy, make_boundaries, make_run

from poppyscan.cli import main
from poppyscan.errors import InputError
from poppyscan.geo.gcj02 import wgs84_to_gcj02
from poppyscan.tasks import build_tasks

OUTPUTS = [
    "plots.gpkg",
    "tasks.csv",
    "tasks.xlsx",
    "tasks.kmz",
    "tasks.gpx",
    "plots.geojson",
    "probability.qml",
]


@pytest.fixture(scope="module")
def plain_run(tmp_path_factory):
    run = make_run(tmp_path_factory.mktemp("plain") / "run", review={3: "rejected", 4: "unsure"})
    summary = build_tasks(run)
    return run, summary


@pytest.fixture(scope="module")
def split_run(tmp_path_factory):
    root = tmp_path_factory.mktemp("split")
    run = make_run(root / "run")
    bnd = make_boundaries(root / "villages.gpkg", "EPSG:4547")
    summary = build_tasks(run, admin=bnd, split_by="village", start=(114.0, 23.0))
    return run, summary


def _tasks(path, layer="tasks"):
    return pyogrio.read_dataframe(path, layer=layer)


def test_summary_and_files(plain_run):
    run, s = plain_run
    assert (s.n_plots, s.n_tasks, s.n_rejected, s.n_criminal) == (6, 5, 1, 1)
    assert s.units == {"all": 5} and s.chips_missing == 0
    for name in OUTPUTS:
        assert (run / name).is_file(), name
    assert sorted(p.name for p in (run / "chips").iterdir()) == [f"T{i:04d}.jpg" for i in range(1, 6)]
    assert (run / "work_orders" / "all.html").is_file()
    assert not (run / "units").exists()
    assert not list(run.glob(".*part*")), "temporary files left behind"


def test_task_table_fields(plain_run):
    run, _ = plain_run
    t = _tasks(run / "plots.gpkg")
    assert t.crs.to_epsg() == 4326
    assert 3 not in set(t["plot_id"]), "desk-rejected plot must get no task"
    assert (t["status"] == "pending").all()
    for c in (
        "result",
        "checked_by",
        "checked_at",
        "photo",
        "notes",
        "plants_eradicated",
        "onsite_lon",
        "onsite_lat",
    ):
        assert t[c].isna().all(), c
    assert len(set(t["task_id"])) == len(t)
    for tid in t["task_id"]:
        assert uuid.UUID(tid).version == 5
    assert sorted(t["route_seq"]) == list(range(1, 6))
    assert list(t["task_code"]) == [f"T{i:04d}" for i in t["route_seq"]]
    assert dict(zip(t["plot_id"], t["review"], strict=True))[4] == "unsure"
    # geometry is the WGS84 master position; GCJ-02 columns are the published transform
    np.testing.assert_allclose(t.geometry.x, t["lon"], atol=1e-9)
    glon, glat = wgs84_to_gcj02(t["lon"].to_numpy(), t["lat"].to_numpy())
    np.testing.assert_allclose(t["gcj02_lon"], glon, atol=1e-6)
    np.testing.assert_allclose(t["gcj02_lat"], glat, atol=1e-6)
    assert (t["gcj02_lon"] - t["lon"]).abs().min() > 1e-3  # inside China: really offset
    for lon, lat, amap, baidu in zip(t["lon"], t["lat"], t["nav_amap"], t["nav_baidu"], strict=True):
        assert (
            amap.startswith("https://uri.amap.com/")
            and "coordinate=wgs84" in amap
            and f"{lon:.6f},{lat:.6f}" in amap
        )
        assert baidu.startswith("https://api.map.baidu.com/") and "coord_type=wgs84" in baidu
        assert f"location={lat:.6f},{lon:.6f}" in baidu  # Baidu wants lat,lng
    np.testing.assert_allclose(t["area_mu"], t["area_m2"] / 666.67, atol=1e-3)


def test_priority_rule_criminal_first_then_prob_times_area(plain_run):
    run, _ = plain_run
    t = _tasks(run / "plots.gpkg").sort_values("priority")
    assert sorted(t["priority"]) == list(range(1, 6))
    assert (
        t.iloc[0]["over_500_plants"]
        and t.iloc[0]["priority_class"] == "criminal"
        and t.iloc[0]["plot_id"] == 2
    )
    rest = t.iloc[1:]
    score = (rest["prob_mean"] * rest["area_m2"]).to_numpy()
    assert (np.diff(score) <= 1e-9).all()


def test_plots_layer_untouched_and_styles_present(plain_run, tmp_path):
    run, _ = plain_run
    plots = _tasks(run / "plots.gpkg", "plots")
    assert len(plots) == 6 and "review" in plots.columns
    assert {"plots", "tasks", "layer_styles"} <= {n for n, _ in pyogrio.list_layers(run / "plots.gpkg")}


def test_task_ids_stable_across_reruns_and_kept_from_existing_layer(tmp_path):
    run = make_run(tmp_path / "run")
    build_tasks(run)
    first = _tasks(run / "plots.gpkg").set_index("plot_id")["task_id"]
    build_tasks(run)
    again = _tasks(run / "plots.gpkg").set_index("plot_id")["task_id"]
    assert again.to_dict() == first.to_dict()
    # ids handed out earlier (e.g. by another version) are kept when the task is within 3 m
    t = _tasks(run / "plots.gpkg")
    handed_out = {pid: str(uuid.uuid4()) for pid in t["plot_id"]}
    t["task_id"] = [handed_out[p] for p in t["plot_id"]]
    t.geometry = t.geometry.translate(xoff=1e-5)  # ~1 m east: a slightly different centroid
    pyogrio.write_dataframe(t, run / "plots.gpkg", layer="tasks")
    build_tasks(run)
    kept = _tasks(run / "plots.gpkg").set_index("plot_id")["task_id"].to_dict()
    assert kept == handed_out
    # a fresh copy of the same run (no tasks layer) derives the same ids again
    copy = tmp_path / "copy"
    make_run(copy)
    shutil.copy(run / "run.json", copy / "run.json")
    build_tasks(copy)
    assert _tasks(copy / "plots.gpkg").set_index("plot_id")["task_id"].to_dict() == first.to_dict()


@pytest.mark.parametrize("crs", ["EPSG:4490", "EPSG:4547"])
def test_admin_join_with_cgcs2000_boundaries_keeps_outside_plots(tmp_path, crs):
    run = make_run(tmp_path / "run")
    bnd = make_boundaries(tmp_path / "villages.gpkg", crs)
    assert pyogrio.read_info(bnd)["crs"] == crs
    s = build_tasks(run, admin=bnd)
    t = _tasks(run / "plots.gpkg").set_index("plot_id")
    assert s.n_tasks == 6 and s.n_outside == 1
    assert t.loc[6, "admin_status"] == "outside" and pd.isna(t.loc[6, "village"])
    assert {t.loc[p, "village"] for p in (1, 2, 3)} == {"曼燕村"}
    assert {t.loc[p, "village"] for p in (4, 5)} == {"曼弄村"}
    assert t.loc[4, "village_code"] == "532822101202" and t.loc[1, "county"] == "勐海县"
    assert (t.drop(index=6)["admin_status"] == "inside").all()


def test_split_by_writes_one_package_per_unit(split_run):
    run, s = split_run
    assert s.units == {"曼弄村": 2, "曼燕村": 3, "outside": 1}
    top = _tasks(run / "plots.gpkg")
    units = sorted(p.name for p in (run / "units").iterdir())
    assert units == sorted(["曼弄村", "曼燕村", "outside"])
    for unit in units:
        d = run / "units" / unit
        t = _tasks(d / "plots.gpkg")
        mine = top[top["unit"] == unit]
        assert set(t["task_id"]) == set(mine["task_id"]) and len(t) == len(mine)
        plots = _tasks(d / "plots.gpkg", "plots")
        assert set(plots["plot_id"]) == set(mine["plot_id"])
        with open(d / "tasks.csv", encoding="utf-8-sig", newline="") as fh:
            rows = list(csv.DictReader(fh))
        assert {r["task_id"] for r in rows} == set(mine["task_id"])
        assert sorted(int(r["route_seq"]) for r in rows) == list(range(1, len(rows) + 1))
        assert sorted(p.name for p in (d / "chips").iterdir()) == sorted(
            f"{c}.jpg" for c in mine["task_code"]
        )
        assert (d / "work_order.html").is_file() and (run / "work_orders" / f"{unit}.html").is_file()
        prefix = {c[0] for c in mine["task_code"]}
        assert len(prefix) == 1 and all(c[1:].isdigit() for c in mine["task_code"])
    # route starts at the task nearest to --start (the village's north-west corner)
    west = top[top["unit"] == "曼燕村"].sort_values("route_seq")
    assert west.iloc[0]["plot_id"] == 1


def test_split_by_village_keeps_same_named_villages_of_two_townships_apart(tmp_path):
    run = make_run(tmp_path / "run")
    (a, b) = VILLAGES
    twins = [a, ("勐海县", "勐混镇", a[2], "532822102201", b[4])]  # one name, two townships
    bnd = make_boundaries(tmp_path / "twins.gpkg", "EPSG:4547", villages=twins)
    s = build_tasks(run, admin=bnd, split_by="village")
    assert s.units == {"勐海县 勐遮镇 曼燕村": 3, "勐海县 勐混镇 曼燕村": 2, "outside": 1}
    top = _tasks(run / "plots.gpkg")
    for unit, town in (("勐海县 勐遮镇 曼燕村", "勐遮镇"), ("勐海县 勐混镇 曼燕村", "勐混镇")):
        mine = top[top["unit"] == unit]
        assert set(mine["township"]) == {town}
        assert sorted(mine["route_seq"]) == list(range(1, len(mine) + 1))
        unit_dir = run / "units" / unit.replace(" ", "_")  # folder names have no spaces
        assert set(_tasks(unit_dir / "plots.gpkg")["task_id"]) == set(mine["task_id"])
    assert len({c[0] for c in top["task_code"]}) == 3  # one letter per unit


def test_rerun_without_split_removes_stale_units(tmp_path):
    run = make_run(tmp_path / "run", n=2)
    bnd = make_boundaries(tmp_path / "v.gpkg", "EPSG:4490")
    build_tasks(run, admin=bnd, split_by="village")
    assert (run / "units").is_dir()
    build_tasks(run, admin=bnd)
    assert not (run / "units").exists()


def test_zero_plots_write_empty_valid_outputs(tmp_path):
    run = make_run(tmp_path / "run", n=0)
    s = build_tasks(run)
    assert s.n_tasks == 0 and s.units == {}
    for name in OUTPUTS:
        assert (run / name).is_file(), name
    assert len(_tasks(run / "plots.gpkg")) == 0
    assert pyogrio.read_info(run / "plots.gpkg", layer="tasks")["geometry_type"] == "Point"
    with open(run / "tasks.csv", encoding="utf-8-sig") as fh:
        assert fh.read().startswith("task_id,task_code,plot_id")
    assert len(pyogrio.read_dataframe(run / "tasks.gpx", layer="waypoints")) == 0


def test_missing_admin_fields_raise_input_error_naming_them(tmp_path):
    run = make_run(tmp_path / "run", n=2)
    bnd = make_boundaries(tmp_path / "v.gpkg", "EPSG:4490", fields=("county", "village"))
    with pytest.raises(InputError, match=r"'township'.*available fields: county, village, village_code"):
        build_tasks(run, admin=bnd)


def test_bad_inputs(tmp_path):
    with pytest.raises(InputError, match="does not exist"):
        build_tasks(tmp_path / "nope")
    run = make_run(tmp_path / "run", n=2)
    with pytest.raises(InputError, match="'start' must be LON,LAT"):
        build_tasks(run, start="23.0")
    with pytest.raises(InputError, match="--split-by field 'village'"):
        build_tasks(run, split_by="village")
    with pytest.raises(InputError, match="needs --admin"):
        build_tasks(run, admin_fields=["village"])


def test_cli_runs_and_prints_summary(tmp_path, capsys):
    run = make_run(tmp_path / "run", n=3)
    bnd = make_boundaries(tmp_path / "v.gpkg", "EPSG:4547")
    code = main(
        [
            "tasks",
            str(run),
            "--admin",
            str(bnd),
            "--admin-fields",
            "county,township,village",
            "--start",
            "114.0,23.0",
            "--split-by",
            "township",
        ]
    )
    out = capsys.readouterr().out
    assert code == 0 and "3 task(s) from 3 plot(s)" in out
    assert (run / "units" / "勐遮镇" / "tasks.kmz").is_file()


def test_cli_one_line_errors(tmp_path, capsys):
    assert main(["tasks", str(tmp_path / "missing")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert (
        len(err) == 1 and err[0].startswith("poppyscan: error: run directory") and "does not exist" in err[0]
    )
    run = make_run(tmp_path / "run", n=1)
    bnd = make_boundaries(tmp_path / "v.gpkg", "EPSG:4490")
    assert main(["tasks", str(run), "--admin", str(bnd), "--admin-fields", "county,xiang,cun"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "'xiang', 'cun'" in err[0] and "available fields: county, township" in err[0]


def test_geographic_plots_layer_and_missing_optional_columns(tmp_path):
    """Plots stored in CGCS2000 lon/lat (mosaic in UTM), without lon/lat/area columns: computed in metres."""
    run = make_run(tmp_path / "run", n=3)
    plots = _tasks(run / "plots.gpkg", "plots")
    ref = plots.set_index("plot_id")
    geo = plots.drop(columns=["lon", "lat", "area_m2", "area_mu"]).to_crs("EPSG:4490")
    pyogrio.write_dataframe(geo, run / "plots.gpkg", layer="plots")
    s = build_tasks(run)
    assert s.n_tasks == 3 and s.chips_missing == 0
    t = _tasks(run / "plots.gpkg").set_index("plot_id")
    np.testing.assert_allclose(t["area_m2"], ref.loc[t.index, "area_m2"], rtol=1e-3)
    np.testing.assert_allclose(t["lon"], ref.loc[t.index, "lon"], atol=1e-6)
    np.testing.assert_allclose(t["lat"], ref.loc[t.index, "lat"], atol=1e-6)
    # the outline is drawn (yellow) around the chip centre, i.e. the reprojection to the mosaic is right
    import cv2

    img = cv2.imread(str(run / "chips" / f"{t.loc[3, 'task_code']}.jpg")).astype(int)
    yellow = (img[:, :, 2] > 180) & (img[:, :, 1] > 180) & (img[:, :, 0] < 110)
    rows, cols = np.nonzero(yellow[30:-30, :])
    assert len(rows) > 50
    assert abs(cols.mean() - 160) < 20 and abs(rows.mean() + 30 - 160) < 20


def test_gcj02_boundaries_are_shifted_back_with_admin_gcj02(tmp_path):
    """A boundary layer digitised on Amap is GCJ-02 (~500 m off): joined raw, every plot falls outside."""
    import shapely

    run = make_run(tmp_path / "run", n=5)
    bnd = make_boundaries(tmp_path / "v.gpkg", "EPSG:4326")
    gdf = pyogrio.read_dataframe(bnd)
    gdf.geometry = shapely.transform(
        gdf.geometry.values, lambda x, y: wgs84_to_gcj02(x, y), interleaved=False
    )
    pyogrio.write_dataframe(gdf, tmp_path / "v_gcj.gpkg")
    assert build_tasks(run, admin=tmp_path / "v_gcj.gpkg").n_outside == 5
    s = build_tasks(run, admin=tmp_path / "v_gcj.gpkg", admin_gcj02=True)
    assert s.n_outside == 0
    t = _tasks(run / "plots.gpkg").set_index("plot_id")
    assert t.loc[1, "village"] == "曼燕村" and t.loc[4, "village"] == "曼弄村"


def test_south_up_mosaic_gives_the_chips_of_the_north_up_one(tmp_path):
    """A mosaic stored south-up (rows reversed, positive y pixel size) is cut into the same north-up chips;
    its run.json bounds as rasterio gives them (bottom > top) still place plots on it."""
    import json

    import cv2
    import rasterio

    from poppyscan import run_inputs

    north = make_run(tmp_path / "north")
    south = make_run(tmp_path / "south")
    flipped_copy(north / "mosaic.tif", south / "mosaic.tif.flipped")
    (south / "mosaic.tif.flipped").replace(south / "mosaic.tif")
    run = json.loads((south / "run.json").read_text(encoding="utf-8"))
    with rasterio.open(south / "mosaic.tif") as src:
        assert src.transform.e > 0
        run["inputs"][0]["bounds"] = list(src.bounds)  # what detect records: bottom > top
    (south / "run.json").write_text(json.dumps(run), encoding="utf-8")
    n, s = build_tasks(north), build_tasks(south)
    assert n.chips_missing == s.chips_missing == 0 and n.n_tasks == s.n_tasks == 6
    chips = sorted(p.name for p in (north / "chips").glob("*.jpg"))
    assert chips == sorted(p.name for p in (south / "chips").glob("*.jpg")) and len(chips) == 6
    for name in chips:
        a = cv2.imread(str(north / "chips" / name)).astype(int)
        b = cv2.imread(str(south / "chips" / name)).astype(int)
        assert np.abs(a - b).mean() < 1.0, name
    # a plot whose mosaic name no input has is placed by the recorded bounds, which run bottom > top here
    inputs = run_inputs.read_inputs(south, run, ())
    plots = _tasks(south / "plots.gpkg", "plots").assign(mosaic="renamed.tif")
    assert [i.index if i else None for i in run_inputs.plot_inputs(inputs, plots)] == [0] * 6


def _package(run) -> dict[str, bytes]:
    """Every file of a run folder (lock files aside) and its bytes."""
    return {
        str(p.relative_to(run)): p.read_bytes()
        for p in sorted(run.rglob("*"))
        if p.is_file() and not p.name.endswith(".lock")
    }


def test_control_characters_in_admin_names_do_not_break_xml_exports(tmp_path, capsys):
    """A stray control character in a township name (``\\x01``) is dropped from XLSX, KML, GPX and the
    work orders, which XML 1.0 cannot carry, instead of failing half-way through the package."""
    import xml.etree.ElementTree as ET
    import zipfile

    from openpyxl import load_workbook

    run = make_run(tmp_path / "run")
    villages = [(county, town + "\x01", village, code, box) for county, town, village, code, box in VILLAGES]
    bnd = make_boundaries(tmp_path / "it.gpkg", "EPSG:4547", villages=villages)
    assert main(["tasks", str(run), "--admin", str(bnd)]) == 0, capsys.readouterr().err
    ws = load_workbook(run / "tasks.xlsx")["tasks"]
    header = [c.value for c in ws[1]]
    towns = {row[header.index("township")] for row in ws.iter_rows(min_row=2, values_only=True)}
    assert towns == {"勐遮镇", None}  # None: plot 6, outside every village
    with zipfile.ZipFile(run / "tasks.kmz") as zf:
        kml = zf.read("doc.kml")
    assert b"\x01" not in kml and any("勐遮镇" in (t or "") for t in ET.fromstring(kml).itertext())
    gpx = (run / "tasks.gpx").read_bytes()
    assert b"\x01" not in gpx and any("勐遮镇" in (t or "") for t in ET.fromstring(gpx).itertext())
    assert "\x01" not in (run / "work_orders" / "all.html").read_text(encoding="utf-8")
    assert set(_tasks(run / "plots.gpkg")["township"].dropna()) == {"勐遮镇\x01"}  # the data keeps its value
    # one package per township: its folder name and its files alike
    assert main(["tasks", str(run), "--admin", str(bnd), "--split-by", "township"]) == 0
    unit = run / "units" / "勐遮镇"
    assert unit.is_dir() and load_workbook(unit / "tasks.xlsx")["tasks"].max_row == 6


def test_a_failed_tasks_run_leaves_the_previous_package_whole(tmp_path):
    """Writing the package fails part-way (a file-size limit stands in for a full disk): every output of
    the previous run is still there, byte for byte, and nothing of the new one; no temporary is left."""
    import resource
    import signal
    import subprocess
    import sys

    run = make_run(tmp_path / "run")
    bnd = make_boundaries(tmp_path / "v.gpkg", "EPSG:4547")
    build_tasks(run)  # the package the field teams have: tasks T0001..T0006, no units/
    before = _package(run)
    cfg = tmp_path / "big_chips.yaml"
    cfg.write_text("tasks:\n  chip_px: 800\n", encoding="utf-8")
    # 800 px chips: each chip (< 100 kB), plots.gpkg (~140 kB), CSV and XLSX fit under the limit; tasks.kmz,
    # which holds all six chips (~500 kB), does not: the write fails after several outputs are made
    limit = 300_000

    def small_files():
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # a write past the limit fails with EFBIG
        resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit))

    cmd = [sys.executable, "-m", "poppyscan", "tasks", str(run), "--admin", str(bnd),
           "--split-by", "township", "--config", str(cfg)]
    proc = subprocess.run(cmd, capture_output=True, text=True, preexec_fn=small_files, timeout=120)
    assert proc.returncode != 0 and "File too large" in proc.stderr, proc.stderr
    assert _package(run) == before
    assert not list(run.glob(".*part*")) and not list(run.glob(".*old*"))
    # without the limit the same command writes the new package whole
    assert subprocess.run(cmd, capture_output=True, timeout=120).returncode == 0
    assert (run / "units" / "勐遮镇" / "tasks.xlsx").is_file()
    assert sorted(p.name for p in (run / "chips").iterdir())[0] == "A001.jpg"
