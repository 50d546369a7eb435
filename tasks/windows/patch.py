"""Windows Update through the Windows Update Agent COM API (no extra PowerShell module)."""

from __future__ import annotations

import secrets
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, ClassVar

from toolkit.errors import ToolkitError
from toolkit.remediation.catalog import Context, Finding, Param, Remediation, remediation
from toolkit.remediation.facts import read
from toolkit.remediation.quoting import Command, ps_script
from toolkit.remediation.windows import (
    KB_ID,
    JsonFact,
    as_int,
    change,
    change_json,
    records,
    strings,
    text,
)

# Security Updates and Critical Updates, by category id (names are localized).
SECURITY_CATEGORIES = frozenset(
    {"0fa1201d-4330-4fa8-8ae9-b877473b6441", "e6cf1350-c01b-414d-a61f-263d14d133b4"}
)
SEARCH = "IsInstalled=0 and Type='Software' and IsHidden=0"

PENDING = r"""$ErrorActionPreference = 'Stop'
$searcher = (New-Object -ComObject Microsoft.Update.Session).CreateUpdateSearcher()
$list = @()
foreach ($u in $searcher.Search({search}).Updates) {{
  $list += @{{ kbs = @($u.KBArticleIDs | ForEach-Object {{ 'KB' + $_ }}); title = [string]$u.Title; severity = [string]$u.MsrcSeverity; categories = @($u.Categories | ForEach-Object {{ [string]$_.CategoryID }}); downloaded = [bool]$u.IsDownloaded }}
}}
ConvertTo-Json -Compress -Depth 4 -InputObject @{{ updates = $list; reboot_pending = [bool](New-Object -ComObject Microsoft.Update.SystemInfo).RebootRequired }}"""

# Run as SYSTEM by a one-shot scheduled task: the WUA API refuses to download or install from a
# remote (WinRM) logon, so the session only registers, starts and waits for the task.
INSTALL = r"""$ErrorActionPreference = 'Stop'
$want = {kbs}
$out = Join-Path (Join-Path $env:ProgramData 'itops') ({name} + '.json')
try {{
  $session = New-Object -ComObject Microsoft.Update.Session
  $todo = New-Object -ComObject Microsoft.Update.UpdateColl
  foreach ($u in $session.CreateUpdateSearcher().Search({search}).Updates) {{
    if (@($u.KBArticleIDs | Where-Object {{ $want -contains ('KB' + $_) }}).Count) {{ if (-not $u.EulaAccepted) {{ $u.AcceptEula() }}; [void]$todo.Add($u) }}
  }}
  $res = @{{ selected = $todo.Count; results = @(); reboot = $false }}
  if ($todo.Count) {{
    $dl = $session.CreateUpdateDownloader(); $dl.Updates = $todo; [void]$dl.Download()
    $inst = $session.CreateUpdateInstaller(); $inst.Updates = $todo; $r = $inst.Install()
    for ($i = 0; $i -lt $todo.Count; $i++) {{ $x = $r.GetUpdateResult($i); $res.results += @{{ title = [string]$todo.Item($i).Title; kbs = @($todo.Item($i).KBArticleIDs | ForEach-Object {{ 'KB' + $_ }}); code = [int]$x.ResultCode; hresult = [int]$x.HResult }} }}
    $res.reboot = [bool]$r.RebootRequired
  }}
}} catch {{ $res = @{{ error = $_.Exception.Message }} }}
ConvertTo-Json -Compress -Depth 4 -InputObject $res | Set-Content -LiteralPath $out -Encoding UTF8"""

# The folder SYSTEM writes its result to is made SYSTEM's and Administrators' only (a user could
# otherwise pre-create C:\ProgramData\itops, own it, and read or redirect what SYSTEM writes
# there: a folder owned by anyone else, or a link, is refused); the script itself is never a
# file a user could replace before SYSTEM runs it: the task runs it as -EncodedCommand.
RUN_AS_SYSTEM = r"""$ErrorActionPreference = 'Stop'
$dir = Join-Path $env:ProgramData 'itops'
$trusted = @('S-1-5-18', 'S-1-5-32-544')
if (Test-Path -LiteralPath $dir) {{
  $item = Get-Item -LiteralPath $dir -Force
  if ($item.Attributes -band [IO.FileAttributes]::ReparsePoint) {{ throw "refusing ${{dir}}: it is a link" }}
  $owner = (Get-Acl -LiteralPath $dir).GetOwner([Security.Principal.SecurityIdentifier]).Value
  if ($trusted -notcontains $owner) {{ throw "refusing ${{dir}}: owned by $owner, not SYSTEM or Administrators" }}
}} else {{ New-Item -ItemType Directory -Path $dir | Out-Null }}
$acl = New-Object System.Security.AccessControl.DirectorySecurity
$acl.SetAccessRuleProtection($true, $false)
foreach ($sid in $trusted) {{ $acl.AddAccessRule((New-Object System.Security.AccessControl.FileSystemAccessRule((New-Object Security.Principal.SecurityIdentifier $sid), 'FullControl', 'ContainerInherit,ObjectInherit', 'None', 'Allow'))) }}
$acl.SetOwner((New-Object Security.Principal.SecurityIdentifier 'S-1-5-32-544'))
Set-Acl -LiteralPath $dir -AclObject $acl
$name = {name}
$result = Join-Path $dir ($name + '.json')
$encoded = [Convert]::ToBase64String([Text.Encoding]::Unicode.GetBytes({script}))
$action = New-ScheduledTaskAction -Execute 'powershell.exe' -Argument ('-NoProfile -NonInteractive -EncodedCommand ' + $encoded)
$principal = New-ScheduledTaskPrincipal -UserId 'SYSTEM' -LogonType ServiceAccount -RunLevel Highest
Register-ScheduledTask -TaskName $name -Action $action -Principal $principal -Force | Out-Null
try {{
  Start-ScheduledTask -TaskName $name
  $deadline = (Get-Date).AddMinutes({minutes})
  while (-not (Test-Path -LiteralPath $result) -and (Get-Date) -lt $deadline) {{ Start-Sleep -Seconds 5 }}
  if (-not (Test-Path -LiteralPath $result)) {{ throw 'the update task left no result within the time limit' }}
  Get-Content -LiteralPath $result -Raw
}} finally {{
  Unregister-ScheduledTask -TaskName $name -Confirm:$false -ErrorAction SilentlyContinue
  Remove-Item -LiteralPath $result -Force -ErrorAction SilentlyContinue
}}"""

REBOOT = "shutdown.exe /r /t 300 /c 'itops patch.apply: restarting in 5 minutes to finish updates'\nexit $LASTEXITCODE"

RESULT_CODES = {
    0: "not started",
    1: "in progress",
    2: "succeeded",
    3: "succeeded with errors",
    4: "failed",
    5: "aborted",
}


@dataclass(frozen=True)
class Update:
    kbs: tuple[str, ...]
    title: str
    severity: str
    categories: frozenset[str]

    @property
    def security(self) -> bool:
        return bool(self.severity) or bool(self.categories & SECURITY_CATEGORIES)

    @property
    def label(self) -> str:
        return "/".join(self.kbs) or self.title


def parse_pending(data: Any) -> tuple[list[Update], bool]:
    if not isinstance(data, Mapping):
        raise ToolkitError("the Windows Update search returned nothing")
    updates = [
        Update(
            tuple(k.upper() for k in strings(u.get("kbs"))),
            text(u.get("title")),
            text(u.get("severity")),
            frozenset(c.lower() for c in strings(u.get("categories"))),
        )
        for u in records(data.get("updates"))
    ]
    return updates, bool(data.get("reboot_pending"))


@dataclass(frozen=True)
class Pending:
    updates: tuple[Update, ...]
    reboot_pending: bool


@dataclass(frozen=True)
class PendingUpdates(JsonFact[Pending]):
    """Updates not installed, not hidden (Windows Update Agent search), and whether the host
    waits for a restart."""

    what: ClassVar[str] = "Windows Update search"

    def command(self) -> Command:
        return ps_script(PENDING, search=SEARCH)

    def value(self, data: Any) -> Pending:
        updates, reboot = parse_pending(data)
        return Pending(tuple(updates), reboot)


@remediation(
    "patch.apply",
    category="software",
    platforms={"windows"},
    summary="Install pending Windows updates (optionally security only), reboot if asked",
    disruptive=True,
)
class ApplyPatches(Remediation):
    """Search, download and install pending Windows updates with the Windows Update Agent API.

    security_only keeps updates with an MSRC severity or in the Security/Critical Updates
    categories; include/exclude pick or drop KB articles (KB5034441). The install runs as SYSTEM
    in a one-shot scheduled task (the API refuses remote logons), waits up to timeout_minutes,
    and reports each update's result. A needed restart is reported; reboot=true schedules it
    5 minutes later with a message to the logged-on user.

    Example:
        itops fix patch.apply ws-042 --ticket CHG-2001 -p security_only=true
        itops fix patch.apply ws-042 --ticket CHG-2001 -p include=KB5034441 -p reboot=true
        itops fix patch.apply workstations --check
    """

    security_only = Param(bool, default=False, help="only security and critical updates")
    include = Param(str, many=True, pattern=KB_ID, help="only these KB articles (repeatable)")
    exclude = Param(str, many=True, pattern=KB_ID, help="never these KB articles (repeatable)")
    reboot = Param(bool, default=False, help="restart (in 5 minutes) if the updates need it")
    timeout_minutes = Param(int, default=120, minimum=5, maximum=720, help="install time limit")

    results: list[Mapping[str, Any]]
    """Each installed update's result (apply): verify reports the failed ones."""
    reboot_needed: bool
    """Whether the install asked for a restart (apply)."""

    def wanted(self, updates: Sequence[Update]) -> list[Update]:
        include = {k.upper() for k in self.include or []}
        exclude = {k.upper() for k in self.exclude or []}
        picked = []
        for u in updates:
            if self.security_only and not u.security:
                continue
            if include and not include & set(u.kbs):
                continue
            if exclude & set(u.kbs) or not u.kbs:
                continue
            picked.append(u)
        return picked

    def _pending(self, ctx: Context) -> tuple[list[Update], bool]:
        found = read(ctx, PendingUpdates(), timeout=900)
        return self.wanted(found.updates), found.reboot_pending

    def check(self, ctx: Context) -> Finding:
        wanted, reboot = self._pending(ctx)
        facts = {"pending": [u.label for u in wanted], "reboot_pending": reboot}
        tail = "; a restart is pending" if reboot else ""
        if not wanted:
            return Finding.healthy("no pending updates" + tail, **facts)
        return Finding.problem(
            f"{len(wanted)} pending: {', '.join(u.label for u in wanted)}{tail}", **facts
        )

    def apply(self, ctx: Context) -> None:
        wanted, _ = self._pending(ctx)
        kbs = sorted({kb for u in wanted for kb in u.kbs})
        self.results = []
        self.reboot_needed = False
        if not kbs:
            return
        name = f"itops-patch-{secrets.token_hex(4)}"
        inner = ps_script(INSTALL, kbs=kbs, name=name, search=SEARCH)
        minutes = int(self.timeout_minutes)
        outcome = change_json(
            ctx,
            ps_script(RUN_AS_SYSTEM, name=name, script=inner.text, minutes=minutes),
            "update install",
            timeout=minutes * 60.0 + 120,
        )
        if not isinstance(outcome, Mapping):
            raise ToolkitError("the update task reported nothing")
        if outcome.get("error"):
            raise ToolkitError(f"Windows Update failed: {outcome['error']}")
        self.results = records(outcome.get("results"))
        self.reboot_needed = bool(outcome.get("reboot"))
        for r in self.results:
            code = as_int(r.get("code"), -1)
            ctx.note(
                f"{'/'.join(strings(r.get('kbs')))} {text(r.get('title'))}: "
                f"{RESULT_CODES.get(code, f'result {code}')}"
            )
        if self.reboot_needed and self.reboot:
            change(ctx, ps_script(REBOOT), "scheduling the restart")
            ctx.note("restart scheduled in 5 minutes")

    def verify(self, ctx: Context) -> Finding:
        wanted, reboot = self._pending(ctx)
        failed = [r for r in self.results if as_int(r.get("code"), -1) not in (2, 3)]
        restart = reboot or self.reboot_needed
        tail = ""
        if restart:
            tail = "; restart scheduled" if self.reboot else "; RESTART REQUIRED (reboot=false)"
        failed_kbs = ["/".join(strings(r.get("kbs"))) for r in failed]
        facts = {
            "installed": ["/".join(strings(r.get("kbs"))) for r in self.results if r not in failed],
            "failed": failed_kbs,
            "reboot_required": restart,
        }
        if wanted or failed:
            left = ", ".join(u.label for u in wanted) or ", ".join(failed_kbs)
            return Finding.problem(f"still pending or failed: {left}{tail}", **facts)
        return Finding.healthy(f"{len(self.results)} update(s) installed{tail}", **facts)
