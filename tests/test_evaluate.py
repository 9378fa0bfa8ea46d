"""Object-level evaluation: hand-built cases with known TP/FP/FN, CRS handling, the CLI."""

from __future__ import annotations

import json
from pathlib import Path

import geopandas as gpd
import numpy as np
import pytest
from shapely.geometry import box

from poppyscan.cli import main
from poppyscan.evaluate import evaluate_files, match_masks, match_polygons, prf, score_polygons

CRS = "EPSG:32649"
X0, Y0 = 500_000.0, 4_000_000.0


def sq(x, y, s=4.0):
    return box(X0 + x, Y0 + y, X0 + x + s, Y0 + y + s)


@pytest.fixture
def case():
    """Truth: 3 plots. Pred: one exact, one shifted 0.5 m east, one far-away false plot; truth #3 missed."""
    truth = gpd.GeoDataFrame({"plot_id": [1, 2, 3]}, geometry=[sq(0, 0), sq(20, 0), sq(40, 0)], crs=CRS)
    pred = gpd.GeoDataFrame({"plot_id": [1, 2, 3]}, geometry=[sq(0, 0), sq(20.5, 0), sq(0, 30)], crs=CRS)
    return pred, truth


def test_known_tp_fp_fn(case):
    pred, truth = case
    rep = score_polygons(pred, truth, valid_area_m2=10_000.0).report()
    assert (rep["tp"], rep["fp"], rep["fn"]) == (2, 1, 1)
    assert rep["precision"] == pytest.approx(2 / 3)
    assert rep["recall"] == pytest.approx(2 / 3)
    assert rep["f1"] == pytest.approx(2 / 3)
    assert rep["centroid_error_m"]["mean"] == pytest.approx(0.25)
    assert rep["centroid_error_m"]["max"] == pytest.approx(0.5)
    assert rep["area_ratio"] == pytest.approx(1.0)
    # union areas: pred 48, truth 48, intersection 16 + 14 = 30
    assert rep["pixel_iou"] == pytest.approx(30 / (48 + 48 - 30))
    assert rep["false_plots_per_ha"] == pytest.approx(1.0)


def test_matching_is_one_to_one_and_needs_iou_025():
    truth = [sq(0, 0)]
    two = [sq(0, 0), sq(0.5, 0)]
    assert len(match_polygons(two, truth)) == 1
    far = [sq(3.0, 0)]  # IoU = 4/28 < 0.25
    assert match_polygons(far, truth) == []
    near = [sq(2.0, 0)]  # IoU = 8/24 = 0.33
    assert len(match_polygons(near, truth)) == 1


def test_geographic_crs_scores_in_metres(case):
    pred, truth = case
    rep = score_polygons(pred.to_crs("EPSG:4326"), truth.to_crs("EPSG:4490")).report()
    assert (rep["tp"], rep["fp"], rep["fn"]) == (2, 1, 1)
    assert rep["centroid_error_m"]["mean"] == pytest.approx(0.25, abs=0.02)


def test_empty_cases():
    empty = gpd.GeoDataFrame(geometry=[], crs=CRS)
    one = gpd.GeoDataFrame(geometry=[sq(0, 0)], crs=CRS)
    rep = score_polygons(one, empty, valid_area_m2=5_000.0).report()  # poppy-free scene, one false plot
    assert (rep["tp"], rep["fp"], rep["fn"], rep["recall"]) == (0, 1, 0, None)
    assert rep["false_plots_per_ha"] == pytest.approx(2.0)
    assert prf(0, 0, 0) == {"precision": None, "recall": None, "f1": None}


def test_match_masks_counts_components():
    truth = np.zeros((40, 40), bool)
    truth[2:10, 2:10] = True
    truth[20:30, 20:30] = True
    pred = np.zeros_like(truth)
    pred[3:10, 2:10] = True  # matches the first
    pred[32:38, 2:8] = True  # false
    assert match_masks(pred, truth) == (1, 1, 1)
    assert match_masks(pred, truth, min_px=40) == (1, 0, 1)  # the 36 px false component is dropped


def _write(tmp_path, pred, truth):
    p, t = tmp_path / "plots.gpkg", tmp_path / "truth.gpkg"
    pred.to_file(p, layer="plots")
    truth.to_file(t, layer="plots")
    return p, t


def test_evaluate_files_and_cli(case, tmp_path, capsys):
    p, t = _write(tmp_path, *case)
    rep = evaluate_files(p, t)
    assert (rep["tp"], rep["fp"], rep["fn"]) == (2, 1, 1)
    out = tmp_path / "report.json"
    assert main(["evaluate", str(p), str(t), "--json", str(out)]) == 0
    table = capsys.readouterr().out
    assert "precision" in table and "plots.gpkg" in table
    assert json.loads(out.read_text())["f1"] == pytest.approx(2 / 3)
    assert main(["evaluate", str(p), str(t), "--json", str(out)]) == 3  # exists, no --overwrite


def test_cli_writes_the_missed_and_false_plots_for_qgis(case, tmp_path, capsys):
    pred, truth = case
    pred = pred.assign(prob_mean=[0.9, 0.95, 0.88], area_m2=[16.0, 16.0, 15.0], scene=["x", "x", "x"])
    p, t = _write(tmp_path, pred, truth)
    errors = tmp_path / "errors.gpkg"
    assert main(["evaluate", str(p), str(t), "--errors", str(errors)]) == 0
    assert "1 missed and 1 false plot(s) written" in capsys.readouterr().out
    missed = gpd.read_file(errors, layer="missed")
    false = gpd.read_file(errors, layer="false")
    assert missed.crs.to_epsg() == 4326 and false.crs.to_epsg() == 4326
    # the missed plot is truth #3 (x 40-44), the false one the far-away prediction (y 30-34), 16 m² each
    assert missed["plot_id"].tolist() == [3] and false["plot_id"].tolist() == [3]
    assert missed["area_m2"].tolist() == [16.0] and false["prob_mean"].tolist() == [0.88]
    # a detect run's own area_m2 / scene columns are replaced by the measured area and the scene scored
    assert false["area_m2"].tolist() == [16.0] and false["scene"].tolist() == [tmp_path.name]
    assert missed.to_crs(CRS).geometry[0].equals_exact(sq(40, 0), 1e-3)
    assert false.to_crs(CRS).geometry[0].equals_exact(sq(0, 30), 1e-3)
    before = errors.read_bytes()
    assert main(["evaluate", str(p), str(t), "--errors", str(errors)]) == 3  # exists, no --overwrite
    assert errors.read_bytes() == before
    assert main(["evaluate", str(p), str(t), "--errors", str(tmp_path / "e.shp")]) == 2
    assert "give a .gpkg path" in capsys.readouterr().err
    # a perfect prediction leaves both layers empty (but present)
    assert main(["evaluate", str(t), str(t), "--errors", str(errors), "--overwrite"]) == 0
    assert len(gpd.read_file(errors, layer="missed")) == 0 and len(gpd.read_file(errors, layer="false")) == 0


def test_errors_of_a_model_over_scenes_carry_the_truth_attributes(tmp_path, capsys):
    """The shipped model over the sample scenes, at a strict plot decision so that plots are missed: each
    missed plot comes with the renderer's stage/setting of its truth row."""
    root = Path(__file__).resolve().parents[1]
    errors = tmp_path / "errors.gpkg"
    argv = ["evaluate", "--model", str(root / "models" / "poppyscan-default"), "--scenes",
            str(root / "sample_tiles"), "--threads", "1", "--min-prob-mean", "0.97", "--errors", str(errors)]
    assert main(argv) == 0
    out = capsys.readouterr().out
    total = [ln.split() for ln in out.splitlines() if ln.startswith("total")][0]
    missed = gpd.read_file(errors, layer="missed")
    assert len(missed) == int(total[3]) > 0  # fn column of the table
    assert {"scene", "area_m2", "stage", "setting", "plot_id"} <= set(missed.columns)
    assert missed["stage"].isin(["rosette", "flowering", "capsule"]).all()
    for _, row in missed.iterrows():  # the attributes are those of the truth plot at that place
        truth = gpd.read_file(root / "sample_tiles" / row["scene"] / "truth.gpkg", layer="plots")
        match = truth[truth["plot_id"] == row["plot_id"]]
        assert match["stage"].tolist() == [row["stage"]]
        assert match.to_crs("EPSG:4326").geometry.iloc[0].intersection(row.geometry).area > 0


@pytest.mark.parametrize(
    "argv, msg",
    [
        (["evaluate"], "give PRED"),
        (["evaluate", "a.gpkg", "b.gpkg", "--iou-min", "2"], "'--iou-min'"),
        (["evaluate", "missing.gpkg", "missing2.gpkg"], "does not exist"),
        (["evaluate", "--model", "m"], "'--model' needs '--scenes'"),
        (["evaluate", "--model", "m", "--scenes", "s", "--min-prob-mean", "1"],
         "'--min-prob-mean' must be in [0, 1)"),
        (["evaluate", "a.gpkg", "b.gpkg", "--tta"], "'--tta' applies to --model runs"),
        (["evaluate", "a.gpkg", "b.gpkg", "--min-gsd", "0.03"], "'--min-gsd' applies to --model runs"),
    ],
)
def test_cli_bad_options_give_one_line_errors(argv, msg, capsys, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("poppyscan: error:") and msg in err and "\n" not in err


def test_evaluate_scenes_simple_and_detect_engines_agree(tmp_path):
    import importlib.util

    import torch
    from model_scenes import make_scene

    from poppyscan.evaluate import calibrate_threshold, evaluate_scenes
    from poppyscan.model import build_model, load_bundle, new_meta, save_bundle

    make_scene(tmp_path / "scenes" / "a", seed=1, size=96)
    torch.manual_seed(0)
    meta = new_meta(gsd_m=0.04, tile_size=64, overlap=0.125, threshold=0.5)
    bundle = load_bundle(save_bundle(tmp_path / "b", build_model("unet_mnv3s"), meta).path)
    engines = ["simple"] + (["detect"] if importlib.util.find_spec("poppyscan.detect") else [])
    reports = [
        evaluate_scenes(bundle, [tmp_path / "scenes"], device="cpu", threads=1, threshold=0.5, engine=e)
        for e in engines
    ]
    for r in reports:
        assert r["scenes"][0]["scene"] == "a" and r["poppy_scenes"]["tp"] + r["poppy_scenes"]["fn"] == 3
        assert r["poppy_free_scenes"] is None
    counts = {(r["total"]["tp"], r["total"]["fp"], r["total"]["fn"]) for r in reports}
    assert len(counts) == 1, counts
    cal = calibrate_threshold(
        bundle, [(tmp_path / "scenes/a/mosaic.tif", tmp_path / "scenes/a/truth.gpkg")], threads=1
    )
    assert cal["threshold"] in cal["per_threshold"]


@pytest.fixture
def sample_scene(tmp_path):
    """A copy of the 3 cm sample scene (nodata footprint) as a scene directory, and the shipped bundle."""
    import shutil

    root = Path(__file__).resolve().parent.parent
    scene = tmp_path / "scenes" / "s"
    shutil.copytree(root / "sample_tiles" / "utm49n_nodata", scene)
    return scene, root / "models" / "poppyscan-default"


def test_tta_engines_agree_and_the_cli_records_it(tmp_path, capsys, sample_scene):
    """Flip TTA through detect (the production path) and through the in-memory engine give the same
    counts with the shipped model on a sample scene; ``evaluate --tta`` reports that it used it."""
    from poppyscan.evaluate import evaluate_scenes

    scene, bundle = sample_scene
    counts = set()
    for engine in ("simple", "detect"):
        r = evaluate_scenes(bundle, [scene], device="cpu", threads=1, engine=engine, tta=True)
        plain = evaluate_scenes(bundle, [scene], device="cpu", threads=1, engine=engine)
        assert r["tta"] is True and plain["tta"] is False and r["total"]["tp"] > 0
        assert r["total"]["pixel_iou"] != plain["total"]["pixel_iou"]  # the mirror changed the outlines
        counts.add((r["total"]["tp"], r["total"]["fp"], r["total"]["fn"]))
    assert len(counts) == 1, counts
    out = tmp_path / "r.json"
    assert main(["evaluate", "--model", str(bundle), "--scenes", str(scene), "--threads", "1", "--tta",
                 "--json", str(out)]) == 0
    rep = json.loads(out.read_text())
    assert rep["tta"] is True and (rep["total"]["tp"], rep["total"]["fp"], rep["total"]["fn"]) in counts
    capsys.readouterr()


def test_min_gsd_engines_agree_and_the_cli_records_it(tmp_path, capsys, sample_scene):
    """A 3 cm sample scene read at 3 cm (``--min-gsd 0.03``) through detect and through the in-memory
    engine gives the same counts, a different outline than at the model's 4 cm, and the report says so;
    a value outside [gsd_m / 2, gsd_m] is refused in one line."""
    from poppyscan.evaluate import evaluate_scenes

    scene, bundle = sample_scene
    counts = set()
    for engine in ("simple", "detect"):
        fine = evaluate_scenes(bundle, [scene], device="cpu", threads=1, engine=engine, min_gsd_m=0.03)
        at4 = evaluate_scenes(bundle, [scene], device="cpu", threads=1, engine=engine, min_gsd_m=0.04)
        assert fine["min_gsd_m"] == 0.03 and at4["min_gsd_m"] == 0.04 and fine["total"]["tp"] > 0
        assert fine["total"]["pixel_iou"] != at4["total"]["pixel_iou"]
        counts.add((fine["total"]["tp"], fine["total"]["fp"], fine["total"]["fn"]))
    assert len(counts) == 1, counts
    out = tmp_path / "r.json"
    assert main(["evaluate", "--model", str(bundle), "--scenes", str(scene), "--threads", "1", "--min-gsd",
                 "0.03", "--json", str(out)]) == 0
    rep = json.loads(out.read_text())
    assert rep["min_gsd_m"] == 0.03 and (rep["total"]["tp"], rep["total"]["fp"], rep["total"]["fn"]) in counts
    capsys.readouterr()
    assert main(["evaluate", "--model", str(bundle), "--scenes", str(scene), "--min-gsd", "0.01"]) == 2
    err = capsys.readouterr().err.strip()
    assert err == ("poppyscan: error: '--min-gsd' must be in [0.02, 0.04] m/px for this model "
                   "(trained at 0.04 m/px), got 0.01")


def test_calibration_with_a_false_plot_cap_picks_the_best_f1_under_the_cap():
    from pathlib import Path

    from poppyscan.evaluate import calibrate_threshold
    from poppyscan.model import load_bundle

    root = Path(__file__).resolve().parent.parent
    bundle = load_bundle(root / "models" / "poppyscan-default")
    pairs = [(d / "mosaic.tif", d / "truth.gpkg") for d in sorted((root / "sample_tiles").iterdir())
             if (d / "truth.gpkg").is_file()]
    grid = (0.05, 0.25, 0.5, 0.75, 0.9, 0.97)
    free = calibrate_threshold(bundle, pairs, thresholds=grid, threads=1)
    per = free["per_threshold"]
    fpha = {t: per[t]["false_plots_per_ha"] or 0.0 for t in grid}
    assert fpha[0.05] > fpha[0.97]  # the grid spans different false-plot rates on these scenes
    for cap in sorted(set(fpha.values()))[:2]:  # the lowest rate and the next
        got = calibrate_threshold(bundle, pairs, thresholds=grid, threads=1, max_false_per_ha=cap)
        allowed = [t for t in grid if fpha[t] <= cap + 1e-9]
        assert fpha[got["threshold"]] <= cap + 1e-9
        assert per[got["threshold"]]["f1"] == max(per[t]["f1"] for t in allowed)
        assert got["cap_met"]
    none_allowed = calibrate_threshold(bundle, pairs, thresholds=grid, threads=1, max_false_per_ha=-1)
    assert none_allowed["threshold"] == 0.97 and not none_allowed["cap_met"]
    assert free["cap_met"]  # no cap: always met


def test_calibration_searches_the_plot_decision_with_the_threshold():
    from pathlib import Path

    from poppyscan.evaluate import calibrate_threshold
    from poppyscan.model import load_bundle

    root = Path(__file__).resolve().parent.parent
    bundle = load_bundle(root / "models" / "poppyscan-default")
    pairs = [(d / "mosaic.tif", d / "truth.gpkg") for d in sorted((root / "sample_tiles").iterdir())
             if (d / "truth.gpkg").is_file()]
    grid, means = (0.3, 0.6, 0.9), (0.0, 0.9, 0.97)
    joint = calibrate_threshold(bundle, pairs, thresholds=grid, min_prob_means=means, threads=1)
    plain = calibrate_threshold(bundle, pairs, thresholds=grid, threads=1)
    cells = {(g["threshold"], g["min_prob_mean"]): g for g in joint["grid"]}
    assert set(cells) == {(t, m) for t in grid for m in means}
    for t in grid:
        # min_prob_mean 0 keeps every region: the threshold-only calibration's figures
        assert {k: cells[t, 0.0][k] for k in ("tp", "fp", "fn")} == {
            k: plain["per_threshold"][t][k] for k in ("tp", "fp", "fn")}
        # a stricter plot decision only ever drops regions
        for lo, hi in zip(means, means[1:], strict=False):
            assert cells[t, hi]["tp"] <= cells[t, lo]["tp"] and cells[t, hi]["fp"] <= cells[t, lo]["fp"]
    # on these scenes the decision does drop low-mean regions that a low threshold outlines
    assert cells[0.3, 0.97]["fp"] + cells[0.3, 0.97]["tp"] < cells[0.3, 0.0]["fp"] + cells[0.3, 0.0]["tp"]
    best = (joint["threshold"], joint["min_prob_mean"])
    assert cells[best]["f1"] == max(c["f1"] or 0.0 for c in cells.values())
    assert joint["per_threshold"][joint["threshold"]]["f1"] == cells[best]["f1"]


def test_calibrate_threshold_script_dry_run_reports_the_grid_and_leaves_the_bundle(tmp_path, capsys):
    import importlib.util
    import shutil
    from pathlib import Path

    from poppyscan.train import CALIBRATION_MIN_PROB_MEANS, CALIBRATION_THRESHOLDS

    root = Path(__file__).resolve().parent.parent
    spec = importlib.util.spec_from_file_location("cal_script", root / "scripts" / "calibrate_threshold.py")
    script = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(script)
    bundle = shutil.copytree(root / "models" / "poppyscan-default", tmp_path / "b")
    before = (bundle / "bundle.json").read_bytes()
    report = tmp_path / "grid.json"
    scene = sorted(d for d in (root / "sample_tiles").iterdir() if (d / "truth.gpkg").is_file())[0]
    assert script.main([str(bundle), str(scene), "--threads", "1", "--dry-run",
                        "--report", str(report)]) == 0
    assert (bundle / "bundle.json").read_bytes() == before
    grid = json.loads(report.read_text())
    assert len(grid["grid"]) == len(CALIBRATION_THRESHOLDS) * len(CALIBRATION_MIN_PROB_MEANS)
    best = max(grid["grid"], key=lambda g: g["f1"] or 0.0)
    assert best["f1"] == next(g["f1"] for g in grid["grid"] if g["threshold"] == grid["threshold"]
                              and g["min_prob_mean"] == grid["min_prob_mean"])
    assert "bundle unchanged (--dry-run)" in capsys.readouterr().out
