"""`itops serve` in a real browser: Debian's Chromium driven by Playwright (its Python package,
launched on /usr/bin/chromium; Playwright's own browsers are never downloaded).

The server is the real command (`python -m toolkit serve`), started once for the session on
127.0.0.1 and a free port, over a workspace with a desk week, fixes with hostile output and an
approval (tests/web_site.py). Set ITOPS_SCREENSHOTS=docs to refresh the README's screenshots.
"""

from __future__ import annotations

import contextlib
import csv
import io
import json
import os
import shutil
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests import web_site
from toolkit.ledger import Ledger
from toolkit.workspace import Workspace

pytestmark = pytest.mark.integration
ROOT = Path(__file__).resolve().parents[2]
SHOTS = Path(os.environ.get("ITOPS_SCREENSHOTS") or ROOT / "tests" / "artifacts")
if not SHOTS.is_absolute():
    SHOTS = ROOT / SHOTS
CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
FLAGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class Site:
    def __init__(self, ws: Workspace, url: str) -> None:
        self.ws = ws
        self.url = url

    def records(self, **filters: Any) -> list[Any]:
        book = Ledger(self.ws.ledger_url, operator="test", read_only=True)
        try:
            return list(book.records(**filters))
        finally:
            book.close()


@pytest.fixture(scope="session")
def site(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Site]:
    ws = web_site.build(tmp_path_factory.mktemp("web") / "ws")
    port = free_port()
    env = {**os.environ, "PYTHONPATH": str(ROOT), "ITOPS_OPERATOR": "server"}
    proc = subprocess.Popen(
        [sys.executable, "-m", "toolkit", "-w", str(ws.root), "serve", "--port", str(port)],
        env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
    )  # fmt: skip
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 30
        while True:
            with contextlib.suppress(OSError):
                socket.create_connection(("127.0.0.1", port), timeout=1).close()
                break
            if proc.poll() is not None or time.monotonic() > deadline:
                pytest.fail(
                    f"itops serve did not start: {proc.stdout.read() if proc.stdout else ''}"
                )
            time.sleep(0.1)
        yield Site(ws, url)
    finally:
        proc.terminate()
        proc.wait(timeout=20)


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    # Module scope, not session: while sync_playwright is open, the main thread has a running
    # asyncio loop, and every later test's asyncio.run() would fail.
    from playwright.sync_api import sync_playwright

    if not Path(CHROMIUM).exists():
        pytest.fail("the web tests need Debian's Chromium: apt-get install -y chromium")
    with sync_playwright() as p:
        found = p.chromium.launch(executable_path=CHROMIUM, args=FLAGS[1:])
        yield found
        found.close()


@pytest.fixture
def page(browser: Any) -> Iterator[Any]:
    context = browser.new_context(viewport={"width": 1360, "height": 900}, accept_downloads=True)
    yield context.new_page()
    context.close()


def sign_in(page: Any, site: Site, name: str = "audrey", password: str = web_site.PASSWORD) -> None:
    page.goto(f"{site.url}/login")
    page.fill("input[name=name]", name)
    page.fill("input[name=password]", password)
    page.click("#sign-in")


def shot(page: Any, name: str) -> None:
    SHOTS.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(SHOTS / f"web-{name}.png"), full_page=False)


def test_a_bad_password_is_refused(page: Any, site: Site) -> None:
    sign_in(page, site, password="not the password at all")
    assert page.url.endswith("/login")
    assert page.inner_text("#login-error") == "wrong name or password"
    page.goto(f"{site.url}/search")  # still nobody: back to the sign-in form
    assert "/login?next=" in page.url


def test_repeated_failures_lock_the_name_with_the_same_message(page: Any, site: Site) -> None:
    """Five failures lock a name (known or not: a lock tells nothing about which names exist);
    the sixth attempt gets the same message, with 429; every one is in the ledger with the name
    as typed, and the name shows escaped in the search."""
    name = "mallory<b>x</b>"
    for _ in range(5):
        sign_in(page, site, name, "guess-canary-7f3a")
        assert page.inner_text("#login-error") == "wrong name or password"
    with page.expect_response(
        lambda r: r.url.endswith("/login") and r.request.method == "POST"
    ) as got:
        sign_in(page, site, name, "guess-canary-7f3a")
    assert got.value.status == 429 and got.value.headers.get("retry-after")
    assert page.inner_text("#login-error") == "wrong name or password"
    failed = [r for r in site.records(kind="audit.signin-failed") if r.info["name"] == name]
    assert [r.info["reason"] for r in failed] == ["not an account name"] * 5 + ["account locked"]
    assert all(r.info["client"] == "127.0.0.1" for r in failed)
    assert not any("guess-canary-7f3a" in json.dumps(r.as_dict()) for r in failed)
    # nor anywhere in the workspace: the ledger's files, the state folder, the server's itops.log
    logged = (site.ws.state_dir / "itops.log").read_text()
    assert "web sign-in refused" in logged and "mallory" in logged
    files = [p for p in site.ws.root.rglob("*") if p.is_file()]
    assert not [p for p in files if b"guess-canary-7f3a" in p.read_bytes()]
    sign_in(page, site)  # another name from the same address: 6 failures are not 20
    page.goto(f"{site.url}/search?before={failed[-1].seq + 1}")
    assert page.locator("main b").count() == 0
    assert f"name={name}" in page.locator("td.detail").first.inner_text()


def test_sign_in_search_and_drill_down_to_a_ticket(page: Any, site: Site) -> None:
    sign_in(page, site)
    assert page.url.endswith("/search")
    page.fill("input[name=host]", "lab-03")
    page.check("input[name=changes]")
    page.click("#search")
    assert "host=lab-03" in page.url and "changes=1" in page.url
    hosts = page.locator("td.host").all_inner_texts()
    assert hosts and set(hosts) == {"lab-03"}
    outcomes = page.locator("td.outcome").all_inner_texts()
    # the begin records are left to their finish; the --check run's failure changed nothing
    assert sorted(outcomes) == ["failed", "fixed"]
    # each change shows its approval: who asked, who approved
    assert "approval APR-1" in page.inner_text("table") and "approved by li" in page.inner_text(
        "table"
    )
    shot(page, "search")
    page.click("td.ticket a >> text=INC-2")
    assert "/ticket?id=INC-2" in page.url
    assert page.inner_text("h1") == "Ticket INC-2"
    clocks = page.locator("table").first.inner_text()
    assert "response" in clocks and "resolution" in clocks
    shot(page, "ticket")
    page.click("td.host a >> text=lab-03")
    assert page.inner_text("h1") == "Host lab-03"
    assert "approval.granted" in page.inner_text("table")  # the governance that concerns it


def test_the_kpi_dashboard_drills_down_to_its_tickets(page: Any, site: Site) -> None:
    sign_in(page, site, "lee", web_site.LEAD_PASSWORD)
    assert page.url.endswith("/kpi")
    page.goto(f"{site.url}/kpi?since=2026-11-02&until=2026-11-10")
    tile = page.locator("[data-kpi=tickets_opened] .value")
    opened = int(tile.inner_text())
    shot(page, "kpi")
    tile.locator("a").click()
    assert "/kpi/tickets?figure=tickets_opened" in page.url
    assert page.locator("td.ticket").count() == opened
    for figure in ("tickets_resolved", "backlog_open", "backlog_past_sla"):
        page.goto(f"{site.url}/kpi?since=2026-11-02&until=2026-11-10")
        shown = int(page.inner_text(f"[data-kpi={figure}] .value"))
        page.click(f"[data-kpi={figure}] .value a")
        assert page.locator("td.ticket").count() == shown, figure
    # a lead does not read the raw audit trail
    page.goto(f"{site.url}/search")
    assert page.inner_text("#problem") == "the lead role does not read this page"


def test_csv_and_json_exports_of_a_view(page: Any, site: Site) -> None:
    sign_in(page, site)
    page.goto(f"{site.url}/search?ticket=INC-666")
    with page.expect_download() as got:
        page.click("#export-csv")
    text = Path(got.value.path()).read_text()
    rows = list(csv.reader(io.StringIO(text)))
    assert rows[0] == ["seq", "at", "operator", "ticket", "host", "what", "outcome", "detail"]
    finish = next(r for r in rows[1:] if r[6] == "fixed" and r[4] != "ws-2")
    assert finish[3] == "INC-666" and finish[4] == web_site.HOSTILE_HOST
    assert finish[7].startswith("<script>")  # as text: a spreadsheet formula would be neutralised
    assert "\x1b" not in text  # the escape is a visible stand-in
    formula = next(r for r in rows[1:] if r[4] == "ws-2" and r[6] == "fixed")
    assert formula[7] == "'" + web_site.FORMULA  # a spreadsheet shows it as text (OWASP)
    with page.expect_download() as got:
        page.click("#export-json")
    data = json.loads(Path(got.value.path()).read_text())
    assert data["scope"] == {"ticket": "INC-666"}
    assert {r["ticket"] for r in data["tables"][0]["rows"]} == {"INC-666"}
    # the records themselves, every field as stored: the hostile text intact, as JSON text
    outputs = {r["output_excerpt"] for r in data["records"] if r["kind"] == "action.finish"}
    assert outputs == {web_site.HOSTILE}
    assert isinstance(data["recorded_as"], int)


def test_a_post_to_a_read_page_is_refused(page: Any, site: Site) -> None:
    sign_in(page, site)
    for path in ("/search", "/ticket?id=INC-1", "/kpi", "/chain"):
        answer = page.request.post(f"{site.url}{path}", data={"x": "1"})
        assert answer.status == 405, path
    # the sign-in form without its CSRF token: refused, nobody signed in
    request = urllib.request.Request(
        f"{site.url}/login", data=b"name=audrey&password=correct+horse+battery+staple"
    )
    with pytest.raises(urllib.error.HTTPError) as refused:
        urllib.request.urlopen(request, timeout=10)
    assert refused.value.code == 403


def test_every_view_is_recorded_in_the_ledger(page: Any, site: Site) -> None:
    sign_in(page, site)
    page.goto(f"{site.url}/host?name=ws-1")
    recorded = page.inner_text(".recorded")
    seq = int(recorded.rsplit("#", 1)[1].rstrip("."))
    (view,) = site.records(seq=seq)
    assert view.kind == "audit.view" and view.operator == "audrey"
    info = view.info
    assert info["page"] == "host" and info["scope"] == {"host": "ws-1"}
    assert info["role"] == "auditor" and info["client"] == "127.0.0.1"
    assert info["via"] == "password" and info["format"] == "html" and info["rows"] >= 1
    page.goto(f"{site.url}/chain")
    facts = page.inner_text("dl.facts")
    assert "intact" in facts and "last anchor" in facts
    shot(page, "chain")


def test_hostile_text_is_inert(page: Any, site: Site) -> None:
    sign_in(page, site)
    dialogs: list[str] = []
    page.on("dialog", lambda d: (dialogs.append(d.message), d.dismiss()))
    page.goto(f"{site.url}/ticket?id=INC-666")
    assert page.title() == "Ticket INC-666 · itops"  # the script did not run
    body = page.inner_text("main")
    assert '<script>document.title="pwned"</script><b>bold</b>' in body  # shown, as text
    assert "\u241b[31mRED" in body and "\x1b" not in body  # ESC as ␛
    assert page.locator("main b").count() == 0 and page.locator("main i").count() == 0
    page.goto(f"{site.url}/search?host={web_site.HOSTILE_HOST}")
    assert page.locator("td.host").first.inner_text() == web_site.HOSTILE_HOST
    assert page.title() == "Ledger search · itops" and not dialogs
