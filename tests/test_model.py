"""Model bundle: round trip, torch vs ONNX agreement, BundleError on broken bundles, the predictor."""

from __future__ import annotations

import json
import shutil

import numpy as np
import onnx
import pytest
import torch

from poppyscan.bundle import ExportModule
from poppyscan.cli import main
from poppyscan.errors import BundleError, DependencyError, InputError
from poppyscan.model import (
    BundleMeta,
    build_model,
    load_bundle,
    make_predictor,
    new_meta,
    read_meta,
    save_bundle,
)

REQUIRED = [
    "format",
    "format_version",
    "name",
    "version",
    "arch",
    "classes",
    "poppy_class",
    "bands",
    "mean",
    "std",
    "gsd_m",
    "tile_size",
    "overlap",
    "threshold",
    "training",
    "metrics",
    "created",
    "torch_weights",
    "onnx_file",
]


@pytest.fixture(scope="module")
def bundle_dir(tmp_path_factory):
    torch.manual_seed(0)
    model = build_model("unet_mnv3s")
    meta = new_meta(
        name="t",
        version="1.2.3",
        gsd_m=0.05,
        tile_size=128,
        overlap=0.25,
        threshold=0.6,
        training={"scenes": 0},
        metrics={"f1": None},
    )
    path = tmp_path_factory.mktemp("b") / "bundle"
    save_bundle(path, model, meta)
    return path


def _copy(bundle_dir, tmp_path):
    dst = tmp_path / "copy"
    shutil.copytree(bundle_dir, dst)
    return dst


def test_round_trip_same_outputs_torch_and_onnx(bundle_dir):
    b = load_bundle(bundle_dir)
    assert isinstance(b.meta, BundleMeta)
    assert (b.meta.version, b.meta.gsd_m, b.meta.tile_size, b.meta.overlap, b.meta.threshold) == (
        "1.2.3",
        0.05,
        128,
        0.25,
        0.6,
    )
    data = json.loads((bundle_dir / "bundle.json").read_text())
    assert all(k in data for k in REQUIRED)
    rng = np.random.default_rng(1)
    x = rng.integers(0, 256, (2, 70, 97, 3), dtype=np.uint8)  # odd sizes: padded and cropped inside
    predict = make_predictor(b, device="cpu", threads=1)
    assert predict.device == "cpu"
    p_onnx = predict(x)
    assert p_onnx.shape == (2, 70, 97) and p_onnx.dtype == np.float32
    assert np.all((p_onnx >= 0) & (p_onnx <= 1))
    xp = np.pad(x, ((0, 0), (0, 26), (0, 31), (0, 0)), mode="reflect")
    with torch.no_grad():
        p_torch = ExportModule(b.model, b.meta)(torch.from_numpy(xp)).numpy()[:, :70, :97]
    np.testing.assert_allclose(p_onnx, p_torch, atol=1e-4)
    light = load_bundle(bundle_dir, with_torch=False)  # CPU prediction needs only bundle.json + model.onnx
    assert light.model is None
    np.testing.assert_array_equal(make_predictor(light, device="cpu", threads=1)(x), p_onnx)
    # a second load gives the same weights
    b2 = load_bundle(bundle_dir)
    for k, v in b.model.state_dict().items():
        assert torch.equal(v, b2.model.state_dict()[k])


def test_onnx_carries_metadata(bundle_dir):
    proto = onnx.load(str(bundle_dir / "model.onnx"))
    props = {p.key: p.value for p in proto.metadata_props}
    assert json.loads(props["poppyscan_bundle"])["version"] == "1.2.3"
    dims = proto.graph.input[0].type.tensor_type.shape.dim
    assert [d.dim_param for d in dims[:3]] == ["batch", "height", "width"]  # dynamic axes


@pytest.mark.parametrize(
    "edit, match",
    [
        (lambda d: d.pop("gsd_m"), "missing key.*gsd_m"),
        (lambda d: d.update(format_version=99), "format_version"),
        (lambda d: d.update(arch="resnet9000"), "arch"),
        (lambda d: d.update(tile_size=100), "tile_size"),
        (lambda d: d.update(min_prob_mean=1.5), "min_prob_mean.*\\[0, 1\\)"),
        (lambda d: d.update(min_gsd_m=d["gsd_m"] * 0.4),
         "min_gsd_m.*must be null or in \\[gsd_m / 2, gsd_m\\]"),
        (lambda d: d.update(min_gsd_m=d["gsd_m"] * 1.5), "min_gsd_m.*must be null or in"),
        (lambda d: d.update(min_gsd_m="fine"), "min_gsd_m"),
        (lambda d: d.update(classes=["background", "poppy", "corn_poppy"]), "do not fit"),
    ],
)
def test_bad_metadata_raises_bundle_error_naming_problem(bundle_dir, tmp_path, edit, match):
    path = _copy(bundle_dir, tmp_path)
    data = json.loads((path / "bundle.json").read_text())
    edit(data)
    (path / "bundle.json").write_text(json.dumps(data))
    with pytest.raises(BundleError, match=match) as info:
        load_bundle(path)
    assert "bundle.json" in str(info.value) or "model.pt" in str(info.value)


def test_broken_files_raise_bundle_error(bundle_dir, tmp_path):
    path = _copy(bundle_dir, tmp_path)
    (path / "model.onnx").write_bytes(b"not an onnx file")
    with pytest.raises(BundleError, match="model.onnx"):
        load_bundle(path)
    (path / "model.pt").unlink()
    with pytest.raises(BundleError, match="model.pt.*missing"):
        load_bundle(path)
    (path / "bundle.json").write_text("{not json")
    with pytest.raises(BundleError, match="not valid JSON"):
        read_meta(path)
    with pytest.raises(BundleError, match="does not exist"):
        load_bundle(tmp_path / "nowhere")


def test_weights_of_another_arch_do_not_fit(bundle_dir, tmp_path):
    path = _copy(bundle_dir, tmp_path)
    state = torch.load(path / "model.pt", weights_only=True)
    state.pop(next(iter(state)))
    torch.save(state, path / "model.pt")
    with pytest.raises(BundleError, match="do not fit.*1 missing"):
        load_bundle(path)


def test_predictor_rejects_bad_input_and_devices(bundle_dir):
    predict = make_predictor(bundle_dir, device="cpu", threads=1)
    with pytest.raises(InputError, match="uint8"):
        predict(np.zeros((1, 64, 64, 3), np.float32))
    with pytest.raises(InputError, match="device"):
        make_predictor(bundle_dir, device="tpu")
    if not torch.cuda.is_available():
        with pytest.raises(DependencyError, match="cuda"):
            make_predictor(bundle_dir, device="cuda")
    assert predict(np.zeros((0, 64, 64, 3), np.uint8)).shape == (0, 64, 64)


def test_pretrained_weights_never_downloaded(tmp_path, monkeypatch):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path))
    with pytest.raises(DependencyError, match="not in the local torch cache"):
        build_model("unet_mnv3s", pretrained=True)


def test_wider_small_arch_has_its_own_channels_and_refuses_pretrained():
    from poppyscan.errors import ConfigError

    small, wide = build_model("unet_mnv3s"), build_model("unet_mobilenet_v3_small_x1.5")
    n = lambda m: sum(p.numel() for p in m.parameters())  # noqa: E731
    assert 1.9 < n(wide) / n(small) < 2.4
    assert wide.eval()(torch.zeros(1, 3, 64, 64)).shape == (1, 2, 64, 64)
    with pytest.raises(ConfigError, match="no ImageNet weights exist for unet_mnv3s15"):
        build_model("unet_mnv3s15", pretrained=True)


def test_save_refuses_to_overwrite(bundle_dir):
    from poppyscan.errors import OutputExistsError

    with pytest.raises(OutputExistsError, match="--overwrite"):
        save_bundle(bundle_dir, build_model("unet_mnv3s"), read_meta(bundle_dir))


def test_export_onnx_cli(bundle_dir, tmp_path, capsys):
    path = _copy(bundle_dir, tmp_path)
    (path / "model.onnx").unlink()
    assert main(["export-onnx", str(path)]) == 0
    load_bundle(path)
    assert main(["export-onnx", str(tmp_path / "nope")]) == 4
    err = capsys.readouterr().err.strip()
    assert err.startswith("poppyscan: error:") and "does not exist" in err and "\n" not in err


def test_other_archs_build_and_run():
    x = torch.zeros(1, 3, 64, 64)
    for arch in ("unet_mnv3l", "lraspp_mobilenet_v3_large"):
        assert build_model(arch).eval()(x).shape == (1, 2, 64, 64)


@pytest.mark.parametrize("arch", ["unet_mnv3s", "unet_mnv3s15", "unet_mnv3l", "lraspp_mobilenet_v3_large"])
@pytest.mark.parametrize("poppy", [1, 0])
def test_export_upsamples_the_logit_margin_with_the_same_probabilities_as_softmax(arch, poppy):
    from poppyscan.bundle import new_meta

    torch.manual_seed(0)
    net = build_model(arch).eval()
    meta = new_meta(name="t", version="0", arch=arch, classes=("a", "b"), poppy_class=poppy)
    module = ExportModule(net, meta).eval()
    image = torch.randint(0, 256, (2, 96, 160, 3), dtype=torch.uint8)
    with torch.no_grad():
        fast = module(image)  # sigmoid of the low-resolution margin, upsampled
        x = (image.permute(0, 3, 1, 2).float() - module.mean) / module.std
        reference = torch.softmax(net(x), dim=1)[:, poppy]  # softmax of the upsampled logits
    assert fast.shape == (2, 96, 160)
    assert torch.allclose(fast, reference, atol=1e-5)
    assert fast.std() > 1e-4  # not a constant map
