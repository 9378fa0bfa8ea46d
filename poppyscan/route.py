"""Visit order for a field team: an open path through task points, nearest neighbour + 2-opt.

Distances are great-circle (haversine) metres between WGS84 points. The path is open (the team does
not need to come back) and, when a start point is given (the team's base or the village office), it
begins there. Two candidate tours are improved with 2-opt — the nearest-neighbour tour and the input
order — and the shorter is returned, so the result is never longer than the order it was given.

Examples
--------
>>> order = route_order([0.0, 0.002, 0.001, 0.003], [0.0, 0.0, 0.0, 0.0])
>>> order
[0, 2, 1, 3]
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

EARTH_RADIUS_M = 6371008.8
# Above this many points the n×n matrix (and 2-opt, O(n²) per pass) is skipped: greedy tour only.
MAX_TWO_OPT_POINTS = 2000


def haversine_matrix(lon: Sequence[float], lat: Sequence[float]) -> np.ndarray:
    """Pairwise great-circle distances in metres, shape ``(n, n)``."""
    lam = np.radians(np.asarray(lon, dtype="float64"))
    phi = np.radians(np.asarray(lat, dtype="float64"))
    dphi = phi[:, None] - phi[None, :]
    dlam = lam[:, None] - lam[None, :]
    a = np.sin(dphi / 2) ** 2 + np.cos(phi)[:, None] * np.cos(phi)[None, :] * np.sin(dlam / 2) ** 2
    return 2 * EARTH_RADIUS_M * np.arcsin(np.sqrt(np.clip(a, 0.0, 1.0)))


def haversine_to(lon0: float, lat0: float, lon: Sequence[float], lat: Sequence[float]) -> np.ndarray:
    """Great-circle distances in metres from one point to many (no n×n matrix)."""
    lam, phi = np.radians(np.asarray(lon, dtype="float64")), np.radians(np.asarray(lat, dtype="float64"))
    lam0, phi0 = np.radians(lon0), np.radians(lat0)
    a = np.sin((phi - phi0) / 2) ** 2 + np.cos(phi0) * np.cos(phi) * np.sin((lam - lam0) / 2) ** 2
    return 2 * EARTH_RADIUS_M * np.arcsin(np.sqrt(np.clip(a, 0.0, 1.0)))


def _open_length(lon: np.ndarray, lat: np.ndarray, order: Sequence[int], start) -> float:
    idx = np.asarray(order, dtype=int)
    x, y = lon[idx], lat[idx]
    if start:
        x, y = np.r_[start[0], x], np.r_[start[1], y]
    if len(x) < 2:
        return 0.0
    return float(
        sum(haversine_to(x[i], y[i], x[i + 1 : i + 2], y[i + 1 : i + 2])[0] for i in range(len(x) - 1))
    )


def _nearest_neighbour_lazy(lon: np.ndarray, lat: np.ndarray, start) -> list[int]:
    """Nearest-neighbour tour computing one row of distances per step (memory O(n), for large n)."""
    remaining = np.arange(len(lon))
    if start:
        cx, cy = start
    else:
        cx, cy = lon[0], lat[0]
    tour: list[int] = []
    while remaining.size:
        k = int(np.argmin(haversine_to(cx, cy, lon[remaining], lat[remaining])))
        node = int(remaining[k])
        tour.append(node)
        cx, cy = lon[node], lat[node]
        remaining = np.delete(remaining, k)
    return tour


def path_length(order: Sequence[int], dist: np.ndarray, start: int | None = None) -> float:
    """Length of the open path visiting ``order`` (from node ``start`` first, when given)."""
    seq = ([start] if start is not None else []) + list(order)
    if len(seq) < 2:
        return 0.0
    idx = np.asarray(seq)
    return float(dist[idx[:-1], idx[1:]].sum())


def nearest_neighbour(dist: np.ndarray, nodes: Sequence[int], start: int | None = None) -> list[int]:
    """Greedy tour over ``nodes``: from ``start`` (not part of ``nodes``) or the first node, always go
    to the closest unvisited one."""
    remaining = list(nodes)
    if not remaining:
        return []
    tour: list[int] = []
    current = start
    if current is None:
        current = remaining.pop(0)
        tour.append(current)
    rem = np.asarray(remaining, dtype=int)
    while rem.size:
        k = int(np.argmin(dist[current, rem]))
        current = int(rem[k])
        tour.append(current)
        rem = np.delete(rem, k)
    return tour


def two_opt(
    order: Sequence[int], dist: np.ndarray, start: int | None = None, max_passes: int = 50
) -> list[int]:
    """Improve an open path by reversing segments while that shortens it (first-improvement per i).

    With ``start`` the path is anchored at that node (which is not in ``order``); otherwise both ends
    are free. Implemented with two zero-distance virtual end nodes so open ends cost nothing.
    """
    n = len(order)
    if n < 3 and start is None or n < 2:
        return list(order)
    # Extended matrix: real nodes, then virtual BEGIN (b) and END (e) with zero distance to all.
    size = dist.shape[0]
    ext = np.zeros((size + 2, size + 2))
    ext[:size, :size] = dist
    b, e = size, size + 1
    first = start if start is not None else b
    p = np.array([first, *order, e], dtype=int)
    m = len(p)
    for _ in range(max_passes):
        improved = False
        for i in range(1, m - 2):
            a_, b_ = p[i - 1], p[i]
            js = np.arange(i + 1, m - 1)
            c, d = p[js], p[js + 1]
            delta = ext[a_, c] + ext[b_, d] - ext[a_, b_] - ext[c, d]
            k = int(np.argmin(delta))
            if delta[k] < -1e-7:
                j = int(js[k])
                p[i : j + 1] = p[i : j + 1][::-1].copy()
                improved = True
        if not improved:
            break
    return [int(x) for x in p[1:-1]]


def route_order(
    lon: Sequence[float], lat: Sequence[float], start: tuple[float, float] | None = None
) -> list[int]:
    """Visit order (indices into ``lon``/``lat``) for one team.

    Parameters
    ----------
    lon, lat
        WGS84 degrees of the task points.
    start
        Optional ``(lon, lat)`` of where the team sets off; the route begins nearest to it.

    Returns
    -------
    list of int
        A permutation of ``range(len(lon))``, never longer (as an open path from ``start``) than the
        input order.
    """
    n = len(lon)
    if n == 0:
        return []
    if n > MAX_TWO_OPT_POINTS:  # no n×n matrix: greedy tour only, kept if shorter than the input order
        x, y = np.asarray(lon, dtype="float64"), np.asarray(lat, dtype="float64")
        cands = [list(range(n)), _nearest_neighbour_lazy(x, y, start)]
        return min(cands, key=lambda c: _open_length(x, y, c, start))
    lons = list(lon) + ([start[0]] if start else [])
    lats = list(lat) + ([start[1]] if start else [])
    dist = haversine_matrix(lons, lats)
    s = n if start else None
    nodes = list(range(n))
    candidates = [nodes, nearest_neighbour(dist, nodes, start=s)]
    if not start:
        # the nearest-neighbour tour from the point at either end of the set's longest axis
        far = int(np.argmax(dist[0, :n]))
        far2 = int(np.argmax(dist[far, :n]))
        candidates.append(nearest_neighbour(dist, [far2] + [i for i in nodes if i != far2]))
    if n <= MAX_TWO_OPT_POINTS:
        candidates = [two_opt(c, dist, start=s) for c in candidates]
    return min(candidates, key=lambda c: path_length(c, dist, start=s))
