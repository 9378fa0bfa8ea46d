"""End-to-end ``detect`` on small painted GeoTIFFs.

Geometry tests use :class:`detect_scenes.ColourPredictor` (magenta = poppy) in place of the network, so
what is tested is the pipeline: tiling, resampling, blending, seams, masks, CRSs, merging, outputs.
One CLI test runs the real default bundle to check the wiring and the output contract.
"""

from __future__ import annotations

import hashlib
import json
import re
from pathlib import Path

import geopandas as gpd
import numpy as np
import pyogrio
import pytest
import rasterio
import shapely
from detect_scenes import ColourPredictor, write_scene
from pyproj import Geod, Transformer
from rasterio.windows import Window
from shapely import affinity
from shapely.geometry import Point, box

from poppyscan.cli import main
from poppyscan.config import load_config
from poppyscan.detect import detect
from poppyscan.errors import InputError, OutputExistsError
from poppyscan.plots import COLUMNS

REPO = Path(__file__).resolve().parent.parent
GEOD = Geod(ellps="WGS84")


def cfg(**detect_keys):
    keys = {"detect.window_rows": 256, "detect.run_tasks": False}
    keys.update({f"detect.{k}": v for k, v in detect_keys.items()})
    return load_config(overrides=keys)


def run(paths, out, **kw):
    kw.setdefault("config", cfg())
    kw.setdefault("model", ColourPredictor())
    return detect([paths] if isinstance(paths, Path) else paths, out, progress=False, **kw)


def read_plots(run_dir: Path) -> gpd.GeoDataFrame:
    return gpd.read_file(run_dir / "plots.gpkg", layer="plots")


def lonlat(geom, crs):
    c = geom.centroid
    if crs == "EPSG:4326":
        return c.x, c.y
    return Transformer.from_crs(crs, "EPSG:4326", always_xy=True).transform(c.x, c.y)


def to_lonlat(geom, crs):
    if crs == "EPSG:4326":
        return geom
    tr = Transformer.from_crs(crs, "EPSG:4326", always_xy=True)
    return shapely.transform(geom, lambda xy: np.column_stack(tr.transform(xy[:, 0], xy[:, 1])))


def test_plot_across_tile_and_window_borders_is_one_polygon_with_the_right_area(tmp_path):
    # tiles 128 px with 32 px overlap start every 96 px; windows of 256 rows
    plot = box(70, 200, 150, 330)  # crosses tile columns 96/128, tile rows 192..320, window seam 256
    scene = write_scene(tmp_path / "m.tif", plots_px=[plot], size=(600, 600), gsd=0.05)
    summary = run(scene.path, tmp_path / "run")
    plots = read_plots(tmp_path / "run")
    assert summary.plots == len(plots) == 1
    assert plots.area_m2[0] == pytest.approx(80 * 130 * 0.05**2, rel=0.01)
    assert plots.geometry[0].symmetric_difference(scene.plots_crs()[0]).area < 0.02 * 26
    assert plots.prob_max[0] == 1.0 and plots.prob_mean[0] > 0.95


SHAPES = [Point(150, 160).buffer(30), affinity.rotate(box(300, 100, 380, 150), 33),
          affinity.scale(Point(170, 420).buffer(40), 1.0, 0.6), box(390, 380, 470, 470)]


@pytest.mark.parametrize("gsd", [0.05, 0.04])  # read as stored, and resampled
@pytest.mark.parametrize("flip", ["rows", "columns", "both"])
def test_a_south_up_or_east_to_west_mosaic_gives_the_plots_of_its_north_up_original(tmp_path, flip, gsd):
    scene = write_scene(tmp_path / "m.tif", plots_px=SHAPES, size=(500, 560), gsd=gsd, mask="alpha")
    with rasterio.open(scene.path) as src:
        profile, data, t = src.profile, src.read(), src.transform
    rows, cols = flip in ("rows", "both"), flip in ("columns", "both")
    h, w = data.shape[1:]
    profile["transform"] = rasterio.Affine(-t.a if cols else t.a, 0, t.c + t.a * w if cols else t.c,
                                           0, -t.e if rows else t.e, t.f + t.e * h if rows else t.f)
    with rasterio.open(tmp_path / "flipped.tif", "w", **profile) as dst:
        dst.write(data[:, ::-1 if rows else 1, ::-1 if cols else 1])
    run(scene.path, tmp_path / "a")
    run(tmp_path / "flipped.tif", tmp_path / "b")
    a, b = read_plots(tmp_path / "a"), read_plots(tmp_path / "b")
    assert len(a) == len(SHAPES) and len(b) == len(a)
    for ga, gb in zip(a.geometry, b.geometry, strict=True):  # plot_id order: north to south, west to east
        assert ga.symmetric_difference(gb).area < 0.02 * ga.area
    with rasterio.open(tmp_path / "a" / "probability.tif") as pa, \
            rasterio.open(tmp_path / "b" / "probability.tif") as pb:
        assert pb.transform == pa.transform and pb.transform.e < 0  # written north-up
        assert np.abs(pa.read(1).astype(int) - pb.read(1)).mean() < 0.5
    from poppyscan.scene_predict import scene_probability  # the evaluation engine reads it alike

    model = ColourPredictor()
    sa, sb = (scene_probability(model, model, m) for m in (scene.path, tmp_path / "flipped.tif"))
    assert tuple(sb.transform) == pytest.approx(tuple(sa.transform)) and sb.transform.e < 0
    assert np.array_equal(sa.valid, sb.valid) and np.abs(sa.prob - sb.prob).mean() < 0.005


@pytest.mark.parametrize("crs", ["EPSG:4547", "EPSG:32649", "EPSG:4326"])
def test_centroids_match_truth_within_half_a_metre(tmp_path, crs):
    scene = write_scene(tmp_path / "m.tif", plots_px=SHAPES, size=(560, 560), crs=crs, gsd=0.04)  # resampled
    run(scene.path, tmp_path / "run")
    plots = read_plots(tmp_path / "run")
    assert len(plots) == len(SHAPES)
    assert plots.crs.to_string() == crs
    geod_area = [abs(GEOD.geometry_area_perimeter(
        to_lonlat(g, crs))[0])
        for g in scene.plots_crs()]
    for truth, area in zip(scene.plots_crs(), geod_area, strict=True):
        lon, lat = lonlat(truth, crs)
        dist = [GEOD.inv(lon, lat, x, y)[2] for x, y in zip(plots.lon, plots.lat, strict=True)]
        i = int(np.argmin(dist))
        assert dist[i] < 0.5, f"centroid off by {dist[i]:.3f} m"
        assert plots.area_m2[i] == pytest.approx(area, rel=0.05)
    assert plots.plot_id.tolist() == list(range(1, len(SHAPES) + 1))


@pytest.mark.parametrize("mask", ["alpha", "nodata", "black"])
def test_nothing_is_detected_outside_the_footprint(tmp_path, mask):
    foot = affinity.rotate(box(80, 60, 520, 440), 12)
    inside = [Point(300, 250).buffer(30)]
    across = [box(60, 200, 140, 260)]  # cut by the footprint edge
    outside = [box(5, 5, 60, 40), Point(570, 420).buffer(20)]  # magenta, but in nodata
    scene = write_scene(tmp_path / "m.tif", plots_px=inside + across, paint_outside=outside, size=(480, 600),
                        mask=mask, footprint_px=foot)
    run(scene.path, tmp_path / "run")
    plots = read_plots(tmp_path / "run")
    assert len(plots) == 2
    t = scene.transform
    m, off = np.array([[t.a, t.d], [t.b, t.e]]), np.array([t.c, t.f])
    foot_crs = shapely.transform(foot, lambda xy: xy @ m + off)
    assert all(foot_crs.buffer(0.05).contains(g) for g in plots.geometry)  # within 1 px of the footprint
    cut = plots.geometry[plots.area_m2.idxmin()]
    assert cut.area < scene.plots_crs()[1].area * 0.9
    with rasterio.open(tmp_path / "run" / "probability.tif") as ds:
        prob = ds.read(1)
        assert ds.nodata == 255
    assert (prob[10:30, 10:50] == 255).all() and (prob[240:260, 290:310] == 100).all()


def test_mosaic_without_valid_pixels_gives_an_empty_polygon_layer(tmp_path):
    scene = write_scene(tmp_path / "m.tif", plots_px=[box(10, 10, 50, 50)], size=(300, 300), mask="alpha",
                        footprint_px=box(-10, -10, -5, -5))
    summary = run(scene.path, tmp_path / "run")
    assert summary.plots == 0 and summary.tiles == 0 and summary.tiles_skipped == 9
    info = pyogrio.read_info(tmp_path / "run" / "plots.gpkg", layer="plots")
    assert info["features"] == 0 and info["geometry_type"] == "Polygon" and list(info["fields"]) == COLUMNS
    with rasterio.open(tmp_path / "run" / "probability.tif") as ds:
        assert (ds.read(1) == 255).all()


def test_uint16_mosaic_gives_the_same_plots_as_uint8(tmp_path):
    a = write_scene(tmp_path / "a.tif", plots_px=SHAPES, size=(560, 560), dtype="uint8")
    b = write_scene(tmp_path / "b.tif", plots_px=SHAPES, size=(560, 560), dtype="uint16")
    run(a.path, tmp_path / "ra")
    run(b.path, tmp_path / "rb")
    pa, pb = read_plots(tmp_path / "ra"), read_plots(tmp_path / "rb")
    assert len(pa) == len(pb) == len(SHAPES)
    np.testing.assert_allclose(pa.area_m2, pb.area_m2, rtol=0.01)


def test_mosaic_smaller_than_one_tile(tmp_path):
    scene = write_scene(tmp_path / "m.tif", plots_px=[Point(40, 30).buffer(15)], size=(70, 90))
    summary = run(scene.path, tmp_path / "run")
    assert summary.tiles == 1
    plots = read_plots(tmp_path / "run")
    assert len(plots) == 1 and plots.area_m2[0] == pytest.approx(np.pi * 15**2 * 0.0025, rel=0.05)
    with rasterio.open(tmp_path / "run" / "probability.tif") as ds:
        assert (ds.width, ds.height) == (90, 70)


def _crop(src: Path, dst: Path, cols: tuple[int, int]) -> Path:
    with rasterio.open(src) as ds:
        win = Window(cols[0], 0, cols[1] - cols[0], ds.height)
        profile = ds.profile | {"width": win.width, "transform": ds.window_transform(win)}
        with rasterio.open(dst, "w", **profile) as out:
            out.write(ds.read(window=win))
    return dst


def test_two_overlapping_mosaics_give_each_plot_once(tmp_path):
    shapes = [Point(100, 150).buffer(25),  # only in A
              box(420, 300, 480, 360),  # in the overlap (both)
              box(480, 100, 560, 140),  # cut by A's right edge at 520, whole in B
              Point(800, 200).buffer(30)]  # only in B
    full = write_scene(tmp_path / "full.tif", plots_px=shapes, size=(400, 900))
    a = _crop(full.path, tmp_path / "a.tif", (0, 520))
    b = _crop(full.path, tmp_path / "b.tif", (380, 900))
    summary = run([a, b], tmp_path / "run")
    plots = read_plots(tmp_path / "run")
    assert summary.mosaics == 2 and len(plots) == 4
    for truth in full.plots_crs():
        hits = plots[plots.intersects(truth)]
        assert len(hits) == 1
        assert hits.area_m2.iloc[0] == pytest.approx(truth.area, rel=0.03)
    assert set(plots.mosaic) == {"a.tif", "b.tif"}
    # a plot seen by both keeps the file name and the input index of one member (run.json inputs order)
    assert plots.mosaic_index.tolist() == plots.mosaic.map({"a.tif": 0, "b.tif": 1}).tolist()
    assert (tmp_path / "run" / "probability_2.tif").is_file()
    run_json = json.loads((tmp_path / "run" / "run.json").read_text())
    assert [Path(i["path"]).name for i in run_json["inputs"]] == ["a.tif", "b.tif"]
    assert run_json["counts"]["detections"] == 6 and run_json["counts"]["plots"] == 4


def test_mosaics_from_distant_utm_zones_get_true_areas(tmp_path):
    # the plots layer is in the first mosaic's CRS (UTM 49N); a plot from a UTM 45N mosaic ~2000 km
    # west measured in zone 49's grid would come out ~10 % too large
    plot = box(200, 200, 300, 300)  # 100 x 100 px at 5 cm = 25 m2
    a = write_scene(tmp_path / "a.tif", plots_px=[plot], size=(400, 400), crs="EPSG:32649")
    b = write_scene(tmp_path / "b.tif", plots_px=[plot], size=(400, 400), crs="EPSG:32645",
                    origin=(500000.0, 2800000.0))
    run([a.path, b.path], tmp_path / "run")
    plots = read_plots(tmp_path / "run")
    assert plots.crs.to_string() == "EPSG:32649" and len(plots) == 2
    assert sorted(plots.mosaic) == ["a.tif", "b.tif"]
    far = plots[plots.mosaic == "b.tif"].iloc[0]
    assert far.geometry.area > 27  # distorted in zone 49's grid
    assert plots.area_m2.tolist() == pytest.approx([25.0, 25.0], rel=0.01)


def _digest(run_dir: Path) -> dict[str, tuple[str, int]]:
    return {p.name: (hashlib.sha256(p.read_bytes()).hexdigest(), p.stat().st_mtime_ns)
            for p in sorted(run_dir.iterdir())}


class _Failing(ColourPredictor):
    def __call__(self, batch):
        if self.calls >= 2:
            raise RuntimeError("simulated crash mid-run")
        return super().__call__(batch)


def test_the_plot_decision_drops_outlined_regions_whose_mean_probability_falls_short(tmp_path):
    strong, weak = box(60, 60, 160, 160), box(300, 300, 400, 400)
    scene = write_scene(tmp_path / "m.tif", plots_px=[strong, weak], size=(480, 480), gsd=0.05)
    with rasterio.open(scene.path, "r+") as ds:  # repaint the second plot pale: probability ~0.6 there
        img = ds.read(window=Window(300, 300, 100, 100))
        img[:] = np.array([200, 60, 160], np.uint8)[:, None, None]
        ds.write(img, window=Window(300, 300, 100, 100))
    cases = {"every region": ({}, 2), "bundle's 0.8": ({"model": ColourPredictor(min_prob_mean=0.8)}, 1),
             "config 0.8": ({"config": cfg(min_prob_mean=0.8)}, 1),
             "config 0 over the bundle's 0.8": ({"config": cfg(min_prob_mean=0.0),
                                                "model": ColourPredictor(min_prob_mean=0.8)}, 2)}
    for i, (name, (kw, n)) in enumerate(cases.items()):
        run(scene.path, tmp_path / f"run{i}", **kw)
        plots = read_plots(tmp_path / f"run{i}")
        assert len(plots) == n, name
        info = json.loads((tmp_path / f"run{i}" / "run.json").read_text())
        assert info["counts"]["regions"] == 2 and info["counts"]["plots"] == n
        assert info["params"]["min_prob_mean"] == (0.0 if n == 2 else 0.8)
        if n == 1:  # the strong plot stays, outlined exactly as before
            assert plots.prob_mean[0] > 0.95
            assert plots.geometry[0].symmetric_difference(scene.plots_crs()[0]).area < 0.02 * 25
        else:
            assert sorted(plots.prob_mean.round(1)) == [0.6, 1.0]


def test_existing_output_is_refused_and_left_intact_and_failures_never_touch_it(tmp_path):
    scene = write_scene(tmp_path / "m.tif", plots_px=[Point(300, 300).buffer(30)], size=(600, 600))
    out = tmp_path / "run"
    run(scene.path, out)
    before = _digest(out)
    with pytest.raises(OutputExistsError, match="--overwrite"):
        run(scene.path, out)
    with pytest.raises(RuntimeError, match="simulated crash"):
        run(scene.path, out, model=_Failing(), overwrite=True)
    assert _digest(out) == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["m.tif", "run"]  # no temp leftovers
    run(scene.path, out, overwrite=True, config=cfg(threshold=0.4))
    assert json.loads((out / "run.json").read_text())["params"]["threshold"] == 0.4


def test_overwrite_never_deletes_an_input_a_users_folder_or_the_working_directory(tmp_path, monkeypatch):
    scene = write_scene(tmp_path / "m.tif", plots_px=[Point(300, 300).buffer(30)], size=(600, 600))
    run(scene.path, tmp_path / "run")
    inside = tmp_path / "run" / "copy.tif"  # a mosaic kept in an earlier run's folder
    inside.write_bytes(scene.path.read_bytes())
    with pytest.raises(InputError, match="holds the input mosaic .*copy.tif"):
        run(inside, tmp_path / "run", overwrite=True)
    user = tmp_path / "fieldwork"
    user.mkdir()
    (user / "notes.txt").write_text("keep me")
    with pytest.raises(InputError, match="not an earlier detect run \\(no run.json\\)"):
        run(scene.path, user, overwrite=True)
    monkeypatch.chdir(tmp_path / "run")
    with pytest.raises(InputError, match="is the working directory or a folder above it"):
        run(scene.path, Path("."), overwrite=True)
    (tmp_path / "run" / "sub").mkdir()
    monkeypatch.chdir(tmp_path / "run" / "sub")
    with pytest.raises(InputError, match="is the working directory or a folder above it"):
        run(scene.path, tmp_path / "run", overwrite=True)
    assert inside.read_bytes() == scene.path.read_bytes() and (user / "notes.txt").read_text() == "keep me"
    assert (tmp_path / "run" / "run.json").is_file() and scene.path.is_file()
    monkeypatch.chdir(tmp_path)
    run(scene.path, tmp_path / "run", overwrite=True)  # an earlier run is still replaced
    assert not inside.exists()


def test_an_implausible_rate_of_plots_is_warned_about_in_the_log_and_run_json(tmp_path, caplog):
    # 2.36 ha (960 px at 0.16 m/px, resampled to the model's 0.05) with 6 plots = 2.5 per ha
    plots = [Point(150 + 300 * (i % 3), 200 + 500 * (i // 3)).buffer(12) for i in range(6)]
    scene = write_scene(tmp_path / "m.tif", plots_px=plots, size=(960, 960), gsd=0.16)
    run(scene.path, tmp_path / "run")
    warnings = json.loads((tmp_path / "run" / "run.json").read_text())["warnings"]
    assert len(read_plots(tmp_path / "run")) == 6
    assert len(warnings) == 1
    assert re.match(r"m\.tif: 6 suspected plots on 2\.4 ha = 2\.5 per ha, above "
                    r"detect\.warn_plots_per_ha = 2;", warnings[0])
    assert any(r.levelname == "WARNING" and "warn_plots_per_ha" in r.getMessage() for r in caplog.records)
    run(scene.path, tmp_path / "run", config=cfg(warn_plots_per_ha=3), overwrite=True)
    assert json.loads((tmp_path / "run" / "run.json").read_text())["warnings"] == []
    # a plot-free mosaic of the same file name beside it is not blamed for the other's plots
    (tmp_path / "b").mkdir()
    empty = write_scene(tmp_path / "b" / "m.tif", plots_px=[], size=(960, 960), gsd=0.16,
                        origin=(300000, 4200000))
    run([scene.path, empty.path], tmp_path / "two")
    assert len(json.loads((tmp_path / "two" / "run.json").read_text())["warnings"]) == 1
    small = write_scene(tmp_path / "s.tif", plots_px=SHAPES, size=(560, 560), gsd=0.05)  # 80 /ha on 0.08 ha
    run(small.path, tmp_path / "small")
    assert json.loads((tmp_path / "small" / "run.json").read_text())["warnings"] == []


def test_the_evaluation_predictor_blends_exactly_like_detect(tmp_path):
    from poppyscan.blend import to_percent
    from poppyscan.scene_predict import predict_array

    # at the model's GSD (no resampling) and several tiles wide, so overlaps and grid edges are blended
    scene = write_scene(tmp_path / "m.tif", plots_px=SHAPES, size=(500, 560), gsd=0.05)

    class TileDependent(ColourPredictor):  # a tile's output depends on the whole tile: weights matter
        def __call__(self, batch):
            offset = batch[..., 1].mean(axis=(1, 2), dtype=np.float32)[:, None, None] / 255
            return np.clip(0.8 * super().__call__(batch) + 0.3 * offset, 0, 1).astype(np.float32)

    model = TileDependent()
    run(scene.path, tmp_path / "run", model=model)
    with rasterio.open(scene.path) as ds:
        rgb = ds.read([1, 2, 3]).transpose(1, 2, 0).copy()
    prob = predict_array(model, rgb, model.meta.tile_size, model.meta.overlap, batch=3)
    with rasterio.open(tmp_path / "run" / "probability.tif") as ds:
        stored = ds.read(1)
    assert stored.shape == prob.shape and (stored >= 80).sum() > 1000
    assert np.array_equal(to_percent(prob), stored)


@pytest.mark.parametrize(("mosaic_gsd", "override", "runs_at"), [
    (0.03, None, 0.04),  # finer than min_gsd_m: read at min_gsd_m
    (0.045, None, 0.045),  # between min_gsd_m and gsd_m: read at its own GSD, no resampling
    (0.06, None, 0.05),  # coarser than the model: resampled to gsd_m, as always
    (0.03, 0.05, 0.05),  # detect.min_gsd_m = gsd_m: every mosaic resampled to gsd_m
    (0.03, 0.035, 0.035),
])
def test_finer_mosaics_run_at_their_own_gsd_down_to_min_gsd(tmp_path, mosaic_gsd, override, runs_at):
    scale = 0.05 / mosaic_gsd  # same ground footprint and plots whatever the pixel size
    shapes = [affinity.scale(g, scale, scale, origin=(0, 0)) for g in SHAPES]
    size = round(560 * scale)
    scene = write_scene(tmp_path / "m.tif", plots_px=shapes, size=(size, size), gsd=mosaic_gsd)
    model = ColourPredictor(gsd_m=0.05, min_gsd_m=0.04)
    run(scene.path, tmp_path / "run", model=model, config=cfg(min_gsd_m=override))
    with rasterio.open(tmp_path / "run" / "probability.tif") as ds:
        assert ds.res == pytest.approx((runs_at, runs_at))
        assert ds.width == int(size * mosaic_gsd / runs_at + 1e-6)
    r = json.loads((tmp_path / "run" / "run.json").read_text())
    assert r["inputs"][0]["model_grid"]["gsd_m"] == pytest.approx(runs_at)
    assert r["params"]["min_gsd_m"] == (override or 0.04)
    plots = read_plots(tmp_path / "run")
    assert len(plots) == len(SHAPES)
    for truth in scene.plots_crs():  # the same plots in metres, whatever grid they were found on
        i = int(np.argmin([truth.centroid.distance(g.centroid) for g in plots.geometry]))
        assert truth.centroid.distance(plots.geometry[i].centroid) < 0.1
        assert plots.area_m2[i] == pytest.approx(truth.area, rel=0.05)


def test_min_gsd_outside_half_to_one_model_gsd_is_refused(tmp_path):
    from poppyscan.errors import ConfigError

    scene = write_scene(tmp_path / "m.tif", plots_px=[], size=(64, 64), gsd=0.05)
    for bad in (0.02, 0.06):
        with pytest.raises(ConfigError,
                           match=r"'--min-gsd' \(config 'detect.min_gsd_m'\) must be in \[0.025, 0.05\]"):
            run(scene.path, tmp_path / "run", config=cfg(min_gsd_m=bad))
        assert not (tmp_path / "run").exists()


def test_the_evaluation_predictor_reads_fine_scenes_at_detects_gsd(tmp_path):
    from poppyscan.blend import to_percent
    from poppyscan.scene_predict import scene_probability

    scene = write_scene(tmp_path / "m.tif", plots_px=SHAPES, size=(500, 560), gsd=0.045)
    model = ColourPredictor(gsd_m=0.05, min_gsd_m=0.04)
    run(scene.path, tmp_path / "run", model=model)
    with rasterio.open(tmp_path / "run" / "probability.tif") as ds:
        stored = ds.read(1)
    sp = scene_probability(model, model, scene.path)
    assert sp.prob.shape == stored.shape == (500, 560)  # 4.5 cm: no resampling for either
    assert np.array_equal(to_percent(sp.prob), stored)
    assert scene_probability(model, model, scene.path, min_gsd_m=0.05).prob.shape == (450, 504)


def test_outputs_follow_the_contract(tmp_path):
    scene = write_scene(tmp_path / "m.tif", plots_px=SHAPES, size=(560, 560), crs="EPSG:4547", mask="alpha",
                        footprint_px=box(0, 0, 560, 540))
    run(scene.path, tmp_path / "run")
    plots = read_plots(tmp_path / "run")
    assert list(plots.columns) == COLUMNS + ["geometry"]
    assert (plots.area_mu == (plots.area_m2 / 666.67).round(5)).all()
    assert (plots.est_plants == (plots.area_m2 * 6.0).round().astype(int)).all()
    assert plots.model_version.unique().tolist() == ["test-colour"] and (plots.mosaic == "m.tif").all()
    assert (plots.geometry.geom_type == "Polygon").all() and plots.is_valid.all()
    with rasterio.open(tmp_path / "run" / "probability.tif") as ds, rasterio.open(scene.path) as src:
        assert ds.tags(ns="IMAGE_STRUCTURE").get("LAYOUT") == "COG"
        assert ds.overviews(1) == [2]  # nearest-neighbour decimation of the full-resolution band
        assert (ds.read(1, out_shape=(ds.height // 2, ds.width // 2)) == ds.read(1)[::2, ::2]).all()
        assert ds.dtypes[0] == "uint8" and ds.nodata == 255 and ds.crs == src.crs
        assert ds.transform.a == pytest.approx(0.05) and ds.bounds.left == src.bounds.left
        prob = ds.read(1)
        assert prob[prob != 255].max() == 100 and (prob[-20:] == 255).all() and (prob[:-20] != 255).all()
    r = json.loads((tmp_path / "run" / "run.json").read_text())
    assert {"poppyscan_version", "created", "inputs", "crs", "model", "config", "counts", "timings"} <= set(r)
    assert r["crs"] == "EPSG:4547" and r["inputs"][0]["mask"] == "alpha"
    assert r["model"]["version"] == "test-colour" and r["config"]["detect"]["window_rows"] == 256
    assert r["counts"]["plots"] == len(plots) and r["timings"]["total_s"] > 0


# -- CLI ------------------------------------------------------------------------------------------


def cli(capsys, *args):
    code = main(["detect", *map(str, args)])
    err = capsys.readouterr().err.strip()
    return code, err


@pytest.fixture
def small_scene(tmp_path):
    return write_scene(tmp_path / "m.tif", plots_px=[], size=(64, 64)).path


@pytest.mark.parametrize(("make_args", "code", "message"), [
    (lambda d, m: [d / "missing.tif", "--out", d / "o"], 2, "mosaic '.*missing.tif' does not exist"),
    (lambda d, m: [d / "notes.txt", "--out", d / "o"], 2, "is not a raster GDAL can read"),
    (lambda d, m: [d / "nocrs.tif", "--out", d / "o"], 2, "has no CRS; assign one"),
    (lambda d, m: [m, "--out", d / "o", "--threshold", "1.5"], 2,
     "'--threshold' must be a probability in \\(0, 1\\), got '1.5'"),
    (lambda d, m: [m, "--out", d / "o", "--threshold", "abc"], 2, "'--threshold' must be a probability"),
    (lambda d, m: [m, "--out", d / "o", "--min-prob-mean", "1"], 2,
     "'--min-prob-mean' must be a probability in \\[0, 1\\), got '1'"),
    (lambda d, m: [m, "--out", d / "o", "--min-gsd", "2"], 2,
     "'--min-gsd' must be a pixel size in \\[0.005, 0.5\\] m, got '2'"),
    (lambda d, m: [m, "--out", d / "o", "--min-gsd", "0.01"], 2,
     "'--min-gsd' \\(config 'detect.min_gsd_m'\\) must be in \\[0.02, 0.04\\] m/px for this model "
     "\\(trained at 0.04 m/px\\), got 0.01"),
    (lambda d, m: [m, "--out", d / "o", "--device", "tpu"], 2,
     "'--device' must be auto, cpu or cuda, got 'tpu'"),
    (lambda d, m: [m], 2, "'--out' is required"),
    (lambda d, m: [m, d / ".." / d.name / "m.tif", "--out", d / "o"], 2,
     "mosaic '.*m.tif' is given twice \\(also as '.*m.tif'\\); pass each file once"),
    (lambda d, m: ["--out", d / "o"], 2, "no MOSAIC given"),
    (lambda d, m: [m, "--out", d / "full"], 3, "already exists and is not empty; pass --overwrite"),
    (lambda d, m: [m, "--out", d / "o", "--model", d / "nobundle"], 4,
     "model bundle '.*nobundle' does not exist"),
])
def test_cli_errors_are_one_line_with_exit_codes(tmp_path, capsys, small_scene, make_args, code, message):
    (tmp_path / "notes.txt").write_text("hello")
    with rasterio.open(tmp_path / "nocrs.tif", "w", driver="GTiff", width=4, height=4, count=3, dtype="uint8",
                       transform=rasterio.Affine(1, 0, 0, 0, -1, 4)) as ds:
        ds.write(np.zeros((3, 4, 4), np.uint8))
    (tmp_path / "full").mkdir()
    (tmp_path / "full" / "run.json").write_text("{}")
    got_code, err = cli(capsys, *make_args(tmp_path, small_scene))
    assert got_code == code, err
    assert "Traceback" not in err
    last = err.splitlines()[-1]
    assert last.startswith("poppyscan: error: ")
    assert re.search(message, last), last
    assert (tmp_path / "full" / "run.json").read_text() == "{}"


def test_a_mosaic_damaged_past_its_header_is_a_one_line_error_and_leaves_nothing(tmp_path, capsys):
    scene = write_scene(tmp_path / "m.tif", plots_px=[], size=(1024, 640))
    with rasterio.open(scene.path) as src:
        profile = src.profile | {"tiled": True, "blockxsize": 128, "blockysize": 128, "compress": "deflate"}
        data = src.read()
    with rasterio.open(tmp_path / "cut.tif", "w", **profile) as dst:
        dst.write(data)
    with rasterio.open(tmp_path / "cut.tif") as src:  # one interior tile's bytes: opening reads the edges
        offset = int(src.get_tag_item("BLOCK_OFFSET_3_2", "TIFF", bidx=1))
        size = int(src.get_tag_item("BLOCK_SIZE_3_2", "TIFF", bidx=1))
    raw = bytearray((tmp_path / "cut.tif").read_bytes())
    raw[offset:offset + size] = bytes(range(256)) * (size // 256) + bytes(size % 256)
    (tmp_path / "cut.tif").write_bytes(bytes(raw))
    conf = tmp_path / "c.yaml"
    conf.write_text("detect:\n  run_tasks: false\n")
    code, err = cli(capsys, tmp_path / "cut.tif", "--out", tmp_path / "run", "--config", conf)
    assert code == 2 and "Traceback" not in err
    last = err.splitlines()[-1]
    assert re.match(r"poppyscan: error: mosaic '.*cut.tif' cannot be read near pixel row \d+, column \d+ "
                    r"\(.*\): the file is damaged or incomplete", last), last
    assert sorted(p.name for p in tmp_path.iterdir()) == ["c.yaml", "cut.tif", "m.tif"]


def test_cli_runs_the_default_bundle_end_to_end(tmp_path, capsys):
    scene = write_scene(tmp_path / "m.tif", plots_px=[Point(100, 100).buffer(20)], size=(200, 260), gsd=0.05)
    conf = tmp_path / "c.yaml"
    conf.write_text("detect:\n  run_tasks: false\n")
    out = tmp_path / "run"
    code = main(["detect", str(scene.path), "--out", str(out),
                 "--model", str(REPO / "models/poppyscan-default"),
                 "--config", str(conf), "--device", "cpu", "--threshold", "0.5"])
    captured = capsys.readouterr()
    assert code == 0, captured.err
    assert "plots" in captured.out and str(out) in captured.out
    assert sorted(p.name for p in out.iterdir()) == ["plots.gpkg", "probability.tif", "run.json"]
    plots = read_plots(out)
    assert list(plots.columns) == COLUMNS + ["geometry"]
    r = json.loads((out / "run.json").read_text())
    assert r["model"]["path"] == str((REPO / "models/poppyscan-default").resolve())
    bundle = json.loads((REPO / "models/poppyscan-default/bundle.json").read_text())
    assert r["model"]["device"] == "cpu" and r["params"]["tile_size"] == bundle["tile_size"]
    assert r["model"]["version"] == bundle["version"] == plots.model_version.iloc[0] if len(plots) else True
    scale = 0.05 / bundle["gsd_m"]  # the mosaic is resampled to the bundle's GSD
    with rasterio.open(out / "probability.tif") as ds:
        assert (ds.width, ds.height) == (int(260 * scale + 1e-6), int(200 * scale + 1e-6))


def test_predict_tta_averages_with_the_mirror_image():
    from poppyscan.infer import predict_tta

    images = np.zeros((2, 4, 6, 3), np.uint8)

    def ramp(batch):  # depends on the column only: not mirror-symmetric
        return np.broadcast_to(np.arange(batch.shape[2], dtype=np.float32) / 5, batch.shape[:3]).copy()

    assert np.allclose(predict_tta(ramp, images, False)[0, 0], [0, 0.2, 0.4, 0.6, 0.8, 1.0])
    assert np.allclose(predict_tta(ramp, images, True), 0.5)  # ramp + its mirror: flat


def test_tta_with_a_pixelwise_predictor_changes_nothing(tmp_path):
    """A pixelwise predictor gives the same answer on the mirrored tile, so flip TTA must give the same
    probability raster and plots: a mirror not undone would move every off-centre plot."""
    scene = write_scene(tmp_path / "m.tif", plots_px=[box(20, 30, 60, 50), Point(150, 120).buffer(15)],
                        size=(200, 260), gsd=0.04)
    once, mirrored = ColourPredictor(), ColourPredictor()
    plain = run(scene.path, tmp_path / "plain", model=once)
    tta = run(scene.path, tmp_path / "tta", config=cfg(tta=True), model=mirrored)
    assert plain.plots == tta.plots == 2
    assert mirrored.calls == 2 * once.calls > 0  # every batch predicted twice
    with rasterio.open(tmp_path / "plain" / "probability.tif") as a, \
            rasterio.open(tmp_path / "tta" / "probability.tif") as b:
        assert np.array_equal(a.read(1), b.read(1))
    r = json.loads((tmp_path / "tta" / "run.json").read_text())
    assert r["config"]["detect"]["tta"] is True
    assert read_plots(tmp_path / "plain").geometry.geom_equals(read_plots(tmp_path / "tta").geometry).all()


def test_cli_tta_flag_reaches_the_run(tmp_path, capsys):
    scene = write_scene(tmp_path / "m.tif", plots_px=[Point(60, 60).buffer(15)], size=(120, 120), gsd=0.04)
    conf = tmp_path / "c.yaml"
    conf.write_text("detect:\n  run_tasks: false\n")
    on = tmp_path / "on.yaml"
    on.write_text("detect:\n  run_tasks: false\n  tta: true\n")
    for i, (c, flag, expected) in enumerate(((conf, [], False), (conf, ["--tta"], True), (on, [], True),
                                             (on, ["--no-tta"], False))):
        out = tmp_path / f"run{i}"
        assert main(["detect", str(scene.path), "--out", str(out), "--model",
                     str(REPO / "models/poppyscan-default"), "--config", str(c), "-q", *flag]) == 0
        assert json.loads((out / "run.json").read_text())["config"]["detect"]["tta"] is expected
    capsys.readouterr()
