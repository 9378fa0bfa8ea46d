"""``tasks.gpx``: GPX 1.1 waypoints (short ASCII names = task codes) and one route per unit.

A unit with a single task gets its waypoint but no route (a one-point route is a degenerate line that
GDAL/QGIS refuse to read).

Handheld GPS units and phone apps (OsmAnd, 2bulu, Garmin) truncate or mangle long / non-ASCII names,
so ``<name>`` is the task code (e.g. ``A007``) and the details go in ``<desc>``. Child elements follow
the order the GPX 1.1 schema requires.
"""

from __future__ import annotations

import xml.etree.ElementTree as ET
from pathlib import Path

import pandas as pd

from ..fsutil import atomic_path
from .xmltext import xml_safe

GPX_NS = "http://www.topografix.com/GPX/1/1"


def _ascii(text: str, fallback: str) -> str:
    out = "".join(ch for ch in str(text) if 32 <= ord(ch) < 127).strip()
    return out or fallback


def _sub(parent: ET.Element, tag: str, text: str | None = None, **attrib: str) -> ET.Element:
    el = ET.SubElement(parent, tag, {k: xml_safe(v) for k, v in attrib.items()})
    if text is not None:
        el.text = xml_safe(text)  # ElementTree would write control characters into an unparsable file
    return el


def describe(row) -> str:
    """One-line human description of a task (used by GPX and KML)."""
    parts = [
        f"plot {row.plot_id}",
        f"{row.area_mu:.2f} mu ({row.area_m2:.0f} m2)",
        f"~{int(row.est_plants)} plants",
    ]
    if bool(row.over_500_plants):
        parts.append(">=500 plants: CRIMINAL-SIZE")
    parts.append(f"p={row.prob_mean:.2f}")
    parts.append(f"priority {row.priority}")
    admin = getattr(row, "admin_name", "")
    if admin:
        parts.append(str(admin))
    return "; ".join(parts)


def write_gpx(tasks: pd.DataFrame, final: str | Path, *, title: str, unit_labels: dict[str, str]) -> Path:
    """Write waypoints for every task and one ``<rte>`` per unit in ``route_seq`` order, atomically.

    ``unit_labels`` maps unit name → short ASCII route label (e.g. ``"A"``).
    """
    root = ET.Element("gpx", {"version": "1.1", "creator": "poppyscan", "xmlns": GPX_NS})
    meta = _sub(root, "metadata")
    _sub(meta, "name", title)
    _sub(meta, "desc", "Poppy field-verification tasks. Coordinates WGS84. Waypoint name = task code.")
    for row in tasks.itertuples(index=False):
        wpt = _sub(root, "wpt", lat=f"{row.lat:.7f}", lon=f"{row.lon:.7f}")
        _sub(wpt, "name", _ascii(row.task_code, "T"))
        _sub(wpt, "cmt", f"{row.priority_class} p{row.priority}")
        _sub(wpt, "desc", describe(row))
        _sub(wpt, "sym", "Flag, Red" if bool(row.over_500_plants) else "Flag, Blue")
        _sub(wpt, "type", str(row.priority_class))
    groups = [(u, g) for u, g in tasks.groupby("unit", sort=False) if len(g) >= 2]  # 1 point is no route
    for number, (unit, group) in enumerate(groups, start=1):
        rte = _sub(root, "rte")
        label = unit_labels.get(unit, "")
        _sub(rte, "name", _ascii(f"Route {label}".strip(), f"Route {number}"))
        _sub(rte, "desc", f"{unit}: {len(group)} tasks in visit order")
        _sub(rte, "number", str(number))
        for row in group.sort_values("route_seq").itertuples(index=False):
            pt = _sub(rte, "rtept", lat=f"{row.lat:.7f}", lon=f"{row.lon:.7f}")
            _sub(pt, "name", _ascii(row.task_code, "T"))
    tree = ET.ElementTree(root)
    ET.indent(tree, space=" ")
    with atomic_path(Path(final), overwrite=True) as tmp:
        tree.write(tmp, encoding="UTF-8", xml_declaration=True)
    return Path(final)
