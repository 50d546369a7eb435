"""What the Windows remediations share: JSON probes over PowerShell and Windows value shapes.

Windows tasks read state with PowerShell scripts that end in `ConvertTo-Json -Compress`, and parse
that here, so parsing copes once with Windows PowerShell 5.1's shapes: a one-element array arrives
as a bare object, dates as `\\/Date(1700000000000)\\/`, enums as numbers unless the script says
`.ToString()`. Values reach scripts only as quoted literals (`toolkit.remediation.quoting.ps_script`); the
patterns below refuse what cannot be a valid Windows name before anything connects.

A probe whose output a task parses is a `JsonFact` (a `toolkit.remediation.facts.Fact`): its
script, plus a pure `value()` of the decoded JSON, read with `read(ctx, fact)`.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, ClassVar, TypeVar

from toolkit.errors import CommandFailed, NotFound, ToolkitError, ValidationError
from toolkit.remediation.catalog import Context, Finding, Param, Remediation
from toolkit.remediation.facts import Fact, read
from toolkit.remediation.quoting import Command, ps_script
from toolkit.remediation.shapes import DNS_NAME as DNS_NAME  # shared shapes, re-exported
from toolkit.remediation.shapes import HOST_PORT as HOST_PORT
from toolkit.remediation.shapes import as_int as as_int
from toolkit.remediation.shapes import human_bytes as human_bytes
from toolkit.secrets.credentials import Secret
from toolkit.transports.base import CommandResult

# A local or UNC path: no wildcards (`*?` would expand), no `..` segments, no `"<>|`.
WINDOWS_PATH = (
    r"(?!.*(?:^|\\)\.\.(?:\\|$))"
    r"(?:[A-Za-z]:\\|\\\\[^\\/:*?\"<>|]+\\[^\\/:*?\"<>|]+\\?)"
    r"(?:[^\\/:*?\"<>|]+\\)*[^\\/:*?\"<>|]*"  # segments, then a last one: no nested choice
)
# Service names may hold almost anything but slashes (MSSQL$SQLEXPRESS is real); passed literally.
SERVICE_NAME = r"[^\\/\s][^\\/]{0,255}"
# Printer (queue) names: no backslash or comma except a \\server\ connection prefix.
PRINTER_NAME = r"(?:\\\\[A-Za-z0-9_.-]{1,63}\\)?[^\\,]{1,220}"
# Local/AD account names (sAMAccountName shape); an apostrophe (o'brien) is passed literally.
ACCOUNT_NAME = r"[A-Za-z0-9_][A-Za-z0-9_.' -]{0,63}"
KB_ID = r"[Kk][Bb][0-9]{6,8}"

_MS_DATE = re.compile(r"/Date\((-?\d+)(?:[+-]\d{4})?\)/")


class UnexpectedOutput(ToolkitError):
    """A Windows command answered with something other than the shape the task reads."""


def json_output(what: str, stdout: str, stderr: str, exit_code: int) -> Any:
    """The JSON a probe printed (None for no output); a non-zero exit is CommandFailed."""
    if exit_code != 0:
        # Named by what it does: the whole script would make an unreadable message.
        raise CommandFailed(what, exit_code, stderr or stdout)
    text = stdout.strip().lstrip("\ufeff")
    if not text:
        return None
    try:
        return json.loads(text)
    except json.JSONDecodeError:
        first = text.splitlines()[0][:120]
        raise UnexpectedOutput(f"{what}: expected JSON, got {first!r}") from None


def parse_json(result: CommandResult, what: str) -> Any:
    """The JSON a probe printed (None for no output); a non-zero exit is CommandFailed."""
    return json_output(what, result.stdout, result.stderr, result.exit_code)


T = TypeVar("T", covariant=True)


class JsonFact(Fact[T]):
    """A read-only PowerShell probe that ends in `ConvertTo-Json -Compress`: `parse` decodes its
    output (a non-zero exit is CommandFailed named by `what`) and `value` makes the typed result
    of the decoded JSON (None for no output), coping with PowerShell 5.1's shapes."""

    what: ClassVar[str] = "probe"

    def parse(self, stdout: str, stderr: str, exit_code: int) -> T:
        return self.value(json_output(self.what, stdout, stderr, exit_code))

    def value(self, data: Any) -> T:
        raise NotImplementedError


def read_json(ctx: Context, command: Command, what: str, timeout: float | None = None) -> Any:
    """Run a read-only probe (any step) and parse its JSON."""
    return parse_json(ctx.read(command, timeout=timeout), what)


def change_json(
    ctx: Context,
    command: Command,
    what: str,
    timeout: float | None = None,
    stdin: Secret | None = None,
) -> Any:
    """Run a change (apply only) that reports JSON, and parse it."""
    return parse_json(ctx.change(command, stdin=stdin, timeout=timeout, check=False), what)


def change(
    ctx: Context, command: Command, what: str, timeout: float | None = None
) -> CommandResult:
    """Run a change (apply only); a non-zero exit raises CommandFailed named `what`."""
    result = ctx.change(command, timeout=timeout, check=False)
    if result.exit_code != 0:
        raise CommandFailed(what, result.exit_code, result.stderr or result.stdout)
    return result


def as_list(value: Any) -> list[Any]:
    """PowerShell 5.1 gives one object where a list of one was meant, and nothing for none."""
    if value is None:
        return []
    return list(value) if isinstance(value, list) else [value]


def strings(value: Any) -> list[str]:
    """A list of strings from a JSON value that may be a bare string (PowerShell 5.1)."""
    return [str(item) for item in as_list(value) if item is not None]


def records(value: Any) -> list[Mapping[str, Any]]:
    return [item for item in as_list(value) if isinstance(item, Mapping)]


def ps_time(value: Any) -> datetime | None:
    """A date as PowerShell 5.1 (`/Date(ms)/`) or 7 (ISO 8601) serializes it, in UTC."""
    if not isinstance(value, str) or not value:
        return None
    m = _MS_DATE.fullmatch(value.strip("\\"))
    if m:
        return datetime.fromtimestamp(int(m.group(1)) / 1000, UTC)
    try:
        parsed = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        return None
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)


number = as_int  # the old name (workspace tasks use it), for one release


def text(value: Any) -> str:
    return "" if value is None else str(value)


# --------------------------------------------------------------------------- services

# Restarting these would cut the WinRM session itself or destabilise the host.
PROTECTED_SERVICES = frozenset(
    {"winrm", "rpcss", "rpceptmapper", "dcomlaunch", "lsm", "samss", "brokerinfrastructure"}
)

SERVICE_PROBE = r"""$ErrorActionPreference = 'Stop'
$name = {service}
$svc = @(Get-CimInstance -ClassName Win32_Service | Where-Object {{ $_.Name -eq $name -or $_.DisplayName -eq $name }})[0]
if (-not $svc) {{ ConvertTo-Json -Compress -InputObject @{{ found = $false }}; exit 0 }}
ConvertTo-Json -Compress -InputObject @{{ found = $true; name = [string]$svc.Name; display = [string]$svc.DisplayName; state = [string]$svc.State; start_mode = [string]$svc.StartMode; pid = [int]$svc.ProcessId }}"""

SERVICE_RESTART = r"""$ErrorActionPreference = 'Stop'
$name = {service}
$svc = @(Get-Service | Where-Object {{ $_.Name -eq $name }})[0]
if ($svc.Status -eq 'Running') {{ Restart-Service -InputObject $svc -Force }} else {{ Start-Service -InputObject $svc }}
$svc.WaitForStatus('Running', [TimeSpan]::FromSeconds({wait}))"""


@dataclass(frozen=True)
class ServiceState:
    name: str
    display: str
    state: str
    start_mode: str
    pid: int
    exists: bool = True  # False: the host has no such service

    @property
    def running(self) -> bool:
        return self.state == "Running"

    def describe(self) -> str:
        pid = f", pid {self.pid}" if self.pid else ""
        return f"{self.name} ({self.display}) is {self.state}{pid}, start mode {self.start_mode}"


@dataclass(frozen=True)
class WindowsService(JsonFact[ServiceState]):
    """A service by name or display name (Win32_Service); `exists` is False for none."""

    name: str
    what: ClassVar[str] = "service state"

    def command(self) -> Command:
        return ps_script(SERVICE_PROBE, service=self.name)

    def value(self, data: Any) -> ServiceState:
        if not isinstance(data, Mapping) or not data.get("found"):
            return ServiceState(self.name, "", "not-found", "", 0, exists=False)
        return ServiceState(
            name=text(data.get("name")),
            display=text(data.get("display")),
            state=text(data.get("state")),
            start_mode=text(data.get("start_mode")),
            pid=as_int(data.get("pid")),
        )


def read_service(ctx: Context, name: str) -> ServiceState:
    """The service by name or display name; NotFound if the host has none."""
    state = read(ctx, WindowsService(name))
    if not state.exists:
        raise NotFound(f"no service named {name!r} on {ctx.host.name}")
    return state


class RestartService(Remediation):
    """Restart (or start) one Windows service and prove it came back running.

    Check only reads the service state; apply restarts it (or starts it when stopped) and waits
    until it runs; verify reads the state again and reports the new process id.
    """

    only_if_stopped = Param(
        bool, default=False, help="leave a running service alone (default: restart it anyway)"
    )
    wait_seconds = Param(int, default=60, minimum=5, maximum=600, help="how long to wait for it")

    before: ServiceState
    """The service as check found it: apply restarts it, verify compares the process id."""

    def service_name(self, ctx: Context) -> str:
        raise NotImplementedError

    def check(self, ctx: Context) -> Finding:
        wanted = self.service_name(ctx)
        if wanted.lower() in PROTECTED_SERVICES:
            raise ValidationError(
                f"refusing to restart {wanted}: itops depends on it (or the host does)",
                hint="restart it from the console or with a reboot",
            )
        state = read_service(ctx, wanted)
        if state.name.lower() in PROTECTED_SERVICES:
            raise ValidationError(f"refusing to restart {state.name}: itops depends on it")
        self.before = state
        facts = {"service": state.name, "state": state.state, "pid": state.pid}
        if state.start_mode == "Disabled":
            raise ToolkitError(
                f"{state.describe()}: itops does not change a service's start type",
                hint="enable it deliberately first (Set-Service -StartupType) if it should run",
            )
        if state.running and self.only_if_stopped:
            return Finding.healthy(state.describe(), **facts)
        if state.running:
            return Finding.problem(f"{state.describe()}; restart requested", **facts)
        return Finding.problem(state.describe(), **facts)

    def apply(self, ctx: Context) -> None:
        change(
            ctx,
            ps_script(SERVICE_RESTART, service=self.before.name, wait=int(self.wait_seconds)),
            f"restarting {self.before.name}",
            timeout=float(self.wait_seconds) + 60,
        )

    def verify(self, ctx: Context) -> Finding:
        state = read_service(ctx, self.before.name)
        facts = {"service": state.name, "state": state.state, "pid": state.pid}
        if not state.running:
            return Finding.problem(f"{state.name} is {state.state} after the restart", **facts)
        if self.before.running and state.pid and state.pid == self.before.pid:
            ctx.note(f"{state.name} kept process id {state.pid} (shared service host)")
        return Finding.healthy(f"{state.name} running again (pid {state.pid})", **facts)
