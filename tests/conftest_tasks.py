"""Real-file fixtures for the tasks/export tests: a detect run directory built without detect.

``make_run(dir)`` writes what INTERFACES.md promises a detect run holds: ``mosaic.tif`` (RGB GeoTIFF,
UTM 49N near 114°E 23°N, 0.1 m/px), ``plots.gpkg`` layer ``plots`` with the documented columns,
``probability.tif`` (uint8, nodata 255) and ``run.json``. ``make_boundaries(path, crs)`` writes an admin
layer (two villages, a strip of the scene left outside both) in a CGCS2000 CRS.

Import the helpers (and fixtures) from test modules: ``from conftest_tasks import make_run``.
"""

from __future__ import annotations

import json
from pathlib import Path

import geopandas as gpd
import numpy as np
import pyogrio
import rasterio
from pyproj import Transformer
from rasterio.transform import from_origin
from shapely.geometry import MultiPolygon, Polygon, box

CRS = "EPSG:32649"
GSD = 0.1
SIZE = 800  # px -> 80 m x 80 m
ORIGIN_LONLAT = (114.0, 23.0)
CREATED = "2025-04-01T09:00:00+00:00"

# (x0, y0, x1, y1) in metres from the mosaic's top-left corner (x east, y south) and prob_mean
PLOT_BOXES = [
    (5, 5, 9, 8, 0.91),  # 1: 12 m2, west, north
    (12, 60, 22, 69, 0.72),  # 2: 90 m2 -> 540 plants: criminal-size
    (30, 30, 33, 34, 0.66),  # 3: 12 m2, west (rejected in some tests)
    (50, 20, 54, 23, 0.85),  # 4: 12 m2, east
    (62, 55, 66, 60, 0.58),  # 5: 20 m2, east (with a hole)
    (70, 2, 74, 5, 0.95),  # 6: 12 m2, north-east strip: outside every village
]


def origin_xy() -> tuple[float, float]:
    tr = Transformer.from_crs("EPSG:4326", CRS, always_xy=True)
    x, y = tr.transform(*ORIGIN_LONLAT)
    return round(x), round(y)


def _geom(x0, y0, x1, y1, i):
    ox, oy = origin_xy()
    poly = box(ox + x0, oy - y1, ox + x1, oy - y0)
    if i == 5:  # a plot with a hole (an uncropped patch inside)
        cx, cy = poly.centroid.x, poly.centroid.y
        poly = Polygon(poly.exterior.coords, [box(cx - 0.5, cy - 0.5, cx + 0.5, cy + 0.5).exterior.coords])
    if i == 1:  # a two-part plot
        poly = MultiPolygon([poly, box(ox + x1 + 1, oy - y1, ox + x1 + 2, oy - y0)])
    return poly


def make_plots(n: int | None = None, review: dict[int, str] | None = None) -> gpd.GeoDataFrame:
    rows = PLOT_BOXES if n is None else PLOT_BOXES[:n]
    geoms = [_geom(x0, y0, x1, y1, i + 1) for i, (x0, y0, x1, y1, _) in enumerate(rows)]
    gdf = gpd.GeoDataFrame({"plot_id": np.arange(1, len(rows) + 1, dtype="int64")}, geometry=geoms, crs=CRS)
    area = gdf.area.to_numpy()
    gdf["area_m2"] = area
    gdf["area_mu"] = area / 666.67
    gdf["prob_mean"] = [r[4] for r in rows]
    gdf["prob_max"] = np.minimum(np.array([r[4] for r in rows]) + 0.04, 1.0)
    gdf["est_plants"] = np.round(area * 6.0).astype("int64")
    gdf["over_500_plants"] = gdf["est_plants"] >= 500
    cent = gdf.geometry.centroid.to_crs("EPSG:4326")
    gdf["lon"], gdf["lat"] = cent.x.to_numpy(), cent.y.to_numpy()
    gdf["mosaic"] = "mosaic.tif"
    gdf["model_version"] = "test-0"
    if review is not None:
        gdf["review"] = [review.get(int(p), "") for p in gdf["plot_id"]]
    return gdf[
        [
            "plot_id",
            "area_m2",
            "area_mu",
            "prob_mean",
            "prob_max",
            "est_plants",
            "over_500_plants",
            "lon",
            "lat",
            "mosaic",
            "model_version",
            *(["review"] if review is not None else []),
            "geometry",
        ]
    ]


def make_run(
    run_dir: Path,
    *,
    n: int | None = None,
    review: dict[int, str] | None = None,
    mosaic_elsewhere: Path | None = None,
) -> Path:
    """Write a detect-like run directory and return it."""
    run_dir = Path(run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    ox, oy = origin_xy()
    transform = from_origin(ox, oy, GSD, GSD)
    rng = np.random.default_rng(0)
    img = np.empty((3, SIZE, SIZE), np.uint8)
    img[0] = 70 + rng.integers(0, 30, (SIZE, SIZE))
    img[1] = 120 + rng.integers(0, 40, (SIZE, SIZE))
    img[2] = 60 + rng.integers(0, 30, (SIZE, SIZE))
    mosaic = (mosaic_elsewhere or run_dir) / "mosaic.tif"
    mosaic.parent.mkdir(parents=True, exist_ok=True)
    with rasterio.open(
        mosaic,
        "w",
        driver="GTiff",
        width=SIZE,
        height=SIZE,
        count=3,
        dtype="uint8",
        crs=CRS,
        transform=transform,
        photometric="RGB",
        tiled=True,
        blockxsize=256,
        blockysize=256,
    ) as dst:
        dst.write(img)
    prob = np.full((SIZE // 4, SIZE // 4), 10, np.uint8)
    prob[:5, :] = 255
    with rasterio.open(
        run_dir / "probability.tif",
        "w",
        driver="GTiff",
        width=SIZE // 4,
        height=SIZE // 4,
        count=1,
        dtype="uint8",
        crs=CRS,
        transform=from_origin(ox, oy, GSD * 4, GSD * 4),
        nodata=255,
    ) as dst:
        dst.write(prob, 1)
    plots = make_plots(n, review)
    pyogrio.write_dataframe(
        plots, run_dir / "plots.gpkg", layer="plots", driver="GPKG", promote_to_multi=True
    )
    run = {
        "poppyscan_version": "0.1.0",
        "created": CREATED,
        "crs": CRS,
        "inputs": [
            {
                "path": str(mosaic.resolve()),
                "crs": CRS,
                "gsd_m": GSD,
                "width": SIZE,
                "height": SIZE,
                "bounds": [ox, oy - SIZE * GSD, ox + SIZE * GSD, oy],
            }
        ],
        "model": {"path": "models/test", "version": "test-0", "gsd_m": GSD},
        "config": {},
        "counts": {"plots": len(plots)},
        "timings": {},
    }
    (run_dir / "run.json").write_text(json.dumps(run, indent=2), encoding="utf-8")
    return run_dir


VILLAGES = [
    # (county, township, village, village_code, (x0, y0, x1, y1) metres from the top-left, y south)
    ("勐海县", "勐遮镇", "曼燕村", "532822101201", (-20, -20, 40, 100)),
    ("勐海县", "勐遮镇", "曼弄村", "532822101202", (40, 12, 100, 100)),
]


def make_boundaries(path: Path, crs: str = "EPSG:4547", *, fields=("county", "township", "village"),
                    villages=VILLAGES) -> Path:
    """Two village polygons (plot 6 in the north-east strip falls outside both), written in ``crs``;
    ``villages`` rows as :data:`VILLAGES`."""
    ox, oy = origin_xy()
    rows = {f: [] for f in fields}
    rows["village_code"] = []
    geoms = []
    for county, town, village, code, (x0, y0, x1, y1) in villages:
        for f, v in zip(("county", "township", "village"), (county, town, village), strict=True):
            if f in rows:
                rows[f].append(v)
        rows["village_code"].append(code)
        geoms.append(box(ox + x0, oy - y1, ox + x1, oy - y0).segmentize(5))
    gdf = gpd.GeoDataFrame(rows, geometry=geoms, crs=CRS).to_crs(crs)
    pyogrio.write_dataframe(gdf, path, driver="GPKG" if str(path).endswith(".gpkg") else None)
    return Path(path)


def flipped_copy(src_path: Path, dst_path: Path, *, cols: bool = False) -> Path:
    """Write ``dst_path``: the raster ``src_path`` (north-up) stored south-up, i.e. its rows in reverse
    order under a transform with a positive y pixel size (``Affine(a, 0, c, 0, +|e|, bottom)``); with
    ``cols`` its columns run east to west as well (negative x pixel size). Same ground, same pixels."""
    from affine import Affine

    with rasterio.open(src_path) as src:
        t = src.transform
        assert t.b == t.d == 0 and t.a > 0 and t.e < 0, "flipped_copy expects a north-up raster"
        a, c = (-t.a, t.c + t.a * src.width) if cols else (t.a, t.c)
        profile = src.profile.copy()
        profile.update(transform=Affine(a, 0, c, 0, -t.e, t.f + t.e * src.height))
        data = src.read()[:, ::-1, ::-1] if cols else src.read()[:, ::-1, :]
        with rasterio.open(dst_path, "w", **profile) as dst:
            dst.write(data)
            dst.colorinterp = src.colorinterp
    return Path(dst_path)
