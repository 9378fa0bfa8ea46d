"""scripts/eval_real_negatives.py: preparing the real-imagery check from a wheel, and its errors.

The real run downloads deepforest's wheel from PyPI (20 MB), so the suite builds a small stand-in wheel
with the same file names instead and checks the georeferencing and the error messages."""

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
