"""Open an orthomosaic and read it, strip by strip, resampled to the model's ground sample distance.

Accepted: anything GDAL opens as a raster (GeoTIFF, COG, VRT, ...) with a CRS and a geotransform,
3 or more bands (RGB by colour interpretation, else bands 1-3), ``uint8`` or ``uint16``.

- **Pixel size in metres.** Projected CRS: the pixel size times the CRS's linear unit. Geographic CRS
  (EPSG:4326, CGCS2000 EPSG:4490, ...): the ground size of one pixel at the mosaic's centre latitude on
  the CRS's ellipsoid, separately east-west and north-south.
- **uint16.** One linear scale for all three bands (colour balance is kept): values are divided by
  ``p / 255`` where ``p`` is the 99.9th percentile of the valid RGB values in a sample of windows spread
  over the mosaic; data already within 0-255 (8-bit stored as 16-bit) is used as is.
- **Valid-data mask**, first that applies: an alpha band (``>= half`` of full opacity); GDAL's
  per-dataset mask (internal ``.msk``/JPEG-in-TIFF masks); the nodata value (a pixel is valid when any
  RGB band differs from it, GDAL's rule); otherwise, when the mosaic's outer border contains pure
  black pixels, *black margins*: black (0, 0, 0) areas at least 5x5 px are invalid (isolated black
  pixels, e.g. deep shadow, stay valid); otherwise everything is valid.
- **Resampling.** Reads go through GDAL's RasterIO with fractional windows and ``out_shape`` (bilinear
  for colour, nearest for masks), so a model-grid pixel covers exactly ``gsd_m`` of ground; the model
  grid keeps the mosaic's origin and drops a last partial model pixel at the right/bottom edge.
"""

from __future__ import annotations

import logging
import math
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import rasterio
from affine import Affine
from rasterio.enums import ColorInterp, MaskFlags, Resampling
from rasterio.errors import CRSError, NotGeoreferencedWarning, RasterioIOError
from rasterio.windows import Window

from .errors import InputError
from .geo.raster import flips, north_up_transform, ordered_bounds, to_north_up

log = logging.getLogger(__name__)

_SNAP = 1e-6  # relative GSD difference treated as "same GSD" (no resampling)


@dataclass(frozen=True)
class ModelGrid:
    """The mosaic resampled to the model GSD: size, geotransform and native pixels per model pixel."""

    width: int
    height: int
    transform: Affine
    gsd_m: float
    scale: tuple[float, float]  # native px per model px (x, y)

    @property
    def resampled(self) -> bool:
        return self.scale != (1.0, 1.0)


def ground_pixel_size(crs: rasterio.crs.CRS, transform: Affine, width: int,
                      height: int) -> tuple[float, float]:
    """Ground size in metres of one pixel (x, y); geographic CRSs are measured at the raster's centre."""
    px_x = math.hypot(transform.a, transform.d)
    px_y = math.hypot(transform.b, transform.e)
    if crs.is_geographic:
        from pyproj import CRS

        geod = CRS.from_wkt(crs.to_wkt()).get_geod()
        lon, lat = transform @ (width / 2, height / 2)
        if not (-90 < lat < 90):
            raise InputError(f"the raster's centre latitude {lat:.3f} is outside (-90, 90): the "
                             "geotransform is wrong, e.g. metre coordinates labelled EPSG:4326; assign the "
                             "right CRS")
        d = 1e-4
        _, _, m_lon = geod.inv(lon - d / 2, lat, lon + d / 2, lat)
        _, _, m_lat = geod.inv(lon, lat - d / 2, lon, lat + d / 2)
        return px_x * m_lon / d, px_y * m_lat / d
    unit = _metres_per_unit(crs) or 1.0
    return px_x * unit, px_y * unit


def _metres_per_unit(crs: rasterio.crs.CRS) -> float | None:
    """Metres per linear unit of a projected CRS, or None when GDAL cannot tell."""
    try:
        factor = crs.linear_units_factor
    except CRSError:
        return None
    return float(factor[1]) if factor else None


class Mosaic:
    """An open orthomosaic. Use :func:`open_mosaic` (a context manager via ``with``)."""

    def __init__(self, path: Path, ds: rasterio.io.DatasetReader) -> None:
        self.path = path
        self.ds = ds
        self.crs = ds.crs
        self.width, self.height = ds.width, ds.height
        self.transform = ds.transform
        # a south-up (rows run north) or east-to-west raster is read into a north-up model grid
        self.flip_rows, self.flip_cols = flips(ds.transform)
        self.dtype = np.dtype(ds.dtypes[0])
        try:
            self.gsd_xy = ground_pixel_size(ds.crs, ds.transform, ds.width, ds.height)
        except InputError as exc:
            raise InputError(f"mosaic '{path}': {exc}") from None
        interp = list(ds.colorinterp)
        if all(c in interp for c in (ColorInterp.red, ColorInterp.green, ColorInterp.blue)):
            rgb = (ColorInterp.red, ColorInterp.green, ColorInterp.blue)
            self.rgb = tuple(interp.index(c) + 1 for c in rgb)
        else:
            self.rgb = (1, 2, 3)
        self.alpha = interp.index(ColorInterp.alpha) + 1 if ColorInterp.alpha in interp else None
        if (self.alpha is None and ds.count == 4 and interp[3] == ColorInterp.undefined
                and self.rgb == (1, 2, 3)):
            values = np.unique(self._sample([4]))
            if set(values.tolist()) <= {0, 255, 65535} and values.max(initial=0) > 0:
                self.alpha = 4  # RGBA written without the alpha flag (ExtraSamples): 0/255 values only
                log.info("%s: band 4 has only 0/full values; using it as alpha", path)
        flags = ds.mask_flag_enums[self.rgb[0] - 1]
        self.nodata = ds.nodata
        if self.alpha is not None:
            self.mask_kind = "alpha"
        elif MaskFlags.per_dataset in flags and MaskFlags.nodata not in flags:
            self.mask_kind = "internal"
        elif self.nodata is not None:
            self.mask_kind = "nodata"
        else:
            self.mask_kind = "black" if self._border_has_black() else "none"
        self.value_scale = self._uint16_scale() if self.dtype == np.uint16 else 1.0
        self.alpha_full = 255.0
        if self.alpha is not None and self.dtype == np.uint16:
            self.alpha_full = 65535.0 if self._sample(indexes=[self.alpha]).max(initial=0) > 255 else 255.0

    # -- opening checks ---------------------------------------------------------------------------
    def _sample(self, indexes: list[int], n: int = 6, size: int = 64) -> np.ndarray:
        """Values of ``indexes`` in up to ``n x n`` small windows spread over the mosaic, (bands, k)."""
        out = []
        for fy in np.linspace(0.1, 0.9, n):
            for fx in np.linspace(0.1, 0.9, n):
                w = Window(int(fx * max(self.width - size, 0)), int(fy * max(self.height - size, 0)),
                           min(size, self.width), min(size, self.height))
                out.append(self.ds.read(indexes, window=w).reshape(len(indexes), -1))
        return np.concatenate(out, axis=1)

    def _border_has_black(self, n: int = 12, size: int = 256) -> bool:
        """True when >= 0.5 % of sampled outer-border pixels are pure black in all RGB bands.

        Samples ``n`` short runs of ``size`` px along each edge (a few blocks decoded, not the whole
        border: a full border column of a tall mosaic would decode a whole column of blocks).
        """
        w, h = self.width, self.height
        runs = []
        for f in np.linspace(0, 1, n):
            x = int(f * max(w - size, 0))
            y = int(f * max(h - size, 0))
            runs += [Window(x, 0, min(size, w), 1), Window(x, h - 1, min(size, w), 1),
                     Window(0, y, 1, min(size, h)), Window(w - 1, y, 1, min(size, h))]
        border = np.concatenate([self.ds.read(list(self.rgb), window=r).reshape(3, -1) for r in runs], axis=1)
        return bool((border == 0).all(axis=0).mean() >= 0.005)

    def _uint16_scale(self) -> float:
        values = self._sample(list(self.rgb))
        values = values[:, values.any(axis=0)]
        if values.size == 0:
            return 1.0
        p = float(np.percentile(values, 99.9))
        return 1.0 if p <= 255 else 255.0 / p

    # -- grid and reads ---------------------------------------------------------------------------
    @property
    def gsd_m(self) -> float:
        """Mean ground pixel size in metres."""
        return float(sum(self.gsd_xy) / 2)

    def grid(self, gsd_m: float) -> ModelGrid:
        """The model grid at ``gsd_m`` metres per pixel over this mosaic."""
        sx, sy = gsd_m / self.gsd_xy[0], gsd_m / self.gsd_xy[1]
        if abs(sx - 1) < _SNAP and abs(sy - 1) < _SNAP:
            sx = sy = 1.0
        width = int(math.floor(self.width / sx + 1e-6))
        height = int(math.floor(self.height / sy + 1e-6))
        if width < 1 or height < 1:
            raise InputError(f"mosaic '{self.path}' is smaller than one model pixel ({gsd_m} m); "
                             "it cannot be analysed")
        transform = north_up_transform(self.transform, self.width, self.height) @ Affine.scale(sx, sy)
        return ModelGrid(width, height, transform, gsd_m, (sx, sy))

    def read_strip(self, grid: ModelGrid, row: int, nrows: int, *,
                   reuse: bool = False) -> tuple[np.ndarray, np.ndarray]:
        """Read model-grid rows ``[row, row + nrows)`` over the full width.

        Returns ``rgb`` uint8 ``(nrows, grid.width, 3)``, pixel-interleaved as the network takes it
        (invalid pixels set to 0), and ``valid`` bool ``(nrows, grid.width)``. With ``reuse`` the
        arrays are buffers owned by the mosaic, overwritten by the next ``reuse`` read (no fresh
        allocation and page faults per strip); ``valid`` is then read-only.
        """
        return self.read_window(grid, row, 0, nrows, grid.width, reuse=reuse)

    def read_window(self, grid: ModelGrid, row: int, col: int, nrows: int, ncols: int, *,
                    reuse: bool = False) -> tuple[np.ndarray, np.ndarray]:
        """Read the model-grid window of ``nrows x ncols`` pixels at ``(row, col)``, as
        :meth:`read_strip` reads rows (``rgb`` uint8 ``(nrows, ncols, 3)``, ``valid`` bool)."""
        sx, sy = grid.scale
        shape = (nrows, ncols)
        c0 = self.width - (col + ncols) * sx if self.flip_cols else col * sx  # stored order -> north-up
        r0 = self.height - (row + nrows) * sy if self.flip_rows else row * sy
        if grid.resampled:
            window = Window(c0, r0, ncols * sx, nrows * sy)
        else:
            window = Window(round(c0), round(r0), ncols, nrows)
        indexes = list(self.rgb) + ([self.alpha] if self.alpha is not None else [])
        buf = self._buffers(len(indexes), shape) if reuse else None
        try:
            if buf is None:
                data = self.ds.read(indexes, window=window, out_shape=(len(indexes), *shape),
                                    resampling=Resampling.bilinear)
            else:
                data = self.ds.read(indexes, window=window, out=buf["data"], resampling=Resampling.bilinear)
            mask = (self.ds.read_masks(self.rgb[0], window=window, out_shape=shape,
                                       resampling=Resampling.nearest)
                    if self.mask_kind == "internal" else None)
            if self.flip_rows or self.flip_cols:  # the stored rows/columns back in north-up order
                data = to_north_up(data, self.transform)
                mask = None if mask is None else to_north_up(mask, self.transform)
        except rasterio.errors.RasterioIOError as exc:
            where = f"pixel row {int(window.row_off)}, column {int(window.col_off)}"
            raise InputError(f"mosaic '{self.path}' cannot be read near {where} ({exc}): the file is damaged "
                             "or incomplete (a truncated copy, or a VRT whose source is gone); copy or "
                             "export it again") from exc
        if self.mask_kind == "alpha":
            valid = data[3] >= self.alpha_full / 2
        elif self.mask_kind == "internal":
            valid = mask > 0
        elif self.mask_kind == "nodata":
            valid = (data[:3] != self.nodata).any(axis=0)
        elif self.mask_kind == "black":
            black = (~data[:3].any(axis=0)).view(np.uint8)
            black = cv2.morphologyEx(black, cv2.MORPH_OPEN, np.ones((5, 5), np.uint8))
            valid = black == 0
        else:
            valid = buf["valid"] if buf is not None else np.ones(shape, bool)
        bands = [data[i] for i in range(3)]
        if self.dtype == np.uint16:  # x * scale, rounded and saturated to uint8
            bands = [cv2.convertScaleAbs(b, alpha=self.value_scale) for b in bands]
        # (rows, cols, 3): one SIMD pass instead of a strided transpose per tile
        rgb = cv2.merge(bands) if buf is None else cv2.merge(bands, dst=buf["rgb"])
        if self.mask_kind != "none" and not valid.all():
            rgb[~valid] = 0  # what the network sees outside the footprint is black
        return rgb, valid

    def _buffers(self, bands: int, shape: tuple[int, int]) -> dict[str, np.ndarray]:
        if getattr(self, "_buf", None) is None or self._buf["data"].shape != (bands, *shape):
            valid = np.ones(shape, bool)
            valid.setflags(write=False)
            self._buf = {"data": np.empty((bands, *shape), self.dtype), "valid": valid,
                         "rgb": np.empty((*shape, 3), np.uint8)}
        return self._buf

    def overview_hint(self, model_gsd_m: float) -> str | None:
        """Advice when this mosaic is >= 2x finer than the model and has no overviews, else ``None``.

        Reading resamples every source pixel then (a 2 cm mosaic for a 4 cm model decodes 4x the pixels);
        with a 2x overview GDAL reads the overview instead. Measured on a 6144 px, 2 cm DEFLATE mosaic:
        0.72 s of CPU to read it at 4 cm, 0.14 s once ``gdaladdo -r average`` had built overviews.
        """
        factor = model_gsd_m / self.gsd_m
        # GDAL reads an overview only if its pixels are at least as fine as the read: a 2x level helps
        # from factor 2 on (a 2 cm mosaic read at 3.5 cm decodes its full resolution, overviews or not)
        if factor < 2 - 1e-6 or self.ds.overviews(self.rgb[0]):
            return None
        return (f"{self.path.name} is {100 * self.gsd_m:.1f} cm/px without overviews: reading it at "
                f"{100 * model_gsd_m:g} cm decodes {factor**2:.0f}x the pixels; `gdaladdo -r average "
                f"{self.path} 2 4` once makes reading it several times cheaper")

    def describe(self, grid: ModelGrid | None = None) -> dict[str, Any]:
        """Plain-data description for ``run.json``."""
        crs = self.crs
        epsg = crs.to_epsg()
        out: dict[str, Any] = {
            "path": str(self.path.resolve()),
            "crs": f"EPSG:{epsg}" if epsg else crs.to_wkt(),
            "gsd_m": round(self.gsd_m, 6),
            "width": self.width,
            "height": self.height,
            "bounds": list(ordered_bounds(*self.ds.bounds)),
            "dtype": str(self.dtype),
            "mask": self.mask_kind,
        }
        if self.dtype == np.uint16:
            out["value_scale"] = self.value_scale
        if grid is not None:
            out["model_grid"] = {"width": grid.width, "height": grid.height, "gsd_m": grid.gsd_m}
        return out

    def close(self) -> None:
        self.ds.close()

    def __enter__(self) -> Mosaic:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def block_cache(mb: int) -> rasterio.Env:
    """A rasterio environment whose GDAL block cache holds ``mb`` MiB.

    rasterio passes an integer ``GDAL_CACHEMAX`` to ``GDALSetCacheMax64``, which counts *bytes* (GDAL's
    "below 100000 means MB" rule is for the config string only): ``rasterio.Env(GDAL_CACHEMAX=64)`` is a
    64-byte cache, and every source block shared by two tile rows is then decoded twice (measured: 2.3 s
    instead of 1.1 s of CPU to read a 100 Mpx DEFLATE mosaic strip by strip).

    >>> with block_cache(64):
    ...     rasterio.env.get_gdal_config("GDAL_CACHEMAX") == 64 * 2**20
    True
    """
    return rasterio.Env(GDAL_CACHEMAX=int(mb) * 2**20)


def open_mosaic(path: str | Path) -> Mosaic:
    """Open and check a mosaic; raises :class:`~poppyscan.errors.InputError` naming the problem."""
    path = Path(path)
    if not path.exists():
        raise InputError(f"mosaic '{path}' does not exist; check the path")
    if path.is_dir():
        raise InputError(f"mosaic '{path}' is a directory; pass a GeoTIFF/COG/VRT file")
    try:
        with warnings.catch_warnings():  # a plain image: _check says so in one line, not GDAL's warning
            warnings.simplefilter("ignore", NotGeoreferencedWarning)
            ds = rasterio.open(path)
    except RasterioIOError:
        raise InputError(f"mosaic '{path}' is not a raster GDAL can read; "
                         "pass a GeoTIFF, COG or VRT") from None
    try:
        _check(path, ds)
        return Mosaic(path, ds)
    except InputError:
        ds.close()
        raise
    except RasterioIOError as exc:
        ds.close()
        raise InputError(f"mosaic '{path}' cannot be read ({str(exc).splitlines()[0]}); the file may be "
                         "truncated or corrupt") from None


def _check(path: Path, ds: rasterio.io.DatasetReader) -> None:
    if ds.crs is None:
        raise InputError(f"mosaic '{path}' has no CRS; assign one, e.g. gdal_edit.py -a_srs EPSG:32649 "
                         f"'{path}'")
    if ds.transform == Affine.identity():
        raise InputError(f"mosaic '{path}' has no geotransform; georeference it (gdalwarp) first")
    if ds.count < 3:
        what = "1 band (greyscale)" if ds.count == 1 else f"{ds.count} bands"
        raise InputError(f"mosaic '{path}' has {what}; detect needs an RGB mosaic (3 bands, or 4 with alpha)")
    dtype = np.dtype(ds.dtypes[0])
    if len(set(ds.dtypes)) > 1 or dtype not in (np.uint8, np.uint16):
        raise InputError(f"mosaic '{path}' has {dtype} data; detect reads uint8 or uint16 RGB: convert it, "
                         "e.g. gdal_translate -ot Byte -scale")
    if not ds.crs.is_geographic and not _metres_per_unit(ds.crs):
        raise InputError(f"mosaic '{path}' has a CRS without linear units; reproject it to a metric CRS")


# A mosaic is refused when resampling it to the model's GSD would be meaningless or absurdly costly:
# coarser than 4x the model GSD (a 4x upsampling already blurs a poppy rosette into a few pixels; a
# 30 m satellite scene would be upsampled ~750x into gigapixels of mush) or finer than 1/20 of it
# (2 mm/px for a 4 cm model: no survey flies that low, and reading 400 native px per model px wastes
# the run). For the default 0.04 m/px model this accepts 0.002-0.16 m/px, which covers the 1.8-5.5 cm
# survey GSDs with a wide margin.
GSD_MAX_FACTOR = 4.0
GSD_MIN_FACTOR = 1 / 20


def check_gsd(mosaic: Mosaic, model_gsd_m: float) -> None:
    """Raise :class:`InputError` when ``mosaic``'s GSD is far outside the model's (see the bounds above)."""
    lo, hi = model_gsd_m * GSD_MIN_FACTOR, model_gsd_m * GSD_MAX_FACTOR
    gsd = mosaic.gsd_m
    if not lo <= gsd <= hi:
        raise InputError(
            f"mosaic '{mosaic.path}' has a GSD of {gsd:.4g} m/px, outside the {lo:.4g}-{hi:.4g} m/px this "
            f"model supports (trained at {model_gsd_m:g} m/px); pass a drone orthomosaic at that resolution "
            f"(resample with gdalwarp -tr) or a model trained for {gsd:.4g} m/px")

