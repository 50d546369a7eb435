"""The base of the loopback service-desk servers the GLPI and Zammad adapters are tested against.

GLPI and Zammad cannot run here. `tests/glpi_desk.py` and `tests/zammad_desk.py` are NOT those
products: each is a small in-memory server that implements the vendor's documented request and
response shapes for exactly the calls itops makes (GLPI's apirest.md; Zammad's REST API docs),
bound to 127.0.0.1 on a free port. The adapters talk to them over real HTTP with their real
client stack (httpx2 for GLPI, zammad_py/requests for Zammad).

Faults are scripted per request: an HTTP status (401, 404, 409, 429 with Retry-After, 5xx), a
delay before handling (a desk that times out without doing anything), or a delay after
handling (a desk that commits and then times out).
"""

from __future__ import annotations

import http.server
import json
import ssl
import threading
import time
import urllib.parse
from dataclasses import dataclass, field
from typing import Any


@dataclass
class Fault:
    """What the server does to the next request matching `method` and `path` (a prefix)."""

    method: str
    path: str
    status: int | None = None  # answer this instead of handling the request
    body: Any = None
    retry_after: str | None = None
    delay: float = 0.0  # seconds before answering
    commit: bool = False  # with delay: handle the request first (the desk commits), then wait
    times: int = 1


@dataclass
class Seen:
    method: str
    path: str
    query: dict[str, str]
    headers: dict[str, str]
    body: Any


@dataclass
class Reply:
    status: int
    body: Any = None
    headers: dict[str, str] = field(default_factory=dict)


class DeskServer:
    """A threaded HTTP server on 127.0.0.1 whose `route` a subclass implements."""

    def __init__(self) -> None:
        self.lock = threading.RLock()
        self.faults: list[Fault] = []
        self.seen: list[Seen] = []
        self._server: http.server.ThreadingHTTPServer | None = None

    # -- the subclass's part ---------------------------------------------------------------
    def route(self, req: Seen) -> Reply:
        raise NotImplementedError

    # -- running ---------------------------------------------------------------------------
    @property
    def url(self) -> str:
        assert self._server is not None
        scheme = "https" if self._tls is not None else "http"
        return f"{scheme}://127.0.0.1:{self._server.server_address[1]}"

    def start(self, tls: ssl.SSLContext | None = None) -> DeskServer:
        """Serve (over TLS with a server context `tls`) on a free loopback port."""
        desk = self

        class Handler(http.server.BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"
            wbufsize = 1 << 16  # headers and body in one send: no delayed-ACK stall per request
            disable_nagle_algorithm = True

            def _any(self) -> None:
                parsed = urllib.parse.urlsplit(self.path)
                length = int(self.headers.get("Content-Length") or 0)
                raw = self.rfile.read(length) if length else b""
                try:
                    body = json.loads(raw) if raw else None
                except ValueError:
                    body = raw.decode(errors="replace")
                req = Seen(
                    self.command,
                    urllib.parse.unquote(parsed.path),
                    dict(urllib.parse.parse_qsl(parsed.query)),
                    {k.lower(): v for k, v in self.headers.items()},
                    body,
                )
                reply = desk._serve(req)
                data = b"" if reply.body is None else json.dumps(reply.body).encode()
                try:
                    self.send_response(reply.status)
                    for name, value in reply.headers.items():
                        self.send_header(name, value)
                    self.send_header("Content-Type", "application/json; charset=utf-8")
                    self.send_header("Content-Length", str(len(data)))
                    self.end_headers()
                    self.wfile.write(data)
                except OSError:  # the client gave up (a timeout test)
                    pass

            do_GET = do_POST = do_PUT = do_PATCH = do_DELETE = _any

            def log_message(self, *args: Any) -> None:
                pass

        self._server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._server.daemon_threads = True
        self._tls = tls
        if tls is not None:
            self._server.socket = tls.wrap_socket(self._server.socket, server_side=True)
        threading.Thread(target=self._server.serve_forever, daemon=True).start()
        return self

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None

    def fail(self, method: str, path: str, **how: Any) -> Fault:
        fault = Fault(method, path, **how)
        with self.lock:
            self.faults.append(fault)
        return fault

    def _serve(self, req: Seen) -> Reply:
        with self.lock:
            self.seen.append(req)
            fault = next(
                (
                    f
                    for f in self.faults
                    if f.times > 0 and f.method == req.method and req.path.startswith(f.path)
                ),
                None,
            )
            if fault is not None:
                fault.times -= 1
        if fault is not None and fault.status is not None:
            time.sleep(fault.delay)
            headers = {"Retry-After": fault.retry_after} if fault.retry_after else {}
            return Reply(fault.status, fault.body, headers)
        if fault is not None and not fault.commit:
            time.sleep(fault.delay)
        with self.lock:
            reply = self.route(req)
        if fault is not None and fault.commit:
            time.sleep(fault.delay)  # committed; the answer comes too late
        return reply


def stamp(at: float, form: str) -> str:
    return time.strftime(form, time.gmtime(at))
