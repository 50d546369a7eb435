"""What the Linux remediations share: value shapes, host facts, the service manager, one-shot rules.

Linux tasks read state with plain commands run through `/bin/sh` (C locale) and parse their text
here or in the task. Values reach commands only through `toolkit.remediation.quoting` (`cmd`, `script`); the
patterns below refuse what cannot be a valid name before anything connects. Commands that need
root run with `become=True` (`sudo -n`), never through a root login.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, ClassVar

from toolkit.clock import WeeklyWindow
from toolkit.errors import NotFound, ToolkitError, ValidationError
from toolkit.remediation.catalog import Context, Finding, Param, PastAction, Remediation
from toolkit.remediation.facts import Fact, read, succeeded
from toolkit.remediation.quoting import Command, cmd, script
from toolkit.remediation.shapes import DNS_NAME as DNS_NAME  # shared shapes, re-exported
from toolkit.remediation.shapes import HOST_PORT as HOST_PORT
from toolkit.remediation.shapes import as_int as as_int
from toolkit.remediation.shapes import human_bytes as human_bytes
from toolkit.transports.base import CommandResult

# Local account names (shadow's NAME_REGEX, plus upper case and dots some sites use).
LINUX_USER = r"[A-Za-z_][A-Za-z0-9_.-]{0,31}"
# Debian and RPM package names (no wildcards: they would select more than asked).
PACKAGE_NAME = r"[A-Za-z0-9_][A-Za-z0-9_.+-]{0,127}"
# systemd unit or SysV/OpenRC service names (no backslash escapes, no globs).
SERVICE_NAME = r"[A-Za-z0-9_][A-Za-z0-9@_.:-]{0,254}"
INTERFACE = r"[A-Za-z0-9_][A-Za-z0-9_.:@-]{0,14}"
ABSOLUTE_PATH = r"/.*"

# Services itops itself needs on the host (or the host needs to stay manageable).
PROTECTED_SERVICES = frozenset(
    {"ssh", "sshd", "dbus", "dbus-broker", "systemd-journald", "systemd-logind", "sudo"}
)


def output(result: CommandResult, what: str) -> str:
    """stdout of a read that must succeed; a non-zero exit is CommandFailed named by `what`."""
    return succeeded(what, result.stdout, result.stderr, result.exit_code)


def key_values(text: str, sep: str = "=") -> dict[str, str]:
    """`KEY=value` lines (systemctl show, probe scripts) → dict; later keys win."""
    out: dict[str, str] = {}
    for line in text.splitlines():
        key, found, value = line.partition(sep)
        if found and key.strip():
            out[key.strip()] = value.strip()
    return out


def host_var(ctx: Context, name: str, default: str) -> str:
    """A host's inventory variable that names a path or a service (validated: it reaches commands)."""
    value = str(ctx.host.var(name, default) or default)
    if "\x00" in value or "\n" in value:
        raise ValidationError(f"host variable {name} of {ctx.host.name} holds a control character")
    return value


def done_before(ctx: Context, **match: Any) -> PastAction | None:
    """The latest earlier `fixed` run of this task on this host under this ticket whose
    parameters include `match` — how a one-shot remediation (a reset, a restart, a flush) knows
    it already did its job, so running it twice leaves the second run already-ok."""
    for past in reversed(ctx.previous()):
        if past.outcome == "fixed" and all(past.params.get(k) == v for k, v in match.items()):
            return past
    return None


# --------------------------------------------------------------------------- service manager

MANAGER_PROBE = script(
    "if [ -d /run/systemd/system ]; then echo systemd; "
    "elif [ -x /sbin/rc-service ] || [ -x /usr/sbin/rc-service ] && [ -d /run/openrc ]; "
    "then echo openrc; "
    "elif [ -x /usr/sbin/service ] || [ -x /sbin/service ]; then echo sysv; "
    "else echo none; fi"
)


@dataclass(frozen=True)
class Manager:
    """The host's service manager: systemd, openrc, sysv, or none."""

    name: str


@dataclass(frozen=True)
class ServiceManager(Fact[Manager]):
    """Which service manager runs the host (probed from the host itself)."""

    def command(self) -> Command:
        return MANAGER_PROBE

    def parse(self, stdout: str, stderr: str, exit_code: int) -> Manager:
        found = succeeded("detecting the service manager", stdout, stderr, exit_code)
        return Manager(found.strip())


def service_manager(ctx: Context) -> str:
    """systemd, openrc or sysv (the `service` command over init scripts), from the host itself."""
    found = read(ctx, ServiceManager()).name
    if found not in ("systemd", "openrc", "sysv"):
        raise ToolkitError(f"{ctx.host.name} has no service manager itops knows (systemd, sysv)")
    return found


@dataclass(frozen=True)
class ServiceState:
    name: str
    manager: str
    running: bool
    state: str  # systemd: ActiveState/SubState; others: running / stopped / unknown
    pid: int = 0
    started: str = ""  # systemd: ExecMainStartTimestampMonotonic (changes on every start)
    enabled: str = ""  # systemd UnitFileState (enabled, disabled, masked, …)
    exists: bool = True  # False: the host has no such service

    def describe(self) -> str:
        pid = f", pid {self.pid}" if self.pid else ""
        return f"{self.name} is {self.state}{pid} ({self.manager})"


SYSTEMD_PROPERTIES = (
    "Id,LoadState,ActiveState,SubState,MainPID,UnitFileState,ExecMainStartTimestampMonotonic"
)


def _refuse_protected(name: str, asked: str | None = None) -> None:
    if name.removesuffix(".service").lower() in PROTECTED_SERVICES:
        shown = f"{asked} ({name})" if asked and asked != name else name
        raise ValidationError(
            f"refusing to restart {shown}: itops depends on it (or the host does)",
            hint="restart it from the console",
        )


@dataclass(frozen=True)
class SystemdService(Fact[ServiceState]):
    """A systemd unit's state (`systemctl show`); `exists` is False for an unknown unit."""

    name: str

    def command(self) -> Command:
        return cmd("systemctl", "show", self.name, f"--property={SYSTEMD_PROPERTIES}")

    def parse(self, stdout: str, stderr: str, exit_code: int) -> ServiceState:
        what = f"systemctl show {self.name}"
        shown = key_values(succeeded(what, stdout, stderr, exit_code))
        if shown.get("LoadState") in ("not-found", "", None):
            return ServiceState(self.name, "systemd", False, "not-found", exists=False)
        active = shown.get("ActiveState", "")
        return ServiceState(
            shown.get("Id", self.name),
            "systemd",
            active == "active",
            f"{active}/{shown.get('SubState', '')}",
            as_int(shown.get("MainPID")),
            shown.get("ExecMainStartTimestampMonotonic", ""),
            shown.get("UnitFileState", ""),
        )


@dataclass(frozen=True)
class Presence:
    found: bool


@dataclass(frozen=True)
class InitScript(Fact[Presence]):
    """Does a SysV init script (`manager` sysv) or an OpenRC service exist?"""

    name: str
    manager: str

    def command(self) -> Command:
        if self.manager == "sysv":
            return cmd("test", "-x", f"/etc/init.d/{self.name}")
        return cmd("rc-service", "--exists", self.name)

    def parse(self, stdout: str, stderr: str, exit_code: int) -> Presence:
        return Presence(exit_code == 0)


@dataclass(frozen=True)
class InitServiceStatus(Fact[ServiceState]):
    """A SysV or OpenRC service's state from its `status` exit code (LSB: 0 running,
    3 stopped), as root: some init scripts read root-only pid files."""

    name: str
    manager: str
    become: ClassVar[bool] = True

    def command(self) -> Command:
        tool = "rc-service" if self.manager == "openrc" else "service"
        return cmd(tool, self.name, "status")

    def parse(self, stdout: str, stderr: str, exit_code: int) -> ServiceState:
        state = {0: "running", 3: "stopped"}.get(exit_code, f"unknown (status {exit_code})")
        return ServiceState(self.name, self.manager, exit_code == 0, state)


def read_service(ctx: Context, name: str, manager: str) -> ServiceState:
    """A service's state; NotFound if the host has no such service."""
    if manager == "systemd":
        state = read(ctx, SystemdService(name))
    elif read(ctx, InitScript(name, manager)).found:
        state = read(ctx, InitServiceStatus(name, manager))
    else:
        state = ServiceState(name, manager, False, "not-found", exists=False)
    if not state.exists:
        raise NotFound(f"no service {name!r} on {ctx.host.name}")
    return state


def restart_command(state: ServiceState) -> Command:
    if state.manager == "systemd":
        return cmd("systemctl", "restart", state.name)
    if state.manager == "openrc":
        return cmd("rc-service", state.name, "restart")
    return cmd("service", state.name, "restart")


def wait_running(ctx: Context, before: ServiceState, seconds: int) -> ServiceState:
    """Re-read a service until it runs (and, under systemd, has started anew), or time is up."""
    waited = 0.0
    while True:
        state = read_service(ctx, before.name, before.manager)
        restarted = not before.started or state.started != before.started
        if (state.running and restarted) or waited >= seconds:
            return state
        ctx.read(cmd("sleep", "1"))
        waited += 1


class RestartLinuxService(Remediation):
    """Restart (or start) one service and prove it came back running.

    Check reads the state; apply restarts it through the host's service manager (systemd, or
    `service` over init scripts), as root; verify waits until it runs (under systemd: with a new
    start time). A restart is one-shot: once done under a ticket, a rerun is already-ok while
    the service runs. Masked services and the ones itops depends on (ssh, dbus, …) are refused.
    """

    only_if_stopped = Param(
        bool, default=False, help="leave a running service alone (default: restart it anyway)"
    )
    wait_seconds = Param(int, default=30, minimum=1, maximum=600, help="how long to wait for it")

    before: ServiceState
    """The service as check found it: apply restarts it, verify wants a new start time."""

    def service_name(self, ctx: Context) -> str:
        raise NotImplementedError

    def check(self, ctx: Context) -> Finding:
        wanted = self.service_name(ctx)
        _refuse_protected(wanted)
        state = read_service(ctx, wanted, service_manager(ctx))
        _refuse_protected(state.name, wanted)  # an alias of one (ssh → ssh.service, sshd)
        self.before = state
        facts: dict[str, Any] = {
            "service": state.name,
            "manager": state.manager,
            "state": state.state,
        }
        if state.pid:
            facts["pid"] = state.pid
        if state.enabled == "masked":
            raise ToolkitError(
                f"{state.describe()}: it is masked; itops does not unmask services",
                hint="unmask it deliberately first (systemctl unmask) if it should run",
            )
        if state.running and self.only_if_stopped:
            return Finding.healthy(state.describe(), **facts)
        if state.running:
            past = done_before(ctx, **self.identity())
            if past is not None:
                return Finding.healthy(
                    f"{state.describe()}; already restarted under {ctx.ticket} at {past.at[:19]}Z",
                    **facts,
                )
            return Finding.problem(f"{state.describe()}; restart requested", **facts)
        return Finding.problem(state.describe(), **facts)

    def identity(self) -> Mapping[str, Any]:
        """The parameters that make two runs the same restart (for the one-shot rule)."""
        return {}

    def apply(self, ctx: Context) -> None:
        ctx.change(restart_command(self.before), become=True, timeout=float(self.wait_seconds) + 90)
        ctx.note(f"restarted {self.before.name} ({self.before.manager})")

    def verify(self, ctx: Context) -> Finding:
        state = wait_running(ctx, self.before, int(self.wait_seconds))
        facts: dict[str, Any] = {"service": state.name, "state": state.state}
        if state.pid:
            facts["pid"] = state.pid
        if not state.running:
            return Finding.problem(f"{state.describe()} after the restart", **facts)
        if self.before.started and state.started == self.before.started:
            return Finding.problem(f"{state.name} runs, but was not restarted", **facts)
        return Finding.healthy(f"{state.describe()} again", **facts)


TimeWindow = WeeklyWindow  # the name workspace tasks know: reboot windows have the one syntax


@dataclass(frozen=True)
class Clock:
    """The host's local time: ISO weekday, minutes after midnight, and readable."""

    weekday: int
    minute: int
    shown: str


@dataclass(frozen=True)
class HostClock(Fact[Clock]):
    """The host's own local time (`date`), for windows in the host's time zone."""

    def command(self) -> Command:
        return cmd("date", "+%u %H %M %a %H:%M %Z")

    def parse(self, stdout: str, stderr: str, exit_code: int) -> Clock:
        text = succeeded("reading the host's clock", stdout, stderr, exit_code)
        day, hour, minute, *rest = text.split()
        return Clock(int(day), int(hour) * 60 + int(minute), " ".join(rest))


def host_clock(ctx: Context) -> tuple[int, int, str]:
    """(ISO weekday, minutes after midnight, readable) in the host's own local time."""
    clock = read(ctx, HostClock())
    return clock.weekday, clock.minute, clock.shown
