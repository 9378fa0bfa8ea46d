"""The plot scorer: region features, JSON trees, the bundle fields, detect and the in-memory engine."""

from __future__ import annotations

import csv
import json
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from poppyscan.bundle import load_bundle, read_meta, update_meta
from poppyscan.cli import main
from poppyscan.errors import BundleError
from poppyscan.plot_scorer import PlotScorer, fit, load_for
from poppyscan.regions import FEATURES, PROB_FEATURES, candidate_labels, region_features

REPO = Path(__file__).resolve().parent.parent
BUNDLE = REPO / "models" / "poppyscan-default"
SCENE_4CM = REPO / "sample_tiles" / "cgcs2000_gk114_alpha"  # at the model's GSD: read without resampling


def _sig(v):
    return 1 / (1 + np.exp(-np.asarray(v, float)))


def _stump(feature: str, threshold: float, left: float, right: float, baseline: float = 0.0) -> dict:
    """One tree: ``feature <= threshold`` -> ``left`` else ``right`` (NaN goes left)."""
    return {"format": "poppyscan-plot-scorer", "format_version": 1, "features": [feature],
            "baseline": baseline, "training": {},
            "trees": [{"feature": [0, -1, -1], "threshold": [threshold, 0, 0], "left": [1, 0, 0],
                       "right": [2, 0, 0], "value": [0, left, right], "missing_left": [True, False, False]}]}


def _with_scorer(tmp_path: Path, scorer: dict, cut: float = 0.5, name: str = "b") -> Path:
    b = tmp_path / name
    shutil.copytree(BUNDLE, b)
    (b / "plot_scorer.json").write_text(json.dumps(scorer))
    update_meta(b, plot_scorer="plot_scorer.json", plot_scorer_cut=cut)
    return b


def test_region_features_of_a_hand_built_region():
    prob = np.zeros((40, 40), np.float32)
    prob[10:20, 10:20] = 0.9
    prob[12, 12] = 1.0
    prob[10:20, 21] = 0.3  # probability next to the region, below the threshold
    valid = np.ones_like(prob, bool)
    rgb = np.zeros((40, 40, 3), np.uint8)
    rgb[:] = (120, 80, 40)
    rgb[10:20, 10:20] = (0, 200, 0)
    n, labels, stats = candidate_labels(prob, valid, 0.5)
    assert n == 2
    f = region_features(prob, valid, rgb, labels, stats, 0.04)
    assert set(f) == set(FEATURES)
    # the opening (a 3x3 cross, as detect's) takes the square's 4 corner pixels
    assert (labels > 0).sum() == 96 and f["log_area_m2"][0] == pytest.approx(np.log(96 * 0.04**2))
    assert f["prob_mean"][0] == pytest.approx((95 * 0.9 + 1.0) / 96)
    assert f["prob_max"][0] == pytest.approx(1.0) and f["frac_90"][0] == pytest.approx(1.0)
    assert f["frac_97"][0] == pytest.approx(1 / 96)
    assert f["extent"][0] == pytest.approx(0.96) and f["aspect"][0] == pytest.approx(1.0)
    assert f["compactness"][0] > 0.9
    assert 0 < f["ring_prob_mean"][0] < 0.3 and f["ring_prob_max"][0] == pytest.approx(0.3)
    assert f["in_g"][0] == pytest.approx(200 / 255) and f["d_g"][0] == pytest.approx((200 - 80) / 255)
    assert f["in_exg"][0] > 0 > f["d_r"][0]
    assert f["in_std"][0] == pytest.approx(0.0, abs=1e-6)
    # without the image: the probability features only
    assert set(region_features(prob, valid, None, labels, stats, 0.04)) == set(PROB_FEATURES)


def test_a_hand_built_stump_scores_as_written_and_nan_takes_the_missing_branch():
    s = PlotScorer.from_dict(_stump("log_area_m2", 1.0, -2.0, 3.0, baseline=0.5))
    got = s.score({"log_area_m2": np.array([0.5, 1.0, 1.5, np.nan])})
    assert np.allclose(got, _sig([-1.5, -1.5, 3.5, -1.5]))
    with pytest.raises(ValueError, match="log_area_m2"):
        s.score({"prob_mean": np.array([0.5])})


def test_fitted_trees_reproduce_sklearn_and_survive_their_json(tmp_path):
    pytest.importorskip("sklearn")
    rng = np.random.default_rng(3)
    x = rng.random((600, len(FEATURES)))
    x[::9, 4] = np.nan
    y = ((x[:, 1] > 0.6) & (x[:, 0] > 0.3)).astype(int)
    s = fit(x, y, list(FEATURES), max_iter=30)  # fit() itself checks the conversion against sklearn
    path = s.save(tmp_path / "s.json")
    back = PlotScorer.load(path)
    feats = {f: x[:, i] for i, f in enumerate(FEATURES)}
    assert np.array_equal(back.score(feats), s.score(feats))
    p = back.score(feats)
    assert p[y == 1].mean() > 0.8 > 0.2 > p[y == 0].mean()  # it learnt the rule


@pytest.mark.parametrize("edit, match", [
    (lambda d: d.update(format="x"), "not a poppyscan-plot-scorer"),
    (lambda d: d.update(format_version=9), "format_version"),
    (lambda d: d.update(features=["no_such"]), "features"),
    (lambda d: d.update(baseline="a"), "baseline"),
    (lambda d: d.update(trees=[]), "trees"),
    (lambda d: d["trees"][0].pop("value"), "tree 0 is malformed"),
    (lambda d: d["trees"][0].update(left=[5, 0, 0]), "out of range"),
    (lambda d: d["trees"][0].update(feature=[3, -1, -1]), "out of range"),
    (lambda d: d["trees"][0].update(value=[0, 1]), "one length"),
])
def test_a_malformed_scorer_is_refused_by_name(edit, match):
    d = _stump("prob_mean", 0.5, -1, 1)
    edit(d)
    with pytest.raises(BundleError, match=match):
        PlotScorer.from_dict(d)


def test_bundle_fields_and_files_are_checked(tmp_path):
    b = _with_scorer(tmp_path, _stump("prob_mean", 0.9, -1, 1))
    bundle = load_bundle(b, with_torch=False)
    assert bundle.meta.plot_scorer == "plot_scorer.json" and load_for(bundle.meta, b) is not None
    meta = json.loads((b / "bundle.json").read_text())
    for field, value, match in (("plot_scorer", "../x.json", "plot_scorer"),
                                ("plot_scorer", "s.pkl", "plot_scorer"),
                                ("plot_scorer_cut", 1.0, "plot_scorer_cut")):
        bad = dict(meta, **{field: value})
        (b / "bundle.json").write_text(json.dumps(bad))
        with pytest.raises(BundleError, match=match):
            read_meta(b)
    (b / "bundle.json").write_text(json.dumps(meta))
    (b / "plot_scorer.json").write_text("{not json")
    with pytest.raises(BundleError, match="plot scorer .* cannot be read"):
        load_bundle(b, with_torch=False)
    (b / "plot_scorer.json").unlink()
    with pytest.raises(BundleError, match="plot scorer .* is missing"):
        load_bundle(b, with_torch=False)


def _detect(scene: Path, out: Path, bundle: Path, *extra: str) -> int:
    conf = out.parent / "c.yaml"
    conf.write_text("detect:\n  run_tasks: false\n")
    return main(["detect", str(scene / "mosaic.tif"), "--out", str(out), "--model", str(bundle),
                 "--config", str(conf), "--device", "cpu", "-q", *extra])


def test_detect_applies_the_scorer_and_records_it(tmp_path):
    import geopandas as gpd

    plain = tmp_path / "plain"
    assert _detect(SCENE_4CM, plain, BUNDLE) == 0
    n_plain = len(gpd.read_file(plain / "plots.gpkg"))
    assert n_plain > 0
    r = json.loads((plain / "run.json").read_text())
    assert r["params"]["plot_scorer"] is None and r["params"]["min_plot_score"] is None

    # a scorer that passes a region only when it is larger than 4 m^2 (log 4 = 1.386)
    b = _with_scorer(tmp_path, _stump("log_area_m2", np.log(4.0), -5.0, 5.0))
    run = tmp_path / "scored"
    assert _detect(SCENE_4CM, run, b) == 0
    plots = gpd.read_file(run / "plots.gpkg")
    r = json.loads((run / "run.json").read_text())
    assert r["params"]["plot_scorer"] == "plot_scorer.json" and r["params"]["min_plot_score"] == 0.5
    assert r["params"]["min_prob_mean"] == 0.0  # the bundle's mean rule is not applied with a scorer
    assert r["counts"]["regions"] >= n_plain and "plot_score_s" in r["timings"]
    assert len(plots) > 0 and (plots.area_m2 > 3.9).all() and np.allclose(plots.score, _sig(5.0), atol=1e-4)
    # the same bundle without its scorer is the plain run
    off = tmp_path / "off"
    assert _detect(SCENE_4CM, off, b, "--no-plot-scorer") == 0
    assert len(gpd.read_file(off / "plots.gpkg")) == n_plain
    assert gpd.read_file(off / "plots.gpkg").score.isna().all()
    # a cut above every score: nothing is a plot
    none = tmp_path / "none"
    assert _detect(SCENE_4CM, none, b, "--min-plot-score", "0.999") == 0
    assert len(gpd.read_file(none / "plots.gpkg")) == 0


def test_detect_finds_the_features_the_whole_scene_engine_computes(tmp_path):
    """The scorer is fitted on features of whole in-memory scenes; detect finds each region again in a
    window of its probability raster and reads the mosaic there. On a mosaic at the model's GSD (no
    resampling) the two must agree."""
    import geopandas as gpd

    from poppyscan.bundle import make_predictor
    from poppyscan.mosaic import open_mosaic
    from poppyscan.plot_scorer import mosaic_region_features
    from poppyscan.scene_predict import scene_probability

    b = _with_scorer(tmp_path, _stump("prob_mean", 0.0, 5.0, 5.0))  # every region is a plot
    run = tmp_path / "run"
    assert _detect(SCENE_4CM, run, b, "--threshold", "0.5") == 0
    plots = gpd.read_file(run / "plots.gpkg")
    assert len(plots) >= 3
    m = open_mosaic(SCENE_4CM / "mosaic.tif")
    grid = m.grid(0.04)
    got = mosaic_region_features(m, grid, run / "probability.tif", plots.geometry, 0.5)

    bundle = load_bundle(BUNDLE, with_torch=False)
    sp = scene_probability(make_predictor(bundle, device="cpu", threads=1), bundle, SCENE_4CM / "mosaic.tif",
                           keep_rgb=True)
    prob = np.round(sp.prob * 100) / 100
    n, labels, stats = candidate_labels(prob, sp.valid, 0.5)
    inv = ~sp.transform
    ids = []
    for g in plots.geometry:
        c, r = inv * (g.representative_point().x, g.representative_point().y)
        ids.append(int(labels[int(r), int(c)]))
    assert all(ids) and len(set(ids)) == len(ids)
    want = region_features(prob, sp.valid, sp.rgb, labels, stats, 0.04, ids=ids)
    for f in FEATURES:
        assert np.allclose(got[f], want[f], rtol=1e-3, atol=1e-4), (f, got[f], want[f])


def test_both_engines_make_the_same_decision_with_a_scorer(tmp_path):
    from poppyscan.evaluate import evaluate_scenes

    scene = tmp_path / "scenes" / "s"
    shutil.copytree(REPO / "sample_tiles" / "utm49n_nodata", scene)
    b = _with_scorer(tmp_path, _stump("in_exg", 0.022, 4.0, -4.0))  # rejects the 3 greenest of its 7 regions
    counts = set()
    for engine in ("simple", "detect"):
        r = evaluate_scenes(b, [scene], device="cpu", threads=1, engine=engine)
        plain = evaluate_scenes(b, [scene], device="cpu", threads=1, engine=engine, plot_scorer=False)
        assert r["plot_scorer"] == "plot_scorer.json" and plain["plot_scorer"] is None
        assert r["total"]["tp"] + r["total"]["fp"] != plain["total"]["tp"] + plain["total"]["fp"]
        counts.add((r["total"]["tp"], r["total"]["fp"], r["total"]["fn"]))
    assert len(counts) == 1, counts


def test_min_plot_score_errors(tmp_path, capsys):
    out = tmp_path / "run"
    assert _detect(SCENE_4CM, out, BUNDLE, "--min-plot-score", "1.5") == 2
    assert "--min-plot-score" in capsys.readouterr().err
    code = _detect(SCENE_4CM, out, BUNDLE, "--min-plot-score", "0.4")  # the bundle has no scorer
    err = capsys.readouterr().err.strip().splitlines()[-1]
    assert code != 0 and "needs a model with a plot scorer" in err and "Traceback" not in err
    assert not out.exists()
    scene = tmp_path / "scenes" / "s"
    shutil.copytree(SCENE_4CM, scene)
    code = main(["evaluate", "--model", str(BUNDLE), "--scenes", str(scene), "--threads", "1",
                 "--min-plot-score", "0.4"])  # both engines refuse it alike
    err = capsys.readouterr().err.strip().splitlines()[-1]
    assert code == 2 and "needs a model with a plot scorer" in err


def _regions_csv(path: Path, rng: np.random.Generator) -> None:
    """Three sets of scenes whose candidate regions match a true plot when prob_mean and in_exg are high."""
    from poppyscan.plot_scorer import onnx_digest

    meta = read_meta(BUNDLE)
    made = {"model_version": meta.version, "model_digest": onnx_digest(BUNDLE / meta.onnx_file),
            "threshold": meta.threshold}
    cols = ["kind", "set", "scene", "n_truth", "valid_ha", *made, "iou", "truth_id", *FEATURES]
    with open(path, "w", newline="") as fh:
        w = csv.DictWriter(fh, fieldnames=cols)
        w.writeheader()
        for s in ("a", "b", "c"):
            for k in range(30):
                scene = f"{s}{k}"
                poppy = k < 20
                feats = rng.random((12, len(FEATURES)))
                truth = 0
                rows = []
                for f in feats:
                    pos = poppy and f[FEATURES.index("in_exg")] > 0.5 and f[FEATURES.index("prob_mean")] > 0.3
                    rows.append({"kind": "region", "set": s, "scene": scene, "iou": 0.6 if pos else 0.0,
                                 "truth_id": truth if pos else -1, **dict(zip(FEATURES, f, strict=True))})
                    truth += pos
                w.writerow({"kind": "scene", "set": s, "scene": scene, "n_truth": truth if poppy else 0,
                            "valid_ha": 1.0, **made})
                w.writerows(rows)


def test_train_plot_scorer_script_writes_a_bundle_detect_can_load(tmp_path):
    pytest.importorskip("sklearn")
    regions = tmp_path / "regions.csv"
    _regions_csv(regions, np.random.default_rng(0))
    out = tmp_path / "new"
    script = [sys.executable, str(REPO / "scripts" / "train_plot_scorer.py"), str(BUNDLE), str(regions)]
    p = subprocess.run([*script, "--train-sets", "a,b,c", "--out", str(out), "--version", "9.9.9"],
                       capture_output=True, text=True)
    assert p.returncode == 0, p.stderr
    assert "chosen cut" in p.stdout
    meta = load_bundle(out, with_torch=False).meta
    assert meta.version == "9.9.9" and meta.plot_scorer == "plot_scorer.json"
    assert meta.training["plot_scorer"]["sets"] == ["a", "b", "c"]
    oos, base = meta.training["plot_scorer"]["out_of_sample"], meta.training["plot_scorer"]["bundle_decision"]
    # --rule same-f1 (the default): the fewest false plots among cuts at least as good as the bundle's rule
    assert oos["f1"] >= base["f1"] and oos["false_per_ha"] <= base["false_per_ha"]
    best = tmp_path / "best"
    p = subprocess.run([*script, "--train-sets", "a,b,c", "--out", str(best), "--rule", "best-f1"],
                       capture_output=True, text=True)
    assert p.returncode == 0, p.stderr
    tr = read_meta(best).training["plot_scorer"]
    assert tr["rule"] == "best-f1" and tr["out_of_sample"]["f1"] > 0.8  # the rule in the data, out of sample
    assert (BUNDLE / "bundle.json").read_bytes() != (out / "bundle.json").read_bytes()
    assert read_meta(BUNDLE).plot_scorer is None  # the source bundle is untouched
    for args, match in ((["--train-sets", "a,b,c", "--out", str(out)], "exists"),
                        (["--train-sets", "a,zz", "--out", str(tmp_path / "x")], "unknown: zz")):
        p = subprocess.run([*script, *args], capture_output=True, text=True)
        assert p.returncode == 2 and match in p.stderr and "Traceback" not in p.stderr


def test_calibrating_a_scored_bundle_is_refused_and_a_scored_cap_uses_its_scorer(tmp_path, capsys):
    import importlib.util

    spec = importlib.util.spec_from_file_location("cal_script", REPO / "scripts" / "calibrate_threshold.py")
    script = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(script)
    b = _with_scorer(tmp_path, _stump("log_area_m2", np.log(4.0), -5.0, 5.0))
    before = (b / "bundle.json").read_bytes()
    assert script.main([str(b), str(SCENE_4CM), "--threads", "1"]) == 2
    assert "has a plot scorer" in capsys.readouterr().err
    assert (b / "bundle.json").read_bytes() == before
    # the cap from a scored bundle is its own decision's false-plot rate (the scorer's, not the mean rule's),
    # on the scenes as listed: here a CSV whose labels are not beside the mosaic
    from poppyscan.evaluate import evaluate_scenes

    labels = tmp_path / "elsewhere" / "my_labels.gpkg"
    labels.parent.mkdir()
    shutil.copy(SCENE_4CM / "truth.gpkg", labels)
    mosaic = tmp_path / "flights" / "m.tif"  # no labels beside it
    mosaic.parent.mkdir()
    shutil.copy(SCENE_4CM / "mosaic.tif", mosaic)
    (tmp_path / "s.csv").write_text(f"mosaic,labels\n{mosaic},{labels}\n")
    args = [str(BUNDLE), str(tmp_path / "s.csv"), "--threads", "1", "--dry-run", "--fp-cap-from", str(b)]
    assert script.main(args) == 0
    out = capsys.readouterr().out
    want = evaluate_scenes(b, [(mosaic, labels)], device="cpu", threads=1, engine="simple")
    assert want["total"]["tp"] > 0 and want["plot_scorer"] == "plot_scorer.json"  # the labels were used
    assert (f"plot score >= 0.500) on these 1 scenes: F1 {want['total']['f1']:.3f}, "
            f"{want['total']['false_plots_per_ha']:.3f} false plots/ha -> the cap") in out


def test_region_study_reads_field_labels_and_a_scorer_is_fitted_by_scene_folds(tmp_path):
    """The path from field verdicts: label files as ``poppyscan results export-labels`` writes them
    (layer ``plots``, column ``label`` poppy / not_poppy / unknown) listed in a scenes.csv; a region in a
    plot of unknown status is neither a plot nor a false alarm and is left out; one flight's scenes are
    dealt into folds to choose the cut."""
    pytest.importorskip("sklearn")
    import geopandas as gpd

    rows = []
    unknown = {}
    for d in sorted(p for p in (REPO / "sample_tiles").iterdir() if (p / "truth.gpkg").is_file()):
        truth = gpd.read_file(d / "truth.gpkg", layer="plots")
        labels = ["poppy"] * len(truth)
        if len(truth):
            labels[0] = "unknown"
            unknown[d.name] = truth.geometry.iloc[0]
        gdf = gpd.GeoDataFrame({"label": labels}, geometry=truth.geometry, crs=truth.crs)
        gdf.to_file(tmp_path / f"{d.name}.gpkg", layer="plots", driver="GPKG", engine="pyogrio")
        rows.append(f"{d / 'mosaic.tif'},{d.name}.gpkg")
    assert unknown
    (tmp_path / "scenes.csv").write_text("mosaic,labels\n" + "\n".join(rows) + "\n")
    regions = tmp_path / "regions.csv"
    study = [sys.executable, str(REPO / "scripts" / "region_study.py"), str(BUNDLE), "--threads", "1"]
    p = subprocess.run([*study, "--set", f"flight={tmp_path / 'scenes.csv'}", "--out", str(regions)],
                       capture_output=True, text=True)
    assert p.returncode == 0, p.stderr
    with open(regions, newline="") as fh:
        table = list(csv.DictReader(fh))
    scenes = [r for r in table if r["kind"] == "scene"]
    found = [r for r in table if r["kind"] == "region"]
    assert len(scenes) == len(rows) and sum(float(r["iou"]) >= 0.25 for r in found) >= 3
    for r in scenes:  # an unknown plot is not a true plot
        n = len(gpd.read_file(REPO / "sample_tiles" / r["scene"] / "truth.gpkg", layer="plots"))
        assert int(r["n_truth"]) == n - (r["scene"] in unknown)
    # the same scenes with the unknown plots labelled poppy: the regions found there come back, as matches
    (tmp_path / "all.csv").write_text("mosaic,labels\n" + "\n".join(f"{d / 'mosaic.tif'},{d.name}.gpkg"
                                      for d in (REPO / "sample_tiles" / k for k in unknown)) + "\n")
    for k in unknown:
        t = gpd.read_file(REPO / "sample_tiles" / k / "truth.gpkg", layer="plots")
        gpd.GeoDataFrame({"label": ["poppy"] * len(t)}, geometry=t.geometry, crs=t.crs).to_file(
            tmp_path / f"{k}.gpkg", layer="plots", driver="GPKG", engine="pyogrio")
    p = subprocess.run([*study, "--set", f"flight={tmp_path / 'all.csv'}", "--out",
                        str(tmp_path / "all_r.csv")], capture_output=True, text=True)
    assert p.returncode == 0, p.stderr
    with open(tmp_path / "all_r.csv", newline="") as fh:
        every = [r for r in csv.DictReader(fh) if r["kind"] == "region"]
    assert len(every) > len(found)
    assert sum(float(r["iou"]) >= 0.25 for r in every) > sum(float(r["iou"]) >= 0.25 for r in found)
    out = tmp_path / "scored"
    fit_script = [sys.executable, str(REPO / "scripts" / "train_plot_scorer.py"), str(BUNDLE), str(regions)]
    p = subprocess.run([*fit_script, "--train-sets", "flight", "--folds-by", "scene", "--folds", "2",
                        "--rule", "best-f1", "--out", str(out)], capture_output=True, text=True)
    assert p.returncode == 0, p.stderr
    tr = read_meta(out).training["plot_scorer"]
    assert tr["folds_by"] == "scene" and tr["folds"] == 2 and tr["sets"] == ["flight"]
    p = subprocess.run([*fit_script, "--train-sets", "flight", "--out", str(tmp_path / "x")],
                       capture_output=True, text=True)
    assert p.returncode == 2 and "--folds-by scene" in p.stderr


def test_regions_are_thresholded_in_detects_percent_steps():
    """detect keeps a pixel when its uint8 percent reaches round(100 x threshold); so must the engines."""
    prob = np.zeros((20, 20), np.float32)
    prob[5:12, 5:12] = 0.34
    valid = np.ones_like(prob, bool)
    assert candidate_labels(prob, valid, 0.345)[0] == 2  # round(34.5) = 34: kept, as detect keeps it
    assert candidate_labels(prob, valid, 0.35)[0] == 1
    assert candidate_labels(prob.astype(np.float64), valid, np.float64(0.34))[0] == 2


def test_detect_features_on_a_resampled_mosaic_match_the_whole_scene_engine(tmp_path):
    """A 3 cm mosaic runs at the bundle's 3.5 cm floor: detect's grid and the whole-scene engine's differ
    by a rounded pixel; the GSD feature must be the same number in both, the others nearly."""
    import geopandas as gpd

    from poppyscan.bundle import make_predictor
    from poppyscan.mosaic import open_mosaic
    from poppyscan.plot_scorer import mosaic_region_features
    from poppyscan.scene_predict import scene_probability

    scene = REPO / "sample_tiles" / "utm49n_nodata"
    b = _with_scorer(tmp_path, _stump("prob_mean", 0.0, 5.0, 5.0))
    run = tmp_path / "run"
    assert _detect(scene, run, b) == 0
    plots = gpd.read_file(run / "plots.gpkg")
    assert len(plots) >= 3
    m = open_mosaic(scene / "mosaic.tif")
    got = mosaic_region_features(m, m.grid(0.035), run / "probability.tif", plots.geometry, 0.5)
    bundle = load_bundle(BUNDLE, with_torch=False)
    sp = scene_probability(make_predictor(bundle, device="cpu", threads=1), bundle, scene / "mosaic.tif",
                           keep_rgb=True)
    assert np.sqrt(sp.px_area_m2) != 0.035  # the whole-scene grid is not exactly 3.5 cm
    prob = np.round(sp.prob * 100) / 100
    n, labels, stats = candidate_labels(prob, sp.valid, 0.5)
    inv = ~sp.transform
    ids = [int(labels[int(r), int(c)]) for c, r in
           (inv * (g.representative_point().x, g.representative_point().y) for g in plots.geometry)]
    assert all(ids)
    want = region_features(prob, sp.valid, sp.rgb, labels, stats, float(np.sqrt(sp.px_area_m2)), ids=ids)
    assert np.array_equal(got["gsd_cm"], want["gsd_cm"]) and (got["gsd_cm"] == 3.5).all()
    for f in ("log_area_m2", "prob_mean", "compactness", "in_g", "d_exg"):
        assert np.allclose(got[f], want[f], rtol=0.1, atol=0.03), (f, got[f], want[f])


def test_detect_with_a_ready_predictor_of_a_scored_bundle(tmp_path):
    from poppyscan.bundle import make_predictor
    from poppyscan.config import load_config
    from poppyscan.detect import detect

    b = _with_scorer(tmp_path, _stump("log_area_m2", np.log(4.0), -5.0, 5.0))
    predictor = make_predictor(load_bundle(b, with_torch=False), device="cpu", threads=1)
    cfg = load_config(overrides={"detect.run_tasks": False})
    detect([SCENE_4CM / "mosaic.tif"], tmp_path / "run", config=cfg, model=predictor, progress=False)
    r = json.loads((tmp_path / "run" / "run.json").read_text())
    assert r["params"]["plot_scorer"] == "plot_scorer.json"


def test_region_study_keeps_same_named_mosaics_apart_and_checks_inputs(tmp_path):
    one = tmp_path / "f1"
    two = tmp_path / "f2"
    for d in (one, two):
        d.mkdir()
        shutil.copy(SCENE_4CM / "mosaic.tif", d / "odm_orthophoto.tif")
        shutil.copy(SCENE_4CM / "truth.gpkg", d / "labels.gpkg")
    (tmp_path / "s.csv").write_text("mosaic,labels\nf1/odm_orthophoto.tif,f1/labels.gpkg\n"
                                    "f2/odm_orthophoto.tif,f2/labels.gpkg\n")
    study = [sys.executable, str(REPO / "scripts" / "region_study.py"), str(BUNDLE), "--threads", "1"]
    out = tmp_path / "r.csv"
    p = subprocess.run([*study, "--set", f"a={tmp_path / 's.csv'}", "--out", str(out)], capture_output=True,
                       text=True)
    assert p.returncode == 0, p.stderr
    with open(out, newline="") as fh:
        scenes = [r for r in csv.DictReader(fh) if r["kind"] == "scene"]
    assert [s["scene"] for s in scenes] == ["odm_orthophoto", "odm_orthophoto~2"]
    p = subprocess.run([*study, "--set", f"a={one / 'odm_orthophoto.tif'}", "--set",
                        f"a={two / 'odm_orthophoto.tif'}", "--out", str(tmp_path / "w.csv")],
                       capture_output=True, text=True)
    assert p.returncode == 2 and "given twice" in p.stderr
    assert {s["model_version"] for s in scenes} == {read_meta(BUNDLE).version}
    assert {s["morph_radius_px"] for s in scenes} == {"1"}
    (tmp_path / "bad.csv").write_text("mosaic,labels\nnone.tif,\n")
    p = subprocess.run([*study, "--set", f"a={tmp_path / 'bad.csv'}", "--out", str(tmp_path / "x.csv")],
                       capture_output=True, text=True)
    assert p.returncode == 2 and "none.tif" in p.stderr and "Traceback" not in p.stderr
    assert not (tmp_path / "x.csv").exists()
    # a regions file of another network is refused, and one that does not say which network made it
    other = _with_scorer(tmp_path, _stump("prob_mean", 0.5, -1, 1), name="other")
    update_meta(other, plot_scorer=None)
    with open(other / "model.onnx", "ab") as fh:  # another network (train_plot_scorer only hashes it)
        fh.write(b"\0")
    old = tmp_path / "old.csv"
    with open(out, newline="") as fh, open(old, "w", newline="") as o:
        rows = list(csv.DictReader(fh))
        w = csv.DictWriter(o, fieldnames=[c for c in rows[0] if c != "model_digest"])
        w.writeheader()
        w.writerows({k: v for k, v in r.items() if k != "model_digest"} for r in rows)
    fit_script = [sys.executable, str(REPO / "scripts" / "train_plot_scorer.py")]
    p = subprocess.run([*fit_script, str(BUNDLE), str(old), "--train-sets", "a", "--folds-by", "scene",
                        "--folds", "2", "--out", str(tmp_path / "z")], capture_output=True, text=True)
    assert p.returncode == 2 and "older region_study.py" in p.stderr
    p = subprocess.run([sys.executable, str(REPO / "scripts" / "train_plot_scorer.py"), str(other), str(out),
                        "--train-sets", "a", "--folds-by", "scene", "--folds", "2",
                        "--out", str(tmp_path / "y")], capture_output=True, text=True)
    assert p.returncode == 2 and "another network" in p.stderr and not (tmp_path / "y").exists()


def test_detect_warns_when_its_morphology_is_not_the_scorers(tmp_path, caplog):
    stump = _stump("log_area_m2", np.log(4.0), -5.0, 5.0)
    stump["training"] = {"morph_radius_px": 1}
    b = _with_scorer(tmp_path, stump)
    conf = tmp_path / "c2.yaml"
    conf.write_text("detect:\n  run_tasks: false\n  morph_radius_px: 2\n")
    code = main(["detect", str(SCENE_4CM / "mosaic.tif"), "--out", str(tmp_path / "run"), "--model", str(b),
                 "--config", str(conf), "--device", "cpu", "-q"])
    assert code == 0
    assert "morph_radius_px 2 is not the 1 the plot scorer was fitted with" in caplog.text
