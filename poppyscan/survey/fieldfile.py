"""Read a field-results file as rows of cells: an edited GeoPackage ``tasks`` layer (QField), a CSV
(UTF-8 with or without BOM; GB18030 as Excel saves "CSV" on Chinese Windows) or an XLSX workbook.

Each row keeps the number a person would look for: the spreadsheet row (header = row 1) for CSV and
XLSX, the feature id for a GeoPackage. Column names are normalised (trimmed, lower case, spaces and
hyphens to ``_``, anything after ``(`` dropped, so ``"Result (结果)"`` reads as ``result``).
"""

from __future__ import annotations

import csv
import io
import math
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..errors import InputError
from ..fsutil import require_file

SUFFIXES = (".gpkg", ".csv", ".xlsx", ".xlsm")


@dataclass
class FieldTable:
    """The rows of a results file, cells already stripped (empty cells are ``None``)."""

    path: Path
    kind: str  # "gpkg" | "csv" | "xlsx"
    row_label: str  # "row" or "fid"
    columns: list[str]
    rows: list[tuple[int, dict[str, Any]]] = field(default_factory=list)


def normalise_header(name: Any) -> str:
    text = str(name if name is not None else "").replace("\ufeff", "").strip()
    text = re.split(r"[(（\[]", text, maxsplit=1)[0].strip().lower()
    return re.sub(r"[\s\-]+", "_", text)


def _clean(value: Any) -> Any:
    if value is None:
        return None
    if isinstance(value, float) and math.isnan(value):
        return None
    if isinstance(value, str):
        value = value.strip()
        return value or None
    import pandas as pd

    if value is pd.NaT or value is pd.NA:
        return None
    return value.item() if hasattr(value, "item") and not hasattr(value, "to_pydatetime") else value


def read_field_table(path: str | Path, *, layer: str | None = None) -> FieldTable:
    """Read ``path`` by its suffix; raises :class:`InputError` for a missing file or an unknown format."""
    path = require_file(path, "results file")
    suffix = path.suffix.lower()
    if suffix == ".gpkg":
        table = _read_gpkg(path, layer)
    elif suffix == ".csv":
        table = _read_csv(path)
    elif suffix in (".xlsx", ".xlsm"):
        table = _read_xlsx(path, layer)
    else:
        raise InputError(
            f"results file '{path}' has unsupported format '{suffix or '(no suffix)'}'; "
            "pass a .gpkg (QField), .csv or .xlsx (save .xls/.ods as .xlsx first)"
        )
    seen: dict[str, str] = {}
    for raw, norm in zip(table.columns, [normalise_header(c) for c in table.columns], strict=True):
        if norm and norm in seen.values():
            raise InputError(
                f"results file '{path}' has two columns that both mean '{norm}' ('{raw}' and "
                f"'{next(k for k, v in seen.items() if v == norm)}'); delete one"
            )
        seen[raw] = norm
    table.columns = [seen[c] for c in table.columns]
    table.rows = [
        (n, {seen[k]: _clean(v) for k, v in cells.items() if seen.get(k)}) for n, cells in table.rows
    ]
    return table


def _read_gpkg(path: Path, layer: str | None) -> FieldTable:
    import pyogrio

    try:
        layers = [name for name, _ in pyogrio.list_layers(path)]
    except Exception as exc:  # noqa: BLE001 - GDAL says why
        raise InputError(f"results file '{path}' is not a readable GeoPackage ({exc})") from None
    name = layer or "tasks"
    if name not in layers:
        raise InputError(
            f"results file '{path}' has no layer '{name}' (layers: {', '.join(layers) or 'none'}); "
            "pass the tasks layer with --layer"
        )
    df = pyogrio.read_dataframe(path, layer=name, read_geometry=False, fid_as_index=True)
    columns = [str(c) for c in df.columns]
    rows = [
        (int(fid), dict(zip(columns, values, strict=True)))
        for fid, values in zip(df.index, df.itertuples(index=False, name=None), strict=True)
    ]
    return FieldTable(path, "gpkg", "fid", columns, rows)


def _read_csv(path: Path) -> FieldTable:
    data = path.read_bytes()
    for encoding in ("utf-8-sig", "gb18030"):
        try:
            text = data.decode(encoding)
            break
        except UnicodeDecodeError:
            continue
    else:  # pragma: no cover - gb18030 decodes almost anything
        raise InputError(f"results file '{path}' is neither UTF-8 nor GB18030 text; save it as 'CSV UTF-8'")
    first = text.split("\n", 1)[0]
    delimiter = max((",", ";", "\t"), key=first.count)
    try:
        records = list(csv.reader(io.StringIO(text, newline=""), delimiter=delimiter))
    except csv.Error as exc:
        raise InputError(
            f"results file '{path}' is not valid CSV ({exc}); re-save it from Excel as CSV UTF-8"
        ) from None
    if not records:
        raise InputError(
            f"results file '{path}' is empty; it needs a header row with task_id and the result columns"
        )
    header = [h.strip() for h in records[0]]
    rows = []
    for i, rec in enumerate(records[1:], start=2):
        if not any(c.strip() for c in rec):
            continue
        rows.append((i, {h: (rec[j] if j < len(rec) else None) for j, h in enumerate(header) if h}))
    return FieldTable(path, "csv", "row", [h for h in header if h], rows)


def _read_xlsx(path: Path, sheet: str | None) -> FieldTable:
    import zipfile

    from openpyxl import load_workbook

    try:
        wb = load_workbook(path, read_only=True, data_only=True)
    except (zipfile.BadZipFile, OSError, KeyError, ValueError) as exc:
        raise InputError(
            f"results file '{path}' is not a readable .xlsx workbook ({exc}); re-save it from Excel"
        ) from None
    try:
        if sheet is not None:
            if sheet not in wb.sheetnames:
                raise InputError(
                    f"results file '{path}' has no sheet '{sheet}' (sheets: {', '.join(wb.sheetnames)})"
                )
            ws = wb[sheet]
        else:
            ws = wb["tasks"] if "tasks" in wb.sheetnames else wb.worksheets[0]
        it = ws.iter_rows(values_only=True)
        header_row = next(it, None)
        if header_row is None:
            raise InputError(
                f"results file '{path}' is empty; it needs a header row with task_id and the result columns"
            )
        header = [str(h).strip() if h is not None else "" for h in header_row]
        rows = []
        for i, values in enumerate(it, start=2):
            if values is None or all(v is None or (isinstance(v, str) and not v.strip()) for v in values):
                continue
            rows.append((i, {h: (values[j] if j < len(values) else None) for j, h in enumerate(header) if h}))
    finally:
        wb.close()
    return FieldTable(path, "xlsx", "row", [h for h in header if h], rows)
