"""Admin units in the survey register: the same --admin / --admin-fields / --admin-gcj02 as `poppyscan
tasks`, so plots and surveyed hectares land in the units their tasks are in; a warning when nothing does."""

from __future__ import annotations

import logging
import sqlite3

import pyogrio
import pytest
import shapely
from conftest_tasks import make_boundaries, make_run
from survey_helpers import dump

from poppyscan.cli import main
from poppyscan.errors import InputError
from poppyscan.geo.gcj02 import wgs84_to_gcj02
from poppyscan.survey import compute_stats, register_run
from poppyscan.tasks import build_tasks

CN = ["县", "乡镇", "村"]
UNASSIGNED = ("(unassigned)",) * 3
YAN, NONG = ("勐海县", "勐遮镇", "曼燕村"), ("勐海县", "勐遮镇", "曼弄村")
# probability.tif of the fixture: 80 m x 78 m valid; 曼燕村 holds 40 x 78 m of it, 曼弄村 40 x 68 m
HA = {YAN: 0.312, NONG: 0.272, UNASSIGNED: 0.04}


def cn_boundaries(tmp_path, crs="EPSG:4490"):
    """The tasks fixture's two villages, with Chinese field names (县, 乡镇, 村), in CGCS2000."""
    gdf = pyogrio.read_dataframe(make_boundaries(tmp_path / "v.gpkg", crs))
    pyogrio.write_dataframe(gdf.rename(columns=dict(zip(("county", "township", "village"), CN, strict=True))),
                            tmp_path / "v_cn.gpkg")
    return tmp_path / "v_cn.gpkg"


def by_village(reg):
    return {tuple(r[c] for c in ("county", "township", "village")): r
            for r in compute_stats(reg, by="village").rows}


def run_units(reg):
    with sqlite3.connect(reg) as conn:
        return {tuple(r[:3]): r[3] for r in conn.execute("SELECT county, township, village, surveyed_ha "
                                                          "FROM run_units")}


def test_register_takes_the_admin_fields_the_tasks_used(tmp_path):
    run = make_run(tmp_path / "run")
    bnd = cn_boundaries(tmp_path)
    build_tasks(run, admin=bnd, admin_fields=CN)
    reg = tmp_path / "a.gpkg"
    s = register_run(reg, run, flight_date="2025-04-20", admin=bnd)  # fields: those of the tasks
    assert s.warnings == ()
    rows = by_village(reg)
    found = {k: r["plots_found"] for k, r in rows.items()}
    assert found == {YAN: 3, NONG: 2, UNASSIGNED: 1}  # plot 6 lies outside both villages
    for unit, ha in HA.items():
        assert rows[unit]["surveyed_ha"] == pytest.approx(ha, rel=3e-3)
    assert rows[YAN]["plots_per_100ha"] == pytest.approx(100 * 3 / 0.312, rel=3e-3)
    with sqlite3.connect(reg) as conn:
        assert conn.execute("SELECT village FROM tasks WHERE plot_id = 4").fetchone()[0] == "曼弄村"
    # the same, naming the fields again, from the command line
    cli_reg = tmp_path / "b.gpkg"
    assert main(["results", "register", str(run), "--flight-date", "2025-04-20", "--admin", str(bnd),
                 "--admin-fields", "县,乡镇,村", "--register", str(cli_reg)]) == 0
    assert run_units(cli_reg) == pytest.approx(run_units(reg))


def test_without_admin_units_come_from_the_tasks_and_registering_again_with_admin_adds_hectares(
    tmp_path, caplog
):
    run = make_run(tmp_path / "run")
    bnd = cn_boundaries(tmp_path)
    build_tasks(run, admin=bnd, admin_fields=CN)
    reg = tmp_path / "reg.gpkg"
    with caplog.at_level(logging.WARNING, logger="poppyscan"):
        s = register_run(reg, run, flight_date="2025-04-20")
    assert len(s.warnings) == 1 and "not split by unit (no --admin)" in s.warnings[0]
    assert [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING] == list(s.warnings)
    rows = by_village(reg)
    yan = rows[YAN]
    assert (yan["plots_found"], yan["surveyed_ha"], yan["plots_per_100ha"]) == (3, None, None)
    assert rows[UNASSIGNED]["surveyed_ha"] == pytest.approx(0.624, rel=3e-3)
    again = register_run(reg, run, flight_date="2025-04-20", admin=bnd)
    assert again.units_updated and again.warnings == () and "per unit updated" in again.describe()
    rows = by_village(reg)
    for unit, ha in HA.items():
        assert rows[unit]["surveyed_ha"] == pytest.approx(ha, rel=3e-3)
    before = dump(reg)
    assert not register_run(reg, run, flight_date="2025-04-20", admin=bnd).units_updated
    assert dump(reg) == before


def test_gcj02_boundaries_need_admin_gcj02_and_a_warning_says_so(tmp_path):
    run = make_run(tmp_path / "run")
    gdf = pyogrio.read_dataframe(make_boundaries(tmp_path / "v.gpkg", "EPSG:4326"))
    gdf.geometry = shapely.transform(gdf.geometry.values, wgs84_to_gcj02, interleaved=False)
    gcj = tmp_path / "v_gcj.gpkg"  # digitised on Amap: ~500 m off in WGS84
    pyogrio.write_dataframe(gdf, gcj)
    build_tasks(run, admin=gcj, admin_gcj02=True)
    forgot = register_run(tmp_path / "a.gpkg", run, flight_date="2025-04-20", admin=gcj)
    assert len(forgot.warnings) == 1
    assert forgot.warnings[0].startswith("all 6 plot(s) and all 0.62 ha surveyed lie outside every unit of")
    assert "pass --admin-gcj02" in forgot.warnings[0]
    assert list(run_units(tmp_path / "a.gpkg")) == [("", "", "")]
    assert main(["results", "register", str(run), "--flight-date", "2025-04-20", "--admin", str(gcj),
                 "--admin-gcj02", "--register", str(tmp_path / "b.gpkg")]) == 0
    units = run_units(tmp_path / "b.gpkg")
    for unit, ha in HA.items():
        assert units[tuple("" if u == "(unassigned)" else u for u in unit)] == pytest.approx(ha, rel=3e-3)
    assert {k: r["plots_found"] for k, r in by_village(tmp_path / "b.gpkg").items()} == {
        YAN: 3, NONG: 2, UNASSIGNED: 1}


def test_admin_option_mistakes_are_one_line_errors(tmp_path, capsys):
    run = make_run(tmp_path / "run")
    bnd = cn_boundaries(tmp_path)
    build_tasks(run, admin=bnd, admin_fields=CN)
    reg = tmp_path / "reg.gpkg"
    with pytest.raises(InputError, match="keeps three levels"):
        register_run(reg, run, flight_date="2025-04-20", admin=bnd, admin_fields=["县", "乡镇", "村", "组"])
    with pytest.raises(InputError, match=r"tasks have no field\(s\) 'county'.*are: 县, 乡镇, 村"):
        register_run(reg, run, flight_date="2025-04-20", admin_fields=["county"])
    assert main(["results", "register", str(run), "--flight-date", "2025-04-20", "--admin", str(bnd),
                 "--admin-fields", "county,township", "--register", str(reg)]) == 2
    err = capsys.readouterr().err
    assert err.startswith("poppyscan: error: boundary file") and "available fields: 县, 乡镇, 村" in err
    assert len(err.strip().splitlines()) == 1 and "Traceback" not in err
    build_tasks(run, admin=bnd, admin_fields=[*CN, "village_code"])  # four admin fields in the tasks
    with pytest.raises(InputError, match="carry 4 admin fields .* choose three with --admin-fields"):
        register_run(reg, run, flight_date="2025-04-20")
    assert not reg.exists()  # nothing written on a refused registration
