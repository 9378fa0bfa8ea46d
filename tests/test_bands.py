"""Row bands of one tall mosaic (issue 7): the same plots and probability raster as one pass, a band
journal that --resume continues from after kill -9, and finished bands kept after a failure."""

from __future__ import annotations

import json
import os
import signal
import time
from pathlib import Path

import numpy as np
import pytest
import rasterio
from detect_scenes import ColourPredictor, write_scene
from shapely.geometry import Point, box
from test_resume import assert_same_plots, plots_of, start_slow_detect

from poppyscan.bands import plan_bands
from poppyscan.config import load_config
from poppyscan.detect import detect
from poppyscan.errors import OutputExistsError
from poppyscan.resume import work_path

TESTS = Path(__file__).resolve().parent
WHOLE = {"detect.window_rows": 256, "detect.run_tasks": False, "detect.band_rows": 0}
BANDED = {**WHOLE, "detect.band_rows": 256}


def tall_mosaic(tmp_path: Path) -> Path:
    """1400 x 300 px at 5 cm (the colour model's GSD), alpha outside an irregular footprint, plots
    across the band edges at rows 256, 512, 768 and 1024 and one that spans three bands."""
    plots = [box(40, 230, 120, 290), Point(200, 512).buffer(30), box(20, 740, 60, 800),
             box(150, 1000, 260, 1060), box(80, 320, 120, 820)]
    foot = box(0, 0, 300, 1400).difference(box(0, 1250, 120, 1400))
    return write_scene(tmp_path / "tall.tif", plots_px=plots, size=(1400, 300), gsd=0.05, mask="alpha",
                       footprint_px=foot, seed=3).path


def test_band_plan_covers_every_row_once_with_the_tiles_each_band_needs():
    bands = plan_bands(5000, 700, tile_size=512, overlap=64, band_rows=1500, window_rows=512, halo=3)
    assert [(b.row0, b.row1) for b in bands] == [(0, 1024), (1024, 2048), (2048, 3072), (3072, 4096),
                                                 (4096, 5000)]
    for b in bands:
        rows = np.zeros(5000, bool)
        for t in b.tiles:
            rows[t.row:t.row + t.height] = True
        assert rows[max(0, b.row0 - 3):min(5000, b.row1 + 3)].all()  # band rows and halo fully covered
        assert all(t.row < b.row1 + 3 and t.row + t.height > b.row0 - 3 for t in b.tiles)  # none wasted
    assert len(plan_bands(900, 700, tile_size=512, overlap=64, band_rows=1024, window_rows=512, halo=3)) == 1
    assert len(plan_bands(5000, 700, tile_size=512, overlap=64, band_rows=0, window_rows=512, halo=3)) == 1


def test_a_mosaic_in_bands_gives_exactly_the_plots_and_raster_of_one_pass(tmp_path):
    mosaic = tall_mosaic(tmp_path)
    whole = detect([mosaic], tmp_path / "whole", config=load_config(overrides=WHOLE), model=ColourPredictor(),
                   progress=False)
    banded = detect([mosaic], tmp_path / "banded", config=load_config(overrides=BANDED),
                    model=ColourPredictor(), progress=False)
    run = json.loads((tmp_path / "banded" / "run.json").read_text())
    assert run["timings"]["mosaics"][0]["bands"] == 6
    assert banded.tiles > whole.tiles  # tile rows at band edges run in both neighbours
    assert banded.plots == whole.plots == 5
    assert_same_plots(plots_of(tmp_path / "whole"), plots_of(tmp_path / "banded"))
    with rasterio.open(tmp_path / "whole" / "probability.tif") as a, \
            rasterio.open(tmp_path / "banded" / "probability.tif") as b:
        assert np.array_equal(a.read(), b.read())
        assert (a.transform, a.crs, a.nodata, a.profile["blockxsize"]) == \
            (b.transform, b.crs, b.nodata, b.profile["blockxsize"])
        assert b.overviews(1) == a.overviews(1)
        assert (b.read(1)[1300:, :100] == 255).all()  # nodata outside the footprint
    leftovers = [p.name for p in (tmp_path / "banded").iterdir() if p.name.startswith(".")]
    assert leftovers == []  # band parts and the stitched temp file are gone


def test_kill_9_inside_a_mosaic_then_resume_reruns_only_the_unfinished_bands(tmp_path):
    mosaic = tall_mosaic(tmp_path)
    full_model = ColourPredictor()
    config = load_config(overrides={**BANDED, "detect.streams": 1, "detect.batch_size": 4})
    detect([mosaic], tmp_path / "full", config=config, model=full_model, progress=False)

    out = tmp_path / "run"
    bands_dir = work_path(out) / "journal" / "0000.bands"
    proc = start_slow_detect(out, [mosaic], {**BANDED, "detect.streams": 1, "detect.batch_size": 4})
    try:
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline and proc.poll() is None:
            if bands_dir.is_dir() and len(list(bands_dir.glob("[0-9]*.npz"))) >= 3:
                break
            time.sleep(0.05)
        assert proc.poll() is None, f"the child finished before it could be killed: {proc.stderr.read()!r}"
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert not out.exists()
    finished = len(list(bands_dir.glob("[0-9]*.npz")))
    assert 3 <= finished < 6
    with pytest.raises(OutputExistsError, match=r"finished band\(s\).*--resume"):
        detect([mosaic], out, config=config, model=ColourPredictor(), progress=False)

    resumed = ColourPredictor()
    detect([mosaic], out, config=config, model=resumed, progress=False, resume=True)
    assert 0 < resumed.calls <= full_model.calls * (6 - finished + 1) / 6
    assert_same_plots(plots_of(tmp_path / "full"), plots_of(out))
    with (rasterio.open(tmp_path / "full" / "probability.tif") as a,
          rasterio.open(out / "probability.tif") as b):
        assert np.array_equal(a.read(), b.read())
    assert not work_path(out).exists()


def test_a_failed_mosaic_keeps_its_finished_bands_for_resume(tmp_path):
    mosaic = tall_mosaic(tmp_path)

    class FailsLate(ColourPredictor):
        limit = 10**9

        def __call__(self, batch):
            if self.calls >= self.limit:
                raise RuntimeError("power cut")
            return super().__call__(batch)

    config = load_config(overrides={**BANDED, "detect.streams": 1, "detect.batch_size": 4})
    model = FailsLate()
    model.limit = 9  # a few bands in
    with pytest.raises(RuntimeError, match="power cut"):
        detect([mosaic], tmp_path / "run", config=config, model=model, progress=False)
    bands_dir = work_path(tmp_path / "run") / "journal" / "0000.bands"
    kept = sorted(p.name for p in bands_dir.glob("*.npz"))
    assert kept and len(kept) < 6
    parts = sorted(p.name for p in work_path(tmp_path / "run").glob(".probability.tif.band*.tif"))
    # the failed band's part is gone
    assert parts == [f".probability.tif.band{int(k[:4]):04d}.tif" for k in kept]
    model.limit = 10**9
    detect([mosaic], tmp_path / "run", config=config, model=model, progress=False, resume=True)
    assert len(plots_of(tmp_path / "run")) == 5


def test_band_rows_below_window_rows_is_a_config_error():
    from poppyscan.errors import ConfigError

    with pytest.raises(ConfigError, match="detect.band_rows"):
        load_config(overrides={"detect.window_rows": 1024, "detect.band_rows": 512})


def test_cli_band_rows_option(tmp_path, capsys):
    from poppyscan.cli import main

    mosaic = tall_mosaic(tmp_path)  # 1400 rows at 5 cm -> 1750 rows at the default model's 4 cm
    model = TESTS.parent / "models" / "poppyscan-default"
    base = ["detect", str(mosaic), "--model", str(model), "--device", "cpu", "-q"]
    assert main([*base, "--out", str(tmp_path / "run"), "--band-rows", "1024"]) == 0
    run = json.loads((tmp_path / "run" / "run.json").read_text())
    assert run["timings"]["mosaics"][0]["bands"] == 2 and run["config"]["detect"]["band_rows"] == 1024
    capsys.readouterr()
    for value, fragment in (("100", "detect.band_rows"), ("-5", "'--band-rows' must be a whole number")):
        assert main([*base, "--out", str(tmp_path / f"bad{value}"), "--band-rows", value]) == 2
        err = capsys.readouterr().err.strip()
        assert err.startswith("poppyscan: error:") and fragment in err and "\n" not in err
        assert not (tmp_path / f"bad{value}").exists()
