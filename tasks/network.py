"""Network fixes on Linux: DNS cache, DHCP lease, the network service, and a read-only diagnosis.

Which tools a host has decides the commands: systemd-resolved or nscd for the DNS cache,
NetworkManager, systemd-networkd or dhclient for DHCP, NetworkManager or systemd-networkd for a
restart. The tools come from the host in one read (`NetworkTools`); every parsed read is a fact
(`toolkit.remediation.facts`).
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from typing import Any, ClassVar

from toolkit.errors import ToolkitError
from toolkit.remediation.catalog import Context, Finding, Param, Remediation, remediation
from toolkit.remediation.facts import Fact, read, succeeded
from toolkit.remediation.linux import DNS_NAME, HOST_PORT, INTERFACE, as_int, done_before
from toolkit.remediation.quoting import Command, cmd, script

NETWORK_FACTS = script(
    "if [ -d /run/systemd/system ]; then "
    "systemctl is-active --quiet NetworkManager && echo manager=nm; "
    "systemctl is-active --quiet systemd-networkd && echo manager=networkd; "
    "systemctl is-active --quiet systemd-resolved && echo cache=resolved; "
    "elif command -v nmcli >/dev/null 2>&1 && nmcli -t -f RUNNING general 2>/dev/null "
    "| grep -q '^running$'; then echo manager=nm; fi; "
    "pgrep -x nscd >/dev/null 2>&1 && echo cache=nscd; "
    "if [ -x /sbin/dhclient ] || [ -x /usr/sbin/dhclient ]; then echo dhclient=yes; fi; true"
)


@dataclass(frozen=True)
class NetFacts:
    managers: tuple[str, ...]  # nm, networkd
    caches: tuple[str, ...]  # resolved, nscd
    dhclient: bool


@dataclass(frozen=True)
class NetworkTools(Fact[NetFacts]):
    """Which network managers and DNS caches run on the host, and whether it has dhclient."""

    def command(self) -> Command:
        return NETWORK_FACTS

    def parse(self, stdout: str, stderr: str, exit_code: int) -> NetFacts:
        text = succeeded("reading the network facts", stdout, stderr, exit_code)
        pairs = [line.partition("=") for line in text.splitlines()]
        return NetFacts(
            tuple(v for k, _, v in pairs if k == "manager"),
            tuple(v for k, _, v in pairs if k == "cache"),
            any(k == "dhclient" for k, _, _ in pairs),
        )


def read_facts(ctx: Context) -> NetFacts:
    return read(ctx, NetworkTools())


@dataclass(frozen=True)
class Addresses:
    by_interface: dict[str, list[str]]  # interface → its IPv4 addresses, loopback left out
    exists: bool = True  # False: the host has no interface of the name asked for


@dataclass(frozen=True)
class Ipv4Addresses(Fact[Addresses]):
    """Every interface's IPv4 addresses (or just `interface`'s), from `ip -j -4 addr`."""

    interface: str | None = None

    def command(self) -> Command:
        extra = ["dev", self.interface] if self.interface else []
        return cmd("ip", "-j", "-4", "addr", "show", *extra)

    def parse(self, stdout: str, stderr: str, exit_code: int) -> Addresses:
        if exit_code != 0:
            if self.interface:
                return Addresses({}, exists=False)
            raise ToolkitError(f"ip addr exited {exit_code}")
        found: dict[str, list[str]] = {}
        for link in json.loads(stdout or "[]"):
            if "LOOPBACK" in link.get("flags", []):
                continue
            found[link.get("ifname", "?")] = [
                a["local"] for a in link.get("addr_info", []) if a.get("family") == "inet"
            ]
        return Addresses(found)


def ipv4_addresses(ctx: Context, interface: str | None = None) -> dict[str, list[str]]:
    """Interface → its IPv4 addresses (`ip -j -4 addr`), loopback left out."""
    found = read(ctx, Ipv4Addresses(interface))
    if not found.exists:
        raise ToolkitError(f"no interface {interface!r} on {ctx.host.name}")
    return found.by_interface


def usable(addresses: list[str]) -> bool:
    return any(not a.startswith("169.254.") for a in addresses)


@dataclass(frozen=True)
class DefaultRoutes(Fact[list[dict[str, Any]]]):
    """The IPv4 default routes (`ip -j -4 route show default`); none if `ip` fails."""

    def command(self) -> Command:
        return cmd("ip", "-j", "-4", "route", "show", "default")

    def parse(self, stdout: str, stderr: str, exit_code: int) -> list[dict[str, Any]]:
        return list(json.loads(stdout or "[]")) if exit_code == 0 else []


def default_routes(ctx: Context) -> list[dict[str, Any]]:
    return read(ctx, DefaultRoutes())


# --------------------------------------------------------------------------- DNS cache

_RESOLVED_SIZE = re.compile(r"Current Cache Size:\s*(\d+)")
_NSCD_HOSTS = re.compile(r"hosts cache:.*?\n\s*(\d+)\s+current number of cached values", re.S)


@dataclass(frozen=True)
class ResolvedCacheSize(Fact[int]):
    """How many entries systemd-resolved's cache holds (`resolvectl statistics`); -1 where the
    output does not say."""

    def command(self) -> Command:
        return cmd("resolvectl", "statistics")

    def parse(self, stdout: str, stderr: str, exit_code: int) -> int:
        m = _RESOLVED_SIZE.search(stdout)
        return int(m.group(1)) if m else -1


@dataclass(frozen=True)
class NscdHostsCacheSize(Fact[int]):
    """How many entries nscd's hosts cache holds (`nscd -g`, as root); -1 where it does not say."""

    become: ClassVar[bool] = True

    def command(self) -> Command:
        return cmd("nscd", "-g")

    def parse(self, stdout: str, stderr: str, exit_code: int) -> int:
        m = _NSCD_HOSTS.search(stdout)
        return int(m.group(1)) if m else -1


CACHE_SIZES: dict[str, Fact[int]] = {"resolved": ResolvedCacheSize(), "nscd": NscdHostsCacheSize()}


@remediation(
    "network.flush-dns",
    category="network",
    platforms={"linux"},
    summary="Flush the local DNS cache (systemd-resolved or nscd, whichever runs)",
)
class FlushDns(Remediation):
    """Flush the host's DNS cache, e.g. after a record changed or a failed lookup was cached:
    `resolvectl flush-caches` where systemd-resolved runs, `nscd -i hosts` where nscd runs. A
    host with neither caches nothing locally: already-ok. Check reads the cache size; verify
    reads it again (it must have been emptied). One-shot: a rerun under the same ticket is
    already-ok.

    Example:
        itops fix network.flush-dns ws-042 --ticket INC-1042
        itops fix network.flush-dns office --check
    """

    caches: tuple[str, ...]
    """The local DNS caches the host runs (resolved, nscd), found by check."""
    before: dict[str, int]
    """Each cache's size as check found it: verify wants it emptied."""

    def _sizes(self, ctx: Context, caches: tuple[str, ...]) -> dict[str, int]:
        return {c: read(ctx, fact) for c, fact in CACHE_SIZES.items() if c in caches}

    def check(self, ctx: Context) -> Finding:
        self.caches = read_facts(ctx).caches
        if not self.caches:
            return Finding.healthy("no local DNS cache runs (neither systemd-resolved nor nscd)")
        self.before = self._sizes(ctx, self.caches)
        shown = ", ".join(f"{k}: {v} entries" for k, v in self.before.items())
        past = done_before(ctx)
        if past is not None:
            return Finding.healthy(
                f"flushed under {ctx.ticket} at {past.at[:19]}Z ({shown})", caches=self.before
            )
        if all(v == 0 for v in self.before.values()):
            return Finding.healthy(f"the DNS cache is empty ({shown})", caches=self.before)
        return Finding.problem(f"flush requested ({shown})", caches=self.before)

    def apply(self, ctx: Context) -> None:
        if "resolved" in self.caches:
            ctx.change(cmd("resolvectl", "flush-caches"), become=True)
        if "nscd" in self.caches:
            ctx.change(cmd("nscd", "-i", "hosts"), become=True)

    def verify(self, ctx: Context) -> Finding:
        after = self._sizes(ctx, self.caches)
        kept = [k for k, v in after.items() if v > 0 and v >= self.before.get(k, 0)]
        shown = ", ".join(f"{k}: {v} entries" for k, v in after.items())
        if kept:
            return Finding.problem(f"not emptied: {shown}", caches=after)
        return Finding.healthy(f"flushed ({shown} since)", caches=after)


# --------------------------------------------------------------------------- DHCP


@remediation(
    "network.renew-dhcp",
    category="network",
    platforms={"linux"},
    summary="Renew DHCP leases (NetworkManager, systemd-networkd or dhclient)",
)
class RenewDhcp(Remediation):
    """Renew the DHCP lease of an interface (default: the one with the default route) with the
    tool that manages it: NetworkManager (`nmcli device disconnect` + `connect`, or `reapply`
    with release=false), systemd-networkd (`networkctl renew`) or dhclient (`dhclient -r` then
    `dhclient`). Release and renew run in one command on the host, so it completes even if the
    session blips. Verify: the interface has a usable IPv4 address again (not 169.254.x.x).

    Example:
        itops fix network.renew-dhcp ws-042 --ticket INC-1042
        itops fix network.renew-dhcp ws-042 -p adapter=enp3s0 -p release=false --check
    """

    adapter = Param(str, pattern=INTERFACE, help="interface (default: the default-route one)")
    release = Param(bool, default=True, help="release the lease before renewing")

    tool: str
    """The DHCP client check found managing the host: nm, networkd or dhclient."""
    interface: str
    """The interface check chose (the one named, or the default route's)."""

    def _interface(self, ctx: Context) -> str:
        if self.adapter:
            return str(self.adapter)
        routes = default_routes(ctx)
        if not routes or not re.fullmatch(INTERFACE, str(routes[0].get("dev", ""))):
            raise ToolkitError(
                f"{ctx.host.name} has no default route to tell the interface",
                hint="name it: -p adapter=…",
            )
        return str(routes[0]["dev"])

    def check(self, ctx: Context) -> Finding:
        facts = read_facts(ctx)
        if "nm" in facts.managers:
            self.tool = "nm"
        elif "networkd" in facts.managers:
            self.tool = "networkd"
        elif facts.dhclient:
            self.tool = "dhclient"
        else:
            raise ToolkitError(
                f"{ctx.host.name} has no DHCP client itops knows "
                "(NetworkManager, systemd-networkd, dhclient)"
            )
        self.interface = self._interface(ctx)
        addresses = ipv4_addresses(ctx, self.interface).get(self.interface, [])
        shown = f"{self.interface} {'/'.join(addresses) or 'no address'} ({self.tool})"
        if not usable(addresses):
            return Finding.problem(f"no usable DHCP address on {shown}", addresses=addresses)
        past = done_before(ctx, adapter=self.adapter)
        if past is not None:
            return Finding.healthy(
                f"renewed under {ctx.ticket} at {past.at[:19]}Z: {shown}", addresses=addresses
            )
        return Finding.problem(f"renew requested: {shown}", addresses=addresses)

    def apply(self, ctx: Context) -> None:
        i = self.interface
        if self.tool == "nm":
            command = (
                script("nmcli device disconnect {i} && nmcli device connect {i}", i=i)
                if self.release
                else cmd("nmcli", "device", "reapply", i)
            )
        elif self.tool == "networkd":
            command = cmd("networkctl", "renew", i)
        else:
            command = (
                script("dhclient -r {i}; dhclient -1 {i}", i=i)
                if self.release
                else cmd("dhclient", "-1", i)
            )
        ctx.change(command, become=True, timeout=120)

    def verify(self, ctx: Context) -> Finding:
        for _ in range(30):
            addresses = ipv4_addresses(ctx, self.interface).get(self.interface, [])
            if usable(addresses):
                return Finding.healthy(
                    f"{self.interface} has {'/'.join(addresses)} again", addresses=addresses
                )
            ctx.read(cmd("sleep", "1"))
        return Finding.problem(f"{self.interface} still has no usable address")


# --------------------------------------------------------------------------- restart

NM_STATE = cmd("nmcli", "-t", "-f", "STATE", "general")


@dataclass(frozen=True)
class ManagerState(Fact[str]):
    """How the network manager sees the host: NetworkManager's general STATE (connected, …),
    or for systemd-networkd `routable` if any link is, else its links' states."""

    tool: str  # nm | networkd

    def command(self) -> Command:
        if self.tool == "nm":
            return NM_STATE
        return cmd("networkctl", "list", "--no-legend", "--no-pager")

    def parse(self, stdout: str, stderr: str, exit_code: int) -> str:
        if self.tool == "nm":
            return stdout.strip() or "unknown"
        states = [ln.split()[3] for ln in stdout.splitlines() if len(ln.split()) >= 5]
        return "routable" if "routable" in states else (",".join(sorted(set(states))) or "none")


@remediation(
    "network.restart",
    category="network",
    platforms={"linux"},
    summary="Restart NetworkManager or systemd-networkd and wait until the host is online",
    disruptive=True,
)
class RestartNetwork(Remediation):
    """Restart the network service that manages the host (NetworkManager or systemd-networkd),
    as root, when it is not online (NetworkManager not `connected`, or no default route) — or
    when force=true. Verify waits up to wait_seconds for NetworkManager to report `connected`
    (or networkd a routable link) and a default route. Disruptive: connections may drop for a
    moment; the command runs to completion on the host either way.

    Example:
        itops fix network.restart ws-042 --ticket INC-1042
        itops fix network.restart ws-042 -p force=true --ticket INC-1042
        itops fix network.restart office --check
    """

    force = Param(bool, default=False, help="restart even if the host looks online")
    wait_seconds = Param(int, default=60, minimum=5, maximum=600, help="how long to wait")

    tool: str
    """The network manager check found: nm or networkd."""

    def _state(self, ctx: Context) -> tuple[bool, str]:
        routes = default_routes(ctx)
        state = read(ctx, ManagerState(self.tool))
        online = bool(routes) and state in ("connected", "routable")
        return online, f"{state}, {'a' if routes else 'no'} default route"

    def check(self, ctx: Context) -> Finding:
        managers = read_facts(ctx).managers
        if not managers:
            raise ToolkitError(
                f"{ctx.host.name} runs neither NetworkManager nor systemd-networkd",
                hint="restart its network by its own means (ifupdown: service networking)",
            )
        self.tool = managers[0]
        online, shown = self._state(ctx)
        name = {"nm": "NetworkManager", "networkd": "systemd-networkd"}[self.tool]
        if online and not self.force:
            return Finding.healthy(f"{name}: {shown}", manager=name)
        return Finding.problem(
            f"{name}: {shown}" + ("; restart requested" if online else ""), manager=name
        )

    def apply(self, ctx: Context) -> None:
        unit = "NetworkManager" if self.tool == "nm" else "systemd-networkd"
        ctx.change(cmd("systemctl", "restart", unit), become=True, timeout=120)

    def verify(self, ctx: Context) -> Finding:
        shown = ""
        for _ in range(int(self.wait_seconds)):
            online, shown = self._state(ctx)
            if online:
                return Finding.healthy(f"online again: {shown}")
            ctx.read(cmd("sleep", "1"))
        return Finding.problem(f"not online after the restart: {shown}")


# --------------------------------------------------------------------------- diagnose

RESOLV_DNS = script("sed -n 's/^nameserver[[:space:]]*//p' /etc/resolv.conf 2>/dev/null")
GATEWAY_PING = (
    "if command -v ping >/dev/null 2>&1; then ping -c 1 -W 2 {gw} >/dev/null 2>&1 && echo ok "
    "|| echo no; else ip neigh show {gw} | grep -qE 'REACHABLE|STALE|DELAY|PROBE|PERMANENT' "
    "&& echo ok || echo unknown; fi"
)
TCP_CONNECT = (
    "if command -v bash >/dev/null 2>&1; then timeout 5 bash -c 'exec 3<>\"/dev/tcp/$0/$1\"' "
    "{host} {port} 2>/dev/null; elif command -v nc >/dev/null 2>&1; then nc -z -w 5 {host} {port}; "
    "else exit 3; fi"
)


def parse_ahosts(text: str) -> list[str]:
    """Addresses from `getent ahosts NAME` (one per line, STREAM/DGRAM/RAW repeats folded)."""
    seen: list[str] = []
    for line in text.splitlines():
        parts = line.split()
        if parts and parts[0] not in seen:
            seen.append(parts[0])
    return seen


@dataclass(frozen=True)
class NameServers(Fact[list[str]]):
    """The DNS servers /etc/resolv.conf names (none if it is missing)."""

    def command(self) -> Command:
        return RESOLV_DNS

    def parse(self, stdout: str, stderr: str, exit_code: int) -> list[str]:
        return stdout.split()


@dataclass(frozen=True)
class GatewayAnswers(Fact[bool | None]):
    """Does `gw` answer a ping (or, without ping, stand in the neighbour table)? None: unknown."""

    gw: str

    def command(self) -> Command:
        return script(GATEWAY_PING, gw=self.gw)

    def parse(self, stdout: str, stderr: str, exit_code: int) -> bool | None:
        return {"ok": True, "no": False}.get(stdout.strip())


@dataclass(frozen=True)
class Resolution:
    addresses: list[str]  # none if the name did not resolve
    exit_code: int  # getent's: 2 is "not found"


@dataclass(frozen=True)
class Resolve(Fact[Resolution]):
    """`name` resolved the way applications resolve it (`getent ahosts`)."""

    name: str

    def command(self) -> Command:
        return cmd("getent", "ahosts", self.name)

    def parse(self, stdout: str, stderr: str, exit_code: int) -> Resolution:
        return Resolution(parse_ahosts(stdout) if exit_code == 0 else [], exit_code)


@dataclass(frozen=True)
class TcpConnect(Fact[str]):
    """Does host:port accept a TCP connection (bash's /dev/tcp, or nc)? open, unreachable, or
    untested (neither tool on the host)."""

    host: str
    port: int

    def command(self) -> Command:
        return script(TCP_CONNECT, host=self.host, port=self.port)

    def parse(self, stdout: str, stderr: str, exit_code: int) -> str:
        return {0: "open", 3: "untested"}.get(exit_code, "unreachable")


@remediation(
    "network.diagnose",
    category="network",
    platforms={"linux"},
    summary="Diagnose connectivity: interfaces, routes, DNS resolution, gateway, a TCP port",
)
class Diagnose(Remediation):
    """Collect what an L2 engineer asks first, read-only: the interfaces and their IPv4
    addresses, the default route and gateway, the DNS servers, whether the gateway answers
    (ping, or the neighbour table without ping), whether a name resolves (getent ahosts, i.e.
    the way applications resolve) and whether a host:port accepts TCP connections. Run it with
    --check; problems are reported as would-fix with the evidence in the facts.

    Example:
        itops fix network.diagnose ws-042 -p name=intranet.example.com -p target=mail.example.com:443 --check
    """

    name = Param(str, pattern=DNS_NAME, help="a DNS name to resolve")
    target = Param(str, pattern=HOST_PORT, help="host:port to test a TCP connection to")

    def check(self, ctx: Context) -> Finding:
        interfaces = ipv4_addresses(ctx)
        routes = default_routes(ctx)
        dns = read(ctx, NameServers())
        problems, seen = [], []
        facts: dict[str, Any] = {
            "interfaces": interfaces,
            "default_routes": [{"gateway": r.get("gateway"), "dev": r.get("dev")} for r in routes],
            "dns_servers": dns,
        }
        seen.append(
            "; ".join(f"{i} {'/'.join(a) or 'no IPv4'}" for i, a in sorted(interfaces.items()))
            or "no interfaces"
        )
        if not routes:
            problems.append("no default route")
        else:
            gw = str(routes[0].get("gateway") or "")
            seen.append(f"default via {gw or 'link'} dev {routes[0].get('dev')}")
            if gw and re.fullmatch(r"[0-9a-fA-F:.]+", gw):
                answer = read(ctx, GatewayAnswers(gw))
                facts["gateway_reachable"] = answer
                if answer is False:
                    seen.append("gateway does not answer ping (may be filtered)")
        seen.append(f"dns {','.join(dns) or 'none'}")
        if self.name:
            found = read(ctx, Resolve(str(self.name)))
            resolved = found.addresses
            facts["resolved"] = resolved
            if resolved:
                seen.append(f"{self.name} → {', '.join(resolved)}")
            else:
                problems.append(f"{self.name} does not resolve (getent exit {found.exit_code})")
        if self.target:
            host, _, port = str(self.target).rpartition(":")
            host = host.strip("[]")
            if not 0 < as_int(port) < 65536:
                raise ToolkitError(f"port {port} out of range")
            tcp = read(ctx, TcpConnect(host, as_int(port)))
            facts["tcp"] = {"target": self.target, "open": tcp == "open"}
            if tcp == "open":
                seen.append(f"TCP {self.target} open")
            elif tcp == "untested":
                problems.append(f"TCP {self.target} untested: neither bash nor nc on the host")
            else:
                problems.append(f"TCP {self.target} unreachable")
        if problems:
            return Finding.problem("; ".join(problems + seen), **facts)
        return Finding.healthy("; ".join(seen), **facts)

    def apply(self, ctx: Context) -> None:
        ctx.note("network.diagnose only reads; see the findings")
