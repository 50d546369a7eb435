"""password.reset on Windows: local and AD flows, the privileged-account guard, canary secrets.

A canary password is planted through a credential reference; it must reach the host only inside
the PowerShell script as a SecureString literal, and appear nowhere in the result, the ticket log
or the log output — on the success path and on failure paths where the host echoes it back.
"""

from __future__ import annotations

import base64
import json
import logging
import re
from pathlib import Path
from typing import Any

import pytest
from winfakes import Expect, Run, run_task

from toolkit.remediation.quoting import StdinSecret
from toolkit.run.runner import Outcome
from toolkit.secrets.credentials import MASK, Secret

CANARY = "Canary-Pw-7e1;$(Get-Date)`'\"x"
SID = "S-1-5-21-3623811015-3361044348-30300820-1013"
LOCAL = r"Get-LocalUser \| Where-Object"
AD = r"Import-Module ActiveDirectory\ntry \{ \$u = Get-ADUser -Identity"


def local(**over: Any) -> Any:
    data = {
        "found": True,
        "name": "jdoe",
        "sid": SID,
        "enabled": True,
        "locked": True,
        "admin": False,
        "password_last_set": "2026-10-01T08:00:00.0000000Z",
        "must_change": False,
    }
    return data | over


def ad(**over: Any) -> Any:
    data = {
        "found": True,
        "name": "jdoe",
        "sid": SID,
        "enabled": True,
        "locked": True,
        "groups": [],
        "protected": False,
        "password_last_set": "133740000000000000",
        "must_change": False,
    }
    return data | over


@pytest.fixture(autouse=True)
def canary_env(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ITOPS_TEST_CANARY", CANARY)


def quoted(value: str) -> str:
    return "'" + value.replace("'", "''") + "'"


def assert_no_canary(run: Run, caplog: pytest.LogCaptureFixture, secret: str = CANARY) -> None:
    """The secret (and its quoted forms) is nowhere a person or auditor can read."""
    texts = {
        "result": json.dumps(run.result.as_dict(), default=str),
        "ledger": run.ledger_text(),
        "logs": caplog.text,
        "commands": "\n".join(c.display for c in run.transport.sent),
    }
    for where, text in texts.items():
        encoded = base64.b64encode(secret.encode()).decode()
        for form in (secret, secret.replace("'", "''"), json.dumps(secret)[1:-1], encoded):
            assert form not in text, f"secret leaked into {where}"


def sent_secret(run: Run) -> str:
    """The secret as the reset command's stdin carried it (base64 of UTF-8), decoded; and the
    command lines carry no secret at all."""
    stdins = [s for s in run.transport.stdin if s is not None]
    assert len(stdins) == 1 and isinstance(stdins[0], Secret)
    for command in run.transport.sent:
        assert stdins[0].reveal() not in command.text
    return base64.b64decode(stdins[0].reveal()).decode("utf-8")


def secret_line(run: Run) -> str:
    """The one script line that reads the secret (a SecureString assignment from stdin)."""
    lines = [
        ln for c in run.transport.sent for ln in c.text.splitlines() if "ConvertTo-Secure" in ln
    ]
    assert len(lines) == 1
    return lines[0]


def test_local_reset_with_a_referenced_password(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    run = run_task(
        tmp_path,
        "password.reset",
        {"user": "jdoe", "password": "env:ITOPS_TEST_CANARY"},
        [
            Expect("check", r"\$name = 'jdoe'\n\$u = @\(" + LOCAL, local()),
            Expect(
                "apply",
                r"\$pw = \(ConvertTo-SecureString[\s\S]*\$sid = '" + SID + r"'\n"
                r"Set-LocalUser -SID \$sid -Password \$pw[\s\S]*if \(\$true -and \$a\.IsAccountLocked\)"
                r"[\s\S]*if \(\$true\) \{ \$a\.PasswordExpired = 1",
                {"reset": True},
            ),
            Expect("verify", LOCAL, local(locked=False, must_change=True)),
        ],
    )
    assert run.result.outcome == Outcome.FIXED, run.result.message
    assert run.result.message == (
        "unlocked and reset the password of jdoe (was: reset requested for local account jdoe "
        "(locked out))"
    )
    assert run.result.verify is not None
    assert "must change at next logon, unlocked" in run.result.verify.summary
    assert secret_line(run) == f"$pw = {StdinSecret.TEXT}"
    assert sent_secret(run) == CANARY
    assert all(CANARY not in c.text for c in run.transport.sent), "never on a command line"
    assert "generated_password" not in run.result.verify.facts
    assert_no_canary(run, caplog)


def test_failure_echoing_the_secret_is_masked(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """PowerShell error records quote the failing line; if it ever were the secret's line…"""
    caplog.set_level(logging.DEBUG)
    echo = (
        "ConvertTo-SecureString : Cannot bind parameter\n"
        f"At line:2 char:8\n+ $pw = (ConvertTo-SecureString -String {quoted(CANARY)} -AsPlainText -Force)\n"
        f"password was {CANARY}\n"
    )
    run = run_task(
        tmp_path,
        "password.reset",
        {"user": "jdoe", "password": "env:ITOPS_TEST_CANARY"},
        [
            Expect("check", LOCAL, local()),
            Expect("apply", r"Set-LocalUser", f"stdout {CANARY}", echo, 1),
        ],
    )
    assert run.result.outcome == Outcome.FAILED
    assert run.result.message.startswith("apply: `password reset` exited 1")
    assert MASK in run.result.message
    assert_no_canary(run, caplog)


def test_secret_echoed_by_verify_output_is_masked(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    run = run_task(
        tmp_path,
        "password.reset",
        {"user": "jdoe", "password": "env:ITOPS_TEST_CANARY", "expire": "false"},
        [
            Expect("check", LOCAL, local()),
            Expect("apply", r"if \(\$false\) \{ \$a\.PasswordExpired", {"reset": True}),
            Expect("verify", LOCAL, local(locked=False, name=f"jdoe {CANARY}")),
        ],
    )
    assert run.result.outcome == Outcome.FAILED  # password_last_set did not change
    assert "password-last-set time did not change" in run.result.message
    assert_no_canary(run, caplog)


def test_generated_password_is_masked_but_available_to_the_operator(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    run = run_task(
        tmp_path,
        "password.reset",
        {"user": "jdoe", "length": "24"},
        [
            Expect("check", LOCAL, local(locked=False)),
            Expect("apply", r"ConvertTo-SecureString .*\[Console\]::In", {"reset": True}),
            Expect("verify", LOCAL, local(locked=False, must_change=True)),
        ],
    )
    assert run.result.outcome == Outcome.FIXED
    generated = sent_secret(run)
    assert len(generated) == 24
    assert run.result.verify is not None
    secret = run.result.verify.facts["generated_password"]
    assert isinstance(secret, Secret) and secret.reveal() == generated
    assert re.search(r"[a-z]", generated) and re.search(r"[A-Z]", generated)
    assert re.search(r"[0-9]", generated) and re.search(r"[!#%+=?@^_-]", generated)
    assert MASK in run.ledger_text()
    assert_no_canary(run, caplog, generated)


@pytest.mark.parametrize(
    ("state", "groups"),
    [
        (local(admin=True), "Administrators"),
        (local(admin=None), "Administrators (membership could not be read)"),
        (local(sid="S-1-5-21-3623811015-3361044348-30300820-500"), "the built-in Administrator"),
    ],
    ids=["admin", "membership-unreadable", "builtin-administrator"],
)
def test_privileged_local_account_is_refused(
    tmp_path: Path, state: Any, groups: str, caplog: pytest.LogCaptureFixture
) -> None:
    run = run_task(
        tmp_path,
        "password.reset",
        {"user": "jdoe", "password": "env:ITOPS_TEST_CANARY"},
        [Expect("check", LOCAL, state)],
    )
    assert run.result.outcome == Outcome.FAILED
    assert run.result.error == "privileged-account"
    assert (
        groups in run.result.message
        and "refusing to reset a privileged account" in run.result.message
    )
    assert run.steps == ["check"], "nothing beyond the read-only check ran"
    assert_no_canary(run, caplog)


def test_domain_admin_is_refused_in_ad(tmp_path: Path) -> None:
    run = run_task(
        tmp_path,
        "password.reset",
        {"user": "jdoe", "scope": "ad", "password": "env:ITOPS_TEST_CANARY"},
        [Expect("check", AD + r" 'jdoe'", ad(groups="Domain Admins"))],
    )
    assert run.result.outcome == Outcome.FAILED
    assert "member of Domain Admins" in run.result.message


def test_protected_ad_account_is_refused(tmp_path: Path) -> None:
    run = run_task(
        tmp_path,
        "password.reset",
        {"user": "svc-backup", "scope": "ad", "password": "env:ITOPS_TEST_CANARY"},
        [Expect("check", AD, ad(name="svc-backup", protected=True))],
    )
    assert "protected accounts (adminCount=1)" in run.result.message


def test_allow_privileged_resets_in_ad_and_notes_it(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    run = run_task(
        tmp_path,
        "password.reset",
        {
            "user": "jdoe",
            "scope": "ad",
            "password": "env:ITOPS_TEST_CANARY",
            "allow_privileged": "true",
        },
        [
            Expect("check", AD, ad(groups=["Domain Admins", "Administrators"])),
            Expect(
                "apply",
                r"Import-Module ActiveDirectory\n\$pw = \(ConvertTo-SecureString[^\n]*\n\$sid = '"
                + SID
                + r"'\nSet-ADAccountPassword -Identity \$sid -Reset -NewPassword \$pw\n"
                r"if \(\$true\) \{ Unlock-ADAccount -Identity \$sid \}\n"
                r"if \(\$true\) \{ Set-ADUser -Identity \$sid -ChangePasswordAtLogon \$true \}",
                {"reset": True},
            ),
            Expect("verify", AD, ad(locked=False, must_change=True, groups=["Domain Admins"])),
        ],
        priority="P1",
    )
    assert run.result.outcome == Outcome.FIXED, run.result.message
    assert any("P1 ticket: resetting jdoe, a member of" in n for n in run.result.notes)
    assert_no_canary(run, caplog)


@pytest.mark.parametrize("priority", [None, "P3"])
def test_allow_privileged_needs_a_p1_or_p2_ticket(tmp_path: Path, priority: str | None) -> None:
    run = run_task(
        tmp_path,
        "password.reset",
        {"user": "jdoe", "scope": "ad", "allow_privileged": "true"},
        [Expect("check", AD, ad(groups=["Domain Admins"]))],
        priority=priority,
    )
    assert run.result.outcome == Outcome.FAILED
    assert "allow_privileged needs a P1 or P2 ticket" in run.result.message
    assert [c.step for c in run.result.commands] == ["check"]  # nothing was changed


def test_unknown_account(tmp_path: Path) -> None:
    run = run_task(
        tmp_path,
        "password.reset",
        {"user": "ghost", "scope": "ad"},
        [Expect("check", AD, {"found": False})],
    )
    assert run.result.outcome == Outcome.FAILED
    assert "no account 'ghost' in Active Directory" in run.result.message


def test_still_locked_after_reset_fails_verify(tmp_path: Path) -> None:
    run = run_task(
        tmp_path,
        "password.reset",
        {"user": "jdoe", "password": "env:ITOPS_TEST_CANARY"},
        [
            Expect("check", LOCAL, local()),
            Expect("apply", r"Set-LocalUser", {"reset": True}),
            Expect("verify", LOCAL, local(must_change=True)),
        ],
    )
    assert run.result.outcome == Outcome.FAILED
    assert run.result.message == "verify failed: jdoe: still locked out"


def test_check_only_changes_nothing(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    run = run_task(
        tmp_path,
        "password.reset",
        {"user": "o'brien", "password": "env:ITOPS_TEST_CANARY"},
        [Expect("check", r"\$name = 'o''brien'", local(name="o'brien"))],
        check_only=True,
    )
    assert run.result.outcome == Outcome.WOULD_FIX
    assert run.steps == ["check"]
    assert_no_canary(run, caplog)
