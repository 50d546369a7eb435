"""Opt-in: the WinRM transport and every Windows remediation (check mode only) on a real host.

Nothing here runs unless ITOPS_TEST_WINRM_HOST is set — the one skip this project allows; no
Windows machine exists on the CI machines. Point it at a disposable Windows 10/11 or Server
2016+ VM with WinRM over HTTPS (see docs/windows.md):

    export ITOPS_TEST_WINRM_HOST=win-test.lab.example     # address
    export ITOPS_TEST_WINRM_USER='LAB\\itops-test'          # a local admin on that host
    export ITOPS_TEST_WINRM_PASSWORD='…'                   # read through env: like any secret
    export ITOPS_TEST_WINRM_CA_BUNDLE=/path/to/lab-ca.pem  # the CA of its WinRM certificate
    # optional: ITOPS_TEST_WINRM_PORT (5986), ITOPS_TEST_WINRM_AUTH (ntlm|kerberos|credssp),
    #   ITOPS_TEST_WINRM_SCHEME=http + ITOPS_TEST_WINRM_ALLOW_INSECURE=true for a lab without TLS,
    #   ITOPS_TEST_WINRM_RESET_USER (default Guest: password.reset is only *checked*),
    #   ITOPS_TEST_WINRM_SKIP=av.update,av.scan (e.g. where Defender is not the antivirus)
    pytest -m integration tests/integration/test_windows_real_host.py -v

Check mode never changes the host: the runner refuses every change outside apply.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from toolkit.errors import CommandTimeout
from toolkit.inventory import Host, make_host
from toolkit.ledger import open_ledger
from toolkit.remediation.catalog import BUILTIN_TASKS, Catalog
from toolkit.remediation.quoting import ps_script
from toolkit.run.runner import Outcome, Runner, RunOptions
from toolkit.secrets.credentials import CredentialStore, Redactor
from toolkit.transports import Connector
from toolkit.transports.base import ConnectOptions

ENV = os.environ.get
pytestmark = [
    pytest.mark.integration,
    pytest.mark.skipif(
        not ENV("ITOPS_TEST_WINRM_HOST"),
        reason="opt-in: set ITOPS_TEST_WINRM_HOST/USER/PASSWORD to test against a real Windows host",
    ),
]

CATALOG = Catalog.load([BUILTIN_TASKS])
PARAMS: dict[str, dict[str, Any]] = {
    "service.restart": {"service": "Spooler"},
    "password.reset": {"user": ENV("ITOPS_TEST_WINRM_RESET_USER", "Guest")},
    "backup.files": {"paths": "C:\\Windows\\win.ini", "store": "C:\\Windows\\Temp"},
    "network.diagnose": {"name": "localhost", "target": "localhost:5985"},
    "software.install": {"name": "7zip"},  # the sample workspace's software/office.yml
    "software.remove": {"name": "7zip"},
}
SKIP = {name.strip() for name in ENV("ITOPS_TEST_WINRM_SKIP", "").split(",") if name.strip()}
WINDOWS_TASKS = sorted(t.name for t in CATALOG if "windows" in t.platforms)


@pytest.fixture(autouse=True)
def software_catalog() -> Iterator[None]:
    """The software tasks' names come from the sample workspace's catalog."""
    from toolkit import software

    software.activate(Path(__file__).resolve().parents[2] / "software")
    yield
    software.activate(None)


def real_host() -> Host:
    values: dict[str, Any] = {
        "platform": "windows",
        "address": ENV("ITOPS_TEST_WINRM_HOST"),
        "port": int(ENV("ITOPS_TEST_WINRM_PORT", "5986")),
        "user": ENV("ITOPS_TEST_WINRM_USER"),
        "password": "env:ITOPS_TEST_WINRM_PASSWORD",
        "winrm_auth": ENV("ITOPS_TEST_WINRM_AUTH", "ntlm"),
        "winrm_scheme": ENV("ITOPS_TEST_WINRM_SCHEME", "https"),
        "winrm_allow_insecure": ENV("ITOPS_TEST_WINRM_ALLOW_INSECURE", "false"),
    }
    if ENV("ITOPS_TEST_WINRM_CA_BUNDLE"):
        values["winrm_ca_bundle"] = ENV("ITOPS_TEST_WINRM_CA_BUNDLE")
    return make_host("real-windows", values, ("windows",), "environment")


@pytest.fixture(scope="module")
def connector() -> Iterator[Connector]:
    options = ConnectOptions(connect_timeout=15, command_timeout=300)
    connector = Connector(options, CredentialStore(Redactor()))
    yield connector
    connector.close()


def test_transport_basics_on_a_real_host(connector: Connector) -> None:
    transport = connector.open(real_host())
    try:
        hello = transport.run(ps_script("Write-Output {t}", t="héllo こんにちは"))
        assert (hello.exit_code, hello.stdout) == (0, "héllo こんにちは\n")
        native = transport.run(ps_script("cmd.exe /c ver\nexit $LASTEXITCODE"))
        assert native.exit_code == 0 and "Windows" in native.stdout
        failed = transport.run(
            ps_script("$ErrorActionPreference = 'Stop'\nGet-Item {p}", p="C:\\nope")
        )
        assert failed.exit_code == 1
        assert "Cannot find path" in failed.stderr and "<Objs" not in failed.stderr
        code = transport.run(ps_script("exit 7"))
        assert code.exit_code == 7
        long = transport.run(ps_script("$x = {v}\nWrite-Output $x.Length\nexit 3", v="y" * 9000))
        assert (long.exit_code, long.stdout.strip()) == (3, "9000"), "stdin bootstrap path"
        with pytest.raises(CommandTimeout):
            transport.run(ps_script("Start-Sleep -Seconds 30"), timeout=3)
        after = transport.run(ps_script("Write-Output 'still here'"))
        assert after.stdout == "still here\n", "a new shell after a timeout"
    finally:
        transport.close()


@pytest.mark.parametrize("name", WINDOWS_TASKS)
def test_every_windows_remediation_checks_cleanly(
    name: str, connector: Connector, tmp_path: Path
) -> None:
    if name in SKIP:
        pytest.skip(f"{name} listed in ITOPS_TEST_WINRM_SKIP")
    redactor = connector.credentials.redactor
    ledger = open_ledger(f"sqlite:///{tmp_path / 'l.db'}", operator="t", redactor=redactor)
    runner = Runner(ledger=ledger, connector=connector, credentials=connector.credentials)
    report = runner.run(
        CATALOG.get(name),
        [real_host()],
        PARAMS.get(name, {}),
        ticket=None,
        options=RunOptions(check_only=True),
    )
    result = report.results[0]
    print(f"{name}: {result.outcome} {result.message}")
    assert result.outcome in (Outcome.ALREADY_OK, Outcome.WOULD_FIX), (result.message, result.error)
    assert all(c.step == "check" for c in result.commands)
