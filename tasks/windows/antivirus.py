"""Microsoft Defender: signature updates and scans."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any, ClassVar

from toolkit.errors import ToolkitError
from toolkit.remediation.catalog import Context, Finding, Param, Remediation, remediation
from toolkit.remediation.facts import read
from toolkit.remediation.quoting import Command, ps_script
from toolkit.remediation.windows import (
    WINDOWS_PATH,
    JsonFact,
    UnexpectedOutput,
    as_int,
    change,
    change_json,
    ps_time,
    records,
    strings,
    text,
)

ISO = "function Iso($d) {{ if ($d) {{ $d.ToUniversalTime().ToString('o') }} }}\n"

STATUS = (
    r"""$ErrorActionPreference = 'Stop'
"""
    + ISO
    + r"""$s = Get-MpComputerStatus
$active = @(Get-MpThreat -ErrorAction SilentlyContinue | Where-Object {{ $_.IsActive }} | ForEach-Object {{ @{{ id = [int64]$_.ThreatID; name = [string]$_.ThreatName; severity = [int]$_.SeverityID }} }})
ConvertTo-Json -Compress -Depth 4 -InputObject @{{ service = [bool]$s.AMServiceEnabled; realtime = [bool]$s.RealTimeProtectionEnabled; version = [string]$s.AntivirusSignatureVersion; age_days = [int64]$s.AntivirusSignatureAge; updated = (Iso $s.AntivirusSignatureLastUpdated); quick_scan_end = (Iso $s.QuickScanEndTime); full_scan_end = (Iso $s.FullScanEndTime); active = $active }}"""
)

UPDATE = r"""$ErrorActionPreference = 'Stop'
$source = {source}
if ($source) {{ Update-MpSignature -UpdateSource $source }} else {{ Update-MpSignature }}"""

SCAN = (
    r"""$ErrorActionPreference = 'Stop'
"""
    + ISO
    + r"""$start = Get-Date
$path = {path}
if ($path) {{ Start-MpScan -ScanType CustomScan -ScanPath $path }} else {{ Start-MpScan -ScanType {scan_type} }}
$found = @(Get-MpThreatDetection -ErrorAction SilentlyContinue | Where-Object {{ $_.InitialDetectionTime -ge $start.AddMinutes(-1) }} | ForEach-Object {{ @{{ id = [int64]$_.ThreatID; action_success = [bool]$_.ActionSuccess; resources = @($_.Resources | Select-Object -First 5 | ForEach-Object {{ [string]$_ }}); time = (Iso $_.InitialDetectionTime) }} }})
ConvertTo-Json -Compress -Depth 4 -InputObject @{{ started = (Iso $start); detections = $found }}"""
)


@dataclass(frozen=True)
class Threat:
    id: int
    name: str
    severity: int


@dataclass(frozen=True)
class DefenderState:
    """Get-MpComputerStatus and the active threats (Get-MpThreat); times as the host gave them."""

    service: bool
    realtime: bool
    version: str
    age_days: int
    updated: str | None
    quick_scan_end: str | None
    full_scan_end: str | None
    active: tuple[Threat, ...]


def _optional(value: Any) -> str | None:
    return None if value is None else str(value)


@dataclass(frozen=True)
class DefenderStatus(JsonFact[DefenderState]):
    """Microsoft Defender's service, signature version and age, last scans and active threats."""

    what: ClassVar[str] = "Defender status"

    def command(self) -> Command:
        return ps_script(STATUS)

    def value(self, data: Any) -> DefenderState:
        if not isinstance(data, Mapping):
            raise UnexpectedOutput("Get-MpComputerStatus returned nothing")
        return DefenderState(
            service=bool(data.get("service")),
            realtime=bool(data.get("realtime")),
            version=text(data.get("version")),
            age_days=as_int(data.get("age_days")),
            updated=_optional(data.get("updated")),
            quick_scan_end=_optional(data.get("quick_scan_end")),
            full_scan_end=_optional(data.get("full_scan_end")),
            active=tuple(
                Threat(as_int(t.get("id")), text(t.get("name")), as_int(t.get("severity")))
                for t in records(data.get("active"))
            ),
        )


def read_status(ctx: Context) -> DefenderState:
    state = read(ctx, DefenderStatus())
    if not state.service:
        raise ToolkitError(
            f"Microsoft Defender is not running on {ctx.host.name} (another antivirus product?)",
            hint="itops manages Defender only; use the other product's console",
        )
    return state


def version(value: Any) -> tuple[int, ...]:
    try:
        return tuple(int(part) for part in text(value).split("."))
    except ValueError:
        return ()


@remediation(
    "av.update",
    category="security",
    platforms={"windows"},
    summary="Update Microsoft Defender signatures when they are out of date",
)
class UpdateSignatures(Remediation):
    """Update Defender's signatures (Update-MpSignature) when older than max_age_days.

    Verify requires a newer signature version than before, or signatures within the age limit.

    Example:
        itops fix av.update ws-042 --ticket INC-1042
        itops fix av.update workstations -p max_age_days=0 --check
    """

    max_age_days = Param(int, default=1, minimum=0, maximum=60, help="oldest acceptable signatures")
    source = Param(
        str,
        choices=("MicrosoftUpdateServer", "MMPC", "InternalDefinitionUpdateServer", "FileShares"),
        help="update source (default: Defender's configured order)",
    )

    before: str
    """The signature version check found: verify wants a newer one (or fresh signatures)."""

    def _finding(self, data: DefenderState) -> Finding:
        age, ver = data.age_days, data.version
        facts = {"version": ver, "age_days": age, "updated": data.updated}
        if age > int(self.max_age_days):
            return Finding.problem(f"signatures {ver} are {age} day(s) old", **facts)
        return Finding.healthy(f"signatures {ver}, {age} day(s) old", **facts)

    def check(self, ctx: Context) -> Finding:
        data = read_status(ctx)
        self.before = data.version
        return self._finding(data)

    def apply(self, ctx: Context) -> None:
        change(ctx, ps_script(UPDATE, source=self.source or ""), "Update-MpSignature", timeout=900)

    def verify(self, ctx: Context) -> Finding:
        data = read_status(ctx)
        finding = self._finding(data)
        newer = version(data.version) > version(self.before)
        if finding.ok or newer:
            return Finding.healthy(
                f"signatures updated {self.before} → {data.version}", **finding.facts
            )
        return Finding.problem(f"still {finding.summary} after Update-MpSignature", **finding.facts)


@remediation(
    "av.scan",
    category="security",
    platforms={"windows"},
    summary="Run a Microsoft Defender quick, full or custom scan and record detections",
)
class Scan(Remediation):
    """Run a Defender scan and record what it detected.

    mode=quick (default) or full; a path makes it a custom scan of that folder or file. The scan
    runs to completion within timeout_minutes. Detections since the scan started are recorded in
    the facts and the ticket log; verify fails while Defender still lists an active threat.

    Example:
        itops fix av.scan ws-042 --ticket INC-1042
        itops fix av.scan ws-042 -p mode=full -p timeout_minutes=240 --ticket INC-1042
        itops fix av.scan ws-042 -p 'path=C:\\Users\\jdoe\\Downloads' --ticket INC-1042
    """

    mode = Param(str, default="quick", choices=("quick", "full"), help="quick or full")
    path = Param(str, kind="text", pattern=WINDOWS_PATH, help="scan only this folder or file")
    timeout_minutes = Param(int, default=60, minimum=1, maximum=1440, help="scan time limit")

    started: datetime | None
    """When the scan started on the host (apply), as the scan reported it."""
    detections: list[Mapping[str, Any]]
    """What the scan detected (apply): verify records them."""

    def check(self, ctx: Context) -> Finding:
        data = read_status(ctx)
        active = [t.name for t in data.active]
        last = data.full_scan_end if self.mode == "full" else data.quick_scan_end
        what = f"custom scan of {self.path}" if self.path else f"{self.mode} scan"
        summary = f"{what} requested; last {self.mode} scan: {last or 'never'}"
        if active:
            summary += f"; {len(active)} active threat(s): " + ", ".join(active)
        return Finding.problem(summary, active=active)

    def apply(self, ctx: Context) -> None:
        scan_type = "FullScan" if self.mode == "full" else "QuickScan"
        minutes = int(self.timeout_minutes)
        done = change_json(
            ctx,
            ps_script(SCAN, path=self.path or "", scan_type=scan_type),
            "scan",
            timeout=minutes * 60.0,
        )
        self.started = ps_time((done or {}).get("started"))
        self.detections = records((done or {}).get("detections"))
        for d in self.detections:
            ctx.note(
                f"detection: threat {d.get('id')} in {', '.join(strings(d.get('resources')))} "
                f"({'remediated' if d.get('action_success') else 'NOT remediated'})"
            )

    def verify(self, ctx: Context) -> Finding:
        active = read_status(ctx).active
        detections = [dict(d) for d in self.detections]
        if active:
            names = ", ".join(t.name for t in active)
            return Finding.problem(
                f"scan done; {len(active)} active threat(s) remain: {names}",
                detections=detections,
            )
        return Finding.healthy(
            f"scan done: {len(detections)} detection(s), none active", detections=detections
        )
