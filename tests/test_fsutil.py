"""Outputs: refused without overwrite, never half-written under the final name."""

from __future__ import annotations

import pytest

from poppyscan.errors import OutputExistsError
from poppyscan.fsutil import atomic_path, check_writable


def test_existing_output_is_refused_and_untouched(tmp_path):
    out = tmp_path / "x.txt"
    out.write_text("old")
    with pytest.raises(OutputExistsError, match="--overwrite"):
        check_writable(out, overwrite=False)
    with pytest.raises(OutputExistsError):
        with atomic_path(out):
            pass
    assert out.read_text() == "old"


def test_failed_write_leaves_old_file_and_no_temp(tmp_path):
    out = tmp_path / "x.txt"
    out.write_text("old")
    with pytest.raises(RuntimeError):
        with atomic_path(out, overwrite=True) as tmp:
            tmp.write_text("half")
            raise RuntimeError("boom")
    assert out.read_text() == "old"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["x.txt"]


def test_successful_write_replaces_file_and_directory(tmp_path):
    out = tmp_path / "x.txt"
    with atomic_path(out) as tmp:
        tmp.write_text("new")
    assert out.read_text() == "new"
    d = tmp_path / "run"
    d.mkdir()
    (d / "old.txt").write_text("old")
    with atomic_path(d, overwrite=True) as tmp:
        tmp.mkdir()
        (tmp / "new.txt").write_text("new")
    assert sorted(p.name for p in d.iterdir()) == ["new.txt"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["run", "x.txt"]
