"""Printable work-order sheet per unit: one self-contained HTML file (no internet assets).

Contents: a header (unit, run, date, counts), an overview map of the unit's tasks and route drawn as
inline SVG (local equirectangular projection, north up, scale bar), the task table in visit order with
blank columns to fill in by hand, and one card per task with its chip (embedded as a ``data:`` URI),
coordinates (WGS84 and labelled GCJ-02) and navigation links. Prints on A4 with page breaks between
cards.
"""

from __future__ import annotations

import base64
import datetime as _dt
import html
import math
from pathlib import Path

import pandas as pd

from ..fsutil import atomic_path
from .xmltext import xml_safe

CSS = """
body{font-family:"Noto Sans CJK SC","Microsoft YaHei","PingFang SC",Arial,sans-serif;font-size:11pt;
margin:1.5em}
h1{font-size:16pt;margin:0 0 .2em}h2{font-size:13pt;margin:1em 0 .3em}
.meta{color:#444;margin-bottom:.8em}
table{border-collapse:collapse;width:100%;font-size:9pt}
th,td{border:1px solid #888;padding:2px 4px;text-align:left;vertical-align:top}
th{background:#e8eef6}
tr.criminal td.code{color:#b00;font-weight:bold}
td.blank{min-width:5em}
.cards{display:flex;flex-wrap:wrap;gap:10px}
.card{border:1px solid #888;padding:6px;width:340px;page-break-inside:avoid;break-inside:avoid}
.card img{width:320px;height:320px;display:block}
.card .nochip{width:320px;height:60px;background:#eee;color:#666;text-align:center;line-height:60px}
.note{font-size:9pt;color:#333}
svg{border:1px solid #888;background:#fbfbf8}
@media print{.cards{display:block}.card{display:inline-block;margin:4px}a{color:#000}}
"""
MAP_W, MAP_H, PAD = 760, 520, 30


def _e(value) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return ""
    return html.escape(xml_safe(str(value)))


def overview_svg(tasks: pd.DataFrame, start: tuple[float, float] | None = None) -> str:
    """Inline SVG map of the tasks (circles + codes) joined by the route in visit order."""
    if tasks.empty:
        return (
            f'<svg width="{MAP_W}" height="80" xmlns="http://www.w3.org/2000/svg">'
            '<text x="10" y="45">no tasks</text></svg>'
        )
    lon = tasks["lon"].to_numpy(float)
    lat = tasks["lat"].to_numpy(float)
    lat0 = math.radians(float(lat.mean()))
    xs_all = list(lon) + ([start[0]] if start else [])
    ys_all = list(lat) + ([start[1]] if start else [])
    mx = [x * 111_320 * math.cos(lat0) for x in xs_all]
    my = [y * 110_574 for y in ys_all]
    span = max(max(mx) - min(mx), max(my) - min(my), 50.0)
    scale = min((MAP_W - 2 * PAD) / span, (MAP_H - 2 * PAD) / span)
    cx = (max(mx) + min(mx)) / 2
    cy = (max(my) + min(my)) / 2

    def xy(i: int) -> tuple[float, float]:
        return MAP_W / 2 + (mx[i] - cx) * scale, MAP_H / 2 - (my[i] - cy) * scale

    parts = [
        f'<svg width="{MAP_W}" height="{MAP_H}" viewBox="0 0 {MAP_W} {MAP_H}" '
        'xmlns="http://www.w3.org/2000/svg" font-family="Arial" font-size="11">'
    ]
    order = list(range(len(lon)))
    if start:
        order = [len(lon)] + order
    pts = " ".join(f"{xy(i)[0]:.1f},{xy(i)[1]:.1f}" for i in order)
    parts.append(
        f'<polyline points="{pts}" fill="none" stroke="#3b6fd8" stroke-width="1.5" stroke-dasharray="4 3"/>'
    )
    if start:
        sx, sy = xy(len(lon))
        parts.append(
            f'<rect x="{sx - 5:.1f}" y="{sy - 5:.1f}" width="10" height="10" fill="#222"/>'
            f'<text x="{sx + 7:.1f}" y="{sy + 4:.1f}">start</text>'
        )
    for i, row in enumerate(tasks.itertuples(index=False)):
        x, y = xy(i)
        colour = "#d7191c" if bool(row.over_500_plants) else "#fd8d3c"
        parts.append(
            f'<circle cx="{x:.1f}" cy="{y:.1f}" r="6" fill="{colour}" stroke="#222"/>'
            f'<text x="{x + 8:.1f}" y="{y - 6:.1f}">{_e(row.task_code)}</text>'
        )
    # scale bar: a round length near a quarter of the map width
    target = (MAP_W / 4) / scale
    nice = 10 ** math.floor(math.log10(target))
    length = max(n * nice for n in (1, 2, 5) if n * nice <= target) if target >= 1 else 1
    bar = length * scale
    y0 = MAP_H - 14
    label = f"{length / 1000:g} km" if length >= 1000 else f"{length:g} m"
    parts.append(
        f'<line x1="{PAD}" y1="{y0}" x2="{PAD + bar:.1f}" y2="{y0}" stroke="#000" stroke-width="3"/>'
        f'<text x="{PAD + bar + 6:.1f}" y="{y0 + 4}">{label}</text>'
    )
    parts.append(
        f'<text x="{MAP_W - 24}" y="24" font-size="16" font-weight="bold">N</text>'
        f'<path d="M {MAP_W - 19} 30 l -6 16 l 6 -4 l 6 4 z" fill="#000"/>'
    )
    parts.append("</svg>")
    return "".join(parts)


def _data_uri(path: Path | None) -> str | None:
    if path is None or not Path(path).exists():
        return None
    return "data:image/jpeg;base64," + base64.b64encode(Path(path).read_bytes()).decode("ascii")


def render_sheet(
    tasks: pd.DataFrame,
    *,
    unit: str,
    run_name: str,
    admin_columns: list[str],
    chips: dict[str, Path],
    start: tuple[float, float] | None = None,
) -> str:
    """Return the HTML text of the work order for one unit (``tasks`` in visit order)."""
    tasks = tasks.sort_values("route_seq")
    n_crim = int(tasks["over_500_plants"].astype(bool).sum()) if len(tasks) else 0
    today = _dt.date.today().isoformat()
    head = [
        "<!DOCTYPE html>",
        '<html lang="zh-CN"><head><meta charset="utf-8">',
        f"<title>Work order {_e(unit)} — {_e(run_name)}</title><style>{CSS}</style></head><body>",
        f"<h1>Poppy field verification — work order: {_e(unit)}</h1>",
        f'<div class="meta">Run: {_e(run_name)} · printed {today} · {len(tasks)} task(s), '
        f"{n_crim} criminal-size (≥ 500 plants, red) · coordinates WGS84 (GPS); GCJ-02 only for Amap/Tencent."
        "</div>",
        "<h2>Overview and route</h2>",
        overview_svg(tasks, start),
    ]
    cols = [
        "route_seq",
        "task_code",
        "priority",
        *admin_columns,
        "lon",
        "lat",
        "area_mu",
        "est_plants",
        "prob_mean",
    ]
    table = ["<h2>Tasks in visit order</h2><table><thead><tr>"]
    table += [f"<th>{_e(c)}</th>" for c in cols]
    table += [
        "<th>result (poppy / not_poppy / already_eradicated / not_reached)</th>",
        "<th>plants eradicated</th><th>checked by</th><th>date, time</th></tr></thead><tbody>",
    ]
    for rec in tasks.to_dict("records"):
        cls = "criminal" if bool(rec["over_500_plants"]) else ""
        cells = []
        for c in cols:
            v = rec.get(c)
            if c in ("lon", "lat"):
                v = f"{v:.6f}"
            elif c in ("area_mu", "prob_mean"):
                v = f"{v:.2f}"
            cells.append(f'<td class="{"code" if c == "task_code" else ""}">{_e(v)}</td>')
        table.append(f'<tr class="{cls}">' + "".join(cells) + '<td class="blank"></td>' * 4 + "</tr>")
    table.append("</tbody></table>")
    cards = ['<h2>Task cards</h2><div class="cards">']
    for rec in tasks.to_dict("records"):
        uri = _data_uri(chips.get(rec["task_code"]))
        img = (
            f'<img src="{uri}" alt="chip {_e(rec["task_code"])}">'
            if uri
            else '<div class="nochip">no image</div>'
        )
        admin = " ".join(_e(rec.get(c)) for c in admin_columns if rec.get(c))
        crim = " · <b>≥ 500 plants</b>" if bool(rec["over_500_plants"]) else ""
        cards.append(
            f'<div class="card">{img}<div><b>{_e(rec["task_code"])}</b> (#{_e(rec["route_seq"])}, '
            f"priority {_e(rec['priority'])}){crim}</div>"
            f'<div class="note">{admin}<br>WGS84 {rec["lon"]:.6f}, {rec["lat"]:.6f}<br>'
            f"GCJ-02 (Amap) {rec['gcj02_lon']:.6f}, {rec['gcj02_lat']:.6f}<br>"
            f"{rec['area_mu']:.2f} 亩 ({rec['area_m2']:.0f} m²) · ~{_e(rec['est_plants'])} plants · "
            f"p = {rec['prob_mean']:.2f}<br>"
            f'<a href="{_e(rec["nav_amap"])}">Amap</a> · <a href="{_e(rec["nav_baidu"])}">Baidu</a><br>'
            f'<span class="note">task_id {_e(rec["task_id"])}</span></div></div>'
        )
    cards.append("</div>")
    return "\n".join(head + table + cards + ["</body></html>", ""])


def write_sheet(tasks: pd.DataFrame, final: str | Path, **kwargs) -> Path:
    """Render :func:`render_sheet` to ``final`` atomically."""
    text = render_sheet(tasks, **kwargs)
    with atomic_path(Path(final), overwrite=True) as tmp:
        tmp.write_text(text, encoding="utf-8")
    return Path(final)
