"""Test helpers for the detect pipeline: small painted GeoTIFF scenes and a colour "model".

The :class:`ColourPredictor` stands in for the network in *geometry* tests: it calls a pixel poppy
when it is strongly magenta, which only the painted plots are. It lives here, never in the package.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import rasterio
import shapely
from affine import Affine
from rasterio.crs import CRS
from rasterio.features import rasterize
from shapely.geometry import Polygon, box

MAGENTA = (230, 20, 210)

# a place inside each CRS's area of use (origin = top-left corner)
ORIGINS = {
    "EPSG:32649": (400000.0, 2800000.0),  # UTM 49N, ~25.3 N 112.0 E
    "EPSG:4547": (400000.0, 2800000.0),  # CGCS2000 / 3-degree Gauss-Kruger CM 114E
    "EPSG:4326": (113.500, 25.300),
}


def colour_meta(**changes) -> SimpleNamespace:
    meta = dict(name="colour-test", version="test-colour", arch="colour", gsd_m=0.05, tile_size=128,
                overlap=0.25, threshold=0.5)
    meta.update(changes)
    return SimpleNamespace(**meta)


class ColourPredictor:
    """``uint8 (N, H, W, 3) -> float32 (N, H, W)``: probability of "magenta" (smooth at the edges)."""

    device = "cpu"

    def __init__(self, **meta) -> None:
        self.meta = colour_meta(**meta)
        self.calls = 0

    def __call__(self, batch: np.ndarray) -> np.ndarray:
        assert batch.dtype == np.uint8 and batch.ndim == 4 and batch.shape[-1] == 3
        self.calls += 1
        x = batch.astype(np.float32)
        score = (x[..., 0] + x[..., 2]) / 2 - x[..., 1]
        return np.clip((score - 60) / 100, 0, 1).astype(np.float32)


@dataclass
class Scene:
    path: Path
    transform: Affine
    crs: str
    plots_px: list[Polygon]  # painted plots, native pixel coordinates

    def plots_crs(self) -> list[Polygon]:
        a, b, c, d, e, f = self.transform[:6]
        return [shapely.transform(p, lambda xy: xy @ np.array([[a, d], [b, e]]) + np.array([c, f]))
                for p in self.plots_px]


def pixel_size_deg(gsd_m: float, lat: float) -> tuple[float, float]:
    """Degrees per pixel (x, y) for ``gsd_m`` metres at latitude ``lat`` (WGS84)."""
    from pyproj import Geod

    geod = Geod(ellps="WGS84")
    d = 1e-4
    _, _, mx = geod.inv(0, lat, d, lat)
    _, _, my = geod.inv(0, lat - d / 2, 0, lat + d / 2)
    return gsd_m * d / mx, gsd_m * d / my


def write_scene(path: Path, *, plots_px: list[Polygon], size: tuple[int, int] = (600, 600),
                crs: str = "EPSG:32649", gsd: float = 0.05, origin: tuple[float, float] | None = None,
                mask: str = "none", footprint_px: Polygon | None = None, dtype: str = "uint8",
                seed: int = 0, paint_outside: list[Polygon] | None = None) -> Scene:
    """Write a ``height x width`` RGB(A) GeoTIFF with magenta ``plots_px`` on a green-brown texture.

    ``mask``: "none" | "alpha" | "nodata" (0) | "black" (outside ``footprint_px`` painted 0, no mask info).
    ``paint_outside``: more magenta plots painted *before* masking (so they lie in nodata).
    """
    height, width = size
    rng = np.random.default_rng(seed)
    img = np.empty((3, height, width), np.uint8)
    img[0] = rng.integers(60, 120, (height, width))
    img[1] = rng.integers(90, 150, (height, width))
    img[2] = rng.integers(40, 90, (height, width))
    shapes = [(p, 1) for p in list(plots_px) + list(paint_outside or [])]
    if shapes:
        painted = rasterize(shapes, out_shape=(height, width), dtype=np.uint8).astype(bool)
        for band, v in enumerate(MAGENTA):
            img[band][painted] = v
    foot = footprint_px if footprint_px is not None else box(0, 0, width, height)
    valid = rasterize([(foot, 1)], out_shape=(height, width), dtype=np.uint8).astype(bool)
    ox, oy = origin or ORIGINS[crs]
    if CRS.from_user_input(crs).is_geographic:
        dx, dy = pixel_size_deg(gsd, oy)
    else:
        dx = dy = gsd
    transform = Affine(dx, 0, ox, 0, -dy, oy)
    profile = dict(driver="GTiff", width=width, height=height, crs=crs, transform=transform, tiled=True,
                   blockxsize=256, blockysize=256, compress="deflate")
    data = img.astype(dtype)
    if dtype == "uint16":
        data = img.astype(np.uint16) * 16 + 7  # 12-bit style values
    if mask == "alpha":
        alpha = np.where(valid, np.iinfo(data.dtype).max if dtype == "uint8" else 255, 0).astype(data.dtype)
        data = np.concatenate([data, alpha[None]])
        profile.update(count=4, photometric="RGB", alpha="YES")
    else:
        profile.update(count=3, photometric="RGB")
    if mask in ("nodata", "black"):
        data[:, ~valid] = 0
    if mask == "nodata":
        profile["nodata"] = 0
    profile["dtype"] = data.dtype.name
    with rasterio.open(path, "w", **profile) as ds:
        ds.write(data)
    return Scene(Path(path), transform, crs, list(plots_px))
