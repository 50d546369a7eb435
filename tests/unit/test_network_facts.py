"""Typed reads of network devices, of Linux network state and of the file-backup tasks: each
fact's command and its parser alone, on recorded device and host output (no transport)."""

from __future__ import annotations

import json

import pytest

from tests.unit.test_facts import task_module
from tests.unit.test_linux_tasks import NSCD_STATS, RESOLVED_STATS, ROUTE, addr
from toolkit.errors import CommandFailed, DeviceRejected, ToolkitError
from toolkit.remediation.network import ops

netdev = task_module("network.device-facts", "cisco_ios")
linux_net = task_module("network.diagnose", "linux")
backup = task_module("backup.files", "linux")

# `show interfaces Gi1/0/1 status` and `show interfaces status err-disabled` of IOS 15.2.
STATUS = (
    "Port      Name               Status       Vlan       Duplex  Speed Type\n"
    "Gi1/0/1   uplink             connected    10         a-full a-1000 10/100/1000BaseTX\n"
)
ERRDISABLED = (
    "Port      Name               Status       Reason               Err-disabled Vlans\n"
    "Gi1/0/5                      err-disabled psecure-violation\n"
    "Gi1/0/7                      err-disabled bpduguard\n"
)
# `show version` of a Catalyst 2960-X (IOS 15.2), shortened.
IOS_VERSION = """\
Cisco IOS Software, C2960X Software (C2960X-UNIVERSALK9-M), Version 15.2(7)E2, RELEASE SOFTWARE (fc3)
Technical Support: http://www.cisco.com/techsupport
Copyright (c) 1986-2020 by Cisco Systems, Inc.
Compiled Tue 26-May-20 08:28 by prod_rel_team

ROM: Bootstrap program is C2960X boot loader
BOOTLDR: C2960X Boot Loader (C2960X-HBOOT-M) Version 15.2(7r)E, RELEASE SOFTWARE (fc1)

access-sw-07 uptime is 12 weeks, 3 days, 4 hours, 11 minutes
System returned to ROM by power-on
System image file is "flash:c2960x-universalk9-mz.152-7.E2.bin"

cisco WS-C2960X-48FPD-L (APM86XXX) processor (revision D0) with 524288K bytes of memory.
Processor board ID FOC1932X0AB
Last reset from power-on
1 Virtual Ethernet interface
52 Gigabit Ethernet interfaces

Configuration register is 0xF
"""
VLANS = "VLAN Name   Status    Ports\n1    default active    Fa0/1\n20   users   active\n"


# --------------------------------------------------------------------------- shared device reads


def test_port_status_by_textfsm_and_a_refused_command() -> None:
    fact = ops.PortStatus("cisco_ios", "Gi1/0/1")
    assert fact.command().text == "show interfaces Gi1/0/1 status"
    assert fact.parse(STATUS, "", 0) == ops.PortState("Gi1/0/1", "up", "connected", "10", "textfsm")
    assert fact.parse("", "", 0).status == "unknown"
    with pytest.raises(DeviceRejected, match=r"show interfaces Gi1/0/1 status failed: % Invalid"):
        fact.parse("", "% Invalid input detected at '^' marker.", 1)


def test_port_status_fallback_reads_an_err_disabled_port() -> None:
    text = "Port  Name  Status  Vlan\nEthernet12    err-disabled 30  full  1G  EbraTestPhyPort\n"
    state = ops.PortStatus("arista_eos", "Ethernet12").parse(text, "", 0)
    assert (state.status, state.shown) == ("err-disabled", "err-disabled")


def test_err_disabled_ports_give_each_ports_reason_by_any_name_form() -> None:
    fact = ops.ErrDisabledPorts("cisco_ios")
    assert fact.command().text == "show interfaces status err-disabled"
    found = fact.parse(ERRDISABLED, "", 0)
    assert found.reason("GigabitEthernet1/0/5") == "psecure-violation"
    assert found.reason("Gi1/0/7") == "bpduguard" and found.reason("Gi1/0/9") == ""
    assert fact.parse("", "% Invalid input", 1) == ops.ErrDisabled()


def test_interface_config_is_the_interfaces_section() -> None:
    fact = ops.InterfaceConfig("cisco_ios", "Gi1/0/2")
    assert fact.command().text == "show running-config interface Gi1/0/2"
    text = (
        "Building configuration...\n\nCurrent configuration : 96 bytes\n!\n"
        "interface GigabitEthernet1/0/2\n switchport access vlan 10\n switchport mode access\nend\n"
    )
    assert list(fact.parse(text, "", 0)) == ["switchport access vlan 10", "switchport mode access"]
    with pytest.raises(DeviceRejected):
        fact.parse("", "% Invalid input", 1)


def test_running_and_startup_configuration() -> None:
    running = ops.RunningConfig("juniper_junos")
    assert running.command().text == "show configuration"
    assert running.parse("version 20.4R3.8;\n", "", 0) == "version 20.4R3.8;\n"
    with pytest.raises(ToolkitError, match=r"\(show configuration\): empty output"):
        running.parse("  \n", "", 0)
    startup = ops.StartupConfig("huawei_vrp")
    assert startup.command().text == "display saved-configuration"
    assert startup.parse("", "Error: no saved configuration", 1) == ""
    with pytest.raises(ToolkitError, match="keep no startup configuration"):
        ops.StartupConfig("cisco_xr").command()


# --------------------------------------------------------------------------- netdev task reads


def test_device_version_by_template_with_the_own_patterns_row_after_it() -> None:
    fact = netdev.DeviceVersion("cisco_ios")
    assert fact.command().text == "show version"
    version = fact.parse(IOS_VERSION, "", 0)
    assert version.parsed.source == "textfsm"
    rows = version.rows
    assert ops.facts_from(rows, "hardware", "model") == "WS-C2960X-48FPD-L"
    assert ops.facts_from(rows, "version") == "15.2(7)E2"
    assert ops.facts_from(rows, "serial") == "FOC1932X0AB"
    assert ops.facts_from(rows, "uptime").startswith("12 weeks, 3 days")
    assert rows[-1] == netdev._version_fallback(IOS_VERSION)[0]


def test_device_version_falls_back_to_the_own_patterns_and_says_why() -> None:
    text = "cEOSLab\nHardware version: \nSerial number: ABC123\nSoftware image version: 4.26.0F\n"
    version = netdev.DeviceVersion("arista_eos").parse(text, "", 0)
    assert version.parsed.source == "fallback" and "template" in version.parsed.note
    assert ops.facts_from(version.rows, "serial") == "ABC123"
    assert ops.facts_from(version.rows, "model") == "cEOSLab"
    with pytest.raises(DeviceRejected):
        netdev.DeviceVersion("arista_eos").parse("", "% Invalid input", 1)


def test_interface_summary_counts_ports_by_state() -> None:
    text = STATUS + ERRDISABLED.splitlines(keepends=True)[1]
    summary = netdev.InterfaceSummary("cisco_ios").parse(text, "", 0)
    assert summary.counts == {"total": 2, "up": 1, "err-disabled": 1}


def test_vlans() -> None:
    fact = netdev.Vlans("arista_eos")
    assert fact.command().text == "show vlan"
    assert fact.parse(VLANS, "", 0) == frozenset({1, 20})
    with pytest.raises(DeviceRejected):
        fact.parse("", "% Invalid input", 1)


# --------------------------------------------------------------------------- Linux network


def test_network_tools() -> None:
    fact = linux_net.NetworkTools()
    tools = fact.parse("manager=nm\ncache=resolved\ncache=nscd\ndhclient=yes\n", "", 0)
    assert tools == linux_net.NetFacts(("nm",), ("resolved", "nscd"), True)
    with pytest.raises(CommandFailed, match="reading the network facts"):
        fact.parse("", "sh: 1: syntax error", 2)


def test_ipv4_addresses_leave_loopback_out_and_a_missing_interface_is_said() -> None:
    links = json.loads(addr("enp3s0", "192.168.1.23", "10.0.0.5"))
    links.insert(0, {"ifname": "lo", "flags": ["LOOPBACK", "UP"], "addr_info": []})
    fact = linux_net.Ipv4Addresses()
    assert fact.command().text == "ip -j -4 addr show"
    found = fact.parse(json.dumps(links), "", 0)
    assert found.by_interface == {"enp3s0": ["192.168.1.23", "10.0.0.5"]}
    one = linux_net.Ipv4Addresses("eth9")
    assert one.command().text == "ip -j -4 addr show dev eth9"
    assert not one.parse("", 'Device "eth9" does not exist.', 1).exists
    with pytest.raises(ToolkitError, match="ip addr exited 255"):
        fact.parse("", "", 255)


def test_default_routes() -> None:
    fact = linux_net.DefaultRoutes()
    assert fact.parse(ROUTE, "", 0)[0]["dev"] == "enp3s0"
    assert fact.parse("", "", 0) == [] and fact.parse(ROUTE, "", 1) == []


def test_dns_cache_sizes() -> None:
    resolved, nscd = linux_net.ResolvedCacheSize(), linux_net.NscdHostsCacheSize()
    assert resolved.parse(RESOLVED_STATS.format(n=42), "", 0) == 42
    assert nscd.become and nscd.parse(NSCD_STATS.format(n=7), "", 0) == 7
    assert resolved.parse("resolvectl: command not found", "", 127) == -1


@pytest.mark.parametrize(
    ("tool", "stdout", "state"),
    [
        ("nm", "connected\n", "connected"),
        ("nm", "", "unknown"),
        (
            "networkd",
            "  1 lo     loopback carrier   unmanaged\n  2 enp3s0 ether    routable   configured\n",
            "routable",
        ),
        ("networkd", "  2 enp3s0 ether    no-carrier configuring\n", "no-carrier"),
        ("networkd", "", "none"),
    ],
)
def test_manager_state(tool: str, stdout: str, state: str) -> None:
    assert linux_net.ManagerState(tool).parse(stdout, "", 0) == state


def test_diagnosis_reads() -> None:
    assert linux_net.NameServers().parse("192.168.1.1\n10.0.0.2\n", "", 0) == [
        "192.168.1.1",
        "10.0.0.2",
    ]
    ping = linux_net.GatewayAnswers("192.168.1.1")
    assert "ping -c 1 -W 2 192.168.1.1" in ping.command().text
    assert [ping.parse(a, "", 0) for a in ("ok\n", "no\n", "unknown\n")] == [True, False, None]
    ahosts = "10.1.2.3        STREAM intranet.example.com\n10.1.2.3        DGRAM\n"
    resolve = linux_net.Resolve("intranet.example.com")
    assert resolve.parse(ahosts, "", 0) == linux_net.Resolution(["10.1.2.3"], 0)
    assert resolve.parse("", "", 2) == linux_net.Resolution([], 2)
    tcp = linux_net.TcpConnect("mail.example.com", 443)
    assert tcp.command().text.endswith("else exit 3; fi")
    assert [tcp.parse("", "", rc) for rc in (0, 1, 124, 3)] == [
        "open",
        "unreachable",
        "unreachable",
        "untested",
    ]


# --------------------------------------------------------------------------- file backups


def test_tree_hashes_are_by_absolute_path_and_must_succeed() -> None:
    digest = "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"
    fact = backup.TreeHashes(("/home/jdoe/Documents",))
    assert fact.become and "find ./home/jdoe/Documents -type f -print0" in fact.command().text
    text = f"{digest}  ./home/jdoe/Documents/a b.txt\0{digest}  ./home/jdoe/Documents/n\nl\0"
    assert fact.parse(text, "", 0) == {
        "/home/jdoe/Documents/a b.txt": digest,
        "/home/jdoe/Documents/n\nl": digest,
    }
    with pytest.raises(CommandFailed, match="hashing the files"):
        fact.parse("", "find: './home/jdoe/Documents': Permission denied", 1)


def test_file_hashes_leave_a_missing_file_out() -> None:
    digest = "a" * 64
    fact = backup.FileHashes(("/etc/hosts", "/etc/gone"))
    assert fact.command().text == "sha256sum -z -- /etc/hosts /etc/gone"
    found = fact.parse(f"{digest}  /etc/hosts\0", "sha256sum: /etc/gone: No such file", 1)
    assert found == {"/etc/hosts": digest}


def test_backup_probes() -> None:
    assert backup.Exists("/srv/www").parse("", "", 0) is True
    assert backup.Exists("/srv/www").parse("", "", 1) is False
    assert backup.HasZstd().parse("", "", 127) is False
    digest = "b" * 64
    assert backup.FileSha256("/tmp/itops-backup.x").parse(f"{digest}  /tmp/x\n", "", 0) == digest
    with pytest.raises(CommandFailed, match="sha256sum"):
        backup.FileSha256("/tmp/itops-backup.x").parse("", "No such file", 1)
    guard = backup.LinkFree("/home/jdoe/Documents/report.odt")
    assert guard.become and guard.parse("", "", 0) is None
    why = "/home/jdoe/Documents resolves to /etc/profile.d\n"
    assert guard.parse("", why, 3) == "/home/jdoe/Documents resolves to /etc/profile.d"
