"""The WGS84 UTM zone of a position, as an EPSG code (for measuring areas and distances in metres)."""

from __future__ import annotations

import numpy as np


def utm_epsg(lon, lat):  # noqa: ANN001, ANN201
    """EPSG code of the WGS84 UTM zone holding (``lon``, ``lat``): 326zz north of the equator, 327zz
    south. Scalars give an ``int``, arrays an integer array.

    >>> utm_epsg(114.3, 36.1), utm_epsg(-120.0, -33.9), utm_epsg(180.0, 0.0)
    (32650, 32711, 32601)
    >>> utm_epsg(np.array([87.0, 110.0]), np.array([25.3, 25.3])).tolist()
    [32645, 32649]
    """
    zone = (np.floor((np.asarray(lon, dtype=float) + 180) / 6).astype(int) % 60) + 1
    epsg = np.where(np.asarray(lat) >= 0, 32600, 32700) + zone
    return int(epsg) if epsg.ndim == 0 else epsg
