"""Write a :class:`~.stats.StatsTable` for people: a terminal table, CSV (UTF-8 BOM), XLSX, PNG charts."""

from __future__ import annotations

import csv
import unicodedata
import warnings
from pathlib import Path

from ..fsutil import atomic_path, check_writable
from .stats import LABELS_ZH, StatsTable

_SHOWN = (
    "year",
    "flights",
    "surveyed_ha",
    "plots_found",
    "dismissed",
    "sites",
    "repeat_sites",
    "checked",
    "verified_poppy",
    "false_positives",
    "already_eradicated",
    "plants_eradicated",
    "area_found_mu",
    "precision",
    "yoy_plots_found_pct",
)
_SHORT = {
    "surveyed_ha": "ha",
    "plots_found": "found",
    "repeat_sites": "repeat",
    "verified_poppy": "poppy",
    "false_positives": "false+",
    "already_eradicated": "erad.",
    "plants_eradicated": "plants",
    "area_found_mu": "mu",
    "precision": "precision",
    "yoy_plots_found_pct": "yoy found",
}
_CJK_FONTS = (
    "Noto Sans CJK SC",
    "Source Han Sans SC",
    "WenQuanYi Zen Hei",
    "WenQuanYi Micro Hei",
    "SimHei",
    "Microsoft YaHei",
    "PingFang SC",
    "Heiti SC",
    "AR PL UMing CN",
)


def fmt(key: str, value) -> str:
    """A cell as text: counts as integers, areas 1 decimal, precision as %, y-o-y as signed %."""
    if value is None:
        return ""
    if key == "precision":
        return f"{100 * value:.1f}%"
    if key.startswith("yoy_"):
        return f"{value:+.1f}%"
    if isinstance(value, float):
        return f"{value:,.2f}" if key.endswith("_mu") else f"{value:,.1f}"
    return str(value)


def _width(text: str) -> int:
    return sum(2 if unicodedata.east_asian_width(ch) in "WF" else 1 for ch in text)


def _pad(text: str, width: int, right: bool) -> str:
    gap = " " * (width - _width(text))
    return gap + text if right else text + gap


def format_table(table: StatsTable) -> str:
    """A plain-text table for the terminal (CJK characters count double width)."""
    if not table.rows:
        return "no plots or flights in the register for this selection"
    keys = [*table.unit_columns, *_SHOWN]
    head = [_SHORT.get(k, k) for k in keys]
    body = [[fmt(k, r.get(k)) for k in keys] for r in table.all_rows()]
    widths = [max(_width(x) for x in col) for col in zip(head, *body, strict=True)]
    n_units = len(table.unit_columns)
    lines = [
        "  ".join(_pad(c, w, i >= n_units) for i, (c, w) in enumerate(zip(row, widths, strict=True)))
        for row in [head, *body]
    ]
    lines.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join(lines)


def output_paths(out: Path, table: StatsTable) -> dict[str, Path]:
    stem = f"stats_by_{table.by}"
    return {
        "csv": out / f"{stem}.csv",
        "xlsx": out / f"{stem}.xlsx",
        "units_png": out / f"{stem}.png",
        "trend_png": out / "stats_by_year.png",
    }


def write_outputs(
    table: StatsTable, out: str | Path, *, overwrite: bool = False, charts: bool = True
) -> dict[str, Path]:
    """Write CSV, XLSX and (with ``charts``) PNG files into ``out``;
    refuses to replace files without ``overwrite``."""
    out = Path(out)
    paths = output_paths(out, table)
    if not charts:
        paths = {k: v for k, v in paths.items() if not k.endswith("png")}
    for p in paths.values():
        check_writable(p, overwrite)
    out.mkdir(parents=True, exist_ok=True)
    with atomic_path(paths["csv"], overwrite) as tmp:
        with open(tmp, "w", encoding="utf-8-sig", newline="") as fh:
            w = csv.writer(fh)
            w.writerow(table.columns)
            for r in table.all_rows():
                w.writerow(
                    [
                        "" if r.get(k) is None else (round(r[k], 4) if isinstance(r[k], float) else r[k])
                        for k in table.columns
                    ]
                )
    with atomic_path(paths["xlsx"], overwrite) as tmp:
        _write_xlsx(table, tmp)
    if charts:
        with warnings.catch_warnings():
            # unit names in Chinese on a machine without a CJK font: boxes, not a failure
            warnings.filterwarnings("ignore", message="Glyph .* missing from font", category=UserWarning)
            with atomic_path(paths["units_png"], overwrite) as tmp:
                _chart_units(table, tmp)
            with atomic_path(paths["trend_png"], overwrite) as tmp:
                _chart_trend(table, tmp)
    return paths


def _write_xlsx(table: StatsTable, path: Path) -> None:
    from openpyxl import Workbook
    from openpyxl.styles import Font

    wb = Workbook()
    ws = wb.active
    ws.title = f"by {table.by}"
    ws.append([f"{k} ({LABELS_ZH[k]})" if k in LABELS_ZH else k for k in table.columns])
    for cell in ws[1]:
        cell.font = Font(bold=True)
    for r in table.all_rows():
        ws.append([r.get(k) for k in table.columns])
    for j, k in enumerate(table.columns, start=1):
        letter = ws.cell(row=1, column=j).column_letter
        ws.column_dimensions[letter].width = max(10, min(28, len(str(ws.cell(row=1, column=j).value)) + 2))
        fmt_code = (
            "0.0%"
            if k == "precision"
            else ("0.0" if k.endswith(("_pct", "_m2", "_mu", "_ha", "100ha")) else None)
        )
        if fmt_code:
            for row in ws.iter_rows(min_row=2, min_col=j, max_col=j):
                for cell in row:
                    cell.number_format = fmt_code
    ws.freeze_panes = ws.cell(row=2, column=len(table.unit_columns) + 2)
    wb.save(path)


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib import font_manager

    installed = {f.name for f in font_manager.fontManager.ttflist}
    cjk = [f for f in _CJK_FONTS if f in installed]
    plt.rcParams["font.family"] = cjk + ["DejaVu Sans"]
    plt.rcParams["axes.unicode_minus"] = False
    return plt, bool(cjk)


def _unit_label(table: StatsTable, r: dict) -> str:
    return " / ".join(str(r[c]) for c in table.unit_columns) or "all"


def _headroom(ax) -> None:
    """Integer ticks and room above the bars for the legend."""
    from matplotlib.ticker import MaxNLocator

    ax.yaxis.set_major_locator(MaxNLocator(integer=True))
    ax.set_ylim(0, max(1.0, ax.get_ylim()[1]) * 1.35)


def _chart_units(table: StatsTable, path: Path) -> None:
    """Grouped bars per unit for the latest year: found, verified poppy, false positives, eradicated."""
    plt, cjk = _pyplot()

    def zh(text: str) -> str:  # Chinese labels only where a CJK font can draw them
        return f" {text}" if cjk else ""

    latest = max((r["year"] for r in table.rows), default=None)
    rows = [r for r in table.rows if r["year"] == latest and r["plots_found"]]
    keys = ("plots_found", "verified_poppy", "false_positives", "already_eradicated")
    colours = ("#7f8c8d", "#c0392b", "#2980b9", "#8e44ad")
    labels = [_unit_label(table, r) for r in rows] or ["(none)"]
    fig, ax = plt.subplots(figsize=(max(6.0, 1.2 * len(labels) + 2), 4.5), dpi=150)
    width = 0.8 / len(keys)
    for i, (k, c) in enumerate(zip(keys, colours, strict=True)):
        xs = [j + (i - 1.5) * width for j in range(len(rows))]
        bars = ax.bar(
            xs, [r[k] for r in rows], width, label=f"{k.replace('_', ' ')}{zh(LABELS_ZH[k])}", color=c
        )
        ax.bar_label(bars, fontsize=7)
    ax.set_xticks(
        range(len(labels)),
        labels,
        rotation=30 if len(labels) > 4 else 0,
        ha="right" if len(labels) > 4 else "center",
    )
    ax.set_ylabel(f"plots{zh('地块')}")
    ax.set_title(f"Plots by {table.by}, {latest if latest is not None else 'no data'}")
    _headroom(ax)
    ax.legend(fontsize=8, frameon=False, loc="upper center", ncols=2)
    ax.spines[["top", "right"]].set_visible(False)
    fig.tight_layout()
    fig.savefig(path, format="png")
    plt.close(fig)


def _chart_trend(table: StatsTable, path: Path) -> None:
    """Totals per year: found / verified / eradicated bars, plants eradicated and precision on the right."""
    plt, cjk = _pyplot()

    def zh(text: str) -> str:  # Chinese labels only where a CJK font can draw them
        return f" {text}" if cjk else ""

    years = sorted({r["year"] for r in table.totals})
    tot = {
        y: {
            k: sum((r[k] or 0) for r in table.totals if r["year"] == y)
            for k in ("plots_found", "verified_poppy", "already_eradicated", "checked", "plants_eradicated")
        }
        for y in years
    }
    fig, ax = plt.subplots(figsize=(max(6.0, 1.4 * len(years) + 3), 4.5), dpi=150)
    keys = (("plots_found", "#7f8c8d"), ("verified_poppy", "#c0392b"), ("already_eradicated", "#8e44ad"))
    width = 0.8 / len(keys)
    for i, (k, c) in enumerate(keys):
        bars = ax.bar(
            [j + (i - 1) * width for j in range(len(years))],
            [tot[y][k] for y in years],
            width,
            label=f"{k.replace('_', ' ')}{zh(LABELS_ZH[k])}",
            color=c,
        )
        ax.bar_label(bars, fontsize=7)
    ax.set_xticks(range(len(years)), [str(y) for y in years])
    ax.set_ylabel(f"plots{zh('地块')}")
    ax2 = ax.twinx()
    prec = [
        (tot[y]["verified_poppy"] + tot[y]["already_eradicated"]) / tot[y]["checked"] * 100
        if tot[y]["checked"]
        else float("nan")
        for y in years
    ]
    ax2.plot(range(len(years)), prec, "o-", color="#27ae60", label=f"precision{zh('识别准确率')} (%)")
    ax2.set_ylabel("precision %")
    handles = ax.get_legend_handles_labels()
    h2 = ax2.get_legend_handles_labels()
    _headroom(ax)
    ax2.set_ylim(0, 140)
    ax2.set_yticks(range(0, 101, 20))
    ax.legend(handles[0] + h2[0], handles[1] + h2[1], fontsize=8, frameon=False, loc="upper center", ncols=2)
    ax.set_title(f"Survey results by year{zh('历年结果')}")
    fig.tight_layout()
    fig.savefig(path, format="png")
    plt.close(fig)
