"""software.install / software.remove on Windows through the real Runner, Connector and WinRM
transport, over real HTTPS with NTLM, against the WS-Management replay server.

No Windows host runs here. The envelopes are those pypsrp recorded from a real Windows Server
(wsman_replay's templated mode); what the package tools print inside them — winget's `list` table
with its progress spinner, its exit codes, msiexec's exit codes — is written from winget's and
Windows Installer's documented output, not recorded from a host. These tests therefore prove our
scripts travel and parse over the real protocol path, not how a given Windows build answers.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from wsman_replay import PASSWORD, PKI, USER, Reply, ServerFactory

from toolkit import software
from toolkit.inventory import Host, make_host
from toolkit.ledger import open_ledger
from toolkit.remediation.catalog import BUILTIN_TASKS, Catalog
from toolkit.run.runner import Outcome, Runner, RunOptions
from toolkit.secrets.credentials import CredentialStore, Redactor
from toolkit.transports import Connector
from toolkit.transports.base import ConnectOptions

pytestmark = pytest.mark.integration

CATALOG = Catalog.load([BUILTIN_TASKS])
WINGET = r"C:\Users\itops\AppData\Local\Microsoft\WindowsApps\winget.exe"
SOFTWARE = """\
firefox:
  licence: MPL-2.0
  packages:
    winget: {id: Mozilla.Firefox, version: 128.5.0}
  verify:
    command: ['C:\\Program Files\\Mozilla Firefox\\firefox.exe', --version]
    expect: 'Mozilla Firefox 128\\.5'
7zip:
  licence: LGPL-2.1
  packages:
    winget: 7zip.7zip
    msi:
      source: '\\\\files\\packages\\7z2408-x64.msi'
      product_code: '{23170F69-40C1-2702-2408-000001000000}'
      version: 24.08.00.0
"""
# `winget list --id Mozilla.Firefox --exact` as winget prints it: spinner frames ended by CR
LISTED = (
    "\r   - \r   \\ \r   | \r                                                                  \r"
    "Name            Id              Version Available Source\n"
    "----------------------------------------------------------\n"
    "Mozilla Firefox Mozilla.Firefox 128.5.0 129.0.2   winget\n"
)
NONE = "No installed package found matching input criteria.\n"


@pytest.fixture
def catalog(tmp_path: Path) -> Iterator[None]:
    (tmp_path / "software").mkdir()
    (tmp_path / "software" / "apps.yml").write_text(SOFTWARE)
    software.activate(tmp_path / "software")
    yield
    software.activate(None)


def windows(name: str, port: int, pki: PKI) -> Host:
    values = {"platform": "windows", "address": "127.0.0.1", "port": port, "user": USER,
              "password": "env:ITOPS_TEST_WIN_PW", "winrm_ca_bundle": str(pki.ca)}  # fmt: skip
    return make_host(name, values, ("windows",), "test")


def run(tmp_path: Path, task: str, hosts: list[Host], params: dict[str, str]) -> list[Any]:
    redactor = Redactor()
    credentials = CredentialStore(redactor)
    ledger = open_ledger(f"sqlite:///{tmp_path / 'ledger.db'}", operator="t", redactor=redactor)
    connector = Connector(ConnectOptions(connect_timeout=5, command_timeout=20), credentials)
    runner = Runner(ledger=ledger, connector=connector, credentials=credentials)
    try:
        report = runner.run(CATALOG.get(task), hosts, params, ticket="REQ-9",
                            options=RunOptions(forks=4))  # fmt: skip
    finally:
        connector.close()
        ledger.close()
    return list(report.results)


def answer(data: object, rc: int = 0) -> Reply:
    return json.dumps(data).encode(), b"", rc


def test_winget_install_at_the_pin_over_winrm(
    replay: ServerFactory, pki: PKI, tmp_path: Path, catalog: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("ITOPS_TEST_WIN_PW", PASSWORD)
    installed = {"done": False}

    def host(script: str) -> Reply:
        if "Get-Command winget.exe" in script:
            return answer({"winget": WINGET, "choco": ""})
        if "@('list','--id','Mozilla.Firefox'" in script:
            if installed["done"]:
                return answer({"exit": 0, "out": LISTED})
            return answer({"exit": -1978335212, "out": NONE})
        if "@('install','--id','Mozilla.Firefox'" in script:
            installed["done"] = True
            return answer({"exit": 0, "out": "Found Mozilla Firefox [Mozilla.Firefox] Version 128.5.0\r\n"
                                              "Successfully installed\r\n"})  # fmt: skip
        if "$argv = @('C:\\Program Files\\Mozilla Firefox\\firefox.exe','--version')" in script:
            return answer({"exit": 0, "out": "Mozilla Firefox 128.5.0\r\n"})
        return b"", b"unexpected script", 1

    server = replay(reply=host)
    [result] = run(tmp_path, "software.install", [windows("ws-042", server.port, pki)],
                   {"name": "firefox"})  # fmt: skip
    assert result.outcome == Outcome.FIXED, result.message
    assert result.verify.facts["installed"] == "128.5.0"
    assert "`C:\\Program Files\\Mozilla Firefox\\firefox.exe --version` answered" in (
        result.verify.summary
    )
    install = next(s for s in server.scripts() if "'install'" in s)
    assert "if ('128.5.0') { $a += @('--version', '128.5.0') }" in install
    assert "'--accept-package-agreements'" in install


def test_msi_where_winget_is_absent_and_a_pending_install_is_named(
    replay: ServerFactory, pki: PKI, tmp_path: Path, catalog: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("ITOPS_TEST_WIN_PW", PASSWORD)

    versions = iter([None, "24.08.00.0"])  # the Uninstall key: absent at check, then there

    def installs(script: str) -> Reply:
        if "Get-Command winget.exe" in script:
            return answer({"winget": "", "choco": ""})  # Server 2019 without App Installer
        if "$code = '{23170F69-40C1-2702-2408-000001000000}'" in script:
            return answer({"version": next(versions)})
        if "$verb = '/i'" in script:
            return answer({"exit": 3010, "out": "MSI (s) (A4:B8) [12:00:01:234]: Product: 7-Zip -- "
                                                "Installation completed successfully.\r\n"})  # fmt: skip
        return b"", b"unexpected script", 1

    def busy(script: str) -> Reply:
        if "Get-Command winget.exe" in script:
            return answer({"winget": "", "choco": ""})
        if "$code = " in script:
            return answer({"version": None})
        if "$verb = '/i'" in script:
            return answer({"exit": 1618, "out": ""})  # ERROR_INSTALL_ALREADY_RUNNING
        return b"", b"unexpected script", 1

    one, two = replay(reply=installs), replay(reply=busy)
    results = run(tmp_path, "software.install",
                  [windows("ws-1", one.port, pki), windows("ws-2", two.port, pki)],
                  {"name": "7zip"})  # fmt: skip
    by = {r.host: r for r in results}
    assert by["ws-1"].outcome == Outcome.FIXED, by["ws-1"].message
    assert "msi install: a restart is required" in by["ws-1"].notes
    msi = next(s for s in one.scripts() if "$verb = '/i'" in s)
    assert "$target = '\\\\files\\packages\\7z2408-x64.msi'" in msi
    assert "'/qn', '/norestart'" in msi
    assert by["ws-2"].outcome == Outcome.FAILED
    assert (
        "another installation is in progress (msiexec); nothing was changed" in by["ws-2"].message
    )
    assert not any(re.search(r"shutdown|Restart-Computer", s) for s in one.scripts())


def test_winget_uninstall_then_verify_reads_it_gone(
    replay: ServerFactory, pki: PKI, tmp_path: Path, catalog: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("ITOPS_TEST_WIN_PW", PASSWORD)
    listed = "Name  Id        Version Source\n--------------------------------\n7-Zip 7zip.7zip 24.08   winget\n"
    state = {"gone": False}

    def host(script: str) -> Reply:
        if "Get-Command winget.exe" in script:
            return answer({"winget": WINGET, "choco": ""})
        if "@('list','--id','7zip.7zip'" in script:
            if state["gone"]:
                return answer({"exit": -1978335212, "out": NONE})
            return answer({"exit": 0, "out": listed})
        if "@('uninstall','--id','7zip.7zip'" in script:
            state["gone"] = True
            return answer({"exit": 0, "out": "Successfully uninstalled\r\n"})
        return b"", b"unexpected script", 1

    server = replay(reply=host)
    [result] = run(tmp_path, "software.remove", [windows("ws-3", server.port, pki)],
                   {"name": "7zip"})  # fmt: skip
    assert result.outcome == Outcome.FIXED, result.message
    assert "24.08 is installed" in result.check.summary
    assert result.verify.summary == "7zip (winget 7zip.7zip): removed"
