"""password.reset on Linux with a strict scripted transport: the secret travels only on chpasswd's
stdin, never in a command, a result, a log record or the ticket log — on the success path and on
a failure path where the host echoes it back. (tests/integration/test_linux_password.py does the
same against real accounts over real SSH.)"""

from __future__ import annotations

import json
import logging
import re
from pathlib import Path
from typing import Any

import pytest

from tests.fakes import Script
from tests.unit.linuxfakes import LinuxRun, run_linux
from toolkit.run.runner import Outcome
from toolkit.secrets.credentials import Secret

CANARY = "Canary-Pw-3f1;$(touch /tmp/pwned)`'\"x"


@pytest.fixture(autouse=True)
def canary_env(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ITOPS_TEST_CANARY", CANARY)


def account_script(
    state: dict[str, Any], *, groups: str = "jdoe users", uid: str = "1001", chpasswd: Any = None
) -> Script:
    def shadow(command: Any, stdin: Any) -> tuple[int, str, str]:
        return (
            0,
            f"status={state['status']}\nlastchg={state['lastchg']}\nexpire=\n"
            f"hash={state['hash']}\nfailures={state.get('failures', 0)}\ntoday=20413\n",
            "",
        )

    def change_password(command: Any, stdin: Any) -> tuple[int, str, str]:
        state["stdin"] = stdin
        if chpasswd is not None:
            return chpasswd  # type: ignore[no-any-return]
        state["resets"] = state.get("resets", 0) + 1
        state.update(status="usable", lastchg=20413, hash=f"{state['resets']:016x}")
        return 0, "", ""

    def chage(command: Any, stdin: Any) -> tuple[int, str, str]:
        state["lastchg"] = 0
        return 0, "", ""

    def faillock(command: Any, stdin: Any) -> tuple[int, str, str]:
        state["failures"] = 0
        return 0, "", ""

    return (
        Script()
        .on("getent passwd jdoe", (0, f"jdoe:x:{uid}:1001:John Doe:/home/jdoe:/bin/bash\n", ""))
        .on("id -nG jdoe", (0, groups + "\n", ""))
        .on(re.compile(r"getent shadow jdoe \| awk"), shadow)
        .on(re.compile(r"sudo -n -l -U jdoe"), (0, "User jdoe is not allowed to run sudo.\n", ""))
        .on(re.compile(r"-c chpasswd$"), change_password)
        .on(re.compile(r"chage -d 0 jdoe"), chage)
        .on(re.compile(r"faillock --user jdoe --reset"), faillock)
    )


def locked() -> dict[str, Any]:
    return {"status": "locked", "lastchg": 19000, "hash": "a" * 16}


def assert_nowhere(run: LinuxRun, caplog: pytest.LogCaptureFixture, secret: str) -> None:
    texts = {
        "result": run.result_text(),
        "ledger": run.ledger_text(),
        "logs": caplog.text,
        "commands": "\n".join(c.text + c.display for c in run.transport.sent),
    }
    for where, text in texts.items():
        for form in (secret, json.dumps(secret)[1:-1], secret[:12]):
            assert form not in text, f"the secret leaked into {where}"


def test_the_secret_reaches_chpasswd_on_stdin_only(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    state = locked()
    run = run_linux(
        tmp_path,
        "password.reset",
        {"user": "jdoe", "password": "env:ITOPS_TEST_CANARY"},
        account_script(state),
    )
    assert run.result.outcome == Outcome.FIXED, run.result.message
    assert isinstance(state["stdin"], Secret) and state["stdin"].reveal() == f"jdoe:{CANARY}\n"
    sent_with_stdin = [
        c.text for c, s in zip(run.transport.sent, run.transport.stdin, strict=True) if s
    ]
    assert sent_with_stdin == ["sudo -n -u root -- /bin/sh -c chpasswd"]
    assert "sudo -n -u root -- /bin/sh -c 'chage -d 0 jdoe'" in run.sent
    assert run.result.handovers == ()  # the engineer chose it: nothing to show
    assert any(
        re.search(r"fingerprint scrypt:16384:8:1:[0-9a-f]{32}:[0-9a-f]{32}$", n)
        for n in run.result.notes
    )
    assert run.result.verify is not None and run.result.verify.facts["must_change"] is True
    assert_nowhere(run, caplog, CANARY)


def test_a_generated_password_is_handed_over_once_and_recorded_nowhere(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    state = locked()
    run = run_linux(
        tmp_path,
        "password.reset",
        {"user": "jdoe", "length": "24", "output_file": "/root/jdoe.pw"},
        account_script(state),
    )
    assert run.result.outcome == Outcome.FIXED
    (handover,) = run.result.handovers
    value = handover.secret.reveal()
    assert handover.to_file == "/root/jdoe.pw" and handover.label == "new password for jdoe"
    assert len(value) == 24 and state["stdin"].reveal() == f"jdoe:{value}\n"
    for pattern in (r"[a-z]", r"[A-Z]", r"[0-9]", r"[!#%+=?@^_-]"):
        assert re.search(pattern, value)
    assert "handovers" not in run.result.as_dict()
    assert any("written to /root/jdoe.pw, not recorded" in n for n in run.result.notes)
    assert_nowhere(run, caplog, value)


def test_character_classes_shape_the_generated_password(tmp_path: Path) -> None:
    run = run_linux(
        tmp_path,
        "password.reset",
        {"user": "jdoe", "classes": ["digit", "upper"], "length": "16"},
        account_script(locked()),
    )
    value = run.result.handovers[0].secret.reveal()
    assert re.fullmatch(r"[0-9A-Z]{16}", value) and re.search("[0-9]", value)


def test_failure_path_masks_a_secret_the_host_echoes(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    echo = (1, "", f"chpasswd: line 1: cannot set password to {CANARY}\n")
    run = run_linux(
        tmp_path,
        "password.reset",
        {"user": "jdoe", "password": "env:ITOPS_TEST_CANARY"},
        account_script(locked(), chpasswd=echo),
    )
    assert run.result.outcome == Outcome.FAILED
    assert "exited 1" in run.result.message and "********" in run.result.message
    assert "verify" not in run.steps
    assert_nowhere(run, caplog, CANARY)


def test_a_password_with_a_line_break_is_refused_before_it_is_sent(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    monkeypatch.setenv("ITOPS_TEST_CANARY", "Canary-line\nroot:owned")
    run = run_linux(
        tmp_path,
        "password.reset",
        {"user": "jdoe", "password": "env:ITOPS_TEST_CANARY"},
        account_script(locked()),
    )
    assert run.result.outcome == Outcome.FAILED and "line break" in run.result.message
    assert not any(s for s in run.transport.stdin)
    assert_nowhere(run, caplog, "Canary-line")


@pytest.mark.parametrize(
    ("groups", "uid", "what"),
    [("jdoe sudo", "1001", "sudo"), ("jdoe wheel", "1001", "wheel"), ("jdoe", "0", "uid 0")],
)
def test_privileged_accounts_are_refused(tmp_path: Path, groups: str, uid: str, what: str) -> None:
    run = run_linux(
        tmp_path,
        "password.reset",
        {"user": "jdoe", "password": "env:ITOPS_TEST_CANARY"},
        account_script(locked(), groups=groups, uid=uid),
    )
    assert run.result.outcome == Outcome.FAILED and run.result.error == "privileged-account"
    assert what in run.result.message and "apply" not in run.steps


@pytest.mark.parametrize(("priority", "outcome"), [("P3", Outcome.FAILED), ("P2", Outcome.FIXED)])
def test_allow_privileged_needs_a_p1_or_p2_ticket(
    tmp_path: Path, priority: str, outcome: Outcome
) -> None:
    run = run_linux(
        tmp_path,
        "password.reset",
        {"user": "jdoe", "password": "env:ITOPS_TEST_CANARY", "allow_privileged": "true"},
        account_script(locked(), groups="jdoe sudo"),
        priority=priority,
    )
    assert run.result.outcome == outcome, run.result.message
    if outcome == Outcome.FIXED:
        assert any("P2 ticket: resetting jdoe, a member of sudo" in n for n in run.result.notes)
    else:
        assert "needs a P1 or P2 ticket" in run.result.message


def test_a_second_run_under_the_same_ticket_is_already_ok(tmp_path: Path) -> None:
    state = locked()
    first = run_linux(tmp_path, "password.reset", {"user": "jdoe"}, account_script(state))
    assert first.result.outcome == Outcome.FIXED
    second = run_linux(
        tmp_path, "password.reset", {"user": "jdoe"}, account_script(state), ledger=first.ledger
    )
    assert second.result.outcome == Outcome.ALREADY_OK
    assert "already reset under INC-1042" in second.result.message
    forced = run_linux(
        tmp_path,
        "password.reset",
        {"user": "jdoe", "force": "true"},
        account_script(state),
        ledger=first.ledger,
    )
    assert forced.result.outcome == Outcome.FIXED


def test_unlock_resets_the_faillock_counter(tmp_path: Path) -> None:
    state = {"status": "usable", "lastchg": 19000, "hash": "a" * 16, "failures": 3}
    run = run_linux(tmp_path, "password.reset", {"user": "jdoe"}, account_script(state))
    assert run.result.outcome == Outcome.FIXED
    assert "sudo -n -u root -- /bin/sh -c 'faillock --user jdoe --reset'" in run.sent
    assert "3 failed login(s) counted" in run.result.message
