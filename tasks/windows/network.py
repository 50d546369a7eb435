"""Network fixes on Windows: DNS cache, DHCP lease, Winsock catalog, and a read-only diagnosis."""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, ClassVar

from toolkit.errors import ToolkitError
from toolkit.remediation.catalog import Context, Finding, Param, Remediation, remediation
from toolkit.remediation.facts import Fact, read
from toolkit.remediation.quoting import Command, ps_script
from toolkit.remediation.windows import (
    DNS_NAME,
    HOST_PORT,
    JsonFact,
    as_int,
    change,
    records,
    strings,
    text,
)

# --------------------------------------------------------------------------- DNS cache

DNS_CACHE = r"""$ErrorActionPreference = 'Stop'
$c = @(Get-DnsClientCache)
ConvertTo-Json -Compress -InputObject @{{ entries = $c.Count; failed = @($c | Where-Object {{ $_.Status -ne 0 }} | ForEach-Object {{ [string]$_.Entry }} | Select-Object -Unique -First 20) }}"""


@dataclass(frozen=True)
class Cache:
    entries: int
    failed: list[str]  # names whose failed lookup is cached (at most 20)


@dataclass(frozen=True)
class DnsCache(JsonFact[Cache]):
    """The DNS client cache's size and the failed lookups it holds (Get-DnsClientCache)."""

    what: ClassVar[str] = "DNS cache"

    def command(self) -> Command:
        return ps_script(DNS_CACHE)

    def value(self, data: Any) -> Cache:
        data = data if isinstance(data, Mapping) else {}
        return Cache(as_int(data.get("entries")), strings(data.get("failed")))


@remediation(
    "network.flush-dns",
    category="network",
    platforms={"windows"},
    summary="Flush the DNS client cache (ipconfig /flushdns)",
)
class FlushDns(Remediation):
    """Flush the DNS resolver cache, e.g. after a record changed or a lookup failure got cached.

    Check reports the cache size and the failed lookups it holds; apply runs `ipconfig /flushdns`;
    verify re-reads the cache: no failed lookup may remain (it refills with live answers at once).

    Example:
        itops fix network.flush-dns ws-042 --ticket INC-1042
        itops fix network.flush-dns office --check
    """

    def _read(self, ctx: Context) -> tuple[int, list[str]]:
        cache = read(ctx, DnsCache())
        return cache.entries, cache.failed

    def check(self, ctx: Context) -> Finding:
        entries, failed = self._read(ctx)
        if entries == 0:
            return Finding.healthy("the DNS client cache is empty")
        detail = f"; failed lookups cached: {', '.join(failed)}" if failed else ""
        return Finding.problem(
            f"flush requested: {entries} cached entries{detail}", entries=entries, failed=failed
        )

    def apply(self, ctx: Context) -> None:
        change(ctx, ps_script("ipconfig.exe /flushdns\nexit $LASTEXITCODE"), "ipconfig /flushdns")

    def verify(self, ctx: Context) -> Finding:
        entries, failed = self._read(ctx)
        if failed:
            return Finding.problem(f"failed lookups still cached: {', '.join(failed)}")
        return Finding.healthy(f"flushed; {entries} entries refilled since", entries=entries)


# --------------------------------------------------------------------------- DHCP

DHCP_STATE = r"""$ErrorActionPreference = 'Stop'
$only = {adapters}
$out = @()
foreach ($c in @(Get-CimInstance -ClassName Win32_NetworkAdapterConfiguration -Filter 'IPEnabled = TRUE' | Where-Object {{ $_.DHCPEnabled }})) {{
  $alias = [string](Get-NetAdapter -InterfaceIndex $c.InterfaceIndex -ErrorAction SilentlyContinue).Name
  if ($only.Count -and $only -notcontains $alias) {{ continue }}
  $lease = $null; if ($c.DHCPLeaseObtained) {{ $lease = $c.DHCPLeaseObtained.ToUniversalTime().ToString('o') }}
  $out += @{{ alias = $alias; ipv4 = @($c.IPAddress | Where-Object {{ $_ -match '^\d+\.\d+\.\d+\.\d+$' }}); dhcp_server = [string]$c.DHCPServer; lease_obtained = $lease }}
}}
ConvertTo-Json -Compress -Depth 4 -InputObject @{{ adapters = $out }}"""

DHCP_RENEW = r"""$names = {adapters}
$release = {release}
if ($names.Count) {{ foreach ($n in $names) {{ if ($release) {{ ipconfig.exe /release $n | Out-Null }}; ipconfig.exe /renew $n }} }}
else {{ if ($release) {{ ipconfig.exe /release | Out-Null }}; ipconfig.exe /renew }}
exit $LASTEXITCODE"""

ADAPTER = r"[A-Za-z0-9_][A-Za-z0-9 _().-]{0,63}"  # no wildcards: ipconfig would expand them


@dataclass(frozen=True)
class DhcpAdapter:
    alias: str
    ipv4: tuple[str, ...]
    dhcp_server: str
    lease_obtained: str | None  # UTC, ISO 8601; None if Windows shows no lease

    @property
    def usable(self) -> bool:
        """Has an address other than APIPA (169.254.x.x)."""
        return any(not ip.startswith("169.254.") for ip in self.ipv4)


@dataclass(frozen=True)
class DhcpAdapters(JsonFact[tuple[DhcpAdapter, ...]]):
    """The IP-enabled, DHCP-configured adapters (all, or those named), their IPv4 addresses and
    lease times."""

    names: tuple[str, ...] = ()
    what: ClassVar[str] = "DHCP adapters"

    def command(self) -> Command:
        return ps_script(DHCP_STATE, adapters=list(self.names))

    def value(self, data: Any) -> tuple[DhcpAdapter, ...]:
        found = records(data.get("adapters")) if isinstance(data, Mapping) else []
        return tuple(
            DhcpAdapter(
                text(a.get("alias")),
                tuple(strings(a.get("ipv4"))),
                text(a.get("dhcp_server")),
                None if a.get("lease_obtained") is None else text(a.get("lease_obtained")),
            )
            for a in found
        )


@remediation(
    "network.renew-dhcp",
    category="network",
    platforms={"windows"},
    summary="Release and renew DHCP leases (ipconfig /release, /renew)",
)
class RenewDhcp(Remediation):
    """Renew the DHCP lease of DHCP-configured adapters (all, or the one named).

    Release and renew run in one command on the host, so it completes even if the WinRM
    connection blips while the address is briefly gone; an adapter left with no address or an
    APIPA (169.254.x.x) address fails verify. Use release=false to renew only.

    Example:
        itops fix network.renew-dhcp ws-042 --ticket INC-1042
        itops fix network.renew-dhcp ws-042 -p adapter=Ethernet -p release=false --check
    """

    adapter = Param(str, kind="text", pattern=ADAPTER, help="adapter name (default: all DHCP ones)")
    release = Param(bool, default=True, help="release the lease before renewing")

    before: dict[str, str | None]
    """Each adapter's lease time as check found it: verify wants it changed."""

    def _read(self, ctx: Context) -> tuple[DhcpAdapter, ...]:
        return read(ctx, DhcpAdapters((self.adapter,) if self.adapter else ()))

    def check(self, ctx: Context) -> Finding:
        adapters = self._read(ctx)
        self.before = {a.alias: a.lease_obtained for a in adapters}
        if not adapters:
            raise ToolkitError(
                f"no DHCP-configured adapter{' named ' + repr(self.adapter) if self.adapter else ''} "
                f"on {ctx.host.name}"
            )
        shown = ", ".join(f"{a.alias} {'/'.join(a.ipv4) or 'no address'}" for a in adapters)
        broken = [a.alias for a in adapters if not a.usable]
        if broken:
            return Finding.problem(f"no usable DHCP address on {', '.join(broken)} ({shown})")
        return Finding.problem(f"renew requested: {shown}", adapters=list(self.before))

    def apply(self, ctx: Context) -> None:
        names = [self.adapter] if self.adapter else []
        change(
            ctx,
            ps_script(DHCP_RENEW, adapters=names, release=bool(self.release)),
            "ipconfig /release + /renew",
            timeout=180,
        )

    def verify(self, ctx: Context) -> Finding:
        adapters = self._read(ctx)
        broken = [a.alias for a in adapters if not a.usable]
        if broken:
            return Finding.problem(f"still no usable address on {', '.join(broken)}")
        renewed = [a.alias for a in adapters if a.lease_obtained != self.before.get(a.alias)]
        shown = ", ".join(f"{a.alias} {'/'.join(a.ipv4)}" for a in adapters)
        if not renewed:
            return Finding.problem(f"lease times unchanged: the renew did not happen ({shown})")
        return Finding.healthy(f"lease renewed: {shown}", renewed=renewed)


# --------------------------------------------------------------------------- Winsock

_DLL = re.compile(r"(\S.*?\.dll)\s*$", re.IGNORECASE)
_WINDOWS_DLL = re.compile(r"^(%SystemRoot%|%windir%|[A-Z]:\\Windows)\\(system32|syswow64)\\", re.I)


def winsock_providers(output: str) -> list[str]:
    """Provider DLL paths from `netsh winsock show catalog` (works whatever the display language)."""
    found: list[str] = []
    for line in output.splitlines():
        m = _DLL.search(line)
        if m:
            path = m.group(1).split(":", 1)[-1].strip() if ": " in m.group(1) else m.group(1)
            if path not in found:
                found.append(path)
    return found


def third_party(providers: list[str]) -> list[str]:
    return [p for p in providers if not _WINDOWS_DLL.match(p)]


@dataclass(frozen=True)
class WinsockCatalog(Fact[list[str]]):
    """The Winsock catalog's provider DLL paths (`netsh winsock show catalog`), in order."""

    def command(self) -> Command:
        return ps_script("netsh.exe winsock show catalog\nexit $LASTEXITCODE")

    def parse(self, stdout: str, stderr: str, exit_code: int) -> list[str]:
        if exit_code != 0:
            raise ToolkitError(f"netsh winsock show catalog exited {exit_code}")
        return winsock_providers(stdout)


@remediation(
    "network.winsock-reset",
    category="network",
    platforms={"windows"},
    summary="Reset the Winsock catalog (netsh winsock reset); needs a restart",
    disruptive=True,
)
class WinsockReset(Remediation):
    """Reset the Winsock catalog, removing third-party layered providers that break networking.

    The reset takes effect after a restart, which itops does not do: the outcome says a restart
    is required (and the note is in the ticket log). Verify re-reads the catalog.

    Example:
        itops fix network.winsock-reset ws-042 --ticket INC-1042
        itops fix network.winsock-reset ws-042 --check
    """

    reboot: bool
    """Whether netsh said the reset needs a restart (apply)."""

    def _providers(self, ctx: Context) -> list[str]:
        return read(ctx, WinsockCatalog())

    def check(self, ctx: Context) -> Finding:
        providers = self._providers(ctx)
        foreign = third_party(providers)
        if foreign:
            return Finding.problem(
                f"non-Windows Winsock providers: {', '.join(foreign)}", third_party=foreign
            )
        return Finding.problem(
            f"reset requested; the catalog has {len(providers)} Windows provider(s)",
            providers=len(providers),
        )

    def apply(self, ctx: Context) -> None:
        result = change(
            ctx, ps_script("netsh.exe winsock reset\nexit $LASTEXITCODE"), "netsh winsock reset"
        )
        self.reboot = "restart" in result.stdout.lower() or "reboot" in result.stdout.lower()
        ctx.note("Winsock catalog reset: restart the computer to complete it")

    def verify(self, ctx: Context) -> Finding:
        foreign = third_party(self._providers(ctx))
        if foreign:
            return Finding.problem(f"still listed: {', '.join(foreign)}", third_party=foreign)
        return Finding.healthy(
            "Winsock catalog reset; RESTART REQUIRED to complete it", reboot_required=True
        )


# --------------------------------------------------------------------------- diagnose

DIAGNOSE = r"""$ErrorActionPreference = 'Continue'
$name = {name}
$thost = {thost}
$tport = {tport}
$r = @{{}}
$r.adapters = @(Get-NetIPConfiguration | Where-Object {{ $_.IPv4DefaultGateway }} | ForEach-Object {{ @{{ alias = [string]$_.InterfaceAlias; ipv4 = @($_.IPv4Address | ForEach-Object {{ [string]$_.IPAddress }}); gateway = [string]@($_.IPv4DefaultGateway)[0].NextHop; dns = @($_.DNSServer | Where-Object {{ $_.AddressFamily -eq 2 }} | ForEach-Object {{ $_.ServerAddresses }}) }} }})
if ($r.adapters.Count) {{ $r.gateway_ping = [bool](Test-Connection -ComputerName $r.adapters[0].gateway -Count 1 -Quiet) }}
if ($name) {{ try {{ $r.resolved = @(Resolve-DnsName -Name $name -DnsOnly -ErrorAction Stop | Where-Object {{ $_.IPAddress }} | ForEach-Object {{ [string]$_.IPAddress }}) }} catch {{ $r.resolve_error = $_.Exception.Message }} }}
if ($thost) {{ $t = Test-NetConnection -ComputerName $thost -Port $tport -WarningAction SilentlyContinue; $r.tcp = @{{ ok = [bool]$t.TcpTestSucceeded; address = [string]$t.RemoteAddress }} }}
ConvertTo-Json -Compress -Depth 5 -InputObject $r"""


@dataclass(frozen=True)
class Diagnosis:
    """What the DIAGNOSE probe found; adapters and tcp as the host printed them (the record)."""

    adapters: tuple[Mapping[str, Any], ...]  # alias, ipv4, gateway, dns
    gateway_ping: bool | None  # None: not tested (no adapter with a gateway)
    resolved: list[str]
    resolve_error: str
    tcp: Any  # {ok, address} when a target was given, else None

    @property
    def tcp_open(self) -> bool:
        return isinstance(self.tcp, Mapping) and bool(self.tcp.get("ok"))


@dataclass(frozen=True)
class NetworkDiagnosis(JsonFact[Diagnosis]):
    """The default-route adapters, a gateway ping, a name resolved (`name`), a TCP connection
    (`thost`:`tport`): whatever is asked for, in one probe."""

    name: str = ""
    thost: str = ""
    tport: int = 0
    what: ClassVar[str] = "network diagnosis"

    def command(self) -> Command:
        return ps_script(DIAGNOSE, name=self.name, thost=self.thost, tport=self.tport)

    def value(self, data: Any) -> Diagnosis:
        data = data if isinstance(data, Mapping) else {}
        ping = data.get("gateway_ping")
        return Diagnosis(
            tuple(records(data.get("adapters"))),
            ping if isinstance(ping, bool) else None,
            strings(data.get("resolved")),
            text(data.get("resolve_error")),
            data.get("tcp"),
        )


@remediation(
    "network.diagnose",
    category="network",
    platforms={"windows"},
    summary="Diagnose connectivity: addresses, gateway, DNS resolution, a TCP port (read-only)",
)
class Diagnose(Remediation):
    """Collect what an L2 engineer asks first: the adapter with the default route, its address,
    gateway and DNS servers, whether the gateway answers, whether a name resolves
    (Resolve-DnsName) and whether a host:port accepts TCP (Test-NetConnection). Changes nothing:
    run it with --check; problems are reported as would-fix with the evidence in the facts.

    Example:
        itops fix network.diagnose ws-042 -p name=intranet.example.com -p target=mail.example.com:443 --check
    """

    name = Param(str, pattern=DNS_NAME, help="a DNS name to resolve")
    target = Param(str, pattern=HOST_PORT, help="host:port to test a TCP connection to")

    def check(self, ctx: Context) -> Finding:
        thost, tport = "", 0
        if self.target:
            thost, _, port = str(self.target).rpartition(":")
            thost, tport = thost.strip("[]"), int(port)
            if not 0 < tport < 65536:
                raise ToolkitError(f"port {tport} out of range")
        data = read(ctx, NetworkDiagnosis(self.name or "", thost, tport))
        adapters = data.adapters
        problems, seen = [], []
        if not adapters:
            problems.append("no adapter has a default gateway")
        for a in adapters:
            seen.append(
                f"{a.get('alias')} {'/'.join(strings(a.get('ipv4')))} gw {a.get('gateway')} "
                f"dns {','.join(strings(a.get('dns'))) or 'none'}"
            )
        if adapters and data.gateway_ping is False:
            seen.append("gateway does not answer ping (may be filtered)")
        if self.name:
            if data.resolved:
                seen.append(f"{self.name} → {', '.join(data.resolved)}")
            else:
                why = data.resolve_error or "no address"
                problems.append(f"{self.name} does not resolve: {why}")
        if self.target:
            if data.tcp_open:
                seen.append(f"TCP {self.target} open")
            else:
                problems.append(f"TCP {self.target} unreachable")
        facts = {
            "adapters": [dict(a) for a in adapters],
            "resolved": data.resolved,
            "tcp": data.tcp,
        }
        if problems:
            return Finding.problem("; ".join(problems + seen), **facts)
        return Finding.healthy("; ".join(seen), **facts)

    def apply(self, ctx: Context) -> None:
        ctx.note("network.diagnose only reads; see the findings")
