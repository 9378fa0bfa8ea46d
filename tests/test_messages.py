"""One-line messages that name the right thing (audit items 3 and 4): a YAML scene list with a syntax
error, a negative synth seed, a malformed Dask scheduler address, and options reported by their
command-line names rather than the config keys or library parameters behind them.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import rasterio
from affine import Affine
from conftest_tasks import make_run as make_task_run
from survey_helpers import SPECS_2025, make_run

from poppyscan.cli import main
from poppyscan.errors import InputError

REPO = Path(__file__).resolve().parents[1]
MODEL = REPO / "models" / "poppyscan-default"


def _error(capsys, code, *needles, absent=()):
    err = capsys.readouterr().err
    assert code == 2, err
    assert "Traceback" not in err and len(err.strip().splitlines()) == 1, err
    assert err.startswith("poppyscan: error:"), err
    for needle in needles:
        assert needle in err, err
    for needle in absent:
        assert needle not in err, err
    return err


def _mosaic(path: Path) -> Path:
    with rasterio.open(path, "w", driver="GTiff", width=64, height=64, count=3, dtype="uint8",
                       crs="EPSG:32649", transform=Affine(0.04, 0, 400000, 0, -0.04, 2800000)) as dst:
        dst.write(np.full((3, 64, 64), 100, np.uint8))
    return path


def _bad_yaml(tmp_path: Path) -> Path:
    f = tmp_path / "scenes.yaml"
    f.write_text("- {mosaic: a/mosaic.tif, labels: a/truth.gpkg}\n- {mosaic: b/mosaic.tif, labels: [\n",
                 encoding="utf-8")
    return f


def test_a_scene_list_with_a_yaml_syntax_error_names_file_and_line(tmp_path, capsys):
    bad = _bad_yaml(tmp_path)
    code = main(["evaluate", "--model", str(MODEL), "--scenes", str(bad)])
    _error(capsys, code, "scene list", "scenes.yaml", "is not valid YAML", "line 3")
    code = main(["train", str(bad), "--out", str(tmp_path / "train")])
    _error(capsys, code, "scenes.yaml", "line 3")


def test_missing_scenes_are_not_called_a_training_input(tmp_path, capsys):
    code = main(["evaluate", "--model", str(MODEL), "--scenes", str(tmp_path / "nonexist")])
    _error(capsys, code, "nonexist' do not exist", absent=("training input",))


def test_a_negative_synth_seed_is_refused_by_name(tmp_path, capsys):
    _error(capsys, main(["synth", str(tmp_path / "out"), "--seed", "-1"]), "'seed' (--seed)", ">= 0")
    assert not (tmp_path / "out").exists()


def test_a_malformed_scheduler_fails_fast_without_a_traceback_at_exit(tmp_path):
    """The half-made Dask client used to hang ~20 s at exit and print an 'Exception ignored' traceback."""
    mosaic = _mosaic(tmp_path / "m.tif")
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    t0 = time.perf_counter()
    proc = subprocess.run([sys.executable, "-m", "poppyscan", "detect", str(mosaic), "--out",
                           str(tmp_path / "run"), "--scheduler", "garbage", "-q"],
                          capture_output=True, text=True, timeout=120, env=env, cwd=tmp_path)
    assert time.perf_counter() - t0 < 15
    assert proc.returncode == 2, proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and "'--scheduler'" in lines[0] and "garbage" in lines[0], proc.stderr
    assert "Exception ignored" not in proc.stderr and not (tmp_path / "run").exists()


def test_connect_refuses_a_malformed_address_before_making_a_client():
    pytest.importorskip("distributed")
    from poppyscan.distributed import connect

    t0 = time.perf_counter()
    with pytest.raises(InputError, match="'garbage' is not a Dask scheduler address"):
        connect("garbage")
    assert time.perf_counter() - t0 < 2


def test_detect_options_are_named_as_options(tmp_path, capsys):
    mosaic = _mosaic(tmp_path / "m.tif")
    code = main(["detect", str(mosaic), "--out", str(tmp_path / "run"), "--model", str(MODEL),
                 "--band-rows", "99999999999999"])
    _error(capsys, code, "'--band-rows' (config 'detect.band_rows') must be")
    assert not (tmp_path / "run").exists()


def test_overrides_are_named_by_their_option():
    from poppyscan.config import load_config
    from poppyscan.errors import ConfigError

    with pytest.raises(ConfigError, match=r"^'--min-gsd' \(config 'detect.min_gsd_m'\) must be"):
        load_config(overrides={"detect.min_gsd_m": 0.001})
    with pytest.raises(ConfigError, match=r"^'--gsd' \(config 'train.gsd_m'\) must be"):
        load_config(overrides={"train.gsd_m": 2.0})


def test_a_directory_given_as_config_is_called_a_directory(tmp_path, capsys):
    run = make_task_run(tmp_path / "run", n=1)
    _error(capsys, main(["tasks", str(run), "--config", str(tmp_path)]), "is a directory",
           "pass a YAML file", absent=("does not exist",))


def test_retrain_without_a_register_names_from_survey(tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    base = ["retrain", "--current", str(MODEL), "--holdout", str(tmp_path), "--out", str(tmp_path / "o")]
    _error(capsys, main([*base, "--from-survey", str(tmp_path / "none.gpkg")]), "none.gpkg",
           "--from-survey", absent=("--register",))
    _error(capsys, main(base), "survey_register.gpkg", "--from-survey", absent=("--register",))
    assert not (tmp_path / "o").exists()


@pytest.mark.parametrize("value", ["-1", "nan"])
def test_max_distance_and_min_f1_gain_are_named_as_options(tmp_path, capsys, value):
    make_run(tmp_path / "run", SPECS_2025, tag="m")
    code = main(["results", "import", str(tmp_path / "run" / "tasks.csv"), "--max-distance", value,
                 "--register", str(tmp_path / "reg.gpkg")])
    _error(capsys, code, "'--max-distance'", absent=("max_distance_m",))
    assert not (tmp_path / "reg.gpkg").exists()
    base = ["retrain", "--current", str(MODEL), "--holdout", str(tmp_path), "--out", str(tmp_path / "o")]
    _error(capsys, main([*base, "--min-f1-gain", value]), "'--min-f1-gain'", absent=("min_f1_gain",))
    _error(capsys, main([*base, "--max-fp-increase", value]), "'--max-fp-increase'")


def test_review_on_an_invalid_host_says_the_host_is_invalid(tmp_path, capsys):
    run = make_task_run(tmp_path / "run", n=1)
    code = main(["review", str(run), "--no-browser", "--host", "999.1.1.1"])
    _error(capsys, code, "--host '999.1.1.1'", "not a valid host", absent=("--port",))


def test_resume_with_other_inputs_lists_what_was_added_and_removed(tmp_path):
    from poppyscan.resume import WorkArea, work_path

    def fp(*names):
        return {"inputs": [{"path": f"/data/{n}", "size": 123456, "mtime_ns": 1700000000000000000}
                           for n in names], "model": {"path": "m"}}

    out = tmp_path / "run"
    work = work_path(out)
    (work / "journal").mkdir(parents=True)
    (work / "fingerprint.json").write_text(json.dumps(fp("a.tif", "b.tif", "c.tif")), encoding="utf-8")
    with pytest.raises(InputError) as info:
        WorkArea.open(out, fp("a.tif", "c.tif", "d.tif", "e.tif"), resume=True, overwrite=False)
    msg = str(info.value)
    assert "added '/data/d.tif', '/data/e.tif'; removed '/data/b.tif'" in msg
    assert "mtime_ns" not in msg and "size" not in msg and len(msg) < 400
    with pytest.raises(InputError, match="another order"):
        WorkArea.open(out, fp("c.tif", "b.tif", "a.tif"), resume=True, overwrite=False)
