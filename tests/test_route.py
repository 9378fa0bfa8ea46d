"""Route order: a permutation, never longer than the input order, 2-opt removes crossings."""

from __future__ import annotations

import numpy as np
import pytest

from poppyscan.route import haversine_matrix, nearest_neighbour, path_length, route_order, two_opt


def test_haversine_one_degree_of_latitude():
    d = haversine_matrix([100.0, 100.0], [25.0, 26.0])
    assert d[0, 1] == pytest.approx(111_195, rel=1e-3)
    assert d[0, 0] == 0 and d[1, 0] == d[0, 1]


@pytest.mark.parametrize("seed", range(6))
@pytest.mark.parametrize("with_start", [False, True])
def test_route_is_permutation_and_no_longer_than_input(seed, with_start):
    rng = np.random.default_rng(seed)
    n = int(rng.integers(1, 60))
    lon = 103.0 + rng.random(n) * 0.05
    lat = 25.0 + rng.random(n) * 0.05
    start = (103.0, 25.0) if with_start else None
    order = route_order(lon, lat, start=start)
    assert sorted(order) == list(range(n))
    pts_lon = list(lon) + ([start[0]] if start else [])
    pts_lat = list(lat) + ([start[1]] if start else [])
    dist = haversine_matrix(pts_lon, pts_lat)
    s = n if start else None
    assert path_length(order, dist, s) <= path_length(list(range(n)), dist, s) + 1e-6


def test_two_opt_uncrosses_a_square():
    # corners of a ~100 m square visited diagonally: 0-2-1-3 crosses itself
    lon = [103.0, 103.001, 103.001, 103.0]
    lat = [25.0, 25.0, 25.001, 25.001]
    dist = haversine_matrix(lon, lat)
    crossing = [0, 2, 1, 3]
    better = two_opt(crossing, dist)
    assert sorted(better) == [0, 1, 2, 3]
    assert path_length(better, dist) < path_length(crossing, dist) - 50


def test_start_point_anchors_the_route():
    lon = [103.00, 103.01, 103.02, 103.03]
    lat = [25.0] * 4
    assert route_order(lon, lat, start=(103.04, 25.0)) == [3, 2, 1, 0]
    assert route_order(lon, lat, start=(102.99, 25.0)) == [0, 1, 2, 3]


def test_small_and_empty_inputs():
    assert route_order([], []) == []
    assert route_order([103.0], [25.0]) == [0]
    assert route_order([103.0], [25.0], start=(103.1, 25.0)) == [0]
    dist = haversine_matrix([103.0, 103.1], [25.0, 25.0])
    assert nearest_neighbour(dist, []) == []


def test_large_inputs_use_the_greedy_tour_without_a_matrix(monkeypatch):
    import poppyscan.route as r

    monkeypatch.setattr(r, "MAX_TWO_OPT_POINTS", 50)
    monkeypatch.setattr(r, "haversine_matrix", None)  # must not be called
    rng = np.random.default_rng(1)
    lon, lat = 103 + rng.random(200) * 0.1, 25 + rng.random(200) * 0.1
    order = route_order(lon, lat, start=(103.0, 25.0))
    assert sorted(order) == list(range(200))
    assert r._open_length(lon, lat, order, (103.0, 25.0)) <= r._open_length(
        lon, lat, range(200), (103.0, 25.0)
    )
