"""Data-driven tests of the Windows remediations: commands built, output parsed, outcome decided.

Each case runs one task through the real Runner against a strict scripted transport: the exact
sequence of PowerShell commands per step, with replies in the shapes Windows PowerShell 5.1 prints
(one-element arrays as bare objects, `/Date(ms)/` dates, CRLF native tool output).
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from winfakes import Expect, run_task

from toolkit.run.runner import Outcome


@dataclass(frozen=True)
class Case:
    id: str
    task: str
    params: dict[str, Any]
    script: list[Expect]
    outcome: Outcome
    message: str  # regex the host result's message must match
    check_only: bool = False
    host_vars: dict[str, Any] = field(default_factory=dict)
    notes: str | None = None  # regex one of the notes must match
    error: str | None = None


def svc(state: str = "Running", pid: int = 1234, mode: str = "Auto", name: str = "Spooler") -> Any:
    return {
        "found": True,
        "name": name,
        "display": "Print Spooler" if name == "Spooler" else name,
        "state": state,
        "start_mode": mode,
        "pid": pid,
    }


PROBE = r"Get-CimInstance -ClassName Win32_Service"
RESTART = r"Restart-Service -InputObject \$svc -Force"

SERVICE_CASES = [
    Case(
        "restart-running",
        "service.restart",
        {"service": "Spooler"},
        [
            Expect("check", r"\$name = 'Spooler'[\s\S]*" + PROBE, svc()),
            Expect("apply", r"\$name = 'Spooler'[\s\S]*" + RESTART, ""),
            Expect("verify", PROBE, svc(pid=5678)),
        ],
        Outcome.FIXED,
        r"Spooler \(Print Spooler\) is Running, pid 1234.*restart requested",
    ),
    Case(
        "start-stopped-only-if-stopped",
        "service.restart",
        {"service": "Spooler", "only_if_stopped": "true"},
        [
            Expect("check", PROBE, svc("Stopped", 0)),
            Expect("apply", r"Start-Service -InputObject \$svc", ""),
            Expect("verify", PROBE, svc(pid=99)),
        ],
        Outcome.FIXED,
        r"is Stopped",
    ),
    Case(
        "running-only-if-stopped",
        "service.restart",
        {"service": "Spooler", "only_if_stopped": "true"},
        [Expect("check", PROBE, svc())],
        Outcome.ALREADY_OK,
        r"is Running",
    ),
    Case(
        "display-name-resolves",
        "service.restart",
        {"service": "Print Spooler"},
        [
            Expect("check", r"\$name = 'Print Spooler'", svc()),
            Expect("apply", r"\$name = 'Spooler'", ""),
            Expect("verify", r"\$name = 'Spooler'", svc(pid=2)),
        ],
        Outcome.FIXED,
        r"restart requested",
    ),
    Case(
        "disabled-refused",
        "service.restart",
        {"service": "Spooler"},
        [Expect("check", PROBE, svc("Stopped", 0, "Disabled"))],
        Outcome.FAILED,
        r"check: .*does not change a service's start type",
    ),
    Case(
        "missing-service",
        "service.restart",
        {"service": "NoSuchSvc"},
        [Expect("check", PROBE, {"found": False})],
        Outcome.FAILED,
        r"no service named 'NoSuchSvc'",
    ),
    Case(
        "winrm-protected-nothing-sent",
        "service.restart",
        {"service": "WinRM"},
        [],
        Outcome.FAILED,
        r"refusing to restart WinRM",
    ),
    Case(
        "protected-by-display-name",
        "service.restart",
        {"service": "Windows Remote Management (WS-Management)"},
        [Expect("check", PROBE, svc(name="WinRM"))],
        Outcome.FAILED,
        r"refusing to restart WinRM",
    ),
    Case(
        "verify-not-running",
        "service.restart",
        {"service": "Spooler"},
        [
            Expect("check", PROBE, svc()),
            Expect("apply", RESTART, ""),
            Expect("verify", PROBE, svc("Stopped", 0)),
        ],
        Outcome.FAILED,
        r"verify failed: .*Stopped after the restart",
    ),
    Case(
        "restart-command-fails",
        "service.restart",
        {"service": "Spooler"},
        [
            Expect("check", PROBE, svc()),
            Expect(
                "apply",
                RESTART,
                "",
                "Restart-Service : Service 'Print Spooler' cannot be stopped",
                1,
            ),
        ],
        Outcome.FAILED,
        r"apply: .*exited 1: Restart-Service : Service 'Print Spooler' cannot be stopped",
    ),
    Case(
        "check-only-never-applies",
        "service.restart",
        {"service": "Spooler"},
        [Expect("check", PROBE, svc())],
        Outcome.WOULD_FIX,
        r"restart requested",
        check_only=True,
    ),
    Case(
        "spooler-restart",
        "printer.restart-spooler",
        {},
        [
            Expect("check", r"\$name = 'Spooler'", svc()),
            Expect("apply", RESTART, ""),
            Expect("verify", PROBE, svc(pid=4321)),
        ],
        Outcome.FIXED,
        r"Spooler",
    ),
]


def printers(*entries: Any, spooler: str = "Running") -> Any:
    return {
        "spooler": spooler,
        "spool_dir": "C:\\Windows\\System32\\spool\\PRINTERS",
        "spool_files": 4,
        "printers": entries[0] if len(entries) == 1 else list(entries),  # PS 5.1: one → object
    }


def printer(name: str, status: str = "Normal", jobs: Any = ()) -> Any:
    return {"name": name, "status": status, "port": "IP_10.0.0.9", "jobs": jobs}


def job(id: int, status: str = "Normal", age: int = 1) -> Any:
    return {
        "id": id,
        "status": status,
        "age_minutes": age,
        "document": "report.pdf",
        "user": "jdoe",
    }


STATE = r"Get-Printer[\s\S]*DefaultSpoolDirectory"

PRINTER_CASES = [
    Case(
        "paused-with-stuck-and-fresh-jobs",
        "printer.clear-queue",
        {},
        [
            Expect(
                "check",
                STATE,
                printers(
                    printer("HP 4th", "Paused", [job(12, "Error, Printing", 40), job(13)]),
                    printer("Canon", jobs=job(7, "Normal", 3)),
                ),
            ),
            Expect(
                "apply",
                STATE,
                printers(
                    printer("HP 4th", "Paused", [job(12, "Error, Printing", 41), job(13)]),
                    printer("Canon", jobs=job(7)),
                ),
            ),
            Expect(
                "apply",
                r"Name -eq 'HP 4th'[\s\S]*foreach \(\$id in @\(12\)\)[\s\S]*Remove-PrintJob",
            ),
            Expect(
                "apply", STATE, printers(printer("HP 4th", "Paused", job(13)), printer("Canon"))
            ),
            Expect("apply", r"Win32_Printer[\s\S]*'HP 4th'[\s\S]*Resume"),
            Expect("verify", STATE, printers(printer("HP 4th", jobs=job(13)), printer("Canon"))),
        ],
        Outcome.FIXED,
        r"HP 4th: paused, 1 stuck job\(s\)",
    ),
    Case(
        "wedged-job-flushes-only-its-spool-files",
        "printer.clear-queue",
        {"queue": "HP 4th", "stuck_after": "30"},
        [
            Expect(
                "check",
                r"\$only = @\('HP 4th'\)",
                printers(printer("HP 4th", jobs=job(5, "Deleting", 2))),
            ),
            Expect("apply", STATE, printers(printer("HP 4th", jobs=job(5, "Deleting", 2)))),
            Expect("apply", r"Remove-PrintJob", ""),
            Expect("apply", STATE, printers(printer("HP 4th", jobs=job(5, "Deleting", 3)))),
            Expect(
                "apply",
                r"\$dir = 'C:\\Windows\\System32\\spool\\PRINTERS'[\s\S]*Stop-Service -Name Spooler"
                r"[\s\S]*foreach \(\$id in @\(5\)\)[\s\S]*'\{0:D5\}\.\{1\}'[\s\S]*Start-Service",
            ),
            Expect("verify", STATE, printers(printer("HP 4th"))),
        ],
        Outcome.FIXED,
        r"HP 4th: 1 stuck job",
        notes=r"jobs \[5\] resisted removal",
    ),
    Case(
        "healthy-printers",
        "printer.clear-queue",
        {},
        [
            Expect(
                "check",
                STATE,
                printers(printer("HP 4th", jobs=job(1, "Printing", 2)), printer("Canon")),
            )
        ],
        Outcome.ALREADY_OK,
        r"2 printer\(s\) ready, no stuck jobs",
    ),
    Case(
        "stopped-spooler-is-started",
        "printer.clear-queue",
        {},
        [
            Expect("check", STATE, printers(None, spooler="Stopped") | {"printers": []}),
            Expect(
                "apply",
                STATE,
                {"spooler": "Stopped", "spool_dir": "", "spool_files": 0, "printers": []},
            ),
            Expect("apply", r"Start-Service -Name Spooler"),
            Expect("apply", STATE, printers(printer("HP 4th"))),
            Expect("verify", STATE, printers(printer("HP 4th"))),
        ],
        Outcome.FIXED,
        r"the Print Spooler is Stopped",
    ),
    Case(
        "unknown-queue",
        "printer.clear-queue",
        {"queue": "Nope"},
        [
            Expect("check", STATE, printers([])),
            Expect("apply", STATE, printers([])),
            Expect("verify", STATE, printers([])),
        ],
        Outcome.FAILED,
        r"verify failed: no printer named 'Nope'",
    ),
    Case(
        "status-lists-and-never-changes",
        "printer.status",
        {},
        [Expect("check", STATE, printers(printer("HP 4th", "Paused", job(3, "Error", 90))))],
        Outcome.ALREADY_OK,
        r"spooler running; 1 printer\(s\), 1 job\(s\); paused: HP 4th",
    ),
    Case(
        "status-with-spooler-stopped",
        "printer.status",
        {},
        [
            Expect(
                "check",
                STATE,
                {"spooler": "Stopped", "spool_dir": "", "spool_files": 0, "printers": []},
            )
        ],
        Outcome.ALREADY_OK,
        r"Print Spooler is Stopped: printer.restart-spooler starts it",
    ),
]

DNS = r"Get-DnsClientCache"
DHCP = r"Win32_NetworkAdapterConfiguration"

# `netsh winsock show catalog` as Windows 10 prints it (shortened), one third-party LSP.
CATALOG = (
    "\r\n\r\nWinsock Catalog Provider Entry\r\n------------------------------------------------------\r\n"
    "Entry Type:                         Base Service Provider\r\n"
    "Description:                        Hyper-V RAW\r\n"
    "Provider ID:                        {1234ABCD-1234-1234-1234-123456789ABC}\r\n"
    "Provider Path:                      %SystemRoot%\\system32\\mswsock.dll\r\n"
    "Catalog Entry ID:                   1001\r\n\r\n"
    "Winsock Catalog Provider Entry\r\n------------------------------------------------------\r\n"
    "Entry Type:                         Layered Chain Entry (32)\r\n"
    "Description:                        Contoso Web Filter over [MSAFD Tcpip [TCP/IP]]\r\n"
    "Provider Path:                      C:\\Program Files\\Contoso\\cwflsp64.dll\r\n"
    "Catalog Entry ID:                   1017\r\n"
).replace("\r\n", "\n")
CATALOG_CLEAN = CATALOG.split("Winsock Catalog Provider Entry")[1]
# Windows really prints "Sucessfully" here.
RESET_OUT = (
    "\nSucessfully reset the Winsock Catalog.\n"
    "You must restart the computer in order to complete the reset.\n\n"
)


def adapter(ip: str, lease: str | None = "2026-11-20T08:00:00.0000000Z") -> Any:
    return {
        "adapters": {
            "alias": "Ethernet",
            "ipv4": ip,
            "dhcp_server": "10.0.0.1",
            "lease_obtained": lease,
        }
    }


NETWORK_CASES = [
    Case(
        "flush-with-failed-lookups",
        "network.flush-dns",
        {},
        [
            Expect("check", DNS, {"entries": 42, "failed": ["intranet.corp.example"]}),
            Expect(
                "apply",
                r"^[\s\S]*ipconfig\.exe /flushdns\nexit \$LASTEXITCODE$",
                "\nWindows IP Configuration\n\nSuccessfully flushed the DNS Resolver Cache.\n",
            ),
            Expect("verify", DNS, {"entries": 3, "failed": []}),
        ],
        Outcome.FIXED,
        r"42 cached entries; failed lookups cached: intranet.corp.example",
    ),
    Case(
        "flush-empty-cache",
        "network.flush-dns",
        {},
        [Expect("check", DNS, {"entries": 0, "failed": []})],
        Outcome.ALREADY_OK,
        r"empty",
    ),
    Case(
        "flush-command-fails",
        "network.flush-dns",
        {},
        [
            Expect("check", DNS, {"entries": 5, "failed": []}),
            Expect(
                "apply",
                r"flushdns",
                "",
                "Could not flush the DNS Resolver Cache: Function failed during execution.",
                1,
            ),
        ],
        Outcome.FAILED,
        r"Could not flush the DNS Resolver Cache",
    ),
    Case(
        "renew-apipa",
        "network.renew-dhcp",
        {},
        [
            Expect("check", DHCP, adapter("169.254.12.7", None)),
            Expect(
                "apply",
                r"\$names = @\(\)\n\$release = \$true"
                r"[\s\S]*ipconfig\.exe /release[\s\S]*ipconfig\.exe /renew",
            ),
            Expect("verify", DHCP, adapter("10.0.0.57", "2026-11-21T09:30:00.0000000Z")),
        ],
        Outcome.FIXED,
        r"no usable DHCP address on Ethernet",
    ),
    Case(
        "renew-named-adapter-without-release",
        "network.renew-dhcp",
        {"adapter": "Wi-Fi (5 GHz)", "release": "false"},
        [
            Expect("check", r"\$only = @\('Wi-Fi \(5 GHz\)'\)", adapter("10.0.0.57")),
            Expect("apply", r"\$names = @\('Wi-Fi \(5 GHz\)'\)\n\$release = \$false"),
            Expect("verify", DHCP, adapter("10.0.0.57", "2026-11-21T09:30:00.0000000Z")),
        ],
        Outcome.FIXED,
        r"renew requested: Ethernet 10.0.0.57",
    ),
    Case(
        "renew-did-not-happen",
        "network.renew-dhcp",
        {},
        [
            Expect("check", DHCP, adapter("10.0.0.57")),
            Expect("apply", r"ipconfig\.exe /renew"),
            Expect("verify", DHCP, adapter("10.0.0.57")),
        ],
        Outcome.FAILED,
        r"lease times unchanged",
    ),
    Case(
        "no-dhcp-adapters",
        "network.renew-dhcp",
        {},
        [Expect("check", DHCP, {"adapters": []})],
        Outcome.FAILED,
        r"no DHCP-configured adapter",
    ),
    Case(
        "winsock-third-party-lsp",
        "network.winsock-reset",
        {},
        [
            Expect("check", r"netsh\.exe winsock show catalog", CATALOG),
            Expect("apply", r"netsh\.exe winsock reset", RESET_OUT),
            Expect("verify", r"winsock show catalog", CATALOG_CLEAN),
        ],
        Outcome.FIXED,
        r"non-Windows Winsock providers: C:\\Program Files\\Contoso\\cwflsp64\.dll",
        notes=r"restart the computer",
    ),
    Case(
        "diagnose-healthy",
        "network.diagnose",
        {"name": "intranet.example.com", "target": "mail.example.com:443"},
        [
            Expect(
                "check",
                r"\$name = 'intranet\.example\.com'\n\$thost = 'mail\.example\.com'\n\$tport = 443",
                {
                    "adapters": {
                        "alias": "Ethernet",
                        "ipv4": "10.0.0.57",
                        "gateway": "10.0.0.1",
                        "dns": ["10.0.0.2", "10.0.0.3"],
                    },
                    "gateway_ping": True,
                    "resolved": "10.1.2.3",
                    "tcp": {"ok": True, "address": "10.1.2.25"},
                },
            )
        ],
        Outcome.ALREADY_OK,
        r"Ethernet 10\.0\.0\.57 gw 10\.0\.0\.1 dns 10\.0\.0\.2,10\.0\.0\.3; "
        r"intranet\.example\.com → 10\.1\.2\.3; TCP mail\.example\.com:443 open",
    ),
    Case(
        "diagnose-dns-failure",
        "network.diagnose",
        {"name": "nope.example.com"},
        [
            Expect(
                "check",
                r"Resolve-DnsName",
                {"adapters": [], "resolve_error": "nope.example.com : DNS name does not exist"},
            )
        ],
        Outcome.WOULD_FIX,
        r"no adapter has a default gateway; nope\.example\.com does not resolve: "
        r"nope\.example\.com : DNS name does not exist",
        check_only=True,
    ),
]

SOURCES = r"Get-ChildItem -LiteralPath \$p -Recurse"
BACKUP = r"CreateEntryFromFile|robocopy\.exe"
VERIFY = r"GetEntry|Get-FileHash -LiteralPath \$p"
PRUNE = r"Sort-Object Name -Descending"
DOCS = "C:\\Users\\jdoe\\Documents"
SOURCES_OK = {
    "dest": "\\\\nas01\\backup\\WS-042",
    "items": {"path": DOCS, "exists": True, "files": 3, "bytes": 5000},
    "last": "itops-20261120T080000Z.manifest.json",
}

BACKUP_CASES = [
    Case(
        "zip-backup-verified-and-pruned",
        "backup.files",
        {"paths": DOCS, "store": "\\\\nas01\\backup", "keep": "2"},
        [
            Expect(
                "check",
                r"\$paths = @\('C:\\Users\\jdoe\\Documents'\)\n\$dest = Join-Path '\\\\nas01\\backup'",
                SOURCES_OK,
            ),
            Expect(
                "apply",
                r"\$method = 'zip'[\s\S]*" + BACKUP,
                {"target": "\\\\nas01\\backup\\WS-042\\itops-x.zip", "files": 3, "bytes": 5000},
            ),
            Expect("apply", VERIFY, {"checked": 3, "bad": []}),
            Expect("apply", r"\$keep = 2\n\$days = 0", {"removed": ["itops-20261101T080000Z"]}),
            Expect("verify", VERIFY, {"checked": 3, "bad": []}),
        ],
        Outcome.FIXED,
        r"backup requested: 3 file\(s\), 4\.9 KB → \\\\nas01\\backup\\WS-042; last backup 20261120T080000Z",
        notes=r"removed old backups: itops-20261101T080000Z",
    ),
    Case(
        "hash-mismatch-keeps-old-backups-and-fails",
        "backup.files",
        {"paths": DOCS, "method": "copy"},
        [
            Expect("check", SOURCES, SOURCES_OK),
            Expect(
                "apply",
                r"\$method = 'copy'[\s\S]*robocopy\.exe",
                {"target": "D:\\Backups\\WS-042\\itops-x", "files": 3, "bytes": 5000},
            ),
            Expect("apply", VERIFY, {"checked": 3, "bad": "0-Documents/b.txt"}),
            Expect("verify", VERIFY, {"checked": 3, "bad": "0-Documents/b.txt"}),
        ],
        Outcome.FAILED,
        r"verify failed: backup itops-\d{8}T\d{6}Z: 1 of 3 file\(s\) do not match the manifest",
        host_vars={"backup_store": "D:\\Backups"},
        notes=r"did not verify: old backups kept",
    ),
    Case(
        "missing-source",
        "backup.files",
        {"paths": ["C:\\Data", "C:\\Gone"], "store": "D:\\Backups"},
        [
            Expect(
                "check",
                r"@\('C:\\Data','C:\\Gone'\)",
                {
                    "dest": "D:\\Backups\\WS-042",
                    "items": [
                        {"path": "C:\\Data", "exists": True, "files": 1, "bytes": 10},
                        {"path": "C:\\Gone", "exists": False, "files": 0, "bytes": 0},
                    ],
                    "last": None,
                },
            )
        ],
        Outcome.FAILED,
        r"apply: not backing up: missing C:\\Gone",
    ),
    Case(
        "no-store",
        "backup.files",
        {"paths": DOCS},
        [],
        Outcome.FAILED,
        r"no backup store for ws-042",
    ),
]

DISK = r"Win32_LogicalDisk"
GB = 1024**3

SYSTEM_CASES = [
    Case(
        "cleanup-frees-enough",
        "disk.cleanup",
        {},
        [
            Expect(
                "check",
                r"AddDays\(-7\)[\s\S]*" + DISK,
                {"drive": "C:", "size": 100 * GB, "free": 5 * GB, "cleanable": 8 * GB},
            ),
            Expect(
                "apply",
                r"Stop-Service -Force[\s\S]*Remove-Item -LiteralPath \$f\.FullName",
                {"removed": 1200, "in_use": 3, "freed": 7 * GB},
            ),
            Expect(
                "verify", DISK, {"drive": "C:", "size": 100 * GB, "free": 12 * GB, "cleanable": 0}
            ),
        ],
        Outcome.FIXED,
        r"C: 5\.0% free \(5\.0 GB of 100\.0 GB\), below 10%; 8\.0 GB cleanable",
        notes=r"removed 1200 file\(s\), skipped 3 in use, freed 7\.0 GB",
    ),
    Case(
        "cleanup-not-enough",
        "disk.cleanup",
        {"min_free_percent": "20", "older_than_days": "30"},
        [
            Expect(
                "check",
                r"AddDays\(-30\)",
                {"drive": "C:", "size": 100 * GB, "free": 5 * GB, "cleanable": GB},
            ),
            Expect("apply", r"Remove-Item", {"removed": 10, "in_use": 0, "freed": GB}),
            Expect(
                "verify", DISK, {"drive": "C:", "size": 100 * GB, "free": 6 * GB, "cleanable": 0}
            ),
        ],
        Outcome.FAILED,
        r"verify failed: C: 6\.0% free .* after freeing 1\.0 GB",
    ),
    Case(
        "disk-fine",
        "disk.cleanup",
        {},
        [
            Expect(
                "check", DISK, {"drive": "C:", "size": 100 * GB, "free": 40 * GB, "cleanable": GB}
            )
        ],
        Outcome.ALREADY_OK,
        r"C: 40\.0% free",
    ),
]

MP = r"Get-MpComputerStatus"


def mp(version: str = "1.403.1234.0", age: int = 5, active: Any = (), service: bool = True) -> Any:
    return {
        "service": service,
        "realtime": True,
        "version": version,
        "age_days": age,
        "updated": "\\/Date(1763700000000)\\/",
        "quick_scan_end": "2026-11-19T03:00:00.0000000Z",
        "full_scan_end": None,
        "active": list(active) if not isinstance(active, dict) else active,
    }


AV_CASES = [
    Case(
        "old-signatures-updated",
        "av.update",
        {},
        [
            Expect("check", MP, mp(age=5)),
            Expect("apply", r"\$source = ''[\s\S]*Update-MpSignature"),
            Expect("verify", MP, mp("1.403.1400.0", 0)),
        ],
        Outcome.FIXED,
        r"signatures 1\.403\.1234\.0 are 5 day\(s\) old",
    ),
    Case(
        "update-changes-nothing",
        "av.update",
        {"source": "MMPC"},
        [
            Expect("check", MP, mp(age=5)),
            Expect("apply", r"\$source = 'MMPC'"),
            Expect("verify", MP, mp(age=5)),
        ],
        Outcome.FAILED,
        r"verify failed: still signatures 1\.403\.1234\.0 are 5 day\(s\) old after Update-MpSignature",
    ),
    Case(
        "fresh-signatures",
        "av.update",
        {},
        [Expect("check", MP, mp(age=0))],
        Outcome.ALREADY_OK,
        r"0 day\(s\) old",
    ),
    Case(
        "defender-off",
        "av.update",
        {},
        [Expect("check", MP, mp(service=False))],
        Outcome.FAILED,
        r"Microsoft Defender is not running on ws-042",
    ),
    Case(
        "quick-scan-detection-remediated",
        "av.scan",
        {},
        [
            Expect("check", MP, mp()),
            Expect(
                "apply",
                r"\$path = ''[\s\S]*-ScanType 'QuickScan'",
                {
                    "started": "2026-11-21T10:00:00.0000000Z",
                    "detections": {
                        "id": 2147519003,
                        "action_success": True,
                        "resources": "file:_C:\\Users\\jdoe\\Downloads\\eicar.com",
                        "time": "2026-11-21T10:01:00.0000000Z",
                    },
                },
            ),
            Expect("verify", MP, mp()),
        ],
        Outcome.FIXED,
        r"quick scan requested; last quick scan: 2026-11-19",
        notes=r"detection: threat 2147519003 in .*eicar\.com \(remediated\)",
    ),
    Case(
        "custom-scan-threat-remains",
        "av.scan",
        {"path": "C:\\Users\\jdoe\\Downloads", "timeout_minutes": "5"},
        [
            Expect("check", MP, mp()),
            Expect(
                "apply",
                r"\$path = 'C:\\Users\\jdoe\\Downloads'[\s\S]*CustomScan",
                {"started": "x", "detections": []},
            ),
            Expect(
                "verify", MP, mp(active={"id": 1, "name": "Trojan:Win32/Wacatac", "severity": 5})
            ),
        ],
        Outcome.FAILED,
        r"verify failed: scan done; 1 active threat\(s\) remain: Trojan:Win32/Wacatac",
    ),
]

SEARCH = r"CreateUpdateSearcher\(\)\n\$list = @\(\)"
SEC = "0fa1201d-4330-4fa8-8ae9-b877473b6441"


def pending(*updates: Any, reboot: bool = False) -> Any:
    return {"updates": updates[0] if len(updates) == 1 else list(updates), "reboot_pending": reboot}


def upd(kb: str, severity: str = "", cats: tuple[str, ...] = ()) -> Any:
    return {
        "kbs": kb,
        "title": f"Update {kb}",
        "severity": severity,
        "categories": list(cats),
        "downloaded": False,
    }


CU = upd("KB5034441", "Critical", (SEC,))
DRIVER = upd("KB5012170")
DEFENDER = upd("KB2267602", "", ("e0789628-ce08-4437-be74-2495b842f43b",))

PATCH_CASES = [
    Case(
        "security-only-installs-the-security-update",
        "patch.apply",
        {"security_only": "true", "reboot": "true"},
        [
            Expect("check", SEARCH, pending(CU, DRIVER, DEFENDER)),
            Expect("apply", SEARCH, pending(CU, DRIVER, DEFENDER)),
            Expect(
                "apply",
                r"\$want = @\(''KB5034441''\)[\s\S]*-UserId 'SYSTEM'[\s\S]*Register-ScheduledTask",
                {
                    "selected": 1,
                    "results": {
                        "title": "2024-01 Cumulative Update",
                        "kbs": "KB5034441",
                        "code": 2,
                        "hresult": 0,
                    },
                    "reboot": True,
                },
            ),
            Expect("apply", r"shutdown\.exe /r /t 300"),
            Expect("verify", SEARCH, pending(DRIVER, DEFENDER, reboot=True)),
        ],
        Outcome.FIXED,
        r"1 pending: KB5034441",
        notes=r"restart scheduled in 5 minutes",
    ),
    Case(
        "include-exclude",
        "patch.apply",
        {"include": ["KB5034441", "kb5012170"], "exclude": "KB5012170"},
        [
            Expect("check", SEARCH, pending(CU, DRIVER, DEFENDER)),
            Expect("apply", SEARCH, pending(CU, DRIVER, DEFENDER)),
            Expect(
                "apply",
                r"\$want = @\(''KB5034441''\)",
                {
                    "selected": 1,
                    "results": [{"kbs": ["KB5034441"], "title": "CU", "code": 3, "hresult": 0}],
                    "reboot": False,
                },
            ),
            Expect("verify", SEARCH, pending(DRIVER, DEFENDER)),
        ],
        Outcome.FIXED,
        r"\(was: 1 pending: KB5034441\)$",
        notes=r"KB5034441 CU: succeeded with errors",
    ),
    Case(
        "restart-needed-not-requested",
        "patch.apply",
        {},
        [
            Expect("check", SEARCH, pending(CU)),
            Expect("apply", SEARCH, pending(CU)),
            Expect(
                "apply",
                r"Start-ScheduledTask",
                {
                    "selected": 1,
                    "results": {"kbs": "KB5034441", "title": "CU", "code": 2, "hresult": 0},
                    "reboot": True,
                },
            ),
            Expect("verify", SEARCH, {"updates": [], "reboot_pending": True}),
        ],
        Outcome.FIXED,
        r"1 pending",
    ),
    Case(
        "install-failed",
        "patch.apply",
        {},
        [
            Expect("check", SEARCH, pending(CU)),
            Expect("apply", SEARCH, pending(CU)),
            Expect(
                "apply",
                r"Start-ScheduledTask",
                {
                    "selected": 1,
                    "results": {
                        "kbs": "KB5034441",
                        "title": "CU",
                        "code": 4,
                        "hresult": -2145124329,
                    },
                    "reboot": False,
                },
            ),
            Expect("verify", SEARCH, pending(CU)),
        ],
        Outcome.FAILED,
        r"verify failed: still pending or failed: KB5034441",
        notes=r"KB5034441 CU: failed",
    ),
    Case(
        "wua-error",
        "patch.apply",
        {},
        [
            Expect("check", SEARCH, pending(CU)),
            Expect("apply", SEARCH, pending(CU)),
            Expect(
                "apply", r"Start-ScheduledTask", {"error": "Exception from HRESULT: 0x80240438"}
            ),
        ],
        Outcome.FAILED,
        r"apply: Windows Update failed: Exception from HRESULT: 0x80240438",
    ),
    Case(
        "nothing-pending",
        "patch.apply",
        {},
        [Expect("check", SEARCH, {"updates": [], "reboot_pending": False})],
        Outcome.ALREADY_OK,
        r"no pending updates$",
    ),
]

ALL = (
    SERVICE_CASES
    + PRINTER_CASES
    + NETWORK_CASES
    + BACKUP_CASES
    + SYSTEM_CASES
    + AV_CASES
    + PATCH_CASES
)


@pytest.mark.parametrize("case", ALL, ids=[c.id for c in ALL])
def test_remediation(case: Case, tmp_path: Path) -> None:
    run = run_task(
        tmp_path,
        case.task,
        case.params,
        case.script,
        check_only=case.check_only,
        host_vars=case.host_vars,
    )
    result = run.result
    assert result.outcome == case.outcome, (result.message, result.error)
    assert re.search(case.message, result.message), result.message
    assert run.steps == [e.step for e in case.script]
    if case.notes:
        assert any(re.search(case.notes, n) for n in result.notes), result.notes
    if case.check_only:
        assert "apply" not in run.steps
    finish = [r for r in run.ledger.records() if r.kind == "action.finish"]
    assert len(finish) == 1 and finish[0].outcome == str(case.outcome)


def test_every_windows_task_has_a_case() -> None:
    from winfakes import CATALOG

    windows = {t.name for t in CATALOG if "windows" in t.platforms}
    covered = {c.task for c in ALL} | {"password.reset"}  # password.reset: test_windows_password.py
    covered |= {"software.install", "software.remove", "software.list"}  # test_software.py
    # the ActiveDirectory module's account.* (tasks/windows/directory.py): in the WinRM replay
    # contract tests, tests/integration/test_directory_winrm.py
    covered |= {"account.status", "account.unlock", "account.enable", "account.disable"}
    covered |= {"account.group-add", "account.group-remove"}
    assert windows == covered
    assert len(windows) == 23


def test_the_system_task_folder_is_locked_down_and_no_script_file_is_written() -> None:
    # A user could pre-create C:\ProgramData\itops, own it, and replace the script SYSTEM runs
    # (or redirect its result): the folder is checked (owner SID, no link), its ACL set to
    # SYSTEM and Administrators only, and the script travels as -EncodedCommand, never a file.
    from toolkit.remediation.catalog import BUILTIN_TASKS, Catalog

    spec = Catalog.load([BUILTIN_TASKS]).get("patch.apply").implementation("windows")
    assert spec is not None
    module = __import__("sys").modules[spec.cls.__module__]
    script = module.RUN_AS_SYSTEM
    for needed in (
        "ReparsePoint",
        "GetOwner([Security.Principal.SecurityIdentifier])",
        "'S-1-5-18', 'S-1-5-32-544'",
        "SetAccessRuleProtection($true, $false)",
        "Set-Acl -LiteralPath $dir",
        "-EncodedCommand ",
    ):
        assert needed in script, needed
    assert "-File" not in script and ".ps1" not in script and "Set-Content" not in script
