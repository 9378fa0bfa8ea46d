"""Evaluation files: reading predicted and truth polygon layers and a mosaic's valid area, writing the
missed and false plots of scored scenes as GeoPackage layers, and the fixed-width report table.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import TYPE_CHECKING, Any

from .errors import InputError

if TYPE_CHECKING:
    from .eval_metrics import ObjectScore


def error_layers(scores: list[tuple[str, ObjectScore]]) -> dict[str, Any]:
    """The missed true plots and the false plots of scored scenes as two WGS84 GeoDataFrames
    (``{"missed": ..., "false": ...}``), each row with its ``scene``, ``area_m2`` (measured in the
    metric CRS it was scored in) and the columns it had (e.g. ``prob_mean`` of a detect run's plots, the
    attributes of a truth file scored by :func:`~poppyscan.evaluate.evaluate_files`)."""
    import geopandas as gpd
    import pandas as pd

    out = {}
    for key in ("missed", "false"):
        parts = []
        for scene, sc in scores:
            g = getattr(sc, key)
            if g is None or not len(g):
                continue
            g = g.copy()
            g["area_m2"] = g.geometry.area.round(2)  # replaces a detect run's own area_m2 (same measure)
            g["scene"] = scene
            g = g[["scene", "area_m2", *[c for c in g.columns if c not in ("scene", "area_m2")]]]
            parts.append(g.to_crs("EPSG:4326"))
        out[key] = (
            gpd.GeoDataFrame(pd.concat(parts, ignore_index=True), crs="EPSG:4326")
            if parts
            else gpd.GeoDataFrame({"scene": [], "area_m2": []}, geometry=[], crs="EPSG:4326")
        )
    return out


def write_error_layers(
    path: str | Path, scores: list[tuple[str, ObjectScore]], overwrite: bool = False
) -> None:
    """Write :func:`error_layers` to a GeoPackage (layers ``missed`` and ``false``), atomically."""
    from .fsutil import atomic_path

    layers = error_layers(scores)
    with atomic_path(path, overwrite) as tmp:
        for name, gdf in layers.items():
            gdf.to_file(tmp, layer=name, driver="GPKG", mode="a" if tmp.exists() else "w")


def valid_area_m2(mosaic: str | Path) -> float:
    """Area (m²) of the valid-data mask of a raster (alpha/nodata/internal mask), read at reduced size."""
    import rasterio

    from .scenes import pixel_size_m

    with rasterio.open(mosaic) as ds:
        f = max(1, int(math.ceil(max(ds.width, ds.height) / 2048)))
        shape = (max(1, ds.height // f), max(1, ds.width // f))
        mask = ds.read_masks(1, out_shape=shape) > 0
        px = pixel_size_m(ds)
        return float(mask.mean() * ds.width * ds.height * px * px)


def read_polygons(path: str | Path, layer: str | None = None):  # noqa: ANN201
    """Read a polygon layer (``plots`` when present, else the first layer)."""
    import geopandas as gpd
    import pyogrio

    path = Path(path)
    if not path.exists():
        raise InputError(f"vector file '{path}' does not exist; check the path")
    try:
        layers = [n for n, _ in pyogrio.list_layers(path)]
    except Exception as exc:  # noqa: BLE001
        raise InputError(f"'{path}' is not a readable vector file ({exc})") from None
    if layer is None:
        layer = "plots" if "plots" in layers else layers[0]
    elif layer not in layers:
        raise InputError(f"'{path}' has no layer '{layer}'; layers: {', '.join(layers)}")
    return gpd.read_file(path, layer=layer)

def format_table(rows: list[tuple[str, dict[str, Any]]]) -> str:
    """A readable fixed-width table of reports, one row per (name, report)."""
    cols = [
        ("tp", "{:d}"),
        ("fp", "{:d}"),
        ("fn", "{:d}"),
        ("precision", "{:.3f}"),
        ("recall", "{:.3f}"),
        ("f1", "{:.3f}"),
        ("pixel_iou", "{:.3f}"),
        ("centroid_m", "{:.2f}"),
        ("area_ratio", "{:.2f}"),
        ("fp_per_ha", "{:.2f}"),
    ]
    width = max([len("scene")] + [len(n) for n, _ in rows])
    lines = ["scene".ljust(width) + "".join(f"{c:>11}" for c, _ in cols)]
    for name, r in rows:
        vals = dict(r)
        vals["centroid_m"] = (r.get("centroid_error_m") or {}).get("mean")
        vals["fp_per_ha"] = r.get("false_plots_per_ha")
        cells = []
        for c, fmt in cols:
            v = vals.get(c)
            cells.append(f"{'-' if v is None else fmt.format(v):>11}")
        lines.append(name.ljust(width) + "".join(cells))
    return "\n".join(lines)
