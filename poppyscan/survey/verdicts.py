"""One row of a field-results file as a verdict: its cells checked, and ordered against the verdict
already recorded for the task.

A row is the verdict of one visit, ordered by ``checked_at``:

- no verdict recorded yet: the row's fields are taken (empty cells give nothing);
- the row is **later** than the recorded verdict: it replaces that verdict as a whole (fields the row
  leaves empty are cleared; a replacing row must give a result);
- the row is **earlier**: it is skipped whole and reported, the newer verdict stays;
- the same visit (same ``checked_at``, to the precision both give; or neither dated): the row corrects
  the recorded verdict field by field (empty cells are no news), unless it is visibly another team's
  (another ``checked_by``), which is rejected until ``checked_at`` says which is newer;
- a dated row over an undated verdict replaces it, unless it only adds the date (same result and team);
- a row **without** ``checked_at`` over a dated verdict cannot be ordered against it: it may only fill
  fields the dated verdict left empty; one that would change a recorded value (the result above all) is
  rejected until ``checked_at`` is filled in.

So one verdict's fields are never mixed with another's, a dated verdict is never overwritten by an
undated row, and importing files in any order ends with the newest verdict.
"""

from __future__ import annotations

import math
import sqlite3
from datetime import date, datetime, timedelta
from functools import lru_cache
from typing import Any

import numpy as np
import shapely
from pyproj import Transformer

from ..geo.utm import utm_epsg
from ..tasks import RESULT_COLUMNS
from .gpkg import from_blob
from .schema import RESULT_VALUES

# the field team's columns, as `poppyscan tasks` writes them (status is ours, not theirs)
VERDICT_FIELDS = tuple(c for c in RESULT_COLUMNS if c != "status")
MERGE, REPLACE, FILL = "merge", "replace", "fill"
RESULT_ALIASES = {
    "罂粟": "poppy",
    "是罂粟": "poppy",
    "非罂粟": "not_poppy",
    "不是罂粟": "not_poppy",
    "误报": "not_poppy",
    "已铲除": "already_eradicated",
    "未到达": "not_reached",
    "未到": "not_reached",
    "notpoppy": "not_poppy",
    "false_positive": "not_poppy",
    "eradicated": "already_eradicated",
}


class OlderRow(Exception):
    """The row is older than the verdict recorded; the message says which."""


def resolve(current: sqlite3.Row, new: dict[str, Any]) -> dict[str, Any]:
    """The task fields to set from a validated row (``status`` included), by the rules of this module.

    Raises :class:`OlderRow` for a row older than the recorded verdict and ``ValueError`` (the reason)
    for a row that cannot be placed or whose fields do not fit together.
    """
    mode = _mode(current, new)
    if mode == REPLACE:
        if "result" not in new:
            raise ValueError(
                f"checked_at {new['checked_at']} is later than the verdict recorded "
                f"({_describe(current)}) but the row has no result; fill in the result of that visit"
            )
        target = {f: new.get(f) for f in VERDICT_FIELDS}
        verdict = target
    elif mode == FILL:  # an undated row over a dated verdict: only what that verdict left empty
        target = {f: v for f, v in new.items() if _empty(current[f])}
        verdict = {f: current[f] for f in VERDICT_FIELDS} | target
    else:
        target = dict(new)
        when, old = new.get("checked_at"), current["checked_at"]
        if when and old and len(when) < len(old) and when == old[:10]:
            del target["checked_at"]  # the same visit, recorded with its time: keep the time
        verdict = {f: current[f] for f in VERDICT_FIELDS} | target
    if "result" in target:
        target["status"] = "done"  # the task statuses poppyscan tasks styles: pending / done
    result, plants = verdict.get("result"), verdict.get("plants_eradicated")
    if result in ("not_poppy", "not_reached") and plants:
        raise ValueError(f"plants_eradicated is {plants} but result is {result}")
    return target


def _mode(current: sqlite3.Row, new: dict[str, Any]) -> str:
    if current["result"] is None and current["checked_at"] is None:
        return MERGE
    when, old = new.get("checked_at"), current["checked_at"]
    by, old_by = new.get("checked_by"), current["checked_by"]
    other_team = bool(by and old_by and by != old_by)
    if when and old:
        order = _compare_when(when, old)
        if order < 0:
            raise OlderRow(
                f"checked_at {when} is older than the verdict recorded ({_describe(current)}); "
                "kept the recorded one"
            )
        if order > 0:
            return REPLACE
        if other_team:
            raise ValueError(
                f"another team's verdict ({_describe(current)}) is recorded for the same checked_at "
                f"{when}; give checked_at with the time of the visit so the newer one wins"
            )
        return MERGE
    if when:  # a dated row over an undated verdict
        same = not other_team and new.get("result", current["result"]) == current["result"]
        return MERGE if same else REPLACE
    if other_team:
        raise ValueError(
            f"checked_at is empty and another team's verdict ({_describe(current)}) is recorded; "
            "fill in checked_at so the newer one wins"
        )
    if old:  # an undated row over a dated verdict: it cannot say which visit is newer
        changed = [
            f for f, v in new.items()
            if not same_value(current[f], v) and not _empty(current[f])
        ]
        if changed:
            raise ValueError(
                f"checked_at is empty and the row would change the {', '.join(changed)} of the dated "
                f"verdict recorded ({_describe(current)}); fill in checked_at so the newer one wins"
            )
        return FILL
    return MERGE


def _empty(value: Any) -> bool:
    return value is None or (isinstance(value, str) and not value.strip())


def _compare_when(a: str, b: str) -> int:
    """Order two ``checked_at`` values (ISO date or date and time) to the precision both have."""
    if len(a) <= 10 or len(b) <= 10:
        a, b = a[:10], b[:10]
    return (a > b) - (a < b)


def _describe(current: sqlite3.Row) -> str:
    parts = [current["result"] or "no result"]
    if current["checked_by"]:
        parts.append(f"by {current['checked_by']}")
    parts.append(f"checked_at {current['checked_at']}" if current["checked_at"] else "undated")
    return ", ".join(parts)


def same_value(old: Any, new: Any) -> bool:
    if old is None or new is None:
        return old is None and new is None
    if isinstance(new, float) or isinstance(old, float):
        try:
            return math.isclose(float(old), float(new), rel_tol=0, abs_tol=1e-9)
        except (TypeError, ValueError):
            return False
    return str(old) == str(new)


def validate_row(
    cells: dict[str, Any], current: sqlite3.Row, conn: sqlite3.Connection, max_d: float, today: date
) -> dict[str, Any]:
    """The verdict fields this row gives (empty cells give nothing); raises ValueError with the reason.

    Checks each cell on its own; whether the fields fit together is checked by :func:`resolve`.
    """
    new: dict[str, Any] = {}
    problems: list[str] = []
    raw = cells.get("result")
    if raw is not None:
        key = str(raw).strip().lower().replace(" ", "_").replace("-", "_")
        value = RESULT_ALIASES.get(key, RESULT_ALIASES.get(str(raw).strip(), key))
        if value in RESULT_VALUES:
            new["result"] = value
        else:
            problems.append(f"invalid result '{raw}' (expected one of {', '.join(RESULT_VALUES)})")
    raw = cells.get("plants_eradicated")
    if raw is not None:
        try:
            number = float(str(raw).replace(",", "")) if not isinstance(raw, (int, float)) else float(raw)
            if not math.isfinite(number) or number != int(number):
                raise ValueError
            if number < 0:
                problems.append(f"plants_eradicated {raw} is negative")
            else:
                new["plants_eradicated"] = int(number)
        except (TypeError, ValueError):
            problems.append(f"plants_eradicated '{raw}' is not a whole number")
    raw = cells.get("checked_at")
    if raw is not None:
        try:
            when = parse_when(raw)
            if when[:10] > (today + timedelta(days=1)).isoformat():
                problems.append(f"checked_at '{raw}' is in the future")
            else:
                new["checked_at"] = when
        except ValueError:
            problems.append(f"checked_at '{raw}' is not a date (use YYYY-MM-DD or YYYY-MM-DD HH:MM)")
    for name in ("checked_by", "photo", "notes"):
        if cells.get(name) is not None:
            new[name] = str(cells[name]).strip()
    lon, lat = cells.get("onsite_lon"), cells.get("onsite_lat")
    if (lon is None) != (lat is None):
        problems.append("onsite_lon and onsite_lat must be given together")
    elif lon is not None:
        try:
            x, y = float(lon), float(lat)
        except (TypeError, ValueError):
            problems.append(f"onsite position '{lon}, {lat}' is not a WGS84 lon/lat in degrees")
        else:
            dist = _distance_to_plot(conn, current, x, y)
            if dist is not None and dist > max_d:
                swapped = _distance_to_plot(conn, current, y, x)
                hint = (
                    "lon and lat look swapped"
                    if swapped is not None and swapped <= max_d
                    else "check it is WGS84 lon/lat (not GCJ-02/Amap) and the right task"
                )
                where = (
                    f"is {dist:,.0f} m from the plot (limit {max_d:g} m)"
                    if dist < 1e6
                    else "is not near the plot"
                )
                problems.append(f"onsite position '{lon}, {lat}' {where}; {hint}")
            else:
                new["onsite_lon"], new["onsite_lat"] = x, y
    if problems:
        raise ValueError("; ".join(problems))
    return new


_FORMATS = ("%Y/%m/%d %H:%M:%S", "%Y/%m/%d %H:%M", "%Y/%m/%d", "%Y.%m.%d", "%Y年%m月%d日", "%Y-%m-%d %H:%M")


def parse_when(value: Any) -> str:
    """An ISO 8601 string (date, or date and time to the second) from a cell; ValueError if unparseable."""
    if isinstance(value, datetime):
        return value.replace(microsecond=0).isoformat()
    if isinstance(value, date):
        return value.isoformat()
    if hasattr(value, "to_pydatetime"):  # pandas Timestamp from a GeoPackage DateTime field
        return value.to_pydatetime().replace(microsecond=0).isoformat()
    text = str(value).strip()
    if len(text) == 10 and text[4] == "-":
        return date.fromisoformat(text).isoformat()
    try:
        return datetime.fromisoformat(text).replace(microsecond=0).isoformat()
    except ValueError:
        pass
    for fmt in _FORMATS:
        try:
            parsed = datetime.strptime(text, fmt)
        except ValueError:
            continue
        return parsed.date().isoformat() if "%H" not in fmt else parsed.isoformat()
    raise ValueError(text)


@lru_cache(maxsize=64)
def _to_utm(zone_epsg: int) -> Transformer:
    return Transformer.from_crs(4326, zone_epsg, always_xy=True)


def _distance_to_plot(conn: sqlite3.Connection, task: sqlite3.Row, lon: float, lat: float) -> float | None:
    """Metres from (lon, lat) to the task's plot polygon (0 inside), else to the task point."""
    geom = None
    if task["plot_fid"] is not None:
        row = conn.execute("SELECT geom FROM plots WHERE fid = ?", (task["plot_fid"],)).fetchone()
        geom = from_blob(row["geom"]) if row else None
    if geom is None and task["lon"] is not None and task["lat"] is not None:
        geom = shapely.Point(task["lon"], task["lat"])
    if geom is None:
        return None
    if not (math.isfinite(lon) and math.isfinite(lat) and -180 <= lon <= 180 and -90 <= lat <= 90):
        return math.inf
    c = geom.centroid
    if abs(lat) > 84 or abs(c.y - lat) > 5 or abs(c.x - lon) > 5:
        return math.inf  # far beyond any limit; avoid projecting across zones
    tr = _to_utm(utm_epsg(c.x, c.y))
    g = shapely.transform(geom, lambda xy: np.column_stack(tr.transform(xy[:, 0], xy[:, 1])))
    return float(shapely.distance(g, shapely.Point(*tr.transform(lon, lat))))
