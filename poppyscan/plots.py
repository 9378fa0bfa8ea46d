"""Plot table: merge detections across overlapping mosaics and compute the attributes.

Areas and centroids are computed in a metric CRS: the output CRS itself when it is projected in
metres (UTM, CGCS2000 Gauss-Krüger, ...) and every plot lies within (or :data:`AREA_OF_USE_MARGIN_DEG`
of) its area of use, else each plot's own UTM zone (geographic or non-metre CRS, or mosaics from distant
zones brought into the first one's CRS, where the grid's scale error would distort areas).
Columns follow docs/INTERFACES.md: ``plot_id`` (1..n, north to south then west to east), ``area_m2``,
``area_mu`` (1 亩 = 666.67 m²), ``prob_mean``, ``prob_max``, ``score`` (the plot scorer's, 0-1; empty
when the model has none), ``est_plants`` (area x plants per m²,
rounded), ``over_500_plants`` (``est_plants >= criminal_plants``), ``lon``/``lat`` (WGS84 centroid),
``mosaic`` (source file name), ``mosaic_index`` (0-based position of that mosaic in ``run.json`` ``inputs``:
file names need not be unique), ``model_version``.
"""

from __future__ import annotations

import geopandas as gpd
import numpy as np
import pandas as pd
import shapely
from scipy.sparse import coo_matrix
from scipy.sparse.csgraph import connected_components

from .geo.utm import utm_epsg

M2_PER_MU = 2000 / 3  # 1 亩 = 2000/3 m² (666.67), exactly
COLUMNS = ["plot_id", "area_m2", "area_mu", "prob_mean", "prob_max", "score", "est_plants",
           "over_500_plants", "lon", "lat", "mosaic", "mosaic_index", "model_version"]


AREA_OF_USE_MARGIN_DEG = 2.0
"""How far (degrees) beyond its CRS's area of use a plot may lie and still be measured in that CRS:
2 degrees past the edge of a 3-degree Gauss-Krüger zone the grid's area error is ~0.3 %."""


def _metric(crs) -> bool:  # noqa: ANN001
    return bool(crs.is_projected and crs.axis_info
                and all(a.unit_name in ("metre", "meter") for a in crs.axis_info))


def _area_of_use(crs):  # noqa: ANN001, ANN202
    """The CRS's area of use; a CRS read from a GeoTIFF often has none until matched to its EPSG code."""
    if crs.area_of_use is not None:
        return crs.area_of_use
    from pyproj import CRS

    code = crs.to_epsg(min_confidence=70)
    return CRS.from_epsg(code).area_of_use if code else None


def measure(geoms: gpd.GeoSeries) -> tuple[np.ndarray, gpd.GeoSeries]:
    """Areas (m²) and WGS84 centroids of ``geoms``, each measured in a metric CRS valid where it lies.

    The series' own CRS when it is metric and every geometry lies within
    :data:`AREA_OF_USE_MARGIN_DEG` of its area of use (one call, the usual case); otherwise each
    geometry in the UTM zone of its own position.

    >>> from shapely.geometry import box
    >>> x, y = 500000, 4000000  # 10 m x 10 m on the central meridian of UTM 17N, seen from zone 11N
    >>> g = gpd.GeoSeries([box(x, y, x + 10, y + 10)], crs="EPSG:32617").to_crs("EPSG:32611")
    >>> round(float(g.area.iloc[0]), 1), round(float(measure(g)[0][0]), 1)
    (129.2, 100.0)
    """
    crs = geoms.crs
    lonlat = gpd.GeoSeries(geoms.representative_point(), crs=crs).to_crs("EPSG:4326")
    lon, lat = lonlat.x.to_numpy(), lonlat.y.to_numpy()
    if _metric(crs):
        aou, m = _area_of_use(crs), AREA_OF_USE_MARGIN_DEG
        if aou is None or ((lon >= aou.west - m) & (lon <= aou.east + m)
                           & (lat >= aou.south - m) & (lat <= aou.north + m)).all():
            return geoms.area.to_numpy(), gpd.GeoSeries(geoms.centroid, crs=crs).to_crs("EPSG:4326")
    epsg = utm_epsg(lon, lat)
    area = np.zeros(len(geoms))
    cx, cy = np.zeros(len(geoms)), np.zeros(len(geoms))
    for code in np.unique(epsg):
        idx = np.flatnonzero(epsg == code)
        proj = geoms.iloc[idx].to_crs(int(code))
        area[idx] = proj.area.to_numpy()
        c = gpd.GeoSeries(proj.centroid, crs=int(code)).to_crs("EPSG:4326")
        cx[idx], cy[idx] = c.x.to_numpy(), c.y.to_numpy()
    return area, gpd.GeoSeries(gpd.points_from_xy(cx, cy), index=geoms.index, crs="EPSG:4326")


def merge_overlapping(gdf: gpd.GeoDataFrame) -> gpd.GeoDataFrame:
    """Union detections from different mosaics that intersect; one row per plot.

    Columns in: ``geometry, prob_mean, prob_max, mosaic, source`` (``source`` = mosaic index) and
    optionally ``score``. A group keeps the highest ``prob_mean``, ``prob_max`` and ``score`` of its
    members (the clearest view) and the ``mosaic`` and ``source`` of one member, the one with the highest
    ``prob_max`` (largest area on ties), so the plot names the file and the input it is cut from.
    """
    n = len(gdf)
    if n == 0 or gdf["source"].nunique() < 2:
        return gdf.reset_index(drop=True)
    gdf = gdf.reset_index(drop=True)
    left, right = gdf.sindex.query(gdf.geometry.values, predicate="intersects")
    cross = gdf["source"].values[left] != gdf["source"].values[right]
    graph = coo_matrix((np.ones(cross.sum()), (left[cross], right[cross])), shape=(n, n))
    ngroups, labels = connected_components(graph, directed=False)
    if ngroups == n:
        return gdf
    gdf = gdf.assign(_group=labels, _area=gdf.geometry.area)
    rows = []
    for _, grp in gdf.groupby("_group", sort=True):
        if len(grp) == 1:
            rows.append(grp.iloc[0])
            continue
        best = grp.sort_values(["prob_max", "_area"], ascending=False).iloc[0].copy()
        best["prob_mean"] = grp["prob_mean"].max()
        best["prob_max"] = grp["prob_max"].max()
        if "score" in grp:
            best["score"] = grp["score"].max()
        geom = shapely.make_valid(shapely.union_all(grp.geometry.values))
        for part in getattr(geom, "geoms", [geom]):  # pieces meeting only at a point stay apart
            if part.geom_type == "Polygon" and part.area > 0:
                row = best.copy()
                row["geometry"] = part
                rows.append(row)
    out = gpd.GeoDataFrame(rows, geometry="geometry", crs=gdf.crs).drop(columns=["_group", "_area"])
    return out.reset_index(drop=True)


def plot_table(gdf: gpd.GeoDataFrame, *, plants_per_m2: float, criminal_plants: int, min_area_m2: float,
               model_version: str) -> gpd.GeoDataFrame:
    """Attributes for merged detections (``geometry, prob_mean, prob_max, mosaic, source``) -> plots layer.

    ``source`` (the input's index; 0 for every row when absent: one mosaic) becomes ``mosaic_index``.
    """
    if len(gdf) == 0:
        empty = gpd.GeoDataFrame({c: pd.Series(dtype=t) for c, t in _DTYPES.items()},
                                 geometry=gpd.GeoSeries([], crs=gdf.crs), crs=gdf.crs)
        return empty
    area, centroid = measure(gdf.geometry)
    keep = area >= min_area_m2
    gdf, area, centroid = gdf[keep], area[keep], centroid[keep]
    est = np.rint(area * plants_per_m2).astype(np.int64)
    out = gpd.GeoDataFrame({
        "area_m2": np.round(area, 3),
        "area_mu": np.round(area / M2_PER_MU, 5),
        "prob_mean": np.round(gdf["prob_mean"].to_numpy(np.float64), 4),
        "prob_max": np.round(gdf["prob_max"].to_numpy(np.float64), 4),
        "score": np.round(gdf["score"].to_numpy(np.float64), 4) if "score" in gdf else np.nan,
        "est_plants": est,
        "over_500_plants": est >= criminal_plants,
        "lon": np.round(centroid.x.to_numpy(), 8),
        "lat": np.round(centroid.y.to_numpy(), 8),
        "mosaic": gdf["mosaic"].to_numpy(),
        "mosaic_index": (gdf["source"].to_numpy(np.int64) if "source" in gdf
                         else np.zeros(len(gdf), np.int64)),
        "model_version": model_version,
    }, geometry=gdf.geometry.to_numpy(), crs=gdf.crs)
    order = np.lexsort((out["lon"].to_numpy(), -out["lat"].to_numpy()))
    out = out.iloc[order].reset_index(drop=True)
    out.insert(0, "plot_id", np.arange(1, len(out) + 1, dtype=np.int64))
    return out[COLUMNS + ["geometry"]]


_DTYPES = {"plot_id": "int64", "area_m2": "float64", "area_mu": "float64", "prob_mean": "float64",
           "prob_max": "float64", "score": "float64", "est_plants": "int64", "over_500_plants": "bool",
           "lon": "float64",
           "lat": "float64", "mosaic": "object", "mosaic_index": "int64", "model_version": "object"}


def priority_order(plots: pd.DataFrame) -> np.ndarray:
    """Positions of ``plots`` in work order, shared by the field tasks and the desk review: plots of
    ``over_500_plants`` first, then the expected poppy area (``prob_mean`` x ``area_m2``; ``prob_max``
    where the mean is missing), then ``plot_id``. A missing column or value counts as 0 / False.

    >>> df = pd.DataFrame({"plot_id": [1, 2, 3], "area_m2": [10.0, 40.0, 5.0], "prob_mean": [0.9, 0.5, None],
    ...                    "prob_max": [1.0, 1.0, 1.0], "over_500_plants": [False, False, True]})
    >>> priority_order(df).tolist()
    [2, 1, 0]
    """
    def col(name: str, default: float) -> pd.Series:
        return plots[name] if name in plots else pd.Series(default, index=plots.index)

    prob = col("prob_mean", np.nan).astype(float).fillna(col("prob_max", np.nan).astype(float))
    area = col("area_m2", np.nan).astype(float)
    score = np.nan_to_num(prob.to_numpy(float), nan=0.0) * np.nan_to_num(area.to_numpy(float), nan=0.0)
    over = col("over_500_plants", False).fillna(False).astype(bool).to_numpy()
    return np.lexsort((col("plot_id", 0).to_numpy(), -score, ~over))
