"""WGS84 ⇄ GCJ-02 ("Mars coordinates"), the offset datum of Amap (高德), Tencent and Google China maps.

GCJ-02 is WGS84 plus a deliberately obfuscated, smoothly varying offset of roughly 100–700 m inside
mainland China. The forward transform below is the widely published one (Krasovsky semi-major axis
6378245 m, eccentricity² 0.00669342162296594323; the same formulas as the ``coordtransform`` and
``eviltransform`` libraries), accurate to well under a metre against the official offset. Outside the
rough China bounding box the transform is the identity, as the map providers do.

Keep WGS84 as the master coordinate; GCJ-02 values are a convenience for pasting into Amap/Tencent.
Baidu uses BD-09 (a further offset of GCJ-02), which this module does not produce: Baidu links pass
WGS84 with ``coord_type=wgs84`` instead.

Examples
--------
>>> lon, lat = wgs84_to_gcj02(116.404, 39.915)
>>> round(float(lon), 6), round(float(lat), 6)
(116.410244, 39.916404)
>>> wgs84_to_gcj02(2.3522, 48.8566)          # Paris: outside China, unchanged
(2.3522, 48.8566)
"""

from __future__ import annotations

import numpy as np

A = 6378245.0  # Krasovsky 1940 semi-major axis used by the published GCJ-02 formulas
EE = 0.00669342162296594323  # its first eccentricity squared

# Rough bounding box of China used by every published implementation.
_LON_MIN, _LON_MAX = 72.004, 137.8347
_LAT_MIN, _LAT_MAX = 0.8293, 55.8271


def out_of_china(lon, lat):
    """True where (lon, lat) lies outside the rough China box (there GCJ-02 equals WGS84)."""
    lon = np.asarray(lon, dtype="float64")
    lat = np.asarray(lat, dtype="float64")
    return (lon < _LON_MIN) | (lon > _LON_MAX) | (lat < _LAT_MIN) | (lat > _LAT_MAX)


def _transform_lat(x, y):
    ret = -100.0 + 2.0 * x + 3.0 * y + 0.2 * y * y + 0.1 * x * y + 0.2 * np.sqrt(np.abs(x))
    ret += (20.0 * np.sin(6.0 * x * np.pi) + 20.0 * np.sin(2.0 * x * np.pi)) * 2.0 / 3.0
    ret += (20.0 * np.sin(y * np.pi) + 40.0 * np.sin(y / 3.0 * np.pi)) * 2.0 / 3.0
    ret += (160.0 * np.sin(y / 12.0 * np.pi) + 320.0 * np.sin(y * np.pi / 30.0)) * 2.0 / 3.0
    return ret


def _transform_lon(x, y):
    ret = 300.0 + x + 2.0 * y + 0.1 * x * x + 0.1 * x * y + 0.1 * np.sqrt(np.abs(x))
    ret += (20.0 * np.sin(6.0 * x * np.pi) + 20.0 * np.sin(2.0 * x * np.pi)) * 2.0 / 3.0
    ret += (20.0 * np.sin(x * np.pi) + 40.0 * np.sin(x / 3.0 * np.pi)) * 2.0 / 3.0
    ret += (150.0 * np.sin(x / 12.0 * np.pi) + 300.0 * np.sin(x / 30.0 * np.pi)) * 2.0 / 3.0
    return ret


def _offset(lon: np.ndarray, lat: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """GCJ-02 minus WGS84, in degrees, evaluated at (lon, lat)."""
    dlat = _transform_lat(lon - 105.0, lat - 35.0)
    dlon = _transform_lon(lon - 105.0, lat - 35.0)
    radlat = np.radians(lat)
    magic = 1.0 - EE * np.sin(radlat) ** 2
    sqrtmagic = np.sqrt(magic)
    dlat = (dlat * 180.0) / ((A * (1.0 - EE)) / (magic * sqrtmagic) * np.pi)
    dlon = (dlon * 180.0) / (A / sqrtmagic * np.cos(radlat) * np.pi)
    return dlon, dlat


def _wrap(result_lon, result_lat, scalar: bool):
    if scalar:
        return float(result_lon), float(result_lat)
    return result_lon, result_lat


def wgs84_to_gcj02(lon, lat):
    """Convert WGS84 longitude/latitude (degrees; scalars or arrays) to GCJ-02.

    Returns ``(gcj_lon, gcj_lat)`` — floats for scalar input, arrays otherwise. Points outside China
    and NaNs pass through unchanged.
    """
    scalar = np.ndim(lon) == 0 and np.ndim(lat) == 0
    lon_a = np.asarray(lon, dtype="float64")
    lat_a = np.asarray(lat, dtype="float64")
    dlon, dlat = _offset(lon_a, lat_a)
    outside = out_of_china(lon_a, lat_a) | ~np.isfinite(lon_a) | ~np.isfinite(lat_a)
    glon = np.where(outside, lon_a, lon_a + dlon)
    glat = np.where(outside, lat_a, lat_a + dlat)
    return _wrap(glon, glat, scalar)


def gcj02_to_wgs84(lon, lat, *, iterations: int = 30, tol_deg: float = 1e-10):
    """Invert :func:`wgs84_to_gcj02` by fixed-point iteration (error ≪ 1 cm after a few steps).

    Useful for boundary files digitised on Amap/Tencent (GCJ-02 even when labelled WGS84).
    """
    scalar = np.ndim(lon) == 0 and np.ndim(lat) == 0
    glon = np.asarray(lon, dtype="float64")
    glat = np.asarray(lat, dtype="float64")
    wlon, wlat = glon.copy(), glat.copy()
    for _ in range(iterations):
        tlon, tlat = wgs84_to_gcj02(wlon, wlat)
        elon, elat = np.asarray(tlon) - glon, np.asarray(tlat) - glat
        wlon, wlat = wlon - elon, wlat - elat
        if np.nanmax(np.abs(np.concatenate([np.ravel(elon), np.ravel(elat)])), initial=0.0) < tol_deg:
            break
    return _wrap(wlon, wlat, scalar)
