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

This module holds the HTTP plumbing (request handler, server, binding). The run it serves — plots,
chips, overviews — is :class:`~poppyscan.review.run.ReviewRun` in :mod:`poppyscan.review.run`; it and
the chip defaults :data:`CHIP_SIZE_M` and :data:`CHIP_PX` are importable from here too.
"""

from __future__ import annotations

import errno
import getpass
import ipaddress
import json
import logging
import re
import socket
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from ..errors import InputError
from . import store
from .run import CHIP_PX, CHIP_SIZE_M, ReviewRun

__all__ = [
    # the server (this module)
    "DEFAULT_PORT",
    "MAX_BODY",
    "STATIC_DIR",
    "ReviewServer",
    "is_loopback",
    "make_server",
    # the run it serves (poppyscan.review.run)
    "CHIP_PX",
    "CHIP_SIZE_M",
    "ReviewRun",
]

log = logging.getLogger(__name__)

STATIC_DIR = Path(__file__).with_name("static")
MAX_BODY = 16 * 1024
DEFAULT_PORT = 8765
_CONTENT_TYPES = {
    ".html": "text/html; charset=utf-8",
    ".js": "text/javascript; charset=utf-8",
    ".css": "text/css; charset=utf-8",
    ".svg": "image/svg+xml",
    ".png": "image/png",
}


def is_loopback(host: str) -> bool:
    """True for ``localhost`` and loopback IP addresses (127.0.0.0/8, ::1)."""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


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
