"""WinRM contract-test fixtures (a throwaway PKI, NTLM users, replay servers, a silent port).

Imported by conftest.py so the lab fixtures there and these stay separate files."""

from __future__ import annotations

import os
import socket
import ssl
import threading
from collections.abc import Iterator
from typing import Any

import pytest
from wsman_replay import (
    PASSWORD,
    PKI,
    USER,
    ReplayServer,
    ServerFactory,
    load,
    make_pki,
    ntlm_user_file,
    recordings,
)

__all__ = ["no_ca_env", "ntlm_users", "pki", "replay", "tarpit", "winrm_recordings"]


@pytest.fixture(scope="session")
def pki(tmp_path_factory: pytest.TempPathFactory) -> PKI:
    return make_pki(tmp_path_factory.mktemp("pki"))


@pytest.fixture(scope="session")
def winrm_recordings() -> None:
    """Fetch pypsrp's recordings once (pip, into tests/artifacts/); a failure fails the tests."""
    recordings()


@pytest.fixture(scope="session")
def ntlm_users(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, str]]:
    users = {USER: PASSWORD}
    before = os.environ.get("NTLM_USER_FILE")
    ntlm_user_file(tmp_path_factory.mktemp("ntlm") / "users", users)
    yield users
    if before is None:
        os.environ.pop("NTLM_USER_FILE", None)
    else:
        os.environ["NTLM_USER_FILE"] = before


@pytest.fixture
def no_ca_env(monkeypatch: pytest.MonkeyPatch, pki: PKI) -> None:
    """The machine sets REQUESTS_CA_BUNDLE/CURL_CA_BUNDLE: point them at our CA, so a test passing
    without winrm_ca_bundle would prove the transport (wrongly) trusts the environment."""
    monkeypatch.setenv("REQUESTS_CA_BUNDLE", str(pki.ca))
    monkeypatch.setenv("CURL_CA_BUNDLE", str(pki.ca))
    for var in ("HTTPS_PROXY", "https_proxy", "HTTP_PROXY", "http_proxy", "ALL_PROXY"):
        monkeypatch.delenv(var, raising=False)


@pytest.fixture
def replay(
    winrm_recordings: None, ntlm_users: dict[str, str], pki: PKI, no_ca_env: None
) -> Iterator[ServerFactory]:
    """Start replay servers (HTTPS + NTLM by default); each must end with no unmatched request."""
    servers: list[ReplayServer] = []

    def start(
        recording: str | None = None, *, tls: bool | ssl.SSLContext = True, **kwargs: Any
    ) -> ReplayServer:
        context = pki.context() if tls is True else (tls or None)
        server = ReplayServer(
            exchanges=load(recording) if recording else [], tls=context, **kwargs
        ).start()
        servers.append(server)
        return server

    yield start
    for server in servers:
        server.stop()
    for server in servers:
        assert server.errors == [], server.errors
        # the client followed the recording in order: no recorded request was jumped over
        assert server.skipped == [], server.skipped


@pytest.fixture
def tarpit() -> Iterator[int]:
    """A port that accepts TCP connections and then never says a word."""
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    sock.listen(16)
    held: list[socket.socket] = []
    stop = threading.Event()

    def accept() -> None:
        sock.settimeout(0.1)
        while not stop.is_set():
            try:
                conn, _ = sock.accept()
                held.append(conn)
            except OSError:
                continue

    thread = threading.Thread(target=accept, daemon=True)
    thread.start()
    yield sock.getsockname()[1]
    stop.set()
    thread.join()
    for conn in held:
        conn.close()
    sock.close()
