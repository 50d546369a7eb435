"""`itops` end to end, as a user runs it, under GLPI and Zammad tickets — against loopback servers
that implement each vendor's documented request/response shapes for the calls used
(tests/glpi_desk.py, tests/zammad_desk.py: NOT GLPI or Zammad, which cannot run here).

The runs go to a host nothing listens on (127.1.252.9, not a lab address): no lab and no lab
lock are needed. What is checked is what reaches the loopback desk, read from its own state.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.glpi_desk import GlpiServer
from tests.zammad_desk import ZammadServer

pytestmark = pytest.mark.integration
ROOT = Path(__file__).resolve().parents[2]
DEAD = "127.1.252.9"
SECRETS = {
    "GLPI_TOKEN": "itops-user-token",
    "GLPI_APP_TOKEN": "app-tok",
    "ZAMMAD_TOKEN": "itops-access-token",
}


@pytest.fixture(params=["glpi", "zammad"])
def desk(request: pytest.FixtureRequest) -> Iterator[tuple[str, Any]]:
    server = GlpiServer() if request.param == "glpi" else ZammadServer()
    server.start()
    try:
        yield request.param, server
    finally:
        server.stop()


def itops(*args: str, **env: str) -> subprocess.CompletedProcess[str]:
    base = {k: v for k, v in os.environ.items() if not k.startswith(("ITOPS_", "GLPI_", "ZAMMAD_"))}
    # the note is delivered before the command exits (detached delivery: tests/integration/test_itsm_rt.py)
    base.update(PYTHONPATH=str(ROOT), ITOPS_OPERATOR="l2-ana", ITOPS_ITSM_DELIVER="wait", **SECRETS)
    base.update(env)
    return subprocess.run(
        [sys.executable, "-m", "toolkit", *args],
        capture_output=True,
        text=True,
        timeout=180,
        env=base,
        stdin=subprocess.DEVNULL,
    )


def workspace(tmp_path: Path, system: str, url: str) -> Path:
    ws = tmp_path / "ws"
    done = itops("init", str(ws))
    assert done.returncode == 0, done.stderr
    refs = (
        'token = "env:GLPI_TOKEN"\napp_token = "env:GLPI_APP_TOKEN"\n'
        if system == "glpi"
        else 'token = "env:ZAMMAD_TOKEN"\n'
    )
    with open(ws / "itops.toml", "a") as f:
        f.write(
            f'\n[itsm]\nsystem = "{system}"\nurl = "{url}"\nuser = "itops"\n{refs}timeout = 1\n'
            '\n[itsm.categories]\n"Printers" = "printer"\n'
        )
    (ws / "inventory" / "hosts.yml").write_text(
        "all:\n  hosts:\n"
        f"    ws-dead:\n      ansible_host: {DEAD}\n      ansible_port: 2222\n"
        "      platform: linux\n"
    )
    return ws


def notes_on(system: str, server: Any, ticket: str) -> list[str]:
    if system == "glpi":
        return [f["content"] for f in server.notes(ticket) if f["is_private"]]
    return [a["body"] for a in server.notes(ticket)]


def test_check_fix_deliver_and_sync_through_the_cli(desk: tuple[str, Any], tmp_path: Path) -> None:
    system, server = desk
    ws = workspace(tmp_path, system, server.url)
    w = ("--workspace", str(ws))
    high = 5 if system == "glpi" else 3
    ticket = server.new_ticket("printer stuck on floor 3", priority=high)

    check = itops(*w, "itsm", "check")
    assert check.returncode == 0 and "signed in as itops" in check.stdout, check.stderr

    done = itops(*w, "fix", "printer.clear-queue", "ws-dead", "--ticket", ticket)
    assert done.returncode == 3, done.stdout + done.stderr  # the host is unreachable
    assert f"{ticket}: note delivered" in done.stderr, done.stderr
    [text] = notes_on(system, server, ticket)
    assert f"under {ticket}" in text and "ws-dead: unreachable" in text
    shown = json.loads(itops(*w, "ticket", "show", ticket, "--json").stdout)
    assert shown["summary"]["priority"] == ("P1" if system == "glpi" else "P2")
    assert shown["summary"]["category"] == "printer"

    # the desk takes the next note and its answer is lost: pending, then found by its key
    path = "/apirest.php/ITILFollowup" if system == "glpi" else "/api/v1/ticket_articles"
    server.fail("POST", path, delay=2.5, commit=True)
    slow = itops(*w, "fix", "printer.clear-queue", "ws-dead", "--ticket", ticket)
    assert slow.returncode == 3 and f"{ticket}: note pending" in slow.stderr, slow.stderr
    assert len(notes_on(system, server, ticket)) == 2  # the desk has it already
    delivered = itops(*w, "itsm", "deliver", "--json")
    assert delivered.returncode == 0, delivered.stderr
    assert [d["result"] for d in json.loads(delivered.stdout)] == ["already-there"]
    assert len(notes_on(system, server, ticket)) == 2  # not posted twice

    unknown = "GLPI-999" if system == "glpi" else "Z-99999"
    refused = itops(*w, "fix", "printer.clear-queue", "ws-dead", "--ticket", unknown)
    assert refused.returncode == 2 and "has no such ticket" in refused.stderr

    other = server.new_ticket("nothing prints \x1b[31mred\x1b]0;title\x07")  # hostile text
    synced = itops(*w, "itsm", "sync", "--json")
    assert synced.returncode == 0, synced.stderr
    first = json.loads(synced.stdout)
    assert first["system"] == system and first["events"].get("opened") == 1  # `other`
    again = json.loads(itops(*w, "itsm", "sync", "--json").stdout)
    assert again["recorded"] == 0
    listed = itops(*w, "ticket", "show", other, "--json")
    assert listed.returncode == 0 and "nothing prints" in listed.stdout
    shown_text = itops(*w, "ticket", "show", other)
    assert shown_text.returncode == 0 and "nothing prints" in shown_text.stdout
    assert "\x1b" not in shown_text.stdout + listed.stdout and "\x07" not in shown_text.stdout

    if system == "glpi":
        server.set(ticket, "status", 6)  # closed
    else:
        server.set(ticket, "state_id", 4)  # closed
    closed = itops(*w, "fix", "printer.clear-queue", "ws-dead", "--ticket", ticket)
    assert closed.returncode == 2 and "reopen it at the desk first" in closed.stderr
    status = itops(*w, "itsm", "status", "--all", "--json")
    assert {n["state"] for n in json.loads(status.stdout)} == {"delivered"}
    for value in SECRETS.values():
        assert value not in done.stdout + done.stderr + status.stdout + check.stdout


def test_bad_credentials_are_refused_before_anything_runs(
    desk: tuple[str, Any], tmp_path: Path
) -> None:
    system, server = desk
    ws = workspace(tmp_path, system, server.url)
    ticket = server.new_ticket("creds")
    bad = {"GLPI_TOKEN": "nope-Sekret", "ZAMMAD_TOKEN": "nope-Sekret"}
    done = itops("--workspace", str(ws), "fix", "printer.clear-queue", "ws-dead",
                 "--ticket", ticket, **bad)  # fmt: skip
    assert done.returncode == 2 and "(HTTP 401)" in done.stderr, done.stderr
    assert "nope-Sekret" not in done.stdout + done.stderr
    check = itops("--workspace", str(ws), "itsm", "check", **bad)
    assert check.returncode == 2 and "HTTP 401" in check.stderr


def test_kpi_over_synced_desk_tickets_measures_the_desks_times(
    desk: tuple[str, Any], tmp_path: Path
) -> None:
    """MTTR from the desk's own create → solve/close times: two P1 tickets of 150 and 30
    minutes, one of which waited (pending) 60 minutes — the pause is not resolution time."""
    from datetime import UTC, datetime

    system, server = desk
    ws = workspace(tmp_path, system, server.url)

    def at(hhmm: str) -> float:
        return datetime.fromisoformat(f"2026-06-01T{hhmm}:00+00:00").astimezone(UTC).timestamp()

    p1 = 5 if system == "glpi" else 4
    field, pending, working, done = (
        ("status", 4, 2, 5) if system == "glpi" else ("state_id", 3, 2, 4)
    )
    one = server.new_ticket("kpi one", priority=p1, at=at("10:00"))
    server.set(one, field, done, at=at("12:30"))
    two = server.new_ticket("kpi two", priority=p1, at=at("14:00"))
    server.set(two, field, pending, at=at("14:10"))
    server.set(two, field, working, at=at("15:10"))
    server.set(two, field, done, at=at("15:30"))
    hostile = "slow \x1b[31mred\x1b]0;title\x07 <b>bold</b>"
    if system == "glpi":  # its satisfaction surveys (Zammad has none): 0 stars is 1
        server.answer(server.survey(one, at=at("12:30")), 0, hostile, at=at("13:00"))
        server.answer(server.survey(two, at=at("15:30")), 4, at=at("16:00"))
        server.survey(server.new_ticket("kpi unanswered", priority=p1, at=at("09:00")))
    synced = itops("--workspace", str(ws), "itsm", "sync")
    assert synced.returncode == 0, synced.stderr
    if system == "glpi":
        again = json.loads(itops("--workspace", str(ws), "itsm", "sync", "--json").stdout)
        assert again["recorded"] == 0
        shown = json.loads(itops("--workspace", str(ws), "ticket", "show", one, "--json").stdout)
        assert shown["summary"]["survey_score"] == 1
        [survey] = [r for r in shown["records"] if r["kind"] == "ticket.survey"]
        assert survey["data"]["comment"] == hostile and survey["data"]["score"] == 1
        text = itops("--workspace", str(ws), "ticket", "show", one)
        assert text.returncode == 0 and "\x1b" not in text.stdout and "\x07" not in text.stdout
    kpi = itops("--workspace", str(ws), "kpi", "--since", "2026-06-01T00:00Z",
                "--until", "2026-06-02T00:00Z", "--json")  # fmt: skip
    assert kpi.returncode == 0, kpi.stderr
    found = json.loads(kpi.stdout)
    if system == "glpi":
        assert found["surveys"] == 2 and found["csat_mean"] == pytest.approx(2.5)  # (1+4)/2
    assert found["tickets_opened"] == (3 if system == "glpi" else 2)
    assert found["tickets_resolved"] == 2
    assert found["time_to_resolve_mean"] == pytest.approx((150 + 30) / 2)
    assert found["resolution_sla_compliance"] == 1.0  # P1: 4 h
