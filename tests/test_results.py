"""Field-results import: CSV / XLSX / QField GeoPackage merged by task_id, every row validated,
rejected rows reported by number and reason, valid rows applied, history kept, re-import a no-op."""

from __future__ import annotations

import sqlite3
from datetime import date, datetime

import pytest
from survey_helpers import (
    SPECS_2025,
    dump,
    fill_csv,
    fill_gpkg,
    fill_xlsx,
    make_run,
    read_csv,
    results_2025,
    write_csv,
)

from poppyscan.cli import main
from poppyscan.errors import InputError
from poppyscan.survey import import_results, register_run

TODAY = date(2026, 12, 31)


@pytest.fixture()
def run(tmp_path):
    tasks = make_run(tmp_path / "run", SPECS_2025, tag="r")
    reg = tmp_path / "reg.gpkg"
    register_run(reg, tmp_path / "run")
    return {
        "reg": reg,
        "dir": tmp_path / "run",
        "ids": list(tasks["task_id"]),
        "tasks": tasks,
        "tmp": tmp_path,
    }


def task_rows(reg):
    conn = sqlite3.connect(reg)
    conn.row_factory = sqlite3.Row
    try:
        return {r["task_id"]: dict(r) for r in conn.execute("SELECT * FROM tasks")}
    finally:
        conn.close()


def history(reg):
    with sqlite3.connect(reg) as conn:
        return conn.execute(
            "SELECT task_id, field, old_value, new_value, changed_by, checked_at, source_row "
            "FROM status_history ORDER BY fid"
        ).fetchall()


@pytest.mark.parametrize("kind", ["csv", "gpkg", "xlsx"])
def test_import_applies_results_and_twice_changes_nothing(run, kind):
    back = run["tmp"] / f"back.{kind}"
    filled = results_2025(run["tasks"])
    if kind == "csv":
        fill_csv(run["dir"] / "tasks.csv", back, filled)
    elif kind == "gpkg":
        fill_gpkg(run["dir"] / "plots.gpkg", back, filled)
    else:  # typed cells, as Excel stores them
        filled[run["ids"][0]]["checked_at"] = datetime(2025, 5, 2, 9, 30)
        fill_xlsx(run["dir"] / "tasks.xlsx", back, filled)
    report = import_results(run["reg"], back, today=TODAY)
    assert report.n_rows == 4 and report.n_changed_rows == 4 and not report.rejected
    tasks = task_rows(run["reg"])
    first, second, third, fourth = (tasks[t] for t in run["ids"])
    assert (first["result"], first["plants_eradicated"], first["checked_by"], first["status"]) == (
        "poppy",
        120,
        "王伟",
        "done",
    )
    assert first["checked_at"] == ("2025-05-02T09:30:00" if kind == "xlsx" else "2025-05-02")
    assert second["result"] == "not_poppy" and second["plants_eradicated"] is None
    assert third["result"] == "already_eradicated" and third["checked_at"] == "2025-05-03T10:20:00"
    assert fourth["result"] == "not_reached" and fourth["notes"] == "road washed out 路断"
    hist = history(run["reg"])
    assert (run["ids"][0], "result", None, "poppy", "王伟") in [h[:5] for h in hist]
    assert any(h[1] == "status" and h[2] == "pending" and h[3] == "done" for h in hist)
    with sqlite3.connect(run["reg"]) as conn:
        src = {r[0] for r in conn.execute("SELECT source_file FROM status_history")}
    assert src == {str(back.resolve())}

    before = dump(run["reg"])
    again = import_results(run["reg"], back, today=TODAY)
    assert again.n_changed_rows == 0 and again.n_unchanged_rows == 4 and not again.rejected
    assert dump(run["reg"]) == before  # no duplicate history rows, no import log row, nothing


def test_bad_rows_rejected_by_number_and_reason_the_rest_applied(run):
    ids = run["ids"]
    rows = read_csv(run["dir"] / "tasks.csv")
    lon, lat = float(rows[0]["lon"]), float(rows[0]["lat"])
    edits = [
        dict(
            rows[0],
            result="poppy",
            plants_eradicated="35",
            checked_by="赵",
            checked_at="2025-05-04",
            onsite_lon=f"{lon + 0.00003:.7f}",
            onsite_lat=f"{lat:.7f}",
        ),  # row 2: valid, ~3 m off
        dict(rows[1], result="maybe"),  # row 3
        dict(rows[2], result="poppy", checked_at="last tuesday"),  # row 4
        dict(rows[3], result="Poppy", plants_eradicated="7", checked_at="2025/05/06 08:15"),  # row 5: valid
        dict(rows[3], task_id="00000000-0000-0000-0000-000000000000", result="poppy"),  # row 6
        dict(rows[2], result="not_poppy"),  # row 7: id of row 4
        dict(rows[1], task_id="", result="poppy"),  # row 8
    ]
    write_csv(run["tmp"] / "bad.csv", edits)
    report = import_results(run["reg"], run["tmp"] / "bad.csv", today=TODAY)
    reasons = {r.row: r.reason for r in report.rejected}
    assert sorted(reasons) == [3, 4, 6, 7, 8]
    assert (
        reasons[3]
        == "invalid result 'maybe' (expected one of poppy, not_poppy, already_eradicated, not_reached)"
    )
    assert "checked_at 'last tuesday' is not a date" in reasons[4]
    assert reasons[6].startswith("unknown task_id '00000000-0000-0000-0000-000000000000'")
    assert reasons[7] == "duplicate task_id (first on row 4)"
    assert reasons[8] == "task_id is empty"
    assert report.n_changed_rows == 2
    tasks = task_rows(run["reg"])
    assert tasks[ids[0]]["result"] == "poppy" and tasks[ids[0]]["plants_eradicated"] == 35
    assert tasks[ids[0]]["onsite_lon"] == pytest.approx(lon + 0.00003)
    assert tasks[ids[3]]["result"] == "poppy" and tasks[ids[3]]["checked_at"] == "2025-05-06T08:15:00"
    assert (
        tasks[ids[1]]["result"] is None and tasks[ids[2]]["result"] is None
    )  # rejected rows changed nothing
    assert f"rejected row 3 (task_id {ids[1]}): invalid result 'maybe'" in report.describe()


@pytest.mark.parametrize(
    ("cells", "reason"),
    [
        ({"result": "poppy", "plants_eradicated": "-5"}, "plants_eradicated -5 is negative"),
        ({"result": "poppy", "plants_eradicated": "2.5"}, "is not a whole number"),
        (
            {"result": "not_poppy", "plants_eradicated": "30"},
            "plants_eradicated is 30 but result is not_poppy",
        ),
        ({"result": "poppy", "checked_at": "2031-01-01"}, "in the future"),
        ({"result": "poppy", "onsite_lon": "111.0"}, "must be given together"),
        ({"result": "poppy", "onsite_lon": "east", "onsite_lat": "25"}, "'east, 25' is not a WGS84 lon/lat"),
        ({"result": "poppy", "onsite_lon": "200", "onsite_lat": "25"}, "'200, 25' is not near the plot"),
        ({"result": "poppy", "DX": 0.01}, "m from the plot (limit 200 m); check it is WGS84"),
        ({"result": "poppy", "SWAP": True}, "lon and lat look swapped"),
        ({"result": "poppy", "DX": 0.0015}, "m from the plot (limit 100 m)"),
    ],
)
def test_each_validation_rule(run, cells, reason):
    rows = read_csv(run["dir"] / "tasks.csv")
    row = dict(rows[0])
    lon, lat = float(row["lon"]), float(row["lat"])
    cells = dict(cells)
    if "DX" in cells:
        cells["onsite_lon"], cells["onsite_lat"] = f"{lon + cells.pop('DX'):.7f}", f"{lat:.7f}"
    if cells.pop("SWAP", False):
        cells["onsite_lon"], cells["onsite_lat"] = f"{lat:.7f}", f"{lon:.7f}"
    row.update(cells)
    write_csv(run["tmp"] / "one.csv", [row])
    max_d = 100.0 if "100 m" in reason else 200.0
    report = import_results(run["reg"], run["tmp"] / "one.csv", today=TODAY, max_distance_m=max_d)
    assert [r.row for r in report.rejected] == [2]
    assert reason in report.rejected[0].reason
    assert task_rows(run["reg"])[row["task_id"]]["result"] is None


def test_empty_cells_never_clear_and_corrections_are_history(run):
    ids = run["ids"]
    fill_csv(
        run["dir"] / "tasks.csv", run["tmp"] / "a.csv", {ids[0]: {"result": "poppy", "checked_by": "王"}}
    )
    import_results(run["reg"], run["tmp"] / "a.csv", today=TODAY)
    # another team's file: blank for ids[0]; then a correction of ids[0], with Chinese values
    # and a GB18030 CSV
    import_results(run["reg"], run["dir"] / "tasks.csv", today=TODAY)
    assert task_rows(run["reg"])[ids[0]]["result"] == "poppy"
    rows = read_csv(run["dir"] / "tasks.csv")
    rows[0].update(result="非罂粟", checked_by="李", checked_at="2025年05月09日")
    path = run["tmp"] / "gbk.csv"
    with open(path, "w", encoding="gb18030", newline="") as fh:
        import csv

        w = csv.DictWriter(fh, fieldnames=list(rows[0]))
        w.writeheader()
        w.writerows(rows)
    report = import_results(run["reg"], path, today=TODAY)
    assert not report.rejected and report.n_changed_rows == 1
    assert task_rows(run["reg"])[ids[0]]["result"] == "not_poppy"
    h = [x for x in history(run["reg"]) if x[0] == ids[0] and x[1] == "result"]
    assert [(x[2], x[3], x[4]) for x in h] == [(None, "poppy", "王"), ("poppy", "not_poppy", "李")]


def test_dry_run_changes_nothing(run):
    fill_csv(run["dir"] / "tasks.csv", run["tmp"] / "a.csv", results_2025(run["tasks"]))
    before = dump(run["reg"])
    report = import_results(run["reg"], run["tmp"] / "a.csv", dry_run=True, today=TODAY)
    assert report.n_changed_rows == 4 and "would update" in report.describe()
    assert dump(run["reg"]) == before


def test_file_problems_are_one_line_errors(run, tmp_path):
    with pytest.raises(InputError, match="does not exist"):
        import_results(run["reg"], tmp_path / "nope.csv")
    (tmp_path / "t.txt").write_text("task_id,result\n")
    with pytest.raises(InputError, match="unsupported format '.txt'"):
        import_results(run["reg"], tmp_path / "t.txt")
    write_csv(tmp_path / "noid.csv", [{"id": "x", "result": "poppy"}])
    with pytest.raises(InputError, match="no 'task_id' column"):
        import_results(run["reg"], tmp_path / "noid.csv")
    write_csv(tmp_path / "nores.csv", [{"task_id": run["ids"][0], "resultat": "poppy"}])
    with pytest.raises(InputError, match="none of the result columns"):
        import_results(run["reg"], tmp_path / "nores.csv")
    with pytest.raises(InputError, match="has no layer 'tasks_v2' \\(layers: plots, tasks\\)"):
        import_results(run["reg"], run["dir"] / "plots.gpkg", layer="tasks_v2")
    with pytest.raises(InputError, match="register .* does not exist"):
        import_results(tmp_path / "none.gpkg", run["dir"] / "tasks.csv")


def test_cli_import_reports_rejections_and_errors_in_one_line(run, capsys):
    rows = read_csv(run["dir"] / "tasks.csv")
    rows[0]["result"] = "poppy"
    rows[1]["result"] = "purple"
    rows[2]["extra_col"] = "x"
    write_csv(run["tmp"] / "r.csv", rows, fields=[*rows[0].keys(), "extra_col"])
    code = main(["results", "import", str(run["tmp"] / "r.csv"), "--register", str(run["reg"])])
    captured = capsys.readouterr()
    out = captured.out
    assert code == 1
    assert captured.err.strip() == (
        "poppyscan: error: 1 of 4 row(s) rejected (listed above); the valid rows were "
        "applied: fix the rejected rows and import the file again"
    )
    assert "updated 1 task(s)" in out and "rejected row 3" in out and "invalid result 'purple'" in out
    assert "ignored column(s) not known to poppyscan: extra_col" in out
    for args, message in [
        (["results", "import", str(run["tmp"] / "missing.csv")], "does not exist"),
        (["results", "import", str(run["dir"] / "run.json")], "unsupported format '.json'"),
        (["results", "register", str(run["tmp"] / "nodir")], "does not exist"),
    ]:
        code = main([*args, "--register", str(run["reg"])])
        err = capsys.readouterr().err
        assert code == 2, err
        assert err.startswith("poppyscan: error:") and message in err and "Traceback" not in err
        assert len(err.strip().splitlines()) == 1
    assert main(["results", "register", str(run["dir"]), "--register", str(run["reg"])]) == 0
    assert "already registered" in capsys.readouterr().out


def _verdict_file(run, name, tid, **cells):
    rows = [r for r in read_csv(run["dir"] / "tasks.csv") if r["task_id"] == tid]
    rows[0].update({k: str(v) for k, v in cells.items()})
    write_csv(run["tmp"] / name, rows)
    return run["tmp"] / name


def _verdict(reg, tid):
    t = task_rows(reg)[tid]
    return tuple(t[k] for k in ("result", "plants_eradicated", "checked_at", "checked_by", "photo", "status"))


def test_an_older_verdict_imported_later_is_skipped_and_reported(run):
    """The audit's case: team B's verdict of 5 May, then team A's older file of 1 May."""
    tid = run["ids"][0]
    newer = _verdict_file(run, "b.csv", tid, result="poppy", plants_eradicated=600, checked_by="B",
                          checked_at="2025-05-05", photo="b.jpg")
    older = _verdict_file(run, "a.csv", tid, result="already_eradicated", checked_by="A",
                          checked_at="2025-05-01")
    import_results(run["reg"], newer, today=TODAY)
    before = dump(run["reg"])
    report = import_results(run["reg"], older, today=TODAY)
    assert _verdict(run["reg"], tid) == ("poppy", 600, "2025-05-05", "B", "b.jpg", "done")
    assert (report.n_changed_rows, report.n_unchanged_rows, len(report.skipped)) == (0, 0, 1)
    assert not report.rejected
    text = report.describe()
    assert "0 unchanged, 1 skipped as older than the verdict recorded, 0 rejected" in text
    assert (f"skipped row 2 (task_id {tid}): checked_at 2025-05-01 is older than the verdict recorded "
            "(poppy, by B, checked_at 2025-05-05); kept the recorded one") in text
    assert dump(run["reg"]) == before  # not a field touched, no history, no import row


def test_cli_import_of_an_older_file_reports_the_skipped_row_and_succeeds(run, capsys):
    tid = run["ids"][1]
    newer = _verdict_file(run, "b.csv", tid, result="not_poppy", checked_by="B", checked_at="2025-05-05")
    older = _verdict_file(run, "a.csv", tid, result="poppy", checked_by="A", checked_at="2025-05-01")
    for path in (newer, older):
        assert main(["results", "import", str(path), "--register", str(run["reg"])]) == 0
    out = capsys.readouterr().out
    assert "a.csv: 1 row(s): updated 0 task(s) (0 field change(s)), 0 unchanged, 1 skipped as older" in out
    assert "skipped row 2" in out and task_rows(run["reg"])[tid]["result"] == "not_poppy"


def test_a_newer_verdict_replaces_the_recorded_one_as_a_whole_with_history(run):
    tid = run["ids"][0]
    older = _verdict_file(run, "a.csv", tid, result="poppy", plants_eradicated=600, checked_by="A",
                          checked_at="2025-05-01", photo="a.jpg", notes="big field")
    newer = _verdict_file(run, "b.csv", tid, result="already_eradicated", checked_by="B",
                          checked_at="2025-05-05 16:30")
    import_results(run["reg"], older, today=TODAY)
    report = import_results(run["reg"], newer, today=TODAY)
    assert report.n_changed_rows == 1 and not report.skipped
    # none of A's fields is left beside B's verdict
    assert _verdict(run["reg"], tid) == ("already_eradicated", None, "2025-05-05T16:30:00", "B", None, "done")
    assert task_rows(run["reg"])[tid]["notes"] is None
    changes = {h[1]: (h[2], h[3], h[4]) for h in history(run["reg"]) if h[0] == tid and h[4] == "B"}
    assert changes["result"] == ("poppy", "already_eradicated", "B")
    assert changes["plants_eradicated"] == ("600", None, "B") and changes["photo"] == ("a.jpg", None, "B")
    with sqlite3.connect(run["reg"]) as conn:
        assert conn.execute("SELECT n_changed, n_skipped FROM imports ORDER BY fid DESC").fetchone() == (1, 0)
    # the older file once more: skipped, nothing changes
    assert len(import_results(run["reg"], older, today=TODAY).skipped) == 1
    assert _verdict(run["reg"], tid)[:2] == ("already_eradicated", None)


def test_the_same_visit_is_corrected_field_by_field_but_another_teams_same_day_verdict_is_refused(run):
    tid = run["ids"][0]
    first = _verdict_file(run, "a.csv", tid, result="poppy", plants_eradicated=600, checked_by="A",
                          checked_at="2025-05-02 09:30")
    import_results(run["reg"], first, today=TODAY)
    # team A corrects its count (same day, no time this time; no result cell): the rest stays
    fix = _verdict_file(run, "fix.csv", tid, plants_eradicated=650, checked_by="A", checked_at="2025-05-02")
    assert import_results(run["reg"], fix, today=TODAY).n_changed_rows == 1
    assert _verdict(run["reg"], tid)[:4] == ("poppy", 650, "2025-05-02T09:30:00", "A")
    before = dump(run["reg"])
    for cells, reason in [
        ({"result": "not_poppy", "checked_by": "B", "checked_at": "2025-05-02"},
         "another team's verdict (poppy, by A, checked_at 2025-05-02T09:30:00) is recorded for the same "
         "checked_at 2025-05-02; give checked_at with the time"),
        ({"result": "not_poppy", "checked_by": "B"}, "checked_at is empty and another team's verdict"),
        ({"notes": "again", "checked_at": "2025-05-03"}, "later than the verdict recorded (poppy, by A, "
         "checked_at 2025-05-02T09:30:00) but the row has no result"),
    ]:
        report = import_results(run["reg"], _verdict_file(run, "x.csv", tid, **cells), today=TODAY)
        assert [r.row for r in report.rejected] == [2] and reason in report.rejected[0].reason
    assert dump(run["reg"]) == before


def test_an_undated_row_never_overwrites_a_dated_verdict_whatever_the_import_order(run):
    """The review's case: team A's undated 'not reached', then A's dated poppy verdict with a photo, then
    the undated file again: it must neither turn the result back nor add its notes to the dated visit."""
    undated = {"result": "not_reached", "checked_by": "A", "notes": "road flooded"}
    dated = {"result": "poppy", "checked_by": "A", "checked_at": "2025-05-05", "photo": "p.jpg"}
    expected = ("poppy", None, "2025-05-05", "A", "p.jpg", "done")
    first, second = run["ids"][:2]
    for tid, order in ((first, ("u", "d", "u")), (second, ("d", "u"))):
        files = {"u": _verdict_file(run, f"u{tid}.csv", tid, **undated),
                 "d": _verdict_file(run, f"d{tid}.csv", tid, **dated)}
        reports = [import_results(run["reg"], files[k], today=TODAY) for k in order]
        assert _verdict(run["reg"], tid) == expected, order
        assert task_rows(run["reg"])[tid]["notes"] is None, order
        (rejected,) = reports[-1].rejected
        assert rejected.reason == (
            "checked_at is empty and the row would change the result of the dated verdict recorded "
            "(poppy, by A, checked_at 2025-05-05); fill in checked_at so the newer one wins")
    # an undated row may fill what the dated verdict left empty, and change nothing else
    before = dump(run["reg"])
    for cells in ({"result": "already_eradicated"}, {"result": "poppy", "photo": "q.jpg", "checked_by": "A"}):
        report = import_results(run["reg"], _verdict_file(run, "x.csv", first, **cells), today=TODAY)
        assert [r.row for r in report.rejected] == [2] and "fill in checked_at" in report.rejected[0].reason
    assert dump(run["reg"]) == before
    fill = _verdict_file(run, "fill.csv", first, result="poppy", plants_eradicated=40, notes="seen again")
    assert import_results(run["reg"], fill, today=TODAY).n_changed_rows == 1
    assert _verdict(run["reg"], first) == ("poppy", 40, "2025-05-05", "A", "p.jpg", "done")
    assert task_rows(run["reg"])[first]["notes"] == "seen again"
    # a dated visit that left the result empty: the undated row of the same team fills it in
    third = run["ids"][2]
    notes = _verdict_file(run, "n.csv", third, checked_by="A", checked_at="2025-05-06", notes="gate locked")
    import_results(run["reg"], notes, today=TODAY)
    later = _verdict_file(run, "r.csv", third, result="not_poppy", checked_by="A")
    assert import_results(run["reg"], later, today=TODAY).n_changed_rows == 1
    assert _verdict(run["reg"], third)[0] == "not_poppy"
    assert task_rows(run["reg"])[third]["checked_at"] == "2025-05-06"
