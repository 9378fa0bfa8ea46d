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
