"""scripts/eval_real_negatives.py: preparing the real-imagery check from a wheel, and its errors.

The real run downloads deepforest's wheels from PyPI (20 MB each), so the suite builds small stand-in
wheels with the same file names instead and checks the georeferencing (the NEON set and the ``--extra``
sets), the error messages and the per-image figures."""

from __future__ import annotations

import importlib.util
import zipfile
from pathlib import Path

import cv2
import numpy as np
import pytest
import rasterio
from rasterio.transform import from_origin

SCRIPT = Path(__file__).resolve().parent.parent / "scripts" / "eval_real_negatives.py"


@pytest.fixture(scope="module")
def script():
    spec = importlib.util.spec_from_file_location("eval_real_negatives", SCRIPT)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def _wheel(tmp_path: Path, script, skip: str | None = None) -> Path:
    rng = np.random.default_rng(0)
    wheel = tmp_path / script.WHEEL
    with zipfile.ZipFile(wheel, "w") as zf:
        for i, name in enumerate(script.IMAGES):
            if name == skip:
                continue
            rgb = rng.integers(0, 255, (40 + i, 50, 3), np.uint8)
            f = tmp_path / name
            if name.endswith(".png"):
                cv2.imwrite(str(f), rgb)
            else:
                with rasterio.open(f, "w", driver="GTiff", width=50, height=40 + i, count=3, dtype="uint8",
                                   crs="EPSG:32617", transform=from_origin(404000, 3285000, 0.1, 0.1)) as ds:
                    ds.write(rgb.transpose(2, 0, 1))
            zf.write(f, f"deepforest/data/{name}")
    return wheel


def test_prepare_georeferences_every_crop_at_10_cm(tmp_path, script):
    out = script.prepare(_wheel(tmp_path, script), tmp_path / "geo")
    assert [p.name for p in out] == [Path(n).stem + ".tif" for n in script.IMAGES]
    for path, (name, georef) in zip(out, script.IMAGES.items(), strict=True):
        with rasterio.open(path) as ds:
            assert ds.count == 3 and ds.res == pytest.approx((0.1, 0.1))
            expected = "EPSG:32617" if georef is None else f"EPSG:{georef[0]}"
            assert ds.crs == rasterio.crs.CRS.from_string(expected), name
            if georef is not None:
                assert (ds.bounds.left, ds.bounds.top) == (georef[1], georef[2])
    assert not list((tmp_path / "geo").glob(".*.part"))


def test_bad_wheels_fail_with_a_message_naming_the_fix(tmp_path, script, capsys):
    assert script.main(["--wheel", str(tmp_path / "missing.whl"), "--data", str(tmp_path / "d")]) == 2
    assert "does not exist" in capsys.readouterr().err
    junk = tmp_path / "junk.whl"
    junk.write_text("not a zip")
    assert script.main(["--wheel", str(junk), "--data", str(tmp_path / "d")]) == 2
    assert "not a wheel" in capsys.readouterr().err
    incomplete = _wheel(tmp_path, script, skip="SOAP_061.png")
    assert script.main(["--wheel", str(incomplete), "--data", str(tmp_path / "d2")]) == 2
    assert "has no deepforest/data/SOAP_061.png" in capsys.readouterr().err


def _extra_wheels(tmp_path: Path, script, skip: str | None = None) -> dict[str, Path]:
    """Stand-ins for the wheels the extra sets come from: their files, small, with the real georeferencing
    for the GeoTIFFs and none for the drone JPEG."""
    rng = np.random.default_rng(1)
    wheels: dict[str, Path] = {}
    for spec in script.EXTRA.values():
        wheel = wheels.setdefault(spec["wheel"], tmp_path / "wheels" / spec["wheel"])
        wheel.parent.mkdir(exist_ok=True)
        with zipfile.ZipFile(wheel, "a") as zf:
            for name in spec["files"]:
                if name == skip:
                    continue
                rgb = rng.integers(0, 255, (30, 40, 3), np.uint8)
                f = tmp_path / name
                if name.endswith(".JPG"):
                    cv2.imwrite(str(f), rgb)
                else:
                    with rasterio.open(f, "w", driver="GTiff", width=40, height=30, count=3, dtype="uint8",
                                       crs="EPSG:32753", transform=from_origin(278966, 8597744, 0.018, 0.018)
                                       ) as ds:
                        ds.write(rgb.transpose(2, 0, 1))
                zf.write(f, f"deepforest/data/{name}")
    return wheels


def test_prepare_extra_keeps_geotiffs_and_places_the_drone_frame_at_its_xmp_gsd(tmp_path, script):
    wheels = _extra_wheels(tmp_path, script)
    out = script.prepare_extra(tmp_path / "cache", tmp_path / "geo", wheels)
    assert list(out) == list(script.EXTRA)
    assert script.AWPE_GSD_M == pytest.approx(61.1 / 3666.67, rel=1e-4)  # ~1.67 cm/px
    for name, spec in script.EXTRA.items():
        assert [p.name for p in out[name]] == [Path(f).stem.replace(" ", "_") + ".tif" for f in spec["files"]]
        for path, georef in zip(out[name], spec["files"].values(), strict=True):
            with rasterio.open(path) as ds:
                assert ds.count == 3 and ds.dtypes[0] == "uint8"
                if georef is None:  # a GeoTIFF: kept as it is
                    assert ds.crs == rasterio.crs.CRS.from_epsg(32753)
                    assert ds.res == pytest.approx((0.018, 0.018))
                else:
                    assert ds.crs == rasterio.crs.CRS.from_epsg(georef[0])
                    assert ds.res == pytest.approx((georef[3], georef[3]))
                    assert (ds.bounds.left, ds.bounds.top) == (georef[1], georef[2])
    assert not (tmp_path / "cache").exists()  # every wheel was given: nothing downloaded


def test_extra_wheel_errors_name_the_fix(tmp_path, script, capsys):
    neon = _wheel(tmp_path, script)
    other = next(w for w in {s["wheel"] for s in script.EXTRA.values()} if w != script.WHEEL)
    base = ["--wheel", str(neon), "--extra", "--data", str(tmp_path / "d")]
    assert script.main([*base, "--extra-wheel", str(tmp_path / other)]) == 2
    assert f"--extra-wheel '{tmp_path / other}' does not exist" in capsys.readouterr().err
    assert script.main([*base, "--extra-wheel", str(tmp_path / "deepforest-9.9.9-py3-none-any.whl")]) == 2
    assert "is not one of the wheels the extra sets need" in capsys.readouterr().err
    wheels = _extra_wheels(tmp_path, script, skip="australia.tif")
    assert script.main([*base, "--extra-wheel", str(wheels[other])]) == 2
    assert "has no deepforest/data/australia.tif; pass deepforest 1.5.2's wheel" in capsys.readouterr().err


def test_rows_and_totals_count_each_mosaics_own_plots(script):
    import geopandas as gpd
    from shapely.geometry import box

    mosaics = [Path("a.tif"), Path("b.tif")]
    run = {"inputs": [{"width": 1000, "height": 1000, "gsd_m": 0.02},
                      {"width": 500, "height": 400, "gsd_m": 0.1}]}
    plots = gpd.GeoDataFrame({"mosaic": ["b.tif", "b.tif"], "area_m2": [2.0, 4.0]},
                             geometry=[box(0, 0, 1, 2), box(5, 5, 7, 7)], crs="EPSG:32615")
    rows = script.image_rows(mosaics, run, plots)
    assert rows == [{"image": "a.tif", "ha": 0.04, "false_plots": 0, "false_plots_per_ha": 0.0,
                     "false_area_m2": 0.0},
                    {"image": "b.tif", "ha": 0.2, "false_plots": 2, "false_plots_per_ha": 10.0,
                     "false_area_m2": 6.0}]
    totals = script.summary(rows, plots, ndigits=3)
    assert totals == {"hectares": 0.24, "false_plots": 2, "false_plots_per_ha": 8.33,
                      "false_plot_area_m2": {"median": 3.0, "max": 4.0}}
