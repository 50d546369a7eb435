"""The Windows-side directory tasks (tasks/windows/directory.py: the ActiveDirectory module over
WinRM) through the real Runner, Connector, pywinrm and HTTPS, against the WS-Management replay
server in templated mode: the recorded envelopes of a real Windows Server carry the outputs a
small in-test model of one domain account gives. This is a contract test of our scripts (what is
sent, how a name is quoted, that changes name the SID) and of our parsing — not evidence of how
the ActiveDirectory module answers; the LDAP tasks run against a real Samba DC
(test_directory.py)."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any, ClassVar

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

    # the domain's groups: name → (SID, privileged)
    GROUPS: ClassVar[dict[str, tuple[str, bool]]] = {
        "VPN Users": ("S-1-5-21-1004336348-1177238915-682003330-1120", False),
        "Domain Admins": ("S-1-5-21-1004336348-1177238915-682003330-512", True),
    }

    def reply(self, script: str) -> Reply:
        self.scripts.append(script)
        if "Get-ADGroup" in script:
            assert f"$sid = '{SID}'" in script  # membership is read for the account check found
            literal = re.search(r"^\$gname = '((?:[^']|'')*)'$", script, re.M)
            name = literal.group(1).replace("''", "'") if literal else None
            if name not in self.GROUPS:
                return b'{"found":false}', b"", 0
            sid, privileged = self.GROUPS[name]
            group = {"found": True, "name": name, "sid": sid, "privileged": privileged,
                     "member": name in self.account["groups"]}  # fmt: skip
            return json.dumps(group).encode(), b"", 0
        for verb in ("Add-ADGroupMember", "Remove-ADGroupMember"):
            if verb in script:
                name = next(g for g, (sid, _) in self.GROUPS.items() if f"-Identity '{sid}'" in script)
                assert f"-Members '{SID}'" in script  # both named by SID, never by a typed name
                groups = set(self.account["groups"])
                groups = groups | {name} if verb.startswith("Add") else groups - {name}
                self.account["groups"] = sorted(groups)
                return b'{"done":true}', b"", 0
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


def run(
    tmp_path: Path, server: Any, pki: PKI, task: str, user: str, check: bool = False, **params: str
) -> Any:
    redactor = Redactor()
    credentials = CredentialStore(redactor)
    ledger = open_ledger(f"sqlite:///{tmp_path / 'ledger.db'}", operator="t", redactor=redactor)
    connector = Connector(ConnectOptions(connect_timeout=3, command_timeout=10), credentials)
    runner = Runner(ledger=ledger, connector=connector, credentials=credentials)
    try:
        return runner.run(
            CATALOG.get(task),
            [mgmt(server.port, pki)],
            {"user": user, **params},
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


@pytest.mark.parametrize(("task", "before", "after"), [
    ("account.group-add", ["Staff"], ["Staff", "VPN Users"]),
    ("account.group-remove", ["Staff", "VPN Users"], ["Staff"]),
])  # fmt: skip
def test_group_membership_over_winrm(
    replay: ServerFactory, pki: PKI, tmp_path: Path, env: None, task: str,
    before: list[str], after: list[str],
) -> None:  # fmt: skip
    domain = Domain(groups=before)
    server = replay(reply=domain.reply)
    result = run(tmp_path, server, pki, task, "jdoe", group="VPN Users")
    assert result.outcome == Outcome.FIXED, result.message
    assert domain.account["groups"] == after
    assert result.verify.facts["member"] is (task == "account.group-add")
    again = run(tmp_path, server, pki, task, "jdoe", group="VPN Users")
    assert again.outcome == Outcome.ALREADY_OK, again.message


def test_a_privileged_group_is_refused_without_allow_privileged(
    replay: ServerFactory, pki: PKI, tmp_path: Path, env: None
) -> None:
    domain = Domain()
    server = replay(reply=domain.reply)
    result = run(tmp_path, server, pki, "account.group-add", "jdoe", group="Domain Admins")
    assert result.outcome == Outcome.FAILED and "privileged group" in result.message
    assert not any("Add-ADGroupMember" in s for s in domain.scripts)  # nothing changed
    allowed = run(tmp_path, server, pki, "account.group-add", "jdoe", group="Domain Admins",
                  allow_privileged="true")  # fmt: skip
    assert allowed.outcome == Outcome.FIXED and "Domain Admins" in domain.account["groups"]


def test_the_windows_group_tasks_need_a_second_operator() -> None:
    for name in ("account.group-add", "account.group-remove"):
        spec = CATALOG.get(name).implementation("windows")
        assert spec is not None and spec.risky is True


@pytest.mark.parametrize("group", ["VPN Users' ; Remove-ADGroup x ; '", "$(whoami)", "a`b"])
def test_a_hostile_group_name_reaches_powershell_as_one_literal(
    replay: ServerFactory, pki: PKI, tmp_path: Path, env: None, group: str
) -> None:
    """A group's name may hold any printable character (so its cn can): it travels as one
    single-quoted literal, never as script text."""
    domain = Domain()
    server = replay(reply=domain.reply)
    result = run(tmp_path, server, pki, "account.group-add", "jdoe", group=group)
    assert result.outcome == Outcome.FAILED and result.error == "not-found", result.message
    probe = next(s for s in domain.scripts if "Get-ADGroup" in s)
    assert "$gname = '" + group.replace("'", "''") + "'" in probe
    assert not any("Add-ADGroupMember" in s for s in domain.scripts)
