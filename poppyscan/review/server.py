"""The desk-review web server: stdlib ``ThreadingHTTPServer``, loopback only unless asked otherwise.

Routes (all JSON errors are ``{"error": "..."}`` with a 4xx status and write nothing):

- ``GET /`` and ``GET /static/<file>`` — the page (``poppyscan/review/static/``; no external assets);
- ``GET /api/run`` — the run, its plots in priority order with their saved decisions, overview geometry;
- ``GET /api/chip/<plot_id>.jpg`` — the plot's chip (cut and cached on first request);
- ``GET /api/overview/<i>.png`` — a downsampled picture of input mosaic ``i``;
- ``POST /api/decision`` — ``{"plot_id": 17, "decision": "rejected"|"confirmed"|"unsure"|null,
  "reviewer": "li.wei"}``, saved to ``review.json`` before the answer is sent.

Requests whose ``Host`` is not the loopback address the server listens on are refused (DNS rebinding),
and a decision must come as ``application/json`` from the page's own origin, so another web site open
in the analyst's browser cannot post decisions.
"""

from __future__ import annotations

import errno
import getpass
import ipaddress
import json
import logging
import math
import re
import socket
import threading
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import shapely
from shapely.geometry import box

from .. import run_folder, run_inputs
from ..errors import InputError, PlotOffMosaicError
from ..fsutil import write_bytes_atomic
from . import imagery, store

log = logging.getLogger(__name__)

STATIC_DIR = Path(__file__).with_name("static")
MAX_BODY = 16 * 1024
DEFAULT_PORT = 8765
# Review chips are near the mosaic's own resolution (16 m over 480 px = 3.3 cm/px): telling poppy from
# corn poppy or lettuce needs the detail. Field-task chips (tasks.chip_*) are wider, for orientation.
CHIP_SIZE_M = 16.0
CHIP_PX = 480
_CONTENT_TYPES = {
    ".html": "text/html; charset=utf-8",
    ".js": "text/javascript; charset=utf-8",
    ".css": "text/css; charset=utf-8",
    ".svg": "image/svg+xml",
    ".png": "image/png",
}
_PLOT_FIELDS = ("prob_max", "prob_mean", "area_m2", "area_mu", "est_plants", "lon", "lat")


def is_loopback(host: str) -> bool:
    """True for ``localhost`` and loopback IP addresses (127.0.0.0/8, ::1)."""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def _num(value: Any) -> float | None:
    try:
        f = float(value)
    except (TypeError, ValueError):
        return None
    return None if math.isnan(f) or math.isinf(f) else f


class ReviewRun:
    """A detect run opened for review: plots in priority order, mosaics, chip and overview cache."""

    def __init__(
        self, run_dir: str | Path, *, chip_size_m: float = CHIP_SIZE_M, chip_px: int = CHIP_PX
    ) -> None:
        from ..plots import priority_order

        self.run_dir = Path(run_dir)
        plots = run_folder.read_plots(self.run_dir)  # one-line InputErrors for a damaged or foreign folder
        store.read_review(self.run_dir)  # fail now, not on the first click, if review.json is corrupt
        self.chip_size_m, self.chip_px = chip_size_m, chip_px
        self.meta = run_folder.read_run_json(self.run_dir)
        self.crs = plots.crs
        self.plots = plots.iloc[priority_order(plots)].reset_index(drop=True)  # the field tasks' order
        self.over_500 = (self.plots["over_500_plants"].fillna(False).astype(bool).tolist()
                         if "over_500_plants" in self.plots else [False] * len(self.plots))
        self.ids = {int(v) for v in self.plots["plot_id"]}
        found = run_inputs.read_inputs(
            self.run_dir, self.meta, self.plots["mosaic"] if "mosaic" in self.plots else ()
        )
        self.inputs = self._inputs(found)
        # each plot's own mosaic, resolved as the field-task chips resolve it (poppyscan.run_inputs)
        self._source = [None if r is None else r.index for r in run_inputs.plot_inputs(found, self.plots)]
        self._by_id = {int(pid): i for i, pid in enumerate(self.plots["plot_id"])}
        self._in_crs: dict[int, Any] = {}
        self._lock = threading.Lock()

    def _inputs(self, found: list[run_inputs.RunInput]) -> list[dict[str, Any]]:
        from pyproj import CRS, Transformer

        out = []
        for item in found:
            run_bounds = list(item.bounds) if item.bounds else None
            if run_bounds and item.crs and self.crs is not None and CRS.from_user_input(item.crs) != self.crs:
                tr = Transformer.from_crs(CRS.from_user_input(item.crs), self.crs, always_xy=True)
                run_bounds = list(tr.transform_bounds(*run_bounds))
            out.append(
                {
                    "index": item.index,
                    "path": item.path,
                    "name": item.path.name,
                    "crs": item.crs,
                    "bounds": run_bounds,
                    "exists": item.exists,
                    "geographic": item.geographic,
                    "value_scale": item.value_scale,
                }
            )
        return out

    # -- JSON for the page -------------------------------------------------------------------------
    def summary(self) -> dict[str, Any]:
        doc = store.read_review(self.run_dir)
        decisions = doc["decisions"]
        centroids = shapely.centroid(self.plots.geometry.values)  # plain shapely: no geographic-CRS warning
        records = []
        rows = zip(self.plots.itertuples(index=False), centroids, self.over_500, strict=False)
        for rank, (row, c, over) in enumerate(rows):
            pid = int(row.plot_id)
            rec: dict[str, Any] = {"plot_id": pid, "rank": rank + 1}
            for f in _PLOT_FIELDS:
                rec[f] = _num(getattr(row, f, None))
            rec["over_500_plants"] = over
            rec["mosaic"] = str(getattr(row, "mosaic", "") or "")
            empty = c is None or c.is_empty
            rec["x"], rec["y"] = (None, None) if empty else (_num(c.x), _num(c.y))
            entry = decisions.get(str(pid))
            rec["decision"] = entry["decision"] if entry else None
            rec["reviewer"] = entry["reviewer"] if entry else None
            rec["time"] = entry["time"] if entry else None
            records.append(rec)
        footprints = [
            {"index": d["index"], "name": d["name"], "bounds": d["bounds"], "image": d["exists"]}
            for d in self.inputs
            if d["bounds"]
        ]
        xs = [r["x"] for r in records if r["x"] is not None]
        ys = [r["y"] for r in records if r["y"] is not None]
        boxes = [f["bounds"] for f in footprints]
        if xs:
            boxes.append([min(xs), min(ys), max(xs), max(ys)])
        extent = (
            [
                min(b[0] for b in boxes),
                min(b[1] for b in boxes),
                max(b[2] for b in boxes),
                max(b[3] for b in boxes),
            ]
            if boxes
            else None
        )
        return {
            "run": self.run_dir.resolve().name,
            "run_dir": str(self.run_dir.resolve()),
            "crs": self.crs.to_string() if self.crs is not None else None,
            "created": self.meta.get("created"),
            "model_version": (self.meta.get("model") or {}).get("version"),
            "total": len(records),
            "plots": records,
            "footprints": footprints,
            "extent": extent,
            "decisions": list(store.DECISIONS),
        }

    # -- pictures ----------------------------------------------------------------------------------
    def _input_for(self, i: int) -> dict[str, Any] | None:
        """The input mosaic of the plot at position ``i`` (None: no input of the run fits it)."""
        index = self._source[i]
        return next((item for item in self.inputs if item["index"] == index), None)

    def _geoms_in(self, item: dict[str, Any]):
        """The plot geometries (and a spatial index) in the CRS of mosaic ``item``."""
        with self._lock:
            if item["index"] not in self._in_crs:
                geoms = self.plots.geometry
                if item["crs"] and self.crs is not None:
                    geoms = geoms.to_crs(item["crs"])
                self._in_crs[item["index"]] = (geoms, geoms.sindex)
            return self._in_crs[item["index"]]

    def chip(self, plot_id: int) -> bytes:
        """JPEG chip of ``plot_id``, from the cache or cut now (and cached).

        The cache name carries the mosaic's input index, so a chip cached from another input (by a version
        that resolved same-named mosaics by name alone) is never served again.
        """
        i = self._by_id[plot_id]
        item = self._input_for(i)
        if item is None:
            log.warning("no chip for plot %s: no input mosaic in run.json fits it", plot_id)
            return imagery.placeholder_chip("no mosaic in run.json fits this plot", self.chip_px)
        name = f"{plot_id}_m{item['index']}_{self.chip_px}px_{self.chip_size_m:g}m.jpg"
        cache = self.run_dir / imagery.CHIP_DIR / name
        if cache.is_file():
            return cache.read_bytes()
        if not item["exists"]:
            return imagery.placeholder_chip(f"mosaic not found: {item['path']}", self.chip_px)
        geoms, sindex = self._geoms_in(item)
        geom = geoms.iloc[i]
        try:
            bounds = imagery.chip_bounds(geom, size_m=self.chip_size_m, geographic=item["geographic"])
            others = [geoms.iloc[j] for j in sindex.query(box(*bounds)) if j != i]
            data = imagery.render_chip(
                item["path"],
                geom,
                size_m=self.chip_size_m,
                px=self.chip_px,
                neighbours=others,
                value_scale=item["value_scale"],
            )
        except PlotOffMosaicError as exc:
            log.warning("no chip for plot %s: %s", plot_id, exc)
            return imagery.placeholder_chip("plot lies outside its mosaic: see the server log", self.chip_px)
        except Exception as exc:  # noqa: BLE001 - a broken chip must not break the review
            log.warning("chip for plot %s failed: %s", plot_id, exc)
            return imagery.placeholder_chip(f"chip failed: {exc}", self.chip_px)
        write_bytes_atomic(cache, data)
        return data

    def overview(self, index: int) -> bytes | None:
        """PNG overview of input mosaic ``index`` (cached), or None when it cannot be had."""
        item = next((d for d in self.inputs if d["index"] == index), None)  # index: position in run.json
        if item is None or not item["exists"]:
            return None
        cache = self.run_dir / imagery.OVERVIEW_DIR / f"{index}.png"
        if cache.is_file():
            return cache.read_bytes()
        data = imagery.render_overview(item["path"], value_scale=item["value_scale"])
        write_bytes_atomic(cache, data)
        return data


class ReviewServer(ThreadingHTTPServer):
    """HTTP server bound to one :class:`ReviewRun`."""

    daemon_threads = True

    def __init__(self, run: ReviewRun, host: str, port: int, reviewer: str) -> None:
        self.run = run
        self.reviewer = reviewer
        self.loopback = is_loopback(host)
        super().__init__((host, port), _Handler)

    @property
    def url(self) -> str:
        host, port = self.server_address[:2]
        host = f"[{host}]" if ":" in host else host
        return f"http://{host}:{port}/"


class _Handler(BaseHTTPRequestHandler):
    server: ReviewServer
    server_version = "poppyscan-review"
    protocol_version = "HTTP/1.1"

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - stdlib signature
        log.debug("%s " + format, self.address_string(), *args)

    # -- helpers -----------------------------------------------------------------------------------
    def _send(self, status: int, body: bytes, ctype: str, cache: str = "no-store") -> None:
        self.send_response(status)
        self.send_header("Content-Type", ctype)
        self.send_header("Content-Length", str(len(body)))
        self.send_header("Cache-Control", cache)
        self.send_header("X-Content-Type-Options", "nosniff")
        if self.close_connection:
            self.send_header("Connection", "close")
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)

    def _json(self, status: int, obj: Any) -> None:
        self._send(
            status, json.dumps(obj, ensure_ascii=False).encode("utf-8"), "application/json; charset=utf-8"
        )

    def _error(self, status: int, message: str) -> None:
        # a refused request may leave its body unread: never parse that as the next request
        self.close_connection = True
        self._json(status, {"error": message})

    def _host_ok(self) -> bool:
        if not self.server.loopback:
            return True
        try:
            host = urlsplit("//" + (self.headers.get("Host") or "")).hostname or ""
        except ValueError:
            host = ""
        if not is_loopback(host):
            self._error(
                HTTPStatus.FORBIDDEN, f"Host {self.headers.get('Host')!r} refused: open {self.server.url}"
            )
            return False
        return True

    # -- GET ---------------------------------------------------------------------------------------
    def do_GET(self) -> None:  # noqa: N802 - stdlib name
        self._guarded(self._get)

    def do_POST(self) -> None:  # noqa: N802 - stdlib name
        self._guarded(self._post)

    def _guarded(self, method) -> None:
        try:
            if self._host_ok():
                method()
        except (BrokenPipeError, ConnectionResetError):
            pass
        except Exception as exc:  # noqa: BLE001 - answer, log, keep serving
            log.exception("review server error on %s %s", self.command, self.path)
            self._error(HTTPStatus.INTERNAL_SERVER_ERROR, f"{type(exc).__name__}: {exc}")

    def _get(self) -> None:
        path = urlsplit(self.path).path
        try:
            if path in ("/", "/index.html"):
                return self._static("index.html")
            if path.startswith("/static/"):
                return self._static(path[len("/static/") :])
            if path == "/api/run":
                return self._json(
                    HTTPStatus.OK, {**self.server.run.summary(), "reviewer": self.server.reviewer}
                )
            m = re.fullmatch(r"/api/chip/(\d{1,12})\.jpg", path)
            if m:
                pid = int(m.group(1))
                if pid not in self.server.run.ids:
                    return self._error(HTTPStatus.NOT_FOUND, f"unknown plot_id {pid}")
                return self._send(HTTPStatus.OK, self.server.run.chip(pid), "image/jpeg", "max-age=3600")
            m = re.fullmatch(r"/api/overview/(\d{1,3})\.png", path)
            if m:
                data = self.server.run.overview(int(m.group(1)))
                if data is None:
                    return self._error(HTTPStatus.NOT_FOUND, "no such mosaic or mosaic file missing")
                return self._send(HTTPStatus.OK, data, "image/png", "max-age=3600")
            return self._error(HTTPStatus.NOT_FOUND, f"no such page: {path}")
        except InputError as exc:
            return self._error(HTTPStatus.CONFLICT, str(exc))

    do_HEAD = do_GET

    def _static(self, name: str) -> None:
        target = STATIC_DIR / name
        if "/" in name or "\\" in name or name.startswith(".") or not target.is_file():
            return self._error(HTTPStatus.NOT_FOUND, f"no such file: {name}")
        ctype = _CONTENT_TYPES.get(target.suffix, "application/octet-stream")
        self._send(HTTPStatus.OK, target.read_bytes(), ctype, "no-cache")

    # -- POST --------------------------------------------------------------------------------------
    def _post(self) -> None:
        if urlsplit(self.path).path != "/api/decision":
            return self._error(HTTPStatus.NOT_FOUND, f"no such endpoint: {self.path}")
        origin = self.headers.get("Origin")
        if origin and self.server.loopback and not is_loopback(urlsplit(origin).hostname or ""):
            return self._error(HTTPStatus.FORBIDDEN, f"Origin {origin!r} refused")
        ctype = (self.headers.get("Content-Type") or "").split(";")[0].strip().lower()
        if ctype != "application/json":
            return self._error(HTTPStatus.UNSUPPORTED_MEDIA_TYPE, "send the decision as application/json")
        try:
            length = int(self.headers.get("Content-Length") or "")
        except ValueError:
            return self._error(HTTPStatus.LENGTH_REQUIRED, "Content-Length required")
        if not 0 < length <= MAX_BODY:
            return self._error(HTTPStatus.REQUEST_ENTITY_TOO_LARGE, f"body must be 1..{MAX_BODY} bytes")
        raw = self.rfile.read(length)
        try:
            body = json.loads(raw.decode("utf-8"))
        except (UnicodeDecodeError, json.JSONDecodeError):
            return self._error(HTTPStatus.BAD_REQUEST, "body is not valid JSON")
        if not isinstance(body, dict) or "plot_id" not in body or "decision" not in body:
            return self._error(HTTPStatus.BAD_REQUEST, "body must be an object with 'plot_id' and 'decision'")
        pid, decision = body["plot_id"], body["decision"]
        if isinstance(pid, bool) or not isinstance(pid, int):
            return self._error(HTTPStatus.BAD_REQUEST, f"'plot_id' must be an integer, got {pid!r}")
        if decision is not None and decision not in store.DECISIONS:
            return self._error(
                HTTPStatus.BAD_REQUEST,
                f"'decision' must be one of {', '.join(store.DECISIONS)} or null, got {decision!r}",
            )
        if pid not in self.server.run.ids:
            return self._error(HTTPStatus.NOT_FOUND, f"unknown plot_id {pid}")
        reviewer = body.get("reviewer") or self.server.reviewer
        if not isinstance(reviewer, str):
            return self._error(HTTPStatus.BAD_REQUEST, "'reviewer' must be a string")
        try:
            entry = store.save_decision(
                self.server.run.run_dir,
                pid,
                decision,
                reviewer=reviewer.strip(),
                valid_ids=self.server.run.ids,
            )
        except InputError as exc:
            return self._error(HTTPStatus.CONFLICT, str(exc))
        counts = {d: 0 for d in store.DECISIONS}
        for d in store.load_decisions(self.server.run.run_dir).values():
            counts[d] += 1
        self._json(
            HTTPStatus.OK,
            {
                "ok": True,
                "saved": entry,
                "counts": counts,
                "reviewed": sum(counts.values()),
                "total": len(self.server.run.ids),
            },
        )


def make_server(
    run_dir: str | Path,
    *,
    host: str = "127.0.0.1",
    port: int | None = 0,
    reviewer: str | None = None,
    chip_size_m: float = CHIP_SIZE_M,
    chip_px: int = CHIP_PX,
) -> ReviewServer:
    """Open ``run_dir`` for review and bind a server (not yet serving; call ``serve_forever``).

    ``port=0`` takes any free port (see ``server.url``); ``None`` tries :data:`DEFAULT_PORT` first.
    A non-loopback ``host`` is allowed but logged:
    anyone who can reach it can change decisions.
    """
    run = ReviewRun(run_dir, chip_size_m=chip_size_m, chip_px=chip_px)
    if reviewer is None:
        try:
            reviewer = getpass.getuser()
        except Exception:  # noqa: BLE001 - no user name in some containers
            reviewer = ""
    if not is_loopback(host):
        log.warning(
            "review server listens on %s, not loopback: anyone who can reach it can change decisions", host
        )
    if port is None:
        try:
            return _bind(run, host, DEFAULT_PORT, reviewer)
        except OSError:
            port = 0
    try:
        return _bind(run, host, port, reviewer)
    except OSError as exc:
        raise InputError(
            f"cannot listen on {host}:{port} ({exc.strerror or exc}); pass another --port"
        ) from None


def _bind(run: ReviewRun, host: str, port: int, reviewer: str) -> ReviewServer:
    """A :class:`ReviewServer` on ``host:port``; :class:`InputError` when ``host`` is no address of this
    machine (an OSError for a port that is taken or not allowed)."""
    try:
        return ReviewServer(run, host, port, reviewer)
    except OSError as exc:
        if isinstance(exc, socket.gaierror) or exc.errno == errno.EADDRNOTAVAIL:
            what = "is not a valid host name or IP address" if isinstance(exc, socket.gaierror) else (
                "is not an address of this machine")
            raise InputError(
                f"--host '{host}' {what} ({exc.strerror or exc}); pass an IP address of this machine, "
                "e.g. 127.0.0.1 (the default)"
            ) from None
        raise
