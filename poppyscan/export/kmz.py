"""``tasks.kmz``: Google Earth / Ovital (奥维) / 2bulu (两步路) package of the tasks.

``doc.kml`` (the first entry of the zip, as the KMZ convention requires) holds one folder per unit with
a styled placemark per task (criminal-size red, others orange; attributes in ``ExtendedData``; a balloon
with the chip image and navigation links), the unit's route as a line, and a folder of plot outlines
(longitudes in [-180, 180]; an outline crossing the antimeridian is split there, as in plots.geojson).
Chips are embedded under ``files/`` and referenced by relative path. KML conventions: ``lon,lat``
coordinate order and ``aabbggrr`` colours.
"""

from __future__ import annotations

import html
import xml.etree.ElementTree as ET
import zipfile
from pathlib import Path

import geopandas as gpd
import pandas as pd

from ..fsutil import atomic_path
from ..geo.antimeridian import wrap_geometry, wrap_lon
from .gpx import describe

KML_NS = "http://www.opengis.net/kml/2.2"
# aabbggrr
STYLES = {
    "criminal": {"icon": "ff0000ff", "label": "ff0000ff"},  # red
    "administrative": {"icon": "ff00a5ff", "label": "ff00d7ff"},  # orange
}
OUTLINE_COLOR = "ff00ffff"  # yellow
FILL_COLOR = "4000ffff"  # 25 % yellow
ROUTE_COLOR = "ccff9900"  # semi-opaque blue
ICON_HREF = "files/dot.png"  # embedded: Google's icon server is unreachable in China and offline


def _icon_png() -> bytes:
    """A white dot with a dark rim; KML tints it with IconStyle ``color``."""
    import cv2
    import numpy as np

    img = np.zeros((32, 32, 4), np.uint8)
    cv2.circle(img, (16, 16), 13, (40, 40, 40, 255), -1, cv2.LINE_AA)
    cv2.circle(img, (16, 16), 11, (255, 255, 255, 255), -1, cv2.LINE_AA)
    return cv2.imencode(".png", img)[1].tobytes()


def _sub(parent: ET.Element, tag: str, text: str | None = None, **attrib: str) -> ET.Element:
    el = ET.SubElement(parent, tag, attrib)
    if text is not None:
        el.text = text
    return el


def _fmt(value) -> str:
    if value is None or (isinstance(value, float) and value != value) or value is pd.NA:
        return ""
    if isinstance(value, float):
        return f"{value:.7f}".rstrip("0").rstrip(".") if abs(value) < 1000 else f"{value:.2f}"
    return str(value)


def _coords(ring) -> str:
    return " ".join(f"{x:.7f},{y:.7f}" for x, y, *_ in ring.coords)


def _lonlat(lon: float, lat: float) -> str:
    return f"{wrap_lon(float(lon)):.7f},{lat:.7f}"


def _balloon(row, chip: str | None) -> str:
    img = f'<img src="{html.escape(chip)}" width="320"/><br/>' if chip else ""
    links = (
        f'<a href="{html.escape(row.nav_amap)}">Amap navigation</a> | '
        f'<a href="{html.escape(row.nav_baidu)}">Baidu map</a>'
    )
    return (
        f"{img}<b>{html.escape(str(row.task_code))}</b> — {html.escape(describe(row))}<br/>"
        f"WGS84 {row.lon:.6f}, {row.lat:.6f}; GCJ-02 {row.gcj02_lon:.6f}, {row.gcj02_lat:.6f}<br/>"
        f"{links}"
    )


def _styles(doc: ET.Element) -> None:
    for name, s in STYLES.items():
        st = _sub(doc, "Style", id=f"task-{name}")
        icon = _sub(st, "IconStyle")
        _sub(icon, "color", s["icon"])
        _sub(icon, "scale", "1.1")
        _sub(_sub(icon, "Icon"), "href", ICON_HREF)
        label = _sub(st, "LabelStyle")
        _sub(label, "color", s["label"])
        _sub(label, "scale", "0.9")
    st = _sub(doc, "Style", id="plot")
    ls = _sub(st, "LineStyle")
    _sub(ls, "color", OUTLINE_COLOR)
    _sub(ls, "width", "2")
    ps = _sub(st, "PolyStyle")
    _sub(ps, "color", FILL_COLOR)
    st = _sub(doc, "Style", id="route")
    ls = _sub(st, "LineStyle")
    _sub(ls, "color", ROUTE_COLOR)
    _sub(ls, "width", "2")


def _polygon(parent: ET.Element, poly) -> None:
    pg = _sub(parent, "Polygon")
    _sub(pg, "tessellate", "1")
    _sub(_sub(_sub(pg, "outerBoundaryIs"), "LinearRing"), "coordinates", _coords(poly.exterior))
    for hole in poly.interiors:
        _sub(_sub(_sub(pg, "innerBoundaryIs"), "LinearRing"), "coordinates", _coords(hole))


def build_kml(
    tasks: pd.DataFrame,
    plots_wgs84: gpd.GeoDataFrame,
    *,
    title: str,
    chips: dict[str, str],
    fields: list[str],
) -> bytes:
    """Return ``doc.kml`` bytes. ``chips`` maps task_code → path inside the KMZ; ``fields`` are the
    ``ExtendedData`` columns."""
    root = ET.Element("kml", {"xmlns": KML_NS})
    doc = _sub(root, "Document")
    _sub(doc, "name", title)
    _sub(doc, "description", "Poppy field-verification tasks (WGS84). Red: >= 500 plants (criminal-size).")
    _styles(doc)
    for unit, group in tasks.groupby("unit", sort=False):
        folder = _sub(doc, "Folder")
        _sub(folder, "name", f"{unit} ({len(group)} tasks)")
        group = group.sort_values("route_seq")
        for row, rec in zip(group.itertuples(index=False), group.to_dict("records"), strict=True):
            pm = _sub(folder, "Placemark", id=f"task-{row.task_id}")
            _sub(pm, "name", str(row.task_code))
            desc = _sub(pm, "description")
            desc.text = _balloon(row, chips.get(row.task_code))
            _sub(pm, "styleUrl", f"#task-{row.priority_class}")
            ext = _sub(pm, "ExtendedData")
            for f in fields:
                data = _sub(ext, "Data", name=f)
                _sub(data, "value", _fmt(rec.get(f)))
            _sub(_sub(pm, "Point"), "coordinates", _lonlat(row.lon, row.lat))
        if len(group) > 1:
            pm = _sub(folder, "Placemark")
            _sub(pm, "name", f"Route {unit}")
            _sub(pm, "styleUrl", "#route")
            ls = _sub(pm, "LineString")
            _sub(ls, "tessellate", "1")
            _sub(ls, "coordinates", " ".join(_lonlat(r.lon, r.lat) for r in group.itertuples()))
    outlines = _sub(doc, "Folder")
    _sub(outlines, "name", "Plot outlines")
    code_by_plot = dict(zip(tasks["plot_id"], tasks["task_code"], strict=False))
    for plot_id, geom in zip(plots_wgs84["plot_id"], plots_wgs84.geometry, strict=True):
        geom = wrap_geometry(geom)
        if geom is None or geom.is_empty:
            continue
        pm = _sub(outlines, "Placemark")
        _sub(pm, "name", f"{code_by_plot.get(plot_id, '')} plot {plot_id}".strip())
        _sub(pm, "styleUrl", "#plot")
        polys = list(getattr(geom, "geoms", [geom]))
        if len(polys) == 1:
            _polygon(pm, polys[0])
        else:
            multi = _sub(pm, "MultiGeometry")
            for poly in polys:
                _polygon(multi, poly)
    ET.indent(root, space=" ")
    return ET.tostring(root, encoding="UTF-8", xml_declaration=True)


def write_kmz(
    tasks: pd.DataFrame,
    plots_wgs84: gpd.GeoDataFrame,
    final: str | Path,
    *,
    title: str,
    chip_files: dict[str, Path],
    fields: list[str],
) -> Path:
    """Write ``final`` (a KMZ: ``doc.kml`` first, then chips under ``files/``), atomically."""
    codes = set(tasks["task_code"])
    inside = {code: f"files/{Path(p).name}" for code, p in chip_files.items() if code in codes}
    kml = build_kml(tasks, plots_wgs84, title=title, chips=inside, fields=fields)
    with atomic_path(Path(final), overwrite=True) as tmp:
        with zipfile.ZipFile(tmp, "w", compression=zipfile.ZIP_DEFLATED) as zf:
            zf.writestr("doc.kml", kml)
            zf.writestr(ICON_HREF, _icon_png())
            for code, arc in inside.items():
                zf.write(chip_files[code], arc, compress_type=zipfile.ZIP_STORED)
    return Path(final)
