"""The service desk round trip against a real Request Tracker 5 (Debian's request-tracker5 with
its SQLite database, started once per test session by `toolkit.lab.rt.RtServer` on
127.1.251.1 — never the lab hosts' 127.1.0.x, so these tests need no lab and no lab lock).

Most runs go to hosts that need no lab: an address nothing listens on, or a local TCP tarpit
that accepts and never speaks (to hold a run open while RT is stopped). The last two tests use
the lab (a real fix of lab-01's printer that resolves the RT ticket; `itops lab up --services
rt`): run them under the lab lock (`flock /work/lab.lock`), or deselect them with -k 'not lab'. What is checked is what
reaches RT, read back over REST 2 with a plain HTTP client, not through itops' adapter.
"""

from __future__ import annotations

import base64
import json
import os
import re
import socket
import sqlite3
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.integration.conftest import LabEnv
from toolkit.lab.rt import PACKAGED_DB, RT_SERVER, SEED_SUBJECT, RtServer

pytestmark = pytest.mark.integration
ROOT = Path(__file__).resolve().parents[2]
ADDRESS = "127.1.251.1"
DEAD = "127.1.252.9"  # nothing listens there: a run's host ends unreachable at once


@pytest.fixture(scope="session")
def rt_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RtServer]:
    """ONE real RT for the whole session (≈2 s to answer here)."""
    if not (os.access(RT_SERVER, os.X_OK) and PACKAGED_DB.is_file()):
        if os.environ.get("CI"):
            pytest.fail("Request Tracker 5 is not installed (scripts/setup installs it)")
        pytest.skip("needs request-tracker5 rt5-db-sqlite rt5-standalone")
    server = RtServer(tmp_path_factory.mktemp("rt"), address=ADDRESS)
    took = server.start()
    print(f"\nRT started in {took:.1f} s at {server.url}")
    try:
        yield server
    finally:
        server.stop()


# -- RT's REST 2, read and written directly ---------------------------------------------------
def rest(
    server: RtServer, method: str, path: str, body: Any = None, password: str = "password"
) -> Any:
    request = urllib.request.Request(
        server.rest_url + path,
        method=method,
        data=None if body is None else json.dumps(body).encode(),
        headers={
            "Authorization": "Basic " + base64.b64encode(f"root:{password}".encode()).decode(),
            "Content-Type": "application/json",
        },
    )
    with urllib.request.urlopen(request, timeout=30) as response:
        return json.loads(response.read())


def new_ticket(server: RtServer, subject: str, priority: int = 50, **fields: Any) -> str:
    made = rest(
        server,
        "POST",
        "ticket",
        {"Queue": "General", "Subject": subject, "Requestor": "alice@example.org",
         "Priority": priority, **fields},
    )  # fmt: skip
    return f"RT-{made['id']}"


def notes_on(server: RtServer, ticket: str, key: str = "itops-note") -> list[str]:
    """The content of every comment on `ticket` that holds `key`."""
    number = ticket.removeprefix("RT-")
    found = rest(
        server,
        "POST",
        f"ticket/{number}/attachments?fields=Content,TransactionId&per_page=100",
        [{"field": "Content", "operator": "LIKE", "value": key}],
    )
    texts = [item["Content"] for item in found["items"]]
    history = rest(server, "GET", f"ticket/{number}/history?fields=Type&per_page=100")
    comments = [t for t in history["items"] if t["Type"] == "Comment"]
    assert len(comments) >= len(texts)
    return texts


# -- a workspace pointed at the RT ------------------------------------------------------------
def workspace(
    tmp_path: Path, url: str, password_ref: str = "env:RT_PASSWORD", timeout: float = 5
) -> Path:
    ws = tmp_path / "ws"
    done = run_itops("init", str(ws))
    assert done.returncode == 0, done.stderr
    with open(ws / "itops.toml", "a") as f:
        f.write(
            f'\n[itsm]\nsystem = "rt"\nurl = "{url}"\nuser = "root"\n'
            f'password = "{password_ref}"\ntimeout = {timeout:g}\n'
        )
    (ws / "inventory" / "hosts.yml").write_text(
        "all:\n  hosts:\n"
        f"    ws-dead:\n      ansible_host: {DEAD}\n      ansible_port: 2222\n"
        "      platform: linux\n"
    )
    return ws


def itops_env(password: str = "password", deliver: str = "wait") -> dict[str, str]:
    """`deliver`: ITOPS_ITSM_DELIVER — "wait" (a run delivers its note before it exits, so a
    test reads RT right after) unless a test is about the default, detached delivery."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("ITOPS_", "RT_"))}
    env.update(
        PYTHONPATH=str(ROOT), ITOPS_OPERATOR="l2-ana", RT_PASSWORD=password,
        ITOPS_ITSM_DELIVER=deliver,
    )  # fmt: skip
    return env


def run_itops(
    *args: str, password: str = "password", deliver: str = "wait"
) -> subprocess.CompletedProcess[str]:
    """The real CLI in a subprocess, as a user runs it."""
    return subprocess.run(
        [sys.executable, "-m", "toolkit", *args],
        capture_output=True,
        text=True,
        timeout=180,
        env=itops_env(password, deliver),
        stdin=subprocess.DEVNULL,
    )


def itops(
    ws: Path, *args: str, password: str = "password", deliver: str = "wait"
) -> subprocess.CompletedProcess[str]:
    return run_itops("--workspace", str(ws), *args, password=password, deliver=deliver)


def outbox(ws: Path) -> list[dict[str, Any]]:
    done = itops(ws, "itsm", "status", "--all", "--json")
    assert done.returncode == 0, done.stderr
    notes: list[dict[str, Any]] = json.loads(done.stdout)
    return notes


def settled(ws: Path, timeout: float = 120.0) -> list[dict[str, Any]]:
    """The outbox once a run's detached deliverer is done with it: every note delivered,
    failed, or tried at least once (a pending note never tried is still in its hands)."""
    deadline = time.monotonic() + timeout
    while True:
        notes = outbox(ws)
        if notes and all(n["state"] != "pending" or n["attempts"] for n in notes):
            return notes
        assert time.monotonic() < deadline, f"the detached delivery never ended: {notes}"
        time.sleep(0.5)


# -- the tests ----------------------------------------------------------------------------------
def test_a_fix_under_an_rt_ticket_writes_exactly_one_note_with_the_evidence(
    rt_server: RtServer, tmp_path: Path
) -> None:
    ws = workspace(tmp_path, rt_server.url)
    ticket = new_ticket(rt_server, "printer stuck on floor 3", priority=95)

    done = itops(ws, "fix", "printer.clear-queue", "ws-dead", "--ticket", ticket)

    assert done.returncode == 3, done.stdout + done.stderr  # the host is unreachable
    assert f"{ticket}: note delivered" in done.stderr
    [note] = outbox(ws)
    assert note["state"] == "delivered" and note["ticket"] == ticket
    [text] = notes_on(rt_server, ticket)
    assert text.count("itops-note: ") == 1 and note["key"] in text
    assert f"itops: printer.clear-queue (fix) by l2-ana under {ticket}" in text
    assert "- ws-dead: unreachable" in text
    head = re.search(r"head #(\d+) sha256 ([0-9a-f]{64})", text)
    assert head, text
    log = itops(ws, "log", "--json")
    records = [json.loads(line) for line in log.stdout.splitlines()]
    hashes = {r["seq"]: r["hash"] for r in records}
    assert hashes[int(head.group(1))] == head.group(2)  # the auditor finds the evidence
    # the mirror: RT's priority 95 is P1, its requester and subject are the local ticket's
    shown = itops(ws, "ticket", "show", ticket, "--json")
    assert shown.returncode == 0, shown.stderr
    summary = json.loads(shown.stdout)
    flat = json.dumps(summary)
    assert '"P1"' in flat and "alice@example.org" in flat and "floor 3" in flat

    again = itops(ws, "itsm", "deliver")  # nothing left: delivering again posts nothing
    assert again.returncode == 0 and "nothing to deliver" in again.stdout
    assert len(notes_on(rt_server, ticket)) == 1


def test_a_runbook_under_an_rt_ticket_writes_one_note_for_all_its_steps(
    rt_server: RtServer, tmp_path: Path
) -> None:
    ws = workspace(tmp_path, rt_server.url)
    ticket = new_ticket(rt_server, "nothing prints")
    done = itops(ws, "runbook", "run", "printer-not-printing", "ws-dead", "--ticket", ticket)
    assert done.returncode == 1, done.stdout + done.stderr  # escalated: the host is unreachable
    [text] = notes_on(rt_server, ticket)
    assert "itops: runbook printer-not-printing (run " in text and "steps: diagnose" in text
    assert "escalated: ws-dead" in text and re.search(r"head #\d+ sha256 [0-9a-f]{64}", text)
    unknown = itops(ws, "runbook", "run", "printer-not-printing", "ws-dead", "--ticket", "RT-99998")
    assert unknown.returncode == 2 and "has no such ticket" in unknown.stderr
    assert "RT-99998" not in itops(ws, "log", "--json").stdout  # nothing opened or recorded


def test_the_desk_decides_priority_not_the_command_line(
    rt_server: RtServer, tmp_path: Path
) -> None:
    ws = workspace(tmp_path, rt_server.url)
    ticket = new_ticket(rt_server, "low priority", priority=10)
    done = itops(
        ws, "fix", "printer.clear-queue", "ws-dead", "--ticket", ticket, "--priority", "P1"
    )
    assert done.returncode == 2 and "--priority is for a new local ticket" in done.stderr
    ran = itops(ws, "fix", "printer.clear-queue", "ws-dead", "--ticket", ticket)
    assert ran.returncode == 3
    shown = json.loads(itops(ws, "ticket", "show", ticket, "--json").stdout)
    assert shown["summary"]["priority"] == "P4"  # RT's 10
    rest(rt_server, "PUT", f"ticket/{ticket[3:]}", {"Priority": 95})  # raised in RT
    assert itops(ws, "fix", "printer.clear-queue", "ws-dead", "--ticket", ticket).returncode == 3
    shown = json.loads(itops(ws, "ticket", "show", ticket, "--json").stdout)
    assert shown["summary"]["priority"] == "P1"  # the mirror follows the desk


def test_an_unknown_rt_ticket_is_refused_before_anything_runs(
    rt_server: RtServer, tmp_path: Path
) -> None:
    ws = workspace(tmp_path, rt_server.url)
    done = itops(ws, "fix", "printer.clear-queue", "ws-dead", "--ticket", "RT-99999")
    assert done.returncode == 2
    assert "RT-99999: RT at" in done.stderr and "has no such ticket" in done.stderr
    assert "action.begin" not in itops(ws, "log", "--json").stdout  # nothing ran


def test_a_resolved_rt_ticket_is_refused_with_a_hint(rt_server: RtServer, tmp_path: Path) -> None:
    ws = workspace(tmp_path, rt_server.url)
    ticket = new_ticket(rt_server, "already done")
    rest(rt_server, "PUT", f"ticket/{ticket[3:]}", {"Status": "resolved"})
    done = itops(ws, "fix", "printer.clear-queue", "ws-dead", "--ticket", ticket)
    assert done.returncode == 2
    assert f"{ticket} is resolved in RT" in done.stderr
    assert "hint: reopen it at the desk first" in done.stderr
    assert notes_on(rt_server, ticket) == []


def test_bad_credentials_are_a_clear_error(rt_server: RtServer, tmp_path: Path) -> None:
    ws = workspace(tmp_path, rt_server.url)
    ticket = new_ticket(rt_server, "creds")
    done = itops(ws, "fix", "printer.clear-queue", "ws-dead", "--ticket", ticket, password="nope")
    assert done.returncode == 2
    assert "refused the credentials of 'root' (HTTP 401)" in done.stderr
    assert "nope" not in done.stdout + done.stderr
    check = itops(ws, "itsm", "check", password="nope")
    assert check.returncode == 2 and "HTTP 401" in check.stderr
    good = itops(ws, "itsm", "check")
    assert good.returncode == 0 and "signed in as root" in good.stdout, good.stderr


def test_hostile_text_from_the_desk_is_escaped(rt_server: RtServer, tmp_path: Path) -> None:
    ws = workspace(tmp_path, rt_server.url)
    hostile = "pwn \x1b[31mred\x1b]0;title\x07 <script>alert(1)</script>"
    ticket = new_ticket(rt_server, hostile)
    done = itops(ws, "fix", "printer.clear-queue", "ws-dead", "--ticket", ticket)
    assert done.returncode == 3, done.stderr
    shown = itops(ws, "ticket", "show", ticket)
    as_json = itops(ws, "ticket", "show", ticket, "--json")
    rest(rt_server, "PUT", f"ticket/{ticket[3:]}", {"Status": "rejected"})
    refused = itops(ws, "fix", "printer.clear-queue", "ws-dead", "--ticket", ticket)
    assert refused.returncode == 2
    for out in (shown.stdout, as_json.stdout, refused.stderr, done.stdout, done.stderr):
        assert "\x1b" not in out and "\x07" not in out
    assert "␛[31mred" in shown.stdout  # shown, visibly
    assert "rejected in RT" in refused.stderr


class Tarpit:
    """A TCP listener that accepts and never speaks: an SSH connect waits for its banner."""

    def __init__(self) -> None:
        self.sock = socket.socket()
        self.sock.bind(("127.1.252.10", 0))
        self.sock.listen(8)
        self.port = self.sock.getsockname()[1]
        self.accepted = threading.Event()
        self.held: list[socket.socket] = []
        threading.Thread(target=self._serve, daemon=True).start()

    def _serve(self) -> None:
        while True:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            self.held.append(conn)
            self.accepted.set()

    def close(self) -> None:
        self.sock.close()
        for conn in self.held:
            conn.close()


def test_rt_stopped_during_a_run_the_run_completes_and_the_note_is_delivered_once_later(
    rt_server: RtServer, tmp_path: Path
) -> None:
    ws = workspace(tmp_path, rt_server.url)
    ticket = new_ticket(rt_server, "RT goes down mid-run", priority=60)
    tarpit = Tarpit()
    known = ws / "inventory" / "known_hosts"  # a pinned key, so the run really connects
    known.write_text(
        f"[127.1.252.10]:{tarpit.port} ssh-ed25519 "
        "AAAAC3NzaC1lZDI1NTE5AAAAIE7aU0l0q3uQ4fqL6yXx0g7u5Y2f6P3QkqJ3gS9m5w7N\n"
    )
    (ws / "inventory" / "hosts.yml").write_text(
        "all:\n  hosts:\n"
        f"    ws-slow:\n      ansible_host: 127.1.252.10\n      ansible_port: {tarpit.port}\n"
        "      platform: linux\n"
    )
    run = subprocess.Popen(
        [sys.executable, "-m", "toolkit", "--workspace", str(ws), "fix", "printer.clear-queue",
         "ws-slow", "--ticket", ticket, "--connect-timeout", "6"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=itops_env(),
        stdin=subprocess.DEVNULL,
    )  # fmt: skip
    try:
        assert tarpit.accepted.wait(60), "the run never reached its host"
        rt_server.stop()  # RT goes down while the host is being worked on
        out, err = run.communicate(timeout=120)
    finally:
        if run.poll() is None:
            run.kill()
        tarpit.close()
    try:
        assert run.returncode == 3, out + err  # the run completed: its host unreachable
        assert "ws-slow" in out and "note pending" in err
        [note] = outbox(ws)
        assert note["state"] == "pending" and note["attempts"] == 1
        assert "unreachable" in note["error"]
    finally:
        rt_server.start()
    delivered = itops(ws, "itsm", "deliver")
    assert delivered.returncode == 0, delivered.stdout + delivered.stderr
    assert "delivered" in delivered.stdout
    [text] = notes_on(rt_server, ticket)
    assert note["key"] in text and "- ws-slow: unreachable" in text
    assert itops(ws, "itsm", "deliver").stdout.strip() == "nothing to deliver"
    assert len(notes_on(rt_server, ticket)) == 1


class RtProxy:
    """Forwards HTTP to RT, one request a connection, and does to the answer to a comment
    what a test asks: `drop` the first (RT committed it; the client sees the connection close,
    as if RT died before answering), or `delay` each by that many seconds."""

    def __init__(
        self, target: tuple[str, int], address: str, *, drop: bool = False, delay: float = 0.0
    ) -> None:
        self.target = target
        self.drop, self.delay = drop, delay
        self.sock = socket.socket()
        self.sock.bind((address, 0))
        self.sock.listen(16)
        self.url = f"http://{address}:{self.sock.getsockname()[1]}"
        self.dropped = 0
        self.comments: list[float] = []  # when each comment's answer was sent on
        threading.Thread(target=self._serve, daemon=True).start()

    def _serve(self) -> None:
        while True:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            threading.Thread(target=self._one, args=(conn,), daemon=True).start()

    def _one(self, conn: socket.socket) -> None:
        with conn:
            data = b""
            while b"\r\n\r\n" not in data:
                chunk = conn.recv(65536)
                if not chunk:
                    return
                data += chunk
            head, _, body = data.partition(b"\r\n\r\n")
            length = re.search(rb"(?i)content-length:\s*(\d+)", head)
            while length and len(body) < int(length.group(1)):
                body += conn.recv(65536)
            with socket.create_connection(self.target, timeout=30) as upstream:
                upstream.sendall(head + b"\r\n\r\n" + body)
                answer = b""
                while chunk := upstream.recv(65536):
                    answer += chunk
            if b"/comment " in head.split(b"\r\n")[0]:
                if self.drop and not self.dropped:
                    self.dropped += 1
                    return  # RT committed; its answer is lost
                time.sleep(self.delay)
                self.comments.append(time.monotonic())
            conn.sendall(answer)

    def close(self) -> None:
        self.sock.close()


def test_a_note_rt_took_before_its_answer_was_lost_is_never_posted_twice(
    rt_server: RtServer, tmp_path: Path
) -> None:
    """RT commits the run's note and its answer never comes back, in the run's detached
    delivery: the note stays pending, and the next delivery finds it by its key on the ticket
    instead of posting it again."""
    proxy = RtProxy((rt_server.address, rt_server.port), "127.1.252.11", drop=True)
    try:
        ws = workspace(tmp_path, proxy.url)
        ticket = new_ticket(rt_server, "answer lost")
        done = itops(ws, "fix", "printer.clear-queue", "ws-dead", "--ticket", ticket,
                     deliver="detach")  # fmt: skip
        assert done.returncode == 3, done.stderr
        assert "delivering in the background" in done.stderr
        [note] = settled(ws)
        assert note["state"] == "pending" and note["attempts"] == 1, note
        assert proxy.dropped == 1
        assert len(notes_on(rt_server, ticket)) == 1  # RT has it, itops does not know yet
        again = itops(ws, "itsm", "deliver")
        assert again.returncode == 0, again.stdout + again.stderr
        assert "already-there" in again.stdout
        assert len(notes_on(rt_server, ticket)) == 1
        [note] = outbox(ws)
        assert note["state"] == "delivered"
    finally:
        proxy.close()


def test_the_run_does_not_wait_for_the_desk_its_detached_delivery_posts_once(
    rt_server: RtServer, tmp_path: Path
) -> None:
    """The default delivery: the command prints its report and exits with the run's code while
    a detached process delivers the note. RT here takes 8 s to answer the comment; the command
    (its output read to the end, as a pipe reader does) is over long before, and the note
    arrives once."""
    proxy = RtProxy((rt_server.address, rt_server.port), "127.1.252.13", delay=8.0)
    try:
        ws = workspace(tmp_path, proxy.url, timeout=30)  # RT's slowness is no timeout
        ticket = new_ticket(rt_server, "detached delivery")
        began = time.monotonic()
        done = itops(ws, "fix", "printer.clear-queue", "ws-dead", "--ticket", ticket,
                     deliver="detach")  # fmt: skip
        ended = time.monotonic()
        assert done.returncode == 3, done.stdout + done.stderr  # the run's own exit code
        assert f"{ticket}: note queued (itops-" in done.stderr
        assert "delivering in the background" in done.stderr
        assert ended - began < 8.0  # its streams closed before RT answered the comment
        [note] = outbox(ws)
        assert note["state"] == "pending" and note["attempts"] == 0  # in the deliverer's hands
        [note] = settled(ws)
        assert note["state"] == "delivered", note
        assert len(proxy.comments) == 1 and proxy.comments[0] > ended
        [text] = notes_on(rt_server, ticket)
        assert note["key"] in text and "- ws-dead: unreachable" in text
        assert itops(ws, "itsm", "deliver").stdout.strip() == "nothing to deliver"
        assert len(notes_on(rt_server, ticket)) == 1
    finally:
        proxy.close()


class TlsProxy:
    """TLS in front of RT (RT's standalone server speaks HTTP only, as production RT does
    behind Apache or nginx): a loopback listener with a certificate from the lab's CA
    (toolkit.lab.tlsca) that relays each connection to RT's plain HTTP port."""

    def __init__(self, target: tuple[str, int], address: str, cert: Path, key: Path) -> None:
        import ssl

        self.target = target
        self.context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        self.context.load_cert_chain(cert, key)
        self.sock = socket.socket()
        self.sock.bind((address, 0))
        self.sock.listen(16)
        self.url = f"https://{address}:{self.sock.getsockname()[1]}"
        self.refused = 0  # handshakes the client broke off (it did not trust the certificate)
        self.relayed = 0
        threading.Thread(target=self._serve, daemon=True).start()

    def _serve(self) -> None:
        while True:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            threading.Thread(target=self._one, args=(conn,), daemon=True).start()

    def _one(self, raw: socket.socket) -> None:
        import select
        import ssl

        try:
            conn = self.context.wrap_socket(raw, server_side=True)
        except (ssl.SSLError, OSError):
            self.refused += 1
            raw.close()
            return
        self.relayed += 1
        with conn, socket.create_connection(self.target, timeout=30) as upstream:
            while True:  # one thread a connection: the TLS socket is used from it only
                ready = [conn] if conn.pending() else select.select([conn, upstream], [], [], 30)[0]
                if not ready:
                    return
                for side in ready:
                    try:
                        data = side.recv(65536)
                    except (ssl.SSLError, OSError):
                        return
                    if not data:
                        return
                    (upstream if side is conn else conn).sendall(data)

    def close(self) -> None:
        self.sock.close()


def test_rt_behind_tls_is_refused_until_its_ca_is_configured(
    rt_server: RtServer, tmp_path: Path
) -> None:
    """RT behind TLS with a certificate of a private CA: not trusted by default (`itsm check`
    and a run under its ticket refused, exit 2, nothing recorded, the hint names ca_bundle);
    with `ca_bundle` the CA's PEM the same run goes through and its note arrives over TLS."""
    from toolkit.lab.tlsca import issue

    address = "127.1.252.14"
    tls = issue(tmp_path / "tls", "rt.lab.test", address, ca_name="itops test RT CA")
    proxy = TlsProxy((rt_server.address, rt_server.port), address, tls.cert, tls.key)
    try:
        ws = workspace(tmp_path, proxy.url)
        ticket = new_ticket(rt_server, "over TLS")
        check = itops(ws, "itsm", "check")
        assert check.returncode == 2, check.stdout + check.stderr
        assert "its TLS certificate is not trusted" in check.stderr
        assert "ca_bundle" in check.stderr
        refused = itops(ws, "fix", "printer.clear-queue", "ws-dead", "--ticket", ticket)
        assert refused.returncode == 2, refused.stdout + refused.stderr
        assert "TLS certificate is not trusted" in refused.stderr
        assert "action.begin" not in itops(ws, "log", "--json").stdout  # nothing ran
        assert outbox(ws) == [] and notes_on(rt_server, ticket) == []
        assert proxy.refused >= 2 and proxy.relayed == 0

        with open(ws / "itops.toml", "a") as f:  # ([itsm] is the file's last table)
            f.write(f'ca_bundle = "{tls.ca}"\n')
        check = itops(ws, "itsm", "check")
        assert check.returncode == 0, check.stdout + check.stderr
        assert f"TLS verified against {tls.ca}" in check.stdout
        done = itops(ws, "fix", "printer.clear-queue", "ws-dead", "--ticket", ticket)
        assert done.returncode == 3, done.stdout + done.stderr
        assert f"{ticket}: note delivered" in done.stderr
        [note] = outbox(ws)
        [text] = notes_on(rt_server, ticket)
        assert note["state"] == "delivered" and note["key"] in text
        assert proxy.relayed >= 2
    finally:
        proxy.close()


def test_resolve_leaves_the_rt_ticket_open_when_a_host_is_not_fixed(
    rt_server: RtServer, tmp_path: Path
) -> None:
    """--resolve resolves only when every host ended fixed or already-ok; an unreachable host
    leaves the RT ticket open (a fix that resolves it: test_itsm_rt_lab.py)."""
    ws = workspace(tmp_path, rt_server.url)
    ticket = new_ticket(rt_server, "resolve me")
    done = itops(ws, "fix", "printer.clear-queue", "ws-dead", "--ticket", ticket, "--resolve")
    assert done.returncode == 3
    assert f"{ticket} left open (--resolve)" in done.stderr
    assert rest(rt_server, "GET", f"ticket/{ticket[3:]}")["Status"] == "new"
    [note] = notes_on(rt_server, ticket)  # one note, saying why it stays open
    assert f"--resolve: {ticket} left open (--resolve): ws-dead did not end fixed" in note
    assert [n["resolve"] for n in outbox(ws)] == [False]


def test_sqlite_copy_is_the_servers_own(rt_server: RtServer) -> None:
    """The package's database is never the one RT writes to."""
    db = rt_server.dir / "rtdb"
    with sqlite3.connect(db) as conn:
        (count,) = conn.execute("SELECT count(*) FROM Tickets").fetchone()
    with sqlite3.connect(f"file:{PACKAGED_DB}?mode=ro", uri=True) as conn:
        (packaged,) = conn.execute("SELECT count(*) FROM Tickets").fetchone()
    assert count > packaged


CANARY = "Canary-itops-7fq2x9Zw"  # the itops account's password: must never be seen anywhere
RIGHTS = ("ShowTicket", "ShowTicketComments", "CommentOnTicket", "ModifyTicket", "SeeQueue")


def test_an_itops_account_with_the_documented_rights_only_and_its_password_never_shows(
    rt_server: RtServer, tmp_path: Path
) -> None:
    """docs/itsm.md's list of rights is enough; without them RT says 403 and itops says which
    right is missing; the password (a canary) is in no output, log, ledger or note."""
    from toolkit.itsm import DeskAuthError, ItsmSettings
    from toolkit.itsm.rt import RtDesk
    from toolkit.secrets.credentials import Secret

    made = rest(
        rt_server,
        "POST",
        "user",
        {"Name": "itops", "Password": CANARY, "Privileged": 1, "EmailAddress": "itops@example.org"},
    )
    assert made["id"] == "itops"
    ws = workspace(tmp_path, rt_server.url)
    config = (ws / "itops.toml").read_text().replace('user = "root"', 'user = "itops"')
    (ws / "itops.toml").write_text(config)
    ticket = new_ticket(rt_server, f"needs the itops account {CANARY[:6]}")

    refused = itops(
        ws, "fix", "printer.clear-queue", "ws-dead", "--ticket", ticket, password=CANARY
    )
    assert refused.returncode == 2 and "may not look up" in refused.stderr
    assert "(HTTP 403)" in refused.stderr and "docs/itsm.md" in refused.stderr

    with sqlite3.connect(rt_server.dir / "rtdb") as db:  # RT 5.0's REST 2 has no ACL endpoint
        (group,) = db.execute(
            "SELECT g.id FROM Groups g JOIN Users u ON g.Instance = u.id "
            "WHERE g.Domain = 'ACLEquivalence' AND u.Name = 'itops'"
        ).fetchone()
        for right in RIGHTS:
            db.execute(
                "INSERT INTO ACL (PrincipalType, PrincipalId, RightName, ObjectType, ObjectId, "
                "Creator, Created, LastUpdatedBy, LastUpdated) VALUES ('Group', ?, ?, "
                "'RT::System', 1, 1, datetime('now'), 1, datetime('now'))",
                (group, right),
            )
    done = itops(ws, "fix", "printer.clear-queue", "ws-dead", "--ticket", ticket, password=CANARY)
    assert done.returncode == 3 and f"{ticket}: note delivered" in done.stderr, done.stderr
    check = itops(ws, "itsm", "check", password=CANARY)
    assert check.returncode == 0 and "signed in as itops" in check.stdout, check.stderr
    desk = RtDesk(
        ItsmSettings(system="rt", url=rt_server.url, user="itops", timeout=10),
        password=Secret(CANARY),
        token=None,
    )
    try:
        [note] = outbox(ws)
        assert desk.find_note(ticket, note["key"])  # ShowTicketComments
        assert desk.resolve(ticket) == "resolved"  # ModifyTicket
    finally:
        desk.close()
    with pytest.raises(DeskAuthError):
        RtDesk(
            ItsmSettings(system="rt", url=rt_server.url, user="itops", timeout=10),
            password=Secret("wrong"),
            token=None,
        ).lookup(ticket)
    seen = [refused.stdout, refused.stderr, done.stdout, done.stderr, check.stdout, check.stderr]
    seen += [p.read_bytes().decode("utf-8", "replace") for p in (ws / ".itops").rglob("*")
             if p.is_file()]  # fmt: skip
    seen += notes_on(rt_server, ticket)
    assert all(CANARY not in text for text in seen)


# -- with the lab (under the lab lock) ------------------------------------------------------------
def test_lab_a_verified_fix_with_resolve_resolves_the_rt_ticket(
    lab: LabEnv, rt_server: RtServer, tmp_path: Path
) -> None:
    ws = workspace(tmp_path, rt_server.url)
    lab_dir = lab.root / ".itops" / "lab"
    config = (ws / "itops.toml").read_text()
    (ws / "itops.toml").write_text(
        config.replace('"inventory/hosts.yml"', f'"{lab_dir / "hosts.yml"}"').replace(
            '"inventory/known_hosts"', f'"{lab_dir / "known_hosts"}"'
        )
    )
    ticket = new_ticket(rt_server, "printer on lab-01 stuck")
    lab.break_printer("lab-01")
    done = itops(ws, "fix", "printer.clear-queue", "lab-01", "--ticket", ticket, "--resolve")
    assert done.returncode == 0, done.stdout + done.stderr
    assert f"{ticket} resolved" in done.stdout and f"{ticket}: resolved with a note" in done.stderr
    assert rest(rt_server, "GET", f"ticket/{ticket[3:]}")["Status"] == "resolved"
    [note] = notes_on(rt_server, ticket)  # ONE note: the run, and the resolution folded in
    assert "- lab-01: fixed" in note
    assert "resolution: " in note and "verified fixed on 1 host(s) (lab-01)" in note
    shown = json.loads(itops(ws, "ticket", "show", ticket, "--json").stdout)
    assert shown["summary"]["state"] == "resolved"
    # and the resolved ticket now refuses further runs
    again = itops(ws, "fix", "printer.clear-queue", "lab-01", "--ticket", ticket)
    assert again.returncode == 2 and "is resolved in RT" in again.stderr


def test_lab_up_services_rt_starts_rt_with_a_ticket_and_prints_the_itsm_lines(
    lab: LabEnv, tmp_path: Path
) -> None:
    ws = tmp_path / "rtlab"
    assert run_itops("init", str(ws)).returncode == 0
    up = itops(ws, "lab", "up", "--hosts", "1", "--services", "rt")
    try:
        assert up.returncode == 0, up.stdout + up.stderr
        assert "Request Tracker at http://127.1.251.1:" in up.stdout and "ticket RT-1" in up.stdout
        hint = (ws / ".itops" / "lab" / "itsm.toml").read_text()
        assert hint.startswith('[itsm]\nsystem = "rt"\n') and 'system = "rt"' in up.stdout
        with open(ws / "itops.toml", "a") as f:
            f.write("\n" + hint)
        assert itops(ws, "itsm", "check").returncode == 0
        shown = itops(ws, "fix", "printer.clear-queue", "lab-01", "--check", "--ticket", "RT-1")
        assert shown.returncode in (0, 4), shown.stdout + shown.stderr
        ticket = json.loads(itops(ws, "ticket", "show", "RT-1", "--json").stdout)
        assert ticket["summary"]["summary"] == SEED_SUBJECT
        assert "note delivered" in shown.stderr  # a --check under a desk ticket is noted too
    finally:
        down = itops(ws, "lab", "down")
    assert down.returncode == 0
    url = re.search(r"http://127\.1\.251\.1:\d+", up.stdout)
    assert url and not (ws / ".itops" / "lab" / "rt").exists()
    with pytest.raises(urllib.error.URLError):
        urllib.request.urlopen(url.group() + "/REST/2.0/", timeout=3)


# -- itops itsm sync: the desk's tickets pulled into the ledger --------------------------------
def sync(ws: Path, *args: str) -> dict[str, Any]:
    done = itops(ws, "itsm", "sync", "--json", *args)
    assert done.returncode == 0, done.stdout + done.stderr
    result: dict[str, Any] = json.loads(done.stdout)
    return result


def events_of(ws: Path, ticket: str) -> list[tuple[str, dict[str, Any]]]:
    """The ticket's events as recorded: (event, data) in ledger order."""
    shown = itops(ws, "ticket", "show", ticket, "--json")
    assert shown.returncode == 0, shown.stderr
    records = json.loads(shown.stdout)["records"]
    return [(r["kind"][7:], r["data"]) for r in records if r["kind"].startswith("ticket.")]


def correspond(server: RtServer, ticket: str, text: str = "looking into it") -> None:
    rest(server, "POST", f"ticket/{ticket[3:]}/correspond",
         {"Content": text, "ContentType": "text/plain"})  # fmt: skip


def test_sync_pulls_rt_tickets_and_their_lifecycle_once(
    rt_server: RtServer, tmp_path: Path
) -> None:
    """Opened, first response, waiting/resumed, resolved, reopened, rejected (closed), priority
    and queue changes — each at RT's time, with RT's transaction id as its key; a second sync
    adds nothing; a change after the first sync comes with the next; hostile text stays escaped."""
    ws = workspace(tmp_path, rt_server.url)
    queue = f"Printers {tmp_path.name[-12:]}"
    rest(rt_server, "POST", "queue", {"Name": queue})
    with open(ws / "itops.toml", "a") as f:
        f.write(f'\n[itsm.categories]\n"{queue}" = "printer"\n')
    life = new_ticket(rt_server, "sync: a whole lifecycle", priority=30)  # P3
    n = life[3:]
    rest(rt_server, "PUT", f"ticket/{n}", {"Priority": 95})  # → P1
    correspond(rt_server, life)  # root, not the requester: the first response
    rest(rt_server, "PUT", f"ticket/{n}", {"Status": "stalled"})
    rest(rt_server, "PUT", f"ticket/{n}", {"Status": "open"})
    correspond(rt_server, life, "an update")  # a later reply: a status update
    rest(rt_server, "PUT", f"ticket/{n}", {"Status": "resolved"})
    rest(rt_server, "PUT", f"ticket/{n}", {"Status": "open"})  # reopened at the desk
    rest(rt_server, "PUT", f"ticket/{n}", {"Status": "rejected"})
    moved = new_ticket(rt_server, "sync: moved to the printer queue", priority=10)
    rest(rt_server, "PUT", f"ticket/{moved[3:]}", {"Queue": queue})
    hostile = new_ticket(rt_server, "sync \x1b[31mred\x1b]0;t\x07 <b>x</b>", priority=60)

    first = sync(ws)
    assert first["recorded"] > 0 and first["skipped"] == [], first

    got = events_of(ws, life)
    assert [e for e, _ in got] == [
        "opened", "updated", "responded", "waiting", "resumed", "note", "resolved",
        "reopened", "resolved", "closed",
    ]  # fmt: skip
    opened = got[0][1]
    assert opened["priority"] == "P3" and opened["requester"] == "alice@example.org"
    assert opened["summary"] == "sync: a whole lifecycle" and opened["imported"] is True
    assert got[1][1]["priority"] == "P1" and got[1][1]["by"] == "root"
    assert got[-2][1]["code"] == "rejected" and got[-1][1]["unconfirmed"] is True
    history = rest(rt_server, "GET", f"ticket/{n}/history?fields=Type,Created&per_page=100")
    created = next(t for t in history["items"] if t["Type"] == "Create")
    assert opened["at"].startswith(created["Created"][:19])  # RT's own time
    log = [json.loads(line) for line in itops(ws, "log", "--json").stdout.splitlines()]
    keys = [r["action_id"] for r in log if r["ticket"] == life and r["kind"] != "itsm.synced"]
    assert keys[0] == f"rt-{created['id']}" and len(set(keys)) == len(keys)
    summary = json.loads(itops(ws, "ticket", "show", life, "--json").stdout)["summary"]
    assert summary["state"] == "closed" and summary["priority"] == "P1"
    assert summary["reopens"] == 1
    moved_events = events_of(ws, moved)
    assert [e for e, _ in moved_events] == ["opened", "updated"]
    assert moved_events[0][1]["category"] == "other" and moved_events[1][1]["category"] == "printer"

    again = sync(ws)  # nothing new at the desk: nothing recorded
    assert again["recorded"] == 0 and again["steps"] == 0 and again["through"] == first["through"]
    reread = sync(ws, "--since", "1d")  # read again from a day ago: still nothing
    assert reread["recorded"] == 0, (reread, itops(ws, "log", "--json").stdout[-6000:])
    assert len(events_of(ws, life)) == len(got)

    rest(rt_server, "PUT", f"ticket/{moved[3:]}", {"Status": "resolved"})  # after the sync
    later = sync(ws)
    assert later["events"] == {"resolved": 1} and later["tickets"] == 1
    assert [e for e, _ in events_of(ws, moved)] == ["opened", "updated", "resolved"]

    shown = itops(ws, "ticket", "show", hostile)
    as_json = itops(ws, "ticket", "show", hostile, "--json")
    listed = itops(ws, "ticket", "list")
    for out in (shown.stdout, as_json.stdout, listed.stdout):
        assert "\x1b" not in out and "\x07" not in out
    assert "␛[31mred" in shown.stdout


def test_sync_of_a_ticket_a_run_mirrored_first_adds_its_history_not_a_second_opening(
    rt_server: RtServer, tmp_path: Path
) -> None:
    ws = workspace(tmp_path, rt_server.url)
    ticket = new_ticket(rt_server, "mirrored, then synced", priority=55)
    assert itops(ws, "fix", "printer.clear-queue", "ws-dead", "--ticket", ticket).returncode == 3
    rest(rt_server, "PUT", f"ticket/{ticket[3:]}", {"Status": "resolved"})
    sync(ws)
    got = [e for e, _ in events_of(ws, ticket)]
    assert got.count("opened") == 1 and got[-1] == "resolved", got
    summary = json.loads(itops(ws, "ticket", "show", ticket, "--json").stdout)["summary"]
    assert summary["state"] == "resolved" and summary["priority"] == "P2"
    history = rest(rt_server, "GET", f"ticket/{ticket[3:]}/history?fields=Type,Created")
    created = next(t for t in history["items"] if t["Type"] == "Create")["Created"]
    assert summary["opened_at"].startswith(created[:19])  # the mirror opened it at RT's time


def test_kpi_over_synced_rt_tickets_measures_rt_times(rt_server: RtServer, tmp_path: Path) -> None:
    """MTTR from RT's create → resolve: two P1 tickets (24×7 clocks) of 150 and 30 minutes, one
    of which waited (stalled) 60 minutes — the pause is not resolution time."""
    ws = workspace(tmp_path, rt_server.url)
    one = new_ticket(rt_server, "kpi one", priority=95)
    rest(rt_server, "PUT", f"ticket/{one[3:]}", {"Status": "resolved"})
    two = new_ticket(rt_server, "kpi two", priority=95)
    rest(rt_server, "PUT", f"ticket/{two[3:]}", {"Status": "stalled"})
    rest(rt_server, "PUT", f"ticket/{two[3:]}", {"Status": "open"})
    rest(rt_server, "PUT", f"ticket/{two[3:]}", {"Status": "resolved"})
    day = "2026-06-01"  # RT's times moved to a day of their own (RT's REST 2 cannot back-date)
    times = {
        one: {"Create": "10:00:00", "Status:resolved": "12:30:00"},
        two: {"Create": "14:00:00", "Status:stalled": "14:10:00", "Status:open": "15:10:00",
              "Status:resolved": "15:30:00"},
    }  # fmt: skip
    with sqlite3.connect(rt_server.dir / "rtdb") as db:
        for ticket, steps in times.items():
            rows = db.execute(
                "SELECT id, Type, NewValue FROM Transactions WHERE ObjectType = 'RT::Ticket' "
                "AND ObjectId = ?",
                (int(ticket[3:]),),
            ).fetchall()
            for txn, kind, new in rows:
                at = steps.get(f"{kind}:{new}" if kind == "Status" else kind)
                if at is None and kind == "Status" and new == "open":
                    at = steps["Create"]  # RT's own new → open
                db.execute(
                    "UPDATE Transactions SET Created = ? WHERE id = ?",
                    (f"{day} {at or steps['Create']}", txn),
                )
    sync(ws)
    done = itops(ws, "kpi", "--since", "2026-06-01T00:00Z", "--until", "2026-06-02T00:00Z",
                 "--json")  # fmt: skip
    assert done.returncode == 0, done.stderr
    kpi = json.loads(done.stdout)
    assert kpi["tickets_opened"] == 2 and kpi["tickets_resolved"] == 2
    assert kpi["time_to_resolve_mean"] == pytest.approx((150 + 30) / 2)
    assert kpi["resolution_sla_compliance"] == 1.0  # P1: 4 h


def test_a_scheduled_run_delivers_the_pending_notes_and_a_desk_down_never_fails_it(
    rt_server: RtServer, tmp_path: Path
) -> None:
    import fcntl

    ws = workspace(tmp_path, rt_server.url)
    ticket = new_ticket(rt_server, "pending until the scheduler runs")
    lock = ws / ".itops" / "itsm-outbox.lock"
    lock.parent.mkdir(parents=True, exist_ok=True)
    with open(lock, "a") as held:  # another itops is delivering: the fix leaves its note pending
        fcntl.flock(held, fcntl.LOCK_EX)
        done = itops(ws, "fix", "printer.clear-queue", "ws-dead", "--ticket", ticket)
    assert done.returncode == 3 and "note pending (busy" in done.stderr, done.stderr
    [note] = outbox(ws)
    assert note["state"] == "pending" and notes_on(rt_server, ticket) == []
    added = itops(ws, "schedule", "add", "nightly", "--task", "printer.clear-queue",
                  "--targets", "ws-dead", "--cron", "0 3 * * *")  # fmt: skip
    assert added.returncode == 0, added.stderr
    run = itops(ws, "schedule", "run", "nightly", "--json")
    result = json.loads(run.stdout)[0] if run.stdout.startswith("[") else json.loads(run.stdout)
    assert result["resolution"] == "failed"  # its host is unreachable: the job's own result
    [text] = notes_on(rt_server, ticket)  # and the pending note went out after it
    assert note["key"] in text
    assert [n["state"] for n in outbox(ws)] == ["delivered"]

    # the desk down: a scheduled run's result is its own, the note waits
    other = new_ticket(rt_server, "desk down at the scheduled run")
    with open(lock, "a") as held:
        fcntl.flock(held, fcntl.LOCK_EX)
        assert itops(ws, "fix", "printer.clear-queue", "ws-dead", "--ticket", other).returncode == 3
    config = (ws / "itops.toml").read_text()
    (ws / "itops.toml").write_text(config.replace(rt_server.url, f"http://{DEAD}:9"))
    down = itops(ws, "schedule", "run", "nightly", "--json")
    assert down.returncode == run.returncode, down.stderr
    again = json.loads(down.stdout)[0] if down.stdout.startswith("[") else json.loads(down.stdout)
    assert again["resolution"] == "failed" and again["summary"] == result["summary"]
    pending = [n for n in outbox(ws) if n["state"] == "pending"]
    assert len(pending) == 1 and pending[0]["ticket"] == other and pending[0]["attempts"] == 1


def test_rt_stopped_during_a_50_host_run_the_run_completes_and_one_note_arrives_after(
    rt_server: RtServer, tmp_path: Path
) -> None:
    """50 hosts, each a real SSH connection to a peer that never answers (held open until the
    connect timeout): RT is stopped while they are being worked on. The run ends with its own
    outcome, its detached deliverer finds RT down and leaves the ONE note waiting in the outbox,
    and after RT's restart it is posted exactly once."""
    ws = workspace(tmp_path, rt_server.url)
    ticket = new_ticket(rt_server, "RT goes down during a 50-host run", priority=60)
    tarpit = Tarpit()
    (ws / "inventory" / "known_hosts").write_text(
        f"[127.1.252.10]:{tarpit.port} ssh-ed25519 "
        "AAAAC3NzaC1lZDI1NTE5AAAAIE7aU0l0q3uQ4fqL6yXx0g7u5Y2f6P3QkqJ3gS9m5w7N\n"
    )
    hosts = "".join(
        f"    ws-{i:02d}:\n      ansible_host: 127.1.252.10\n      ansible_port: {tarpit.port}\n"
        "      platform: linux\n"
        for i in range(50)
    )
    (ws / "inventory" / "hosts.yml").write_text("all:\n  hosts:\n" + hosts)
    run = subprocess.Popen(
        [sys.executable, "-m", "toolkit", "--workspace", str(ws), "fix", "printer.clear-queue",
         "all", "--ticket", ticket, "--connect-timeout", "5", "--forks", "50"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        env=itops_env(deliver="detach"), stdin=subprocess.DEVNULL,
    )  # fmt: skip
    try:
        assert tarpit.accepted.wait(60), "the run never reached its hosts"
        rt_server.stop()
        out, err = run.communicate(timeout=180)
    finally:
        if run.poll() is None:
            run.kill()
        tarpit.close()
    try:
        assert run.returncode == 3, out + err  # the run's own code, its delivery detached
        assert "delivering in the background" in err
        [note] = settled(ws)  # one note for the run, not one per host; RT down: it waits
        assert note["state"] == "pending" and note["attempts"] == 1, note
        assert "unreachable" in note["error"]
    finally:
        rt_server.start()
    delivered = itops(ws, "itsm", "deliver")
    assert delivered.returncode == 0, delivered.stdout + delivered.stderr
    [text] = notes_on(rt_server, ticket)
    assert note["key"] in text and text.count(": unreachable") == 50
    assert itops(ws, "itsm", "deliver").stdout.strip() == "nothing to deliver"
    assert len(notes_on(rt_server, ticket)) == 1
