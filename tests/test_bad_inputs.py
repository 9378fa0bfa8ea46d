"""The bad-input catalogue (issue 7): every file a field office may feed the tool, through the real CLI.

Each bad input must give a one-line ``poppyscan: error: ...`` that names the problem, a non-zero exit,
no traceback, and leave nothing half-written; legitimate odd inputs must give correct output.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import geopandas as gpd
import numpy as np
import pytest
import rasterio
from affine import Affine
from shapely.geometry import box

from poppyscan.cli import main

REPO = Path(__file__).resolve().parents[1]
MODEL = REPO / "models" / "poppyscan-default"


def _write(path: Path, data: np.ndarray, *, crs="EPSG:32649", transform=None, nodata=None, driver="GTiff"):
    count, h, w = data.shape
    profile = dict(driver=driver, width=w, height=h, count=count, dtype=data.dtype.name)
    if crs is not None:
        profile["crs"] = crs
    if transform is not False:
        profile["transform"] = transform or Affine(0.04, 0, 400000, 0, -0.04, 2800000)
    if nodata is not None:
        profile["nodata"] = nodata
    with rasterio.open(path, "w", **profile) as dst:
        dst.write(data)
    return path


def _rgb(h=300, w=300, seed=0, dtype=np.uint8):
    rng = np.random.default_rng(seed)
    hi = 255 if dtype == np.uint8 else 65535
    return rng.integers(hi // 5, hi // 2, size=(3, h, w)).astype(dtype)


def _run(args, capsys):
    code = main([str(a) for a in args])
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def _detect(tmp_path, mosaic, capsys, *extra):
    out = tmp_path / "run"
    return (*_run(["detect", mosaic, "--out", out, "--model", MODEL, "-q", *extra], capsys), out)


def _assert_one_line_error(code, err, *needles):
    assert code != 0
    assert "Traceback" not in err
    lines = [ln for ln in err.strip().splitlines() if ln.strip()]
    errors = [ln for ln in lines if ln.startswith("poppyscan: error:")]
    assert len(errors) == 1, err
    for needle in needles:
        assert needle.lower() in errors[0].lower(), errors[0]


def _assert_nothing_written(out: Path):
    assert not out.exists() or not any(p.name.endswith((".gpkg", ".tif", ".json")) for p in out.iterdir())


def test_not_a_raster(tmp_path, capsys):
    f = tmp_path / "notes.tif"
    f.write_text("this is a text file, not a GeoTIFF\n")
    code, _, err, out = _detect(tmp_path, f, capsys)
    _assert_one_line_error(code, err, "notes.tif", "not a raster")
    _assert_nothing_written(out)


def test_plain_image_without_georeference(tmp_path, capsys, recwarn):
    import cv2

    f = tmp_path / "photo.png"
    cv2.imwrite(str(f), _rgb(64, 64).transpose(1, 2, 0))
    code, _, err, out = _detect(tmp_path, f, capsys)
    _assert_one_line_error(code, err, "photo.png")
    assert not [w for w in recwarn if "geotransform" in str(w.message)]  # GDAL's warning would print first
    assert "crs" in err.lower() or "georef" in err.lower()
    _assert_nothing_written(out)


def test_geotiff_without_crs(tmp_path, capsys):
    f = _write(tmp_path / "nocrs.tif", _rgb(), crs=None)
    code, _, err, out = _detect(tmp_path, f, capsys)
    _assert_one_line_error(code, err, "nocrs.tif", "no CRS")
    assert "-a_srs" in err  # names the fix
    _assert_nothing_written(out)


@pytest.mark.parametrize("bands", [1, 2])
def test_one_or_two_band_rasters(tmp_path, capsys, bands):
    f = _write(tmp_path / f"b{bands}.tif", _rgb()[:bands])
    code, _, err, out = _detect(tmp_path, f, capsys)
    _assert_one_line_error(code, err, f"b{bands}.tif", "RGB")
    _assert_nothing_written(out)


def test_float32_raster_is_refused_with_the_fix(tmp_path, capsys):
    f = _write(tmp_path / "float.tif", _rgb().astype(np.float32) / 255)
    code, _, err, out = _detect(tmp_path, f, capsys)
    _assert_one_line_error(code, err, "float.tif", "float32")
    assert "convert" in err.lower()
    _assert_nothing_written(out)


def test_uint16_raster_is_legitimate(tmp_path, capsys):
    f = _write(tmp_path / "u16.tif", _rgb(dtype=np.uint16))
    code, _, err, out = _detect(tmp_path, f, capsys)
    assert code == 0, err
    assert (out / "plots.gpkg").exists() and (out / "probability.tif").exists()


def test_truncated_tiff(tmp_path, capsys):
    good = _write(tmp_path / "good.tif", _rgb(512, 512))
    data = good.read_bytes()
    bad = tmp_path / "truncated.tif"
    bad.write_bytes(data[: len(data) // 3])
    code, _, err, out = _detect(tmp_path, bad, capsys)
    _assert_one_line_error(code, err, "truncated.tif")
    _assert_nothing_written(out)


def test_corrupt_tiff_header(tmp_path, capsys):
    good = _write(tmp_path / "good.tif", _rgb(128, 128))
    data = bytearray(good.read_bytes())
    data[4:8] = b"\xff\xff\xff\x7f"  # first IFD offset points past the end of the file
    bad = tmp_path / "corrupt.tif"
    bad.write_bytes(bytes(data))
    code, _, err, out = _detect(tmp_path, bad, capsys)
    _assert_one_line_error(code, err, "corrupt.tif")
    _assert_nothing_written(out)


def test_all_nodata_mosaic_gives_empty_but_valid_output(tmp_path, capsys):
    f = _write(tmp_path / "empty.tif", np.zeros((3, 200, 200), np.uint8), nodata=0)
    code, _, err, out = _detect(tmp_path, f, capsys)
    assert code == 0, err
    plots = gpd.read_file(out / "plots.gpkg", layer="plots")
    assert len(plots) == 0
    with rasterio.open(out / "probability.tif") as src:
        assert src.nodata is not None
        assert (src.read(1) == src.nodata).all()


def test_tiny_100px_mosaic(tmp_path, capsys):
    f = _write(tmp_path / "tiny.tif", _rgb(100, 100))
    code, _, err, out = _detect(tmp_path, f, capsys)
    assert code == 0, err
    with rasterio.open(out / "probability.tif") as prob, rasterio.open(f) as src:
        # same ground extent, resampled to the model GSD
        assert prob.bounds.left == pytest.approx(src.bounds.left, abs=0.1)
        assert prob.bounds.top == pytest.approx(src.bounds.top, abs=0.1)


def test_epsg4326_input(tmp_path, capsys):
    deg = 0.04 / 111_320  # about 4 cm
    t = Affine(deg / np.cos(np.radians(25.3)), 0, 113.5, 0, -deg, 25.3)
    f = _write(tmp_path / "wgs84.tif", _rgb(), crs="EPSG:4326", transform=t)
    code, _, err, out = _detect(tmp_path, f, capsys)
    assert code == 0, err
    run = json.loads((out / "run.json").read_text())
    assert run["inputs"][0]["gsd_m"] == pytest.approx(0.04, rel=0.02)


def test_gsd_far_outside_the_model_range(tmp_path, capsys):
    f = _write(tmp_path / "satellite.tif", _rgb(), transform=Affine(30, 0, 400000, 0, -30, 2800000))
    code, _, err, out = _detect(tmp_path, f, capsys)
    _assert_one_line_error(code, err, "satellite.tif", "gsd")
    _assert_nothing_written(out)


def test_black_margins_without_nodata_detect_nothing_there(tmp_path, capsys):
    data = np.zeros((3, 400, 400), np.uint8)
    data[:, 100:300, 100:300] = _rgb(200, 200)
    # paint a saturated red-magenta square half in the margin, half inside: nothing may come out in the margin
    data[0, 180:220, 60:160], data[1, 180:220, 60:160], data[2, 180:220, 60:160] = 220, 30, 120
    f = _write(tmp_path / "margins.tif", data)
    code, _, err, out = _detect(tmp_path, f, capsys)
    assert code == 0, err
    plots = gpd.read_file(out / "plots.gpkg", layer="plots")
    with rasterio.open(f) as src:
        inner = box(*rasterio.transform.array_bounds(200, 200, src.transform * Affine.translation(100, 100)))
    for geom in plots.geometry:
        assert inner.buffer(0.1).contains(geom)
    with rasterio.open(out / "probability.tif") as prob:
        p = prob.read(1)
        row, col = prob.index(*(src.transform * (20, 20)))
        assert p[row, col] == prob.nodata  # the margin is nodata in the probability raster


def test_existing_out_without_overwrite_is_kept(tmp_path, capsys):
    f = _write(tmp_path / "ok.tif", _rgb(128, 128))
    out = tmp_path / "run"
    out.mkdir()
    (out / "plots.gpkg").write_text("precious")
    code, _, err = _run(["detect", f, "--out", out, "--model", MODEL, "-q"], capsys)
    _assert_one_line_error(code, err, "--overwrite")
    assert code == 3
    assert (out / "plots.gpkg").read_text() == "precious"


@pytest.mark.parametrize("damage", ["missing", "json", "weights"])
def test_unreadable_model_bundle(tmp_path, capsys, damage):
    f = _write(tmp_path / "ok.tif", _rgb(128, 128))
    bundle = tmp_path / "bundle"
    if damage != "missing":
        shutil.copytree(MODEL, bundle)
        if damage == "json":
            (bundle / "bundle.json").write_text("{ not json")
        else:
            (bundle / "model.onnx").write_bytes(b"garbage")
            (bundle / "model.pt").write_bytes(b"garbage")
    code, _, err = _run(["detect", f, "--out", tmp_path / "run", "--model", bundle, "-q"], capsys)
    _assert_one_line_error(code, err, "bundle")
    assert code == 4
    _assert_nothing_written(tmp_path / "run")


@pytest.mark.parametrize(("text", "field"), [("detect:\n  colour: red\n", "detect.colour"),
                                             ("detect:\n  min_area_m2: -5\n", "detect.min_area_m2"),
                                             ("detect:\n  scheduler: 'tcp://a b'\n", "detect.scheduler")])
def test_bad_config(tmp_path, capsys, text, field):
    f = _write(tmp_path / "ok.tif", _rgb(128, 128))
    cfg = tmp_path / "bad.yaml"
    cfg.write_text(text)
    code, _, err, out = _detect(tmp_path, f, capsys, "--config", cfg)
    _assert_one_line_error(code, err, field)
    assert code == 2
    _assert_nothing_written(out)


def test_boundary_layer_without_the_named_fields(tmp_path, capsys):
    f = _write(tmp_path / "ok.tif", _rgb(128, 128))
    code, _, err, out = _detect(tmp_path, f, capsys)
    assert code == 0, err
    with rasterio.open(f) as src:
        bounds = src.bounds
    admin = tmp_path / "admin.gpkg"
    gpd.GeoDataFrame({"name": ["X"]}, geometry=[box(*bounds)], crs="EPSG:32649").to_file(admin)
    code, _, err = _run(["tasks", out, "--admin", admin, "--admin-fields", "county,township"], capsys)
    _assert_one_line_error(code, err, "county")
    assert "name" in err  # lists what the layer does have
