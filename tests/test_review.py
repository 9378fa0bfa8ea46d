"""Desk review: the decision store, the web server's validation, persistence, and the page in Chromium."""

from __future__ import annotations

import importlib.util
import json
import os
import shutil
import sqlite3
import urllib.error
import urllib.request
from pathlib import Path

import pyogrio
import pytest

from poppyscan.cli import main
from poppyscan.errors import InputError, OutputExistsError
from poppyscan.review import store
from poppyscan.review.server import make_server

try:
    from conftest_tasks import flipped_copy
    from review_testdata import make_run, running_server
except ImportError:  # tests/ became a package
    from tests.conftest_tasks import flipped_copy
    from tests.review_testdata import make_run, running_server


@pytest.fixture()
def run(tmp_path):
    return make_run(tmp_path)


def _request(
    url: str, body: bytes | None = None, headers: dict[str, str] | None = None, method: str | None = None
):
    """(status, parsed JSON or raw bytes, headers) without raising on 4xx/5xx."""
    req = urllib.request.Request(url, data=body, headers=headers or {}, method=method)
    try:
        with urllib.request.urlopen(req, timeout=30) as r:
            status, data, hdrs = r.status, r.read(), r.headers
    except urllib.error.HTTPError as e:
        status, data, hdrs = e.code, e.read(), e.headers
    if (hdrs.get("Content-Type") or "").startswith("application/json"):
        data = json.loads(data)
    return status, data, hdrs


def _post(server, obj, **headers):
    body = obj if isinstance(obj, bytes) else json.dumps(obj).encode()
    hdrs = {"Content-Type": "application/json", **headers}
    base = getattr(server, "url", server)  # a ReviewServer or its URL
    return _request(base + "api/decision", body, hdrs, "POST")


# ---- store ----------------------------------------------------------------------------------------
def test_unreviewed_run_has_no_decisions(run):
    assert store.load_decisions(run.run_dir) == {}
    assert store.rejected_plot_ids(run.run_dir) == set()


def test_save_load_clear_and_history(run):
    store.save_decision(run.run_dir, 3, "rejected", reviewer="li")
    store.save_decision(run.run_dir, 2, "confirmed", reviewer="li")
    store.save_decision(run.run_dir, 5, "unsure", reviewer="wang")
    store.save_decision(run.run_dir, 5, "rejected", reviewer="wang")
    assert store.load_decisions(run.run_dir) == {2: "confirmed", 3: "rejected", 5: "rejected"}
    assert store.rejected_plot_ids(run.run_dir) == {3, 5}
    store.save_decision(run.run_dir, 5, None, reviewer="wang")  # changed mind: clear
    assert store.rejected_plot_ids(run.run_dir) == {3}
    doc = json.loads((run.run_dir / "review.json").read_text())
    assert doc["decisions"]["3"]["reviewer"] == "li" and doc["decisions"]["3"]["time"]
    assert [(h["plot_id"], h["decision"], h["previous"]) for h in doc["history"]] == [
        (3, "rejected", None),
        (2, "confirmed", None),
        (5, "unsure", None),
        (5, "rejected", "unsure"),
        (5, None, "rejected"),
    ]
    assert not list(run.run_dir.glob(".review.json*"))  # no temporary files left behind


@pytest.mark.parametrize(
    ("plot_id", "decision", "match"),
    [
        (99, "rejected", "'plot_id' 99"),
        (3, "maybe", "'decision' must be one of"),
        (True, "rejected", "integer"),
        ("3", "rejected", "integer"),
    ],
)
def test_save_refuses_bad_input_and_writes_nothing(run, plot_id, decision, match):
    with pytest.raises(InputError, match=match):
        store.save_decision(run.run_dir, plot_id, decision)
    assert not (run.run_dir / "review.json").exists()


def test_corrupt_review_file_is_named(run):
    (run.run_dir / "review.json").write_text("{not json")
    with pytest.raises(InputError, match="review.json' is not valid JSON"):
        store.load_decisions(run.run_dir)
    (run.run_dir / "review.json").write_text(
        json.dumps({"format": "poppyscan-review", "decisions": {"1": {"decision": "nope"}}})
    )
    with pytest.raises(InputError, match="invalid entry for plot '1'"):
        store.load_decisions(run.run_dir)


def test_review_column_mirrored_into_plots_gpkg(run):
    store.save_decision(run.run_dir, 3, "rejected")
    store.save_decision(run.run_dir, 2, "confirmed")
    df = pyogrio.read_dataframe(run.run_dir / "plots.gpkg", layer="plots")
    assert dict(zip(df.plot_id, df.review, strict=True)) == {
        1: "",
        2: "confirmed",
        3: "rejected",
        4: "",
        5: "",
        6: "",
    }
    # geometry and spatial index untouched: a bbox query around plot 3 still finds it
    hit = pyogrio.read_dataframe(
        run.run_dir / "plots.gpkg", layer="plots", bbox=(500026, 2999995, 500028, 2999997)
    )
    assert list(hit.plot_id) == [3]
    with sqlite3.connect(run.run_dir / "plots.gpkg") as con:
        assert con.execute("PRAGMA integrity_check").fetchone() == ("ok",)


def test_hard_negatives_follow_rejections(run):
    store.save_decision(run.run_dir, 3, "rejected", reviewer="li")
    store.save_decision(run.run_dir, 6, "rejected", reviewer="li")
    store.save_decision(run.run_dir, 2, "confirmed", reviewer="li")
    path = run.run_dir / "hard_negatives.gpkg"
    neg = pyogrio.read_dataframe(path, layer="hard_negatives")
    plots = pyogrio.read_dataframe(run.run_dir / "plots.gpkg", layer="plots")
    assert sorted(neg.plot_id) == [3, 6]
    assert set(neg.label) == {"not_poppy"} and set(neg.reviewer) == {"li"}
    assert neg.crs == plots.crs
    assert neg.set_index("plot_id").geometry[3].equals(plots.set_index("plot_id").geometry[3])
    store.save_decision(run.run_dir, 3, "confirmed")
    store.save_decision(run.run_dir, 6, None)
    assert len(pyogrio.read_dataframe(path, layer="hard_negatives")) == 0  # emptied, not stale
    out = store.export_hard_negatives(run.run_dir, run.run_dir.parent / "neg.gpkg")
    assert pyogrio.list_layers(out)[0][0] == "hard_negatives"


# ---- server ---------------------------------------------------------------------------------------
def test_run_api_lists_plots_in_priority_order(run):
    store.save_decision(run.run_dir, 4, "unsure", reviewer="li")
    with running_server(run.run_dir, reviewer="desk1") as server:
        assert server.url.startswith("http://127.0.0.1:")
        status, data, _ = _request(server.url + "api/run")
    assert status == 200
    assert [p["plot_id"] for p in data["plots"]] == list(run.priority)
    first = data["plots"][0]
    assert first["over_500_plants"] is True and first["rank"] == 1  # criminal-case size leads
    assert {p["plot_id"]: p["decision"] for p in data["plots"]}[4] == "unsure"
    assert data["total"] == 6 and data["reviewer"] == "desk1"
    assert data["footprints"][0]["bounds"] == [500000.0, 2999980.0, 500032.0, 3000000.0]


def test_server_rejects_invalid_decisions_and_writes_nothing(run):
    review = run.run_dir / "review.json"
    with running_server(run.run_dir) as server:
        cases = [
            ({"plot_id": 999, "decision": "rejected"}, {}, 404),
            ({"plot_id": 3, "decision": "delete"}, {}, 400),
            ({"plot_id": 3, "decision": "REJECTED"}, {}, 400),
            ({"plot_id": True, "decision": "rejected"}, {}, 400),
            ({"plot_id": "3", "decision": "rejected"}, {}, 400),
            ({"plot_id": 3}, {}, 400),
            ([3, "rejected"], {}, 400),
            (b"plot_id=3&decision=rejected", {}, 400),
            ({"plot_id": 3, "decision": "rejected"}, {"Content-Type": "text/plain"}, 415),
            ({"plot_id": 3, "decision": "rejected"}, {"Origin": "http://evil.example"}, 403),
            ({"plot_id": 3, "decision": "rejected"}, {"Host": "evil.example"}, 403),
        ]
        for obj, headers, expected in cases:
            status, data, _ = _post(server, obj, **headers)
            assert status == expected, (obj, headers, data)
            assert "error" in data
            assert not review.exists(), (obj, headers)
        status, data, _ = _post(server, {"plot_id": 3, "decision": "rejected", "reviewer": "li"})
        assert status == 200 and data["reviewed"] == 1 and data["saved"]["reviewer"] == "li"
        before = review.read_bytes()
        for obj, headers, expected in cases:
            assert _post(server, obj, **headers)[0] == expected
        assert review.read_bytes() == before
        assert _request(server.url + "api/decision", method="GET")[0] == 404
        assert _request(server.url + "static/..%2Fstore.py")[0] == 404
        assert _request(server.url + "api/chip/999.jpg")[0] == 404


def test_refused_post_does_not_poison_a_kept_alive_connection(run):
    import http.client

    with running_server(run.run_dir) as server:
        host, port = server.server_address[:2]
        conn = http.client.HTTPConnection(host, port, timeout=10)
        body = json.dumps({"plot_id": 3, "decision": "rejected"})
        conn.request("POST", "/api/decision", body, {"Content-Type": "text/plain"})
        r = conn.getresponse()
        assert r.status == 415 and json.loads(r.read())["error"]
        conn.request("GET", "/api/run")  # reconnects if the server closed; never reads the old body
        r = conn.getresponse()
        assert r.status == 200 and json.loads(r.read())["total"] == 6
        conn.request("POST", "/api/decision", body, {"Content-Type": "application/json"})
        r = conn.getresponse()
        assert r.status == 200 and json.loads(r.read())["ok"]
        conn.close()
    assert store.load_decisions(run.run_dir) == {3: "rejected"}


def test_saved_decisions_survive_a_server_restart(run):
    with running_server(run.run_dir) as server:
        assert _post(server, {"plot_id": 2, "decision": "confirmed"})[0] == 200
        assert _post(server, {"plot_id": 6, "decision": "rejected"})[0] == 200
        assert _post(server, {"plot_id": 1, "decision": "unsure"})[0] == 200
        assert _post(server, {"plot_id": 1, "decision": None})[0] == 200  # cleared again
    with running_server(run.run_dir) as server:  # a new process would read the same file
        _, data, _ = _request(server.url + "api/run")
    assert {p["plot_id"]: p["decision"] for p in data["plots"]} == {
        2: "confirmed",
        6: "rejected",
        1: None,
        3: None,
        4: None,
        5: None,
    }


def test_chips_and_overview_are_cut_from_the_mosaic_and_cached(run):
    with running_server(run.run_dir) as server:
        status, jpg, hdrs = _request(server.url + "api/chip/3.jpg")
        assert status == 200 and hdrs["Content-Type"] == "image/jpeg" and jpg[:2] == b"\xff\xd8"
        assert len(list((run.run_dir / "review" / "chips").glob("3_*.jpg"))) == 1
        status, png, _ = _request(server.url + "api/overview/0.png")
        assert status == 200 and png[:4] == b"\x89PNG"
        assert _request(server.url + "api/overview/5.png")[0] == 404
    import cv2
    import numpy as np

    img = cv2.imdecode(np.frombuffer(jpg, np.uint8), cv2.IMREAD_COLOR)
    assert img.shape == (480, 480, 3)
    yellow = (img[..., 2] > 200) & (img[..., 1] > 180) & (img[..., 0] < 90)  # the plot outline
    assert yellow.sum() > 100


def test_geographic_mosaic_cgcs2000(tmp_path):
    geo = make_run(tmp_path, crs="EPSG:4490")
    with running_server(geo.run_dir) as server:
        _, data, _ = _request(server.url + "api/run")
        status, jpg, _ = _request(server.url + "api/chip/5.jpg")
    assert [p["plot_id"] for p in data["plots"]] == list(geo.priority)
    assert data["crs"] == "EPSG:4490" and 110 < data["plots"][0]["x"] < 112
    import cv2
    import numpy as np

    img = cv2.imdecode(np.frombuffer(jpg, np.uint8), cv2.IMREAD_COLOR)
    yellow = (img[..., 2] > 200) & (img[..., 1] > 180) & (img[..., 0] < 90)
    rows, cols = np.nonzero(yellow)
    # plot 5 is a 2 m disc in the middle of a 16 m chip: about 60 px across, not stretched by degrees
    assert 45 < np.ptp(cols) < 80 and 45 < np.ptp(rows) < 80 and abs(np.ptp(cols) - np.ptp(rows)) < 8


def test_south_up_mosaic_gives_the_chips_and_overview_of_the_north_up_one(tmp_path):
    """A mosaic stored south-up (rows reversed, positive y pixel size): chips and overview stay north-up."""
    import cv2
    import numpy as np
    import rasterio

    north, south = make_run(tmp_path / "north"), make_run(tmp_path / "south")
    flipped_copy(north.mosaic, south.mosaic.with_name("flipped.tif")).replace(south.mosaic)
    meta = json.loads((south.run_dir / "run.json").read_text(encoding="utf-8"))
    with rasterio.open(south.mosaic) as src:
        assert src.transform.e > 0
        meta["inputs"][0]["bounds"] = list(src.bounds)  # what detect records: bottom > top
    (south.run_dir / "run.json").write_text(json.dumps(meta), encoding="utf-8")
    images = {}
    for fx in (north, south):
        with running_server(fx.run_dir) as server:
            got = [_request(server.url + f"api/chip/{p}.jpg") for p in fx.plot_ids]
            got.append(_request(server.url + "api/overview/0.png"))
            _, summary, _ = _request(server.url + "api/run")
        assert all(status == 200 for status, _, _ in got)
        images[fx] = [cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_UNCHANGED) for _, data, _ in got]
        x0, y0, x1, y1 = summary["footprints"][0]["bounds"]
        assert x0 < x1 and y0 < y1
    assert len(list((south.run_dir / "review" / "chips").glob("*.jpg"))) == 6  # real chips: cached
    for a, b in zip(images[north], images[south], strict=True):
        assert a.shape == b.shape and np.abs(a.astype(int) - b).mean() < 1.0


def test_run_and_mosaic_copied_elsewhere_still_show_chips(run, tmp_path):
    laptop = tmp_path / "laptop"
    laptop.mkdir()
    shutil.copytree(run.run_dir, laptop / "run")
    shutil.copy(run.mosaic, laptop / run.mosaic.name)
    run.mosaic.unlink()  # the path in run.json no longer exists
    with running_server(laptop / "run") as server:
        assert _request(server.url + "api/chip/2.jpg")[0] == 200
    assert list((laptop / "run" / "review" / "chips").glob("2_*.jpg"))  # a real chip: cached


def test_uint16_mosaics_use_detects_value_scale():
    import numpy as np

    from poppyscan.review.imagery import to_uint8_rgb

    data = np.stack([np.full((4, 4), v, np.uint16) for v in (4095, 2048, 0)])
    valid = np.ones((4, 4), bool)
    assert to_uint8_rgb(data, valid, 255 / 4095)[0, 0].tolist() == [255, 128, 0]
    stretched = to_uint8_rgb(data, valid)  # no scale known: 2-98 % stretch
    assert stretched.dtype == np.uint8 and stretched[0, 0, 0] == 255 and stretched[0, 0, 2] == 0


def test_missing_mosaic_still_serves_a_placeholder_chip(run):
    shutil.move(run.mosaic, run.mosaic.with_suffix(".moved"))
    with running_server(run.run_dir) as server:
        status, jpg, _ = _request(server.url + "api/chip/2.jpg")
        assert status == 200 and jpg[:2] == b"\xff\xd8"
        assert _post(server, {"plot_id": 2, "decision": "unsure"})[0] == 200  # review still possible
    assert not (run.run_dir / "review" / "chips").exists()  # placeholders are not cached


def test_page_ships_without_external_assets():
    static = Path(__import__("poppyscan.review", fromlist=["x"]).__file__).with_name("static")
    for name in ("index.html", "app.js", "style.css"):
        text = (static / name).read_text(encoding="utf-8")
        for bad in ('src="http', "src='http", 'href="http', "url(http", "@import", "//cdn"):
            assert bad not in text, (name, bad)


def test_server_listens_on_loopback_by_default(run):
    server = make_server(run.run_dir, port=0)
    try:
        assert server.server_address[0] == "127.0.0.1" and server.loopback
    finally:
        server.server_close()


# ---- CLI ------------------------------------------------------------------------------------------
def test_cli_missing_run_dir_is_one_line_error(tmp_path, capsys):
    assert main(["review", str(tmp_path / "nope"), "--no-browser", "--port", "0"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("poppyscan: error: run directory") and err.count("\n") == 1


def test_cli_serves_until_interrupted(run):
    import re
    import signal
    import subprocess
    import sys

    cmd = [sys.executable, "-m", "poppyscan", "review", str(run.run_dir), "--no-browser", "--port", "0"]
    # Ctrl-C as on a terminal: a test run started in the background (`cmd &` in a script) inherits an
    # ignored SIGINT, which Python then never turns into KeyboardInterrupt, so restore the default.
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    try:
        line = proc.stdout.readline()
        url = re.search(r"http://127\.0\.0\.1:\d+/", line)
        assert url, line + proc.stderr.read()
        assert "Reviewing 6 plot(s)" in line
        status, data, _ = _request(url.group(0) + "api/run")
        assert status == 200 and data["total"] == 6
        assert _post(url.group(0), {"plot_id": 4, "decision": "rejected"})[0] == 200
        proc.send_signal(signal.SIGINT)
        out, err = proc.communicate(timeout=20)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 0, err
    assert "Stopped. 1 of 6 plot(s) reviewed" in out
    assert store.rejected_plot_ids(run.run_dir) == {4}


def test_cli_exports_hard_negatives(run, tmp_path, capsys):
    store.save_decision(run.run_dir, 5, "rejected")
    out = tmp_path / "negatives.gpkg"
    assert main(["review", str(run.run_dir), "--export-hard-negatives", str(out)]) == 0
    assert "wrote 1 rejected plot(s)" in capsys.readouterr().out
    assert list(pyogrio.read_dataframe(out, layer="hard_negatives").plot_id) == [5]


def test_cli_export_hard_negatives_refuses_an_existing_file_without_overwrite(run, tmp_path, capsys):
    """An existing file (a 3-layer truth GeoPackage, a GeoTIFF) is never replaced without --overwrite."""
    store.save_decision(run.run_dir, 5, "rejected")
    truth = tmp_path / "truth.gpkg"
    shutil.copy(Path(__file__).resolve().parents[1] / "sample_tiles" / "utm49n_nodata" / "truth.gpkg", truth)
    tif = run.mosaic  # the run's own orthomosaic
    for path in (truth, tif):
        before = path.read_bytes()
        code = main(["review", str(run.run_dir), "--no-browser", "--export-hard-negatives", str(path)])
        err = capsys.readouterr().err.strip().splitlines()
        assert code == 3 and len(err) == 1 and "already exists" in err[0] and "--overwrite" in err[0], err
        assert path.read_bytes() == before
        assert not list(tmp_path.glob(".*part*"))
    assert [name for name, _ in pyogrio.list_layers(truth)] == ["plots", "confusers", "footprint"]
    code = main(["review", str(run.run_dir), "--export-hard-negatives", str(truth), "--overwrite"])
    assert code == 0 and "wrote 1 rejected plot(s)" in capsys.readouterr().out
    assert [name for name, _ in pyogrio.list_layers(truth)] == ["hard_negatives"]
    with pytest.raises(OutputExistsError):
        store.export_hard_negatives(run.run_dir, tif)
    store.export_hard_negatives(run.run_dir)  # the run's own derived file is always rewritten
    store.export_hard_negatives(run.run_dir)


# ---- the page in a real browser -------------------------------------------------------------------
CHROMIUM = os.environ.get("POPPYSCAN_CHROMIUM") or next(
    (
        p
        for p in ("/usr/bin/chromium", shutil.which("chromium"), shutil.which("chromium-browser"))
        if p and Path(p).is_file()
    ),
    "/usr/bin/chromium",
)
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]


@pytest.fixture()
def browser():
    sync_api = pytest.importorskip(
        "playwright.sync_api", reason="playwright not installed (bash scripts/setup.sh)"
    )
    if not Path(CHROMIUM).is_file():
        pytest.skip(
            f"no Chromium at {CHROMIUM} (bash scripts/setup.sh installs Debian's chromium with apt-get)"
        )
    with sync_api.sync_playwright() as p:
        b = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        try:
            yield b
        finally:
            b.close()


def test_review_page_end_to_end(run, browser, tmp_path):
    errors: list[str] = []
    with running_server(run.run_dir, reviewer="desk1") as server:
        page = browser.new_page(viewport={"width": 1400, "height": 900})
        page.on("pageerror", lambda e: errors.append(str(e)))
        page.on("console", lambda m: m.type == "error" and errors.append(m.text))
        page.goto(server.url)
        page.wait_for_selector(".card")
        assert page.locator(".card").count() == 6
        order = [int(x) for x in page.locator(".card").evaluate_all("cs => cs.map(c => c.dataset.id)")]
        assert order == list(run.priority)
        assert page.locator("#overview circle").count() == 6
        assert page.locator("#focus-id").inner_text().startswith(f"Plot {run.priority[0]} ")
        page.wait_for_function(
            "() => [...document.images].filter(i => i.complete && i.naturalWidth > 0).length >= 6"
        )
        # keyboard review: 1 = confirm, 2 = reject, 3 = unsure; auto-advance moves on after each decision
        for key in ("1", "2", "j", "3", "k", "2"):
            page.keyboard.press(key)
        page.wait_for_function("() => document.getElementById('save-status').className === 'ok'")
        p0, p1, _, p3 = run.priority[:4]
        # ...1 confirms p0 (-> p1), 2 rejects p1 (-> p2), j skips to p3, 3 marks it unsure (-> p4),
        # k goes back to p3, 2 re-decides p3 as rejected
        expected = {p0: "confirmed", p1: "rejected", p3: "rejected"}
        assert store.load_decisions(run.run_dir) == expected
        assert "3 / 6 reviewed" in page.locator("#progress-text").inner_text()
        page.screenshot(path=str(tmp_path / "review.png"))
        # filter: only not-yet-reviewed plots are shown
        page.select_option("#decision-filter", "undecided")
        assert page.locator(".card:not([hidden])").count() == 3
        page.select_option("#decision-filter", "all")
        page.locator("#min-prob").fill("0.75")  # mean-probability filter: plots 3 (0.78) and 5 (0.83)
        shown_ids = page.locator(".card:not([hidden])").evaluate_all("cs => cs.map(c => +c.dataset.id)")
        assert sorted(shown_ids) == [3, 5]
        assert page.locator("#shown-count").inner_text() == "showing 2 of 6 plots"
        page.locator("#min-prob").fill("0")
        # closing the browser loses nothing: reload and the decisions are back
        page.reload()
        page.wait_for_selector(".card.rejected")
        shown = {
            int(c.get_attribute("data-id")): c.get_attribute("class") for c in page.locator(".card").all()
        }
        for pid, decision in expected.items():
            assert decision in shown[pid]
        assert page.locator(".card.rejected").count() == 2
        # mouse works too: click a card, then the Unsure button
        page.locator(f'.card[data-id="{run.priority[5]}"]').click()
        page.locator('.buttons button[data-decision="unsure"]').click()
        page.wait_for_function("() => document.getElementById('save-status').className === 'ok'")
        assert store.load_decisions(run.run_dir)[run.priority[5]] == "unsure"
        shots = os.environ.get("POPPYSCAN_SCREENSHOT")
        if shots:
            page.screenshot(path=shots)
    assert not errors, errors
    assert store.rejected_plot_ids(run.run_dir) == {p1, p3}
    assert sorted(pyogrio.read_dataframe(run.run_dir / "hard_negatives.gpkg").plot_id) == sorted([p1, p3])
    # field work is built from what the desk kept
    if _have_tasks():
        from poppyscan.tasks import build_tasks

        build_tasks(run.run_dir)
        tasks = pyogrio.read_dataframe(run.run_dir / "plots.gpkg", layer="tasks")
        assert sorted(tasks.plot_id) == sorted(set(run.plot_ids) - {p1, p3})


def _have_tasks() -> bool:
    """poppyscan.tasks is another stage, built in parallel; a broken one must fail, a missing one not."""
    return importlib.util.find_spec("poppyscan.tasks") is not None


@pytest.mark.skipif(not _have_tasks(), reason="poppyscan.tasks (build_tasks) is not in this checkout yet")
def test_tasks_leave_out_rejected_plots_unless_asked(run):
    from poppyscan.config import Config
    from poppyscan.tasks import build_tasks

    store.save_decision(run.run_dir, 3, "rejected")
    store.save_decision(run.run_dir, 2, "confirmed")
    store.save_decision(run.run_dir, 5, "unsure")
    store.save_decision(run.run_dir, 6, "rejected")
    store.save_decision(run.run_dir, 6, None)  # un-rejected: gets a task again

    def task_plots():
        return sorted(pyogrio.read_dataframe(run.run_dir / "plots.gpkg", layer="tasks").plot_id)

    build_tasks(run.run_dir)
    assert task_plots() == [1, 2, 4, 5, 6]
    build_tasks(run.run_dir, include_rejected=True)
    assert task_plots() == [1, 2, 3, 4, 5, 6]
    build_tasks(run.run_dir, config=Config().with_overrides({"tasks.include_rejected": True}))
    assert task_plots() == [1, 2, 3, 4, 5, 6]


def test_a_decision_saved_while_tasks_replaces_plots_gpkg_is_not_lost(run):
    """``poppyscan tasks`` copies plots.gpkg, adds its layer and renames the copy over it, holding the
    file's lock; a decision mirrored meanwhile waits for the lock and lands in the new file."""
    import threading
    import time

    from poppyscan.fsutil import file_lock

    gpkg = run.run_dir / "plots.gpkg"
    with file_lock(gpkg):  # what export/gpkg_styles.write_gpkg holds around copy -> rename
        copy = gpkg.with_name(".plots.gpkg.copy")
        shutil.copy2(gpkg, copy)
        saver = threading.Thread(target=store.save_decision, args=(run.run_dir, 4, "rejected"))
        saver.start()
        time.sleep(0.5)
        assert saver.is_alive()  # review.json is written; the mirror waits for the lock
        assert store.load_decisions(run.run_dir) == {4: "rejected"}
        os.replace(copy, gpkg)
    saver.join(timeout=30)
    assert not saver.is_alive()
    df = pyogrio.read_dataframe(gpkg, layer="plots")
    assert dict(zip(df.plot_id, df.review, strict=True))[4] == "rejected"


def test_tasks_and_review_share_the_plots_gpkg_lock(run):
    import threading
    import time

    from poppyscan.export.gpkg_styles import write_gpkg
    from poppyscan.fsutil import file_lock

    gpkg = run.run_dir / "plots.gpkg"
    tasks = pyogrio.read_dataframe(gpkg, layer="plots").iloc[:0][["plot_id", "geometry"]]
    with file_lock(gpkg):
        writer = threading.Thread(target=write_gpkg, args=(gpkg, tasks), kwargs={"base": gpkg})
        writer.start()
        time.sleep(0.5)
        assert writer.is_alive()  # waits for the lock before copying
    writer.join(timeout=30)
    assert "tasks" in {name for name, _ in pyogrio.list_layers(gpkg)}
