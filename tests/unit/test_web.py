"""The web view without a browser: its routes and methods, accounts, the search's pages, the
proxy identity, and that a view which cannot be recorded is not shown. (The browser tests are
tests/integration/test_web_chromium.py.)"""

from __future__ import annotations

import asyncio
import json
import stat
import threading
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner

from tests import web_site
from tests.inprocess import itops
from toolkit.ledger import Entry, Ledger
from toolkit.web import pages
from toolkit.web.accounts import Accounts
from toolkit.web.server import ROUTE_METHODS, ServeSettings, build_app
from toolkit.workspace import Workspace


@pytest.fixture(scope="module")
def ws(tmp_path_factory: pytest.TempPathFactory) -> Workspace:
    return web_site.build(tmp_path_factory.mktemp("web") / "ws")


def get(
    app: Any, path: str, headers: dict[str, str], client: str = "127.0.0.1"
) -> tuple[int, dict[str, str], str]:
    """One GET through the ASGI application itself (no server, no client library)."""
    target, _, query = path.partition("?")
    scope = {
        "type": "http", "asgi": {"version": "3.0"}, "http_version": "1.1", "method": "GET",
        "scheme": "http", "path": target, "raw_path": target.encode(), "root_path": "",
        "query_string": query.encode(), "server": ("127.0.0.1", 8470), "client": (client, 50000),
        "headers": [(k.lower().encode(), v.encode()) for k, v in headers.items()],
    }  # fmt: skip
    sent: list[dict[str, Any]] = []

    async def receive() -> dict[str, Any]:
        return {"type": "http.request", "body": b"", "more_body": False}

    async def send(message: dict[str, Any]) -> None:
        sent.append(message)

    # on a thread of its own: a session that also drives Playwright has a loop running here
    worker = threading.Thread(target=lambda: asyncio.run(app(scope, receive, send)))
    worker.start()
    worker.join()
    start = sent[0]
    body = b"".join(m.get("body", b"") for m in sent[1:])
    return start["status"], {k.decode(): v.decode() for k, v in start["headers"]}, body.decode()


def test_every_route_answers_get_only_but_the_sign_in_form(ws: Workspace) -> None:
    app = build_app(ws.root, ServeSettings())
    try:
        found = {route.path: set(route.methods or ()) for route in app.routes}  # type: ignore[attr-defined]
        assert found == ROUTE_METHODS
        writers = {path for path, methods in found.items() if methods - {"GET", "HEAD"}}
        assert writers == {"/login"} and found["/login"] - {"GET", "HEAD"} == {"POST"}
    finally:
        app.state.site.close()


def test_the_site_reads_the_ledger_read_only(ws: Workspace) -> None:
    app = build_app(ws.root, ServeSettings())
    try:
        reader = app.state.site.reader.ledger
        assert reader.read_only and "mode=ro" in reader.read_url
        with pytest.raises(Exception, match="read-only|readonly"):
            reader.append(Entry("note"))
    finally:
        app.state.site.close()


def test_a_trusted_proxy_names_the_user_and_each_view_is_recorded(ws: Workspace) -> None:
    settings = ServeSettings(proxy_header="X-Remote-User", trusted_proxies=("127.0.0.1",))
    app = build_app(ws.root, settings)
    try:
        status, headers, body = get(app, "/search?host=lab-03", {"X-Remote-User": "rita"})
        assert status == 200 and "lab-03" in body
        assert "\u240a" not in body  # the page's own line breaks are not "control characters"
        assert "script-src" not in headers["content-security-policy"]  # no script at all
        assert headers["content-security-policy"].startswith("default-src 'none'")
        seq = int(body.rsplit("record #", 1)[1].split(".", 1)[0])
        book = Ledger(ws.ledger_url, operator="t", read_only=True)
        (view,) = book.records(seq=seq)
        book.close()
        assert (view.kind, view.operator) == ("audit.view", "rita")
        assert view.info["via"] == "proxy" and view.info["role"] == "auditor"
        # the same header from an address that is not a trusted proxy: nobody
        status, headers, _ = get(app, "/search", {"X-Remote-User": "rita"}, client="127.0.0.9")
        assert status == 303 and headers["location"].startswith("/login?next=")
    finally:
        app.state.site.close()


def test_a_view_that_cannot_be_recorded_is_not_shown(
    ws: Workspace, monkeypatch: pytest.MonkeyPatch
) -> None:
    app = build_app(ws.root, ServeSettings(proxy_header="X-Remote-User"))
    site = app.state.site
    try:

        def refuse(_entry: Any) -> Any:
            raise OSError("disk full")

        monkeypatch.setattr(site.writer.ledger, "append", refuse)
        status, _, body = get(app, "/host?name=lab-03", {"X-Remote-User": "rita"})
        assert status == 503 and "could not be recorded" in body
        assert "printer.clear-queue" not in body
    finally:
        monkeypatch.undo()
        site.close()


def test_the_search_pages_by_record_number_through_everything(ledger_url: str) -> None:
    """On SQLite and PostgreSQL: keyset pages, a filter, changes only, the page views."""
    book = Ledger(ledger_url, operator="ana")
    book.append_many([Entry("note", host=f"h{i % 3}", data={"n": i}) for i in range(47)])
    book.append(Entry("audit.view", data={"page": "search"}))
    for n, (mode, outcome) in enumerate(
        [("fix", "fixed"), ("check", "failed"), ("fix", "already-ok")]
    ):
        action = f"{n:032x}"
        book.append_many([
            Entry("action.begin", host="h9", task="t", action_id=action, data={"mode": mode}),
            Entry("action.finish", host="h9", task="t", action_id=action, outcome=outcome),
        ])  # fmt: skip
    from toolkit.desk.sla import default_policy

    policy = default_policy()
    seen: list[int] = []
    changed = pages.search(book, policy, {"host": "h9", "changes": "1"}, 10).tables[0].rows
    assert [(r["kind"], r["outcome"]) for r in changed] == [("action.finish", "fixed")]
    assert len(pages.search(book, policy, {"host": "h9"}, 10).tables[0].rows) == 6
    query = {"task": "-"}  # no such task
    assert pages.search(book, policy, query, 10).tables[0].rows == []
    query = {"until": "2999-01-01", "host": "h0"}
    assert {r["host"] for r in pages.search(book, policy, query, 100).tables[0].rows} == {"h0"}
    query = {"before": "49"}  # below the actions: the notes and the page view (#48)
    while True:
        view = pages.search(book, policy, query, 10)
        seen += [row["seq"] for row in view.tables[0].rows]
        if view.paging["older"] is None:
            break
        query = {"before": str(view.paging["older"])}
    assert seen == list(range(47, 0, -1))  # newest first, each once; the page view left out
    back = pages.search(book, policy, {"after": "17"}, 10)
    assert [row["seq"] for row in back.tables[0].rows] == list(range(27, 17, -1))
    assert back.paging == {"older": 18, "newer": 27}
    by_host = pages.search(book, policy, {"host": "h1"}, 100)
    assert {row["host"] for row in by_host.tables[0].rows} == {"h1"}
    with_views = pages.search(book, policy, {"views": "1", "before": "49"}, 1)
    assert with_views.tables[0].rows[0]["what"] == "audit.view"
    book.close()


def test_accounts_are_argon2id_hashes_in_a_private_file(tmp_path: Path) -> None:
    accounts = Accounts(tmp_path)
    accounts.add("ana", "auditor", "a long enough password")
    text = accounts.path.read_text()
    assert "a long enough password" not in text
    assert json.loads(text)["users"]["ana"]["hash"].startswith("$argon2id$")
    assert stat.S_IMODE(accounts.path.stat().st_mode) == 0o600
    assert accounts.check("ana", "a long enough password") is not None
    assert accounts.check("ana", "a long enough passwore") is None
    assert accounts.check("nobody", "a long enough password") is None
    with pytest.raises(Exception, match="at least 12"):
        accounts.add("bo", "lead", "short")
    with pytest.raises(Exception, match="no role"):
        accounts.add("bo", "admin", "a long enough password")


def test_serve_user_add_prompts_for_the_password(tmp_path: Path) -> None:
    from toolkit.cli import cli

    Workspace.init(tmp_path / "ws")
    runner = CliRunner()
    done = runner.invoke(
        cli, ["-w", str(tmp_path / "ws"), "serve", "user", "add", "ana", "--role", "auditor"],
        input="a long enough password\na long enough password\n",
    )  # fmt: skip
    assert done.exit_code == 0, done.output
    assert "a long enough password" not in done.output
    code, out = itops(tmp_path / "ws", "serve", "user", "list", "--json")
    assert code == 0 and json.loads(out) == [{"name": "ana", "role": "auditor"}]


def test_serve_refuses_to_start_when_nobody_can_sign_in(tmp_path: Path) -> None:
    Workspace.init(tmp_path / "ws")
    code, out = itops(tmp_path / "ws", "serve", "--port", "1")
    assert code != 0 and "nobody can sign in" in out and "serve user add" in out


def test_tls_when_given_a_certificate_and_the_session_cookie_is_secure(
    ws: Workspace, tmp_path: Path
) -> None:
    import http.cookies
    import ssl
    import urllib.request

    from toolkit.lab.tlsca import issue
    from toolkit.web.server import server_for

    issue(tmp_path, "localhost", "127.0.0.1", ca_name="itops test web CA")  # cert.pem, key.pem
    settings = ServeSettings.of({"port": free_port()}, tmp_path, cert="cert.pem", key="key.pem")
    assert settings.tls and settings.host == "127.0.0.1"
    server = server_for(ws.root, settings)
    worker = threading.Thread(target=server.run, daemon=True)
    worker.start()
    try:
        for _ in range(200):
            if server.started:
                break
            threading.Event().wait(0.05)
        context = ssl.create_default_context(cafile=str(tmp_path / "ca.pem"))
        url = f"https://127.0.0.1:{settings.port}/login"
        with urllib.request.urlopen(url, context=context, timeout=10) as answer:
            assert answer.status == 200
            cookie = http.cookies.SimpleCookie(answer.headers["set-cookie"])["itops_session"]
        assert cookie["secure"] and cookie["httponly"] and cookie["samesite"] == "strict"
        with pytest.raises(Exception, match="record layer|EOF|reset|BadStatusLine|Remote end"):
            urllib.request.urlopen(f"http://127.0.0.1:{settings.port}/login", timeout=10)
    finally:
        server.should_exit = True
        worker.join(timeout=10)


def free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def test_the_views_are_anchored_as_they_go(ws: Workspace, monkeypatch: pytest.MonkeyPatch) -> None:
    from toolkit.web import server

    monkeypatch.setattr(server, "ANCHOR_EVERY", 0.0)
    app = build_app(ws.root, ServeSettings(proxy_header="X-Remote-User"))
    try:
        status, _, body = get(app, "/approvals", {"X-Remote-User": "rita"})
        assert status == 200 and "APR-1" in body
        seq = int(body.rsplit("record #", 1)[1].split(".", 1)[0])
        assert ws.anchor_log().newest_seq() == seq  # signed at once, not only when it stops
    finally:
        app.state.site.close()
