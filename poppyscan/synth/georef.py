"""Georeferencing and file output: :func:`render_scene` writes ``mosaic.tif`` and ``truth.gpkg``."""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from ..errors import ConfigError
from ..fsutil import atomic_path, check_writable
from .scene import SceneArrays, render_arrays

MASK_MODES = ("alpha", "nodata", "none")
DEFAULT_CENTER = (114.5, 36.6)  # Handan area, Hebei: North China plain


@dataclass(frozen=True)
class SceneInfo:
    """What :func:`render_scene` wrote."""

    mosaic: Path
    truth: Path
    crs: str
    transform: tuple  # affine coefficients (a, b, c, d, e, f)
    size: int
    gsd: float
    mask_mode: str
    seed: int
    n_plots: int
    plot_area_m2: float
    n_confusers: int
    scene_kind: str
    meta: dict = field(default_factory=dict, compare=False)


def parse_crs(crs: str):
    """A :class:`pyproj.CRS` from user text, or :class:`ConfigError` naming the option."""
    from pyproj import CRS
    from pyproj.exceptions import CRSError

    try:
        return CRS.from_user_input(crs)
    except (CRSError, TypeError, ValueError) as exc:
        raise ConfigError(
            f"'crs' (--crs) could not be parsed ({crs!r}): give an EPSG code such as EPSG:32649"
        ) from exc


def scene_transform(crs, size: int, gsd: float, center_lonlat=DEFAULT_CENTER):
    """North-up affine transform of a ``size``² scene centred on ``center_lonlat``, ground pixel ``gsd`` m.

    Geographic CRSs get a pixel size in degrees that is ``gsd`` metres on the ground at the centre
    latitude in both directions (computed on the CRS's ellipsoid).
    """
    from affine import Affine
    from pyproj import CRS, Geod, Transformer

    crs = crs if isinstance(crs, CRS) else parse_crs(crs)
    lon, lat = center_lonlat
    if crs.is_geographic:
        geod = (
            Geod(ellps="WGS84")
            if crs.ellipsoid is None
            else Geod(a=crs.ellipsoid.semi_major_metre, rf=crs.ellipsoid.inverse_flattening)
        )
        e_lon, _, _ = geod.fwd(lon, lat, 90.0, gsd)
        _, n_lat, _ = geod.fwd(lon, lat, 0.0, gsd)
        dx, dy = abs(e_lon - lon), abs(n_lat - lat)
        tr = Transformer.from_crs("EPSG:4326", crs, always_xy=True)
        cx, cy = tr.transform(lon, lat)
    else:
        tr = Transformer.from_crs("EPSG:4326", crs, always_xy=True)
        cx, cy = tr.transform(lon, lat)
        if not (math.isfinite(cx) and math.isfinite(cy)):
            raise ConfigError(
                f"'crs' {crs.to_string()} cannot represent the scene centre {center_lonlat}: "
                "choose a CRS covering it"
            )
        unit = crs.axis_info[0].unit_conversion_factor if crs.axis_info else 1.0
        dx = dy = gsd / (unit or 1.0)
    x0, y0 = cx - dx * size / 2, cy + dy * size / 2
    return Affine(dx, 0.0, x0, 0.0, -dy, y0)


def validate(size: int, gsd: float, mask_mode: str) -> None:
    if not isinstance(size, (int, np.integer)) or not 64 <= int(size) <= 20000:
        raise ConfigError(
            f"'size' (--size) must be an integer in [64, 20000] pixels, got {size!r}: choose e.g. --size 1024"
        )
    if not (isinstance(gsd, (int, float)) and math.isfinite(gsd) and 0.005 <= gsd <= 0.5):
        raise ConfigError(
            f"'gsd' (--gsd) must be in [0.005, 0.5] metres per pixel, got {gsd!r}: surveys use ~0.02-0.055"
        )
    if mask_mode not in MASK_MODES:
        raise ConfigError(f"'mask_mode' must be one of {', '.join(MASK_MODES)}, got {mask_mode!r}")


def render_scene(
    outdir,
    *,
    seed: int,
    size: int = 1024,
    gsd: float = 0.04,
    crs: str = "EPSG:32649",
    mask_mode: str = "alpha",
    poppy: bool = True,
    overwrite: bool = False,
    center_lonlat=DEFAULT_CENTER,
    compress: str = "deflate",
    footprint: bool = True,
    landscape: str = "farmland",
) -> SceneInfo:
    """Render a scene and write ``outdir/mosaic.tif`` and ``outdir/truth.gpkg``.

    Args:
        outdir: output directory (created).
        seed: random seed; the same arguments give the same files.
        size: width and height in pixels (64..20000).
        gsd: ground pixel size in metres (0.005..0.5).
        crs: any CRS pyproj parses; geographic CRSs get degree pixels matching ``gsd`` at the centre latitude.
        mask_mode: ``"alpha"`` (RGBA, alpha 0 outside the footprint), ``"nodata"`` (RGB, nodata=0) or
            ``"none"`` (RGB with black margins and no mask, as some exports come).
        poppy: False renders a scene with no poppy (false-alarm measurement); ``plots`` is then empty.
        overwrite: replace existing outputs; otherwise :class:`OutputExistsError`.
        center_lonlat: scene centre, WGS84 lon/lat.
        compress: ``"deflate"`` (lossless, any mask mode) or ``"jpeg"`` (YCbCr JPEG-in-GeoTIFF, quality 90;
            alpha mode then stores the footprint as an internal mask band, nodata mode is refused).
        footprint: False makes the whole frame valid.
        landscape: ``"farmland"`` or ``"wild"`` (poppy-free meadow, shrubland and forest edge).

    Returns:
        :class:`SceneInfo` with paths and a summary.
    """
    validate(size, gsd, mask_mode)
    if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)) or seed < 0:
        raise ConfigError(f"'seed' (--seed) must be a whole number >= 0, got {seed!r}: choose e.g. --seed 7")
    if landscape not in ("farmland", "wild"):
        raise ConfigError(f"'landscape' must be 'farmland' or 'wild', got {landscape!r}")
    if compress not in ("deflate", "jpeg"):
        raise ConfigError(f"'compress' must be 'deflate' or 'jpeg', got {compress!r}")
    if compress == "jpeg" and mask_mode == "nodata":
        raise ConfigError(
            "'compress' jpeg is lossy and would corrupt nodata=0: use mask_mode alpha or compress deflate"
        )
    crs_obj = parse_crs(crs)
    outdir = Path(outdir)
    mosaic, truth = outdir / "mosaic.tif", outdir / "truth.gpkg"
    check_writable(mosaic, overwrite)
    check_writable(truth, overwrite)
    transform = scene_transform(crs_obj, int(size), float(gsd), center_lonlat)
    scene = render_arrays(int(seed), int(size), float(gsd), poppy=poppy, footprint=footprint,
                          landscape=landscape)
    outdir.mkdir(parents=True, exist_ok=True)
    with atomic_path(mosaic, overwrite) as tmp:
        write_mosaic(tmp, scene, crs_obj, transform, mask_mode, compress)
    with atomic_path(truth, overwrite) as tmp:
        write_truth(tmp, scene, crs_obj, transform)
    return SceneInfo(
        mosaic=mosaic,
        truth=truth,
        crs=crs_obj.to_string(),
        transform=tuple(transform)[:6],
        size=int(size),
        gsd=float(gsd),
        mask_mode=mask_mode,
        seed=int(seed),
        n_plots=len(scene.plots),
        plot_area_m2=float(sum(p["area_m2"] for p in scene.plots)),
        n_confusers=len(scene.confusers),
        scene_kind=scene.meta["scene_kind"],
        meta=scene.meta,
    )


def write_mosaic(path, scene: SceneArrays, crs, transform, mask_mode: str, compress: str = "deflate") -> None:
    import rasterio

    h, w = scene.rgb.shape[:2]
    profile = {
        "driver": "GTiff",
        "width": w,
        "height": h,
        "dtype": "uint8",
        "crs": crs.to_wkt(),
        "transform": transform,
        "tiled": True,
        "blockxsize": 256,
        "blockysize": 256,
    }
    if compress == "jpeg":
        profile.update(compress="JPEG", photometric="YCBCR", jpeg_quality=90, count=3)
    else:
        profile.update(compress="DEFLATE", predictor=2, zlevel=6, count=3)
    if mask_mode == "alpha" and compress != "jpeg":
        profile.update(count=4)
        profile["photometric"] = "RGB"
    if mask_mode == "nodata":
        profile["nodata"] = 0
    with rasterio.Env(GDAL_TIFF_INTERNAL_MASK=True):
        with rasterio.open(path, "w", **profile) as dst:
            dst.write(np.moveaxis(scene.rgb, -1, 0), indexes=[1, 2, 3])
            if mask_mode == "alpha":
                a = (scene.valid * 255).astype(np.uint8)
                if compress == "jpeg":
                    dst.write_mask(a)
                else:
                    from rasterio.enums import ColorInterp

                    dst.write(a, 4)
                    dst.colorinterp = [
                        ColorInterp.red,
                        ColorInterp.green,
                        ColorInterp.blue,
                        ColorInterp.alpha,
                    ]
            dst.update_tags(
                POPPYSCAN_SYNTH_SEED=str(scene.meta["seed"]),
                POPPYSCAN_GSD_M=str(scene.meta["gsd"]),
                POPPYSCAN_SCENE=scene.meta["scene_kind"],
            )


def write_truth(path, scene: SceneArrays, crs, transform) -> None:
    import geopandas as gpd
    from shapely import affinity

    coeffs = [transform.a, transform.b, transform.d, transform.e, transform.c, transform.f]
    plots = gpd.GeoDataFrame(
        {
            "plot_id": np.arange(1, len(scene.plots) + 1, dtype=np.int64),
            "stage": [p["stage"] for p in scene.plots],
            "flower_colour": [p["flower_colour"] for p in scene.plots],
            "setting": [p["setting"] for p in scene.plots],
            "area_m2": np.array([p["area_m2"] for p in scene.plots], dtype=float),
        },
        geometry=[affinity.affine_transform(p["polygon"], coeffs) for p in scene.plots],
        crs=crs.to_wkt(),
    )
    conf = gpd.GeoDataFrame(
        {"kind": [c["kind"] for c in scene.confusers]},
        geometry=[_multi(affinity.affine_transform(c["polygon"], coeffs)) for c in scene.confusers],
        crs=crs.to_wkt(),
    )
    fp = gpd.GeoDataFrame(
        {"kind": ["footprint"]},
        geometry=[affinity.affine_transform(scene.footprint, coeffs)],
        crs=crs.to_wkt(),
    )
    if crs.to_epsg() is not None:  # keep the EPSG code in the GeoPackage
        for g in (plots, conf, fp):
            g.set_crs(f"EPSG:{crs.to_epsg()}", allow_override=True, inplace=True)
    plots.to_file(path, layer="plots", driver="GPKG", engine="pyogrio", geometry_type="Polygon")
    conf.to_file(path, layer="confusers", driver="GPKG", engine="pyogrio", geometry_type="MultiPolygon")
    fp.to_file(path, layer="footprint", driver="GPKG", engine="pyogrio", geometry_type="Polygon")


def _multi(g):
    """Polygonal part of ``g`` as a MultiPolygon (intersections may return collections)."""
    from shapely.geometry import MultiPolygon, Polygon

    if isinstance(g, Polygon):
        return MultiPolygon([g])
    if isinstance(g, MultiPolygon):
        return g
    return MultiPolygon([p for p in getattr(g, "geoms", []) if isinstance(p, Polygon)])
