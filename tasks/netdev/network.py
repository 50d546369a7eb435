"""Network device fixes L2 does daily: facts, err-disabled/down access ports, access VLANs, and
configuration pushed from a file or template with rollback (netmiko devices)."""

from __future__ import annotations

import functools
import inspect
import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from toolkit.errors import ToolkitError, Unsupported, ValidationError
from toolkit.inventory import Host
from toolkit.remediation.catalog import Context, Finding, Param, Remediation, remediation
from toolkit.remediation.facts import Fact, read
from toolkit.remediation.network import config as netconfig
from toolkit.remediation.network.ops import (
    CONFIG_COMMANDS,
    STATUS_WORDS,
    errdisable_reason,
    facts_from,
    interface_config,
    port_state,
    push,
    running_config,
    shown,
    wait_for,
)
from toolkit.remediation.network.parse import Parsed, parse
from toolkit.remediation.quoting import (
    INTERFACE_EXAMPLES,
    Command,
    check_config_line,
    check_interface,
    check_vlan,
    cli,
    config,
    config_lines,
)
from toolkit.secrets.credentials import is_secret_key

# --------------------------------------------------------------------------- device facts

VERSION_COMMAND = {p: "show version" for p in CONFIG_COMMANDS} | {
    "huawei_vrp": "display version",
    "huawei": "display version",
}
INTERFACES_COMMAND = {
    "cisco_ios": "show interfaces status",
    "cisco_xe": "show interfaces status",
    "arista_eos": "show interfaces status",
    "cisco_nxos": "show interface status",
    "cisco_xr": "show ip interface brief",
    "cisco_asa": "show interface ip brief",
    "huawei_vrp": "display interface brief",
    "huawei": "display interface brief",
}
_VERSION_FALLBACK = {
    "serial": r"(?im)^[ \t]*(?:system )?serial number[ \t]*:[ \t]*(\S+)"
    r"|processor board id[ \t]+(\S+)",
    "version": r"(?im)^.*?(?:software image version|version)[ \t]*:?[ \t]*([0-9][\w.()\-]*)"
    r"|^[ \t]*junos[^\[\n]*\[([^\]\n]+)\]",
    "uptime": r"(?im)uptime(?: is|:)[ \t]*(.+?)[ \t]*$",
    "model": r"(?im)^[ \t]*(?:model|hardware)[ \t]*:[ \t]*(\S+)",
}


def _version_fallback(output: str) -> list[dict[str, str]]:
    """itops' own patterns for `show version`, for output no TextFSM template parses."""
    row = {}
    for key, pattern in _VERSION_FALLBACK.items():
        match = re.search(pattern, output)
        if match:
            row[key] = next(g for g in match.groups() if g)
    lines = [ln.strip() for ln in output.splitlines() if ln.strip()]
    if "model" not in row and lines and re.fullmatch(r"[\w.-]+", lines[0]):
        row["model"] = lines[0]  # EOS prints the model alone on its first line
    return [row] if row else []


def _interface_rows(output: str) -> list[dict[str, str]]:
    rows = []
    for line in output.splitlines():
        tokens = line.split()
        words = [t.lower().strip("*^") for t in tokens[1:]]
        status = next((w for w in words if w in STATUS_WORDS or w == "administratively"), None)
        if tokens and status and tokens[0].lower() not in ("port", "interface"):
            rows.append({"port": tokens[0], "status": status})
    return rows


@dataclass(frozen=True)
class Version:
    """`show version` parsed: the template's rows (or the fallback's) and, after them, itops'
    own patterns' row, since a template may leave fields empty that the patterns find."""

    parsed: Parsed
    rows: tuple[Mapping[str, Any], ...]


@dataclass(frozen=True)
class DeviceVersion(Fact[Version]):
    """Model, OS version, serial and uptime from `show version` (`display version`)."""

    platform: str

    def command(self) -> Command:
        return cli(VERSION_COMMAND[self.platform])

    def parse(self, stdout: str, stderr: str, exit_code: int) -> Version:
        command = self.command()
        text = shown(command, stdout, stderr, exit_code)
        parsed = parse(self.platform, command.text, text, _version_fallback)
        return Version(parsed, (*parsed.rows, *_version_fallback(text)))


@dataclass(frozen=True)
class PortCounts:
    """How many interfaces the status table lists, in total and per state."""

    counts: Mapping[str, int]
    source: str  # the parser that answered


@dataclass(frozen=True)
class InterfaceSummary(Fact[PortCounts]):
    """The interface status table counted by state (up, down, disabled, err-disabled, other)."""

    platform: str

    def command(self) -> Command:
        return cli(INTERFACES_COMMAND[self.platform])

    def parse(self, stdout: str, stderr: str, exit_code: int) -> PortCounts:
        parsed = parse(self.platform, self.command().text, stdout, _interface_rows)
        counts: dict[str, int] = {"total": len(parsed.rows)}
        for row in parsed.rows:
            word = str(row.get("status") or row.get("phy") or "").lower().strip("*^")
            state = "disabled" if word == "administratively" else STATUS_WORDS.get(word, "other")
            counts[state] = counts.get(state, 0) + 1
        return PortCounts(counts, parsed.source)


@remediation(
    "network.device-facts",
    category="network",
    platforms=set(CONFIG_COMMANDS),
    summary="Model, OS version, serial, uptime and an interface summary, parsed and recorded",
)
class DeviceFacts(Remediation):
    """Read a network device's facts (read-only; always already-ok, the facts are in the record).

    `show version` and the interface status table are parsed by TextFSM (ntc-templates) where a
    template matches; otherwise by itops' own patterns, and the record says which parser answered.

    Example:
        itops fix network.device-facts switches --check
        itops fix network.device-facts core-sw-01 --check --json
    """

    def check(self, ctx: Context) -> Finding:
        platform = ctx.host.platform
        version = read(ctx, DeviceVersion(platform))
        rows = version.rows
        facts: dict[str, Any] = {
            "hostname": facts_from(rows, "hostname") or ctx.host.name,
            "model": facts_from(rows, "hardware", "model", "platform"),
            "os_version": facts_from(
                rows, "version", "os", "image", "junos_version", "vrp_version"
            ),
            "serial": facts_from(rows, "serial", "serial_number"),
            "uptime": facts_from(rows, "uptime"),
            "parsed_by": {"version": version.parsed.source},
        }
        if version.parsed.note:
            facts["notes"] = [version.parsed.note]
        if platform in INTERFACES_COMMAND:
            interfaces = read(ctx, InterfaceSummary(platform))
            facts["parsed_by"]["interfaces"] = interfaces.source
            facts["interfaces"] = dict(interfaces.counts)
        summary = ", ".join(
            f"{k} {facts[k]}" for k in ("model", "os_version", "serial") if facts.get(k)
        )
        return Finding.healthy(summary or "facts recorded", **facts)

    def apply(self, ctx: Context) -> None:
        """Nothing to change: check always reports healthy."""


# --------------------------------------------------------------------------- access ports


def _interface(platform: str) -> Param:
    example = INTERFACE_EXAMPLES[platform].split(",")[0]
    return Param(
        str,
        required=True,
        help=f"the access port, as the device names it (e.g. {example})",
        check=functools.partial(check_interface, platform=platform),
    )


# One class per behaviour, registered once per switch family: a workspace task may replace one
# family's implementation and keep the others; each family's `interface` parameter names ports
# as that family's CLI does, and its docstring carries that family's examples.
FAMILIES = {
    "cisco_ios": frozenset({"cisco_ios", "cisco_xe"}),
    "arista_eos": frozenset({"arista_eos"}),
    "cisco_nxos": frozenset({"cisco_nxos"}),
}
_SUFFIX = {"cisco_ios": "Ios", "arista_eos": "Eos", "cisco_nxos": "Nxos"}


def _per_family(
    name: str, summary: str, base: type[Remediation], examples: Mapping[str, Sequence[str]]
) -> Callable[[str], Any]:
    """What registers `base` as task `name` for one switch family: a subclass with that family's
    port names and its `examples` in the docstring. Each family's class is then assigned to a
    module name of its own (`PortVlanIos = port_vlan("cisco_ios")`), the line the catalog names
    as its source. On a core device ([policy] core_groups) a second operator approves."""
    register = functools.partial(
        remediation, name, category="network", risky_on_core=True, summary=summary
    )

    def for_family(family: str) -> Any:
        lines = "".join(f"    {e}\n" for e in examples[family])
        doc = (inspect.getdoc(base) or "") + "\n\nExample:\n" + lines
        attrs: dict[str, Any] = {"__module__": base.__module__, "__doc__": doc}
        if "interface" in base.__annotations__:
            attrs["interface"] = _interface(family)
        cls = type(base.__name__ + _SUFFIX[family], (base,), attrs)
        return register(platforms=FAMILIES[family])(cls)

    return for_family


def _refuse_trunk(ctx: Context, section: Mapping[str, Any], interface: str) -> None:
    if any(line.startswith("switchport mode trunk") for line in section):
        raise ToolkitError(
            f"{interface} on {ctx.host.name} is a trunk port: refused",
            hint="these tasks change access ports only; a trunk carries every VLAN on it",
        )


STICKY_MAC = re.compile(r"switchport port-security mac-address sticky ([0-9a-fA-F.:]+)$")


class PortRecover(Remediation):
    """Recover an err-disabled or down access port: the reason is recorded (err-disable cause,
    admin down, no link), then `shutdown` / `no shutdown`; verify waits for the link. Trunk
    ports are refused. The configuration is saved only if it changed (an admin-down port) and
    only after the port came up; if it does not come up, the captured configuration is restored.

    A port err-disabled by port security (psecure-violation) that keeps sticky MAC addresses
    trips again as soon as it comes up: without clear_sticky the fix fails at once, before any
    change, saying to rerun with `-p clear_sticky=true` (rather than bouncing and waiting for a
    link that cannot hold); with it, the sticky MACs are cleared before the bounce (IOS; only
    for a port-security err-disable, never for another cause)."""

    clear_sticky = Param(
        bool,
        default=False,
        help="clear port-security sticky MACs before the bounce of a port-security err-disable (IOS)",
    )
    wait = Param(
        int,
        default=30,
        minimum=0,
        maximum=600,
        help="seconds to wait for the link after the bounce",
    )
    interface: Any
    reason: str = ""
    """Why check found the port down (its err-disable cause, admin down, no link): apply
    treats a port-security err-disable apart."""

    def check(self, ctx: Context) -> Finding:
        state = port_state(ctx, self.interface)
        if state.status == "up":
            return Finding.healthy(f"{self.interface} is up ({state.shown})", status="up")
        if state.status == "unknown":
            return Finding.problem(
                f"{self.interface}: the device shows no status for it", status="unknown"
            )
        reason = {
            "err-disabled": errdisable_reason(ctx, self.interface) or "reason not shown",
            "disabled": "administratively down",
        }.get(state.status, "no link")
        self.reason = reason
        return Finding.problem(
            f"{self.interface} is {state.shown} ({reason})",
            status=state.status,
            reason=reason,
            parsed_by=state.parser,
        )

    def apply(self, ctx: Context) -> None:
        state = port_state(ctx, self.interface)
        if state.status == "unknown":
            raise ToolkitError(f"{self.interface}: the device shows no status for it")
        if state.status == "up":
            return
        section = interface_config(ctx, self.interface)
        _refuse_trunk(ctx, section, self.interface)
        if state.status == "err-disabled" and self.reason == "psecure-violation":
            self._port_security(ctx, section)
        push(
            ctx,
            config("interface {intf}", " shutdown", " no shutdown", intf=self.interface),
            lambda: wait_for(lambda: self._up(ctx), self.wait),
            save=state.status == "disabled",  # only an admin-down port's configuration changed
        )

    def verify(self, ctx: Context) -> Finding:
        return self._up(ctx)

    def _port_security(self, ctx: Context, section: Mapping[str, Any]) -> None:
        """A port-security err-disable: clear the sticky MACs when asked, or fail at once
        (nothing changed, no wait) saying how, since a bounce alone would trip it again."""
        macs = [m.group(1) for line in section if (m := STICKY_MAC.match(line.strip()))]
        if not macs:
            return  # nothing sticky: the bounce may hold (the offending device may be gone)
        if not self.clear_sticky:
            raise ToolkitError(
                f"{self.interface} is err-disabled by port security (psecure-violation) and "
                f"keeps sticky MAC(s) {', '.join(macs)}: a bounce alone would trip it again; "
                "not bounced. Rerun with -p clear_sticky=true to clear them (after checking "
                "the device now on the port is the one allowed there)"
            )
        if ctx.host.platform not in ("cisco_ios", "cisco_xe"):
            raise Unsupported(
                f"clear_sticky is supported on Cisco IOS only ({ctx.host.name} is "
                f"{ctx.host.platform}): clear {self.interface}'s sticky MACs on the device"
            )
        ctx.change(cli("clear port-security sticky interface {intf}", intf=self.interface))
        ctx.note(f"cleared sticky MAC(s) {', '.join(macs)} on {self.interface}")

    def _up(self, ctx: Context) -> Finding:
        state = port_state(ctx, self.interface)
        if state.status == "up":
            return Finding.healthy(f"{self.interface} is up ({state.shown})", status="up")
        return Finding.problem(f"{self.interface} is still {state.shown}", status=state.status)


port_recover = _per_family(
    "network.port-recover",
    "Bring an err-disabled or down access port back: check why, bounce it, verify up",
    PortRecover,
    {
        "cisco_ios": (
            "itops fix network.port-recover access-sw-07 -p interface=Gi1/0/12 --ticket INC-2001",
            "itops fix network.port-recover sw-07 -p interface=Gi1/0/12 -p clear_sticky=true"
            " --ticket INC-2002",
        ),
        "arista_eos": (
            "itops fix network.port-recover leaf-03 -p interface=Ethernet12 --ticket INC-2003",
        ),
        "cisco_nxos": (
            "itops fix network.port-recover dc-sw-02 -p interface=Ethernet1/12 --check",
        ),
    },
)
PortRecoverIos = port_recover("cisco_ios")
PortRecoverEos = port_recover("arista_eos")
PortRecoverNxos = port_recover("cisco_nxos")


VLAN_COMMAND = {
    "cisco_ios": "show vlan brief",
    "cisco_xe": "show vlan brief",
    "cisco_nxos": "show vlan brief",
    "arista_eos": "show vlan",
}


def _vlan_rows(output: str) -> list[dict[str, str]]:
    return [
        {"vlan_id": line.split()[0]}
        for line in output.splitlines()
        if line.split() and line.split()[0].isdigit()
    ]


@dataclass(frozen=True)
class Vlans(Fact[frozenset[int]]):
    """The VLAN ids the switch has (`show vlan brief`)."""

    platform: str

    def command(self) -> Command:
        return cli(VLAN_COMMAND[self.platform])

    def parse(self, stdout: str, stderr: str, exit_code: int) -> frozenset[int]:
        command = self.command()
        text = shown(command, stdout, stderr, exit_code)
        rows = parse(self.platform, command.text, text, _vlan_rows).rows
        return frozenset(int(r["vlan_id"]) for r in rows if str(r.get("vlan_id", "")).isdigit())


class PortVlan(Remediation):
    """Put an access port in another VLAN (`switchport access vlan N`). The VLAN must already
    exist; trunk ports are refused. Saved only after the port is confirmed in the VLAN; rolled
    back to the captured configuration otherwise."""

    vlan = Param(int, required=True, check=check_vlan, help="access VLAN 1–4094 (must exist)")
    interface: Any

    def check(self, ctx: Context) -> Finding:
        section = interface_config(ctx, self.interface)
        current = self._access_vlan(section)
        exists = self.vlan in self._vlans(ctx)
        trunk = any(line.startswith("switchport mode trunk") for line in section)
        if current == self.vlan and not trunk:
            return Finding.healthy(f"{self.interface} is in VLAN {self.vlan}", vlan=current)
        summary = f"{self.interface} is in VLAN {current}, not {self.vlan}"
        if trunk:
            summary = f"{self.interface} is a trunk port"
        if not exists:
            summary += f"; VLAN {self.vlan} does not exist on this switch"
        return Finding.problem(summary, vlan=current, target=self.vlan, exists=exists, trunk=trunk)

    def apply(self, ctx: Context) -> None:
        _refuse_trunk(ctx, interface_config(ctx, self.interface), self.interface)
        if self.vlan not in self._vlans(ctx):
            raise ToolkitError(
                f"VLAN {self.vlan} does not exist on {ctx.host.name}: port not moved",
                hint="create the VLAN first; itops never creates one as a side effect",
            )
        push(
            ctx,
            config(
                "interface {intf}",
                " switchport access vlan {vlan}",
                intf=self.interface,
                vlan=self.vlan,
            ),
            lambda: self.verify(ctx),
        )

    def verify(self, ctx: Context) -> Finding:
        current = self._access_vlan(interface_config(ctx, self.interface))
        if current == self.vlan:
            return Finding.healthy(f"{self.interface} is in VLAN {current}", vlan=current)
        return Finding.problem(f"{self.interface} is in VLAN {current}", vlan=current)

    @staticmethod
    def _access_vlan(section: Mapping[str, Any]) -> int:
        for line in section:
            match = re.fullmatch(r"switchport access vlan (\d+)", line)
            if match:
                return int(match.group(1))
        return 1

    def _vlans(self, ctx: Context) -> frozenset[int]:
        return read(ctx, Vlans(ctx.host.platform))


port_vlan = _per_family(
    "network.port-vlan",
    "Move an access port to an existing VLAN and verify it",
    PortVlan,
    {
        "cisco_ios": (
            "itops fix network.port-vlan access-sw-07 -p interface=Gi1/0/12 -p vlan=30 --ticket INC-2010",
        ),
        "arista_eos": (
            "itops fix network.port-vlan leaf-03 -p interface=Ethernet12 -p vlan=30 --ticket INC-2011",
        ),
        "cisco_nxos": (
            "itops fix network.port-vlan dc-sw-02 -p interface=Ethernet1/12 -p vlan=30 --check",
        ),
    },
)
PortVlanIos = port_vlan("cisco_ios")
PortVlanEos = port_vlan("arista_eos")
PortVlanNxos = port_vlan("cisco_nxos")


# --------------------------------------------------------------------------- config apply


def _no_line_breaks(value: Any) -> Any:
    """Jinja2 finalize: a variable may not add lines (or a carriage return) to a configuration."""
    if isinstance(value, str) and ("\n" in value or "\r" in value):
        raise ValidationError(
            f"a template variable's value contains a line break: {value[:40]!r}",
            hint="a variable may fill part of a line, never add lines",
        )
    return value


def render(path: Path, host: Host) -> list[str]:
    """A configuration file's lines, or a Jinja2 template's (*.j2) rendered for one host.

    Undefined variables are errors (StrictUndefined); variables holding secrets are not offered."""
    try:
        text = path.read_bytes().decode("utf-8")  # not read_text(): it would hide a \r
    except UnicodeDecodeError:
        raise ValidationError(f"{path} is not UTF-8 text") from None
    except OSError as exc:
        raise ValidationError(f"cannot read {path}: {exc.strerror}") from None
    if path.suffix == ".j2":
        import jinja2
        from jinja2.sandbox import SandboxedEnvironment

        env = SandboxedEnvironment(
            undefined=jinja2.StrictUndefined,
            autoescape=False,
            keep_trailing_newline=True,
            finalize=_no_line_breaks,
        )
        variables = {k: v for k, v in host.vars.items() if not is_secret_key(k)}
        variables |= {
            "inventory_hostname": host.name,
            "platform": host.platform,
            "address": host.address,
        }
        try:
            text = env.from_string(text).render(variables)
        except jinja2.UndefinedError as exc:
            raise ValidationError(
                f"{path}: {exc.message} (host {host.name})",
                hint="define the variable for this host or group in the inventory",
            ) from None
        except jinja2.TemplateError as exc:
            raise ValidationError(f"{path}: template error: {exc}") from None
    if "\r" in text:
        check_config_line(text[: text.index("\r") + 1], f"{path}")
    lines = [
        ln.rstrip() for ln in text.split("\n") if ln.strip() and not ln.lstrip().startswith("!")
    ]
    return list(config_lines(lines))


class ConfigApply(Remediation):
    """Apply configuration from a file or a Jinja2 template rendered with the device's inventory
    variables (NAPALM's load → compare → commit): check shows the lines the running configuration
    lacks; apply captures the running configuration, pushes the lines (stopping at the first one
    the device rejects), confirms they are all present, then saves; if a line was rejected or is
    missing, it rolls back to the captured configuration and the outcome is failed. A template
    with an undefined variable, a line with a line break or a secret is refused before connecting."""

    file = Param(
        str,
        required=True,
        kind="path",
        help="configuration lines (indented under their section), or a Jinja2 template *.j2",
    )
    save = Param(bool, default=True, help="write to startup after the change is verified")

    def prepare(self, host: Host) -> None:
        self._lines(host)

    def plan(self, host: Host) -> str:
        """The rendered lines: what an approval of this push approves, per host."""
        return "\n".join(self._lines(host))

    def _lines(self, host: Host) -> list[str]:
        lines = render(Path(self.file).expanduser(), host)
        secret = netconfig.secret_lines(host.platform, lines)
        if secret:
            raise ValidationError(
                f"{self.file}: {len(secret)} line(s) carry a secret (e.g. "
                f"{netconfig.scrub_line(host.platform, secret[0]).strip()!r}); not pushed",
                hint="config-apply records every line it sends; set secrets with a dedicated task",
            )
        return lines

    def check(self, ctx: Context) -> Finding:
        missing = self._missing(ctx, self._lines(ctx.host))
        if not missing:
            return Finding.healthy("every line is already in the running configuration")
        added = sum(1 for ln in missing if ln.startswith("+"))
        return Finding.problem(
            f"{added} line(s) not in the running configuration", diff="\n".join(missing)
        )

    def apply(self, ctx: Context) -> None:
        lines = self._lines(ctx.host)
        push(ctx, lines, lambda: self._present(ctx, lines), save=bool(self.save))

    def verify(self, ctx: Context) -> Finding:
        return self._present(ctx, self._lines(ctx.host))

    def _present(self, ctx: Context, lines: Sequence[str]) -> Finding:
        missing = self._missing(ctx, lines)
        if missing:
            added = [ln[1:].strip() for ln in missing if ln.startswith("+")]
            return Finding.problem(
                f"{len(added)} line(s) missing after apply: {'; '.join(added[:3])}",
                diff="\n".join(missing),
            )
        return Finding.healthy(f"all {len(lines)} line(s) present in the running configuration")

    @staticmethod
    def _missing(ctx: Context, lines: Sequence[str]) -> list[str]:
        platform = ctx.host.platform
        running = netconfig.tree(platform, running_config(ctx))
        return netconfig.missing(netconfig.tree(platform, lines), running)


config_apply = _per_family(
    "network.config-apply",
    "Push configuration lines or a template: diff, apply, verify, save or roll back",
    ConfigApply,
    {
        "cisco_ios": (
            "itops fix network.config-apply access-sw-07 -p file=changes/ntp.cfg --check",
            "itops fix network.config-apply 'access-sw-*' -p file=templates/snmp-location.j2"
            " --ticket CHG-3001",
        ),
        "arista_eos": ("itops fix network.config-apply leaf-03 -p file=changes/ntp.cfg --check",),
        "cisco_nxos": ("itops fix network.config-apply dc-sw-02 -p file=changes/ntp.cfg --check",),
    },
)
ConfigApplyIos = config_apply("cisco_ios")
ConfigApplyEos = config_apply("arista_eos")
ConfigApplyNxos = config_apply("cisco_nxos")
