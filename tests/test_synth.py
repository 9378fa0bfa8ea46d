"""Tests for the synthetic survey renderer (poppyscan.synth) and the ``poppyscan synth`` command."""

from __future__ import annotations

import numpy as np
import pytest

geopandas = pytest.importorskip("geopandas")
rasterio = pytest.importorskip("rasterio")

from pyproj import CRS, Geod  # noqa: E402
from rasterio.features import rasterize  # noqa: E402
from shapely.ops import unary_union  # noqa: E402

from poppyscan.cli import main  # noqa: E402
from poppyscan.errors import ConfigError, OutputExistsError  # noqa: E402
from poppyscan.synth import render_arrays, render_scene  # noqa: E402

SMALL = 384


def _iou(a: np.ndarray, b: np.ndarray) -> float:
    union = np.logical_or(a, b).sum()
    return 1.0 if union == 0 else float(np.logical_and(a, b).sum() / union)


@pytest.mark.parametrize("seed", [0, 1, 2, 3, 4, 5])
def test_arrays_truth_polygons_match_poppy_pixels(seed):
    s = render_arrays(seed, SMALL, 0.04)
    assert s.rgb.shape == (SMALL, SMALL, 3) and s.rgb.dtype == np.uint8
    assert s.valid.shape == s.poppy.shape == (SMALL, SMALL)
    from affine import Affine

    if s.plots:
        burned = rasterize(
            [(p["polygon"], 1) for p in s.plots], out_shape=s.poppy.shape, transform=Affine.identity()
        )
        assert _iou(burned > 0, s.poppy > 0) >= 0.98
        for p in s.plots:
            assert 2.0 * 0.9 <= p["area_m2"] <= 400.0 * 1.05
            assert p["stage"] in {"flowering", "rosette", "capsule"}
            assert p["setting"] in {"field", "edge", "intercrop", "courtyard", "garden"}
            assert s.footprint.contains(p["polygon"])
        # plots do not overlap each other or ground confusers
        polys = [p["polygon"] for p in s.plots]
        assert abs(unary_union(polys).area - sum(g.area for g in polys)) < 1e-6
    # poppy pixels only inside the footprint, nothing rendered outside it
    assert not (s.poppy.astype(bool) & ~s.valid.astype(bool)).any()
    assert (s.rgb[s.valid == 0] == 0).all()
    assert (s.rgb[s.valid == 1] > 0).all()


def test_most_scenes_have_poppy_and_confusers():
    scenes = [render_arrays(seed, 256, 0.05) for seed in range(10, 18)]
    assert sum(bool(s.plots) for s in scenes) >= 6
    assert sum(len(s.confusers) for s in scenes) >= 8
    assert len({s.meta["scene_kind"] for s in scenes}) >= 2


def test_no_poppy_scene_has_confusers_but_no_plots():
    for seed in (7, 8):
        s = render_arrays(seed, SMALL, 0.04, poppy=False)
        assert s.plots == [] and not s.poppy.any()
    assert any(render_arrays(seed, SMALL, 0.04, poppy=False).confusers for seed in (7, 8, 9))


def test_deterministic_by_seed():
    a, b, c = render_arrays(11, 256, 0.03), render_arrays(11, 256, 0.03), render_arrays(12, 256, 0.03)
    assert (
        np.array_equal(a.rgb, b.rgb) and np.array_equal(a.poppy, b.poppy) and np.array_equal(a.valid, b.valid)
    )
    assert not np.array_equal(a.rgb, c.rgb)


def test_wild_land_scenes_hold_no_poppy_and_are_their_own_landscape():
    scenes = [render_arrays(seed, SMALL, gsd, poppy=True, landscape="wild")
              for seed, gsd in ((0, 0.03), (1, 0.05), (2, 0.08), (3, 0.04))]
    for s in scenes:
        assert s.plots == [] and not s.poppy.any() and s.meta["scene_kind"] == "wild"
        assert s.rgb[s.valid > 0].std() > 5  # drawn, not a flat fill
    assert any(c["kind"] == "dead_tree" for s in scenes for c in s.confusers)
    again = render_arrays(1, SMALL, 0.05, poppy=True, landscape="wild")
    assert np.array_equal(again.rgb, scenes[1].rgb)
    farm = render_arrays(1, SMALL, 0.05, poppy=True)
    assert farm.meta["scene_kind"] != "wild" and not np.array_equal(farm.rgb, scenes[1].rgb)
    with pytest.raises(ValueError, match="landscape"):
        render_arrays(1, SMALL, 0.05, landscape="desert")


def test_training_set_wild_share_leaves_other_scene_parameters_alone():
    import importlib.util
    from pathlib import Path

    path = Path(__file__).resolve().parent.parent / "scripts" / "render_training_set.py"
    spec = importlib.util.spec_from_file_location("render_training_set", path)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    plain = [mod.scene_params(seed, 0.2, 0.02, 0.08) for seed in range(100, 140)]
    wild = [mod.scene_params(seed, 0.2, 0.02, 0.08, wild=0.5) for seed in range(100, 140)]
    assert all(p["landscape"] == "farmland" for p in plain)
    drawn_wild = [w for w in wild if w["landscape"] == "wild"]
    assert 8 <= len(drawn_wild) <= 32 and not any(w["poppy"] for w in drawn_wild)
    for p, w in zip(plain, wild, strict=True):
        same = {k: v for k, v in p.items() if k not in ("landscape", "poppy")}
        assert same == {k: v for k, v in w.items() if k not in ("landscape", "poppy")}
        if w["landscape"] == "farmland":
            assert w["poppy"] == p["poppy"]


def _read(path):
    with rasterio.open(path) as ds:
        return ds.read(), ds.dataset_mask(), ds.crs, ds.transform, ds.profile


def test_scene_files_utm_alpha_roundtrip(tmp_path):
    info = render_scene(tmp_path / "s", seed=3, size=SMALL, gsd=0.04, crs="EPSG:32649", mask_mode="alpha")
    data, mask, crs, tr, prof = _read(info.mosaic)
    assert crs == CRS.from_epsg(32649) and data.shape == (4, SMALL, SMALL)
    assert prof["tiled"] and prof["blockxsize"] == 256 and prof["compress"].lower() == "deflate"
    assert tr.a == pytest.approx(0.04) and tr.e == pytest.approx(-0.04)
    arr = render_arrays(3, SMALL, 0.04)
    assert np.array_equal(np.moveaxis(data[:3], 0, -1), arr.rgb)
    assert np.array_equal(data[3] > 0, arr.valid > 0)
    assert (data[:3, data[3] == 0] == 0).all()  # nothing outside the footprint
    plots = geopandas.read_file(info.truth, layer="plots")
    assert list(plots.columns[:5]) == ["plot_id", "stage", "flower_colour", "setting", "area_m2"]
    assert plots.crs.to_epsg() == 32649 and len(plots) == info.n_plots == len(arr.plots)
    if len(plots):
        burned = rasterize([(g, 1) for g in plots.geometry], out_shape=(SMALL, SMALL), transform=tr)
        assert _iou(burned > 0, arr.poppy > 0) >= 0.98
        np.testing.assert_allclose(plots.area.to_numpy(), plots.area_m2.to_numpy(), rtol=1e-6)
    conf = geopandas.read_file(info.truth, layer="confusers")
    assert "kind" in conf.columns and len(conf) == info.n_confusers
    fp = geopandas.read_file(info.truth, layer="footprint").geometry.iloc[0]
    assert all(fp.buffer(1e-6).contains(g) for g in plots.geometry)
    assert all(fp.buffer(1e-3).contains(g) for g in conf.geometry)


def test_scene_files_wgs84_nodata_pixel_size(tmp_path):
    gsd, lon, lat = 0.05, 114.5, 36.6
    info = render_scene(
        tmp_path / "g",
        seed=5,
        size=256,
        gsd=gsd,
        crs="EPSG:4326",
        mask_mode="nodata",
        center_lonlat=(lon, lat),
    )
    data, mask, crs, tr, prof = _read(info.mosaic)
    assert crs.to_epsg() == 4326 and data.shape[0] == 3 and prof["nodata"] == 0
    geod = Geod(ellps="WGS84")
    cx, cy = tr @ (128, 128)
    assert cx == pytest.approx(lon, abs=1e-6) and cy == pytest.approx(lat, abs=1e-6)
    _, _, east = geod.inv(cx, cy, cx + tr.a, cy)
    _, _, north = geod.inv(cx, cy, cx, cy + abs(tr.e))
    assert east == pytest.approx(gsd, rel=1e-3) and north == pytest.approx(gsd, rel=1e-3)
    assert tr.a > abs(tr.e)  # degrees of longitude are shorter at 36.6 N
    assert (mask == 0).any() and (data[:, mask == 0] == 0).all() and (data[:, mask > 0].max(axis=0) > 0).all()
    plots = geopandas.read_file(info.truth, layer="plots")
    if len(plots):
        burned = rasterize([(g, 1) for g in plots.geometry], out_shape=(256, 256), transform=tr)
        assert _iou(burned > 0, render_arrays(5, 256, gsd).poppy > 0) >= 0.98


def test_scene_files_cgcs2000_gk(tmp_path):
    info = render_scene(
        tmp_path / "c", seed=2, size=256, gsd=0.03, crs="EPSG:4547", mask_mode="none", poppy=False
    )
    data, mask, crs, tr, prof = _read(info.mosaic)
    assert crs.to_epsg() == 4547 and data.shape[0] == 3 and prof["nodata"] is None
    x, y = tr @ (128, 128)
    assert 500_000 < x < 600_000 and 4_000_000 < y < 4_100_000  # easting/northing near 114.5E 36.6N (CM 114E)
    assert tr.a == pytest.approx(0.03)
    assert len(geopandas.read_file(info.truth, layer="plots")) == 0
    # deterministic files: same seed, same pixels
    info2 = render_scene(
        tmp_path / "c2", seed=2, size=256, gsd=0.03, crs="EPSG:4547", mask_mode="none", poppy=False
    )
    assert np.array_equal(_read(info2.mosaic)[0], data)


def test_refuses_existing_outputs_and_bad_options(tmp_path):
    render_scene(tmp_path, seed=1, size=128, gsd=0.04)
    with pytest.raises(OutputExistsError, match="--overwrite"):
        render_scene(tmp_path, seed=1, size=128, gsd=0.04)
    render_scene(tmp_path, seed=2, size=128, gsd=0.04, overwrite=True)
    for kwargs, pat in [
        ({"size": 10}, "size"),
        ({"gsd": 2.0}, "gsd"),
        ({"crs": "EPSG:999999"}, "crs"),
        ({"mask_mode": "bogus"}, "mask_mode"),
    ]:
        with pytest.raises(ConfigError, match=pat):
            render_scene(tmp_path / "x", seed=1, **{"size": 128, **kwargs})
    assert not (tmp_path / "x" / "mosaic.tif").exists()


def test_cli_exit_codes(tmp_path, capsys):
    out = tmp_path / "cli"
    assert (
        main(["-q", "synth", str(out), "--seed", "4", "--size", "128", "--crs", "EPSG:4547", "--rgb-nodata"])
        == 0
    )
    assert (out / "mosaic.tif").exists() and (out / "truth.gpkg").exists()
    capsys.readouterr()
    assert main(["-q", "synth", str(out), "--seed", "4", "--size", "128"]) == 3
    assert "--overwrite" in capsys.readouterr().err
    assert main(["-q", "synth", str(out), "--seed", "5", "--size", "128", "--overwrite", "--no-poppy"]) == 0
    for args, opt in [
        (["--size", "20"], "--size"),
        (["--gsd", "0.001"], "--gsd"),
        (["--crs", "EPSG:nope"], "--crs"),
    ]:
        capsys.readouterr()
        assert main(["-q", "synth", str(tmp_path / "bad"), *args]) == 2
        err = capsys.readouterr().err.strip()
        assert opt in err and err.count("\n") == 0 and err.startswith("poppyscan: error:")
    assert not (tmp_path / "bad" / "mosaic.tif").exists()


def test_cli_wild_scene(tmp_path, capsys):
    assert main(["synth", str(tmp_path / "w"), "--wild", "--size", "192", "--seed", "3"]) == 0
    assert "wild scene, 0 poppy plots" in capsys.readouterr().out
    assert len(geopandas.read_file(tmp_path / "w" / "truth.gpkg", layer="plots")) == 0
    with pytest.raises(ConfigError, match="landscape"):
        render_scene(tmp_path / "x", seed=1, size=128, gsd=0.04, landscape="desert")


@pytest.mark.parametrize("epsg, lonlat", [(4490, (116.9, 38.5)), (4326, (111.2, 34.6))])
def test_geographic_pixel_size_matches_gsd(epsg, lonlat):
    from poppyscan.synth import scene_transform

    tr = scene_transform(f"EPSG:{epsg}", 1024, 0.04, lonlat)
    cx, cy = tr @ (512, 512)
    assert (cx, cy) == pytest.approx(lonlat, abs=1e-7)
    geod = Geod(ellps="WGS84")
    assert geod.inv(cx, cy, cx + tr.a, cy)[2] == pytest.approx(0.04, rel=2e-3)
    assert geod.inv(cx, cy, cx, cy - tr.e)[2] == pytest.approx(0.04, rel=2e-3)


def test_jpeg_alpha_writes_internal_mask(tmp_path):
    info = render_scene(tmp_path / "j", seed=6, size=256, gsd=0.04, mask_mode="alpha", compress="jpeg")
    with rasterio.open(info.mosaic) as ds:
        assert ds.count == 3 and ds.compression.name.lower() == "jpeg"
        mask = ds.dataset_mask()
    assert np.array_equal(mask > 0, render_arrays(6, 256, 0.04).valid > 0)
    with pytest.raises(ConfigError, match="nodata"):
        render_scene(tmp_path / "k", seed=6, size=256, mask_mode="nodata", compress="jpeg")


def test_scene_with_a_parcel_clipped_to_nothing_renders():
    # regression: this seed produced an empty parcel polygon whose NaN bounds crashed the painter
    s = render_arrays(10417, size=1024, gsd=0.0323, poppy=False)
    assert s.rgb.shape == (1024, 1024, 3) and not s.plots


def test_draw_plots_false_changes_only_the_plots():
    """The unpainted render differs from the normal one only on and around the plots (camera
    blur and 16 px JPEG blocks spread a plot's pixels), and clearly inside each plot."""
    seed = next(s for s in range(20, 40) if len(render_arrays(s, 256, 0.03).plots) >= 2)
    a = render_arrays(seed, 256, 0.03)
    b = render_arrays(seed, 256, 0.03, draw_plots=False)
    assert [p["polygon"].wkt for p in a.plots] == [p["polygon"].wkt for p in b.plots]
    assert np.array_equal(a.poppy, b.poppy) and np.array_equal(a.valid, b.valid)
    diff = np.abs(a.rgb.astype(np.int16) - b.rgb.astype(np.int16)).max(axis=2)
    near = rasterize([(unary_union([p["polygon"] for p in a.plots]).buffer(24), 1)], out_shape=diff.shape)
    assert diff[near == 0].max() == 0
    for p in a.plots:
        inside = rasterize([(p["polygon"], 1)], out_shape=diff.shape).astype(bool) & a.valid.astype(bool)
        assert diff[inside].mean() > 5, p["stage"]


def test_plot_visibility_script_on_rendered_files(tmp_path):
    """scripts/plot_visibility.py re-renders deflate and JPEG scenes from their tags, measures every
    truth plot, reads a missed-plots layer, and says when a mosaic is not a rendered scene."""
    import json
    import subprocess
    import sys
    from pathlib import Path

    script = Path(__file__).resolve().parent.parent / "scripts" / "plot_visibility.py"
    seeds = [s for s in range(40, 60) if render_arrays(s, 256, 0.05).plots][:2]
    render_scene(tmp_path / "a", seed=seeds[0], size=256, gsd=0.05)
    render_scene(tmp_path / "b", seed=seeds[1], size=256, gsd=0.05, compress="jpeg")
    truth = geopandas.read_file(tmp_path / "a" / "truth.gpkg", layer="plots")
    missed = truth.iloc[:1].assign(scene="a").to_crs(4326)
    missed.to_file(tmp_path / "errors.gpkg", layer="missed")
    out = subprocess.run([sys.executable, str(script), str(tmp_path / "a"), str(tmp_path / "b"),
                          "--errors", str(tmp_path / "errors.gpkg"), "--json", str(tmp_path / "v.json")],
                         capture_output=True, text=True, check=True)
    rows = json.loads((tmp_path / "v.json").read_text())
    n_b = len(geopandas.read_file(tmp_path / "b" / "truth.gpkg", layer="plots"))
    assert len(rows) == len(truth) + n_b and "skipped" not in out.stderr
    assert all(r["signal_dn"] > 0 and r["clutter_dn"] >= 0 for r in rows)
    assert [r["found"] for r in rows if r["scene"] == "a"] == [False] + [True] * (len(truth) - 1)
    assert f"{len(rows)} plots in 2 scenes" in out.stdout and "recall" in out.stdout

    # a poppy-free scene among the inputs is passed over quietly; missed plots of other scenes are refused
    render_scene(tmp_path / "free", seed=seeds[0], size=256, gsd=0.05, poppy=False)
    missed.assign(scene="elsewhere").to_file(tmp_path / "other.gpkg", layer="missed")
    for extra, code, text in (([], 0, ""), (["--errors", str(tmp_path / "other.gpkg")], 1, "not among"),
                              (["--errors", str(tmp_path / "v.json")], 1, "cannot be read")):
        r = subprocess.run([sys.executable, str(script), str(tmp_path / "a"), str(tmp_path / "free"), *extra],
                           capture_output=True, text=True)
        assert r.returncode == code and text in r.stderr and "skipped" not in r.stderr, r.stderr
        assert "Traceback" not in r.stderr

    with rasterio.open(tmp_path / "a" / "mosaic.tif", "r+") as ds:  # another seed: does not reproduce
        ds.update_tags(POPPYSCAN_SYNTH_SEED=str(seeds[0] + 1))
    bad = subprocess.run([sys.executable, str(script), str(tmp_path / "a")], capture_output=True, text=True)
    assert bad.returncode == 1 and "re-render differs" in bad.stderr and "Traceback" not in bad.stderr


def test_cabbage_beds_are_labelled_confusers_and_images_unchanged():
    """Cabbage beds (glaucous rosettes in rows, the renderer's look-alike of poppy rosettes) are written
    to the confusers layer like lettuce; labelling them draws no random numbers, so images are as before
    (the checksum is of a render made before the change)."""
    import hashlib

    scenes = [render_arrays(seed, 512, 0.04) for seed in range(10900, 10912)]
    kinds = [c["kind"] for s in scenes for c in s.confusers]
    assert kinds.count("cabbage") >= 2
    assert hashlib.sha256(scenes[0].rgb.tobytes()).hexdigest()[:16] == "266cb7b0826e1f8e"
