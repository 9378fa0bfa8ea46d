"""``tasks.csv`` (UTF-8 with BOM, so Excel shows Chinese names) and ``tasks.xlsx`` (openpyxl).

Both carry the same columns as the GeoPackage ``tasks`` layer, without geometry (``lon``/``lat`` are the
WGS84 master coordinates; ``gcj02_lon``/``gcj02_lat`` are labelled GCJ-02 for Amap/Tencent). The XLSX
adds a frozen header, filters, clickable navigation links, drop-down lists for ``result`` and
``status``, and an ``about`` sheet explaining the columns; its strings go through
:func:`~poppyscan.export.xmltext.xml_safe` (XLSX is XML: control characters are dropped).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path

import pandas as pd

from ..fsutil import atomic_path
from .xmltext import xml_safe, xml_safe_value

RESULT_VALUES = ("poppy", "not_poppy", "already_eradicated", "not_reached")
STATUS_VALUES = ("pending", "done")

ABOUT_ROWS = [
    ("task_id", "Stable task identifier (UUID). Field results are merged by this id — never edit it."),
    ("task_code", "Short code for radio/GPS use; unit prefix letter + visit number when split by unit."),
    ("route_seq", "Suggested visit order within the unit (nearest neighbour + 2-opt)."),
    ("priority", "1 = most urgent: criminal-size plots (>= 500 plants) first, then probability x area."),
    ("lon / lat", "WGS84 (GPS) coordinates — the master position."),
    ("gcj02_lon / gcj02_lat", "GCJ-02 coordinates, ONLY for pasting into Amap (高德) or Tencent maps."),
    ("nav_amap / nav_baidu", "Navigation links; they pass WGS84 with the app's own coordinate-type flag."),
    ("area_mu", "Area in mu (亩); 1 mu = 666.67 m²."),
    ("est_plants", "Estimated plant count from area; over_500_plants marks a criminal-size case."),
    ("admin_status", "inside / outside the boundary layer (outside plots are kept, never dropped)."),
    ("result", "Fill in: " + " / ".join(RESULT_VALUES)),
    ("plants_eradicated, checked_by, checked_at", "Fill in on site (checked_at as YYYY-MM-DD HH:MM)."),
    ("onsite_lon / onsite_lat", "On-site GPS position (WGS84) where the check was made."),
    ("photo, notes", "Photo file names and free notes."),
]


def _plain(df: pd.DataFrame) -> pd.DataFrame:
    return pd.DataFrame(df.drop(columns=[c for c in ("geometry",) if c in df.columns]))


def write_csv(tasks: pd.DataFrame, final: str | Path) -> Path:
    """Write ``tasks`` (geometry dropped) as UTF-8-with-BOM CSV, atomically."""
    final = Path(final)
    with atomic_path(final, overwrite=True) as tmp:
        _plain(tasks).to_csv(tmp, index=False, encoding="utf-8-sig", lineterminator="\r\n")
    return final


def _cell_value(value):
    if value is None:
        return None
    if isinstance(value, float) and math.isnan(value):
        return None
    if value is pd.NA or value is pd.NaT:
        return None
    if hasattr(value, "item"):  # numpy scalar
        value = value.item()
    return xml_safe_value(value)  # openpyxl refuses control characters (IllegalCharacterError)


def write_xlsx(
    tasks: pd.DataFrame,
    final: str | Path,
    *,
    title: str = "tasks",
    link_columns: Sequence[str] = ("nav_amap", "nav_baidu"),
) -> Path:
    """Write ``tasks`` as an Excel workbook (sheet ``tasks`` + ``about``), atomically."""
    from openpyxl import Workbook
    from openpyxl.styles import Font, PatternFill
    from openpyxl.utils import get_column_letter
    from openpyxl.worksheet.datavalidation import DataValidation

    df = _plain(tasks)
    wb = Workbook()
    ws = wb.active
    ws.title = "tasks"
    ws.append([xml_safe_value(c) for c in df.columns])
    bold = Font(bold=True)
    fill = PatternFill("solid", fgColor="DDEBF7")
    for cell in ws[1]:
        cell.font = bold
        cell.fill = fill
    link_idx = {df.columns.get_loc(c) for c in link_columns if c in df.columns}
    for r, row in enumerate(df.itertuples(index=False, name=None), start=2):
        ws.append([_cell_value(v) for v in row])
        for j, v in enumerate(row):
            cell = ws.cell(row=r, column=j + 1)
            if isinstance(cell.value, str) and cell.value.startswith("="):
                cell.data_type = "s"  # never let a name become a formula
            if j in link_idx and isinstance(v, str) and v.startswith("http"):
                cell.hyperlink = v
                cell.value = "open"
                cell.style = "Hyperlink"
    ws.freeze_panes = "C2"
    if len(df.columns):
        ws.auto_filter.ref = f"A1:{get_column_letter(len(df.columns))}{len(df) + 1}"
    for j, col in enumerate(df.columns, start=1):
        values = [str(col)] + [str(v) for v in df[col].head(200) if v is not None]
        width = min(max(len(v) for v in values) + 2, 40) if j - 1 not in link_idx else 8
        ws.column_dimensions[get_column_letter(j)].width = max(width, 6)
    n = max(len(df), 1) + 1
    for col, values in (("result", RESULT_VALUES), ("status", STATUS_VALUES)):
        if col in df.columns:
            letter = get_column_letter(df.columns.get_loc(col) + 1)
            dv = DataValidation(type="list", formula1='"' + ",".join(values) + '"', allow_blank=True)
            dv.add(f"{letter}2:{letter}{max(n, 500)}")
            ws.add_data_validation(dv)
    about = wb.create_sheet("about")
    about.append([xml_safe(title)])
    about["A1"].font = bold
    about.append([])
    for row in ABOUT_ROWS:
        about.append(list(row))
    about.column_dimensions["A"].width = 34
    about.column_dimensions["B"].width = 100
    with atomic_path(Path(final), overwrite=True) as tmp:
        wb.save(tmp)
    return Path(final)
