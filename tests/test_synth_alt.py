"""Tests for the independent evaluation renderer (poppyscan.synth_alt), on real files."""

from __future__ import annotations

import ast
import json
from pathlib import Path

import numpy as np
import pytest

geopandas = pytest.importorskip("geopandas")
rasterio = pytest.importorskip("rasterio")

from rasterio.features import rasterize  # noqa: E402
from scipy import ndimage  # noqa: E402

from poppyscan.errors import ConfigError, OutputExistsError  # noqa: E402
from poppyscan.evaluate import read_polygons, valid_area_m2  # noqa: E402
from poppyscan.synth_alt import render_alt_scene  # noqa: E402

SEED, SIZE, GSD = 7, 384, 0.03
PKG = Path(__file__).resolve().parents[1] / "poppyscan" / "synth_alt"


@pytest.fixture(scope="module")
def scene(tmp_path_factory) -> Path:
    d = tmp_path_factory.mktemp("alt") / "scene"
    return render_alt_scene(SEED, d, size=SIZE, poppy=True, gsd=GSD, crs="EPSG:4547", mask_mode="alpha")


def test_scene_is_georeferenced_with_crs_gsd_and_irregular_footprint(scene):
    with rasterio.open(scene / "mosaic.tif") as ds:
        assert ds.crs.to_epsg() == 4547
        assert (ds.width, ds.height, ds.count) == (SIZE, SIZE, 4)
        assert ds.res == pytest.approx((GSD, GSD), rel=1e-9)
        mask = ds.read_masks(1)
    assert 0.5 < (mask > 0).mean() < 1.0  # flight footprint: some nodata, mostly valid
    assert valid_area_m2(scene / "mosaic.tif") == pytest.approx((mask > 0).sum() * GSD**2, rel=0.02)
    meta = json.loads((scene / "alt_meta.json").read_text(encoding="utf-8"))
    assert meta["renderer"] == "poppyscan.synth_alt" and meta["gsd"] == GSD


def test_truth_plots_lie_in_footprint_and_differ_in_colour_from_their_surroundings(scene):
    plots = read_polygons(scene / "truth.gpkg", "plots")
    assert len(plots) >= 1
    assert {"plot_id", "stage", "flower_colour", "setting", "area_m2"} <= set(plots.columns)
    assert set(plots.stage) <= {"flowering", "rosette", "capsule"}
    assert set(plots.setting) <= {"field", "edge", "intercrop", "courtyard", "garden"}
    assert plots.crs.to_epsg() == 4547
    fp = geopandas.read_file(scene / "truth.gpkg", layer="footprint").geometry.iloc[0]
    with rasterio.open(scene / "mosaic.tif") as ds:
        img = ds.read([1, 2, 3]).astype(float)
        tr = ds.transform
    for geom, area in zip(plots.geometry, plots.area_m2, strict=True):
        assert fp.contains(geom)
        assert geom.area == pytest.approx(area, rel=1e-6)
        inside = rasterize([geom], out_shape=img.shape[1:], transform=tr).astype(bool)
        ring = ndimage.binary_dilation(inside, iterations=int(1.0 / GSD)) & ~ndimage.binary_dilation(
            inside, iterations=2
        )
        diff = np.abs(img[:, inside].mean(axis=1) - img[:, ring].mean(axis=1)).sum()
        assert diff > 12, f"plot {geom.bounds} looks like its surroundings (colour distance {diff:.1f})"


def test_same_seed_gives_identical_files(scene, tmp_path):
    again = render_alt_scene(SEED, tmp_path / "again", size=SIZE, poppy=True, gsd=GSD, crs="EPSG:4547",
                             mask_mode="alpha")
    assert (again / "mosaic.tif").read_bytes() == (scene / "mosaic.tif").read_bytes()
    assert (again / "alt_meta.json").read_bytes() == (scene / "alt_meta.json").read_bytes()
    a, b = (read_polygons(d / "truth.gpkg", "plots") for d in (scene, again))
    assert a.geometry.equals(b.geometry) and list(a.stage) == list(b.stage)


def test_poppy_free_scene_has_no_poppy_truth(tmp_path):
    d = render_alt_scene(3, tmp_path / "free", size=256, poppy=False, gsd=0.05, crs="EPSG:32649",
                         mask_mode="nodata")
    assert len(read_polygons(d / "truth.gpkg", "plots")) == 0
    with rasterio.open(d / "mosaic.tif") as ds:
        assert ds.crs.to_epsg() == 32649 and ds.nodata == 0 and ds.count == 3
    assert json.loads((d / "alt_meta.json").read_text(encoding="utf-8"))["n_plots"] == 0


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"size": 10}, "'size'"),
        ({"size": "big"}, "'size'"),
        ({"seed": -1}, "'seed'"),
        ({"gsd": 2.0}, "'gsd'"),
        ({"gsd_range": (0.08, 0.02)}, "'gsd_range'"),
        ({"crs": "EPSG:4326"}, "'crs'"),
        ({"mask_mode": "jpeg"}, "'mask_mode'"),
    ],
)
def test_bad_arguments_raise_a_clear_error(tmp_path, kwargs, match):
    args = {"seed": 1, "size": 256, **kwargs}
    seed = args.pop("seed")
    with pytest.raises(ConfigError, match=match):
        render_alt_scene(seed, tmp_path / "x", **args)
    assert not (tmp_path / "x").exists()


def test_refuses_to_overwrite(scene):
    with pytest.raises(OutputExistsError):
        render_alt_scene(SEED, scene, size=SIZE, gsd=GSD)


def test_draws_nothing_with_the_training_renderer():
    """Only the georeferencing/file writers of poppyscan.synth may be used, never its drawing modules."""
    for py in PKG.glob("*.py"):
        for node in ast.walk(ast.parse(py.read_text(encoding="utf-8"))):
            if isinstance(node, ast.ImportFrom) and node.module and "synth" in node.module:
                assert node.level == 2 and node.module == "synth.georef", f"{py.name} imports {node.module}"
            if isinstance(node, ast.Import):
                assert not any("poppyscan.synth" in a.name and "synth_alt" not in a.name for a in node.names)
