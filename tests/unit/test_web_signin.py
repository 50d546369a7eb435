"""Sign-in attempts in `itops serve`: every failed one recorded in the ledger (the name as typed,
the address, the reason; never the password), and throttled per account name and per address with
exponential backoff, decided from those records — so a restart of the server forgets nothing.

The HTTP tests drive the real server (uvicorn on 127.0.0.1, a free port) with urllib: the sign-in
form, its CSRF token and the session cookie, as a browser sends them."""

from __future__ import annotations

import contextlib
import http.cookiejar
import io
import logging
import re
import secrets
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from toolkit.ledger import Entry, Ledger, Record
from toolkit.web import signin
from toolkit.web.accounts import Accounts
from toolkit.web.server import ServeSettings, server_for
from toolkit.web.signin import Limits, Throttle
from toolkit.workspace import Workspace

PASSWORD = "correct horse battery staple"
HOSTILE_NAME = '<script>alert(1)</script>\x1b[2J=cmd|"/c calc"!A1'


# -- the rule, on the ledger's records -----------------------------------------------------------
class Clock:
    """Now, as the throttle sees it: set by the test — to a record's own time, then on — so a
    lock can be seen to end without waiting for it, however slowly the records were written."""

    def __init__(self) -> None:
        self.now = time.time()

    def __call__(self) -> float:
        return self.now


def fail(ledger: Ledger, name: str, client: str, reason: str = signin.WRONG_PASSWORD) -> float:
    """A failed sign-in, recorded as the server records it; its time (epoch seconds)."""
    record = ledger.append(
        Entry(signin.FAILED_KIND, data=signin.failed_data(name, client, reason), operator="web")
    )
    return signin.epoch(record.at)


def attempt(throttle: Throttle, name: str, client: str) -> signin.Refusal | None:
    """Ask, and end the attempt at once (the caller records what happened)."""
    refused = throttle.begin(name, client)
    if refused is None:
        throttle.end(name, client)
    return refused


def test_an_account_locks_after_n_failures_with_exponential_backoff(ledger_url: str) -> None:
    """On SQLite and PostgreSQL: 5 failures lock the name for 60 s after the last, the 6th for
    120 s; other names and the same address stay free; refusals while locked do not lengthen
    the lock; a successful sign-in forgives the name's failures."""
    book = Ledger(ledger_url, operator="web")
    clock = Clock()
    throttle = Throttle.on(book, Limits(), clock)
    try:
        for n in range(4):
            assert attempt(throttle, "audrey", "127.0.0.5") is None, n
            fail(book, "audrey", "127.0.0.5")
        assert attempt(throttle, "audrey", "127.0.0.5") is None  # the 5th is still checked
        clock.now = fail(book, "audrey", "127.0.0.5")
        refused = attempt(throttle, "audrey", "127.0.0.9")  # from anywhere: the name is locked
        assert refused is not None and refused.reason == signin.ACCOUNT_LOCKED
        assert refused.until - clock.now == pytest.approx(60)
        assert attempt(throttle, "bob", "127.0.0.5") is None  # the address is not (5 < 20)
        fail(book, "audrey", "127.0.0.5", signin.ACCOUNT_LOCKED)  # recorded, not counted
        clock.now += 61
        assert attempt(throttle, "audrey", "127.0.0.5") is None
        clock.now = fail(book, "audrey", "127.0.0.5") + 90  # the 6th checked failure: 120 s
        refused = attempt(throttle, "audrey", "127.0.0.5")
        assert refused is not None and refused.retry_after(clock.now) == 30
        clock.now += 31
        assert attempt(throttle, "audrey", "127.0.0.5") is None
        book.append(Entry(signin.SIGNIN_KIND, operator="audrey", data={"client": "127.0.0.5"}))
        assert throttle.counts("audrey", "127.0.0.5") == {"account": 0, "source": 6}
        for _ in range(4):
            fail(book, "audrey", "127.0.0.5")
        assert attempt(throttle, "audrey", "127.0.0.5") is None  # 4 since the sign-in
    finally:
        book.close()


def test_a_source_locks_across_names_and_old_failures_expire(ledger_url: str) -> None:
    book = Ledger(ledger_url, operator="web")
    clock = Clock()
    throttle = Throttle.on(book, Limits(source_failures=20), clock)
    try:
        for n in range(20):  # a spray: one guess each at 20 names
            assert attempt(throttle, f"user{n}", "127.0.0.7") is None, n
            clock.now = fail(book, f"user{n}", "127.0.0.7", signin.NO_ACCOUNT)
        refused = attempt(throttle, "user99", "127.0.0.7")
        assert refused is not None and refused.reason == signin.SOURCE_LOCKED
        assert attempt(throttle, "user99", "127.0.0.8") is None  # another address is free
        clock.now += 3601  # past the window: nothing counts any more
        assert throttle.counts("user0", "127.0.0.7") == {"account": 0, "source": 0}
        assert attempt(throttle, "user99", "127.0.0.7") is None
    finally:
        book.close()


def test_guesses_in_flight_count_towards_the_limit(tmp_path: Path) -> None:
    """A burst of parallel guesses cannot slip past the limit while the first are still being
    hashed: attempts begun and not ended count as failures."""
    book = Ledger(f"sqlite:///{tmp_path / 'l.db'}", operator="web")
    throttle = Throttle.on(book, Limits(account_failures=3), Clock())
    try:
        begun = [throttle.begin("audrey", f"127.0.0.{n}") for n in range(1, 4)]
        assert begun == [None, None, None]
        refused = throttle.begin("audrey", "127.0.0.4")
        assert refused is not None and refused.reason == signin.ACCOUNT_LOCKED
        for n in range(1, 4):  # they succeed (say): the name is free again
            throttle.end("audrey", f"127.0.0.{n}")
        assert attempt(throttle, "audrey", "127.0.0.4") is None
    finally:
        book.close()


def test_a_restarted_throttle_reads_the_lock_from_the_ledger(ledger_url: str) -> None:
    book = Ledger(ledger_url, operator="web")
    try:
        for _ in range(5):
            fail(book, "audrey", "127.0.0.5")
        fresh = Throttle.on(book, Limits(), Clock())  # as after a restart: nothing in memory
        refused = attempt(fresh, "audrey", "127.0.0.6")
        assert refused is not None and refused.reason == signin.ACCOUNT_LOCKED
    finally:
        book.close()


def test_after_the_first_read_only_newer_records_are_read(tmp_path: Path) -> None:
    """Failures older than the window are never read again: the reads after the first start at
    the ledger's head as it was then (not at the first sign-in record, which may be old)."""
    book = Ledger(f"sqlite:///{tmp_path / 'l.db'}", operator="web")
    try:
        for n in range(30):
            fail(book, f"user{n}", "127.0.0.7")
        clock = Clock()
        clock.now += 7200  # two hours on: all 30 are out of the window
        read: list[int] = []

        class Counted:
            """The ledger, counting the records each read returns."""

            def records(self, **filters: Any) -> list[Record]:
                found = list(book.records(**filters))
                read.append(len(found))
                return found

            def head(self) -> Record | None:
                return book.head()

        throttle = Throttle.on(Counted(), Limits(), clock)  # type: ignore[arg-type]
        for _ in range(3):
            assert attempt(throttle, "user1", "127.0.0.7") is None
        fail(book, "user1", "127.0.0.7")
        assert attempt(throttle, "user1", "127.0.0.7") is None
        assert read == [0, 0, 0, 1]
    finally:
        book.close()


def test_a_typed_name_is_kept_as_typed_and_bounded() -> None:
    data = signin.failed_data("x" * 1000, "127.0.0.1", signin.BAD_NAME)
    assert data == {"name": "x" * signin.NAME_KEPT, "name_length": 1000,
                    "client": "127.0.0.1", "reason": signin.BAD_NAME}  # fmt: skip
    assert signin.failed_data(None, "127.0.0.1", signin.FORM_EXPIRED)["name"] is None


# -- through the real server -------------------------------------------------------------------
@pytest.fixture
def ws(tmp_path: Path) -> Workspace:
    Workspace.init(tmp_path / "ws")
    ws = Workspace.load(tmp_path / "ws")
    Accounts(ws.state_dir).add("audrey", "auditor", PASSWORD)
    Ledger(ws.ledger_url, operator="ana").close()  # (serve reads a ledger that exists)
    return ws


def free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@contextlib.contextmanager
def serving(ws: Workspace, **given: Any) -> Iterator[str]:
    """`itops serve`'s server on a free port, stopped (and its site closed) afterwards."""
    settings = ServeSettings(port=free_port(), **given)
    server = server_for(ws.root, settings)
    worker = threading.Thread(target=server.run, daemon=True)
    worker.start()
    try:
        for _ in range(200):
            if server.started:
                break
            time.sleep(0.05)
        assert server.started
        yield f"http://127.0.0.1:{settings.port}"
    finally:
        server.should_exit = True
        worker.join(timeout=20)


class _NoRedirect(urllib.request.HTTPRedirectHandler):
    def redirect_request(self, *_args: Any, **_kwargs: Any) -> None:
        return None


class Browser:
    """Cookies kept, redirects not followed: what a browser sends, one request at a time."""

    def __init__(self, url: str) -> None:
        self.url = url
        self.opener = urllib.request.build_opener(
            urllib.request.HTTPCookieProcessor(http.cookiejar.CookieJar()), _NoRedirect()
        )

    def open(self, path: str, form: dict[str, str] | None = None) -> tuple[int, Any, str]:
        body = urllib.parse.urlencode(form).encode() if form is not None else None
        try:
            with self.opener.open(f"{self.url}{path}", body, timeout=30) as answer:
                return answer.status, answer.headers, answer.read().decode()
        except urllib.error.HTTPError as refused:
            return refused.code, refused.headers, refused.read().decode()

    def sign_in(self, name: str, password: str) -> tuple[int, Any, str]:
        _, _, form = self.open("/login")
        token = re.search(r'name="csrf" value="([^"]+)"', form)
        assert token, form
        return self.open("/login", {"csrf": token[1], "name": name, "password": password})


def failed_records(ws: Workspace) -> list[Record]:
    book = Ledger(ws.ledger_url, operator="t", read_only=True)
    try:
        return list(book.records(kind=signin.FAILED_KIND))
    finally:
        book.close()


def every_byte(folder: Path) -> bytes:
    return b"".join(p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file())


@pytest.fixture
def server_log() -> Iterator[io.StringIO]:
    """Everything the itops loggers write during the test, at every level (the file handler
    itops.log gets is the first workspace's of the session, so the test keeps its own)."""
    out = io.StringIO()
    handler = logging.StreamHandler(out)
    handler.setFormatter(logging.Formatter("%(levelname)s %(name)s: %(message)s"))
    logger = logging.getLogger("itops")
    level = logger.level
    logger.addHandler(handler)
    logger.setLevel(logging.DEBUG)
    try:
        yield out
    finally:
        logger.removeHandler(handler)
        logger.setLevel(level)


def test_failed_sign_ins_are_recorded_without_the_password(
    ws: Workspace, server_log: io.StringIO
) -> None:
    """A canary password, wrong for a real account, for an unknown one and for a hostile name:
    each failure is in the ledger with the name as typed, the address and the reason; the
    canary is nowhere — not in the ledger's files, not in the server's log, not in itops.log."""
    canary = f"canary-{secrets.token_hex(8)}"
    with serving(ws) as url:
        browser = Browser(url)
        for name in ("audrey", "nobody", HOSTILE_NAME):
            status, _, page = browser.sign_in(name, canary)
            assert status == 401 and "wrong name or password" in page
            assert canary not in page
        status, _, _ = browser.sign_in("audrey", PASSWORD)
        assert status == 303  # signed in (and recorded: audit.signin)
    records = failed_records(ws)
    assert [(r.info["name"], r.info["client"], r.info["reason"]) for r in records] == [
        ("audrey", "127.0.0.1", signin.WRONG_PASSWORD),
        ("nobody", "127.0.0.1", signin.NO_ACCOUNT),
        (HOSTILE_NAME, "127.0.0.1", signin.BAD_NAME),
    ]
    book = Ledger(ws.ledger_url, operator="t", read_only=True)
    (ok,) = book.records(kind=signin.SIGNIN_KIND)
    book.close()
    assert ok.operator == "audrey" and ok.info["client"] == "127.0.0.1"
    assert canary.encode() not in every_byte(ws.root)  # ledger, -wal, state, itops.log
    logged = server_log.getvalue()
    assert logged.count("web sign-in refused") == 3  # the log was written, and checked
    assert canary not in logged
    assert "\x1b" not in logged and "\u241b[2J" in logged  # the name's ESC shown as \u241b


def test_a_locked_account_gets_the_same_answer_and_429_even_after_a_restart(
    ws: Workspace,
) -> None:
    with serving(ws, signin_failures=3) as url:
        browser = Browser(url)
        for _ in range(3):
            assert browser.sign_in("audrey", "not the password")[0] == 401
        status, headers, page = browser.sign_in("audrey", PASSWORD)  # right, but locked
        assert status == 429 and "wrong name or password" in page
        assert 1 <= int(headers["Retry-After"]) <= 60
        # an unknown name is locked just the same: a lock tells nothing about which names exist
        for _ in range(3):
            assert browser.sign_in("nobody", "not the password")[0] == 401
        status, _, unknown = browser.sign_in("nobody", "not the password")
        assert status == 429 and re.sub(r'value="[^"]+"', "", unknown) == re.sub(
            r'value="[^"]+"', "", page
        )
    with serving(ws, signin_failures=3) as url:  # a restart: the lock is read from the ledger
        status, _, _ = Browser(url).sign_in("audrey", PASSWORD)
        assert status == 429
    reasons = [r.info["reason"] for r in failed_records(ws)]
    assert reasons.count(signin.ACCOUNT_LOCKED) == 3
    locked = [r for r in failed_records(ws) if r.info["reason"] == signin.ACCOUNT_LOCKED]
    assert all(r.info.get("locked_until") for r in locked)
    with serving(ws, signin_failures=3, signin_backoff_seconds=1) as url:  # a short lock: over
        time.sleep(1.2)
        assert Browser(url).sign_in("audrey", PASSWORD)[0] == 303


def test_a_sign_in_form_without_its_token_is_recorded_too(ws: Workspace) -> None:
    with serving(ws) as url:
        status, _, _ = Browser(url).open("/login", {"name": "audrey", "password": "whatever!"})
        assert status == 403
    (record,) = failed_records(ws)
    assert record.info["reason"] == signin.FORM_EXPIRED and record.info["name"] == "audrey"
    assert "whatever!" not in str(record.as_dict())


def test_the_typed_name_is_shown_escaped_in_the_search(ws: Workspace) -> None:
    with serving(ws, proxy_header="X-Remote-User") as url:
        Browser(url).sign_in(HOSTILE_NAME, "not the password")
        request = urllib.request.Request(f"{url}/search", headers={"X-Remote-User": "rita"})
        with urllib.request.urlopen(request, timeout=30) as answer:
            page = answer.read().decode()
    assert "audit.signin-failed" in page
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in page and "<script>" not in page
    assert "" not in page and "␛[2J" in page
