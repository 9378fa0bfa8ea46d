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


@pytest.mark.parametrize("umask", [0o022, 0o027])
def test_atomic_writes_get_the_umask_mode_not_mkstemps_0600(tmp_path, umask):
    import os

    from conftest_tasks import make_run

    from poppyscan.fsutil import write_bytes_atomic
    from poppyscan.review.store import save_decision

    run = make_run(tmp_path / "run", n=2)
    old = os.umask(umask)
    try:
        write_bytes_atomic(tmp_path / "a.bin", b"x")
        with atomic_path(tmp_path / "b.txt") as tmp:
            tmp.write_text("y")
        save_decision(run, 1, "rejected")
    finally:
        os.umask(old)
    for path in (tmp_path / "a.bin", tmp_path / "b.txt", run / "review.json"):
        assert path.stat().st_mode & 0o777 == 0o666 & ~umask, path.name
    assert (tmp_path / "a.bin").read_bytes() == b"x"
    assert not list(tmp_path.glob(".*.part"))
