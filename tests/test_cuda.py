"""The CUDA path (torch on the GPU) gives what the CPU path (ONNX Runtime) gives. Skipped without a GPU;
``scripts/gpu_check.sh`` runs it on a machine with one."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import rasterio

from poppyscan.bundle import cuda_available

pytestmark = pytest.mark.skipif(not cuda_available(), reason="no CUDA GPU here")

MODEL = Path(__file__).resolve().parents[1] / "models" / "poppyscan-default"


def test_predictor_on_cuda_matches_onnx_runtime_on_cpu():
    from poppyscan.model import load_bundle, make_predictor

    bundle = load_bundle(MODEL)
    x = np.random.default_rng(0).integers(0, 256, (3, 256, 320, 3), dtype=np.uint8)
    cpu = make_predictor(bundle, device="cpu", threads=1)(x)
    gpu = make_predictor(bundle, device="cuda")(x)
    assert gpu.shape == cpu.shape == (3, 256, 320)
    assert np.abs(gpu - cpu).max() < 1e-3


def test_detect_on_cuda_matches_cpu(tmp_path):
    import geopandas as gpd

    from poppyscan.config import load_config
    from poppyscan.detect import detect
    from poppyscan.synth import render_scene

    render_scene(tmp_path / "scene", seed=900003, size=1024, overwrite=True)
    mosaic = tmp_path / "scene" / "mosaic.tif"
    config = load_config(overrides={"detect.run_tasks": False})
    cpu = detect([mosaic], tmp_path / "cpu", config=config, model=MODEL, device="cpu", progress=False)
    gpu = detect([mosaic], tmp_path / "gpu", config=config, model=MODEL, device="cuda", progress=False)
    with rasterio.open(tmp_path / "cpu" / "probability.tif") as a, \
            rasterio.open(tmp_path / "gpu" / "probability.tif") as b:
        pa, pb = a.read(1).astype(int), b.read(1).astype(int)
    assert (pa == 255).sum() == (pb == 255).sum()  # same nodata
    assert np.abs(pa - pb).max() <= 1  # percent, rounding only
    assert gpu.plots == cpu.plots
    ga = gpd.read_file(tmp_path / "cpu" / "plots.gpkg", layer="plots")
    gb = gpd.read_file(tmp_path / "gpu" / "plots.gpkg", layer="plots")
    assert np.allclose(sorted(ga.area_m2), sorted(gb.area_m2), rtol=0.02)
