"""The minimum of the GeoPackage 1.3 format the survey register needs, written with plain ``sqlite3``.

The register is a real GeoPackage so GIS staff can open it in QGIS (sites, plots, tasks, flight
footprints on a map) while the code keeps to the standard library's ``sqlite3``: one file, one
transaction per command, no GDAL needed to write it. All geometries are WGS84 lon/lat (EPSG:4326),
the master CRS of the project; metric work (areas, distances) projects on the fly.

A geometry blob is the GeoPackage header (``GP``, version 0, flags, srs_id, xy envelope) followed by
little-endian 2D WKB.
"""

from __future__ import annotations

import sqlite3
import struct

import shapely
from shapely.geometry.base import BaseGeometry

SRS_WGS84 = 4326
APPLICATION_ID = 0x47504B47  # "GPKG"
GPKG_USER_VERSION = 10300  # GeoPackage 1.3.0

_WGS84_WKT = (
    'GEOGCS["WGS 84",DATUM["WGS_1984",SPHEROID["WGS 84",6378137,298.257223563,AUTHORITY["EPSG","7030"]],'
    'AUTHORITY["EPSG","6326"]],PRIMEM["Greenwich",0,AUTHORITY["EPSG","8901"]],'
    'UNIT["degree",0.0174532925199433,AUTHORITY["EPSG","9122"]],AUTHORITY["EPSG","4326"]]'
)

_CORE_DDL = """
CREATE TABLE IF NOT EXISTS gpkg_spatial_ref_sys (
  srs_name TEXT NOT NULL, srs_id INTEGER PRIMARY KEY, organization TEXT NOT NULL,
  organization_coordsys_id INTEGER NOT NULL, definition TEXT NOT NULL, description TEXT);
CREATE TABLE IF NOT EXISTS gpkg_contents (
  table_name TEXT NOT NULL PRIMARY KEY, data_type TEXT NOT NULL, identifier TEXT UNIQUE,
  description TEXT DEFAULT '',
  last_change DATETIME NOT NULL DEFAULT (strftime('%Y-%m-%dT%H:%M:%fZ','now')),
  min_x DOUBLE, min_y DOUBLE, max_x DOUBLE, max_y DOUBLE,
  srs_id INTEGER, CONSTRAINT fk_gc_r_srs_id FOREIGN KEY (srs_id) REFERENCES gpkg_spatial_ref_sys(srs_id));
CREATE TABLE IF NOT EXISTS gpkg_geometry_columns (
  table_name TEXT NOT NULL, column_name TEXT NOT NULL, geometry_type_name TEXT NOT NULL,
  srs_id INTEGER NOT NULL, z TINYINT NOT NULL, m TINYINT NOT NULL,
  CONSTRAINT pk_geom_cols PRIMARY KEY (table_name, column_name),
  CONSTRAINT fk_gc_tn FOREIGN KEY (table_name) REFERENCES gpkg_contents(table_name),
  CONSTRAINT fk_gc_srs FOREIGN KEY (srs_id) REFERENCES gpkg_spatial_ref_sys (srs_id));
"""


def init_gpkg(conn: sqlite3.Connection) -> None:
    """Create the GeoPackage core tables and the three required spatial reference systems."""
    conn.execute(f"PRAGMA application_id = {APPLICATION_ID}")
    conn.execute(f"PRAGMA user_version = {GPKG_USER_VERSION}")
    for statement in _CORE_DDL.split(";"):
        if statement.strip():
            conn.execute(statement)
    rows = [
        (
            "Undefined cartesian SRS",
            -1,
            "NONE",
            -1,
            "undefined",
            "undefined cartesian coordinate reference system",
        ),
        (
            "Undefined geographic SRS",
            0,
            "NONE",
            0,
            "undefined",
            "undefined geographic coordinate reference system",
        ),
        (
            "WGS 84 geodetic",
            SRS_WGS84,
            "EPSG",
            4326,
            _WGS84_WKT,
            "longitude/latitude coordinates in decimal degrees",
        ),
    ]
    conn.executemany("INSERT OR IGNORE INTO gpkg_spatial_ref_sys VALUES (?, ?, ?, ?, ?, ?)", rows)


def register_table(
    conn: sqlite3.Connection,
    table: str,
    *,
    description: str,
    geometry: str | None = None,
    geometry_column: str = "geom",
) -> None:
    """Register ``table`` in ``gpkg_contents``
    (as ``features`` with ``geometry`` type, else ``attributes``)."""
    kind = "features" if geometry else "attributes"
    conn.execute(
        "INSERT OR IGNORE INTO gpkg_contents (table_name, data_type, identifier, description, srs_id) "
        "VALUES (?, ?, ?, ?, ?)",
        (table, kind, table, description, SRS_WGS84 if geometry else None),
    )
    if geometry:
        conn.execute(
            "INSERT OR IGNORE INTO gpkg_geometry_columns VALUES (?, ?, ?, ?, 0, 0)",
            (table, geometry_column, geometry, SRS_WGS84),
        )


def touch_contents(conn: sqlite3.Connection, table: str) -> None:
    """Update ``last_change`` and the extent of a features table after writing to it."""
    row = conn.execute(f"SELECT min(minx), min(miny), max(maxx), max(maxy) FROM {table}").fetchone()  # noqa: S608
    conn.execute(
        "UPDATE gpkg_contents SET last_change = strftime('%Y-%m-%dT%H:%M:%fZ','now'), "
        "min_x = ?, min_y = ?, max_x = ?, max_y = ? WHERE table_name = ?",
        (*row, table),
    )


def to_blob(geom: BaseGeometry | None, srs_id: int = SRS_WGS84) -> bytes | None:
    """Encode a 2D shapely geometry as a GeoPackage geometry blob (``None`` stays NULL)."""
    if geom is None or geom.is_empty:
        return None
    minx, miny, maxx, maxy = geom.bounds
    flags = 0b0000_0011  # little endian, envelope [minx, maxx, miny, maxy]
    header = b"GP" + bytes([0, flags]) + struct.pack("<i4d", srs_id, minx, maxx, miny, maxy)
    return header + shapely.to_wkb(geom, output_dimension=2, byte_order=1)


def from_blob(blob: bytes | None) -> BaseGeometry | None:
    """Decode a GeoPackage geometry blob (any envelope kind, either byte order)."""
    if blob is None:
        return None
    if blob[:2] != b"GP":
        raise ValueError("not a GeoPackage geometry blob")
    flags = blob[3]
    envelope_len = {0: 0, 1: 32, 2: 48, 3: 48, 4: 64}[(flags >> 1) & 0b111]
    return shapely.from_wkb(bytes(blob[8 + envelope_len :]))
