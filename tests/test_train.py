"""Training: scene discovery, tile reading (labels, valid mask, CRS), a tiny run that learns and resumes."""

from __future__ import annotations

import json

import numpy as np
import pytest
from model_scenes import make_scene

from poppyscan.cli import main
from poppyscan.config import TrainConfig
from poppyscan.errors import ConfigError, InputError, OutputExistsError
from poppyscan.model import load_bundle
from poppyscan.train import split_scenes, train
from poppyscan.traindata import IGNORE, TileSampler, augment, find_scenes, open_scene, read_tile


@pytest.fixture(scope="module")
def scenes(tmp_path_factory):
    root = tmp_path_factory.mktemp("scenes")
    for i in range(3):
        make_scene(root / f"s{i}", seed=i, size=128, n_plots=3)
    return root


TINY = dict(
    tile_size=64,
    infer_tile_size=64,
    epochs=3,
    steps_per_epoch=4,
    batch_size=3,
    val_tiles=4,
    lr=0.005,
    val_fraction=0.34,
)


def test_find_scenes_variants(scenes, tmp_path):
    assert len(find_scenes([scenes])) == 3
    assert find_scenes([scenes / "s0"]) == [(scenes / "s0" / "mosaic.tif", scenes / "s0" / "truth.gpkg")]
    csv = tmp_path / "list.csv"
    csv.write_text(f"mosaic,labels\n{scenes}/s0/mosaic.tif,{scenes}/s0/truth.gpkg\n{scenes}/s1/mosaic.tif,\n")
    pairs = find_scenes([csv])
    assert pairs[1] == (scenes / "s1" / "mosaic.tif", None)  # no labels: a poppy-free scene
    yml = tmp_path / "list.yaml"
    yml.write_text(f"- {{mosaic: {scenes}/s2/mosaic.tif, labels: {scenes}/s2/truth.gpkg}}\n")
    assert find_scenes([yml])[0][1] == scenes / "s2" / "truth.gpkg"
    with pytest.raises(InputError, match="nothing.txt' do not exist"):
        find_scenes([tmp_path / "nothing.txt"])
    (tmp_path / "notes.txt").write_text("x")
    with pytest.raises(InputError, match="not a scene directory"):
        find_scenes([tmp_path / "notes.txt"])


def test_read_tile_labels_and_mask(scenes):
    mosaic, truth = scenes / "s0" / "mosaic.tif", scenes / "s0" / "truth.gpkg"
    scene = open_scene(mosaic, truth)
    assert scene.gsd_m == pytest.approx(0.04) and len(scene.positives) == 3 and len(scene.negatives) == 1
    rgb, label = read_tile(scene, 64, 64, 128, 0.04)  # the whole scene at its own GSD
    assert rgb.shape == (128, 128, 3) and rgb.dtype == np.uint8
    assert (label[:, :8] == IGNORE).all()  # alpha = 0 there
    assert (label[:, 8:] != IGNORE).all()
    poppy = label == 1
    # plots are painted blue-green (120, 170, 160) with red dots: mostly not the brown background
    assert poppy.sum() > 200 and (rgb[poppy][:, 1] > 140).mean() > 0.7
    rgb2, label2 = read_tile(scene, 64, 64, 64, 0.08)  # coarser GSD: same ground, half the pixels
    assert abs(int((label2 == 1).sum()) * 4 - int(poppy.sum())) < 0.15 * poppy.sum()
    rgb3, label3 = read_tile(scene, -200, -200, 32, 0.04)  # fully outside the raster
    assert (label3 == IGNORE).all()
    scene.close()


def test_geographic_crs_scene(tmp_path):
    mosaic, truth, _ = make_scene(tmp_path / "g", seed=5, size=96, crs="EPSG:32649")
    import rasterio
    from rasterio.warp import calculate_default_transform, reproject

    geo = tmp_path / "geo.tif"
    with rasterio.open(mosaic) as src:
        tr, w, h = calculate_default_transform(src.crs, "EPSG:4490", src.width, src.height, *src.bounds)
        with rasterio.open(
            geo, "w", driver="GTiff", width=w, height=h, count=4, dtype="uint8", crs="EPSG:4490", transform=tr
        ) as dst:
            for b in range(1, 5):
                reproject(rasterio.band(src, b), rasterio.band(dst, b))
    scene = open_scene(geo, truth)  # truth stays in UTM: reprojected on read
    assert scene.gsd_m == pytest.approx(0.04, rel=0.15)
    _, label = read_tile(scene, scene.width / 2, scene.height / 2, 96, 0.04)
    assert (label == 1).sum() > 100


def test_sampler_and_augment_keep_labels(scenes):
    sc = [open_scene(scenes / f"s{i}" / "mosaic.tif", scenes / f"s{i}" / "truth.gpkg") for i in range(3)]
    smp = TileSampler(sc, 48, 0.04, positive_fraction=1.0)
    rng = np.random.default_rng(0)
    rgb, label, kind = smp.sample(rng)
    assert kind == "positive" and (label == 1).any()
    rgb2, label2 = augment(rgb, label, rng)
    assert rgb2.shape == rgb.shape and rgb2.dtype == np.uint8
    assert sorted(np.unique(label2)) == sorted(np.unique(label))
    assert (label2 == 1).sum() == (label == 1).sum()  # flips/rotations only move labels


def test_split_by_scene_keeps_both_sides(scenes):
    sc = [open_scene(scenes / f"s{i}" / "mosaic.tif", scenes / f"s{i}" / "truth.gpkg") for i in range(3)]
    tr, val = split_scenes(sc, 0.34, seed=0)
    assert len(val) == 1 and sorted(tr + val) == [0, 1, 2]


def test_tiny_training_learns_resumes_and_repeats(scenes, tmp_path, one_thread):
    cfg = TrainConfig(**TINY)
    full = train([scenes], tmp_path / "a", cfg, progress=lambda s: None)
    losses = [h["loss"] for h in full.history]
    assert losses[-1] < losses[0]
    b = load_bundle(full.bundle_path)
    assert b.meta.tile_size == 64 and 0 < b.meta.threshold < 1
    assert b.meta.training["epochs"] == 3 and "validation_tiles" in b.meta.metrics
    assert b.meta.metrics["validation_scenes"]["threshold"] == b.meta.threshold  # calibrated on whole scenes
    assert b.meta.metrics["validation_scenes"]["min_prob_mean"] == b.meta.min_prob_mean  # and the decision
    # interrupted after 1 epoch, then resumed: the same history as the uninterrupted run
    train([scenes], tmp_path / "b", cfg, progress=lambda s: None, stop_after=1)
    assert (tmp_path / "b" / "checkpoints" / "last.pt").is_file()
    lines = []
    resumed = train([scenes], tmp_path / "b", cfg, resume=True, progress=lines.append)
    assert any("resumed" in s for s in lines)
    assert [h["epoch"] for h in resumed.history] == [1, 2, 3]
    np.testing.assert_allclose([h["loss"] for h in resumed.history], losses, rtol=1e-4)
    hist = [json.loads(s) for s in (tmp_path / "b" / "history.jsonl").read_text().splitlines()]
    assert [h["epoch"] for h in hist] == [1, 2, 3]
    with pytest.raises(OutputExistsError, match="--resume"):
        train([scenes], tmp_path / "b", cfg)


def test_wider_arch_trains_into_a_bundle_whose_onnx_matches_torch(scenes, tmp_path, one_thread):
    import torch

    from poppyscan.model import make_predictor

    cfg = TrainConfig(**{**TINY, "epochs": 1, "arch": "unet_mnv3s15"})
    res = train([scenes], tmp_path / "w", cfg, progress=lambda s: None)
    b = load_bundle(res.bundle_path)
    assert b.meta.arch == "unet_mnv3s15"
    assert sum(p.numel() for p in b.model.parameters()) > 1.9e6  # the 1.5-width encoder, not the default
    image = np.random.default_rng(0).integers(0, 256, (2, 64, 64, 3), dtype=np.uint8)
    onnx = make_predictor(b, device="cpu", threads=1)(image)
    mean, std = (torch.tensor(v).view(1, 3, 1, 1) for v in (b.meta.mean, b.meta.std))
    x = (torch.from_numpy(image).permute(0, 3, 1, 2).float() / 255 - mean) / std
    with torch.no_grad():
        ref = torch.softmax(b.model.eval()(x), dim=1)[:, b.meta.poppy_class].numpy()
    np.testing.assert_allclose(onnx, ref, atol=1e-4)


def test_explicit_validation_scenes_must_not_overlap(scenes, tmp_path):
    with pytest.raises(InputError, match="both the training and the validation"):
        train([scenes], tmp_path / "v", TrainConfig(**TINY), val_sources=[scenes / "s0"])


def test_resume_needs_a_checkpoint(scenes, tmp_path):
    with pytest.raises(InputError, match="cannot resume"):
        train([scenes], tmp_path / "none", TrainConfig(**TINY), resume=True)


@pytest.mark.parametrize(
    "extra, msg",
    [
        (["--tile-size", "100"], "train.tile_size"),
        (["--resume", "--overwrite"], "'--resume' and '--overwrite'"),
        (["--epochs", "0"], "train.epochs"),
        (["--arch", "vgg"], "unknown architecture"),
    ],
)
def test_cli_bad_options_give_one_line_errors(scenes, tmp_path, capsys, extra, msg):
    code = main(["train", str(scenes), "--out", str(tmp_path / "run"), *extra])
    err = capsys.readouterr().err.strip()
    assert code == 2 and err.startswith("poppyscan: error:") and msg in err and "\n" not in err


def _positive_tile(scenes, size):
    """A ``size`` px tile centred near a poppy plot of the rendered test scenes: (rgb, label)."""
    sc = [open_scene(scenes / f"s{i}" / "mosaic.tif", scenes / f"s{i}" / "truth.gpkg") for i in range(3)]
    rgb, label, _ = TileSampler(sc, size, 0.04, positive_fraction=1.0).sample(np.random.default_rng(0))
    return rgb, label


def test_coarse_augmentation_blurs_and_keeps_labels(scenes):
    from poppyscan.config import load_config
    from poppyscan.traindata import coarsen

    rgb, label = _positive_tile(scenes, 48)
    soft = coarsen(rgb, 2.0)
    assert soft.shape == rgb.shape and soft.dtype == np.uint8
    assert np.abs(np.diff(soft.astype(int), axis=1)).mean() < np.abs(np.diff(rgb.astype(int), axis=1)).mean()
    rgb2, label2 = augment(rgb, label, np.random.default_rng(1), coarse_p=1.0)
    assert rgb2.shape == rgb.shape and (label2 == 1).sum() == (label == 1).sum()
    # coarse_p=0 (the default) draws the same random numbers as before the option existed
    a = augment(rgb, label, np.random.default_rng(2))[0]
    b = augment(rgb, label, np.random.default_rng(2), coarse_p=0.0)[0]
    assert np.array_equal(a, b)
    assert load_config().train.coarse_aug == 0.0
    assert load_config(overrides={"train.coarse_aug": 0.3}).train.coarse_aug == 0.3
    with pytest.raises(ConfigError, match="train.coarse_aug"):
        load_config(overrides={"train.coarse_aug": 2})


def test_color_augmentation_strength_and_defaults(scenes):
    from poppyscan.config import load_config

    rgb, label = _positive_tile(scenes, 48)
    # color=1 (the default) is exactly the old augmentation
    a = augment(rgb, label, np.random.default_rng(3))[0]
    b = augment(rgb, label, np.random.default_rng(3), color=1.0)[0]
    assert np.array_equal(a, b)
    # a stronger jitter spreads the tiles' mean brightness wider, and labels only move with flips
    def spread(c):
        return np.std([augment(rgb, label, np.random.default_rng(k), color=c)[0].mean() for k in range(40)])
    assert spread(2.0) > spread(1.0)
    rgb2, label2 = augment(rgb, label, np.random.default_rng(4), color=3.0)
    assert rgb2.dtype == np.uint8 and (label2 == 1).sum() == (label == 1).sum()
    assert load_config().train.color_aug == 1.0
    with pytest.raises(ConfigError, match="train.color_aug"):
        load_config(overrides={"train.color_aug": 0})


def test_camera_augmentation_changes_pixels_not_labels(scenes):
    from poppyscan.config import load_config
    from poppyscan.traindata import camera_effects

    rgb, label = _positive_tile(scenes, 64)
    # camera_p=0 (the default) is exactly the old augmentation
    a = augment(rgb, label, np.random.default_rng(5))[0]
    assert np.array_equal(a, augment(rgb, label, np.random.default_rng(5), camera_p=0.0)[0])
    # camera_p=1: the same geometry (labels identical), other pixels
    changed = 0
    for k in range(6):
        x0, y0 = augment(rgb, label, np.random.default_rng(k))
        x1, y1 = augment(rgb, label, np.random.default_rng(k), camera_p=1.0)
        assert np.array_equal(y0, y1) and x1.dtype == np.uint8 and x1.shape == x0.shape
        changed += not np.array_equal(x0, x1)
    assert changed >= 5  # each effect has its own chance: rarely none applies
    # sharpening on an edge; nearly every draw changes something
    edge = np.full((64, 64, 3), 80, np.uint8)
    edge[:, 32:] = 160
    outs = [camera_effects(edge, np.random.default_rng(k)).astype(int) for k in range(30)]
    # sharpening halos: the bright side overshoots right at the edge, the dark side undershoots
    assert any(o[30:34, 32, 1].mean() > o[30:34, 44, 1].mean() + 8 and
               o[30:34, 31, 1].mean() < o[30:34, 19, 1].mean() - 8 for o in outs)
    assert sum(not np.array_equal(o, edge) for o in outs) >= 25
    assert load_config().train.camera_aug == 0.0
    with pytest.raises(ConfigError, match="train.camera_aug"):
        load_config(overrides={"train.camera_aug": 1.5})


def test_mined_negatives_layer_gets_its_share_of_tiles(scenes, tmp_path):
    import shutil

    import geopandas as gpd
    from shapely.geometry import box

    from poppyscan.config import load_config
    from poppyscan.traindata import MINED_LAYER

    labels = tmp_path / "mined.gpkg"
    shutil.copyfile(scenes / "s0" / "truth.gpkg", labels)
    plain = open_scene(scenes / "s0" / "mosaic.tif", scenes / "s0" / "truth.gpkg")
    crs = plain.ds.crs
    x0, y0 = plain.ds.transform * (10, 10)
    gpd.GeoDataFrame({"kind": ["mined"]}, geometry=[box(x0, y0 - 0.4, x0 + 0.4, y0)], crs=crs).to_file(
        labels, layer=MINED_LAYER, driver="GPKG"
    )
    mined = open_scene(scenes / "s0" / "mosaic.tif", labels)
    assert len(mined.mined) == 1 and not plain.mined
    assert len(mined.positives) == len(plain.positives) and len(mined.negatives) == len(plain.negatives)
    smp = TileSampler([mined], 48, 0.04, positive_fraction=0.0, mined_fraction=1.0)
    assert {smp.sample(np.random.default_rng(k))[2] for k in range(5)} == {"mined"}
    # mined_fraction=0 (the default) draws the same tiles as a sampler without the option
    for s in (TileSampler([mined], 48, 0.04, positive_fraction=0.3), TileSampler([plain], 48, 0.04,
              positive_fraction=0.3, mined_fraction=0.5)):
        r1, r2 = np.random.default_rng(5), np.random.default_rng(5)
        ref = TileSampler([plain], 48, 0.04, positive_fraction=0.3)
        for _ in range(4):
            assert np.array_equal(s.sample(r1)[0], ref.sample(r2)[0])
    assert load_config(overrides={"train.mined_fraction": 0.25}).train.mined_fraction == 0.25
    with pytest.raises(ConfigError, match="train.mined_fraction"):
        load_config(overrides={"train.mined_fraction": 1.5})


def test_positive_weights_draw_matching_plots_more_often(scenes, tmp_path, one_thread):
    import shutil

    import geopandas as gpd

    from poppyscan.config import load_config, parse_positive_weights
    from poppyscan.traindata import read_labels

    labelled = []
    for i in (0, 1):  # scene 0: one rosette of 3 plots; scene 1: none
        d = tmp_path / f"w{i}"
        shutil.copytree(scenes / f"s{i}", d)
        g = gpd.read_file(d / "truth.gpkg", layer="plots")
        g["stage"] = ["Rosette", "flowering", "flowering"][: len(g)] if i == 0 else "flowering"
        g.to_file(d / "truth.gpkg", layer="plots", driver="GPKG")
        labelled.append(open_scene(d / "mosaic.tif", d / "truth.gpkg"))
    s0, s1 = labelled
    assert len(s0.positives) == 3 and [a["stage"] for a in s0.positive_attrs] == ["Rosette", "flowering",
                                                                                  "flowering"]
    assert read_labels(tmp_path / "w0" / "truth.gpkg", s0.ds.crs)[0] == s0.positives  # API unchanged

    weights = parse_positive_weights(("stage=rosette:4",))
    smp = TileSampler(labelled, 48, 0.04, positive_fraction=1.0, positive_weights=weights)
    pairs, p = smp._pos_pick
    chance = {tuple(map(int, pair)): float(q) for pair, q in zip(pairs, p, strict=True)}
    # unweighted each plot has 1/2 x 1/3; weighted 4 : 1 : 1 | 1 : 1 : 1, renormalised
    assert len(s1.positives) == 3 and chance[(0, 0)] == pytest.approx(4 / 9)
    assert chance[(0, 1)] == pytest.approx(1 / 9) and chance[(1, 2)] == pytest.approx(1 / 9)
    rng = np.random.default_rng(0)
    drawn = [tuple(pairs[rng.choice(len(p), p=p)]) for _ in range(3000)]
    assert 0.41 < drawn.count((0, 0)) / 3000 < 0.48  # 4/9 of positive tiles centre on the rosette

    # no weights, or weights no plot matches: exactly the draws of a sampler without the option
    for w in ({}, parse_positive_weights(("stage=capsule:3",))):
        a = TileSampler(labelled, 48, 0.04, positive_fraction=0.7, positive_weights=w)
        b = TileSampler(labelled, 48, 0.04, positive_fraction=0.7)
        r1, r2 = np.random.default_rng(3), np.random.default_rng(3)
        assert a._pos_pick is None
        for _ in range(4):
            assert np.array_equal(a.sample(r1)[0], b.sample(r2)[0])

    for bad in ("stage=rosette", "stage:3", "=rosette:3", "stage=rosette:0", "stage=rosette:x",
                "stage=rosette:2,stage=Rosette:3"):
        with pytest.raises(ConfigError, match="train.positive_weights"):
            load_config(overrides={"train.positive_weights": bad})
    from poppyscan.train import _weighted_share

    # weight 1 matches (and changes nothing); a missing value never matches, not even 'nan'
    assert "1 of 6 plots, 17% of positive tiles (unweighted 17%)" in _weighted_share(
        labelled, parse_positive_weights(("stage=rosette:1",)))
    s0.positive_attrs[1]["stage"] = float("nan")
    with pytest.raises(InputError, match="matches no training plot"):
        _weighted_share(labelled, parse_positive_weights(("stage=nan:2",)))
    s0.positive_attrs[1]["stage"] = "flowering"

    out = tmp_path / "run"
    cfg = TrainConfig(**{**TINY, "epochs": 1, "val_fraction": 0.0, "calibrate_threshold": False,
                         "positive_weights": ("stage=rosette:4",)})
    with pytest.raises(InputError, match=r"'stage=rosete:4' matches no training plot \(label columns: .*"):
        train([tmp_path / "w0", tmp_path / "w1"], tmp_path / "typo",
              config=TrainConfig(**{**TINY, "positive_weights": ("stage=rosete:4",)}))
    said: list[str] = []
    res = train([tmp_path / "w0", tmp_path / "w1"], out, config=cfg, val_sources=[scenes / "s2"],
          progress=said.append)
    assert "plot weights: stage=rosette x4: 1 of 6 plots, 44% of positive tiles (unweighted 17%)" in said
    assert load_bundle(res.bundle_path).meta.arch == "unet_mnv3s"
    with pytest.raises(ConfigError, match="train.positive_weights"):  # resuming must sample the same way
        train([tmp_path / "w0", tmp_path / "w1"], out, config=TrainConfig(**{**cfg.__dict__, "epochs": 2,
              "positive_weights": ("stage=rosette:2",)}), val_sources=[scenes / "s2"], resume=True)


def test_fine_tuning_a_bundle_with_a_plot_scorer_drops_it_and_says_so(scenes, tmp_path, one_thread):
    """A scorer judges the regions of the network it was fitted with: a fine-tuned bundle must not name it
    (and must load: bundle.json naming a file it lacks would be a broken bundle)."""
    from poppyscan.bundle import update_meta

    cfg = TrainConfig(**{**TINY, "epochs": 1})
    first = train([scenes], tmp_path / "a", cfg, progress=lambda s: None)
    stump = {"format": "poppyscan-plot-scorer", "format_version": 1, "features": ["prob_mean"],
             "baseline": 0.0,
             "trees": [{"feature": [0, -1, -1], "threshold": [0.5, 0, 0], "left": [1, 0, 0],
                        "right": [2, 0, 0], "value": [0, -1, 1], "missing_left": [True, False, False]}]}
    (first.bundle_path / "plot_scorer.json").write_text(json.dumps(stump))
    update_meta(first.bundle_path, plot_scorer="plot_scorer.json", plot_scorer_cut=0.4)
    assert load_bundle(first.bundle_path).meta.plot_scorer == "plot_scorer.json"
    lines: list[str] = []
    tuned = train([scenes], tmp_path / "b", cfg, init=first.bundle_path, bundle_out=tmp_path / "tuned",
                  progress=lines.append)
    meta = load_bundle(tuned.bundle_path).meta
    assert meta.plot_scorer is None and not (tuned.bundle_path / "plot_scorer.json").exists()
    assert any("plot scorer" in s and "not carried over" in s for s in lines)


def test_bundle_out_is_replaced_only_with_overwrite_and_only_when_a_bundle(scenes, tmp_path, capsys):
    """`train --bundle-out DIR`: an existing DIR is refused before training without --overwrite, and a
    directory that is not a model bundle (no bundle.json) even with it; nothing in it is lost."""
    cfg = tmp_path / "tiny.yaml"
    cfg.write_text(
        "train:\n  infer_tile_size: 64\n  val_tiles: 2\n  threads: 1\n  calibrate_threshold: false\n"
    )
    tiny = ["--config", str(cfg), "--epochs", "1", "--steps-per-epoch", "1", "--tile-size", "64",
            "--batch-size", "2", "--val-fraction", "0.34"]

    def run(out, bundle_out, *extra):
        code = main(["train", str(scenes), "--out", str(tmp_path / out), "--bundle-out", str(bundle_out),
                     *tiny, *extra])
        return code, capsys.readouterr().err.strip()

    notes = tmp_path / "survey2026"
    notes.mkdir()
    (notes / "field_notes.txt").write_text("village 3: plot by the well\n", encoding="utf-8")
    for extra, msg in (((), "already exists; pass --overwrite"), (("--overwrite",), "not a model bundle")):
        code, err = run("a", notes, *extra)
        assert code == 3 and err.startswith("poppyscan: error:") and msg in err and "\n" not in err, err
        assert sorted(p.name for p in notes.iterdir()) == ["field_notes.txt"]
        assert not (tmp_path / "a").exists()  # refused before training started
    bundle = tmp_path / "bundle"
    assert run("a", bundle)[0] == 0 and (bundle / "bundle.json").is_file()
    first = (bundle / "bundle.json").read_bytes()
    code, err = run("b", bundle)
    assert code == 3 and "already exists" in err and (bundle / "bundle.json").read_bytes() == first
    assert run("b", bundle, "--overwrite", "--model-version", "0.2.0")[0] == 0
    assert load_bundle(bundle).meta.version == "0.2.0"  # replaced by the second run's bundle
    assert not list(tmp_path.glob(".bundle*"))  # no temporary or backup left beside it
