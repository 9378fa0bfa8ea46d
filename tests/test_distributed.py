"""detect on a real Dask distributed cluster (issue 7): worker processes, results identical to a local run."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import rasterio

distributed = pytest.importorskip("distributed")

import cloudpickle  # noqa: E402  (comes with distributed)
import detect_scenes  # noqa: E402
from detect_scenes import ColourPredictor  # noqa: E402
from test_resume import KEYS, assert_same_plots, flight, plots_of  # noqa: E402

from poppyscan.cli import main  # noqa: E402
from poppyscan.config import load_config  # noqa: E402
from poppyscan.detect import detect  # noqa: E402
from poppyscan.distributed import connect  # noqa: E402
from poppyscan.errors import InputError  # noqa: E402


@pytest.fixture(scope="module")
def cluster():
    # the test model lives in tests/, which worker processes cannot import: ship it by value
    cloudpickle.register_pickle_by_value(detect_scenes)
    with distributed.LocalCluster(n_workers=2, threads_per_worker=1, processes=True, dashboard_address=None,
                                  silence_logs=40) as c:
        yield c
    cloudpickle.unregister_pickle_by_value(detect_scenes)


def test_cluster_run_equals_local_run(tmp_path, cluster):
    mosaics = flight(tmp_path, n=3)
    local = detect(mosaics, tmp_path / "local", config=load_config(overrides=KEYS), model=ColourPredictor(),
                   progress=False)
    config = load_config(overrides={**KEYS, "detect.scheduler": cluster.scheduler_address})
    model = ColourPredictor()
    remote = detect(mosaics, tmp_path / "dask", config=config, model=model, progress=False)
    assert model.calls == 0  # the work ran on the workers
    assert (remote.plots, remote.tiles, remote.mosaics) == (local.plots, local.tiles, 3)
    assert_same_plots(plots_of(tmp_path / "local"), plots_of(tmp_path / "dask"))
    for name in ["probability.tif", "probability_2.tif", "probability_3.tif"]:
        with rasterio.open(tmp_path / "local" / name) as a, rasterio.open(tmp_path / "dask" / name) as b:
            assert np.array_equal(a.read(), b.read())
            assert a.transform == b.transform and a.crs == b.crs


def test_cluster_run_with_the_real_bundle_through_the_cli(tmp_path, cluster, capsys):
    from detect_scenes import write_scene
    from shapely.geometry import box

    # 3 cm: finer than the bundle's min_gsd_m (3.5 cm), so band and finishing tasks must agree on that grid
    scene = write_scene(tmp_path / "m.tif", plots_px=[box(50, 50, 120, 120)], size=(300, 300), gsd=0.03)
    model = Path(__file__).resolve().parents[1] / "models" / "poppyscan-default"
    args = [str(scene.path), "--model", str(model), "--device", "cpu", "-q"]
    assert main(["detect", *args, "--out", str(tmp_path / "local")]) == 0
    dask_args = ["--out", str(tmp_path / "dask"), "--scheduler", cluster.scheduler_address]
    assert main(["detect", *args, *dask_args]) == 0
    a, b = plots_of(tmp_path / "local"), plots_of(tmp_path / "dask")
    assert len(a) == len(b)
    with rasterio.open(tmp_path / "local" / "probability.tif") as pa, \
            rasterio.open(tmp_path / "dask" / "probability.tif") as pb:
        assert np.array_equal(pa.read(), pb.read())
        assert pa.res == pb.res == pytest.approx((0.035, 0.035)) and pa.transform == pb.transform


def test_unreachable_scheduler_is_a_one_line_error():
    with pytest.raises(InputError, match="cannot reach the Dask scheduler at 'tcp://127.0.0.1:9'"):
        connect("tcp://127.0.0.1:9", timeout_s=1)


def test_row_bands_of_one_mosaic_run_as_separate_tasks_and_equal_a_local_run(tmp_path, cluster, caplog):
    from test_bands import BANDED, tall_mosaic

    mosaic = tall_mosaic(tmp_path)
    detect([mosaic], tmp_path / "local", config=load_config(overrides={**BANDED, "detect.band_rows": 0}),
           model=ColourPredictor(), progress=False)
    config = load_config(overrides={**BANDED, "detect.scheduler": cluster.scheduler_address})
    model = ColourPredictor()
    with caplog.at_level("INFO", logger="poppyscan.distributed"):
        remote = detect([mosaic], tmp_path / "dask", config=config, model=model, progress=False)
    assert model.calls == 0
    assert "running 1 mosaic(s) as 6 band task(s)" in caplog.text
    assert remote.plots == 5
    assert_same_plots(plots_of(tmp_path / "local"), plots_of(tmp_path / "dask"))
    with rasterio.open(tmp_path / "local" / "probability.tif") as a, \
            rasterio.open(tmp_path / "dask" / "probability.tif") as b:
        assert np.array_equal(a.read(), b.read())
