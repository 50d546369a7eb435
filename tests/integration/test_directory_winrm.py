"""The Windows-side directory tasks (tasks/windows/directory.py: the ActiveDirectory module over
WinRM) through the real Runner, Connector, pywinrm and HTTPS, against the WS-Management replay
server in templated mode: the recorded envelopes of a real Windows Server carry the outputs a
small in-test model of one domain account gives. This is a contract test of our scripts (what is
sent, how a name is quoted, that changes name the SID) and of our parsing — not evidence of how
the ActiveDirectory module answers; the LDAP tasks run against a real Samba DC
(test_directory.py)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from wsman_replay import PASSWORD, PKI, USER, Reply, ServerFactory

from toolkit.inventory import Host, make_host
from toolkit.ledger import open_ledger
from toolkit.remediation.catalog import BUILTIN_TASKS, Catalog
from toolkit.run.runner import Outcome, Runner, RunOptions
from toolkit.secrets.credentials import CredentialStore, Redactor
from toolkit.transports import Connector
from toolkit.transports.base import ConnectOptions

pytestmark = pytest.mark.integration

CATALOG = Catalog.load([BUILTIN_TASKS])
SID = "S-1-5-21-1004336348-1177238915-682003330-1104"


class Domain:
    """One domain account as the ActiveDirectory module would report it."""

    def __init__(self, **state: Any) -> None:
        self.account = {
            "found": True,
            "name": "jdoe",
            "dn": "CN=John Doe,OU=Staff,DC=corp,DC=example",
            "sid": SID,
            "enabled": True,
            "locked": False,
            "expired": False,
            "must_change": False,
            "password_last_set": "2026-11-20T08:00:00.0000000Z",
            "last_bad_password": "2026-12-04T07:55:00.0000000Z",
            "bad_count": 0,
            "groups": ["VPN Users"],
            "pso": "",
        } | state
        self.scripts: list[str] = []

    def reply(self, script: str) -> Reply:
        self.scripts.append(script)
        if "Get-ADUser" in script:
            wanted = "$name = 'jdoe'" in script or "$name = 'jdoe@corp.example'" in script
            body = self.account if wanted else {"found": False}
            return json.dumps(body).encode(), b"", 0
        for verb, change in (
            ("Unlock-ADAccount", {"locked": False}),
            ("Enable-ADAccount", {"enabled": True}),
            ("Disable-ADAccount", {"enabled": False}),
        ):
            if verb in script:
                assert f"$sid = '{SID}'" in script  # changes name the SID check found
                self.account |= change
                return b'{"done":true}', b"", 0
        return b"", b"unexpected script", 1


def mgmt(port: int, pki: PKI) -> Host:
    return make_host(
        "mgmt-01",
        {"platform": "windows", "address": "127.0.0.1", "port": port, "user": USER,
         "password": "env:ITOPS_TEST_WIN_PW", "winrm_ca_bundle": str(pki.ca)},
        ("windows",), "test",
    )  # fmt: skip


def run(tmp_path: Path, server: Any, pki: PKI, task: str, user: str, check: bool = False) -> Any:
    redactor = Redactor()
    credentials = CredentialStore(redactor)
    ledger = open_ledger(f"sqlite:///{tmp_path / 'ledger.db'}", operator="t", redactor=redactor)
    connector = Connector(ConnectOptions(connect_timeout=3, command_timeout=10), credentials)
    runner = Runner(ledger=ledger, connector=connector, credentials=credentials)
    try:
        return runner.run(
            CATALOG.get(task),
            [mgmt(server.port, pki)],
            {"user": user},
            ticket=None if check else "INC-1042",
            options=RunOptions(check_only=check),
        ).results[0]
    finally:
        connector.close()
        ledger.close()


@pytest.fixture
def env(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ITOPS_TEST_WIN_PW", PASSWORD)


def test_status_over_winrm(replay: ServerFactory, pki: PKI, tmp_path: Path, env: None) -> None:
    domain = Domain(locked=True, bad_count=3, pso="CN=Strict PSO,CN=Password Settings Container")
    server = replay(reply=domain.reply)
    result = run(tmp_path, server, pki, "account.status", "jdoe@corp.example", check=True)
    assert result.outcome == Outcome.WOULD_FIX and result.message == "jdoe: locked"
    facts = result.check.facts
    assert facts["bad_password_count"] == 3 and facts["groups"] == ["VPN Users"]
    assert facts["password_policy"].startswith("CN=Strict PSO")
    # a UPN is looked up through a variable the module reads, never a filter built from it
    assert "$name = 'jdoe@corp.example'" in domain.scripts[0]
    assert "-Filter 'UserPrincipalName -eq $name'" in domain.scripts[0]


def test_unlock_over_winrm(replay: ServerFactory, pki: PKI, tmp_path: Path, env: None) -> None:
    domain = Domain(locked=True)
    server = replay(reply=domain.reply)
    result = run(tmp_path, server, pki, "account.unlock", "jdoe")
    assert result.outcome == Outcome.FIXED, result.message
    changes = [ln for s in domain.scripts for ln in s.splitlines() if "-Identity $sid" in ln]
    assert changes == ["Unlock-ADAccount -Identity $sid"]
    assert result.verify.summary == "jdoe is not locked"


@pytest.mark.parametrize(("task", "enabled", "verb"), [
    ("account.disable", True, "Disable-ADAccount"), ("account.enable", False, "Enable-ADAccount"),
])  # fmt: skip
def test_enable_disable_over_winrm(
    replay: ServerFactory, pki: PKI, tmp_path: Path, env: None, task: str, enabled: bool, verb: str
) -> None:
    domain = Domain(enabled=enabled)
    server = replay(reply=domain.reply)
    result = run(tmp_path, server, pki, task, "jdoe")
    assert result.outcome == Outcome.FIXED, result.message
    assert domain.account["enabled"] is not enabled
    assert any(verb in s for s in domain.scripts)


def test_an_unknown_account_is_not_found(
    replay: ServerFactory, pki: PKI, tmp_path: Path, env: None
) -> None:
    server = replay(reply=Domain().reply)
    result = run(tmp_path, server, pki, "account.unlock", "nosuch")
    assert result.outcome == Outcome.FAILED and result.error == "not-found"
    assert "no domain account 'nosuch'" in result.message


@pytest.mark.parametrize("user", ["jdoe' ; Remove-ADUser x ; '", "*", "$(whoami)"])
def test_a_hostile_name_never_reaches_powershell(user: str) -> None:
    from toolkit.errors import ValidationError

    with pytest.raises(ValidationError):
        CATALOG.get("account.unlock").validate({"user": user}, {"windows"})
