"""Training data: scenes of (orthomosaic, label polygons), tile sampling at the model GSD, augmentation.

A *scene* is one orthomosaic GeoTIFF (any CRS, RGB uint8, optional alpha/nodata/internal mask) plus an
optional vector file of label polygons. Polygons are *poppy* (positive), *hard negatives* (not poppy:
corn poppy, flowerbeds, ... taught as background and over-sampled), or *ignored* (unknown status:
excluded from the loss). A scene without labels is poppy-free (a negative-only scene).

Tiles are read on demand with rasterio windowed reads resampled to the model GSD (times a random
scale factor, which is the GSD/scale augmentation), so a mosaic of any size costs only its open file
handle. Label polygons are rasterised into each tile; pixels outside the valid-data mask or the raster
get the ignore label :data:`IGNORE`.

A label file may also hold a layer :data:`MINED_LAYER` of *mined* negatives: places where a model made
false plots (``scripts/mine_hard_negatives.py``). They are background like hard negatives, but kept
apart so that :class:`TileSampler` can give them their own share of tiles (``mined_fraction``).
"""

from __future__ import annotations

import csv
import logging
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import rasterio
from rasterio.enums import ColorInterp, Resampling
from rasterio.features import rasterize
from rasterio.windows import Window

from .errors import InputError

log = logging.getLogger(__name__)

IGNORE = 255
POSITIVE_VALUES = {"poppy", "1", "true", "yes", "positive", "opium_poppy"}
NEGATIVE_VALUES = {
    "not_poppy",
    "not poppy",
    "notpoppy",
    "negative",
    "neg",
    "0",
    "false",
    "no",
    "hard_negative",
    "confuser",
}
LABEL_COLUMNS = ("label", "class", "result", "is_poppy")
NEGATIVE_LAYERS = ("confusers", "negatives", "hard_negatives")
MINED_LAYER = "mined_negatives"
MOSAIC_NAMES = ("mosaic.tif", "mosaic.tiff", "ortho.tif", "orthomosaic.tif")
LABEL_NAMES = ("truth.gpkg", "labels.gpkg", "truth.geojson", "labels.geojson", "truth.shp", "labels.shp")


@dataclass
class Scene:
    """One training scene, opened: raster handle, GSD and labels in the raster's CRS."""

    mosaic: Path
    labels: Path | None
    gsd_m: float
    width: int
    height: int
    positives: list = field(default_factory=list)  # shapely polygons, raster CRS
    positive_attrs: list = field(default_factory=list)  # per positive: its label row's other columns
    negatives: list = field(default_factory=list)
    ignored: list = field(default_factory=list)
    mined: list = field(default_factory=list)  # mined false-plot places (background), MINED_LAYER
    _ds: rasterio.DatasetReader | None = None
    _rgb: tuple[int, int, int] = (1, 2, 3)

    @property
    def name(self) -> str:
        return scene_name(self.mosaic)

    @property
    def ds(self) -> rasterio.DatasetReader:
        if self._ds is None or self._ds.closed:
            self._ds = rasterio.open(self.mosaic)
        return self._ds

    def close(self) -> None:
        if self._ds is not None:
            self._ds.close()
            self._ds = None


def scene_name(mosaic: Path) -> str:
    """A scene's name in reports: its directory's for a ``mosaic.tif``-style file, else the file's stem.

    >>> scene_name(Path("runs/scene_7/mosaic.tif")), scene_name(Path("flights/block_a.tif"))
    ('scene_7', 'block_a')
    """
    mosaic = Path(mosaic)
    return mosaic.parent.name if mosaic.name in MOSAIC_NAMES else mosaic.stem


def pixel_size_m(ds: rasterio.DatasetReader) -> float:
    """Mean pixel size in metres; geographic CRSs are converted at the raster's centre latitude."""
    if ds.crs is None:
        raise InputError(f"mosaic '{ds.name}' has no CRS; georeference it (e.g. gdal_edit.py -a_srs) first")
    a, e = abs(ds.transform.a), abs(ds.transform.e)
    if ds.crs.is_geographic:
        lat = math.radians((ds.bounds.top + ds.bounds.bottom) / 2)
        return float((a * 111_320 * math.cos(lat) + e * 110_574) / 2)
    factor = ds.crs.linear_units_factor[1] if ds.crs.linear_units_factor else 1.0
    return float((a + e) / 2 * factor)


def _rgb_bands(ds: rasterio.DatasetReader) -> tuple[int, int, int]:
    ci = list(ds.colorinterp)
    if all(c in ci for c in (ColorInterp.red, ColorInterp.green, ColorInterp.blue)):
        return ci.index(ColorInterp.red) + 1, ci.index(ColorInterp.green) + 1, ci.index(ColorInterp.blue) + 1
    if ds.count < 3:
        raise InputError(
            f"mosaic '{ds.name}' has {ds.count} band(s); an RGB orthomosaic (3 or 4 bands) is needed"
        )
    return 1, 2, 3


def _classify(gdf, path: Path) -> tuple[list, list, list, list]:  # noqa: ANN001
    """``(positives, their attribute dicts, negatives, ignored)`` of one label layer."""
    col = next((c for c in LABEL_COLUMNS if c in gdf.columns), None)
    geoms = [g for g in gdf.geometry]
    attrs = gdf.drop(columns=gdf.geometry.name).to_dict("records")
    keep = [i for i, g in enumerate(geoms) if g is not None and not g.is_empty]
    if col is None:
        return [geoms[i] for i in keep], [attrs[i] for i in keep], [], []
    pos, pos_attrs, neg, ign = [], [], [], []
    for i in keep:
        v = gdf[col].iloc[i]
        key = str(v).strip().lower() if v is not None else ""
        if key in POSITIVE_VALUES:
            pos.append(geoms[i])
            pos_attrs.append(attrs[i])
        else:
            (neg if key in NEGATIVE_VALUES else ign).append(geoms[i])
    if ign:
        log.info("%s: %d polygon(s) with unknown '%s' values are excluded from the loss", path, len(ign), col)
    return pos, pos_attrs, neg, ign


def read_labels(path: Path, crs) -> tuple[list, list, list]:  # noqa: ANN001
    """Read (positives, negatives, ignored) polygons from a vector file, reprojected to ``crs``."""
    pos, _, neg, ign = _read_labels(path, crs)
    return pos, neg, ign


def positive_rows(path: Path, crs):  # noqa: ANN001, ANN201
    """The positives of a label file as a GeoDataFrame in ``crs``, each with its row's other columns
    (``stage``, ``setting``, ``plot_id`` ...), as :func:`read_labels` selects them."""
    import geopandas as gpd

    pos, attrs, _, _ = _read_labels(path, crs)
    return gpd.GeoDataFrame(attrs, geometry=pos, crs=crs)


def _read_labels(path: Path, crs) -> tuple[list, list, list, list]:  # noqa: ANN001
    """:func:`read_labels` plus each positive's attributes (its row's other columns)."""
    import geopandas as gpd
    import pyogrio

    try:
        layers = [name for name, _ in pyogrio.list_layers(path)]
    except Exception as exc:  # noqa: BLE001
        raise InputError(f"labels '{path}' cannot be read as a vector file ({exc})") from None
    main = "plots" if "plots" in layers else layers[0]
    pos, pos_attrs, neg, ign = [], [], [], []
    for layer in [main] + [n for n in layers if n in NEGATIVE_LAYERS and n != main]:
        gdf = gpd.read_file(path, layer=layer)
        if len(gdf) == 0:
            continue
        if gdf.crs is None:
            raise InputError(f"labels '{path}' layer '{layer}' has no CRS; set it (e.g. in QGIS) and retry")
        gdf = gdf.to_crs(crs)
        if layer == main:
            p, pa, n, i = _classify(gdf, path)
        else:
            p, pa, n, i = [], [], [g for g in gdf.geometry if g is not None and not g.is_empty], []
        pos += p
        pos_attrs += pa
        neg += n
        ign += i
    return pos, pos_attrs, neg, ign


def open_scene(mosaic: str | Path, labels: str | Path | None) -> Scene:
    """Open a scene, checking the raster and reading its labels."""
    mosaic = Path(mosaic)
    if not mosaic.is_file():
        raise InputError(f"mosaic '{mosaic}' does not exist; check the path")
    try:
        ds = rasterio.open(mosaic)
    except rasterio.errors.RasterioIOError as exc:
        raise InputError(f"mosaic '{mosaic}' is not a readable raster ({exc})") from None
    if ds.dtypes[0] != "uint8":
        raise InputError(
            f"mosaic '{mosaic}' is {ds.dtypes[0]}; poppyscan trains on 8-bit RGB orthomosaics "
            "(convert with gdal_translate -ot Byte -scale)"
        )
    scene = Scene(
        mosaic=mosaic,
        labels=Path(labels) if labels else None,
        gsd_m=pixel_size_m(ds),
        width=ds.width,
        height=ds.height,
        _ds=ds,
        _rgb=_rgb_bands(ds),
    )
    if labels is not None:
        labels = Path(labels)
        if not labels.is_file():
            raise InputError(f"labels '{labels}' do not exist; check the path")
        scene.positives, scene.positive_attrs, scene.negatives, scene.ignored = _read_labels(labels, ds.crs)
        scene.mined = read_mined(labels, ds.crs)
    return scene


def read_mined(path: Path, crs) -> list:  # noqa: ANN001
    """Polygons of the :data:`MINED_LAYER` layer of a label file (none when it has no such layer)."""
    import geopandas as gpd
    import pyogrio

    if path.suffix.lower() != ".gpkg" or MINED_LAYER not in [n for n, _ in pyogrio.list_layers(path)]:
        return []
    gdf = gpd.read_file(path, layer=MINED_LAYER)
    if len(gdf) == 0:
        return []
    if gdf.crs is None:
        raise InputError(f"labels '{path}' layer '{MINED_LAYER}' has no CRS; set it and retry")
    return [g for g in gdf.to_crs(crs).geometry if g is not None and not g.is_empty]


def find_scenes(sources: list) -> list[tuple[Path, Path | None]]:
    """Resolve CLI inputs to ``(mosaic, labels)`` pairs.

    Each source is a scene directory (``mosaic.tif`` [+ ``truth.gpkg``]), a directory of scene
    directories, a ``(mosaic, labels)`` pair as this returns them, a CSV (columns ``mosaic,labels``) or
    YAML list (``- {mosaic: ..., labels: ...}``) with paths relative to the file, or a GeoTIFF (labels:
    ``truth.gpkg`` beside it or ``<stem>.gpkg``; none means a poppy-free scene).
    """
    pairs: list[tuple[Path, Path | None]] = []
    for src in sources:
        if isinstance(src, tuple):  # an already resolved (mosaic, labels) pair
            pairs.append((Path(src[0]), Path(src[1]) if src[1] else None))
            continue
        src = Path(src)
        if src.is_dir():
            mosaic = next((src / n for n in MOSAIC_NAMES if (src / n).is_file()), None)
            if mosaic is not None:
                pairs.append((mosaic, _labels_beside(mosaic)))
                continue
            subs = sorted(
                d for d in src.iterdir() if d.is_dir() and any((d / n).is_file() for n in MOSAIC_NAMES)
            )
            if not subs:
                raise InputError(f"scene directory '{src}' holds no mosaic.tif and no scene sub-directories")
            for d in subs:
                m = next(d / n for n in MOSAIC_NAMES if (d / n).is_file())
                pairs.append((m, _labels_beside(m)))
        elif src.suffix.lower() == ".csv" and src.is_file():
            with src.open(newline="", encoding="utf-8-sig") as fh:
                rows = list(csv.DictReader(fh))
            if not rows or "mosaic" not in rows[0]:
                raise InputError(f"scene list '{src}' needs a header with columns 'mosaic' and 'labels'")
            pairs += [(_rel(src, r["mosaic"]), _rel(src, r.get("labels"))) for r in rows]
        elif src.suffix.lower() in (".yaml", ".yml") and src.is_file():
            data = _read_yaml_list(src)
            items = data.get("scenes") if isinstance(data, dict) else data
            if not isinstance(items, list) or not all(isinstance(i, dict) and "mosaic" in i for i in items):
                raise InputError(f"scene list '{src}' must be a list of {{mosaic: ..., labels: ...}} entries")
            pairs += [(_rel(src, i["mosaic"]), _rel(src, i.get("labels"))) for i in items]
        elif src.suffix.lower() in (".tif", ".tiff", ".vrt") and src.is_file():
            pairs.append((src, _labels_beside(src)))
        elif not src.exists():
            raise InputError(f"scenes '{src}' do not exist; pass a scene directory, a .csv/.yaml scene list "
                             "or a GeoTIFF")
        else:
            raise InputError(f"scenes '{src}' are not a scene directory, .csv/.yaml scene list or GeoTIFF; "
                             "pass one of those")
    if not pairs:
        raise InputError("no training scenes were given")
    return pairs


def _read_yaml_list(path: Path) -> Any:
    """The parsed YAML scene list ``path``; one-line :class:`InputError` naming the line of a syntax error."""
    import yaml

    try:
        return yaml.safe_load(path.read_text(encoding="utf-8"))
    except UnicodeDecodeError as exc:
        raise InputError(f"scene list '{path}' is not UTF-8 text ({exc.reason}); save it as UTF-8") from None
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f"line {mark.line + 1}, column {mark.column + 1}: " if mark is not None else ""
        problem = getattr(exc, "problem", None) or str(exc).splitlines()[0]
        raise InputError(f"scene list '{path}' is not valid YAML ({where}{problem}); fix the syntax, e.g. "
                         "'- {mosaic: a/mosaic.tif, labels: a/truth.gpkg}' per scene") from None


def _rel(base: Path, value: str | None) -> Path | None:
    if value is None or str(value).strip() == "":
        return None
    p = Path(str(value).strip())
    return p if p.is_absolute() else base.parent / p


def _labels_beside(mosaic: Path) -> Path | None:
    for name in LABEL_NAMES + (mosaic.stem + ".gpkg", mosaic.stem + ".geojson"):
        if (mosaic.parent / name).is_file():
            return mosaic.parent / name
    log.info("%s: no label file beside it; treated as a poppy-free scene", mosaic)
    return None


def read_tile(scene: Scene, cx: float, cy: float, size: int, gsd: float) -> tuple[np.ndarray, np.ndarray]:
    """Read a ``size`` x ``size`` tile at ``gsd`` m/px centred on raster pixel (cx, cy).

    Returns ``(rgb uint8 (size, size, 3), label uint8 (size, size))`` with labels 0 background,
    1 poppy, :data:`IGNORE` for invalid/outside/ignored pixels.
    """
    ds = scene.ds
    span = size * gsd / scene.gsd_m  # source pixels covered
    step = span / size
    col0, row0 = cx - span / 2, cy - span / 2
    window = Window(col0, row0, span, span)
    # output pixels that fall inside the raster; read exactly those, aligned to the tile grid
    i0, j0 = max(0, math.ceil(-col0 / step)), max(0, math.ceil(-row0 / step))
    i1 = min(size, math.floor((ds.width - col0) / step))
    j1 = min(size, math.floor((ds.height - row0) / step))
    rgb = np.zeros((3, size, size), np.uint8)
    valid = np.zeros((size, size), bool)
    if i1 > i0 and j1 > j0:
        sub = Window(col0 + i0 * step, row0 + j0 * step, (i1 - i0) * step, (j1 - j0) * step)
        shape = (j1 - j0, i1 - i0)
        rgb[:, j0:j1, i0:i1] = ds.read(
            list(scene._rgb), window=sub, out_shape=(3, *shape), resampling=Resampling.bilinear
        )
        valid[j0:j1, i0:i1] = ds.read_masks(1, window=sub, out_shape=shape, resampling=Resampling.nearest) > 0
    transform = ds.window_transform(window) @ rasterio.Affine.scale(span / size)
    label = np.zeros((size, size), np.uint8)
    shapes = [(g, 1) for g in _near(scene.positives, transform, size)]
    shapes += [(g, IGNORE) for g in _near(scene.ignored, transform, size)]
    if shapes:
        rasterize(shapes, out=label, transform=transform)
    label[~valid] = IGNORE
    return np.ascontiguousarray(rgb.transpose(1, 2, 0)), label


def _near(geoms: list, transform, size: int) -> list:  # noqa: ANN001
    if not geoms:
        return []
    x0, y0 = transform @ (0, 0)
    x1, y1 = transform @ (size, size)
    minx, maxx, miny, maxy = min(x0, x1), max(x0, x1), min(y0, y1), max(y0, y1)
    out = []
    for g in geoms:
        b = g.bounds
        if b[0] <= maxx and b[2] >= minx and b[1] <= maxy and b[3] >= miny:
            out.append(g)
    return out


def _as_text(v: Any) -> str | None:
    """A label value as comparable text: None for missing (None/NaN), ``2024`` for ``2024.0``."""
    if v is None or (isinstance(v, float) and v != v):
        return None
    if isinstance(v, float) and v.is_integer():
        v = int(v)
    return str(v).strip().lower()


def matches(attrs: dict, column: str, value: str) -> bool:
    """Whether a plot's label row has ``column == value`` (text, case-insensitive; missing never matches).

    >>> matches({"stage": " Rosette"}, "stage", "rosette"), matches({"year": 2024.0}, "year", "2024")
    (True, True)
    >>> matches({"stage": float("nan")}, "stage", "nan")
    False
    """
    return _as_text(attrs.get(column)) == value


def plot_weight(attrs: dict, weights: dict[tuple[str, str], float]) -> float:
    """The sampling weight of one plot: the product of the weights its attributes match.

    >>> plot_weight({"stage": "Rosette", "setting": "edge"}, {("stage", "rosette"): 3.0})
    3.0
    >>> plot_weight({"stage": None}, {("stage", "rosette"): 3.0})
    1.0
    """
    w = 1.0
    for (column, value), f in weights.items():
        if matches(attrs, column, value):
            w *= f
    return w


def positive_chances(scenes: list[Scene], weights: dict[tuple[str, str], float]
                     ) -> tuple[list[tuple[int, int]], list[dict], np.ndarray, np.ndarray]:
    """``(pairs, attrs, w, base)`` over every plot of ``scenes``: its (scene, plot) indices, its label
    row's attributes, its weight and its unweighted chance of centring a positive tile (a scene with
    plots, uniformly, then one of its plots)."""
    n_scenes = sum(1 for s in scenes if s.positives)
    pairs, attrs, base = [], [], []
    for si, scene in enumerate(scenes):
        n, rows = len(scene.positives), scene.positive_attrs
        for bi in range(n):
            pairs.append((si, bi))
            attrs.append(rows[bi] if bi < len(rows) else {})
            base.append(1.0 / (n_scenes * n))
    w = np.asarray([plot_weight(a, weights) for a in attrs], np.float64)
    return pairs, attrs, w, np.asarray(base, np.float64)


def _weighted_picks(scenes: list[Scene], weights: dict[tuple[str, str], float]
                    ) -> tuple[np.ndarray, np.ndarray] | None:
    """``(pairs, p)``: every (scene, plot) index pair and the chance a positive tile centres on it (the
    unweighted chance times the plot's weight, renormalised); None when no plot has a weight other than 1
    (the sampler then draws as it always did)."""
    if not weights:
        return None
    pairs, _, w, base = positive_chances(scenes, weights)
    if (w == 1.0).all():
        return None
    p = w * base
    return np.asarray(pairs, np.intp), p / p.sum()


def polygon_pixel_centres(scene: Scene, geoms: list) -> np.ndarray:
    """Centres (col, row) in raster pixels of polygons' bounding boxes, with their half-extents."""
    if not geoms:
        return np.zeros((0, 4))
    inv = ~scene.ds.transform
    rows = []
    for g in geoms:
        minx, miny, maxx, maxy = g.bounds
        c0, r0 = inv @ (minx, maxy)
        c1, r1 = inv @ (maxx, miny)
        rows.append(((c0 + c1) / 2, (r0 + r1) / 2, abs(c1 - c0) / 2, abs(r1 - r0) / 2))
    return np.asarray(rows, dtype=np.float64)


def coarsen(rgb: np.ndarray, factor: float) -> np.ndarray:
    """Imitate imagery ``factor`` times coarser, resampled back to this GSD (as ``detect`` upsamples
    a 6-8 cm mosaic to the model's 4 cm): area-downsample, then bilinear upsample to the same shape."""
    h, w = rgb.shape[:2]
    size = (max(1, round(w / factor)), max(1, round(h / factor)))
    small = cv2.resize(rgb, size, interpolation=cv2.INTER_AREA)
    return cv2.resize(small, (w, h), interpolation=cv2.INTER_LINEAR)


def augment(
    rgb: np.ndarray,
    label: np.ndarray,
    rng: np.random.Generator,
    *,
    coarse_p: float = 0.0,
    coarse_max: float = 2.2,
    color: float = 1.0,
    camera_p: float = 0.0,
) -> tuple[np.ndarray, np.ndarray]:
    """Flips/rot90, brightness/contrast/saturation/hue/gamma jitter, blur, noise, JPEG artefacts.

    With ``coarse_p`` > 0, that share of tiles is first :func:`coarsened <coarsen>` by a factor drawn
    from U(1.25, ``coarse_max``): the fine-GSD scenes then also teach what coarse imagery looks like,
    with exact labels. ``coarse_p=0`` (the default) draws exactly the random numbers it always did.
    ``color`` scales the photometric ranges (brightness, contrast, gamma, white balance, saturation)
    around no change: 1.5 gives brightness x U(0.55, 1.45) instead of U(0.7, 1.3). The hue shift is not
    scaled (flower colour is a cue). ``color=1`` (the default) gives exactly the old augmentation.
    With ``camera_p`` > 0, that share of tiles gets :func:`camera_effects` (vignetting, lateral chromatic
    aberration, sharpening halos, haze, a stitching seamline) after the colour jitter; ``camera_p=0``
    (the default) draws exactly the random numbers it always did.
    """
    k = int(rng.integers(4))
    rgb, label = np.rot90(rgb, k), np.rot90(label, k)
    if rng.random() < 0.5:
        rgb, label = rgb[:, ::-1], label[:, ::-1]
    rgb = np.ascontiguousarray(rgb)
    label = np.ascontiguousarray(label)
    if coarse_p > 0 and rng.random() < coarse_p:
        rgb = coarsen(rgb, float(rng.uniform(1.25, max(1.25, coarse_max))))
    x = rgb.astype(np.float32)
    # brightness / contrast / gamma
    x = x * rng.uniform(*_widen(0.7, 1.3, color))
    mean = x.mean()
    x = (x - mean) * rng.uniform(*_widen(0.75, 1.25, color)) + mean
    x = np.clip(x, 0, 255)
    if rng.random() < 0.5:
        lo, hi = (0.75, 1.33) if color == 1 else (0.75**color, 1.33**color)  # log-symmetric
        x = 255.0 * (x / 255.0) ** rng.uniform(lo, hi)
    # per-channel gain (white balance) and saturation
    x = x * rng.uniform(*_widen(0.9, 1.1, color), size=3).astype(np.float32)
    grey = x.mean(axis=2, keepdims=True)
    x = grey + (x - grey) * rng.uniform(*_widen(0.7, 1.3, color))
    x = np.clip(x, 0, 255).astype(np.uint8)
    if camera_p > 0 and rng.random() < camera_p:
        x = camera_effects(x, rng)
    if rng.random() < 0.3:  # small hue shift (flower colour is a cue: keep it small)
        hsv = cv2.cvtColor(x, cv2.COLOR_RGB2HSV)
        hsv[..., 0] = ((hsv[..., 0].astype(np.int16) + int(rng.integers(-5, 6))) % 180).astype(np.uint8)
        x = cv2.cvtColor(hsv, cv2.COLOR_HSV2RGB)
    if rng.random() < 0.3:
        x = cv2.GaussianBlur(x, (0, 0), float(rng.uniform(0.4, 1.3)))
    if rng.random() < 0.2:
        noise = rng.normal(0, rng.uniform(2, 8), x.shape).astype(np.float32)
        x = np.clip(x.astype(np.float32) + noise, 0, 255).astype(np.uint8)
    if rng.random() < 0.3:
        ok, buf = cv2.imencode(".jpg", x[..., ::-1], [cv2.IMWRITE_JPEG_QUALITY, int(rng.integers(35, 95))])
        if ok:
            x = np.ascontiguousarray(cv2.imdecode(buf, cv2.IMREAD_COLOR)[..., ::-1])
    return x, label


def camera_effects(rgb: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """What other cameras, photogrammetry software and weather do to a uint8 RGB tile, each effect
    with its own chance (labels stay valid: nothing moves by more than 1.5 px).

    - vignetting: a radial gain falling by 5-30 % towards a corner of the photo the tile was cut from;
    - lateral chromatic aberration: red and blue shifted by up to 1.5 px in opposite directions;
    - sharpening: an unsharp mask (amount 0.3-1.5, radius 0.8-2 px) with its bright/dark halos;
    - haze: a blend of 5-30 % towards a bluish-grey airlight;
    - a seamline: on one side of a random straight line the exposure and white balance differ, as
      where an orthomosaic switches from one photo to the next.

    >>> x = np.full((64, 64, 3), 120, np.uint8)
    >>> y = camera_effects(x, np.random.default_rng(0))
    >>> y.shape, y.dtype
    ((64, 64, 3), dtype('uint8'))
    """
    h, w = rgb.shape[:2]
    x = rgb.astype(np.float32)
    if rng.random() < 0.5:  # vignetting: the tile is somewhere inside a photo
        cy, cx = rng.uniform(-1.5, 1.5, 2) * (h, w)
        yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
        r2 = ((yy - cy) ** 2 + (xx - cx) ** 2) / float((2.5 * max(h, w)) ** 2)
        x *= (1 - rng.uniform(0.05, 0.3) * np.minimum(r2, 1.0))[..., None]
    if rng.random() < 0.5:  # lateral chromatic aberration
        dx, dy = rng.uniform(-1.5, 1.5, 2)
        for ch, sign in ((0, 1.0), (2, -1.0)):
            m = np.float32([[1, 0, sign * dx], [0, 1, sign * dy]])
            x[..., ch] = cv2.warpAffine(x[..., ch], m, (w, h), flags=cv2.INTER_LINEAR,
                                        borderMode=cv2.BORDER_REFLECT)
    if rng.random() < 0.5:  # in-camera sharpening
        blur = cv2.GaussianBlur(x, (0, 0), float(rng.uniform(0.8, 2.0)))
        x += float(rng.uniform(0.3, 1.5)) * (x - blur)
    if rng.random() < 0.3:  # haze
        air = np.float32([200, 205, 215]) * rng.uniform(0.85, 1.15)
        a = float(rng.uniform(0.05, 0.3))
        x = x * (1 - a) + air * a
    if rng.random() < 0.3:  # seamline between two photos
        ang = rng.uniform(0, np.pi)
        yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
        side = (xx - rng.uniform(0, w)) * np.cos(ang) + (yy - rng.uniform(0, h)) * np.sin(ang) > 0
        x[side] *= rng.uniform(0.8, 1.25) * rng.uniform(0.95, 1.05, 3).astype(np.float32)
    return np.clip(x, 0, 255).astype(np.uint8)


def _widen(lo: float, hi: float, s: float) -> tuple[float, float]:
    """The range (lo, hi) around 1 scaled by ``s`` (unchanged for s = 1), never below 0.05."""
    if s == 1:
        return lo, hi
    return max(0.05, 1 + (lo - 1) * s), 1 + (hi - 1) * s


class TileSampler:
    """Draws training tiles from scenes: positive-centred, hard-negative-centred or random.

    Parameters
    ----------
    scenes
        Opened scenes.
    size, gsd
        Tile size in px at the model GSD (m/px).
    positive_fraction
        Share of tiles centred near a poppy polygon (when any scene has one).
    hard_negative_fraction
        Share of the remaining tiles centred on a hard-negative polygon (when any scene has one).
    scale_jitter
        Relative GSD jitter; each tile is read at ``gsd * U(1 - j, 1 + j)``.
    mined_fraction
        Share of the non-positive tiles centred on a mined false-plot place (``Scene.mined``), drawn
        before the hard-negative share (when any scene has one). 0 (the default) draws exactly the
        random numbers the sampler always did.
    positive_weights
        ``{(column, value): weight}`` (:func:`~poppyscan.config.parse_positive_weights`): a plot whose
        label row has ``column == value`` is drawn ``weight`` times as often as otherwise (weights of
        several matching columns multiply). Without it (or when no plot matches) a positive tile picks
        a scene, then one of its plots, uniformly, drawing the same random numbers as always.
    """

    def __init__(
        self,
        scenes: list[Scene],
        size: int,
        gsd: float,
        *,
        positive_fraction: float = 0.6,
        hard_negative_fraction: float = 0.3,
        scale_jitter: float = 0.25,
        mined_fraction: float = 0.0,
        positive_weights: dict[tuple[str, str], float] | None = None,
    ) -> None:
        self.scenes = scenes
        self.size = size
        self.gsd = gsd
        self.positive_fraction = positive_fraction
        self.hard_negative_fraction = hard_negative_fraction
        self.scale_jitter = scale_jitter
        self.mined_fraction = mined_fraction
        self._pos = [polygon_pixel_centres(s, s.positives) for s in scenes]
        self._neg = [polygon_pixel_centres(s, s.negatives) for s in scenes]
        self._pos_scenes = [i for i, p in enumerate(self._pos) if len(p)]
        self._neg_scenes = [i for i, p in enumerate(self._neg) if len(p)]
        self._mined = [polygon_pixel_centres(s, s.mined) for s in scenes]
        self._mined_scenes = [i for i, p in enumerate(self._mined) if len(p)]
        self._pos_pick = _weighted_picks(scenes, positive_weights or {})

    def sample(self, rng: np.random.Generator, *, jitter: bool = True) -> tuple[np.ndarray, np.ndarray, str]:
        """Return ``(rgb, label, kind)``, kind ``positive``, ``mined``, ``hard_negative`` or ``random``."""
        gsd = self.gsd * (rng.uniform(1 - self.scale_jitter, 1 + self.scale_jitter) if jitter else 1.0)
        r = rng.random()
        if self._pos_scenes and r < self.positive_fraction:
            if self._pos_pick is not None:
                return (*self._around(rng, self._pos_scenes, self._pos, gsd, self._pos_pick), "positive")
            return (*self._around(rng, self._pos_scenes, self._pos, gsd), "positive")
        if self._mined_scenes and self.mined_fraction > 0 and rng.random() < self.mined_fraction:
            return (*self._around(rng, self._mined_scenes, self._mined, gsd), "mined")
        r2 = rng.random()
        if self._neg_scenes and r2 < self.hard_negative_fraction:
            return (*self._around(rng, self._neg_scenes, self._neg, gsd), "hard_negative")
        return (*self._random(rng, gsd), "random")

    def _around(self, rng: np.random.Generator, which: list[int], boxes: list[np.ndarray], gsd: float,  # noqa: ANN202
                pick: tuple[np.ndarray, np.ndarray] | None = None):
        if pick is None:
            si = which[int(rng.integers(len(which)))]
            cx, cy, hx, hy = boxes[si][int(rng.integers(len(boxes[si])))]
        else:  # (scene index, box index) pairs and their probabilities
            si, bi = pick[0][int(rng.choice(len(pick[1]), p=pick[1]))]
            cx, cy, hx, hy = boxes[si][bi]
        scene = self.scenes[si]
        span = self.size * gsd / scene.gsd_m
        # a point of the object's box, shifted so the object lands anywhere in the tile's inner 70 %
        px = cx + rng.uniform(-hx, hx) + rng.uniform(-0.35, 0.35) * span
        py = cy + rng.uniform(-hy, hy) + rng.uniform(-0.35, 0.35) * span
        return read_tile(scene, px, py, self.size, gsd)

    def _random(self, rng: np.random.Generator, gsd: float):  # noqa: ANN202
        weights = np.array([s.width * s.height * s.gsd_m**2 for s in self.scenes], dtype=np.float64)
        best = None
        for _ in range(4):  # retry tiles that are mostly nodata
            scene = self.scenes[int(rng.choice(len(self.scenes), p=weights / weights.sum()))]
            rgb, label = read_tile(
                scene, rng.uniform(0, scene.width), rng.uniform(0, scene.height), self.size, gsd
            )
            frac = float((label != IGNORE).mean())
            if best is None or frac > best[2]:
                best = (rgb, label, frac)
            if frac > 0.5:
                break
        return best[0], best[1]
