"""The vendor layer of the loopback ServiceNow and Jira stand-ins, on tests/desk_server.py.

NOT a vendor's server: each subclass implements the vendor's DOCUMENTED request and response
shapes for exactly the calls itops makes (tests/fake_servicenow.py, tests/fake_jira.py), in
memory, so the adapters run with their real client libraries over real HTTPS. DeskServer
serves them on 127.0.0.1 and scripts the faults (an HTTP status with Retry-After, a delay
before handling, a commit and then a delay); this layer adds the vendor's authentication (basic
or a bearer token, else the vendor's 401), its error bodies on scripted statuses, and TLS from
a private CA.
"""

from __future__ import annotations

import base64
import ssl
from pathlib import Path
from typing import Any

from tests.desk_server import DeskServer, Fault, Reply, Seen

Answer = tuple[int, dict[str, str], Any]  # status, headers, JSON body (None: no body)


class FakeDesk(DeskServer):
    """Subclasses implement `answer` and `error_body`."""

    def __init__(
        self, *, user: str = "itops", password: str = "itops-pw", token: str | None = None,
        tls: Any = None,
    ) -> None:  # fmt: skip
        super().__init__()
        self.user, self.password, self.token = user, password, token
        self.tls = tls

    def start(self, tls: ssl.SSLContext | None = None) -> FakeDesk:
        if tls is None and self.tls is not None:
            tls = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
            tls.load_cert_chain(self.tls.cert, self.tls.key)
        super().start(tls)
        return self

    def fail(self, method: str, path: str, **how: Any) -> Fault:
        """A scripted status answers with the vendor's error body (clients parse it)."""
        if how.get("status") is not None and "body" not in how:
            how["body"] = self.error_body(how["status"], f"HTTP {how['status']}")
        return super().fail(method, path, **how)

    # -- for subclasses ------------------------------------------------------------------------
    def answer(self, method: str, path: str, query: dict[str, list[str]], body: Any) -> Answer:
        raise NotImplementedError

    def error_body(self, status: int, message: str) -> Any:
        return {"error": message}

    def unauthorized(self) -> Answer:
        return 401, {}, self.error_body(401, "not authenticated")

    # -- DeskServer's hook ---------------------------------------------------------------------
    def route(self, req: Seen) -> Reply:
        if self._authorized(req.headers.get("authorization") or ""):
            query = {k: [v] for k, v in req.query.items()}
            status, headers, body = self.answer(req.method, req.path, query, req.body)
        else:
            status, headers, body = self.unauthorized()
        return Reply(status, body, headers)

    def _authorized(self, header: str) -> bool:
        if self.token is not None and header == f"Bearer {self.token}":
            return True
        if header.startswith("Basic "):
            got = base64.b64decode(header[6:]).decode("utf-8", "replace")
            return got == f"{self.user}:{self.password}"
        return False


def tls_for(folder: Path) -> Any:
    """A private CA and a certificate for 127.0.0.1 (the lab's CA maker)."""
    from toolkit.lab.tlsca import issue

    return issue(folder, "localhost", "127.0.0.1", ca_name="itops fake desk CA")
