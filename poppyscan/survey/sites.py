"""Sites: the same place across flights and years.

A new plot joins an existing site when its polygon overlaps one of the site's plots or its centroid lies
within ``link_distance_m`` of one of their centroids; otherwise it starts a new site (separate plots of
one flight are separate sites, even when close together). When several sites qualify the plot joins a
site with findings before one holding only desk-dismissed plots, then the one it overlaps most (else the
nearest). A plot whose site was already seen on an earlier flight date is a *repeat*; sites count
findings only (:data:`~.schema.FINDING`).
"""

from __future__ import annotations

import math
import sqlite3

import geopandas as gpd
import numpy as np
import shapely
from shapely.strtree import STRtree

from .gpkg import from_blob, to_blob
from .rundir import RunData
from .schema import FINDING


def link_sites(conn: sqlite3.Connection, run: RunData, d: float) -> tuple[list[int], int, int]:
    """Site id for each plot of ``run`` (new sites created as needed);
    also counts the findings that started a new site and those linked to a known one."""
    plots = run.plots
    n = len(plots)
    if n == 0:
        return [], 0, 0
    metric = run.metric_crs
    new_m = np.asarray(gpd.GeoSeries(plots.geometry.values, crs=4326).to_crs(metric).values)
    new_m = shapely.make_valid(new_m)
    new_c = shapely.centroid(new_m)

    # existing plots near this run: bbox prefilter in degrees, exact tests in metres
    minx, miny, maxx, maxy = plots.total_bounds
    pad_lat = d / 111_320 + 1e-6
    pad_lon = d / (111_320 * max(0.05, math.cos(math.radians((miny + maxy) / 2)))) + 1e-6
    rows = conn.execute(
        f"SELECT p.site_id, p.geom, {FINDING} AS finding FROM plots p "  # noqa: S608 - constant SQL
        "WHERE p.maxx >= ? AND p.minx <= ? AND p.maxy >= ? AND p.miny <= ?",
        (minx - pad_lon, maxx + pad_lon, miny - pad_lat, maxy + pad_lat),
    ).fetchall()
    old_sites = np.array([r["site_id"] for r in rows], dtype=np.int64)
    if rows:
        old_m = np.asarray(
            gpd.GeoSeries([from_blob(r["geom"]) for r in rows], crs=4326).to_crs(metric).values
        )
        old_m = shapely.make_valid(old_m)
        old_c = shapely.centroid(old_m)
        old_tree = STRtree(old_m)

    # best existing site per plot: a finding's site before a dismissed plot's, overlap first, larger
    # overlap, then nearer centroid
    best: dict[int, tuple[tuple, int]] = {}
    if rows:
        for i in range(n):
            for k in old_tree.query(shapely.buffer(new_m[i], d)):
                ok, score = _linked(new_m[i], new_c[i], old_m[k], old_c[k], d)
                score = (0 if rows[k]["finding"] else 1, *score)
                if ok and (i not in best or score < best[i][0]):
                    best[i] = (score, int(old_sites[k]))

    site_ids: list[int] = []
    n_new = n_linked = 0
    for i in range(n):
        finding = not plots["dismissed"].iloc[i]
        if i in best:
            site_ids.append(best[i][1])
            n_linked += finding
            continue
        c = shapely.centroid(plots.geometry.iloc[i])
        cur = conn.execute(
            "INSERT INTO sites (geom, site_code, first_seen, last_seen, n_detections, "
            "minx, miny, maxx, maxy) VALUES (?, '', ?, ?, 0, ?, ?, ?, ?)",
            (to_blob(c), run.flight_date, run.flight_date, c.x, c.y, c.x, c.y),
        )
        conn.execute("UPDATE sites SET site_code = ? WHERE fid = ?", (f"S{cur.lastrowid:06d}", cur.lastrowid))
        site_ids.append(cur.lastrowid)
        n_new += finding
    return site_ids, n_new, n_linked


def _linked(a, ac, b, bc, d: float) -> tuple[bool, tuple[int, float]]:
    """Whether two metric plot polygons are the same place, and a sort score (lower is better)."""
    overlap = shapely.intersection(a, b).area if shapely.intersects(a, b) else 0.0
    if overlap > 0:
        return True, (0, -overlap)
    dist = shapely.distance(ac, bc)
    return dist <= d, (1, dist)


def refresh_sites(conn: sqlite3.Connection, site_ids: set[int]) -> None:
    """Recompute each site's point (mean member centroid), first/last seen and detection count, from its
    findings (a site holding only desk-dismissed plots: from those, with ``n_detections`` 0)."""
    for sid in site_ids:
        r = conn.execute(
            f"SELECT {FINDING} AS finding, avg(lon) AS x, avg(lat) AS y, min(flight_date) AS f, "  # noqa: S608
            "max(flight_date) AS l, count(*) AS n FROM plots p WHERE site_id = ? "
            "GROUP BY finding ORDER BY finding DESC LIMIT 1",
            (sid,),
        ).fetchone()
        if r is None:
            continue
        point = shapely.Point(r["x"], r["y"])
        conn.execute(
            "UPDATE sites SET geom=?, first_seen=?, last_seen=?, n_detections=?, "
            "minx=?, miny=?, maxx=?, maxy=? WHERE fid=?",
            (to_blob(point), r["f"], r["l"], r["n"] if r["finding"] else 0, *(r["x"], r["y"]) * 2, sid),
        )
