"""Labelled scenes: finding them, opening their orthomosaics and reading their label polygons.

A *scene* is one orthomosaic GeoTIFF (any CRS, RGB uint8, optional alpha/nodata/internal mask) plus an
optional vector file of label polygons. Polygons are *poppy* (positive), *hard negatives* (not poppy:
corn poppy, flowerbeds, ... taught as background and over-sampled), or *ignored* (unknown status:
excluded from the loss). A scene without labels is poppy-free (a negative-only scene).

A label file may also hold a layer :data:`MINED_LAYER` of *mined* negatives: places where a model made
false plots (``scripts/mine_hard_negatives.py``). They are background like hard negatives, but kept
apart so that :class:`~poppyscan.traindata.TileSampler` can give them their own share of tiles
(``mined_fraction``).
"""

from __future__ import annotations

import csv
import logging
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import rasterio
from rasterio.enums import ColorInterp

from .errors import InputError

log = logging.getLogger(__name__)

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
