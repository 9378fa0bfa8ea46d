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


def _tree(root):
    return {str(p.relative_to(root)): p.read_text() for p in sorted(root.rglob("*")) if p.is_file()}


def test_replace_together_moves_all_or_puts_everything_back(tmp_path):
    from poppyscan.fsutil import replace_together

    run, stage = tmp_path / "run", tmp_path / "run" / ".stage"
    (run / "chips").mkdir(parents=True)
    (run / "chips" / "T0001.jpg").write_text("old chip")
    (run / "units").mkdir()
    (run / "units" / "a.csv").write_text("old unit")
    for name in ("tasks.csv", "tasks.xlsx"):
        (run / name).write_text(f"old {name}")
    (stage / "chips").mkdir(parents=True)
    (stage / "chips" / "A001.jpg").write_text("new chip")
    (stage / "tasks.csv").write_text("new tasks.csv")
    old = _tree(run)
    pairs = [(stage / "chips", run / "chips"), (stage / "tasks.csv", run / "tasks.csv"),
             (stage / "tasks.xlsx", run / "tasks.xlsx")]  # the last one was never built: the move fails
    with pytest.raises(FileNotFoundError):
        replace_together(pairs, remove=[run / "units"])
    assert _tree(run) == old  # chips/ and tasks.csv were moved in, then put back
    assert sorted(p.name for p in run.iterdir()) == [".stage", "chips", "tasks.csv", "tasks.xlsx", "units"]
    (stage / "tasks.xlsx").write_text("new tasks.xlsx")
    replace_together(pairs, remove=[run / "units"])
    assert _tree(run) == {"chips/A001.jpg": "new chip", "tasks.csv": "new tasks.csv",
                          "tasks.xlsx": "new tasks.xlsx"}
    assert sorted(p.name for p in run.iterdir()) == [".stage", "chips", "tasks.csv", "tasks.xlsx"]


def test_atomic_writes_never_widen_the_mode_of_files_other_threads_create(tmp_path):
    """Reading the umask by setting and restoring it let files made meanwhile by another thread (the
    review server's chips, locks, SQLite journals) come out 0666."""
    import os
    import threading

    from poppyscan.fsutil import write_bytes_atomic

    old = os.umask(0o022)
    stop = threading.Event()

    def writer():
        i = 0
        while not stop.is_set():
            write_bytes_atomic(tmp_path / f"chip{i % 20}.jpg", b"x")
            i += 1

    t = threading.Thread(target=writer)
    t.start()
    widened = 0
    try:
        for i in range(20000):
            p = tmp_path / f"other{i}.txt"
            p.touch()
            widened += p.stat().st_mode & 0o777 != 0o644
            p.unlink()
    finally:
        stop.set()
        t.join()
        os.umask(old)
    assert widened == 0
