"""Ansible-compatible inventory: structure, variable precedence, patterns and precise errors."""

from __future__ import annotations

import textwrap
from pathlib import Path

import pytest

from toolkit.errors import InventoryError, NotFound
from toolkit.inventory import Inventory


def write(path: Path, text: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(textwrap.dedent(text))
    return path


@pytest.fixture
def inv(tmp_path: Path) -> Inventory:
    hosts = write(
        tmp_path / "hosts.yml",
        """\
        all:
          vars:
            ansible_user: support
            level: all
          hosts:
            jump: {ansible_host: 127.0.0.9}
          children:
            office:
              vars: {level: office}
              children:
                workstations:
                  vars: {level: workstations}
                  hosts:
                    ws-[001:003]:
                    ws-042: {ansible_host: 127.0.0.42, level: host}
                printers:
                  hosts:
                    prn-a: {address: 127.0.0.50}
            servers:
              hosts:
                srv-1: {ansible_host: 127.0.0.60, ansible_port: 2222}
                win-1: {ansible_host: 127.0.0.61, platform: windows}
                sw-1: {ansible_host: 127.0.0.62, ansible_network_os: cisco.ios.ios}
        """,
    )
    write(tmp_path / "group_vars" / "servers.yml", "level: servers-file\n")
    write(tmp_path / "host_vars" / "ws-001.yml", "level: host-file\n")
    return Inventory.load([hosts])


def test_hosts_groups_ranges_and_defaults(inv: Inventory) -> None:
    assert list(inv.hosts) == [
        "jump",
        "ws-001",
        "ws-002",
        "ws-003",
        "ws-042",
        "prn-a",
        "srv-1",
        "win-1",
        "sw-1",
    ]
    ws = inv.get("ws-042")
    assert (ws.address, ws.port, ws.platform, ws.transport, ws.user) == (
        "127.0.0.42",
        22,
        "linux",
        "ssh",
        "support",
    )
    assert set(ws.groups) == {"office", "workstations"}
    assert inv.get("srv-1").port == 2222
    win = inv.get("win-1")
    assert (win.platform, win.transport, win.port) == ("windows", "winrm", 5986)
    assert (inv.get("sw-1").platform, inv.get("sw-1").transport) == ("cisco_ios", "netdev")
    assert inv.get("ws-002").address == "ws-002"  # no address: the name is resolved at connect


def test_variable_precedence_all_then_parents_then_children_then_host(inv: Inventory) -> None:
    assert inv.get("jump").var("level") == "all"
    assert inv.get("prn-a").var("level") == "office"
    assert inv.get("ws-002").var("level") == "workstations"
    assert inv.get("ws-042").var("level") == "host"
    assert inv.get("ws-001").var("level") == "host-file"  # host_vars/ beats inherited values
    assert inv.get("srv-1").var("level") == "servers-file"  # group_vars/ beats the file's vars


def test_hosts_are_immutable(inv: Inventory) -> None:
    with pytest.raises(AttributeError):
        inv.get("jump").address = "x"  # type: ignore[misc]
    with pytest.raises(TypeError):
        inv.get("jump").vars["x"] = 1  # type: ignore[index]


@pytest.mark.parametrize(
    ("pattern", "expected"),
    [
        ("ws-042", ["ws-042"]),
        ("workstations", ["ws-001", "ws-002", "ws-003", "ws-042"]),
        ("ws-00*", ["ws-001", "ws-002", "ws-003"]),
        ("printers:servers", ["prn-a", "srv-1", "win-1", "sw-1"]),
        ("office:&workstations", ["ws-001", "ws-002", "ws-003", "ws-042"]),
        ("office:!workstations", ["prn-a"]),
        ("all:!office:!servers", ["jump"]),
        ("!ws-001:workstations", ["ws-002", "ws-003", "ws-042"]),  # exclusions apply last
        ("~ws-0(01|42)", ["ws-001", "ws-042"]),
        ("ws-001,srv-1", ["ws-001", "srv-1"]),
        # no union term: Ansible starts from all
        ("!office:!servers", ["jump"]),
        ("&servers", ["srv-1", "win-1", "sw-1"]),
    ],
)
def test_target_patterns(inv: Inventory, pattern: str, expected: list[str]) -> None:
    assert [h.name for h in inv.select(pattern)] == expected


def test_unknown_names_suggest_the_closest(inv: Inventory) -> None:
    with pytest.raises(NotFound) as info:
        inv.select("workstation")
    assert "workstations" in (info.value.hint or "")
    with pytest.raises(NotFound, match="no host or group matches"):
        inv.select("zz-*")
    with pytest.raises(NotFound):
        inv.get("ws-43")
    with pytest.raises(NotFound, match="match no host"):  # nothing to run on is an error
        inv.select("printers:&servers")


def test_host_vars_read_before_their_host_is_defined(tmp_path: Path) -> None:
    # Two sources in one folder: host_vars/ is read with the first, the host defined in the
    # second.
    first = write(tmp_path / "linux.yml", "all:\n  hosts:\n    srv-1: {address: 127.0.0.60}\n")
    second = write(tmp_path / "net.yml", "all:\n  hosts:\n    sw-01: {address: 127.0.0.62}\n")
    write(tmp_path / "host_vars" / "sw-01.yml", "site: lab\n")
    loaded = Inventory.load([first, second])
    assert list(loaded.hosts) == ["srv-1", "sw-01"]
    assert loaded.get("sw-01").var("site") == "lab"


@pytest.mark.parametrize(
    ("text", "line", "words"),
    [
        ("all:\n  hosts:\n    a: {ansible_host: [unclosed\n", 4, "at line 3"),
        ("all:\n  hosts:\n    a: {}\n    a: {}\n", 4, "duplicate key"),
        ("all:\n  hosts:\n    a:\n      ansible_port: 99999\n", 4, "invalid port"),
        ("all:\n  hosts:\n    a:\n      ansible_host: 'x;rm -rf /'\n", 4, "invalid address"),
        ("all:\n  hostz: {}\n", 2, "unexpected key 'hostz'"),
        ("all:\n  hosts:\n    'bad name': {}\n", 3, "invalid host name"),
        ("all:\n  hosts:\n    a: {transport: telnet}\n", 3, "unknown transport"),
    ],
)
def test_malformed_inventory_names_file_and_line(
    tmp_path: Path, text: str, line: int, words: str
) -> None:
    path = write(tmp_path / "bad.yml", text)
    with pytest.raises(InventoryError) as info:
        Inventory.load([path])
    assert f"{path}:{line}" in info.value.message
    assert words in info.value.message


@pytest.mark.parametrize(
    "key",
    [
        "ansible_password",
        "ansible_become_password",
        "enable_secret",
        "snmp_community",
        "password",
        "api_token",
    ],
)
def test_plaintext_secrets_are_refused_with_a_hint(tmp_path: Path, key: str) -> None:
    path = write(tmp_path / "h.yml", f"all:\n  hosts:\n    a:\n      {key}: hunter2\n")
    with pytest.raises(InventoryError) as info:
        Inventory.load([path])
    assert f"{path}:4" in info.value.message and "plaintext" in info.value.message
    assert "env:VAR" in (info.value.hint or "")


def test_secret_references_are_accepted(tmp_path: Path) -> None:
    path = write(
        tmp_path / "h.yml",
        """\
        all:
          hosts:
            a: {password: "env:A_PW", enable_secret: "keyring:net/admin", ansible_become_password: prompt}
        """,
    )
    assert Inventory.load([path]).get("a").var("password") == "env:A_PW"


def test_several_sources_merge(tmp_path: Path) -> None:
    a = write(tmp_path / "a" / "hosts.yml", "all:\n  hosts:\n    one: {address: 127.0.0.1}\n")
    b = write(tmp_path / "b" / "hosts.yml", "lab:\n  hosts:\n    two: {address: 127.0.0.2}\n")
    inv = Inventory.load([a, b])
    assert [h.name for h in inv.select("all")] == ["one", "two"]
    assert [h.name for h in inv.select("lab")] == ["two"]
