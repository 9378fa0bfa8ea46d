"""A register written by an older poppyscan, or over runs an older detect wrote: read without writing,
upgraded once by a writer, its figures brought up to date by registering runs again, flights counted once.
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import json
import os
import shutil
import sqlite3
import tempfile
from pathlib import Path

import geopandas as gpd
import numpy as np
import pytest
import rasterio
from rasterio.transform import from_origin
from register_versions import as_version, schema, version_of
from shapely.geometry import box
from survey_helpers import CRS, SPECS_2025, SPECS_2026, X0, Y0, dump, fill_csv, make_run, two_year_survey

from poppyscan.cli import main
from poppyscan.errors import InputError
from poppyscan.survey import SCHEMA_VERSION, compute_stats, import_results, register_run
from poppyscan.survey.gpkg import from_blob
from poppyscan.survey.labels import export_training_labels
from poppyscan.survey.schema import FINDING

# ---- the finding test looks tasks up by plot through an index ------------------------------------------


def _plan(reg: Path, sql: str) -> str:
    with sqlite3.connect(reg) as conn:
        return " | ".join(r[3] for r in conn.execute(f"EXPLAIN QUERY PLAN {sql}"))


def test_findings_are_looked_up_through_an_index_on_tasks_plot_fid(tmp_path):
    """Statistics test every plot for a task with a verdict: without an index on tasks(plot_fid) that is a
    scan of all tasks per plot (18,000 plots: 30 s)."""
    reg = two_year_survey(tmp_path)["register"]
    finding = f"SELECT p.site_id FROM plots p WHERE {FINDING}"  # noqa: S608
    assert "tasks_plot" in _plan(reg, finding)
    as_version(reg, 3)  # a register written before the index
    assert "tasks_plot" not in schema(reg)["indexes"] and "tasks_plot" not in _plan(reg, finding)
    expected = compute_stats(tmp_path / "register.gpkg", by="village").rows
    assert version_of(reg) == 3  # statistics read it as it is (the index is made in memory)
    register_run(reg, tmp_path / "run2026")  # a writer upgrades it: version 4 adds the index
    assert version_of(reg) == SCHEMA_VERSION and "tasks_plot" in _plan(reg, finding)
    assert compute_stats(reg, by="village").rows == expected


# ---- readers never write --------------------------------------------------------------------------------


def _stamp(reg: Path) -> tuple[bytes, int]:
    return reg.read_bytes(), reg.stat().st_mtime_ns


def _correction(survey: dict, path: Path) -> Path:
    """Team 李娜 corrects the notes of its 2025-05-03 visit."""
    fill_csv(survey["register"].parent / "run2025" / "tasks.csv", path, {survey["tasks2025"]["task_id"][3]: {
        "checked_by": "李娜", "checked_at": "2025-05-03", "notes": "bridge repaired"}})
    return path


def test_readers_never_write_an_older_register(tmp_path):
    s = two_year_survey(tmp_path)
    reg = s["register"]
    by_township = compute_stats(reg, by="township").all_rows()
    for version in (3, 2, 1):  # each drops more of what later versions added
        as_version(reg, version)
        before = _stamp(reg)
        assert compute_stats(reg, by="township").all_rows() == by_township  # upgraded in memory
        report = export_training_labels(reg, tmp_path / f"labels{version}")
        assert report.scenes == 0 and len(report.missing_mosaics) == 2  # the test mosaics are not on disk
        dry = import_results(reg, _correction(s, tmp_path / "more.csv"), dry_run=True)
        assert dry.n_changed_rows == 1 and "would update 1 task(s)" in dry.describe()
        assert _stamp(reg) == before and version_of(reg) == version


def test_readers_roll_back_what_an_interrupted_writer_left(tmp_path):
    """A register or import killed mid-transaction leaves a hot journal; a reader that may write the file
    must roll it back and read (a read-only connection cannot, and failed with a wrong message)."""
    s = two_year_survey(tmp_path)
    reg = s["register"]
    by_township = compute_stats(reg, by="township").all_rows()
    pid = os.fork()
    if pid == 0:  # pragma: no cover - a writer dying mid-transaction
        conn = sqlite3.connect(reg, isolation_level=None)
        conn.execute("PRAGMA cache_size = 1")  # spill to the file: the journal holds the old pages
        conn.execute("BEGIN IMMEDIATE")
        conn.execute("UPDATE tasks SET notes = 'crash'")
        conn.execute("UPDATE plots SET county = 'x'")
        os._exit(0)
    os.waitpid(pid, 0)
    journal = reg.with_name(reg.name + "-journal")
    assert journal.is_file() and journal.stat().st_size > 0
    assert compute_stats(reg, by="township").all_rows() == by_township
    report = export_training_labels(reg, tmp_path / "labels")
    assert report.scenes == 0


def _forked(args: list[str], *, drop_root: bool) -> tuple[int, str, str]:
    """``poppyscan ARGS`` in a child process, as user nobody when ``drop_root`` (root may write anything)."""
    r, w = os.pipe()
    pid = os.fork()
    if pid == 0:  # pragma: no cover - the child reports through the pipe
        try:
            os.close(r)
            if drop_root:
                os.setgid(65534)
                os.setuid(65534)
            out, err = io.StringIO(), io.StringIO()
            with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
                code = main(args)
            os.write(w, json.dumps([code, out.getvalue(), err.getvalue()]).encode())
        except BaseException as exc:  # noqa: BLE001
            os.write(w, json.dumps([99, "", repr(exc)]).encode())
        finally:
            os._exit(0)
    os.close(w)
    with os.fdopen(r, "rb") as fh:
        data = fh.read()
    os.waitpid(pid, 0)
    code, out, err = json.loads(data)
    return code, out, err


@pytest.fixture()
def shared(tmp_path):
    """An office register copied to a read-only share (file 0444, folder 0555) and a writable output
    folder; outside tmp_path, whose parents user nobody may not enter."""
    s = two_year_survey(tmp_path)
    root = Path(tempfile.mkdtemp(prefix="poppyscan-share-"))
    share, out = root / "share", root / "out"
    try:
        share.mkdir()
        out.mkdir()
        root.chmod(0o755)
        out.chmod(0o777)
        reg = share / "register.gpkg"
        shutil.copy(s["register"], reg)
        _correction(s, root / "more.csv").chmod(0o644)
        # every command once where it may write, so the child imports nothing (nobody cannot read /root)
        for args in (["stats", "--by", "township"], ["results", "export-labels", str(tmp_path / "warm")],
                     ["results", "import", str(root / "more.csv"), "--dry-run"]):
            assert main([*args, "--register", str(s["register"])]) == 0
        yield {"reg": reg, "out": out, "csv": root / "more.csv", "working": s["register"]}
    finally:
        if share.exists():
            share.chmod(0o755)
        shutil.rmtree(root)


@pytest.mark.skipif(not hasattr(os, "fork"), reason="needs os.fork")
@pytest.mark.parametrize("version", [1, SCHEMA_VERSION])
def test_a_register_on_a_read_only_share_is_read_and_a_writer_says_what_it_needs(shared, version):
    reg = shared["reg"]
    as_version(reg, version)
    reg.chmod(0o444)
    reg.parent.chmod(0o555)
    drop_root = os.geteuid() == 0
    before = _stamp(reg)
    code, out, err = _forked(["stats", "--by", "township", "--register", str(reg)], drop_root=drop_root)
    assert code == 0 and "TOTAL" in out and err == "", err
    labels = str(shared["out"] / "labels")
    code, _, err = _forked(["results", "export-labels", labels, "--register", str(reg)], drop_root=drop_root)
    assert code == 0, err
    code, out, err = _forked(["results", "import", str(shared["csv"]), "--dry-run", "--register", str(reg)],
                             drop_root=drop_root)
    assert code == 0 and "would update 1 task(s)" in out, err
    code, _, err = _forked(["results", "import", str(shared["csv"]), "--register", str(reg)],
                           drop_root=drop_root)
    assert code == 2 and len(err.strip().splitlines()) == 1 and "backup" not in err, err
    if version < SCHEMA_VERSION:
        assert (f"has schema version 1 and needs a one-time upgrade to version {SCHEMA_VERSION}, which needs "
                "write access to the file and its folder") in err
    else:
        assert "cannot be written by this user (adding to it needs write access" in err
    assert _stamp(reg) == before


def test_only_a_damaged_file_points_at_a_backup(tmp_path, monkeypatch):
    bad = tmp_path / "bad.gpkg"
    bad.write_bytes(b"SQLite format 3\x00" + b"\x07" * 200)
    with pytest.raises(InputError, match="restore it from a backup"):
        compute_stats(bad)
    s = two_year_survey(tmp_path)
    reg = s["register"]
    real = sqlite3.connect
    monkeypatch.setattr(sqlite3, "connect", lambda *a, **k: real(*a, **{**k, "timeout": 0.1}))
    # another command writing it: while it upgrades (an older register) or while it adds to it
    for version, lock, command in ((SCHEMA_VERSION, "IMMEDIATE",
                                    lambda: import_results(reg, _correction(s, tmp_path / "c.csv"))),
                                   (2, "EXCLUSIVE", lambda: register_run(reg, tmp_path / "run2025"))):
        as_version(reg, version)
        holder = real(reg, isolation_level=None)
        holder.execute(f"BEGIN {lock}")
        try:
            with pytest.raises(InputError, match="is locked .* try again when it has finished") as exc:
                command()
            assert "backup" not in str(exc.value)
        finally:
            holder.execute("ROLLBACK")
            holder.close()


# ---- registering again brings the surveyed area up to date, all of it --------------------------------


def _prob(path: Path, left: float, top: float, width_m: int, height_m: int) -> None:
    with rasterio.open(path, "w", driver="GTiff", width=width_m, height=height_m, count=1, dtype="uint8",
                       crs=CRS, transform=from_origin(left, top, 1, 1), nodata=255) as dst:
        dst.write(np.full((height_m, width_m), 10, np.uint8), 1)


def _area_run(tmp_path: Path) -> Path:
    """A run over two mosaics whose second probability raster the first registration did not count (as a
    register made before the surveyed area was the union of every raster): 2 ha, then 4.5 ha."""
    run = tmp_path / "run"
    make_run(run, SPECS_2026, tag="area", extent_m=500.0)
    _prob(run / "probability.tif", X0 - 100, Y0 + 100, 200, 100)  # 2 ha, x -100..100, y 0..100
    return run


def _second_raster(run: Path) -> None:
    _prob(run / "probability_2.tif", X0, Y0 + 50, 200, 150)  # 3 ha, x 0..200, y -100..50; 0.5 ha shared


def _units(tmp_path: Path) -> Path:
    west, east = box(X0 - 1000, Y0 - 1000, X0, Y0 + 1000), box(X0, Y0 - 1000, X0 + 1000, Y0 + 1000)
    names = {"county": ["勐县"] * 2, "township": ["甲镇", "乙镇"], "village": ["一村", "二村"]}
    gdf = gpd.GeoDataFrame(names, geometry=[west, east], crs=CRS)
    gdf.to_file(tmp_path / "units.gpkg", engine="pyogrio")
    return tmp_path / "units.gpkg"


def _recorded(reg: Path) -> tuple[float, dict[str, float]]:
    """The run's hectares, after checking that its footprint, hectares and hectares per unit agree."""
    with sqlite3.connect(reg) as conn:
        row = conn.execute("SELECT surveyed_ha, geom, minx, miny, maxx, maxy FROM runs").fetchone()
        ha, blob, *bounds = row
        units = dict(conn.execute("SELECT township, surveyed_ha FROM run_units").fetchall())
    footprint = from_blob(blob)
    assert bounds == pytest.approx(list(footprint.bounds))
    assert sum(units.values()) == pytest.approx(ha, rel=1e-9)
    fp_ha = gpd.GeoSeries([footprint], crs=4326).to_crs(CRS).area.iloc[0] / 10_000
    assert fp_ha == pytest.approx(ha, rel=1e-3)
    total = next(r for r in compute_stats(reg, by="all").rows if r["year"] == 2025)["surveyed_ha"]
    assert total == pytest.approx(ha, rel=1e-9)
    return ha, units


def test_registering_again_recomputes_footprint_hectares_and_units_together(tmp_path):
    run = _area_run(tmp_path)
    reg = tmp_path / "reg.gpkg"
    assert register_run(reg, run).surveyed_ha == pytest.approx(2.0, rel=1e-3)
    _second_raster(run)
    again = register_run(reg, run)
    assert _recorded(reg) == (pytest.approx(4.5, rel=1e-3), {"": pytest.approx(4.5, rel=1e-3)})
    assert again.area_updated and again.surveyed_ha == pytest.approx(4.5, rel=1e-3)
    assert "surveyed area recomputed: 4.50 ha (was 2.00 ha)" in again.describe()
    before = dump(reg)
    assert not register_run(reg, run).area_updated and dump(reg) == before


def test_hectares_split_by_unit_are_recomputed_only_with_admin_and_a_warning_says_so(tmp_path):
    run = _area_run(tmp_path)
    reg, units = tmp_path / "reg.gpkg", _units(tmp_path)
    register_run(reg, run, admin=units)
    assert _recorded(reg) == (pytest.approx(2.0, rel=1e-3), {"甲镇": pytest.approx(1.0, rel=1e-3),
                                                             "乙镇": pytest.approx(1.0, rel=1e-3)})
    _second_raster(run)
    before = dump(reg)
    kept = register_run(reg, run)  # without --admin the new area cannot be split: nothing of it changes
    assert dump(reg) == before and kept.surveyed_ha == pytest.approx(2.0, rel=1e-3)
    assert not kept.area_updated
    assert kept.warnings == (
        "the surveyed area of run #1 is now 4.50 ha (recorded: 2.00 ha) but its hectares are split by unit, "
        "so the recorded area was kept; register the run again with --admin BOUNDARIES (the file given "
        "before) to recompute it",)
    again = register_run(reg, run, admin=units)
    assert _recorded(reg) == (pytest.approx(4.5, rel=1e-3), {"甲镇": pytest.approx(1.0, rel=1e-3),
                                                             "乙镇": pytest.approx(3.5, rel=1e-3)})
    assert again.area_updated and again.units_updated and again.warnings == ()


def test_a_run_whose_rasters_are_gone_keeps_its_recorded_area_and_says_so(tmp_path):
    """Registering old runs again is the upgrade step, and old runs' rasters are the likeliest to have
    been archived: what is left (a mosaic's bounds, or nothing) must not replace the recorded area."""
    run = _area_run(tmp_path)
    reg, units = tmp_path / "reg.gpkg", _units(tmp_path)
    register_run(reg, run, admin=units)
    recorded = _recorded(reg)
    (run / "probability.tif").rename(tmp_path / "archived.tif")
    for admin in (None, units):
        before = dump(reg)
        kept = register_run(reg, run, admin=admin)
        assert dump(reg) == before and _recorded(reg) == recorded and not kept.area_updated
        assert kept.surveyed_ha == pytest.approx(2.0, rel=1e-3)
        assert len(kept.warnings) == 1 and kept.warnings[0].startswith(
            "the probability rasters of run #1 cannot all be read now (moved or archived?), so its recorded "
            "surveyed area 2.00 ha was kept"), kept.warnings


# ---- a south-up flight is one flight whichever detect wrote its run ------------------------------------


def _key_before_the_fix(meta: dict) -> str:
    """runs.mosaic_key as the register computed it before ordering bounds: the bounds as recorded."""
    return hashlib.sha256(json.dumps(sorted(
        [[Path(i["path"]).name, i.get("width"), i.get("height"), [round(float(b), 3) for b in i["bounds"]]]
         for i in meta["inputs"]])).encode()).hexdigest()


def _south_up_runs(tmp_path: Path) -> tuple[Path, Path]:
    """The same south-up flight detected twice: before d1e4af5 run.json kept rasterio's bounds of the
    south-up mosaic (south > north), since it records west, south, east, north."""
    runs = []
    for name in ("old", "new"):
        make_run(tmp_path / name, SPECS_2025, tag=name, mosaic="south.tif")
        runs.append(tmp_path / name)
    meta = json.loads((runs[0] / "run.json").read_text())
    w, s, e, n = meta["inputs"][0]["bounds"]
    meta["inputs"][0]["bounds"] = [w, n, e, s]
    (runs[0] / "run.json").write_text(json.dumps(meta))
    return runs[0], runs[1]


def test_a_south_up_flight_is_registered_once_whichever_detect_wrote_its_run(tmp_path):
    old, new = _south_up_runs(tmp_path)
    for k, (first, second) in enumerate(((old, new), (new, old))):
        reg = tmp_path / f"reg{k}.gpkg"
        register_run(reg, first)
        with pytest.raises(InputError, match=f"mosaics of '{second}' are already registered as run #1"):
            register_run(reg, second)
    # a register written before the fix holds the old run under the key of its bounds as recorded
    reg = tmp_path / "before.gpkg"
    register_run(reg, old)
    with sqlite3.connect(reg) as conn:
        conn.execute("UPDATE runs SET mosaic_key = ?", (_key_before_the_fix(json.loads(
            (old / "run.json").read_text())),))
    with pytest.raises(InputError, match="already registered as run #1"):
        register_run(reg, new)
