"""Net2Net widening of a trained unet_mnv3s into unet_mnv3s15 (poppyscan.widen) and train.widen_to."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from model_scenes import make_scene

from poppyscan.config import TrainConfig
from poppyscan.errors import ConfigError
from poppyscan.model import build_model, load_bundle, make_predictor
from poppyscan.train import train
from poppyscan.widen import widen


def _trained_like(seed: int = 0) -> torch.nn.Module:
    """A unet_mnv3s with non-trivial weights and batch-norm statistics (as after training)."""
    torch.manual_seed(seed)
    net = build_model("unet_mnv3s")
    with torch.no_grad():
        for m in net.modules():
            if isinstance(m, torch.nn.BatchNorm2d):
                m.running_mean.uniform_(-0.5, 0.5)
                m.running_var.uniform_(0.5, 2.0)
                m.weight.uniform_(0.5, 1.5)
                m.bias.uniform_(-0.3, 0.3)
    return net.eval()


def test_widened_network_computes_the_same_function():
    narrow = _trained_like()
    wide = widen(narrow, "unet_mnv3s", "unet_mnv3s15", noise=0.0).eval()
    n_narrow = sum(p.numel() for p in narrow.parameters())
    n_wide = sum(p.numel() for p in wide.parameters())
    assert n_wide > 2 * n_narrow  # really wider (1.97 M vs 0.92 M)
    x = torch.randn(2, 3, 96, 128)
    with torch.no_grad():
        a, b = narrow(x), wide(x)
    assert a.abs().max() > 0.1  # not a degenerate all-zero output
    torch.testing.assert_close(b, a, atol=1e-4, rtol=1e-4)


def test_symmetry_breaking_noise_changes_only_a_little():
    narrow = _trained_like(1)
    x = torch.randn(1, 3, 64, 64)
    with torch.no_grad():
        p0 = torch.softmax(narrow(x), 1)
        w1 = widen(narrow, "unet_mnv3s", "unet_mnv3s15", noise=0.01, seed=3).eval()
        w2 = widen(narrow, "unet_mnv3s", "unet_mnv3s15", noise=0.01, seed=4).eval()
        p1, p2 = torch.softmax(w1(x), 1), torch.softmax(w2(x), 1)
    assert 0 < (p1 - p0).abs().max() < 0.05
    assert not torch.equal(p1, p2)  # the seed picks the copies and the noise


@pytest.mark.parametrize("pair", [("unet_mnv3s15", "unet_mnv3s"), ("unet_mnv3s", "unet_mnv3l")])
def test_unsupported_widening_is_refused(pair):
    with pytest.raises(ConfigError, match="cannot widen"):
        widen(_trained_like(), *pair)


def test_widen_to_needs_init_and_a_known_arch(tmp_path):
    with pytest.raises(ConfigError, match="unknown architecture"):
        TrainConfig(widen_to="resnet")
    make_scene(tmp_path / "s0", seed=0, size=96, n_plots=2)
    with pytest.raises(ConfigError, match="--init"):
        cfg = TrainConfig(widen_to="unet_mnv3s15")
        train([tmp_path / "s0"], tmp_path / "run", cfg, progress=lambda s: None)


def test_training_with_widen_to_writes_a_wide_bundle_that_starts_from_the_narrow_one(tmp_path, one_thread):
    for i in range(2):
        make_scene(tmp_path / "scenes" / f"s{i}", seed=i, size=128, n_plots=3)
    tiny = dict(tile_size=64, infer_tile_size=64, steps_per_epoch=4, batch_size=3, val_tiles=4,
                val_fraction=0.5, epochs=1)
    quiet = lambda s: None  # noqa: E731
    narrow = train([tmp_path / "scenes"], tmp_path / "n", TrainConfig(**tiny, lr=0.005), progress=quiet)
    lines: list[str] = []
    cfg = TrainConfig(**tiny, lr=1e-9, widen_to="unet_mnv3s15")  # lr ~0: the weights stay put
    wide = train([tmp_path / "scenes"], tmp_path / "w", cfg, init=narrow.bundle_path, progress=lines.append)
    assert any("widened" in s for s in lines)
    nb, wb = load_bundle(narrow.bundle_path), load_bundle(wide.bundle_path)
    assert wb.meta.arch == "unet_mnv3s15" and nb.meta.arch == "unet_mnv3s"
    assert sum(p.numel() for p in wb.model.parameters()) > 1.9e6
    # it started from the narrow bundle (lr ~0): the stem's original filters and the classifier are the
    # narrow bundle's, the stem's extra filters copies of them
    stem_n, stem_w = nb.model.stages[0][0].weight, wb.model.stages[0][0].weight
    assert stem_w.shape[0] == 24 and stem_n.shape[0] == 16
    torch.testing.assert_close(stem_w[:16], stem_n, atol=1e-6, rtol=0)
    assert all(any(torch.allclose(f, g, atol=0.05) for g in stem_n) for f in stem_w[16:])
    torch.testing.assert_close(wb.model.classifier.weight, nb.model.classifier.weight, atol=1e-6, rtol=0)
    image = np.random.default_rng(0).integers(0, 256, (2, 64, 64, 3), dtype=np.uint8)
    prob = make_predictor(wb, device="cpu", threads=1)(image)  # its ONNX export runs
    assert prob.shape == (2, 64, 64) and np.isfinite(prob).all()
