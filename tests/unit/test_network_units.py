"""Network building blocks: CLI quoting and validators, configuration sanitising, trees and
rollback, TextFSM parsing with fallback, error detection, and the masked netmiko session log."""

from __future__ import annotations

import os
import stat
from pathlib import Path
from typing import Any

import pytest

from toolkit.errors import HostKeyMismatch, HostKeyUnknown, Unreachable, ValidationError
from toolkit.inventory import make_host
from toolkit.remediation.network import config as netconfig
from toolkit.remediation.network.parse import parse
from toolkit.remediation.quoting import (
    INTERFACE_EXAMPLES,
    check_config_line,
    check_interface,
    check_vlan,
    cli,
    config,
    config_lines,
)
from toolkit.secrets.credentials import Redactor, Secret
from toolkit.transports import netdev  # the [netdev] extra: CI installs it, so no skip

# --------------------------------------------------------------------------- quoting

GOOD_INTERFACES = [(p, name) for p, ex in INTERFACE_EXAMPLES.items() for name in ex.split(", ")]
BAD_INTERFACES = [
    ("cisco_ios", "ge-0/0/1"),  # a Junos name on IOS
    ("cisco_ios", "Gi1/0/1; reload"),
    ("cisco_ios", "Gi1/0/1\nreload"),
    ("cisco_ios", "Gi 1/0/1"),
    ("arista_eos", "GigabitEthernet1/0/1"),
    ("cisco_nxos", "Gi1/0/1"),
    ("juniper_junos", "Ethernet1"),
    ("huawei_vrp", "ge-0/0/0"),
    ("cisco_ios", ""),
]


@pytest.mark.parametrize(("platform", "name"), GOOD_INTERFACES)
def test_interface_names_of_each_platform_are_accepted(platform: str, name: str) -> None:
    assert check_interface(name, platform) == name


@pytest.mark.parametrize(("platform", "name"), BAD_INTERFACES)
def test_interface_names_of_another_shape_are_refused(platform: str, name: str) -> None:
    with pytest.raises(ValidationError, match="interface|contains"):
        check_interface(name, platform)


@pytest.mark.parametrize("vlan", [0, 4095, -1, 5000, "abc", "", True])
def test_vlans_outside_1_to_4094_are_refused(vlan: Any) -> None:
    with pytest.raises(ValidationError):
        check_vlan(vlan)


@pytest.mark.parametrize("vlan", [1, 4094, "20"])
def test_vlans_inside_the_range_are_numbers(vlan: Any) -> None:
    assert check_vlan(vlan) == int(vlan)


@pytest.mark.parametrize(
    ("line", "what"),
    [
        ("description a\nreload", "a newline"),
        ("description a\rreload", "a carriage return"),
        ("description why?", "'?'"),
        ("description\ttab", "a tab"),
        ("x" * 2000, "longer"),
        ("   ", "empty"),
    ],
)
def test_config_lines_with_breaks_help_marks_or_no_text_are_refused(line: str, what: str) -> None:
    with pytest.raises(ValidationError, match=what):
        check_config_line(line)


def test_config_lines_keep_their_indentation_and_are_numbered_when_refused() -> None:
    assert config_lines(["interface Gi1", " description up"]) == (
        "interface Gi1",
        " description up",
    )
    with pytest.raises(ValidationError, match="config line 2"):
        config_lines(["interface Gi1", " description a\r"])


@pytest.mark.parametrize("value", ["a b", "x|include", "why?", "-x", "a!b", "a#b", "", "a\nb"])
def test_cli_placeholders_take_single_words_only(value: str) -> None:
    with pytest.raises(ValidationError):
        cli("show interfaces {intf} status", intf=value)
    with pytest.raises(ValidationError):
        config("interface {intf}", intf=value)


def test_cli_refuses_secrets_and_builds_network_commands() -> None:
    with pytest.raises(ValidationError, match="secret"):
        cli("show {x}", x=Secret("pw"))  # type: ignore[arg-type]
    command = cli("show interfaces {intf} status", intf="Gi1/0/1")
    assert (command.text, command.shell) == ("show interfaces Gi1/0/1 status", "netcli")
    assert config("interface {i}", " switchport access vlan {v}", i="Fa0/1", v=20) == (
        "interface Fa0/1",
        " switchport access vlan 20",
    )


# --------------------------------------------------------------------------- sanitising

SECRET_SAMPLES = {
    "cisco_ios": (
        "Building configuration...\nCurrent configuration : 1543 bytes\n"
        "! Last configuration change at 09:14:22 UTC Mon Mar 3 2025 by netops\n"
        "ntp clock-period 36028797018963968\n"
        "enable secret 5 $1$CANARYA\nusername bob password 0 CANARYB\n"
        "username amy privilege 15 secret 9 $9$CANARYC\nsnmp-server community CANARYD RO\n"
        "snmp-server host 10.1.1.1 version 2c CANARYE\ntacacs server T\n key 7 CANARYF\n"
        "key chain KC\n key 1\n  key-string 7 CANARYG\nline vty 0 4\n password 7 CANARYH\n"
        "router bgp 65000\n neighbor 10.0.0.2 password 7 CANARYI\n"
        "crypto isakmp key CANARYJ address 0.0.0.0\n"
        "interface Gi1\n ip ospf authentication-key 7 CANARYK\nhostname keepme\n"
        "tacacs-server host 10.1.1.1 key 7 CANARYL\nradius-server host 10.1.1.2 key CANARYM\n"
        "radius-server host 10.1.1.3 auth-port 1812 acct-port 1813 key 7 CANARYN\n"
        "interface Vlan10\n standby 1 authentication text CANARYO\n"
        " standby 2 authentication CANARYP\n standby 3 authentication md5 key-string CANARYQ\n"
        "ip ftp password CANARYR\nip ftp password 7 CANARYS\n"
        "ntp authentication-key 1 md5 CANARYT 7\n"
    ),
    "arista_eos": (
        "! Command: show running-config\n! device: sw (cEOSLab)\n"
        "username admin privilege 15 role network-admin secret sha512 $6$CANARYA\n"
        "enable password sha512 $6$CANARYB\nhostname keepme\n"
    ),
    "cisco_nxos": (
        "!Command: show running-config\n!Time: Tue Mar  4 10:00:00 2025\n"
        "username admin password 5 $5$CANARYA role network-admin\n"
        "snmp-server user admin network-admin auth md5 0xCANARYB priv 0xCANARYC localizedkey\n"
        "hostname keepme\n"
    ),
    "juniper_junos": (
        "## Last commit: 2025-03-03 09:14:22 UTC by netops\nsystem {\n    host-name keepme;\n"
        '    root-authentication {\n        encrypted-password "$6$CANARYA"; ## SECRET-DATA\n'
        "    }\n}\nsnmp {\n    community CANARYB {\n        authorization read-only;\n    }\n}\n"
        "set snmp community CANARYC authorization read-only\n"
        "policy-options {\n    community keep-members members 65000:1;\n}\n"
    ),
    "huawei_vrp": (
        "!Last configuration was updated at 2025-03-03 09:14:22 UTC\n sysname keepme\n"
        " local-user netops password irreversible-cipher $1a$CANARYA$\n"
        "snmp-agent community read cipher %^%#CANARYB%^%#\nsnmp-agent community write CANARYC\n"
    ),
}


@pytest.mark.parametrize("platform", sorted(SECRET_SAMPLES))
def test_sanitize_removes_every_secret_and_volatile_line_and_keeps_the_rest(platform: str) -> None:
    text = SECRET_SAMPLES[platform]
    clean = netconfig.sanitize(platform, text)
    assert "CANARY" not in clean, clean
    assert "keepme" in clean and netconfig.REMOVED in clean
    for volatile in ("Last co", "Current configuration", "clock-period", "Time:", "Command:"):
        assert volatile not in clean
    assert netconfig.sanitize(platform, clean) == clean  # stable: a re-backup is identical
    assert netconfig.sanitize(platform, text.replace("\n", "\r\n")) == clean


def test_non_secret_lines_that_look_alike_are_kept() -> None:
    text = (
        "service password-encryption\nkey chain KC\n key 1\n"
        "  send-community both\npolicy-options community keep-members members 65000:1\n"
    )
    assert netconfig.secret_lines("cisco_ios", text.splitlines()) == []
    assert "members 65000:1" in netconfig.sanitize("juniper_junos", "community X members 65000:1")


TREE_CASES = [
    # (before, after, rollback lines)
    (
        "interface Fa0/1\n switchport access vlan 10\n",
        "interface Fa0/1\n switchport access vlan 20\n description x\n",
        [
            "interface Fa0/1",
            " no switchport access vlan 20",
            " no description x",
            " switchport access vlan 10",
        ],
    ),
    ("vlan 20\n name users\n", "vlan 20\n name users\nvlan 30\n", ["no vlan 30"]),
    ("interface Fa0/2\n shutdown\n", "interface Fa0/2\n", ["interface Fa0/2", " shutdown"]),
    ("no ip http server\n", "ip http server\n", ["no ip http server"]),
    ("hostname a\n", "hostname a\n", []),
    (
        "router bgp 1\n address-family ipv4\n  network 10.0.0.0\n",
        "router bgp 1\n address-family ipv4\n  network 10.0.0.0\n  network 10.1.0.0\n",
        ["router bgp 1", " address-family ipv4", "  no network 10.1.0.0"],
    ),
]


@pytest.mark.parametrize(("before", "after", "expected"), TREE_CASES)
def test_rollback_lines_undo_the_difference_inside_each_section(
    before: str, after: str, expected: list[str]
) -> None:
    assert (
        netconfig.rollback_lines(
            netconfig.tree("cisco_ios", before), netconfig.tree("cisco_ios", after)
        )
        == expected
    )


def test_missing_lists_desired_lines_in_their_context_and_understands_no() -> None:
    running = netconfig.tree(
        "cisco_ios",
        "Current configuration : 9 bytes\nhostname a\ninterface Fa0/1\n shutdown\n!\nend\n",
    )
    desired = netconfig.tree(
        "cisco_ios",
        [
            "interface Fa0/1",
            " description x",
            " shutdown",
            "no ip http server",
            "hostname a",
            "vlan 5",
        ],
    )
    assert netconfig.missing(desired, running) == [" interface Fa0/1", "+ description x", "+vlan 5"]
    assert netconfig.missing(netconfig.tree("cisco_ios", ["no hostname a"]), running) == [
        "+no hostname a"
    ]


def test_diff_stat_counts_changed_lines() -> None:
    diff = netconfig.unified_diff("a\nb\n", "a\nc\nd\n", "old", "new")
    assert netconfig.diff_stat(diff) == (2, 1)


# --------------------------------------------------------------------------- parsing

STATUS = (
    "Port      Name               Status       Vlan       Duplex  Speed Type\n"
    "Gi1/0/1   uplink             connected    10         a-full a-1000 10/100/1000BaseTX\n"
)


def test_textfsm_parses_where_a_template_matches() -> None:
    parsed = parse("cisco_ios", "show interfaces Gi1/0/1 status", STATUS)
    assert parsed.source == "textfsm" and parsed.first()["status"] == "connected"


def test_a_failing_template_falls_back_and_says_why() -> None:
    parsed = parse(
        "arista_eos", "show version", "cEOSLab\nHardware version: \n", lambda o: [{"m": 1}]
    )
    assert parsed.source == "fallback" and parsed.rows == ({"m": 1},)
    assert "template" in parsed.note and "failed" in parsed.note


def test_no_template_and_no_fallback_is_an_empty_answer_with_a_reason() -> None:
    parsed = parse("juniper_junos", "show nothing-like-this", "x")
    assert parsed.source == "none" and parsed.rows == () and "no TextFSM template" in parsed.note


# --------------------------------------------------------------------------- transport pieces


@pytest.mark.parametrize(
    ("platform", "output", "failed"),
    [
        ("cisco_ios", "          ^\n% Invalid input detected at '^' marker.\n", True),
        ("cisco_ios", "% Incomplete command.\n", True),
        ("cisco_ios", '% Ambiguous command:  "sh i"\n', True),
        ("arista_eos", "% Invalid input (at token 1: 'bogus')\n", True),
        ("cisco_nxos", "% Invalid command at '^' marker.\n", True),
        ("juniper_junos", "syntax error, expecting <command>.\n", True),
        ("juniper_junos", "error: configuration check-out failed\n", True),
        ("huawei_vrp", "Error: Unrecognized command found at '^' position.\n", True),
        ("cisco_ios", "Interface Gi1 is up\n%LINK-3-UPDOWN is a log line, not an error\n", False),
        ("cisco_ios", "Building configuration...\n[OK]\n", False),
        ("juniper_junos", "Hostname: lab\nModel: ex4550\n", False),
    ],
)
def test_errors_are_read_from_the_output_per_platform(
    platform: str, output: str, failed: bool
) -> None:
    host = make_host("d", {"address": "127.0.0.1", "platform": platform}, (), "t")
    transport = netdev.NetdevTransport(host, _Conn({"show x": output}), _options())
    result = transport.run(cli("show x"))
    assert (result.exit_code == 1) is failed
    assert bool(result.stderr) is failed


def test_configure_stops_at_the_first_rejected_line_and_leaves_config_mode() -> None:
    conn = _Conn({"description x": "", "bogus": "% Invalid input detected at '^' marker."})
    host = make_host("d", {"address": "127.0.0.1", "platform": "cisco_ios"}, (), "t")
    transport = netdev.NetdevTransport(host, conn, _options())
    result = transport.configure(["interface Gi1", " description x", " bogus", " shutdown"])
    assert result.exit_code == 1 and "line 3 `bogus` rejected: % Invalid input" in result.stderr
    assert conn.sent == ["interface Gi1", " description x", " bogus"]  # never " shutdown"
    assert conn.left_config_mode


def test_a_session_that_drops_mid_push_is_unreachable_not_an_internal_error() -> None:
    from netmiko.exceptions import ReadException

    class Dropped(_Conn):
        def send_config_set(self, lines: list[str], **_: Any) -> str:
            raise ReadException("Channel stream closed by remote device.")

        def exit_config_mode(self) -> str:
            raise OSError("Socket is closed")

    host = make_host("d", {"address": "127.0.0.1", "platform": "cisco_ios"}, (), "t")
    transport = netdev.NetdevTransport(host, Dropped({}), _options())
    with pytest.raises(Unreachable, match="session lost"):
        transport.configure(["interface Gi1", " shutdown"])


def test_configure_records_secret_bearing_lines_scrubbed() -> None:
    # A rollback re-adds lines from the running config; what is recorded of them (the command
    # text, a rejected line) carries no secret.
    conn = _Conn({"neighbor 10.0.0.2 password 7 CANARYX": "% Invalid input detected"})
    host = make_host("d", {"address": "127.0.0.1", "platform": "cisco_ios"}, (), "t")
    transport = netdev.NetdevTransport(host, conn, _options())
    result = transport.configure(["router bgp 65000", " neighbor 10.0.0.2 password 7 CANARYX"])
    assert conn.sent[-1] == " neighbor 10.0.0.2 password 7 CANARYX"  # the device got the line
    assert "CANARYX" not in result.command + result.stderr  # (output: scrubbed as recorded)
    assert "CANARYX" not in transport.scrub(result.stdout)
    assert "password 7 <removed>" in result.command and "<removed>" in result.stderr


@pytest.mark.parametrize(
    ("message", "error"),
    [
        ("Host key for server '127.0.0.1' does not match: got 'AAAA'", HostKeyMismatch),
        ("Server '[127.0.0.1]:22' not found in known_hosts", HostKeyUnknown),
        ("TCP connection to device failed.", Unreachable),
    ],
)
def test_netmiko_connect_errors_become_typed_errors(message: str, error: type) -> None:
    host = make_host("d", {"address": "127.0.0.1", "platform": "cisco_ios"}, (), "t")
    assert type(netdev._connect_error(host, message)) is error


def test_the_session_log_masks_a_secret_split_across_two_reads(tmp_path: Path) -> None:
    secret = "Sw1tch-Secr3t-Value"
    log = netdev.MaskedSessionLog(tmp_path / "s" / "d.log", Redactor([secret]), "cisco_ios")
    log.open()
    log.write("sw#enable\nPassword: Sw1tch-Se")
    log.write("cr3t-Value\nsw#show run\nusername x secret 0 Other-Device-Secret\n")
    log.write("sw#partial line without newline Sw1tch")
    log.close()
    text = (tmp_path / "s" / "d.log").read_text()
    assert secret not in text and "Sw1tch-Se" not in text and "Other-Device-Secret" not in text
    assert "Password: ********" in text and "secret 0 <removed>" in text
    assert "partial line" in text
    assert stat.S_IMODE(os.stat(tmp_path / "s" / "d.log").st_mode) == 0o600


def test_a_full_session_log_is_rotated_when_a_session_opens(tmp_path: Path) -> None:
    log_path = tmp_path / "d.log"
    for generation in range(7):  # each "session" finds a full log and rotates it
        log_path.write_text(f"session {generation}\n")
        netdev.rotate(log_path, max_bytes=1, keep=3)
        assert not log_path.exists()
    kept = sorted(p.name for p in tmp_path.iterdir())
    assert kept == ["d.log.1", "d.log.2", "d.log.3"]
    assert [(tmp_path / n).read_text() for n in kept] == [
        "session 6\n",
        "session 5\n",
        "session 4\n",
    ], "newest first, the oldest dropped"
    small = tmp_path / "small.log"
    small.write_text("x")
    netdev.rotate(small, max_bytes=1024)
    assert small.read_text() == "x", "a log under the limit stays"


class _Conn:
    """The few netmiko connection methods NetdevTransport uses, scripted."""

    def __init__(self, replies: dict[str, str]) -> None:
        self.replies = replies
        self.sent: list[str] = []
        self.in_config = False
        self.left_config_mode = False
        self.base_prompt = "d"
        self.session_log = None

    def send_command(self, text: str, **_: Any) -> str:
        return self.replies[text]

    def config_mode(self) -> str:
        self.in_config = True
        return "configure terminal\n"

    def send_config_set(self, lines: list[str], **_: Any) -> str:
        self.sent += lines
        return f"{lines[0]}\n{self.replies.get(lines[0].strip(), '')}\n"

    def exit_config_mode(self) -> str:
        self.in_config, self.left_config_mode = False, True
        return "end\n"

    def check_config_mode(self) -> bool:
        return self.in_config


def _options() -> Any:
    from toolkit.transports.base import ConnectOptions

    return ConnectOptions()


def test_help_and_the_catalog_import_neither_netmiko_nor_textfsm_nor_jinja2() -> None:
    import subprocess
    import sys

    code = (
        "import sys\n"
        "from click.testing import CliRunner\n"
        "from toolkit.cli import cli\n"
        "from toolkit.remediation.catalog import BUILTIN_TASKS, Catalog\n"
        "assert CliRunner().invoke(cli, ['--help']).exit_code == 0\n"
        "assert CliRunner().invoke(cli, ['backup', '--help']).exit_code == 0\n"
        "Catalog.load([BUILTIN_TASKS])\n"
        "heavy = ('netmiko', 'paramiko', 'textfsm', 'ntc_templates', 'jinja2')\n"
        "bad = [m for m in sys.modules if m.split('.')[0] in heavy]\n"
        "assert not bad, bad\n"
        "print('ok')\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=False)
    assert out.stdout.strip() == "ok", out.stderr


def test_the_backup_repository_ignores_the_callers_git_variables(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # GIT_DIR / GIT_WORK_TREE in the operator's environment would send git (and the configs)
    # to another repository.
    import subprocess

    from toolkit.backups.network import ConfigRepository

    elsewhere = tmp_path / "elsewhere"
    subprocess.run(["git", "init", "-q", str(elsewhere)], check=True)
    monkeypatch.setenv("GIT_DIR", str(elsewhere / ".git"))
    monkeypatch.setenv("GIT_WORK_TREE", str(elsewhere))
    store = ConfigRepository(tmp_path / "network")
    store.write("sw-01", "hostname sw-01\n")
    assert store.commit(["sw-01"], "first backup")
    assert (tmp_path / "network" / ".git").is_dir()
    assert (tmp_path / "network").stat().st_mode & 0o777 == 0o700
    log = subprocess.run(
        ["git", "-C", str(elsewhere), "log", "--oneline"], capture_output=True, text=True
    )
    assert "first backup" not in log.stdout
