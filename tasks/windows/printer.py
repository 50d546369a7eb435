"""Printer fixes on Windows: the Print Spooler, queues and jobs (PrintManagement + CIM)."""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, ClassVar

from toolkit.remediation.catalog import Context, Finding, Param, Remediation, remediation
from toolkit.remediation.facts import read
from toolkit.remediation.quoting import Command, ps_script
from toolkit.remediation.windows import (
    PRINTER_NAME,
    WINDOWS_PATH,
    JsonFact,
    RestartService,
    UnexpectedOutput,
    as_int,
    change,
    records,
    text,
)

STATE = r"""$ErrorActionPreference = 'Stop'
$only = {queues}
$spooler = [string](Get-Service -Name Spooler).Status
$printers = @()
if ($spooler -eq 'Running') {{
  foreach ($p in @(Get-Printer)) {{
    if ($only.Count -and $only -notcontains $p.Name) {{ continue }}
    $jobs = @(Get-PrintJob -PrinterObject $p | ForEach-Object {{ @{{ id = [int]$_.Id; status = [string]$_.JobStatus; age_minutes = [int]((Get-Date) - $_.SubmittedTime).TotalMinutes; document = [string]$_.DocumentName; user = [string]$_.UserName }} }})
    $printers += @{{ name = [string]$p.Name; status = [string]$p.PrinterStatus; port = [string]$p.PortName; jobs = $jobs }}
  }}
}}
$dir = (Get-ItemProperty -Path 'HKLM:\SYSTEM\CurrentControlSet\Control\Print\Printers' -ErrorAction SilentlyContinue).DefaultSpoolDirectory
if (-not $dir) {{ $dir = Join-Path $env:SystemRoot 'System32\spool\PRINTERS' }}
$files = @(Get-ChildItem -LiteralPath $dir -File -ErrorAction SilentlyContinue).Count
ConvertTo-Json -Compress -Depth 5 -InputObject @{{ spooler = $spooler; spool_dir = [string]$dir; spool_files = $files; printers = $printers }}"""

REMOVE_JOBS = r"""$ErrorActionPreference = 'Continue'
$p = @(Get-Printer | Where-Object {{ $_.Name -eq {printer} }})[0]
foreach ($id in {ids}) {{ Remove-PrintJob -PrinterObject $p -ID $id -ErrorAction SilentlyContinue }}"""

# Jobs Remove-PrintJob cannot remove: stop the spooler, delete just their spool files, start it.
FLUSH_SPOOL = r"""$ErrorActionPreference = 'Stop'
$dir = {dir}
Stop-Service -Name Spooler -Force
try {{
  foreach ($id in {ids}) {{ foreach ($ext in 'SPL', 'SHD') {{ Remove-Item -LiteralPath (Join-Path $dir ('{{0:D5}}.{{1}}' -f $id, $ext)) -Force -ErrorAction SilentlyContinue }} }}
}} finally {{ Start-Service -Name Spooler }}"""

START_SPOOLER = r"""$ErrorActionPreference = 'Stop'
Start-Service -Name Spooler
(Get-Service -Name Spooler).WaitForStatus('Running', [TimeSpan]::FromSeconds(60))"""

RESUME = r"""$ErrorActionPreference = 'Stop'
Get-CimInstance -ClassName Win32_Printer | Where-Object {{ $_.Name -eq {printer} }} | Invoke-CimMethod -MethodName Resume | Out-Null"""

_STUCK_STATUS = re.compile(r"Error|Deleting|Blocked|UserIntervention", re.IGNORECASE)


@dataclass(frozen=True)
class Job:
    id: int
    status: str
    age_minutes: int
    document: str = ""


@dataclass(frozen=True)
class Printer:
    name: str
    status: str
    jobs: tuple[Job, ...] = ()

    @property
    def paused(self) -> bool:
        return "paused" in self.status.lower()


@dataclass(frozen=True)
class PrintState:
    spooler: str
    spool_dir: str
    spool_files: int
    printers: dict[str, Printer]


def parse_state(data: Any) -> PrintState:
    """The STATE probe's JSON (Windows PowerShell 5.1 shapes: one job is an object, not a list)."""
    if not isinstance(data, Mapping) or "spooler" not in data:
        raise UnexpectedOutput("printer state: missing the spooler status")
    printers = {}
    for p in records(data.get("printers")):
        jobs = tuple(
            Job(
                as_int(j.get("id")),
                text(j.get("status")),
                as_int(j.get("age_minutes")),
                text(j.get("document")),
            )
            for j in records(p.get("jobs"))
        )
        printers[text(p.get("name"))] = Printer(text(p.get("name")), text(p.get("status")), jobs)
    return PrintState(
        text(data.get("spooler")),
        text(data.get("spool_dir")),
        as_int(data.get("spool_files")),
        printers,
    )


@dataclass(frozen=True)
class PrinterState(JsonFact[PrintState]):
    """The Print Spooler's status, the spool folder, and each printer (or just `queue`) with its
    jobs and their ages."""

    queue: str | None = None
    what: ClassVar[str] = "printers"

    def command(self) -> Command:
        return ps_script(STATE, queues=[self.queue] if self.queue else [])

    def value(self, data: Any) -> PrintState:
        return parse_state(data)


def read_state(ctx: Context, queue: str | None) -> PrintState:
    return read(ctx, PrinterState(queue))


@remediation(
    "printer.clear-queue",
    category="printer",
    platforms={"windows"},
    summary="Cancel stuck print jobs and resume a paused queue",
)
class ClearPrintQueue(Remediation):
    """Remove stuck print jobs, resume paused printers and start a stopped Print Spooler.

    A job is stuck if it is in an error/deleting/blocked state or has waited longer than
    stuck_after minutes; fresh jobs are left alone. Jobs the spooler cannot remove are cleared
    the hard way: the Spooler is stopped, only those jobs' files are deleted from the spool folder
    (%SystemRoot%\\System32\\spool\\PRINTERS unless configured elsewhere), and it is started again.

    Example:
        itops fix printer.clear-queue ws-042 --ticket INC-1042
        itops fix printer.clear-queue ws-042 -p 'queue=HP LaserJet 4th floor' --check
    """

    queue = Param(str, kind="text", pattern=PRINTER_NAME, help="the printer (default: all)")
    stuck_after = Param(int, default=15, minimum=0, help="minutes before a waiting job is stuck")

    def stuck(self, printer: Printer) -> list[Job]:
        limit = int(self.stuck_after)
        return [j for j in printer.jobs if _STUCK_STATUS.search(j.status) or j.age_minutes >= limit]

    def problems(self, state: PrintState) -> dict[str, list[str]]:
        found: dict[str, list[str]] = {}
        for name, printer in sorted(state.printers.items()):
            issues = []
            if printer.paused:
                issues.append("paused")
            stuck = self.stuck(printer)
            if stuck:
                issues.append(f"{len(stuck)} stuck job(s)")
            if issues:
                found[name] = issues
        return found

    def check(self, ctx: Context) -> Finding:
        state = read_state(ctx, self.queue)
        if state.spooler != "Running":
            return Finding.problem(f"the Print Spooler is {state.spooler}", spooler=state.spooler)
        if self.queue and self.queue not in state.printers:
            return Finding.problem(f"no printer named {self.queue!r} on {ctx.host.name}")
        problems = self.problems(state)
        if not state.printers:
            return Finding.healthy("no printers installed")
        if not problems:
            return Finding.healthy(
                f"{len(state.printers)} printer(s) ready, no stuck jobs",
                printers=sorted(state.printers),
            )
        return Finding.problem(
            "; ".join(f"{name}: {', '.join(p)}" for name, p in problems.items()),
            problems=problems,
            stuck_jobs={
                n: [j.id for j in self.stuck(p)] for n, p in state.printers.items() if self.stuck(p)
            },
        )

    def apply(self, ctx: Context) -> None:
        state = read_state(ctx, self.queue)
        if state.spooler != "Running":
            change(ctx, ps_script(START_SPOOLER), "starting the Print Spooler")
            state = read_state(ctx, self.queue)
        if self.queue and self.queue not in state.printers:
            return  # verify reports the missing printer; nothing safe to do
        targets = [p for p in state.printers.values() if self.stuck(p)]
        for printer in targets:
            ids = [j.id for j in self.stuck(printer)]
            # Errors are expected here (a wedged job); the re-read below decides what is left.
            ctx.change(ps_script(REMOVE_JOBS, printer=printer.name, ids=ids), check=False)
        if targets:
            wedged = self._wedged(ctx, targets)
            if wedged:
                if not re.fullmatch(WINDOWS_PATH, state.spool_dir):
                    raise UnexpectedOutput(f"unexpected spool folder {state.spool_dir!r}")
                ctx.note(f"jobs {wedged} resisted removal: flushing their spool files")
                change(
                    ctx,
                    ps_script(FLUSH_SPOOL, dir=state.spool_dir, ids=wedged),
                    "flushing spool files",
                )
        for printer in state.printers.values():
            if printer.paused:
                change(ctx, ps_script(RESUME, printer=printer.name), f"resuming {printer.name}")

    def _wedged(self, ctx: Context, targets: Sequence[Printer]) -> list[int]:
        wanted = {j.id for p in targets for j in self.stuck(p)}
        after = read_state(ctx, self.queue)
        return sorted(j.id for p in after.printers.values() for j in p.jobs if j.id in wanted)


@remediation(
    "printer.restart-spooler",
    category="printer",
    platforms={"windows"},
    summary="Restart the Print Spooler service",
)
class RestartSpooler(RestartService):
    """Restart the Windows Print Spooler (the fix for a spooler that hangs while saying Running).

    Example:
        itops fix printer.restart-spooler ws-042 --ticket INC-1042
        itops fix printer.restart-spooler office -p only_if_stopped=true --check
    """

    def service_name(self, ctx: Context) -> str:
        return "Spooler"


@remediation(
    "printer.status",
    category="printer",
    platforms={"windows"},
    summary="List printers, their state and queued jobs (read-only)",
)
class PrinterStatus(Remediation):
    """Show the Print Spooler state, every printer's status and its jobs; changes nothing.

    The check always succeeds; its summary names paused printers and stuck-looking jobs so the
    next step (printer.clear-queue, printer.restart-spooler) is obvious.

    Example:
        itops fix printer.status ws-042 --check
        itops fix printer.status ws-042 -p 'queue=HP LaserJet 4th floor' --check --json
    """

    queue = Param(str, kind="text", pattern=PRINTER_NAME, help="one printer (default: all)")

    def check(self, ctx: Context) -> Finding:
        state = read_state(ctx, self.queue)
        if state.spooler != "Running":
            return Finding.healthy(
                f"Print Spooler is {state.spooler}: printer.restart-spooler starts it",
                spooler=state.spooler,
            )
        listing = {
            name: {
                "status": p.status,
                "jobs": [
                    {"id": j.id, "status": j.status, "age_minutes": j.age_minutes} for j in p.jobs
                ],
            }
            for name, p in sorted(state.printers.items())
        }
        paused = [n for n, p in state.printers.items() if p.paused]
        jobs = sum(len(p.jobs) for p in state.printers.values())
        summary = f"spooler running; {len(state.printers)} printer(s), {jobs} job(s)"
        if paused:
            summary += f"; paused: {', '.join(sorted(paused))}"
        return Finding.healthy(summary, printers=listing, spool_files=state.spool_files)

    def apply(self, ctx: Context) -> None:
        ctx.note("printer.status only reads")
