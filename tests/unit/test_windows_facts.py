"""Typed reads on Windows: each PowerShell probe's command and its parser alone, on the outputs
the task tests record (Windows PowerShell 5.1 shapes: a one-element array as a bare object,
`/Date(ms)/` dates, CRLF native tool output), with no transport."""

from __future__ import annotations

import json
from typing import Any

import pytest

from tests.unit.test_facts import task_module
from tests.unit.test_windows_tasks import (
    CU,
    DEFENDER,
    DOCS,
    DRIVER,
    GB,
    SOURCES_OK,
    adapter,
    job,
    mp,
    pending,
    printer,
    printers,
    svc,
)
from toolkit.errors import CommandFailed, ToolkitError
from toolkit.remediation import windows
from toolkit.remediation.catalog import BUILTIN_TASKS
from toolkit.remediation.facts import Fact

system = task_module("disk.cleanup", "windows")
antivirus = task_module("av.update", "windows")
backup = task_module("backup.files", "windows")
patch = task_module("patch.apply", "windows")
printing = task_module("printer.status", "windows")
network = task_module("network.diagnose", "windows")


def out(fact: Fact[Any], reply: Any, stderr: str = "", rc: int = 0) -> Any:
    """`fact` parsing `reply` as the host prints it (JSON, as the task tests send it)."""
    return fact.parse(reply if isinstance(reply, str) else json.dumps(reply), stderr, rc)


# --------------------------------------------------------------------------- the JSON probe


def test_json_probe_fails_on_a_non_zero_exit_names_the_read_and_reads_a_bom() -> None:
    fact = windows.WindowsService("Spooler")
    with pytest.raises(CommandFailed, match="`service state` exited 1: Get-CimInstance : Access"):
        out(fact, "", "Get-CimInstance : Access is denied.", 1)
    with pytest.raises(windows.UnexpectedOutput, match="service state: expected JSON, got 'WARN"):
        out(fact, "WARNING: something\r\n{}")
    assert out(fact, "\ufeff" + json.dumps(svc())).pid == 1234


def test_windows_service_state_and_a_missing_one() -> None:
    fact = windows.WindowsService("MSSQL$SQLEXPRESS")
    assert "$name = 'MSSQL$SQLEXPRESS'" in fact.command().text
    state = out(fact, svc("Stopped", 0, "Manual"))
    assert state == windows.ServiceState("Spooler", "Print Spooler", "Stopped", "Manual", 0)
    assert not state.running and state.exists
    missing = out(fact, {"found": False})
    assert not missing.exists and missing.name == "MSSQL$SQLEXPRESS"


# --------------------------------------------------------------------------- disk, Defender


def test_system_drive_space() -> None:
    fact = system.SystemDriveSpace(30)
    assert "AddDays(-30)" in fact.command().text and "Win32_LogicalDisk" in fact.command().text
    disk = out(fact, {"drive": "C:", "size": 100 * GB, "free": 5 * GB, "cleanable": 8 * GB})
    assert disk == system.SystemDrive("C:", 100 * GB, 5 * GB, 8 * GB)
    assert disk.free_percent == 5.0
    assert out(fact, "").free_percent == 0.0  # no output: nothing known, never a division by 0


def test_defender_status_with_one_active_threat_as_a_bare_object() -> None:
    threat = {"id": 1, "name": "Trojan:Win32/Wacatac", "severity": 5}
    state = out(antivirus.DefenderStatus(), mp(age=5, active=threat))
    assert state.service and state.version == "1.403.1234.0" and state.age_days == 5
    assert state.updated == "\\/Date(1763700000000)\\/" and state.full_scan_end is None
    assert state.active == (antivirus.Threat(1, "Trojan:Win32/Wacatac", 5),)
    assert not out(antivirus.DefenderStatus(), mp(service=False)).service
    with pytest.raises(ToolkitError, match="Get-MpComputerStatus returned nothing"):
        out(antivirus.DefenderStatus(), "")


# --------------------------------------------------------------------------- backup


def test_backup_sources_one_item_as_a_bare_object() -> None:
    fact = backup.BackupSources((DOCS,), "\\\\nas01\\backup")
    assert fact.command().text.startswith(
        "$ErrorActionPreference = 'Stop'\n$paths = @('C:\\Users\\jdoe\\Documents')\n"
        "$dest = Join-Path '\\\\nas01\\backup' $env:COMPUTERNAME"
    )
    found = out(fact, SOURCES_OK)
    assert found.items == (backup.Source(DOCS, True, 3, 5000),)
    assert found.dest == "\\\\nas01\\backup\\WS-042" and found.missing == []
    assert found.last_stamp == "20261120T080000Z"


def test_backup_sources_missing_path_and_no_earlier_backup() -> None:
    reply = {
        "dest": "D:\\Backups\\WS-042",
        "items": [
            {"path": "C:\\Data", "exists": True, "files": 1, "bytes": 10},
            {"path": "C:\\Gone", "exists": False, "files": 0, "bytes": 0},
        ],
        "last": None,
    }
    found = out(backup.BackupSources(("C:\\Data", "C:\\Gone"), "D:\\Backups"), reply)
    assert found.missing == ["C:\\Gone"] and found.last_stamp == ""


def test_backup_hashes_one_bad_entry_as_a_bare_string() -> None:
    fact = backup.BackupHashes("D:\\Backups", "itops-20261121T100000Z")
    assert "'itops-20261121T100000Z'" in fact.command().text
    assert out(fact, {"checked": 3, "bad": "0-Documents/b.txt"}) == backup.HashCheck(
        3, ["0-Documents/b.txt"]
    )
    assert out(fact, {"checked": 3, "bad": []}) == backup.HashCheck(3, [])


# --------------------------------------------------------------------------- updates, printers


def test_pending_updates_security_classification() -> None:
    found = out(patch.PendingUpdates(), pending(CU, DRIVER, DEFENDER, reboot=True))
    assert [u.label for u in found.updates] == ["KB5034441", "KB5012170", "KB2267602"]
    assert [u.security for u in found.updates] == [True, False, False]
    assert found.reboot_pending
    one = out(patch.PendingUpdates(), pending(CU))  # one update: a bare object
    assert one.updates[0].kbs == ("KB5034441",) and not one.reboot_pending
    with pytest.raises(ToolkitError, match="the Windows Update search returned nothing"):
        out(patch.PendingUpdates(), "")


def test_printer_state_one_printer_and_one_job_as_bare_objects() -> None:
    fact = printing.PrinterState("HP 4th")
    assert "$only = @('HP 4th')" in fact.command().text
    state = out(fact, printers(printer("HP 4th", "Paused", job(3, "Error", 90))))
    assert state.spooler == "Running" and state.spool_files == 4
    assert state.printers["HP 4th"].paused
    assert state.printers["HP 4th"].jobs == (printing.Job(3, "Error", 90, "report.pdf"),)
    with pytest.raises(windows.UnexpectedOutput, match="missing the spooler status"):
        out(printing.PrinterState(), {"printers": []})


# --------------------------------------------------------------------------- network


def test_dns_cache() -> None:
    fact = network.DnsCache()
    assert "Get-DnsClientCache" in fact.command().text
    cache = out(fact, {"entries": 42, "failed": "intranet.corp.example"})
    assert cache == network.Cache(42, ["intranet.corp.example"])


def test_dhcp_adapters_apipa_and_lease() -> None:
    fact = network.DhcpAdapters(("Wi-Fi (5 GHz)",))
    assert "$only = @('Wi-Fi (5 GHz)')" in fact.command().text
    (apipa,) = out(fact, adapter("169.254.12.7", None))
    assert apipa == network.DhcpAdapter("Ethernet", ("169.254.12.7",), "10.0.0.1", None)
    assert not apipa.usable
    (leased,) = out(fact, adapter("10.0.0.57"))
    assert leased.usable and leased.lease_obtained == "2026-11-20T08:00:00.0000000Z"
    assert out(fact, {"adapters": []}) == ()


def test_winsock_catalog_lists_providers_and_fails_on_exit() -> None:
    from tests.unit.test_windows_tasks import CATALOG as WINSOCK

    providers = network.WinsockCatalog().parse(WINSOCK.replace("\n", "\r\n"), "", 0)
    assert providers == [
        "%SystemRoot%\\system32\\mswsock.dll",
        "C:\\Program Files\\Contoso\\cwflsp64.dll",
    ]
    assert network.third_party(providers) == ["C:\\Program Files\\Contoso\\cwflsp64.dll"]
    with pytest.raises(ToolkitError, match="netsh winsock show catalog exited 1"):
        network.WinsockCatalog().parse("", "The requested operation requires elevation.", 1)


def test_network_diagnosis() -> None:
    fact = network.NetworkDiagnosis("intranet.example.com", "mail.example.com", 443)
    assert (
        "$name = 'intranet.example.com'\n$thost = 'mail.example.com'\n$tport = 443"
        in fact.command().text
    )
    reply = {
        "adapters": {"alias": "Ethernet", "ipv4": "10.0.0.57", "gateway": "10.0.0.1"},
        "gateway_ping": False,
        "resolved": "10.1.2.3",
        "tcp": {"ok": True, "address": "10.1.2.25"},
    }
    found = out(fact, reply)
    assert found.adapters == (reply["adapters"],) and found.gateway_ping is False
    assert found.resolved == ["10.1.2.3"] and found.tcp_open
    failed = out(fact, {"adapters": [], "resolve_error": "DNS name does not exist"})
    assert failed.gateway_ping is None and failed.resolve_error == "DNS name does not exist"
    assert failed.resolved == [] and not failed.tcp_open


def test_account_state_local_and_ad() -> None:
    """password.reset's account read: a local account whose Administrators membership could not
    be read counts as privileged; an AD account's privilege comes from its named groups."""
    password = task_module("password.reset", "windows")

    sid = "S-1-5-21-1004336348-1177238915-682003330-1001"
    local = password.AccountState("local", "jdoe")
    assert "Get-LocalUser" in local.command().text and "'jdoe'" in local.command().text
    found = out(local, {"found": True, "name": "jdoe", "sid": sid, "enabled": True,
                        "locked": True, "admin": None, "password_last_set": None,
                        "must_change": False})  # fmt: skip
    assert found.locked and found.enabled and found.password_last_set == ""
    assert found.privileged() == ["Administrators (membership could not be read)"]
    assert out(local, {"found": False}) is None
    ad = password.AccountState("ad", "jdoe")
    assert "Get-ADUser" in ad.command().text
    admin = out(ad, {"found": True, "name": "adm", "sid": sid[:-4] + "500", "enabled": True,
                     "locked": False, "groups": ["Domain Admins"], "protected": True,
                     "password_last_set": "133790000000000000", "must_change": False})  # fmt: skip
    assert admin.admin is False and admin.privileged() == [
        "Domain Admins",
        "protected accounts (adminCount=1)",
        "the built-in Administrator",
    ]
    with pytest.raises(ToolkitError, match="unexpected SID"):
        out(ad, {"found": True, "name": "x", "sid": "S-1-5-18"})


def test_windows_tasks_read_only_through_facts() -> None:
    """Every probe a Windows task parses is a fact: no task module reads around `read()`."""
    from pathlib import Path

    folder = Path(BUILTIN_TASKS) / "windows"
    modules = sorted(folder.glob("*.py"))
    # antivirus backup directory network password patch printer software system
    assert len(modules) == 9
    for path in modules:
        source = path.read_text()
        assert "read_json(ctx" not in source and "ctx.read(" not in source, path.name
