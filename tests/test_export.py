"""Every task output read back with the library its target app relies on."""

from __future__ import annotations

import csv
import json
import re
import sqlite3
import xml.etree.ElementTree as ET
import zipfile
from pathlib import Path

import cv2
import numpy as np
import pyogrio
import pytest
import shapely
from conftest_tasks import flipped_copy, make_boundaries, make_run
from shapely.geometry import shape

from poppyscan.export.gpkg_styles import LAYER_STYLES_COLUMNS, plots_qml, probability_qml, tasks_qml
from poppyscan.tasks import build_tasks

KML = "{http://www.opengis.net/kml/2.2}"
GPX = "{http://www.topografix.com/GPX/1/1}"


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    root = tmp_path_factory.mktemp("export")
    run = make_run(root / "run")
    bnd = make_boundaries(root / "villages.gpkg", "EPSG:4490")
    build_tasks(run, admin=bnd, split_by="village")
    return run


@pytest.fixture(scope="module")
def tasks(run):
    return pyogrio.read_dataframe(run / "plots.gpkg", layer="tasks")


def test_gpkg_tasks_layer_via_gdal(run, tasks):
    info = pyogrio.read_info(run / "plots.gpkg", layer="tasks")
    assert info["geometry_type"] == "Point" and info["crs"] == "EPSG:4326" and info["features"] == 6
    types = dict(zip(info["fields"], info["ogr_types"], strict=True))
    assert types["plants_eradicated"] == "OFTInteger64" and types["onsite_lon"] == "OFTReal"
    assert types["result"] == "OFTString" and types["task_id"] == "OFTString"
    assert set(tasks["unit"]) == {"曼燕村", "曼弄村", "outside"}


def test_layer_styles_table(run):
    con = sqlite3.connect(run / "plots.gpkg")
    try:
        cols = [r[1] for r in con.execute("PRAGMA table_info(layer_styles)")]
        assert tuple(cols) == LAYER_STYLES_COLUMNS
        kind = con.execute("SELECT data_type FROM gpkg_contents WHERE table_name = 'layer_styles'").fetchone()
        assert kind == ("attributes",)
        rows = con.execute(
            "SELECT f_table_name, f_geometry_column, styleQML, useAsDefault FROM layer_styles "
            "ORDER BY f_table_name"
        ).fetchall()
    finally:
        con.close()
    assert [(r[0], r[1], r[3]) for r in rows] == [("plots", "geom", 1), ("tasks", "geom", 1)]
    plots_root = ET.fromstring(rows[0][2].split("\n", 1)[1])
    assert plots_root.find("renderer-v2").get("type") == "graduatedSymbol"
    assert plots_root.find("renderer-v2").get("attr") == "prob_mean"
    tasks_root = ET.fromstring(rows[1][2].split("\n", 1)[1])
    assert tasks_root.find("renderer-v2").get("type") == "categorizedSymbol"
    assert tasks_root.find("renderer-v2").get("attr") == "status"
    assert {c.get("value") for c in tasks_root.iter("category")} >= {"pending", "done"}
    # GDAL still sees a valid GeoPackage with the attribute table
    assert "layer_styles" in {n for n, _ in pyogrio.list_layers(run / "plots.gpkg")}


@pytest.mark.parametrize("qml", [plots_qml, tasks_qml, probability_qml])
def test_qml_documents_are_qgis_xml(qml):
    text = qml()
    assert text.startswith("<!DOCTYPE qgis")
    root = ET.fromstring(text.split("\n", 1)[1])
    assert root.tag == "qgis" and root.get("version", "").startswith("3.")


def test_probability_sidecar(run):
    root = ET.parse(run / "probability.qml").getroot()
    shader = root.find("pipe/rasterrenderer")
    assert shader.get("type") == "singlebandpseudocolor" and shader.get("band") == "1"
    values = [int(i.get("value")) for i in root.iter("item")]
    assert values[0] == 0 and values[-1] == 100 and values == sorted(values)


def test_csv_utf8_bom_and_chinese(run, tasks):
    raw = (run / "tasks.csv").read_bytes()
    assert raw.startswith(b"\xef\xbb\xbf")
    with open(run / "tasks.csv", encoding="utf-8-sig", newline="") as fh:
        rows = list(csv.DictReader(fh))
    assert len(rows) == len(tasks)
    assert rows[0]["task_id"] == tasks.iloc[0]["task_id"]
    assert {"勐海县"} == {r["county"] for r in rows if r["admin_status"] == "inside"}
    assert all(r["status"] == "pending" and r["result"] == "" for r in rows)
    for c in ("lon", "lat", "gcj02_lon", "gcj02_lat", "nav_amap", "nav_baidu", "route_seq", "priority"):
        assert c in rows[0]


def test_xlsx_with_openpyxl(run, tasks):
    from openpyxl import load_workbook

    wb = load_workbook(run / "tasks.xlsx")
    ws = wb["tasks"]
    header = [c.value for c in ws[1]]
    assert header == [c for c in tasks.columns if c != "geometry"]
    assert ws.max_row == len(tasks) + 1
    col = {name: i for i, name in enumerate(header)}
    villages = {row[col["village"]].value for row in ws.iter_rows(min_row=2)}
    assert {"曼燕村", "曼弄村"} <= villages
    link = ws.cell(row=2, column=col["nav_amap"] + 1)
    assert link.hyperlink is not None and "coordinate=wgs84" in link.hyperlink.target
    lists = [dv.formula1 for dv in ws.data_validations.dataValidation]
    assert any("already_eradicated" in f for f in lists)
    assert "about" in wb.sheetnames


def test_kmz_zip_and_kml(run, tasks):
    with zipfile.ZipFile(run / "tasks.kmz") as zf:
        names = zf.namelist()
        assert names[0] == "doc.kml"
        kml = zf.read("doc.kml")
        for code in tasks["task_code"]:
            assert f"files/{code}.jpg" in names
            assert (
                cv2.imdecode(np.frombuffer(zf.read(f"files/{code}.jpg"), np.uint8), cv2.IMREAD_COLOR)
                is not None
            )
    root = ET.fromstring(kml)
    colours = [c.text for c in root.iter(f"{KML}color")]
    assert colours and all(re.fullmatch(r"[0-9a-f]{8}", c) for c in colours)
    by_code = tasks.set_index("task_code")
    placemarks = [p for p in root.iter(f"{KML}Placemark") if p.find(f"{KML}Point") is not None]
    assert len(placemarks) == len(tasks)
    for pm in placemarks:
        code = pm.find(f"{KML}name").text
        lon, lat = map(float, pm.find(f"{KML}Point/{KML}coordinates").text.split(","))
        assert lon == pytest.approx(by_code.loc[code, "lon"], abs=1e-7)  # lon,lat order
        assert lat == pytest.approx(by_code.loc[code, "lat"], abs=1e-7)
        data = {d.get("name"): d.find(f"{KML}value").text for d in pm.iter(f"{KML}Data")}
        assert data["task_id"] == by_code.loc[code, "task_id"] and data["status"] == "pending"
        assert f'src="files/{code}.jpg"' in pm.find(f"{KML}description").text
    outlines = [p for p in root.iter(f"{KML}Placemark") if p.find(f".//{KML}Polygon") is not None]
    assert len(outlines) == len(tasks)


def test_kmz_via_gdal(run, tasks):
    drivers = pyogrio.list_drivers()
    driver = "LIBKML" if "LIBKML" in drivers else "KML"
    path = f"/vsizip/{run / 'tasks.kmz'}/doc.kml"
    layers = [name for name, _ in pyogrio.list_layers(path)]
    points = []
    for layer in layers:
        df = pyogrio.read_dataframe(path, layer=layer)
        if len(df) and (df.geometry.geom_type == "Point").any():
            points.append(df[df.geometry.geom_type == "Point"])
    got = sorted(n for df in points for n in df["Name"])
    assert got == sorted(tasks["task_code"]), driver
    if driver == "LIBKML":  # LIBKML maps ExtendedData to fields
        assert all("task_id" in df.columns for df in points)


def test_gpx_via_gdal(run, tasks):
    wpts = pyogrio.read_dataframe(run / "tasks.gpx", layer="waypoints")
    assert sorted(wpts["name"]) == sorted(tasks["task_code"])
    assert all(n.isascii() and len(n) <= 8 for n in wpts["name"])
    np.testing.assert_allclose(np.sort(wpts.geometry.x), np.sort(tasks["lon"]), atol=1e-7)
    routes = pyogrio.read_dataframe(run / "tasks.gpx", layer="routes")
    sizes = tasks.groupby("unit").size()
    assert len(routes) == (sizes >= 2).sum()  # a one-task unit has a waypoint but no route
    rpts = pyogrio.read_dataframe(run / "tasks.gpx", layer="route_points")
    for _, group in rpts.groupby("route_fid"):
        codes = list(group.sort_values("route_point_id")["name"])
        unit = tasks.set_index("task_code").loc[codes[0], "unit"]
        expected = list(tasks[tasks["unit"] == unit].sort_values("route_seq")["task_code"])
        assert codes == expected
    root = ET.parse(run / "tasks.gpx").getroot()
    assert root.tag == f"{GPX}gpx" and root.get("version") == "1.1"
    # GPX 1.1 schema order inside wpt
    order = ["ele", "time", "magvar", "geoidheight", "name", "cmt", "desc", "src", "link", "sym", "type"]
    for wpt in root.iter(f"{GPX}wpt"):
        tags = [c.tag.replace(GPX, "") for c in wpt]
        assert tags == sorted(tags, key=order.index)


def test_geojson_rfc7946(run, tasks):
    doc = json.loads((run / "plots.geojson").read_text(encoding="utf-8"))
    assert doc["type"] == "FeatureCollection" and "crs" not in doc
    assert len(doc["features"]) == len(tasks)
    holes = 0
    for feat in doc["features"]:
        geom = shape(feat["geometry"])
        polys = list(getattr(geom, "geoms", [geom]))
        for poly in polys:
            assert poly.exterior.is_ccw
            for ring in poly.interiors:
                assert not ring.is_ccw
                holes += 1
        x, y = shapely.get_coordinates(geom).T
        assert (x > 113.9).all() and (x < 114.1).all() and (y > 22.9).all() and (y < 23.1).all()
        assert feat["properties"]["task_id"] in set(tasks["task_id"])
    assert holes == 1
    gdf = pyogrio.read_dataframe(run / "plots.geojson")
    assert gdf.crs.to_epsg() == 4326 and len(gdf) == len(tasks)
    assert set(gdf["village"].dropna()) == {"曼燕村", "曼弄村"}


def test_chips_and_work_orders(run, tasks):
    for code in tasks["task_code"]:
        img = cv2.imread(str(run / "chips" / f"{code}.jpg"))
        assert img.shape == (320, 320, 3)
        assert (img[:, :, 1].astype(int) - img[:, :, 0]).mean() > 20  # green field from the mosaic
    assert set(tasks["chip"]) == {f"chips/{c}.jpg" for c in tasks["task_code"]}
    html = (run / "work_orders" / "曼燕村.html").read_text(encoding="utf-8")
    assert "<svg" in html and "<polyline" in html and html.count("data:image/jpeg;base64,") == 3
    svg = ET.fromstring(html[html.index("<svg") : html.index("</svg>") + 6])  # well-formed inline SVG
    assert len(svg.findall("{http://www.w3.org/2000/svg}circle")) == 3
    assert "曼燕村" in html
    assert not re.search(r"""<(script|link|img)[^>]+(src|href)=["']https?:""", html), "no internet assets"


def _transposed_copy(src_path, dst_path):
    """The raster with rows and columns swapped under a transform with no zero b and d (not axis-aligned):
    the same ground, each pixel where it was."""
    import rasterio
    from affine import Affine

    with rasterio.open(src_path) as src:
        t, profile = src.transform, src.profile.copy()
        profile.update(transform=Affine(0, t.a, t.c, t.e, 0, t.f), width=src.height, height=src.width)
        with rasterio.open(dst_path, "w", **profile) as dst:
            dst.write(np.transpose(src.read(), (0, 2, 1)))
            dst.colorinterp = src.colorinterp
    return dst_path


@pytest.mark.parametrize("layout", ["south-up", "south-up-east-to-west", "transposed"])
def test_chips_of_a_south_up_mosaic_equal_the_north_up_ones(tmp_path, layout):
    """A mosaic stored south-up (positive y pixel size) gives the same north-up chips as the original; so do
    one with columns running west and one whose geotransform swaps rows and columns (warped: nearly)."""
    import rasterio

    from poppyscan.export.chips import ChipRequest, cut_chip, write_chips

    sample = Path(__file__).resolve().parents[1] / "sample_tiles" / "cgcs2000_gk114_alpha"
    if layout == "transposed":
        flipped = _transposed_copy(sample / "mosaic.tif", tmp_path / "transposed.tif")
        tolerance = (2.5, 15)  # warped through a WarpedVRT: resampled twice
    else:
        flipped = flipped_copy(sample / "mosaic.tif", tmp_path / "south_up.tif", cols=layout != "south-up")
        tolerance = (0.5, 2)
        with rasterio.open(flipped) as src:
            assert src.transform.e > 0 and (src.transform.a < 0) == (layout != "south-up")
    truth = pyogrio.read_dataframe(sample / "truth.gpkg", layer="plots")
    for i, geom in enumerate(truth.geometry):
        req = ChipRequest(f"P{i}", geom, truth.crs, sample / "mosaic.tif", f"P{i}")
        with rasterio.open(sample / "mosaic.tif") as src:
            north = cut_chip(src, req, 24.0, 320)
        with rasterio.open(flipped) as src:
            south = cut_chip(src, req, 24.0, 320)
        assert south.shape == north.shape == (320, 320, 3)
        diff = np.abs(south.astype(int) - north)
        assert diff.mean() < tolerance[0] and np.percentile(diff, 99) <= tolerance[1], (i, diff.mean())
    reqs = [ChipRequest(f"P{i}", g, truth.crs, flipped, f"P{i}") for i, g in enumerate(truth.geometry)]
    written = write_chips(reqs, tmp_path / "chips", chip_size_m=24.0, chip_px=320)
    assert sorted(written) == [f"P{i}" for i in range(len(truth))]
