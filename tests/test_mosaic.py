"""Opening mosaics: CRS and ground pixel size, band/dtype handling, valid-data masks, resampled reads."""

from __future__ import annotations

import numpy as np
import pytest
import rasterio
from affine import Affine
from detect_scenes import pixel_size_deg, write_scene
from shapely.geometry import box

from poppyscan.errors import InputError
from poppyscan.mosaic import open_mosaic


@pytest.mark.parametrize("crs", ["EPSG:32649", "EPSG:4547", "EPSG:4326"])
def test_ground_pixel_size_in_metres_for_projected_and_geographic(tmp_path, crs):
    scene = write_scene(tmp_path / "m.tif", plots_px=[], size=(64, 80), crs=crs, gsd=0.04)
    with open_mosaic(scene.path) as m:
        assert m.gsd_xy == pytest.approx((0.04, 0.04), rel=1e-4)
        grid = m.grid(0.05)
        assert grid.width == int(80 * 0.04 / 0.05) and grid.height == int(64 * 0.04 / 0.05)
        assert grid.resampled


def test_degree_pixels_are_measured_at_the_mosaic_latitude(tmp_path):
    dx, _ = pixel_size_deg(0.05, 25.3)
    scene = write_scene(tmp_path / "m.tif", plots_px=[], size=(32, 32), crs="EPSG:4326", gsd=0.05,
                        origin=(113.5, 60.0))  # same degrees, much further north
    with open_mosaic(scene.path) as m:
        assert m.gsd_xy[1] == pytest.approx(0.05, rel=1e-3)  # dy was computed for 60 N by the helper
    with rasterio.open(tmp_path / "d.tif", "w", driver="GTiff", width=8, height=8, count=3, dtype="uint8",
                       crs="EPSG:4326", transform=Affine(dx, 0, 113.5, 0, -dx, 60.0)) as ds:
        ds.write(np.full((3, 8, 8), 100, np.uint8))
    with open_mosaic(tmp_path / "d.tif") as m:  # 0.05 m of longitude at 25 N is ~0.025 m at 60 N
        expected = 0.05 * np.cos(np.radians(60)) / np.cos(np.radians(25.3))
        assert m.gsd_xy[0] == pytest.approx(expected, rel=0.01)


def test_same_gsd_is_read_without_resampling(tmp_path):
    scene = write_scene(tmp_path / "m.tif", plots_px=[box(10, 20, 30, 25)], size=(50, 60), gsd=0.05)
    with open_mosaic(scene.path) as m, rasterio.open(scene.path) as ds:
        grid = m.grid(0.05)
        assert not grid.resampled and grid.transform == ds.transform
        rgb, valid = m.read_strip(grid, 10, 30)
        assert valid.all()
        np.testing.assert_array_equal(rgb, ds.read(window=((10, 40), (0, 60))).transpose(1, 2, 0))


def test_resampled_read_lands_features_at_the_right_place(tmp_path):
    # native 0.025 m; a 40x40 px magenta square at native (100..140, 60..100) -> model px (50..70, 30..50)
    scene = write_scene(tmp_path / "m.tif", plots_px=[box(100, 60, 140, 100)], size=(200, 240), gsd=0.025)
    with open_mosaic(scene.path) as m:
        grid = m.grid(0.05)
        assert (grid.width, grid.height) == (120, 100)
        assert grid.transform.a == pytest.approx(0.05)
        rgb, _ = m.read_strip(grid, 0, grid.height)
    magenta = (rgb[..., 0] > 200) & (rgb[..., 1] < 60)
    rows, cols = np.nonzero(magenta)
    assert (rows.min(), rows.max(), cols.min(), cols.max()) == (30, 49, 50, 69)


@pytest.mark.parametrize("mask", ["alpha", "nodata", "black"])
def test_valid_mask_from_alpha_nodata_or_black_margins(tmp_path, mask):
    foot = box(20, 10, 90, 70)
    scene = write_scene(tmp_path / "m.tif", plots_px=[], size=(80, 100), mask=mask, footprint_px=foot)
    with open_mosaic(scene.path) as m:
        assert m.mask_kind == mask
        rgb, valid = m.read_strip(m.grid(0.05), 0, 80)
    expected = np.zeros((80, 100), bool)
    expected[10:70, 20:90] = True
    np.testing.assert_array_equal(valid, expected)
    assert rgb.shape == (80, 100, 3) and not rgb[~valid].any()  # the network sees black outside the footprint


def test_internal_mask_and_isolated_black_pixels(tmp_path):
    path = tmp_path / "m.tif"
    data = np.full((3, 40, 40), 120, np.uint8)
    data[:, 5, 5] = 0  # one black pixel inside: not a margin
    with rasterio.open(path, "w", driver="GTiff", width=40, height=40, count=3, dtype="uint8",
                       crs="EPSG:32649", transform=Affine(0.05, 0, 4e5, 0, -0.05, 28e5)) as ds:
        ds.write(data)
    with open_mosaic(path) as m:
        assert m.mask_kind == "none"
    data[:, :, :8] = 0  # a black margin on the left: margins, and still the lone pixel is valid
    with rasterio.open(path, "w", driver="GTiff", width=40, height=40, count=3, dtype="uint8",
                       crs="EPSG:32649", transform=Affine(0.05, 0, 4e5, 0, -0.05, 28e5)) as ds:
        ds.write(data)
    with open_mosaic(path) as m:
        assert m.mask_kind == "black"
        _, valid = m.read_strip(m.grid(0.05), 0, 40)
        assert not valid[:, :8].any() and valid[:, 8:].all()
    with rasterio.open(path, "r+") as ds:
        msk = np.full((40, 40), 255, np.uint8)
        msk[30:, :] = 0
        ds.write_mask(msk)
    with open_mosaic(path) as m:
        assert m.mask_kind == "internal"
        _, valid = m.read_strip(m.grid(0.05), 0, 40)
        assert not valid[30:].any() and valid[:30].all()


def test_uint16_is_scaled_to_8_bit_keeping_colour_balance(tmp_path):
    plots = [box(10, 10, 30, 30)]
    a = write_scene(tmp_path / "a.tif", plots_px=plots, size=(64, 64), dtype="uint8")
    b = write_scene(tmp_path / "b.tif", plots_px=plots, size=(64, 64), dtype="uint16")  # x16 + 7
    with open_mosaic(a.path) as ma, open_mosaic(b.path) as mb:
        assert mb.value_scale == pytest.approx(255 / (230 * 16 + 7), rel=0.02)
        ra, _ = ma.read_strip(ma.grid(0.05), 0, 64)
        rb, _ = mb.read_strip(mb.grid(0.05), 0, 64)
    assert ra.dtype == rb.dtype == np.uint8
    scaled = np.clip(ra.astype(float) * 16 * mb.value_scale, 0, 255)
    assert np.abs(rb - scaled).max() <= 2


def test_8_bit_data_in_a_uint16_container_is_used_as_is(tmp_path):
    path = tmp_path / "m.tif"
    with rasterio.open(path, "w", driver="GTiff", width=16, height=16, count=3, dtype="uint16",
                       crs="EPSG:32649", transform=Affine(0.05, 0, 4e5, 0, -0.05, 28e5)) as ds:
        ds.write(np.full((3, 16, 16), 200, np.uint16))
    with open_mosaic(path) as m:
        assert m.value_scale == 1.0
        assert (m.read_strip(m.grid(0.05), 0, 16)[0] == 200).all()


UTM_TRANSFORM = Affine(0.05, 0, 4e5, 0, -0.05, 28e5)


def _raster(path, count=3, dtype="uint8", crs="EPSG:32649", transform=UTM_TRANSFORM):
    with rasterio.open(path, "w", driver="GTiff", width=8, height=8, count=count, dtype=dtype, crs=crs,
                       transform=transform) as ds:
        ds.write(np.ones((count, 8, 8), dtype))
    return path


@pytest.mark.parametrize(("kwargs", "match"), [
    ({"count": 1}, "1 band .greyscale.; detect needs an RGB"),
    ({"count": 2}, "2 bands; detect needs an RGB"),
    ({"dtype": "float32"}, "float32 data; detect reads uint8 or uint16"),
    ({"crs": None}, "has no CRS; assign one"),
    ({"crs": "EPSG:4326"}, "mosaic '.*bad.tif': the raster's centre latitude 2799999.800 is outside "
                           "\\(-90, 90\\): the geotransform is wrong, e.g. metre coordinates"),
])
def test_unsuitable_rasters_are_refused_by_name(tmp_path, kwargs, match):
    path = _raster(tmp_path / "bad.tif", **kwargs)
    with pytest.raises(InputError, match=match):
        open_mosaic(path)


def test_missing_directory_and_non_raster_inputs(tmp_path):
    with pytest.raises(InputError, match="does not exist"):
        open_mosaic(tmp_path / "nope.tif")
    with pytest.raises(InputError, match="is a directory"):
        open_mosaic(tmp_path)
    (tmp_path / "notes.tif").write_text("not a raster")
    with pytest.raises(InputError, match="not a raster GDAL can read"):
        open_mosaic(tmp_path / "notes.tif")


def test_describe_for_run_json(tmp_path):
    scene = write_scene(tmp_path / "m.tif", plots_px=[], size=(20, 30), crs="EPSG:4547")
    with open_mosaic(scene.path) as m:
        d = m.describe(m.grid(0.05))
    assert d["crs"] == "EPSG:4547" and d["width"] == 30 and d["height"] == 20
    assert d["path"] == str(scene.path.resolve()) and len(d["bounds"]) == 4
    assert d["model_grid"] == {"width": 30, "height": 20, "gsd_m": 0.05}
    with rasterio.open(scene.path) as src:  # the same raster stored south-up (rows run north)
        profile, data, t = src.profile, src.read(), src.transform
    profile["transform"] = Affine(t.a, 0, t.c, 0, -t.e, t.f + t.e * src.height)
    with rasterio.open(tmp_path / "south_up.tif", "w", **profile) as dst:
        dst.write(data[:, ::-1])
    with open_mosaic(tmp_path / "south_up.tif") as m:
        flipped = m.describe()["bounds"]
    west, south, east, north = d["bounds"]
    assert west < east and south < north
    assert flipped == pytest.approx(d["bounds"], rel=0, abs=1e-6)


def test_fourth_band_of_only_0_and_255_is_taken_as_alpha(tmp_path):
    path = _raster(tmp_path / "rgba.tif", count=4)
    with rasterio.open(path, "r+") as ds:
        a = np.full((8, 8), 255, np.uint8)
        a[:, :3] = 0
        ds.write(a, 4)
    with open_mosaic(path) as m:
        assert m.alpha == 4 and m.mask_kind == "alpha"
        assert m.read_strip(m.grid(0.05), 0, 8)[1].sum() == 8 * 5


def test_a_fine_mosaic_without_overviews_gets_a_gdaladdo_hint(tmp_path):
    fine = write_scene(tmp_path / "fine.tif", plots_px=[], size=(512, 512), gsd=0.02)
    coarse = write_scene(tmp_path / "coarse.tif", plots_px=[], size=(512, 512), gsd=0.03)
    with open_mosaic(fine.path) as m:
        hint = m.overview_hint(0.04)
    assert "fine.tif is 2.0 cm/px without overviews" in hint and "decodes 4x the pixels" in hint
    assert f"gdaladdo -r average {fine.path} 2 4" in hint
    with open_mosaic(fine.path) as m:  # read at 3.5 cm (min_gsd_m): a 4 cm overview would not be read
        assert m.overview_hint(0.035) is None
    with open_mosaic(coarse.path) as m:
        assert m.overview_hint(0.04) is None  # 1.3x finer: a 2x overview would not be used anyway
    with rasterio.open(fine.path, "r+") as ds:
        ds.build_overviews([2, 4], rasterio.enums.Resampling.average)
    with open_mosaic(fine.path) as m:
        assert m.overview_hint(0.04) is None
