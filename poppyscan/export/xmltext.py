"""Text that XML 1.0 can carry: the one place task exports clean strings for XLSX, KML, GPX and HTML.

XML 1.0 forbids the C0 control characters other than tab, line feed and carriage return, lone
surrogates, U+FFFE and U+FFFF. They turn up in attribute tables (a stray ``\\x01`` pasted into a
township name of an admin layer), and openpyxl refuses them (``IllegalCharacterError``) while
ElementTree writes them into a file that Google Earth or a GPS unit then cannot parse. Exports of text
formats pass every string through :func:`xml_safe`, which drops those characters; CSV, GeoJSON and the
GeoPackage keep the values as they are.
"""

from __future__ import annotations

import re
from typing import Any

import pandas as pd

_FORBIDDEN = re.compile("[\x00-\x08\x0b\x0c\x0e-\x1f\ud800-\udfff\ufffe\uffff]")


def xml_safe(text: str) -> str:
    """``text`` without the characters XML 1.0 forbids (see the module docstring)."""
    return _FORBIDDEN.sub("", text)


def xml_safe_value(value: Any) -> Any:
    """:func:`xml_safe` for a string, any other value unchanged."""
    return xml_safe(value) if isinstance(value, str) else value


def xml_safe_frame(df: pd.DataFrame) -> pd.DataFrame:
    """A copy of ``df`` (a GeoDataFrame stays one) with :func:`xml_safe` applied to every string value and
    column name; ``attrs`` are kept. The frame itself is returned when nothing needs cleaning."""
    text_cols = [c for c in df.columns if df[c].dtype == object or pd.api.types.is_string_dtype(df[c])]
    dirty_cols = [
        c for c in text_cols
        if df[c].map(lambda v: isinstance(v, str) and _FORBIDDEN.search(v) is not None).any()
    ]
    dirty_names = any(isinstance(c, str) and _FORBIDDEN.search(c) for c in df.columns)
    if not dirty_cols and not dirty_names:
        return df
    out = df.copy()
    for c in dirty_cols:
        out[c] = out[c].map(xml_safe_value)
    if dirty_names:
        out = out.rename(columns=xml_safe_value)
    out.attrs = dict(df.attrs)
    return out
