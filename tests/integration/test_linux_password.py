"""password.reset against real local accounts (the lab's `accounts` service), over real SSH and
sudo, with real chpasswd. The new password must work (checked against the real shadow hash) and
must appear nowhere else: not in stdout, stderr, itops.log, the ledger's database files or stored
outputs — on the success path and on a failure path after it was sent."""

from __future__ import annotations

import json
import re
import secrets
import subprocess
import warnings
from pathlib import Path

import pytest

from tests.integration.conftest import LabEnv
from tests.integration.test_secrets import every_byte_written

pytestmark = pytest.mark.integration


def shadow(user: str) -> list[str]:
    return (
        subprocess.run(["getent", "shadow", user], capture_output=True, text=True, check=True)
        .stdout.strip()
        .split(":")
    )


def password_is(user: str, password: str) -> bool:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        import crypt  # libxcrypt through glibc: checks the real yescrypt hash

    stored = shadow(user)[1]
    return crypt.crypt(password, stored) == stored


def assert_nowhere(lab: LabEnv, secret: str, *results: subprocess.CompletedProcess[str]) -> None:
    for result in results:
        assert secret not in result.stdout and secret not in result.stderr
    for form in (secret, json.dumps(secret)[1:-1]):
        assert form.encode() not in every_byte_written(lab.root)


@pytest.fixture
def user(lab: LabEnv) -> str:
    name = str(lab.state.data["accounts"]["user"])
    lab.service("accounts").restore(name)
    return name


def test_a_given_password_reaches_the_account_and_nothing_else(lab: LabEnv, user: str) -> None:
    canary = f"Canary-{secrets.token_hex(6)}$(touch /tmp/pw-canary);'\"`x"
    env = {"ITOPS_TEST_CANARY": canary}
    before = shadow(user)
    assert before[1].startswith("!")  # locked, as the lab leaves it
    check = lab.itops(
        "fix",
        "password.reset",
        "lab-01",
        "-p",
        f"user={user}",
        "-p",
        "password=env:ITOPS_TEST_CANARY",
        "--check",
        env=env,
    )
    assert check.returncode == 4 and "(locked)" in check.stdout
    assert shadow(user) == before  # --check changed nothing

    args = [
        "fix",
        "password.reset",
        "lab-01",
        "-p",
        f"user={user}",
        "-p",
        "password=env:ITOPS_TEST_CANARY",
        "--ticket",
        "LNX-4001",
    ]
    fixed = lab.itops(*args, "--json", env=env)  # a routine reset needs no second operator
    assert fixed.returncode == 0 and "APR-" not in fixed.stdout, fixed.stdout + fixed.stderr
    host = json.loads(fixed.stdout)["hosts"][0]
    assert host["outcome"] == "fixed", host["message"]
    assert password_is(user, canary)  # exactly this password, through stdin and sudo intact
    after = shadow(user)
    assert not after[1].startswith("!") and after[2] == "0"  # unlocked, must change at next login
    assert not Path("/tmp/pw-canary").exists()
    assert any(
        re.search(r"fingerprint scrypt:16384:8:1:[0-9a-f]{32}:[0-9a-f]{32}", n)
        for n in host["notes"]
    )
    chpasswd = [c for c in host["commands"] if c["command"].endswith("chpasswd")]
    assert [c["command"] for c in chpasswd] == ["sudo -n -u root -- /bin/sh -c chpasswd"]

    again = lab.itops(*args, env=env)  # the same change under the same ticket: done already
    assert again.returncode == 0 and re.search(r"^lab-01\s+already-ok", again.stdout, re.M)
    log = lab.itops("--verbose", "log", "--ticket", "LNX-4001", "--json", env=env)
    assert "password of " + user + " reset; fingerprint scrypt:" in log.stdout
    shown = lab.itops("ticket", "show", "LNX-4001", "--json")
    # the reset opened its ticket as a standard request (KPI.md), measured apart from incidents
    assert json.loads(shown.stdout)["summary"]["kind"] == "request", shown.stderr
    assert_nowhere(lab, canary, check, fixed, again, log)


def test_a_generated_password_is_shown_once_or_written_to_a_0600_file(
    lab: LabEnv, user: str, tmp_path: Path
) -> None:
    args = [
        "fix",
        "password.reset",
        "lab-01",
        "-p",
        f"user={user}",
        "-p",
        "length=24",
        "--ticket",
        "LNX-4002",
    ]
    shown = lab.itops(*args)
    assert shown.returncode == 0, shown.stdout + shown.stderr
    lines = [ln for ln in shown.stderr.splitlines() if "(shown once, not recorded)" in ln]
    assert len(lines) == 1
    generated = lines[0].rsplit(": ", 1)[1]
    assert len(generated) == 24 and password_is(user, generated)
    assert shown.stderr.count(generated) == 1 and generated not in shown.stdout  # once, on stderr
    assert_nowhere(lab, generated)  # and in no log, ledger record or stored output

    target = tmp_path / "new-password.txt"
    written = lab.itops(*args, "-p", "force=true", "-p", f"output_file={target}")
    assert written.returncode == 0
    assert (target.stat().st_mode & 0o777) == 0o600
    host, label, value = target.read_text().rstrip("\n").split("\t")
    assert (host, label) == ("lab-01", f"new password for {user}") and password_is(user, value)
    assert value not in written.stderr and f"written to {target}" in written.stderr
    assert_nowhere(lab, value, written)


def test_a_password_from_stdin(lab: LabEnv, user: str) -> None:
    piped = f"Piped-{secrets.token_hex(6)}"
    result = lab.itops(
        "fix",
        "password.reset",
        "lab-01",
        "-p",
        f"user={user}",
        "-p",
        "password=stdin",
        "-p",
        "expire=false",
        "--ticket",
        "LNX-4003",
        input=piped + "\n",
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert password_is(user, piped) and shadow(user)[2] != "0"  # expire=false: no forced change
    assert_nowhere(lab, piped, result)


def test_failure_path_after_the_secret_was_sent(lab: LabEnv, user: str) -> None:
    prefix = f"Canary-{secrets.token_hex(6)}"
    canary = prefix + "x" * 9000  # chpasswd refuses the line: "line too long"
    before = shadow(user)
    args = [
        "fix",
        "password.reset",
        "lab-01",
        "-p",
        f"user={user}",
        "-p",
        "password=env:ITOPS_TEST_CANARY",
        "--ticket",
        "LNX-4004",
    ]
    failed = lab.itops(*args, env={"ITOPS_TEST_CANARY": canary})
    verbose = lab.itops("--verbose", *args, "--json", env={"ITOPS_TEST_CANARY": canary})
    assert failed.returncode == 1 and "chpasswd" in failed.stdout and "exited 1" in failed.stdout
    assert json.loads(verbose.stdout)["hosts"][0]["outcome"] == "failed"
    assert shadow(user)[1] == before[1]  # the password was not changed
    assert_nowhere(lab, prefix, failed, verbose)


def test_a_privileged_account_needs_allow_privileged_on_a_p1_ticket(lab: LabEnv) -> None:
    """(allow_privileged on a P3 ticket is refused too: tests/unit/test_linux_password_units.py)"""
    admin = str(lab.state.data["accounts"]["admin"])
    before = shadow(admin)
    refused = lab.itops(
        "fix", "password.reset", "lab-01", "-p", f"user={admin}", "--ticket", "LNX-4005"
    )
    assert refused.returncode == 1 and "member of sudo" in refused.stdout
    assert shadow(admin) == before
    try:
        p1 = lab.approved(
            "fix",
            "password.reset",
            "lab-01",
            "-p",
            f"user={admin}",
            "-p",
            "allow_privileged=true",
            "--ticket",
            "LNX-4006",
            "--priority",
            "P1",
        )
        assert p1.returncode == 0, p1.stdout + p1.stderr
        assert shadow(admin)[1] != before[1]
        log = lab.itops("log", "--ticket", "LNX-4006", "--json").stdout
        assert "allow_privileged on a P1 ticket: resetting " + admin in log
        assert '"approved_by":"l2-lead"' in log.replace(" ", "")  # the second operator's key
        assert '"requested_by":"l1-tech"' in log.replace(" ", "")
    finally:
        lab.service("accounts").lock(admin)  # never leave a sudo member with a known password
