"""GeoPackage ``tasks`` layer and QGIS default styles.

QGIS looks for a ``layer_styles`` table in a GeoPackage and applies the row with ``useAsDefault`` true
for a layer when it is opened, so ``plots`` (graduated by ``prob_mean``) and ``tasks`` (categorised by
``status``, labelled with ``task_code``) open styled in QGIS and QField. The table has exactly the
columns QGIS itself creates (DESIGN.md §3) and is registered in ``gpkg_contents`` as ``attributes``.

A raster's style lives in a sidecar ``<raster>.qml`` that QGIS loads automatically:
:func:`write_probability_style` writes ``probability.qml`` beside ``probability.tif`` (and
``probability_N.qml`` beside each further mosaic's ``probability_N.tif``).

The QML below is written by hand as QGIS 3 XML (renderer-v2 / pipe elements); every generated document
is parsed back with :mod:`xml.etree` before use.
"""

from __future__ import annotations

import contextlib
import datetime as _dt
import shutil
import sqlite3
import xml.etree.ElementTree as ET
from pathlib import Path
from xml.sax.saxutils import quoteattr

import geopandas as gpd
import pyogrio

from ..fsutil import atomic_path, file_lock

QML_HEAD = "<!DOCTYPE qgis PUBLIC 'http://mrcc.com/qgis.dtd' 'SYSTEM'>\n"
QGIS_VERSION = "3.28.0-Firenze"
STYLE_NAME = "poppyscan"

# Graduated classes for plots: (lower, upper, label, fill RGBA, outline RGBA)
# Plot classes by mean probability (the plot decision keeps regions by it; the default model keeps means
# >= 0.85, and its plots' maxima are all near 1, so prob_max would paint every plot alike).
PLOT_CLASSES = [
    (0.0, 0.85, "mean p < 0.85", "255,255,178,90", "230,200,40,255"),
    (0.85, 0.9, "0.85 – 0.90", "254,204,92,110", "240,150,20,255"),
    (0.9, 0.95, "0.90 – 0.95", "253,141,60,130", "230,85,13,255"),
    (0.95, 1.0001, "mean p ≥ 0.95", "227,26,28,150", "180,0,0,255"),
]
# Task status categories: (value, label, fill RGBA). An empty value is QGIS's "all other values".
TASK_STATUSES = [
    ("pending", "pending (not yet checked)", "255,127,0,255"),
    ("done", "done (result recorded)", "51,160,44,255"),
    ("", "other", "150,150,150,255"),
]
# Probability ramp for the uint8 0–100 COG: (value, RGBA hex, alpha, label)
PROB_RAMP = [
    (0, "#ffffff", 0, "0"),
    (30, "#ffffb2", 0, "30"),
    (50, "#fecc5c", 140, "50"),
    (70, "#fd8d3c", 190, "70"),
    (85, "#f03b20", 220, "85"),
    (100, "#bd0026", 240, "100"),
]

LAYER_STYLES_DDL = """
CREATE TABLE IF NOT EXISTS layer_styles (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    f_table_catalog TEXT(256),
    f_table_schema TEXT(256),
    f_table_name TEXT(256),
    f_geometry_column TEXT(256),
    styleName TEXT(30),
    styleQML TEXT,
    styleSLD TEXT,
    useAsDefault BOOLEAN,
    description TEXT,
    owner TEXT(30),
    ui TEXT(30),
    update_time DATETIME DEFAULT (strftime('%Y-%m-%dT%H:%M:%fZ','now'))
)
"""
LAYER_STYLES_COLUMNS = (
    "id",
    "f_table_catalog",
    "f_table_schema",
    "f_table_name",
    "f_geometry_column",
    "styleName",
    "styleQML",
    "styleSLD",
    "useAsDefault",
    "description",
    "owner",
    "ui",
    "update_time",
)


def _opt(name: str, value: str) -> str:
    return f'<Option name="{name}" type="QString" value={quoteattr(value)}/>'


def _ddp() -> str:
    return (
        '<data_defined_properties><Option type="Map"><Option name="name" type="QString" value=""/>'
        '<Option name="properties"/><Option name="type" type="QString" value="collection"/></Option>'
        "</data_defined_properties>"
    )


def _fill_symbol(name: str, fill: str, outline: str, width_mm: float = 0.5) -> str:
    opts = "".join(
        [
            _opt("border_width_map_unit_scale", "3x:0,0,0,0,0,0"),
            _opt("color", fill),
            _opt("joinstyle", "bevel"),
            _opt("offset", "0,0"),
            _opt("offset_map_unit_scale", "3x:0,0,0,0,0,0"),
            _opt("offset_unit", "MM"),
            _opt("outline_color", outline),
            _opt("outline_style", "solid"),
            _opt("outline_width", f"{width_mm:g}"),
            _opt("outline_width_unit", "MM"),
            _opt("style", "solid"),
        ]
    )
    return (
        f'<symbol type="fill" name="{name}" alpha="1" clip_to_extent="1" force_rhr="0" '
        f'frame_rate="10" is_animated="0">{_ddp()}'
        f'<layer class="SimpleFill" enabled="1" locked="0" pass="0"><Option type="Map">{opts}</Option>'
        f"{_ddp()}</layer></symbol>"
    )


def _marker_symbol(name: str, fill: str, size_mm: float = 3.4) -> str:
    opts = "".join(
        [
            _opt("angle", "0"),
            _opt("cap_style", "square"),
            _opt("color", fill),
            _opt("horizontal_anchor_point", "1"),
            _opt("joinstyle", "bevel"),
            _opt("name", "circle"),
            _opt("offset", "0,0"),
            _opt("offset_map_unit_scale", "3x:0,0,0,0,0,0"),
            _opt("offset_unit", "MM"),
            _opt("outline_color", "35,35,35,255"),
            _opt("outline_style", "solid"),
            _opt("outline_width", "0.4"),
            _opt("outline_width_map_unit_scale", "3x:0,0,0,0,0,0"),
            _opt("outline_width_unit", "MM"),
            _opt("scale_method", "diameter"),
            _opt("size", f"{size_mm:g}"),
            _opt("size_map_unit_scale", "3x:0,0,0,0,0,0"),
            _opt("size_unit", "MM"),
            _opt("vertical_anchor_point", "1"),
        ]
    )
    return (
        f'<symbol type="marker" name="{name}" alpha="1" clip_to_extent="1" force_rhr="0" '
        f'frame_rate="10" is_animated="0">{_ddp()}'
        f'<layer class="SimpleMarker" enabled="1" locked="0" pass="0"><Option type="Map">{opts}</Option>'
        f"{_ddp()}</layer></symbol>"
    )


def _labeling(field: str) -> str:
    return (
        '<labeling type="simple"><settings calloutType="simple">'
        f'<text-style fieldName={quoteattr(field)} isExpression="0" fontSize="9" fontSizeUnit="Point" '
        'fontWeight="75" textColor="20,20,20,255" textOpacity="1" namedStyle="Bold" multilineHeight="1">'
        '<text-buffer bufferDraw="1" bufferSize="1" bufferSizeUnits="MM" bufferColor="255,255,255,255" '
        'bufferOpacity="1" bufferJoinStyle="128" bufferBlendMode="0"/></text-style>'
        '<text-format wrapChar="" multilineAlign="0" plussign="0" formatNumbers="0" decimals="3" '
        'leftDirectionSymbol="&lt;" rightDirectionSymbol="&gt;" reverseDirectionSymbol="0" '
        'placeDirectionSymbol="0" addDirectionSymbol="0"/>'
        '<placement placement="6" dist="1.5" distUnits="MM" offsetType="0" quadOffset="2" priority="5"/>'
        '<rendering scaleVisibility="1" scaleMin="0" scaleMax="50000" obstacle="1" drawLabels="1" '
        'displayAll="0" upsidedownLabels="0" limitNumLabels="0" maxNumLabels="2000"/>'
        "</settings></labeling>"
    )


def plots_qml() -> str:
    """QML for the ``plots`` polygons: graduated colours by ``prob_mean``."""
    ranges = "".join(
        f'<range lower="{lo:.6f}" upper="{hi:.6f}" symbol="{i}" label={quoteattr(lab)} render="true"/>'
        for i, (lo, hi, lab, _, _) in enumerate(PLOT_CLASSES)
    )
    symbols = "".join(
        _fill_symbol(str(i), fill, line) for i, (_, _, _, fill, line) in enumerate(PLOT_CLASSES)
    )
    return (
        f'{QML_HEAD}<qgis version="{QGIS_VERSION}" styleCategories="Symbology|Labeling" labelsEnabled="0">'
        '<renderer-v2 type="graduatedSymbol" attr="prob_mean" graduatedMethod="GraduatedColor" '
        'symbollevels="0" forceraster="0" enableorderby="0" referencescale="-1">'
        f"<ranges>{ranges}</ranges><symbols>{symbols}</symbols>"
        f"<source-symbol>{_fill_symbol('0', '227,26,28,120', '180,0,0,255')}</source-symbol>"
        '<classificationMethod id="EqualInterval"><symmetricMode enabled="0" symmetrypoint="0" astride="0"/>'
        '<labelFormat format="%1 - %2" trimtrailingzeroes="1" labelprecision="2"/>'
        "<parameters><Option/></parameters><extraInformation/></classificationMethod>"
        "<rotation/><sizescale/></renderer-v2>"
        "<blendMode>0</blendMode><featureBlendMode>0</featureBlendMode><layerGeometryType>2</layerGeometryType>"
        "</qgis>\n"
    )


def tasks_qml() -> str:
    """QML for the ``tasks`` points: categorised by ``status``, labelled with ``task_code``."""
    cats = "".join(
        f'<category value={quoteattr(v)} symbol="{i}" label={quoteattr(lab)} render="true" type="string"/>'
        for i, (v, lab, _) in enumerate(TASK_STATUSES)
    )
    symbols = "".join(_marker_symbol(str(i), fill) for i, (_, _, fill) in enumerate(TASK_STATUSES))
    return (
        f'{QML_HEAD}<qgis version="{QGIS_VERSION}" styleCategories="Symbology|Labeling" labelsEnabled="1">'
        '<renderer-v2 type="categorizedSymbol" attr="status" symbollevels="0" forceraster="0" '
        'enableorderby="0" referencescale="-1">'
        f"<categories>{cats}</categories><symbols>{symbols}</symbols>"
        f"<source-symbol>{_marker_symbol('0', '255,127,0,255')}</source-symbol>"
        "<rotation/><sizescale/></renderer-v2>"
        f"{_labeling('task_code')}"
        "<blendMode>0</blendMode><featureBlendMode>0</featureBlendMode><layerGeometryType>0</layerGeometryType>"
        "</qgis>\n"
    )


def probability_qml() -> str:
    """QML for ``probability.tif`` (uint8 0–100, nodata 255): a pseudocolour ramp, low values clear."""
    items = "".join(
        f'<item value="{v}" color="{c}" alpha="{a}" label={quoteattr(lab)}/>' for v, c, a, lab in PROB_RAMP
    )
    return (
        f'{QML_HEAD}<qgis version="{QGIS_VERSION}" styleCategories="AllStyleCategories" '
        'hasScaleBasedVisibilityFlag="0" minScale="1e+08" maxScale="0">'
        "<pipe>"
        '<provider><resampling enabled="false" maxOversampling="2" '
        'zoomedInResamplingMethod="nearestNeighbour" zoomedOutResamplingMethod="nearestNeighbour"/>'
        "</provider>"
        '<rasterrenderer type="singlebandpseudocolor" band="1" opacity="1" alphaBand="-1" nodataColor="" '
        'classificationMin="0" classificationMax="100">'
        "<rasterTransparency/>"
        "<minMaxOrigin><limits>None</limits><extent>WholeRaster</extent><statAccuracy>Estimated</statAccuracy>"
        "<cumulativeCutLower>0.02</cumulativeCutLower><cumulativeCutUpper>0.98</cumulativeCutUpper>"
        "<stdDevFactor>2</stdDevFactor></minMaxOrigin>"
        '<rastershader><colorrampshader colorRampType="INTERPOLATED" classificationMode="1" clip="0" '
        'minimumValue="0" maximumValue="100" labelPrecision="0">'
        f"{items}</colorrampshader></rastershader>"
        "</rasterrenderer>"
        '<brightnesscontrast brightness="0" contrast="0" gamma="1"/>'
        '<huesaturation saturation="0" grayscaleMode="0" colorizeOn="0" colorizeRed="255" '
        'colorizeGreen="128" '
        'colorizeBlue="128" colorizeStrength="100" invertColors="0"/>'
        '<rasterresampler maxOversampling="2"/>'
        "<resamplingStage>resamplingFilter</resamplingStage>"
        "</pipe><blendMode>0</blendMode></qgis>\n"
    )


def _check_xml(text: str) -> str:
    root = ET.fromstring(text.split("\n", 1)[1])
    assert root.tag == "qgis"
    return text


def _geometry_column(con: sqlite3.Connection, table: str) -> str:
    row = con.execute(
        "SELECT column_name FROM gpkg_geometry_columns WHERE table_name = ?", (table,)
    ).fetchone()
    return row[0] if row else "geom"


def add_layer_styles(
    gpkg: str | Path, styles: dict[str, str], description: str = "poppyscan default style"
) -> None:
    """Insert/replace default styles (``{table: qml}``) in ``gpkg``'s ``layer_styles`` table (in place)."""
    con = sqlite3.connect(str(gpkg))
    try:
        with con:
            con.execute(LAYER_STYLES_DDL)
            now = _dt.datetime.now(_dt.UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")
            exists = con.execute("SELECT 1 FROM gpkg_contents WHERE table_name = 'layer_styles'").fetchone()
            if not exists:
                con.execute(
                    "INSERT INTO gpkg_contents (table_name, data_type, identifier, description, last_change) "
                    "VALUES ('layer_styles', 'attributes', 'layer_styles', 'QGIS layer styles', ?)",
                    (now,),
                )
            for table, qml in styles.items():
                geom = _geometry_column(con, table)
                # only one default per layer: demote others, drop our previous version
                con.execute("UPDATE layer_styles SET useAsDefault = 0 WHERE f_table_name = ?", (table,))
                con.execute(
                    "DELETE FROM layer_styles WHERE f_table_name = ? AND styleName = ?", (table, STYLE_NAME)
                )
                con.execute(
                    "INSERT INTO layer_styles (f_table_catalog, f_table_schema, f_table_name, "
                    "f_geometry_column, "
                    "styleName, styleQML, styleSLD, useAsDefault, description, owner, ui, update_time) "
                    "VALUES ('', '', ?, ?, ?, ?, '', 1, ?, 'poppyscan', '', ?)",
                    (table, geom, STYLE_NAME, _check_xml(qml), description, now),
                )
    finally:
        con.close()


def write_gpkg(
    final: str | Path,
    tasks: gpd.GeoDataFrame,
    *,
    base: str | Path | None = None,
    plots: gpd.GeoDataFrame | None = None,
    lock: bool = True,
) -> Path:
    """Write the ``tasks`` layer and default styles into the GeoPackage ``final``, atomically.

    With ``base`` (normally ``final`` itself, the run's ``plots.gpkg``) the file is copied first, so its
    ``plots`` layer and any other layers are kept untouched and ``tasks`` is added or replaced. With
    ``plots`` instead, a fresh GeoPackage holding those plots is written (a team's own package).
    ``lock=False`` when the caller already holds :func:`~poppyscan.fsutil.file_lock` on ``base`` until the
    copy replaces it (a second lock on it from the same process would wait forever).
    """
    final = Path(final)
    # copy -> add layer -> rename over ``base``: hold its lock, so a review decision mirrored into it
    # meanwhile (review/store.py) is neither lost nor written into the file being replaced
    lock = file_lock(base) if base is not None and lock else contextlib.nullcontext()
    with lock, atomic_path(final, overwrite=True) as tmp:
        if base is not None:
            shutil.copy2(base, tmp)
        elif plots is not None:
            pyogrio.write_dataframe(plots, tmp, layer="plots", driver="GPKG", promote_to_multi=True)
        tasks_layer = tasks if len(tasks) else tasks.iloc[:0]
        pyogrio.write_dataframe(tasks_layer, tmp, layer="tasks", driver="GPKG", geometry_type="Point")
        styles = {"tasks": tasks_qml()}
        if "plots" in {name for name, _ in pyogrio.list_layers(tmp)}:
            styles["plots"] = plots_qml()
        add_layer_styles(tmp, styles)
    return final


def write_probability_style(raster: str | Path, out: str | Path | None = None) -> Path | None:
    """Write ``<raster stem>.qml`` beside an existing probability raster; return it (None if no raster).

    Called for every probability raster of a run (``probability.tif``, ``probability_2.tif``, ...): QGIS
    applies a sidecar style only to the raster of the same name. ``out`` writes it there instead (a
    staging folder whose contents are moved beside the raster later).
    """
    raster = Path(raster)
    if not raster.exists():
        return None
    final = Path(out) if out is not None else raster.with_suffix(".qml")
    with atomic_path(final, overwrite=True) as tmp:
        tmp.write_text(_check_xml(probability_qml()), encoding="utf-8")
    return final
