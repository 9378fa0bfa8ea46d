"""WGS84 → GCJ-02 against reference values published by independent implementations."""

from __future__ import annotations

import math

import numpy as np
import pytest

from poppyscan.geo.gcj02 import gcj02_to_wgs84, out_of_china, wgs84_to_gcj02

# (wgs_lon, wgs_lat, gcj_lon, gcj_lat, source)
REFERENCE = [
    # googollee/eviltransform python/test.py and go/transform_test.go
    (121.5272106, 31.1774276, 121.531541859215, 31.17530398364597, "eviltransform shanghai"),
    (113.912316, 22.543847, 113.9171764808363, 22.540796131694766, "eviltransform shenzhen"),
    (116.377817, 39.911954, 116.38404722455657, 39.91334545536069, "eviltransform beijing"),
    # wandergis/coordtransform test/app.js (also hutool CoordinateUtilTest)
    (116.404, 39.915, 116.41024449916938, 39.91640428150164, "coordtransform"),
    # a geotool CLI test (different constants; agrees to ~1 cm)
    (121.0917077, 30.6107779, 121.09626935575027, 30.608604331756705, "geotool"),
]


def _metres(lon1, lat1, lon2, lat2):
    r = 6371008.8
    p1, p2 = math.radians(lat1), math.radians(lat2)
    dp, dl = p2 - p1, math.radians(lon2 - lon1)
    a = math.sin(dp / 2) ** 2 + math.cos(p1) * math.cos(p2) * math.sin(dl / 2) ** 2
    return 2 * r * math.asin(math.sqrt(a))


@pytest.mark.parametrize("wlon, wlat, glon, glat, source", REFERENCE, ids=[r[4] for r in REFERENCE])
def test_forward_matches_reference_within_1m(wlon, wlat, glon, glat, source):
    lon, lat = wgs84_to_gcj02(wlon, wlat)
    assert isinstance(lon, float) and isinstance(lat, float)
    assert _metres(lon, lat, glon, glat) < 1.0
    # and the offset itself is the expected few hundred metres
    assert 50 < _metres(wlon, wlat, glon, glat) < 1000


def test_vectorised_equals_scalar():
    w = np.array([[r[0], r[1]] for r in REFERENCE])
    lon, lat = wgs84_to_gcj02(w[:, 0], w[:, 1])
    for i, r in enumerate(REFERENCE):
        assert _metres(lon[i], lat[i], r[2], r[3]) < 1.0


def test_outside_china_is_identity_and_nan_passes():
    assert wgs84_to_gcj02(2.3522, 48.8566) == (2.3522, 48.8566)
    assert wgs84_to_gcj02(-122.4, 37.8) == (-122.4, 37.8)
    assert bool(out_of_china(151.2, -33.9)) and not bool(out_of_china(103.8, 25.0))
    lon, lat = wgs84_to_gcj02(np.array([np.nan, 103.8]), np.array([np.nan, 25.0]))
    assert np.isnan(lon[0]) and np.isnan(lat[0]) and lon[1] != 103.8


@pytest.mark.parametrize("wlon, wlat, glon, glat, source", REFERENCE, ids=[r[4] for r in REFERENCE])
def test_inverse_round_trip(wlon, wlat, glon, glat, source):
    lon, lat = gcj02_to_wgs84(glon, glat)
    assert _metres(lon, lat, wlon, wlat) < 0.05
