"""Real files for the review tests: a small RGB GeoTIFF mosaic and a detect run directory.

The run follows docs/INTERFACES.md (``plots.gpkg`` layer ``plots`` with its columns, ``run.json``), so
the review stage is tested without detect, which is built elsewhere.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import cv2
import geopandas as gpd
import numpy as np
import rasterio
from rasterio.transform import from_origin
from shapely.geometry import Point, box

CRS = "EPSG:32649"  # UTM 49N, a metric CRS like the Gauss-Krüger zones used in China
GSD = 0.05
ORIGIN = (500_000.0, 3_000_000.0)
WIDTH, HEIGHT = 640, 400  # 32 m x 20 m

# (plot_id, centre x/y in metres from the top-left corner, radius or half-side m, shape, prob_max, prob_mean)
PLOTS = [
    (1, (6.0, 5.0), 1.2, "disc", 0.62, 0.55),
    (2, (16.0, 10.0), 5.4, "square", 0.88, 0.74),  # ~117 m2 -> ~700 plants: over the 500 line
    (3, (27.0, 4.0), 1.6, "disc", 0.97, 0.78),  # by max x area it would come before plot 4, by mean after
    (4, (5.0, 15.5), 2.0, "square", 0.45, 0.41),
    (5, (27.5, 15.0), 1.0, "disc", 0.91, 0.83),
    (6, (12.0, 17.5), 0.9, "disc", 0.71, 0.60),
]


@dataclass(frozen=True)
class RunFixture:
    run_dir: Path
    mosaic: Path
    plot_ids: tuple[int, ...]
    priority: tuple[int, ...]  # plot ids in the expected review order


def _grid(crs: str):
    """Transform of the mosaic grid in ``crs``: the UTM grid, or its lon/lat box for a geographic CRS."""
    if crs == CRS:
        return from_origin(ORIGIN[0], ORIGIN[1], GSD, GSD)
    from rasterio.transform import from_bounds
    from rasterio.warp import transform_bounds

    left, top = ORIGIN
    bounds = transform_bounds(CRS, crs, left, top - HEIGHT * GSD, left + WIDTH * GSD, top)
    return from_bounds(*bounds, WIDTH, HEIGHT)


def write_mosaic(path: Path, seed: int = 0, crs: str = CRS) -> Path:
    """A 640 x 400 RGB uint8 GeoTIFF: textured field, pink-flowered plots, a nodata strip on the left."""
    rng = np.random.default_rng(seed)
    img = np.empty((HEIGHT, WIDTH, 3), np.uint8)
    img[...] = (96, 124, 62)  # RGB green-brown field
    noise = rng.normal(0, 12, (HEIGHT, WIDTH, 1))
    img = np.clip(img + noise, 1, 255).astype(np.uint8)
    for y in range(0, HEIGHT, 14):  # crop rows
        img[y : y + 3] = np.clip(img[y : y + 3].astype(int) - 25, 1, 255)
    for _pid, (cx, cy), r, shape, *_ in PLOTS:
        c, rr, rp = int(cx / GSD), int(cy / GSD), int(r / GSD)
        mask = np.zeros((HEIGHT, WIDTH), np.uint8)
        if shape == "disc":
            cv2.circle(mask, (c, rr), rp, 1, -1)
        else:
            cv2.rectangle(mask, (c - rp, rr - rp), (c + rp, rr + rp), 1, -1)
        flowers = rng.random((HEIGHT, WIDTH)) < 0.35
        img[(mask > 0)] = (120, 150, 140)  # glaucous leaves
        img[(mask > 0) & flowers] = (225, 70, 110)  # pink/red flowers
    img[:, :16] = 0  # outside the flight footprint
    transform = _grid(crs)
    with rasterio.open(
        path,
        "w",
        driver="GTiff",
        width=WIDTH,
        height=HEIGHT,
        count=3,
        dtype="uint8",
        crs=crs,
        transform=transform,
        nodata=0,
        tiled=True,
        blockxsize=256,
        blockysize=256,
    ) as dst:
        dst.write(np.moveaxis(img, -1, 0))
        for i, ci in enumerate(("red", "green", "blue"), start=1):
            dst.set_band_description(i, ci)
    return path


def make_run(root: Path, *, name: str = "run", seed: int = 0, crs: str = CRS) -> RunFixture:
    """Write ``root/mosaic.tif`` and ``root/<name>/`` with ``plots.gpkg`` and ``run.json``.

    With a geographic ``crs`` (e.g. CGCS2000 ``EPSG:4490``) the mosaic and the plots are in lon/lat.
    """
    root.mkdir(parents=True, exist_ok=True)
    mosaic = write_mosaic(root / "mosaic.tif", seed=seed, crs=crs)
    run_dir = root / name
    run_dir.mkdir()
    geoms, rows = [], []
    for pid, (cx, cy), r, shape, pmax, pmean in PLOTS:
        x, y = ORIGIN[0] + cx, ORIGIN[1] - cy
        geom = Point(x, y).buffer(r, 32) if shape == "disc" else box(x - r, y - r, x + r, y + r)
        area = geom.area
        plants = area * 6.0
        geoms.append(geom)
        rows.append(
            {
                "plot_id": pid,
                "area_m2": area,
                "area_mu": area / 666.67,
                "prob_mean": pmean,
                "prob_max": pmax,
                "est_plants": plants,
                "over_500_plants": plants >= 500,
                "mosaic": mosaic.name,
                "model_version": "test-0.1",
            }
        )
    gdf = gpd.GeoDataFrame(rows, geometry=geoms, crs=CRS)
    wgs = gdf.geometry.centroid.to_crs("EPSG:4326")
    gdf.insert(8, "lon", wgs.x)
    gdf.insert(9, "lat", wgs.y)
    gdf = gdf.to_crs(crs)  # detect writes plots in the CRS of the (first) mosaic
    gdf.to_file(run_dir / "plots.gpkg", layer="plots", driver="GPKG")
    with rasterio.open(mosaic) as src:
        bounds = list(src.bounds)
    meta = {
        "poppyscan_version": "0.1.0",
        "created": "2025-04-02T09:00:00+08:00",
        "inputs": [
            {
                "path": str(mosaic.resolve()),
                "crs": crs,
                "gsd_m": GSD,
                "width": WIDTH,
                "height": HEIGHT,
                "bounds": bounds,
            }
        ],
        "crs": crs,
        "model": {"path": "models/test", "version": "test-0.1", "gsd_m": GSD},
        "config": {},
        "counts": {"plots": len(rows)},
        "timings": {},
    }
    (run_dir / "run.json").write_text(json.dumps(meta, indent=1), encoding="utf-8")
    order = sorted(
        rows, key=lambda r: (not r["over_500_plants"], -r["prob_mean"] * r["area_m2"], r["plot_id"])
    )
    return RunFixture(run_dir, mosaic, tuple(r["plot_id"] for r in rows), tuple(r["plot_id"] for r in order))


@contextmanager
def running_server(run_dir: Path, **kwargs) -> Iterator:
    """A review server on 127.0.0.1 and a free port, serving in a thread; shut down on exit."""
    from poppyscan.review.server import make_server

    server = make_server(run_dir, host="127.0.0.1", port=0, **kwargs)
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    try:
        yield server
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=5)
