"""Resumable detect runs (issue 7): kill -9 mid-run, --resume, plots equal to an uninterrupted run.

The run is a flight of four adjacent small mosaics, detected with the colour test model slowed down in
a child process so there is time to kill it after two mosaics are journaled.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import geopandas as gpd
import numpy as np
import pytest
import rasterio
from detect_scenes import ColourPredictor, write_scene
from shapely.geometry import Point, box

from poppyscan.config import load_config
from poppyscan.detect import detect
from poppyscan.errors import InputError, OutputExistsError
from poppyscan.resume import work_path

TESTS = Path(__file__).resolve().parent
KEYS = {"detect.window_rows": 256, "detect.run_tasks": False}

CHILD = r"""
import json, sys, time
sys.path.insert(0, sys.argv[1])
from detect_scenes import ColourPredictor
from poppyscan.config import load_config
from poppyscan.detect import detect

class Slow(ColourPredictor):
    def __call__(self, batch):
        time.sleep(0.3)
        return super().__call__(batch)

config = load_config(overrides=json.loads(sys.argv[3]))
detect(sys.argv[4:], sys.argv[2], config=config, model=Slow(), progress=False)
"""


def start_slow_detect(out: Path, mosaics: list[Path], overrides: dict) -> subprocess.Popen:
    """``detect`` of ``mosaics`` into ``out`` in a child process, with a test model that is slowed down so
    there is time to kill it mid-run."""
    return subprocess.Popen([sys.executable, "-c", CHILD, str(TESTS), str(out), json.dumps(overrides),
                             *map(str, mosaics)], stdout=subprocess.PIPE, stderr=subprocess.PIPE)


def flight(tmp_path: Path, n: int = 4) -> list[Path]:
    """``n`` mosaics side by side (400 x 400 px at 5 cm), each with two painted plots."""
    paths = []
    for i in range(n):
        plots = [box(60, 70 + 20 * i, 150, 160), Point(280, 300 - 15 * i).buffer(35)]
        scene = write_scene(tmp_path / f"m{i}.tif", plots_px=plots, size=(400, 400), gsd=0.05,
                            origin=(400000.0 + 20.0 * i, 2800000.0), seed=i)
        paths.append(scene.path)
    return paths


def plots_of(run_dir: Path) -> gpd.GeoDataFrame:
    return gpd.read_file(run_dir / "plots.gpkg", layer="plots")


def assert_same_plots(a: gpd.GeoDataFrame, b: gpd.GeoDataFrame) -> None:
    assert len(a) == len(b) > 0
    cols = [c for c in a.columns if c != "geometry"]
    assert a[cols].equals(b[cols])
    for ga, gb in zip(a.geometry, b.geometry, strict=True):
        assert ga.equals_exact(gb, 1e-9)


def test_kill_9_then_resume_gives_the_uninterrupted_plots(tmp_path):
    mosaics = flight(tmp_path)
    config = load_config(overrides=KEYS)
    full_model = ColourPredictor()
    detect(mosaics, tmp_path / "full", config=config, model=full_model, progress=False)

    out = tmp_path / "run"
    work = work_path(out)
    journal = work / "journal"
    proc = start_slow_detect(out, mosaics, KEYS)
    try:
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline and proc.poll() is None:
            assert not out.exists(), "a final output appeared before the run finished"
            if journal.is_dir() and len(list(journal.glob("[0-9]*.json"))) >= 2:
                break
            time.sleep(0.05)
        assert proc.poll() is None, f"the child finished before it could be killed: {proc.stderr.read()!r}"
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == -signal.SIGKILL
    assert not out.exists()  # partial outputs never stand under final names
    finished = sorted(journal.glob("[0-9]*.json"))
    assert 2 <= len(finished) < 4

    # a changed setting is refused by name; forgetting --resume is refused too (nothing is lost)
    with pytest.raises(InputError, match="threshold"):
        detect(mosaics, out, config=load_config(overrides={**KEYS, "detect.threshold": 0.6}),
               model=ColourPredictor(), progress=False, resume=True)
    with pytest.raises(OutputExistsError, match="--resume"):
        detect(mosaics, out, config=config, model=ColourPredictor(), progress=False)
    assert len(list(journal.glob("[0-9]*.json"))) == len(finished)

    resumed_model = ColourPredictor()
    summary = detect(mosaics, out, config=config, model=resumed_model, progress=False, resume=True)
    assert 0 < resumed_model.calls < full_model.calls  # finished mosaics were not run again
    assert summary.mosaics == 4
    assert_same_plots(plots_of(tmp_path / "full"), plots_of(out))
    for name in ["probability.tif", "probability_2.tif", "probability_3.tif", "probability_4.tif"]:
        with rasterio.open(tmp_path / "full" / name) as a, rasterio.open(out / name) as b:
            assert np.array_equal(a.read(), b.read())
    assert not work.exists()
    assert sorted(p.name for p in out.iterdir()) == sorted(p.name for p in (tmp_path / "full").iterdir())


def test_resume_without_a_partial_run_just_runs(tmp_path):
    mosaics = flight(tmp_path, n=1)
    summary = detect(mosaics, tmp_path / "run", config=load_config(overrides=KEYS), model=ColourPredictor(),
                     progress=False, resume=True)
    assert summary.plots == 2
    assert not work_path(tmp_path / "run").exists()


def test_a_failed_run_keeps_finished_mosaics_only(tmp_path):
    mosaics = flight(tmp_path, n=2)

    class FailsOnSecond(ColourPredictor):
        def __call__(self, batch):
            if self.calls >= 1 and self.failing:  # one call per mosaic here
                raise RuntimeError("power cut")
            return super().__call__(batch)

    config = load_config(overrides={**KEYS, "detect.streams": 1, "detect.batch_size": 16})
    model = FailsOnSecond()
    model.failing = True
    with pytest.raises(RuntimeError, match="power cut"):
        detect(mosaics, tmp_path / "run", config=config, model=model, progress=False)
    work = work_path(tmp_path / "run")
    assert len(list((work / "journal").glob("[0-9]*.json"))) == 1
    assert not (tmp_path / "run").exists()
    model.failing = False
    detect(mosaics, tmp_path / "run", config=config, model=model, progress=False, resume=True)
    assert len(plots_of(tmp_path / "run")) == 4


def test_resuming_with_another_min_gsd_of_the_model_is_refused(tmp_path):
    """Mosaics at 4.5 cm run at 4.5 cm under a model whose min_gsd_m allows it; resuming the failed run
    with a model that reads them at 5 cm would mix two grids in one run, so it is refused by name."""
    mosaics = []
    for i in range(2):
        scene = write_scene(tmp_path / f"m{i}.tif", plots_px=[box(60, 70, 150, 160)], size=(300, 300),
                            gsd=0.045, origin=(400000.0 + 20.0 * i, 2800000.0), seed=i)
        mosaics.append(scene.path)

    class FailsOnSecond(ColourPredictor):
        def __call__(self, batch):
            if self.calls >= 1 and self.failing:
                raise RuntimeError("power cut")
            return super().__call__(batch)

    config = load_config(overrides={**KEYS, "detect.streams": 1, "detect.batch_size": 16})
    model = FailsOnSecond(min_gsd_m=0.04)
    model.failing = True
    with pytest.raises(RuntimeError, match="power cut"):
        detect(mosaics, tmp_path / "run", config=config, model=model, progress=False)
    with pytest.raises(InputError, match="min_gsd_m"):
        detect(mosaics, tmp_path / "run", config=config, model=ColourPredictor(), progress=False, resume=True)
    model.failing = False
    detect(mosaics, tmp_path / "run", config=config, model=model, progress=False, resume=True)
    with rasterio.open(tmp_path / "run" / "probability.tif") as a, \
            rasterio.open(tmp_path / "run" / "probability_2.tif") as b:
        assert a.res == b.res == pytest.approx((0.045, 0.045))


def test_a_second_run_into_the_same_out_dir_is_refused_while_the_first_holds_it(tmp_path):
    from poppyscan.resume import WorkArea

    mosaics = flight(tmp_path, n=1)
    first = WorkArea.open(tmp_path / "run", {"x": 1}, resume=False, overwrite=False)
    try:
        with pytest.raises(OutputExistsError, match="another detect run"):
            detect(mosaics, tmp_path / "run", config=load_config(overrides=KEYS), model=ColourPredictor(),
                   progress=False)
    finally:
        first.cleanup()
    assert not (tmp_path / ".run.lock").exists() and not work_path(tmp_path / "run").exists()
    detect(mosaics, tmp_path / "run", config=load_config(overrides=KEYS), model=ColourPredictor(),
           progress=False)
    assert not (tmp_path / ".run.lock").exists()


def test_cli_resume_of_a_run_with_other_settings_is_a_one_line_error(tmp_path, capsys):
    from poppyscan.cli import main

    mosaics = flight(tmp_path, n=1)
    out = tmp_path / "run"
    work = work_path(out)
    (work / "journal").mkdir(parents=True)
    (work / "fingerprint.json").write_text('{"poppyscan_version": "0.0.0"}')
    model = TESTS.parent / "models" / "poppyscan-default"
    code = main(["detect", str(mosaics[0]), "--out", str(out), "--model", str(model), "-q", "--resume"])
    err = capsys.readouterr().err
    assert code == 2 and "Traceback" not in err
    assert err.startswith("poppyscan: error: cannot --resume") and len(err.strip().splitlines()) == 1
    assert work.is_dir() and not out.exists() and not (tmp_path / ".run.lock").exists()
