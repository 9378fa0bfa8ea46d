"""Tiny hand-made scenes (real GeoTIFF + GeoPackage) for the model/train/evaluate tests."""

from __future__ import annotations

from pathlib import Path

import numpy as np


def make_scene(
    outdir: Path,
    *,
    seed: int = 0,
    size: int = 160,
    gsd: float = 0.04,
    n_plots: int = 3,
    crs: str = "EPSG:32649",
    alpha: bool = True,
    confusers: int = 1,
) -> tuple[Path, Path, list]:
    """Write ``outdir/mosaic.tif`` (RGBA, alpha 0 in a left margin) and ``outdir/truth.gpkg``.

    Poppy plots are pale blue-green squares with red dots; confusers are bright-green squares.
    Returns (mosaic, truth, plot polygons).
    """
    import geopandas as gpd
    import rasterio
    from rasterio.transform import from_origin
    from shapely.geometry import box

    rng = np.random.default_rng(seed)
    outdir.mkdir(parents=True, exist_ok=True)
    img = np.empty((size, size, 3), np.uint8)
    img[...] = (110, 90, 60)
    img = np.clip(img + rng.normal(0, 12, img.shape), 0, 255).astype(np.uint8)
    x0, y0 = 500000.0, 3000000.0
    transform = from_origin(x0, y0, gsd, gsd)
    plots, confs = [], []
    taken = np.zeros((size, size), bool)
    taken[:, :16] = True

    def place(k: int) -> tuple[int, int, int] | None:
        for _ in range(50):
            s = int(rng.integers(k, 2 * k))
            r, c = int(rng.integers(0, size - s)), int(rng.integers(16, size - s))
            if not taken[max(0, r - 4) : r + s + 4, max(0, c - 4) : c + s + 4].any():
                taken[r : r + s, c : c + s] = True
                return r, c, s
        return None

    for _ in range(n_plots):
        p = place(18)
        if p is None:
            continue
        r, c, s = p
        img[r : r + s, c : c + s] = (120, 170, 160)
        dots = rng.random((s, s)) < 0.12
        img[r : r + s, c : c + s][dots] = (220, 30, 40)
        plots.append(box(x0 + c * gsd, y0 - (r + s) * gsd, x0 + (c + s) * gsd, y0 - r * gsd))
    for _ in range(confusers):
        p = place(14)
        if p is None:
            continue
        r, c, s = p
        img[r : r + s, c : c + s] = (60, 200, 40)
        confs.append(box(x0 + c * gsd, y0 - (r + s) * gsd, x0 + (c + s) * gsd, y0 - r * gsd))
    mosaic = outdir / "mosaic.tif"
    count = 4 if alpha else 3
    with rasterio.open(
        mosaic,
        "w",
        driver="GTiff",
        width=size,
        height=size,
        count=count,
        dtype="uint8",
        crs=crs,
        transform=transform,
        photometric="RGB",
    ) as ds:
        ds.write(img.transpose(2, 0, 1), [1, 2, 3])
        if alpha:
            a = np.full((size, size), 255, np.uint8)
            a[:, :8] = 0
            ds.write(a, 4)
            ds.colorinterp = [
                rasterio.enums.ColorInterp.red,
                rasterio.enums.ColorInterp.green,
                rasterio.enums.ColorInterp.blue,
                rasterio.enums.ColorInterp.alpha,
            ]
    truth = outdir / "truth.gpkg"
    gpd.GeoDataFrame({"plot_id": list(range(1, len(plots) + 1))}, geometry=plots, crs=crs).to_file(
        truth, layer="plots"
    )
    gpd.GeoDataFrame({"kind": ["flowerbed"] * len(confs)}, geometry=confs, crs=crs).to_file(
        truth, layer="confusers"
    )
    return mosaic, truth, plots
