"""Software requests on Windows: install, remove and list catalog software with winget, Chocolatey
or an MSI (msiexec), whichever the catalog entry lists and the host has, in that order.

Reads are facts (`JsonFact`: a PowerShell probe printing JSON, parsed alone): winget's
`list --id X --exact` table (parsed here), Chocolatey's own record of an installed package
(`lib\\ID\\ID.nuspec`, what `choco list` reads), an MSI's Uninstall key by product code, the
Uninstall keys for `software.list`. Every value reaches PowerShell as a quoted literal
(`ps_script`).
"""

from __future__ import annotations

import fnmatch
import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, ClassVar

from toolkit import software
from toolkit.errors import ChangeRefused, ToolkitError, Unsupported
from toolkit.remediation.catalog import Context, Finding, Param, Remediation
from toolkit.remediation.facts import read
from toolkit.remediation.quoting import Command, ps_script
from toolkit.remediation.softwaretasks import CatalogSoftwareTask, judge, software_task
from toolkit.remediation.windows import (
    JsonFact,
    change_json,
    read_service,
    records,
    text,
)
from toolkit.software import Software

TOOLS = r"""$ErrorActionPreference = 'Stop'
$winget = [string](Get-Command winget.exe -ErrorAction SilentlyContinue).Source
if (-not $winget) {{ $winget = [string](@(Get-ChildItem -Path (Join-Path $env:ProgramFiles 'WindowsApps\Microsoft.DesktopAppInstaller_*_x64__8wekyb3d8bbwe\winget.exe') -ErrorAction SilentlyContinue | Sort-Object FullName -Descending)[0].FullName) }}
$choco = [string](Get-Command choco.exe -ErrorAction SilentlyContinue).Source
ConvertTo-Json -Compress -InputObject @{{ winget = $winget; choco = $choco }}"""

WINGET = r"""$ErrorActionPreference = 'Stop'
$winget = {tool}
$a = {args}
if ({version}) {{ $a += @('--version', {version}) }}
$out = & $winget @a 2>&1 | Out-String
ConvertTo-Json -Compress -InputObject @{{ exit = [int]$LASTEXITCODE; out = [string]$out }}"""

CHOCO_STATE = r"""$ErrorActionPreference = 'Stop'
$root = if ($env:ChocolateyInstall) {{ $env:ChocolateyInstall }} else {{ Join-Path $env:ProgramData 'chocolatey' }}
$id = {id}
$nuspec = Join-Path $root ('lib\' + $id + '\' + $id + '.nuspec')
$version = $null
if (Test-Path -LiteralPath $nuspec) {{ $version = [string]([xml](Get-Content -LiteralPath $nuspec -Raw)).package.metadata.version }}
ConvertTo-Json -Compress -InputObject @{{ version = $version }}"""

CHOCO = r"""$ErrorActionPreference = 'Stop'
$choco = {tool}
$a = {args}
if ({version}) {{ $a += @('--version', {version}, '--allow-downgrade') }}
$out = & $choco @a 2>&1 | Out-String
ConvertTo-Json -Compress -InputObject @{{ exit = [int]$LASTEXITCODE; out = [string]$out }}"""

MSI_STATE = r"""$ErrorActionPreference = 'Stop'
$code = {code}
$version = $null
foreach ($base in @('HKLM:\SOFTWARE\Microsoft\Windows\CurrentVersion\Uninstall', 'HKLM:\SOFTWARE\WOW6432Node\Microsoft\Windows\CurrentVersion\Uninstall')) {{
  $key = Join-Path $base $code
  if (Test-Path -LiteralPath $key) {{ $version = [string](Get-ItemProperty -LiteralPath $key).DisplayVersion; break }}
}}
ConvertTo-Json -Compress -InputObject @{{ version = $version }}"""

# msiexec parses its own command line: the path is put in double quotes (the catalog refuses a
# path holding one); the verbose log goes to a fresh file under TEMP, whose tail is reported.
MSIEXEC = r"""$ErrorActionPreference = 'Stop'
$log = Join-Path $env:TEMP ('itops-msi-' + [guid]::NewGuid().ToString('N') + '.log')
$target = {target}
$verb = {verb}
$msi = @($verb, ('"' + $target + '"'), '/qn', '/norestart', '/l*v', ('"' + $log + '"'))
$p = Start-Process -FilePath 'msiexec.exe' -ArgumentList $msi -Wait -PassThru
$tail = ''
if (Test-Path -LiteralPath $log) {{ $tail = (Get-Content -LiteralPath $log -Tail 5) -join "`n"; Remove-Item -LiteralPath $log -Force -ErrorAction SilentlyContinue }}
ConvertTo-Json -Compress -InputObject @{{ exit = [int]$p.ExitCode; out = [string]$tail }}"""

RUN = r"""$ErrorActionPreference = 'Continue'
$argv = {argv}
$rest = @($argv | Select-Object -Skip 1)
try {{ $out = & $argv[0] @rest 2>&1 | Out-String; $code = [int]$LASTEXITCODE }} catch {{ $out = $_.Exception.Message; $code = 127 }}
ConvertTo-Json -Compress -InputObject @{{ exit = $code; out = [string]$out }}"""

UNINSTALL_KEYS = r"""$ErrorActionPreference = 'Stop'
$list = @()
foreach ($base in @('HKLM:\SOFTWARE\Microsoft\Windows\CurrentVersion\Uninstall', 'HKLM:\SOFTWARE\WOW6432Node\Microsoft\Windows\CurrentVersion\Uninstall')) {{
  if (-not (Test-Path -LiteralPath $base)) {{ continue }}
  foreach ($k in Get-ChildItem -LiteralPath $base) {{
    $p = Get-ItemProperty -LiteralPath $k.PSPath
    if ($p.DisplayName -and -not $p.SystemComponent) {{ $list += @{{ key = [string]$k.PSChildName; name = [string]$p.DisplayName; version = [string]$p.DisplayVersion; publisher = [string]$p.Publisher }} }}
  }}
}}
ConvertTo-Json -Compress -Depth 3 -InputObject @{{ packages = $list }}"""

# Exit codes that mean "done, a restart finishes it" (MSI and Chocolatey use the Windows ones)
REBOOT_CODES = {3010: "a restart is required", 1641: "the installer started a restart"}
BUSY_CODES = {1618: "another installation is in progress (msiexec)"}
WINGET_CODES = {
    -1978335212: "no installed package matched (winget)",  # 0x8A150014
    -1978335189: "no applicable update (winget)",  # 0x8A15002B
    -1978334967: "a restart is required to finish (winget)",  # 0x8A150109
    -1978335216: "no package found in the sources (winget)",  # 0x8A150010
}
# What Windows and the package tools themselves need: never removed on request
PROTECTED = (
    "Microsoft.DesktopAppInstaller", "Microsoft.WindowsAppRuntime*", "Microsoft.VCRedist*",
    "Microsoft.VCLibs*", "Microsoft.UI.Xaml*", "Microsoft.DotNet*", "Microsoft.Edge",
    "Microsoft.EdgeWebView2Runtime", "chocolatey", "chocolatey-*", "vcredist*", "dotnet*",
    "KB*",
)  # fmt: skip


def parse_winget_list(output: str, package_id: str) -> str | None:
    """The installed version of `package_id` from `winget list --id ID --exact` (None: not
    listed). The table is cut by the header's column starts; winget's progress spinner (text
    before a carriage return) is dropped first."""
    lines = [line.rsplit("\r", 1)[-1] for line in output.splitlines()]
    for n, line in enumerate(lines):
        if re.search(r"\bId\b", line) and re.search(r"\bVersion\b", line):
            id_at, version_at = line.index("Id"), line.index("Version")
            ends = [m.start() for m in re.finditer(r"\S+", line) if m.start() > version_at]
            version_end = ends[0] if ends else None
            for row in lines[n + 1 :]:
                if set(row.strip()) <= {"-"}:
                    continue
                found_id = row[id_at:version_at].strip()
                if found_id.lower() == package_id.lower():
                    return row[version_at:version_end].strip() or None
            return None
    return None


@dataclass(frozen=True)
class Outcome:
    """What a package tool (or the verify command) said: its exit code and output."""

    exit: int
    out: str

    @classmethod
    def of(cls, data: Any) -> Outcome:
        if not isinstance(data, Mapping):
            raise ToolkitError("the package tool reported nothing")
        return cls(int(data.get("exit") or 0), text(data.get("out")))

    def last(self) -> str:
        lines = [line.rsplit("\r", 1)[-1].strip() for line in self.out.splitlines()]
        said = [line for line in lines if line and not set(line) <= set("-\\|/ ")]
        return said[-1][:200] if said else ""


@dataclass(frozen=True)
class Tools:
    """Where winget.exe and choco.exe are on the host (empty: absent)."""

    winget: str
    choco: str


@dataclass(frozen=True)
class PackageTools(JsonFact[Tools]):
    """winget (on PATH, or App Installer's folder under WindowsApps) and Chocolatey."""

    what: ClassVar[str] = "finding winget and Chocolatey"

    def command(self) -> Command:
        return ps_script(TOOLS)

    def value(self, data: Any) -> Tools:
        data = data if isinstance(data, Mapping) else {}
        return Tools(text(data.get("winget")), text(data.get("choco")))


@dataclass(frozen=True)
class Version:
    """An installed version (None: not installed)."""

    version: str | None


@dataclass(frozen=True)
class WingetVersion(JsonFact[Version]):
    """`winget list --id ID --exact`: the version in its table; exit 0x8A150014: not installed."""

    tool: str
    id: str
    what: ClassVar[str] = "winget list"

    def command(self) -> Command:
        args = ["list", "--id", self.id, "--exact", "--accept-source-agreements",
                "--disable-interactivity"]  # fmt: skip
        return ps_script(WINGET, tool=self.tool, args=args, version="")

    def value(self, data: Any) -> Version:
        done = Outcome.of(data)
        if done.exit == -1978335212:
            return Version(None)
        if done.exit != 0:
            raise ToolkitError(f"winget list exited {done.exit}: {done.last()}")
        return Version(parse_winget_list(done.out, self.id))


@dataclass(frozen=True)
class RecordedVersion(JsonFact[Version]):
    """A probe that prints `{version: …}` from a record the tool keeps (null or empty: not
    installed)."""

    def value(self, data: Any) -> Version:
        found = text(data.get("version")) if isinstance(data, Mapping) else ""
        return Version(found or None)


@dataclass(frozen=True)
class ChocoVersion(RecordedVersion):
    """Chocolatey's own record of an installed package (`lib\\ID\\ID.nuspec`)."""

    id: str
    what: ClassVar[str] = "Chocolatey's package record"

    def command(self) -> Command:
        return ps_script(CHOCO_STATE, id=self.id)


@dataclass(frozen=True)
class MsiVersion(RecordedVersion):
    """The DisplayVersion of an MSI's Uninstall key (64- and 32-bit views), by product code."""

    code: str
    what: ClassVar[str] = "the MSI's Uninstall key"

    def command(self) -> Command:
        return ps_script(MSI_STATE, code=self.code)


@dataclass(frozen=True)
class Answer(JsonFact[Outcome]):
    """The catalog's verify command, run on the host: its exit code and output."""

    argv: tuple[str, ...]
    what: ClassVar[str] = "the verify command"

    def command(self) -> Command:
        return ps_script(RUN, argv=list(self.argv))

    def value(self, data: Any) -> Outcome:
        return Outcome.of(data)


@dataclass(frozen=True)
class Program:
    name: str
    version: str
    publisher: str
    key: str  # the Uninstall key's name: an MSI's product code


@dataclass(frozen=True)
class Programs:
    programs: tuple[Program, ...]


@dataclass(frozen=True)
class InstalledPrograms(JsonFact[Programs]):
    """The programs Windows lists as installed (the Uninstall keys, 64- and 32-bit)."""

    what: ClassVar[str] = "the installed programs"

    def command(self) -> Command:
        return ps_script(UNINSTALL_KEYS)

    def value(self, data: Any) -> Programs:
        rows = records(data.get("packages")) if isinstance(data, Mapping) else []
        return Programs(tuple(
            Program(text(p.get("name")), text(p.get("version")), text(p.get("publisher")),
                    text(p.get("key")))
            for p in rows
        ))  # fmt: skip


class WindowsSoftwareTask(CatalogSoftwareTask):
    """What install and remove share on Windows: the manager is winget, choco or msi, the first
    the entry lists and the host has."""

    timeout_minutes = Param(int, default=30, minimum=1, maximum=240, help="install time limit")

    tool: str
    """The winget.exe or choco.exe path the host answered (empty for msi)."""

    def resolve(self, ctx: Context) -> None:
        self.entry = software.active().get(str(self.name))
        tools = read(ctx, PackageTools())
        for manager in software.WINDOWS_MANAGERS:
            package = self.entry.packages.get(manager)
            path = {"winget": tools.winget, "choco": tools.choco}.get(manager, "")
            if package is not None and (manager == "msi" or path):
                self.manager, self.tool, self.package = manager, path, package
                return
        listed = [m for m in software.WINDOWS_MANAGERS if m in self.entry.packages]
        raise Unsupported(
            f"{ctx.host.name} cannot install {self.entry.name}: the catalog lists "
            + (f"{', '.join(listed)}, which the host lacks" if listed else "no Windows package")
            + f" ({self.entry.source})",
            hint="add a winget, choco or msi package to its entry, or install the tool",
        )

    def version(self, ctx: Context) -> str | None:
        """The installed version (None: not installed)."""
        pkg = self.package
        if self.manager == "winget":
            return read(ctx, WingetVersion(self.tool, pkg.id)).version
        if self.manager == "choco":
            return read(ctx, ChocoVersion(pkg.id)).version
        return read(ctx, MsiVersion(pkg.id)).version

    def shown(self) -> str:
        return str(self.package.source) if self.manager == "msi" else self.package.id

    def run(self, ctx: Context, verb: str) -> Outcome:
        """Install or remove with the chosen tool (apply only); a failure raises."""
        pkg, timeout = self.package, int(self.timeout_minutes) * 60.0 + 60
        pin = (pkg.version or "") if verb == "install" else ""
        if self.manager == "winget":
            args = [verb, "--id", pkg.id, "--exact", "--silent", "--accept-source-agreements",
                    "--disable-interactivity"]  # fmt: skip
            if verb == "install":
                args.append("--accept-package-agreements")
            command = ps_script(WINGET, tool=self.tool, args=args, version=pin)
        elif self.manager == "choco":
            args = [verb, pkg.id, "-y", "--no-progress", "--limit-output"]
            command = ps_script(CHOCO, tool=self.tool, args=args, version=pin)
        else:
            target = str(pkg.source) if verb == "install" else pkg.id
            command = ps_script(MSIEXEC, target=target, verb="/i" if verb == "install" else "/x")
        done = Outcome.of(change_json(ctx, command, f"{self.manager} {verb}", timeout))
        if done.exit in REBOOT_CODES or done.exit == -1978334967:
            ctx.note(
                f"{self.manager} {verb}: {REBOOT_CODES.get(done.exit, WINGET_CODES.get(done.exit))}"
            )
        elif done.exit in BUSY_CODES:
            raise ToolkitError(
                f"{self.manager} {verb} {pkg.id}: {BUSY_CODES[done.exit]}; nothing was changed",
                hint="try again when the other installation has finished",
            )
        elif done.exit != 0:
            known = WINGET_CODES.get(done.exit, "")
            raise ToolkitError(
                f"{self.manager} {verb} {pkg.id} exited {done.exit}"
                + (f" ({known})" if known else "")
                + (f": {done.last()}" if done.last() else "")
            )
        return done

    def facts(self, version: str | None) -> dict[str, Any]:
        return {
            "software": self.entry.name,
            "manager": self.manager,
            "package": self.package.id,
            "pinned": self.package.version,
            "installed": version,
            "licence": self.entry.licence,
        }


@software_task(
    "software.install",
    {"windows"},
    "Install catalog software (winget, Chocolatey or MSI) at its pinned version",
)
class InstallSoftware(WindowsSoftwareTask):
    """Install software listed in the workspace catalog (software/*.yml) with winget, or
    Chocolatey or its MSI where winget is absent (the first the entry lists and the host has).

    Check reads the installed version (winget list, Chocolatey's package record, the MSI's
    Uninstall key); apply installs silently, accepting the package's agreements (the catalog
    entry is the approval of its licence), at the pinned version if the catalog pins one; a
    restart the installer asks for is noted, never done. Verify reads the version again and
    runs the entry's verify command or checks its service.

    Example:
        itops fix software.install ws-042 -p name=firefox --ticket REQ-2001
        itops fix software.install ws-042 -p name=visio --ticket REQ-2003
    """

    def check(self, ctx: Context) -> Finding:
        self.resolve(ctx)
        found = self.version(ctx)
        facts = self.facts(found)
        if found is None:
            return Finding.problem(f"{self.label()}: not installed", **facts)
        if self.package.version and found != self.package.version:
            return Finding.problem(
                f"{self.label()}: {found} is installed, {self.package.version} is pinned", **facts
            )
        return Finding.healthy(f"{self.label()}: {found} is installed", **facts)

    def apply(self, ctx: Context) -> None:
        self.run(ctx, "install")
        ctx.note(f"installed {self.package.id} with {self.manager}")

    def verify(self, ctx: Context) -> Finding:
        found = self.version(ctx)
        facts = self.facts(found)
        if found is None:
            return Finding.problem(f"{self.label()}: not installed after the install", **facts)
        if self.package.version and found != self.package.version:
            return Finding.problem(
                f"{self.label()}: {found} is installed, not the pinned {self.package.version}",
                **facts,
            )
        return self.proven(found, answers(ctx, self.entry), facts)


def answers(ctx: Context, entry: Software) -> dict[str, Any]:
    check = entry.verify
    if check.command:
        done = read(ctx, Answer(check.command))
        return judge(check.command, done.exit, done.out, check.expect)
    if check.service:
        state = read_service(ctx, check.service)
        return {"ok": state.running, "detail": state.describe()}
    return {}


@software_task(
    "software.remove",
    {"windows"},
    "Remove catalog software (winget, Chocolatey or MSI); what Windows needs is refused",
)
class RemoveSoftware(WindowsSoftwareTask):
    """Remove software listed in the workspace catalog with the tool that would install it.

    Check refuses, before anything changes, packages Windows or the package tools need (a
    built-in list: App Installer, the Windows App Runtime, VC++ runtimes and libraries, .NET,
    Edge and WebView2, Chocolatey itself, updates); apply uninstalls silently; verify proves
    it is gone.

    Example:
        itops fix software.remove ws-042 -p name=vlc --ticket REQ-2002
    """

    def check(self, ctx: Context) -> Finding:
        self.resolve(ctx)
        pkg = self.package.id
        if any(fnmatch.fnmatch(pkg.lower(), p.lower()) for p in PROTECTED):
            raise ChangeRefused(
                f"refusing to remove {pkg} from {ctx.host.name}: Windows or its package tools "
                "need it",
                hint="nothing was changed",
            )
        found = self.version(ctx)
        facts = self.facts(found)
        if found is None:
            return Finding.healthy(f"{self.label()}: not installed", **facts)
        return Finding.problem(f"{self.label()}: {found} is installed", **facts)

    def apply(self, ctx: Context) -> None:
        self.run(ctx, "uninstall")
        ctx.note(f"removed {self.package.id} with {self.manager}")

    def verify(self, ctx: Context) -> Finding:
        found = self.version(ctx)
        facts = self.facts(found)
        if found is None:
            return Finding.healthy(f"{self.label()}: removed", **facts)
        return Finding.problem(f"{self.label()}: {found} is still installed", **facts)


@software_task(
    "software.list",
    {"windows"},
    "List installed programs (the Uninstall keys): name, version (read-only)",
    risky=False,
)
class ListSoftware(Remediation):
    """List the programs Windows lists as installed (the Uninstall registry keys, 64- and
    32-bit: what Apps & features shows), with name, version, publisher, and the catalog name
    of an MSI the catalog lists (by product code). Changes nothing: run it with --check.

    Example:
        itops fix software.list ws-042 --check --json
        itops fix software.list ws-042 -p 'match=*Firefox*' --check
    """

    match = Param(str, kind="text", pattern=r"[^\x00-\x1f]{1,128}",
                  help="only names matching this glob")  # fmt: skip
    listed = Param(bool, default=False, help="only software the catalog lists")

    def check(self, ctx: Context) -> Finding:
        found = read(ctx, InstalledPrograms(), timeout=120).programs
        by_code = {k.upper(): e for k, e in software.active().by_package("msi").items()}
        rows = []
        for p in sorted(found, key=lambda p: p.name.lower()):
            if self.match and not fnmatch.fnmatch(p.name.lower(), str(self.match).lower()):
                continue
            entry = by_code.get(p.key.upper())
            if self.listed and entry is None:
                continue
            row = {"name": p.name, "version": p.version, "publisher": p.publisher}
            if entry is not None:
                row["software"] = entry.name
            rows.append(row)
        shown = ", ".join(f"{r['name']} {r['version']}" for r in rows[:8])
        return Finding.healthy(
            f"{len(rows)} program(s)" + (f": {shown}" if rows else ""), packages=rows
        )

    def apply(self, ctx: Context) -> None:
        ctx.note("software.list only reads; run software.install or software.remove")
