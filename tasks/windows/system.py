"""Windows services and disk space."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, ClassVar

from toolkit.remediation.catalog import Context, Finding, Param, Remediation, remediation
from toolkit.remediation.facts import read
from toolkit.remediation.quoting import Command, ps_join, ps_script
from toolkit.remediation.windows import (
    SERVICE_NAME,
    JsonFact,
    RestartService,
    as_int,
    change_json,
    human_bytes,
    text,
)


@remediation(
    "service.restart",
    category="software",
    platforms={"windows"},
    summary="Restart a Windows service and prove it is running again",
)
class RestartWindowsService(RestartService):
    """Restart a hung or stopped Windows service (by service or display name).

    A running service is restarted (a hung service often still says Running); pass
    only_if_stopped=true to leave running ones alone. Disabled services and the ones itops itself
    depends on (WinRM, RPC, DCOM, …) are refused. The name is passed literally, so names such as
    MSSQL$SQLEXPRESS work.

    Example:
        itops fix service.restart ws-042 -p service=Spooler --ticket INC-1042
        itops fix service.restart servers -p 'service=MSSQL$SQLEXPRESS' -p only_if_stopped=true --check
    """

    service = Param(
        str, required=True, kind="text", pattern=SERVICE_NAME, help="service or display name"
    )

    def service_name(self, ctx: Context) -> str:
        return str(self.service)


# Candidate folders: Windows temp, the Windows Update download cache, every profile's temp.
CLEANUP_DIRS = r"""$dirs = @((Join-Path $env:SystemRoot 'Temp'), (Join-Path $env:SystemRoot 'SoftwareDistribution\Download'))
$dirs += @(Get-ChildItem -LiteralPath (Join-Path $env:SystemDrive 'Users') -Directory -Force -ErrorAction SilentlyContinue | ForEach-Object {{ Join-Path $_.FullName 'AppData\Local\Temp' }} | Where-Object {{ Test-Path -LiteralPath $_ }})
$cut = (Get-Date).AddDays(-{days})
function Get-ItopsOld($dir) {{ Get-ChildItem -LiteralPath $dir -Recurse -File -Force -ErrorAction SilentlyContinue | Where-Object {{ $_.LastWriteTime -lt $cut }} }}
function Get-ItopsDrive {{ Get-CimInstance -ClassName Win32_LogicalDisk -Filter ("DeviceID='" + $env:SystemDrive + "'") }}"""

DISK_PROBE = r"""$d = Get-ItopsDrive
$cleanable = [int64]0
foreach ($dir in $dirs) {{ $cleanable += [int64](@(Get-ItopsOld $dir) | Measure-Object -Property Length -Sum).Sum }}
ConvertTo-Json -Compress -InputObject @{{ drive = [string]$env:SystemDrive; size = [int64]$d.Size; free = [int64]$d.FreeSpace; cleanable = $cleanable }}"""

DISK_CLEAN = r"""$ErrorActionPreference = 'Continue'
$before = [int64](Get-ItopsDrive).FreeSpace
$stopped = @(Get-Service -Name wuauserv, bits -ErrorAction SilentlyContinue | Where-Object {{ $_.Status -eq 'Running' }})
$stopped | Stop-Service -Force -ErrorAction SilentlyContinue
$removed = 0; $failed = 0
foreach ($dir in $dirs) {{ foreach ($f in @(Get-ItopsOld $dir)) {{ try {{ Remove-Item -LiteralPath $f.FullName -Force -ErrorAction Stop; $removed++ }} catch {{ $failed++ }} }} }}
$stopped | Start-Service -ErrorAction SilentlyContinue
ConvertTo-Json -Compress -InputObject @{{ removed = $removed; in_use = $failed; freed = [int64](Get-ItopsDrive).FreeSpace - $before }}"""


@dataclass(frozen=True)
class SystemDrive:
    """The system drive's size and free space, and what the cleanup could delete, in bytes."""

    drive: str
    size: int
    free: int
    cleanable: int

    @property
    def free_percent(self) -> float:
        return 100.0 * self.free / self.size if self.size else 0.0


@dataclass(frozen=True)
class SystemDriveSpace(JsonFact[SystemDrive]):
    """The system drive (Win32_LogicalDisk) and the bytes in the cleanup's folders not written
    for `older_than_days` days."""

    older_than_days: int
    what: ClassVar[str] = "disk space"

    def command(self) -> Command:
        return ps_join(ps_script(CLEANUP_DIRS, days=self.older_than_days), ps_script(DISK_PROBE))

    def value(self, data: Any) -> SystemDrive:
        data = data if isinstance(data, dict) else {}
        return SystemDrive(
            text(data.get("drive")),
            as_int(data.get("size")),
            as_int(data.get("free")),
            as_int(data.get("cleanable")),
        )


@remediation(
    "disk.cleanup",
    category="software",
    platforms={"windows"},
    summary="Free space on the system drive: old temp files and the Windows Update cache",
)
class DiskCleanup(Remediation):
    """Delete temp files and Windows Update downloads older than a few days when the system drive
    is low on space.

    Cleaned: %SystemRoot%\\Temp, %SystemRoot%\\SoftwareDistribution\\Download (the Windows Update
    service and BITS are stopped meanwhile and restarted if they were running) and each profile's
    AppData\\Local\\Temp. Files in use are skipped and counted. Verify re-reads the free space.

    Example:
        itops fix disk.cleanup ws-042 --ticket INC-1042
        itops fix disk.cleanup workstations -p min_free_percent=15 --check
    """

    min_free_percent = Param(
        int, default=10, minimum=1, maximum=90, help="fix hosts below this much free space"
    )
    older_than_days = Param(
        int, default=7, minimum=0, maximum=365, help="delete files not written for this many days"
    )

    freed: int
    """Bytes the cleanup freed (apply), for verify's summary."""

    def _probe(self, ctx: Context) -> SystemDrive:
        return read(ctx, SystemDriveSpace(int(self.older_than_days)))

    def _finding(self, disk: SystemDrive, after: str = "") -> Finding:
        size, free, percent = disk.size, disk.free, disk.free_percent
        facts = {
            "drive": disk.drive,
            "free_percent": round(percent, 1),
            "free_bytes": free,
            "cleanable_bytes": disk.cleanable,
        }
        summary = f"{disk.drive} {percent:.1f}% free ({human_bytes(free)} of {human_bytes(size)})"
        if percent >= float(self.min_free_percent):
            return Finding.healthy(summary + after, **facts)
        return Finding.problem(
            f"{summary}, below {self.min_free_percent}%; "
            f"{human_bytes(disk.cleanable)} cleanable" + after,
            **facts,
        )

    def check(self, ctx: Context) -> Finding:
        return self._finding(self._probe(ctx))

    def apply(self, ctx: Context) -> None:
        script = ps_join(
            ps_script(CLEANUP_DIRS, days=int(self.older_than_days)), ps_script(DISK_CLEAN)
        )
        done = change_json(ctx, script, "cleanup", timeout=1800) or {}
        self.freed = as_int(done.get("freed"))
        ctx.note(
            f"removed {as_int(done.get('removed'))} file(s), skipped {as_int(done.get('in_use'))} "
            f"in use, freed {human_bytes(self.freed)}"
        )

    def verify(self, ctx: Context) -> Finding:
        return self._finding(self._probe(ctx), f" after freeing {human_bytes(self.freed)}")
