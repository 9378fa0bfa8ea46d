"""Retraining from the field: a painted survey run with injected false positives -> register -> field
results (not_poppy) -> labels with hard negatives -> fine-tune -> held-out comparison -> promotion rule.

Models and tiles are tiny (64 px tiles, a few optimiser steps, one torch thread) so this runs on a busy
2-core machine; the held-out comparison uses the small in-memory scene predictor (``engine="simple"``).
"""

from __future__ import annotations

import json
import shutil

import geopandas as gpd
import pytest
from model_scenes import make_scene
from survey_helpers import X0, Y0, PlotSpec, fill_csv, make_run

from poppyscan.bundle import new_meta, save_bundle
from poppyscan.cli import main
from poppyscan.config import TrainConfig
from poppyscan.errors import InputError, OutputExistsError
from poppyscan.retrain import PromotionRule, bundle_digest, decide, promote_bundle, retrain

TINY = dict(
    tile_size=64,
    infer_tile_size=64,
    epochs=20,
    steps_per_epoch=10,
    batch_size=4,
    val_tiles=4,
    lr=0.003,
    threads=1,
    min_area_m2=0.2,
)


@pytest.fixture(autouse=True)
def _every_test_on_one_thread(one_thread):  # the shared fixture, tests/conftest.py
    yield


def _spec(poly) -> PlotSpec:
    minx, miny, maxx, maxy = poly.bounds
    return PlotSpec((minx + maxx) / 2 - X0, (miny + maxy) / 2 - Y0, side=maxx - minx)


@pytest.fixture(scope="module")
def field(tmp_path_factory):
    """A flight whose detect run flagged its 4 poppy plots and 2 confusers (injected false positives);
    the field teams found the plots poppy and the confusers not_poppy."""
    from survey_helpers import read_csv

    from poppyscan.survey import import_results, register_run

    root = tmp_path_factory.mktemp("field")
    mosaic, truth, plots = make_scene(root / "flight", seed=11, size=192, n_plots=4, confusers=2)
    confusers = list(gpd.read_file(truth, layer="confusers").geometry)
    assert len(plots) == 4 and len(confusers) == 2
    run = root / "run"
    tasks = make_run(
        run,
        [_spec(p) for p in plots + confusers],
        tag="retrain",
        flight_date="2026-04-20",
        mosaic="mosaic.tif",
    )
    meta = json.loads((run / "run.json").read_text())  # the run as detect writes it: the real mosaic path
    with __import__("rasterio").open(mosaic) as ds:
        meta["inputs"][0].update(
            path=str(mosaic.resolve()), width=ds.width, height=ds.height, bounds=list(ds.bounds)
        )
    (run / "run.json").write_text(json.dumps(meta))
    reg = root / "register.gpkg"
    register_run(reg, run)
    ids = list(tasks["task_id"])
    results = {
        t: {"result": "poppy", "plants_eradicated": 30, "checked_by": "王", "checked_at": "2026-04-25"}
        for t in ids[:4]
    }
    results.update(
        {t: {"result": "not_poppy", "checked_by": "李", "checked_at": "2026-04-25"} for t in ids[4:]}
    )
    fill_csv(run / "tasks.csv", root / "back.csv", results)
    assert len(read_csv(root / "back.csv")) == 6
    rep = import_results(reg, root / "back.csv")
    assert not rep.rejected, rep.describe()
    more = root / "more"
    for i in range(2):
        make_scene(more / f"m{i}", seed=30 + i, size=160, n_plots=3, confusers=0)
    make_scene(root / "val" / "v0", seed=40, size=160, n_plots=3, confusers=0)
    for i in range(2):
        make_scene(root / "holdout" / f"h{i}", seed=20 + i, size=160, n_plots=3)
    import torch

    from poppyscan.network import build_model

    torch.manual_seed(0)  # "current": an untrained network, which finds nothing right on the held-out scenes
    current = root / "models" / "current"
    save_bundle(
        current,
        build_model("unet_mnv3s", pretrained=False),
        new_meta(name="poppyscan-test", version="0.0.1", gsd_m=0.04, tile_size=64, overlap=0.125,
                 min_gsd_m=0.035),  # the scenes are at 4 cm: read as before; the field is inherited
    )
    return {
        "root": root,
        "register": reg,
        "mosaic": mosaic,
        "confusers": confusers,
        "plots": plots,
        "more": more,
        "val": root / "val",
        "holdout": root / "holdout",
        "current": current,
    }


@pytest.fixture(scope="module")
def better(field):
    """One retrain run: the fine-tuned bundle beats the untrained current one and is promoted."""
    root = field["root"]
    installed = root / "models" / "installed"
    shutil.copytree(field["current"], installed)
    before = bundle_digest(installed)
    lines: list[str] = []
    result = retrain(
        field["register"],
        field["current"],
        [field["holdout"]],
        root / "work",
        scenes=[field["more"]],
        val=[field["val"]],
        promote_to=installed,
        config=TrainConfig(**TINY),
        engine="simple",
        device="cpu",
        progress=lines.append,
    )
    return {"result": result, "installed": installed, "before": before, "lines": lines}


def test_labels_hold_the_false_positives_as_hard_negatives(field, better):
    labels = better["result"].out_dir / "labels"
    files = sorted(labels.glob("*.gpkg"))
    assert len(files) == 1
    gdf = gpd.read_file(files[0], layer="plots").to_crs("EPSG:32649")
    assert sorted(gdf["label"]) == ["not_poppy"] * 2 + ["poppy"] * 4
    neg = list(gdf.loc[gdf["label"] == "not_poppy"].geometry)
    for conf in field["confusers"]:  # each injected false positive is there, at its place
        assert max(n.intersection(conf).area for n in neg) > 0.9 * conf.area
    csv = (labels / "scenes.csv").read_text()
    assert str(field["mosaic"].resolve()) in csv


def test_retrain_trains_on_them_and_the_better_bundle_is_promoted(field, better):
    res, rep = better["result"], better["result"].report
    assert rep["labels"]["hard_negatives"] == 2 and rep["labels"]["positives"] == 4
    # field scene: 2 hard negatives; --scenes were made without confusers; nothing else adds negatives
    assert rep["training"]["hard_negatives_train"] == 2
    assert rep["training"]["plots_train"] == 4 + 6
    assert rep["training"]["init"] == str(field["current"])
    cur, new = rep["current"]["total"], rep["new"]["total"]
    assert new["f1"] > cur["f1"] and new["false_plots_per_ha"] <= cur["false_plots_per_ha"]
    assert rep["decision"]["promote"] and res.promoted
    installed = better["installed"]
    assert bundle_digest(installed) == bundle_digest(res.new_bundle) != better["before"]
    assert res.backup is not None and bundle_digest(res.backup) == better["before"]  # old one kept, dated
    assert res.backup.name.startswith("installed.bak-")
    from poppyscan.bundle import load_bundle

    meta = load_bundle(installed).meta
    assert meta.metrics["holdout_comparison"]["promote"] is True
    assert (meta.gsd_m, meta.min_gsd_m) == (0.04, 0.035)  # kept from the bundle it was fine-tuned from
    assert meta.training["from_survey"]["hard_negatives"] == 2
    saved = json.loads((res.out_dir / "comparison.json").read_text())
    assert saved["decision"]["promote"] and "promoted to" in saved["decision"]["action"]
    text = (res.out_dir / "comparison.txt").read_text()
    assert "total: current 0.0.1" in text and "total: new 0.0.1+field" in text and "PROMOTE" in text
    assert any("2 hard negative(s)" in s for s in better["lines"])


def test_a_worse_bundle_is_not_promoted_and_the_current_stays_byte_identical(field, better, tmp_path, capsys):
    installed = better["installed"]  # now the good, promoted bundle
    files = {p.name: p.read_bytes() for p in installed.iterdir()}
    siblings = sorted(p.name for p in installed.parent.iterdir())
    import yaml

    cfg = tmp_path / "tiny.yaml"
    cfg.write_text(yaml.safe_dump({"train": TINY}))
    work = tmp_path / "work"
    # through the CLI, with a learning rate that ruins the network in three steps
    code = main(
        [
            "retrain",
            "--from-survey",
            str(field["register"]),
            "--current",
            str(installed),
            "--holdout",
            str(field["holdout"]),
            "--scenes",
            str(field["more"]),
            "--val",
            str(field["val"]),
            "--out",
            str(work),
            "--promote-to",
            str(installed),
            "--config",
            str(cfg),
            "--epochs",
            "1",
            "--steps-per-epoch",
            "3",
            "--lr",
            "0.5",
            "--engine",
            "simple",
            "--device",
            "cpu",
        ]
    )
    out = capsys.readouterr().out
    assert code == 0
    assert "KEEP the current bundle" in out and "not promoted" in out and "comparison.json" in out
    rep = json.loads((work / "comparison.json").read_text())
    d = rep["decision"]
    assert not d["promote"] and rep["backup"] is None
    assert rep["new"]["total"]["f1"] < rep["current"]["total"]["f1"]
    assert {p.name: p.read_bytes() for p in installed.iterdir()} == files
    assert sorted(p.name for p in installed.parent.iterdir()) == siblings  # no backup, no leftovers
    assert "KEEP the current bundle" in (work / "comparison.txt").read_text()


@pytest.mark.parametrize(
    "cur, new, rule, promote",
    [
        (
            {"f1": 0.6, "false_plots_per_ha": 2.0},
            {"f1": 0.7, "false_plots_per_ha": 2.0},
            PromotionRule(),
            True,
        ),
        (
            {"f1": 0.6, "false_plots_per_ha": 2.0},
            {"f1": 0.7, "false_plots_per_ha": 2.5},
            PromotionRule(),
            False,
        ),
        (
            {"f1": 0.6, "false_plots_per_ha": 2.0},
            {"f1": 0.6, "false_plots_per_ha": 1.0},
            PromotionRule(),
            False,
        ),
        (
            {"f1": 0.6, "false_plots_per_ha": 2.0},
            {"f1": 0.5, "false_plots_per_ha": 0.5},
            PromotionRule(),
            False,
        ),
        (
            {"f1": 0.6, "false_plots_per_ha": 2.0},
            {"f1": 0.7, "false_plots_per_ha": 2.5},
            PromotionRule(max_fp_per_ha_increase=0.5),
            True,
        ),
        (
            {"f1": 0.6, "false_plots_per_ha": 2.0},
            {"f1": 0.62, "false_plots_per_ha": 1.0},
            PromotionRule(min_f1_gain=0.05),
            False,
        ),
        (
            {"f1": 0.6, "false_plots_per_ha": None, "fp": 3},
            {"f1": 0.7, "false_plots_per_ha": None, "fp": 3},
            PromotionRule(),
            True,
        ),
        (
            {"f1": None, "false_plots_per_ha": 0.0},
            {"f1": None, "false_plots_per_ha": 0.0},
            PromotionRule(),
            False,
        ),
    ],
)
def test_decision_rule_both_ways(cur, new, rule, promote):
    d = decide(cur, new, rule)
    assert d.promote is promote
    assert d.reasons and ("PROMOTE" if promote else "KEEP") in d.describe()


def test_promotion_refuses_a_target_that_was_not_compared(field, tmp_path):
    target = tmp_path / "installed"
    shutil.copytree(field["current"], target)
    files = {p.name: p.read_bytes() for p in target.iterdir()}
    with pytest.raises(InputError, match="not the bundle that was evaluated"):
        promote_bundle(field["current"], target, expected_digest="0" * 64)
    assert {p.name: p.read_bytes() for p in target.iterdir()} == files
    assert sorted(p.name for p in tmp_path.iterdir()) == ["installed"]


def test_promotion_swaps_in_place_with_a_dated_backup(field, better, tmp_path):
    import datetime as dt

    new, old = better["result"].new_bundle, field["current"]
    fresh = tmp_path / "fresh"
    assert promote_bundle(new, fresh, expected_digest=None) is None  # nothing there yet: no backup
    assert bundle_digest(fresh) == bundle_digest(new)
    target = tmp_path / "target"
    shutil.copytree(old, target)
    when = dt.datetime(2026, 5, 1, 8, 30, tzinfo=dt.UTC)
    backup = promote_bundle(new, target, expected_digest=bundle_digest(old), now=when)
    assert backup == tmp_path / "target.bak-20260501T083000Z"
    assert bundle_digest(backup) == bundle_digest(old) and bundle_digest(target) == bundle_digest(new)
    b2 = promote_bundle(old, target, expected_digest=bundle_digest(new), now=when)  # same second: no clash
    assert b2.name == "target.bak-20260501T083000Z-2" and bundle_digest(b2) == bundle_digest(new)
    assert bundle_digest(backup) == bundle_digest(old)  # the first backup is untouched
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(
        ["fresh", "target", "target.bak-20260501T083000Z", "target.bak-20260501T083000Z-2"]
    )  # no temporary directories left behind


def test_bad_inputs_are_refused_before_training(field, tmp_path):
    kw = dict(config=TrainConfig(**TINY), engine="simple", device="cpu", progress=lambda s: None)
    with pytest.raises(InputError, match="held-out scene"):  # holdout among the training scenes
        retrain(
            field["register"],
            field["current"],
            [field["more"] / "m0"],
            tmp_path / "a",
            scenes=[field["more"]],
            **kw,
        )
    empty = tmp_path / "empty_holdout"
    make_scene(empty / "e", seed=50, size=96, n_plots=0, confusers=0)
    with pytest.raises(InputError, match="no poppy plots"):
        retrain(field["register"], field["current"], [empty], tmp_path / "b", **kw)
    other = tmp_path / "other"
    from poppyscan.network import build_model

    save_bundle(other, build_model("unet_mnv3s", pretrained=False), new_meta(gsd_m=0.04, tile_size=64))
    with pytest.raises(InputError, match="different bundle"):
        retrain(
            field["register"], field["current"], [field["holdout"]], tmp_path / "c", promote_to=other, **kw
        )
    (tmp_path / "d").mkdir()
    (tmp_path / "d" / "x").write_text("x")
    with pytest.raises(OutputExistsError, match="--resume"):
        retrain(field["register"], field["current"], [field["holdout"]], tmp_path / "d", **kw)


def test_cli_one_line_errors(field, tmp_path, capsys):
    code = main(
        [
            "retrain",
            "--from-survey",
            str(field["register"]),
            "--current",
            str(field["current"]),
            "--holdout",
            str(field["more"] / "m0"),
            "--scenes",
            str(field["more"]),
            "--out",
            str(tmp_path / "w"),
            "--epochs",
            "1",
        ]
    )
    err = capsys.readouterr().err.strip()
    assert code == 2 and err.startswith("poppyscan: error:") and "held-out" in err and "\n" not in err


def test_the_detect_pipeline_gives_the_same_decision(field, better):
    """The default engine runs held-out scenes through poppyscan.detect, as production does."""
    from poppyscan.retrain import compare_bundles

    res = better["result"]
    rep = compare_bundles(
        res.backup,
        better["installed"],
        [field["holdout"]],
        engine="detect",
        device="cpu",
        threads=1,
        min_area_m2=TINY["min_area_m2"],
        progress=lambda s: None,
    )
    assert rep["current"]["engine"] == rep["new"]["engine"] == "detect"
    assert rep["decision"]["promote"] is True


def test_resume_without_promote_to_installs_nothing(field, better):
    res = better["result"]
    installed = better["installed"]
    siblings = {p.name: bundle_digest(p) for p in installed.parent.iterdir()}
    again = retrain(
        field["register"],
        field["current"],
        [field["holdout"]],
        res.out_dir,
        scenes=[field["more"]],
        val=[field["val"]],
        config=TrainConfig(**TINY),
        engine="simple",
        device="cpu",
        resume=True,
        progress=lambda s: None,
    )
    assert again.report["training"]["epochs"] == TINY["epochs"]  # resumed at the end: no epoch repeated
    assert again.report["decision"]["promote"] and not again.promoted
    assert "no --promote-to" in again.report["decision"]["action"]
    assert {p.name: bundle_digest(p) for p in installed.parent.iterdir()} == siblings
