"""The CLI shell: help, version, one-line errors with exit codes and no traceback."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from poppyscan import __version__
from poppyscan.cli import main

REPO = Path(__file__).resolve().parents[1]


def test_help_lists_available_commands(capsys):
    assert main(["--help"]) == 0
    out = capsys.readouterr().out
    assert "poppyscan" in out and "Commands" in out


def test_version(capsys):
    assert main(["--version"]) == 0
    assert __version__ in capsys.readouterr().out


def test_unknown_command_is_a_usage_error(capsys):
    assert main(["no-such-command"]) == 2
    assert "No such command" in capsys.readouterr().err


def test_console_script_prints_one_line_error_without_traceback(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("detect:\n  overlap: 2\n")
    # run as a real process, the way a user does
    proc = subprocess.run(
        [sys.executable, "-m", "poppyscan", "detect", str(tmp_path / "missing.tif"),
         "--out", str(tmp_path / "o"), "--config", str(bad)],
        capture_output=True, text=True, cwd=REPO,
    )
    assert proc.returncode != 0
    assert "Traceback" not in proc.stderr
    err_lines = [ln for ln in proc.stderr.splitlines()
                 if ln.startswith("poppyscan: error:") or ln.startswith("Error")]
    assert err_lines, proc.stderr


def test_an_output_path_that_cannot_be_made_is_a_one_line_error(tmp_path, capsys):
    (tmp_path / "afile").write_text("keep")
    mosaic = REPO / "sample_tiles" / "utm49n_nodata" / "mosaic.tif"
    for args in (["detect", str(mosaic), "--out", str(tmp_path / "afile" / "run")],
                 ["synth", str(tmp_path / "afile" / "scene"), "--size", "64"]):
        assert main(args) == 6, args
        err = capsys.readouterr().err.strip().splitlines()
        assert err[-1] == (f"poppyscan: error: '{tmp_path / 'afile'}' is a file where a folder is needed; "
                           "choose another path"), err
        assert not any("Traceback" in line for line in err)
    assert (tmp_path / "afile").read_text() == "keep"
