"""A loopback HTTP(S) server base for the desks that cannot run here (ServiceNow, Jira SM).

NOT a vendor's server: each subclass implements the vendor's DOCUMENTED request and response
shapes for exactly the calls itops makes (tests/fake_servicenow.py, tests/fake_jira.py), in
memory, so the adapters run with their real client libraries over real HTTP. Faults are
scripted per request: an HTTP status (401, 404, 409, 429 with Retry-After, 5xx), a desk that
hangs past the client's timeout without doing anything, and a desk that COMMITS the request and
then hangs (the answer is lost: the client cannot know it was done). Binds 127.0.0.1 only.
"""

from __future__ import annotations

import base64
import http.server
import json
import re
import ssl
import threading
import time
import urllib.parse
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

Answer = tuple[int, dict[str, str], Any]  # status, headers, JSON body (None: no body)


@dataclass
class Fault:
    """The next request matching `method` and `path` (a regex searched in the path) gets this
    instead of the desk's answer: `status` (with `retry_after`), or `hang` seconds of silence
    — before doing anything, or with `after_commit` after doing it."""

    method: str
    path: str
    status: int = 0
    retry_after: str | None = None
    hang: float = 0.0
    after_commit: bool = False
    times: int = 1


@dataclass
class Seen:
    method: str
    path: str
    query: dict[str, list[str]]
    body: Any
    headers: dict[str, str] = field(default_factory=dict)


class FakeDesk:
    """Subclasses implement `route` and `error_body`; this serves them with auth and faults."""

    def __init__(
        self, *, user: str = "itops", password: str = "itops-pw", token: str | None = None,
        tls: Any = None,
    ) -> None:  # fmt: skip
        self.user, self.password, self.token = user, password, token
        self.faults: list[Fault] = []
        self.seen: list[Seen] = []
        self.lock = threading.RLock()
        desk = self

        class Handler(http.server.BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"
            wbufsize = -1  # one send per answer (flushed per request): no Nagle/delayed-ACK stall

            def _any(self) -> None:
                desk._serve(self)

            do_GET = do_POST = do_PUT = do_PATCH = do_DELETE = _any

            def log_message(self, *args: Any) -> None:
                pass

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.scheme = "http"
        if tls is not None:
            context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
            context.load_cert_chain(tls.cert, tls.key)
            self.server.socket = context.wrap_socket(self.server.socket, server_side=True)
            self.scheme = "https"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    @property
    def url(self) -> str:
        return f"{self.scheme}://127.0.0.1:{self.server.server_address[1]}"

    def start(self) -> FakeDesk:
        self.thread.start()
        return self

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()

    def fail(self, method: str, path: str, **how: Any) -> None:
        self.faults.append(Fault(method, path, **how))

    def requests_to(self, method: str, path: str) -> list[Seen]:
        return [s for s in self.seen if s.method == method and re.search(path, s.path)]

    # -- for subclasses ------------------------------------------------------------------------
    def route(self, method: str, path: str, query: dict[str, list[str]], body: Any) -> Answer:
        raise NotImplementedError

    def error_body(self, status: int, message: str) -> Any:
        return {"error": message}

    def unauthorized(self) -> Answer:
        return 401, {}, self.error_body(401, "not authenticated")

    # -- serving -------------------------------------------------------------------------------
    def _authorized(self, header: str) -> bool:
        if self.token is not None and header == f"Bearer {self.token}":
            return True
        if header.startswith("Basic "):
            got = base64.b64decode(header[6:]).decode("utf-8", "replace")
            return got == f"{self.user}:{self.password}"
        return False

    def _fault(self, method: str, path: str) -> Fault | None:
        with self.lock:
            for fault in self.faults:
                if fault.method == method and re.search(fault.path, path):
                    fault.times -= 1
                    if fault.times <= 0:
                        self.faults.remove(fault)
                    return fault
        return None

    def _serve(self, handler: http.server.BaseHTTPRequestHandler) -> None:
        parts = urllib.parse.urlsplit(handler.path)
        query = urllib.parse.parse_qs(parts.query, keep_blank_values=True)
        length = int(handler.headers.get("Content-Length") or 0)
        raw = handler.rfile.read(length) if length else b""
        try:
            body = json.loads(raw) if raw else None
        except ValueError:
            body = raw.decode("utf-8", "replace")
        method, path = handler.command, parts.path
        with self.lock:
            self.seen.append(Seen(method, path, query, body, dict(handler.headers.items())))
        fault = self._fault(method, path)
        answer: Answer
        if fault is not None and fault.hang and not fault.after_commit:
            time.sleep(fault.hang)
            answer = 504, {}, self.error_body(504, "gateway timeout")
        elif fault is not None and fault.status:
            headers = {"Retry-After": fault.retry_after} if fault.retry_after else {}
            answer = fault.status, headers, self.error_body(fault.status, f"HTTP {fault.status}")
        elif not self._authorized(handler.headers.get("Authorization") or ""):
            answer = self.unauthorized()
        else:
            with self.lock:
                answer = self.route(method, path, query, body)
            if fault is not None and fault.after_commit:
                time.sleep(fault.hang)  # committed; the client has given up by now
        self._send(handler, *answer)

    @staticmethod
    def _send(
        handler: http.server.BaseHTTPRequestHandler, status: int, headers: dict[str, str], body: Any
    ) -> None:
        data = b"" if body is None else json.dumps(body).encode()
        try:
            handler.send_response(status)
            for name, value in headers.items():
                handler.send_header(name, value)
            if body is not None:
                handler.send_header("Content-Type", "application/json;charset=UTF-8")
            handler.send_header("Content-Length", str(len(data)))
            handler.end_headers()
            handler.wfile.write(data)
        except (BrokenPipeError, ConnectionResetError, ssl.SSLError, OSError):
            pass


def tls_for(folder: Path) -> Any:
    """A private CA and a certificate for 127.0.0.1 (the lab's CA maker)."""
    from toolkit.lab.tlsca import issue

    return issue(folder, "localhost", "127.0.0.1", ca_name="itops fake desk CA")
