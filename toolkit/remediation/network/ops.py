"""Device-side steps the network remediations share: reading configuration and port state, and
pushing a change the NAPALM way (capture → push → confirm → save, or roll back).

Task modules are loaded by path and cannot import each other, so what several of them do lives here.
Every command is built by `toolkit.remediation.quoting` (`cli`, `config`); every read and change
goes through the step context, so it is recorded, masked and refused outside apply like any other
command. Each parsed read is a fact (`toolkit.remediation.facts`): the `show` command for the
device's platform plus a pure parser of its output (TextFSM first, the stated fallback next).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from toolkit.errors import DeviceRejected, ToolkitError
from toolkit.remediation.catalog import Context, Finding, network
from toolkit.remediation.facts import Fact, read
from toolkit.remediation.network import config as netconfig
from toolkit.remediation.network.parse import parse
from toolkit.remediation.quoting import Command, cli

# (running, startup) configuration commands; None where the platform has no startup configuration
CONFIG_COMMANDS: dict[str, tuple[str, str | None]] = {
    "cisco_ios": ("show running-config", "show startup-config"),
    "cisco_xe": ("show running-config", "show startup-config"),
    "cisco_nxos": ("show running-config", "show startup-config"),
    "arista_eos": ("show running-config", "show startup-config"),
    "cisco_asa": ("show running-config", "show startup-config"),
    "cisco_xr": ("show running-config", None),
    "juniper_junos": ("show configuration", None),
    "huawei_vrp": ("display current-configuration", "display saved-configuration"),
    "huawei": ("display current-configuration", "display saved-configuration"),
}
STATUS_COMMAND = {
    "cisco_ios": "show interfaces {intf} status",
    "cisco_xe": "show interfaces {intf} status",
    "arista_eos": "show interfaces {intf} status",
    "cisco_nxos": "show interface {intf} status",
}
ERRDISABLED_COMMAND = {
    "cisco_ios": "show interfaces status err-disabled",
    "cisco_xe": "show interfaces status err-disabled",
    "arista_eos": "show interfaces status errdisabled",
    "cisco_nxos": "show interface status err-disabled",
}
INTERFACE_CONFIG_COMMAND = {
    "cisco_ios": "show running-config interface {intf}",
    "cisco_xe": "show running-config interface {intf}",
    "arista_eos": "show running-config interfaces {intf}",
    "cisco_nxos": "show running-config interface {intf}",
}
# What `show interfaces status` says → up / down / disabled (admin down) / err-disabled
STATUS_WORDS = {
    "connected": "up",
    "up": "up",
    "notconnect": "down",
    "notconnec": "down",
    "down": "down",
    "inactive": "down",
    "sfpabsent": "down",
    "xcvrabsen": "down",
    "monitoring": "up",
    "disabled": "disabled",
    "err-disabled": "err-disabled",
    "errdisabled": "err-disabled",
}


@dataclass(frozen=True)
class PortState:
    interface: str
    status: str  # up | down | disabled | err-disabled | unknown
    shown: str  # the device's own word
    vlan: str
    parser: str


def _status_rows(output: str) -> list[dict[str, str]]:
    """Fallback for `show interfaces status`: the first token is the port, a status word follows."""
    rows = []
    for line in output.splitlines():
        tokens = line.split()
        at = next((i for i, t in enumerate(tokens[1:], 1) if t.lower() in STATUS_WORDS), None)
        if tokens and at is not None and tokens[0] != "Port":
            vlan = tokens[at + 1] if len(tokens) > at + 1 else ""
            rows.append({"port": tokens[0], "status": tokens[at], "vlan_id": vlan})
    return rows


def shown(command: Command, stdout: str, stderr: str, exit_code: int) -> str:
    """The output of a `show` that must succeed; a non-zero exit is DeviceRejected."""
    if exit_code != 0:
        raise DeviceRejected(f"{command} failed: {stderr}")
    return stdout


@dataclass(frozen=True)
class PortStatus(Fact[PortState]):
    """One port's line of `show interfaces <port> status`: up, down, disabled or err-disabled."""

    platform: str
    interface: str

    def command(self) -> Command:
        return cli(STATUS_COMMAND[self.platform], intf=self.interface)

    def parse(self, stdout: str, stderr: str, exit_code: int) -> PortState:
        command = self.command()
        text = shown(command, stdout, stderr, exit_code)
        parsed = parse(self.platform, command.text, text, _status_rows)
        row = parsed.first()
        if not row:
            return PortState(self.interface, "unknown", "", "", parsed.source)
        word = str(row.get("status", ""))
        return PortState(
            self.interface,
            STATUS_WORDS.get(word.lower(), "unknown"),
            word,
            str(row.get("vlan_id") or row.get("vlan", "")),
            parsed.source,
        )


def port_state(ctx: Context, interface: str) -> PortState:
    return read(ctx, PortStatus(ctx.host.platform, interface))


def _errdisabled_rows(output: str) -> list[dict[str, str]]:
    return [
        {"port": t[0], "reason": t[-1]}
        for t in (line.split() for line in output.splitlines())
        if len(t) >= 3 and t[0] != "Port" and "err" in " ".join(t).lower()
    ]


@dataclass(frozen=True)
class ErrDisabled:
    """Err-disabled ports and why, keyed by the short port name (`_short`)."""

    reasons: Mapping[str, str] = field(default_factory=dict)

    def reason(self, interface: str) -> str:
        return self.reasons.get(_short(interface), "")


@dataclass(frozen=True)
class ErrDisabledPorts(Fact[ErrDisabled]):
    """`show interfaces status err-disabled`: each err-disabled port's cause (psecure-violation,
    bpduguard, …); none if the device refuses the command."""

    platform: str

    def command(self) -> Command:
        return cli(ERRDISABLED_COMMAND[self.platform])

    def parse(self, stdout: str, stderr: str, exit_code: int) -> ErrDisabled:
        if exit_code != 0:
            return ErrDisabled()
        reasons: dict[str, str] = {}
        for row in parse(self.platform, self.command().text, stdout, _errdisabled_rows).rows:
            port = _short(str(row.get("port") or row.get("interface") or ""))
            reason = str(row.get("reason") or row.get("port_error") or "").strip()
            reasons.setdefault(port, reason)
        return ErrDisabled(reasons)


def errdisable_reason(ctx: Context, interface: str) -> str:
    """Why a port is err-disabled (psecure-violation, bpduguard, …), or "" if the device says not."""
    return read(ctx, ErrDisabledPorts(ctx.host.platform)).reason(interface)


def _short(name: str) -> str:
    """Gi1/0/1 and GigabitEthernet1/0/1 compare equal: first two letters and the numbers."""
    letters = "".join(ch for ch in name if ch.isalpha())[:2].lower()
    return letters + "".join(ch for ch in name if not ch.isalpha())


@dataclass(frozen=True)
class InterfaceConfig(Fact[netconfig.Tree]):
    """The interface's section of the running configuration (its child lines)."""

    platform: str
    interface: str

    def command(self) -> Command:
        return cli(INTERFACE_CONFIG_COMMAND[self.platform], intf=self.interface)

    def parse(self, stdout: str, stderr: str, exit_code: int) -> netconfig.Tree:
        tree = netconfig.tree(self.platform, shown(self.command(), stdout, stderr, exit_code))
        return next((v for k, v in tree.items() if k.lower().startswith("interface")), {})


def interface_config(ctx: Context, interface: str) -> netconfig.Tree:
    """The interface's section of the running configuration (its child lines)."""
    return read(ctx, InterfaceConfig(ctx.host.platform, interface))


@dataclass(frozen=True)
class RunningConfig(Fact[str]):
    """The device's running configuration as it prints it; empty output is an error."""

    platform: str

    def command(self) -> Command:
        return cli(CONFIG_COMMANDS[self.platform][0])

    def parse(self, stdout: str, stderr: str, exit_code: int) -> str:
        if exit_code != 0 or not stdout.strip():
            reason = stderr or "empty output"
            raise ToolkitError(
                f"cannot read the running configuration ({self.command()}): {reason}"
            )
        return stdout


def running_config(ctx: Context) -> str:
    return read(ctx, RunningConfig(ctx.host.platform))


@dataclass(frozen=True)
class StartupConfig(Fact[str]):
    """The configuration the device boots with, as it prints it; "" if it shows none (or has
    no startup configuration: `CONFIG_COMMANDS` names none for it)."""

    platform: str

    def command(self) -> Command:
        startup = CONFIG_COMMANDS[self.platform][1]
        if startup is None:
            raise ToolkitError(f"{self.platform} devices keep no startup configuration")
        return cli(startup)

    def parse(self, stdout: str, stderr: str, exit_code: int) -> str:
        return stdout if exit_code == 0 else ""


def wait_for(check: Callable[[], Finding], seconds: float, every: float = 2.0) -> Finding:
    """Re-run a read-only check until it is ok or `seconds` have passed; the last finding."""
    deadline = time.monotonic() + seconds
    finding = check()
    while not finding.ok and time.monotonic() < deadline:
        time.sleep(every)
        finding = check()
    return finding


def push(
    ctx: Context,
    lines: Sequence[str],
    confirm: Callable[[], Finding],
    *,
    save: bool = True,
) -> Finding:
    """Apply configuration lines the NAPALM way: capture the running configuration, push, confirm,
    then save — or, if the device rejected a line or the confirmation failed, roll back to the
    captured configuration (recorded as notes) and raise."""
    platform = ctx.host.platform
    device = network(ctx)
    before = netconfig.tree(platform, running_config(ctx))
    try:
        pushed = device.configure(lines, check=False)
        if pushed.exit_code != 0:
            raise DeviceRejected(pushed.stderr or "the device rejected the change")
        finding = confirm()
        if not finding.ok:
            raise DeviceRejected(f"the change did not take effect: {finding.summary}")
    except ToolkitError as exc:
        rolled = rollback(ctx, before)
        # the same kind (device-rejected, unreachable …), now saying what the rollback did
        kind = exc.__class__ if isinstance(exc, DeviceRejected) else ToolkitError
        raise kind(f"{exc.message}; {rolled}", hint=exc.hint) from None
    if save:
        device.save()
        ctx.note("running configuration saved to startup after the change was confirmed")
    return finding


def rollback(ctx: Context, before: netconfig.Tree) -> str:
    """Return the device to the captured configuration; says how that went (also as a note)."""
    platform = ctx.host.platform
    try:
        undo = netconfig.rollback_lines(before, netconfig.tree(platform, running_config(ctx)))
        if not undo:
            message = "nothing to roll back: the running configuration is as captured before apply"
        else:
            network(ctx).configure(undo, check=False)
            left = netconfig.rollback_lines(before, netconfig.tree(platform, running_config(ctx)))
            message = (
                f"rolled back {len(undo)} line(s): the running configuration matches the one "
                "captured before apply"
                if not left
                else f"rollback incomplete: {len(left)} line(s) still differ from the captured "
                "configuration — check the device"
            )
    except ToolkitError as exc:
        message = f"rollback failed: {exc.message} — check the device"
    ctx.note(message)
    return message


def facts_from(rows: Sequence[Mapping[str, Any]], *keys: str) -> str:
    """The first non-empty value among `keys`, row by row (lists joined)."""
    for row in rows:
        for key in keys:
            value = row.get(key)
            if isinstance(value, list):
                value = ", ".join(str(v) for v in value if v)
            if value:
                return str(value).strip()
    return ""
