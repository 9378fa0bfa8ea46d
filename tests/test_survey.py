"""Survey register: a real GeoPackage, runs registered idempotently, plots linked into sites across years."""

from __future__ import annotations

import json
import shutil
import sqlite3

import geopandas as gpd
import pyogrio
import pytest
from shapely.geometry import box
from survey_helpers import CRS, SPECS_2025, SPECS_2026, X0, Y0, PlotSpec, dump, make_run, two_year_survey

from poppyscan.errors import InputError
from poppyscan.survey import SCHEMA_VERSION, register_run


def test_register_is_a_geopackage_gis_can_read(tmp_path):
    make_run(tmp_path / "run", SPECS_2025, tag="a")
    reg = tmp_path / "reg.gpkg"
    summary = register_run(reg, tmp_path / "run")
    assert (
        summary.created and summary.n_plots == 4 and summary.n_tasks_added == 4 and summary.n_new_sites == 4
    )
    assert summary.surveyed_ha == pytest.approx(16.0, rel=1e-3)  # 400 m x 400 m mosaic bounds
    layers = dict(pyogrio.list_layers(reg))
    assert {"runs", "sites", "plots", "tasks", "status_history"} <= set(layers)
    plots = gpd.read_file(reg, layer="plots", engine="pyogrio")
    assert plots.crs.to_epsg() == 4326 and len(plots) == 4
    # the stored polygons are the detected ones (back in the mosaic CRS: 6 m squares at the right place)
    back = plots.to_crs(CRS).sort_values("plot_id")
    assert back.geometry.iloc[0].area == pytest.approx(36.0, rel=1e-4)
    assert back.geometry.iloc[0].centroid.distance(box(X0 - 3, Y0 - 3, X0 + 3, Y0 + 3).centroid) < 0.01
    tasks = gpd.read_file(reg, layer="tasks", engine="pyogrio")
    assert set(tasks["status"]) == {"pending"} and set(tasks["township"]) == {"甲镇", "乙镇"}
    with sqlite3.connect(reg) as conn:
        assert conn.execute("SELECT value FROM survey_meta WHERE key='schema_version'").fetchone()[0] == str(
            SCHEMA_VERSION
        )
        assert conn.execute("PRAGMA application_id").fetchone()[0] == 0x47504B47
        run = conn.execute("SELECT flight_date, year, mosaics, model_version FROM runs").fetchone()
    assert run == ("2025-04-20", 2025, '["flight.tif"]', "0.1.0")


def test_register_twice_changes_nothing_and_same_mosaics_are_refused(tmp_path):
    make_run(tmp_path / "run", SPECS_2025, tag="a")
    reg = tmp_path / "reg.gpkg"
    register_run(reg, tmp_path / "run")
    before = dump(reg)
    again = register_run(reg, tmp_path / "run")
    assert not again.created and again.run_id == 1 and again.n_tasks_added == 0
    assert dump(reg) == before
    # detect re-run over the same mosaics (new run.json): refused, the flight is not counted twice
    shutil.copytree(tmp_path / "run", tmp_path / "rerun")
    meta = json.loads((tmp_path / "rerun" / "run.json").read_text())
    meta["created"] = "later"
    (tmp_path / "rerun" / "run.json").write_text(json.dumps(meta))
    with pytest.raises(InputError, match="already registered as run #1"):
        register_run(reg, tmp_path / "rerun")
    assert dump(reg) == before


def test_tasks_made_after_registration_are_added_on_reregister(tmp_path):
    make_run(tmp_path / "run", SPECS_2025, tag="a", with_tasks=False)
    reg = tmp_path / "reg.gpkg"
    assert register_run(reg, tmp_path / "run").n_tasks_added == 0
    make_run(tmp_path / "run", SPECS_2025, tag="a")  # `poppyscan tasks` run later: same plots, a tasks layer
    again = register_run(reg, tmp_path / "run")
    assert not again.created and again.n_tasks_added == 4
    with sqlite3.connect(reg) as conn:
        linked = conn.execute("SELECT count(*) FROM tasks t JOIN plots p ON p.fid = t.plot_fid").fetchone()[0]
    assert linked == 4


def test_flight_date_missing_is_asked_for_by_option(tmp_path):
    make_run(tmp_path / "run", SPECS_2025[:1], tag="a", flight_date=None)
    reg = tmp_path / "reg.gpkg"
    with pytest.raises(InputError, match="--flight-date"):
        register_run(reg, tmp_path / "run")
    with pytest.raises(InputError, match="not a date"):
        register_run(reg, tmp_path / "run", flight_date="18/04/2026")
    assert register_run(reg, tmp_path / "run", flight_date="2026-04-18").flight_date == "2026-04-18"


def test_not_a_run_dir_and_not_a_register_are_named(tmp_path):
    (tmp_path / "empty").mkdir()
    with pytest.raises(InputError, match="run.json"):
        register_run(tmp_path / "reg.gpkg", tmp_path / "empty")
    other = tmp_path / "other.gpkg"
    gpd.GeoDataFrame({"a": [1]}, geometry=[box(0, 0, 1, 1)], crs=4326).to_file(other, engine="pyogrio")
    make_run(tmp_path / "run", SPECS_2025[:1], tag="a")
    with pytest.raises(InputError, match="not a poppyscan survey register"):
        register_run(other, tmp_path / "run")
    reg = tmp_path / "reg.gpkg"
    register_run(reg, tmp_path / "run")
    with sqlite3.connect(reg) as conn:
        conn.execute("UPDATE survey_meta SET value='99' WHERE key='schema_version'")
    with pytest.raises(InputError, match="newer"):
        register_run(reg, tmp_path / "run")


def test_second_flight_links_plots_to_existing_sites(tmp_path):
    s = two_year_survey(tmp_path)
    assert s["reg2026"].n_linked == 2 and s["reg2026"].n_new_sites == 1
    with sqlite3.connect(s["register"]) as conn:
        site = dict(
            conn.execute(
                "SELECT r.year || '/' || p.plot_id, p.site_id FROM plots p JOIN runs r ON r.fid = p.run_id"
            )
        )
        sites = conn.execute(
            "SELECT fid, first_seen, last_seen, n_detections FROM sites ORDER BY fid"
        ).fetchall()
    assert site["2026/1"] == site["2025/1"]  # overlapping polygon
    assert (
        site["2026/2"] == site["2025/3"]
    )  # 10 m apart, no overlap, within survey.site_link_distance_m (15 m)
    assert site["2026/3"] not in {site[f"2025/{i}"] for i in range(1, 5)}
    assert len(sites) == 5
    assert (site["2025/1"], "2025-04-20", "2026-04-18", 2) in sites


def test_link_distance_is_respected_and_plots_of_one_run_stay_separate_sites(tmp_path):
    make_run(tmp_path / "a", [PlotSpec(0, 0)], tag="a", mosaic="a.tif")
    make_run(
        tmp_path / "b", [PlotSpec(20, 0), PlotSpec(30, 0)], tag="b", mosaic="b.tif", flight_date="2026-04-01"
    )
    reg = tmp_path / "reg.gpkg"
    register_run(reg, tmp_path / "a", link_distance_m=15)
    b = register_run(reg, tmp_path / "b", link_distance_m=15)
    # 20 m from the 2025 plot: a new place; the two 2026 plots 10 m apart are two places
    assert b.n_linked == 0 and b.n_new_sites == 2
    # a plot 12 m from the 2025 plot and 8 m from the first 2026 plot joins the nearer one's site
    make_run(tmp_path / "c", [PlotSpec(12, 0)], tag="c", mosaic="c.tif", flight_date="2027-04-01")
    assert register_run(reg, tmp_path / "c", link_distance_m=15).n_linked == 1
    with sqlite3.connect(reg) as conn:
        site = dict(conn.execute("SELECT r.year || '/' || p.plot_id, p.site_id "
                                 "FROM plots p JOIN runs r ON r.fid = p.run_id"))
    assert site["2027/1"] == site["2026/1"] != site["2025/1"]


def test_admin_boundaries_split_the_surveyed_area(tmp_path):
    make_run(tmp_path / "run", SPECS_2025, tag="a")
    west = box(X0 - 1000, Y0 - 1000, X0, Y0 + 1000)
    east = box(X0, Y0 - 1000, X0 + 100, Y0 + 1000)  # 100 m wide strip; the rest of the flight is outside
    units = gpd.GeoDataFrame(
        {"county": ["勐县", "勐县"], "township": ["甲镇", "乙镇"], "village": ["一村", "二村"]},
        geometry=[west, east],
        crs=CRS,
    ).to_crs(4490)  # CGCS2000, as boundary files come
    units.to_file(tmp_path / "units.gpkg", engine="pyogrio")
    reg = tmp_path / "reg.gpkg"
    register_run(reg, tmp_path / "run", admin=tmp_path / "units.gpkg")
    with sqlite3.connect(reg) as conn:
        ha = {r[0]: r[1] for r in conn.execute("SELECT township, surveyed_ha FROM run_units")}
    assert ha["甲镇"] == pytest.approx(8.0, rel=1e-3)
    assert ha["乙镇"] == pytest.approx(4.0, rel=1e-3)
    assert ha[""] == pytest.approx(4.0, rel=1e-3)


def test_footprint_from_probability_raster(tmp_path):
    rasterio = pytest.importorskip("rasterio")
    import numpy as np
    from rasterio.transform import from_origin

    make_run(tmp_path / "run", SPECS_2026, tag="p")
    data = np.full((200, 200), 255, np.uint8)
    data[:100, :] = 10  # only the northern half was flown: 200 m x 100 m at 1 m/px
    with rasterio.open(
        tmp_path / "run" / "probability.tif",
        "w",
        driver="GTiff",
        width=200,
        height=200,
        count=1,
        dtype="uint8",
        crs=CRS,
        transform=from_origin(X0 - 100, Y0 + 100, 1, 1),
        nodata=255,
    ) as dst:
        dst.write(data, 1)
    summary = register_run(tmp_path / "reg.gpkg", tmp_path / "run")
    assert summary.surveyed_ha == pytest.approx(2.0, rel=1e-3)


def _prob_raster(path, crs, transform, data):
    import rasterio

    with rasterio.open(path, "w", driver="GTiff", width=data.shape[1], height=data.shape[0], count=1,
                       dtype="uint8", crs=crs, transform=transform, nodata=255) as dst:
        dst.write(data, 1)


def test_footprint_is_the_union_of_every_probability_raster_in_any_crs(tmp_path):
    """probability.tif (UTM, 200 m x 100 m valid) and probability_2.tif (WGS84, a quarter over it):
    both count, the overlap once, whether run.json lists them or they are only found in the folder."""
    import numpy as np
    from rasterio.transform import from_origin

    make_run(tmp_path / "run", SPECS_2026, tag="p")
    data = np.full((200, 200), 255, np.uint8)
    data[:100, :] = 10  # northern half flown: x in [X0-100, X0+100], y in [Y0, Y0+100]
    _prob_raster(tmp_path / "run" / "probability.tif", CRS, from_origin(X0 - 100, Y0 + 100, 1, 1), data)
    # second mosaic: a WGS84 raster over x in [X0, X0+200], y in [Y0+50, Y0+150] (a quarter on the first)
    second = gpd.GeoSeries([box(X0, Y0 + 50, X0 + 200, Y0 + 150)], crs=CRS).to_crs(4326)
    w, s, e, n = second.total_bounds
    _prob_raster(tmp_path / "run" / "probability_2.tif", "EPSG:4326",
                 from_origin(w, n, (e - w) / 400, (n - s) / 400), np.full((400, 400), 20, np.uint8))
    first = box(X0 - 100, Y0, X0 + 100, Y0 + 100)
    union = first.union(gpd.GeoSeries([box(w, s, e, n).segmentize(1e-5)], crs=4326).to_crs(CRS).iloc[0])
    assert union.area / 10_000 == pytest.approx(3.5, rel=0.01)  # 2 ha + 2 ha - 0.5 ha overlap
    # run.json without "outputs" (older runs): the rasters in the folder count
    assert register_run(tmp_path / "a.gpkg", tmp_path / "run").surveyed_ha == pytest.approx(
        union.area / 10_000, rel=2e-3)
    meta = json.loads((tmp_path / "run" / "run.json").read_text())
    meta["outputs"] = {"plots": "plots.gpkg", "probability": ["probability.tif", "probability_2.tif"]}
    (tmp_path / "run" / "run.json").write_text(json.dumps(meta))
    summary = register_run(tmp_path / "b.gpkg", tmp_path / "run")
    assert summary.surveyed_ha == pytest.approx(union.area / 10_000, rel=2e-3)
    runs = gpd.read_file(tmp_path / "b.gpkg", layer="runs", engine="pyogrio")
    assert runs.to_crs(CRS).geometry.iloc[0].area == pytest.approx(union.area, rel=2e-3)


def test_a_listed_probability_raster_that_is_missing_counts_with_its_mosaic_bounds(tmp_path):
    import numpy as np
    from rasterio.transform import from_origin

    make_run(tmp_path / "run", SPECS_2026, tag="m", extent_m=400.0)
    data = np.full((100, 100), 10, np.uint8)  # 1 ha inside the mosaic bounds
    _prob_raster(tmp_path / "run" / "probability.tif", CRS, from_origin(X0 + 300, Y0 + 50, 1, 1), data)
    meta = json.loads((tmp_path / "run" / "run.json").read_text())
    far = [X0 + 250, Y0 - 50, X0 + 350, Y0 + 50]  # a second mosaic, 1 ha, half on the first raster
    meta["inputs"] = [meta["inputs"][0] | {"bounds": [X0 + 300, Y0 - 50, X0 + 400, Y0 + 50]},
                      meta["inputs"][0] | {"path": "/data/b.tif", "bounds": far}]
    meta["outputs"] = {"probability": ["probability.tif", "probability_2.tif"]}
    (tmp_path / "run" / "run.json").write_text(json.dumps(meta))
    assert register_run(tmp_path / "reg.gpkg", tmp_path / "run").surveyed_ha == pytest.approx(1.5, rel=1e-3)


def test_detect_over_two_mosaics_registers_the_union_of_their_footprints(tmp_path):
    """The audit's case with the real pipeline: detect two mosaics (the second in another CRS, half
    over the first), register: the surveyed area is the union of both, not the first alone."""
    from detect_scenes import ORIGINS, ColourPredictor, write_scene
    from pyproj import Transformer

    from poppyscan.detect import detect

    a = write_scene(tmp_path / "a.tif", plots_px=[box(100, 100, 160, 160)], crs="EPSG:32649")
    x, y = Transformer.from_crs("EPSG:32649", "EPSG:4547", always_xy=True).transform(*ORIGINS["EPSG:32649"])
    b = write_scene(tmp_path / "b.tif", plots_px=[box(400, 400, 460, 460)], crs="EPSG:4547",
                    origin=(x + 15.0, y), seed=1)  # 30 m x 30 m, 15 m east of the first
    detect([a.path, b.path], tmp_path / "run", model=ColourPredictor(), progress=False)
    assert (tmp_path / "run" / "probability_2.tif").is_file()
    summary = register_run(tmp_path / "reg.gpkg", tmp_path / "run", flight_date="2026-04-18")
    boxes = [gpd.GeoSeries([box(*rasterio_bounds(p)).segmentize(1.0)], crs=s.crs).to_crs(CRS).iloc[0]
             for p, s in ((a.path, a), (b.path, b))]
    assert boxes[0].area / 10_000 == pytest.approx(0.09, rel=1e-3)
    expected = boxes[0].union(boxes[1]).area / 10_000  # ~0.135 ha: 0.09 + 0.09 - the overlap
    assert expected > 0.12
    assert summary.surveyed_ha == pytest.approx(expected, rel=0.01)


def rasterio_bounds(path):
    import rasterio

    with rasterio.open(path) as ds:
        return tuple(ds.bounds)


def test_a_version_1_register_is_migrated_and_registering_again_takes_over_desk_decisions(tmp_path):
    from register_versions import V1_DDL, as_version, schema, version_of

    from poppyscan.review.store import save_decision
    from poppyscan.survey import compute_stats

    make_run(tmp_path / "run", SPECS_2025, tag="a", with_tasks=False)
    reg = tmp_path / "reg.gpkg"
    register_run(reg, tmp_path / "run")
    now = schema(reg)
    as_version(reg, 1)  # what poppyscan <= 0.4 wrote: no desk decisions, n_skipped, mosaic_index, index
    assert schema(reg) == schema(V1_DDL)  # a faithful version 1: every migration step has work to do
    save_decision(tmp_path / "run", 2, "rejected", derived=False)
    before = reg.read_bytes()
    assert compute_stats(reg, by="all").rows[0]["plots_found"] == 4  # read as it is: nothing dismissed yet
    assert reg.read_bytes() == before and version_of(reg) == 1  # a reader never upgrades the file
    again = register_run(reg, tmp_path / "run")  # a writer does, every step, once
    assert version_of(reg) == SCHEMA_VERSION and schema(reg) == now
    assert not again.created and again.n_updated == 1
    assert "1 plot(s) with a new desk decision" in again.describe()
    row = compute_stats(reg, by="all").rows[0]
    assert (row["plots_found"], row["dismissed"], row["sites"], row["pending"]) == (3, 1, 3, 3)
