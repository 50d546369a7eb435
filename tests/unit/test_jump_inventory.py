"""Jump hosts in the inventory: Ansible's ProxyJump spelling, the itops `jump:` form, chains,
cycles refused at load, and ssh options itops does not honour."""

from __future__ import annotations

from pathlib import Path

import pytest

from toolkit.errors import InventoryError
from toolkit.inventory import Inventory, JumpSpec, parse_proxy_jump, parse_ssh_args


def load(tmp_path: Path, text: str) -> Inventory:
    path = tmp_path / "hosts.yml"
    path.write_text(text)
    return Inventory.load([path])


def test_proxy_jump_spellings() -> None:
    assert parse_proxy_jump("ops@bastion:2222") == (JumpSpec("bastion", "ops", 2222),)
    assert parse_proxy_jump("a,ssh://u@b:23,10.0.0.1") == (
        JumpSpec("a"),
        JumpSpec("b", "u", 23),
        JumpSpec("10.0.0.1"),
    )
    assert parse_proxy_jump("none") == ()
    for bad in ("u@:22", "host:99999", "bad host", "u@h:x"):
        with pytest.raises(ValueError):
            parse_proxy_jump(bad)


def test_ssh_args_honour_proxyjump_list_the_rest_refuse_rerouting() -> None:
    args = parse_ssh_args(
        "-o ProxyJump=ops@bastion:22 -o StrictHostKeyChecking=yes -o ServerAliveInterval=5 "
        "-o ForwardX11Trusted=yes -v"
    )
    assert args.jump == (JumpSpec("bastion", "ops", 22),)
    assert args.ignored == ("ForwardX11Trusted=yes", "-v")
    assert parse_ssh_args("-J b1,b2").jump == (JumpSpec("b1"), JumpSpec("b2"))
    assert parse_ssh_args("-oProxyJump=b1").jump == (JumpSpec("b1"),)
    assert parse_ssh_args("-o 'ProxyJump b1'").jump == (JumpSpec("b1"),)
    # itops always checks host keys strictly: a request to loosen it is not honoured, and said
    assert parse_ssh_args("-o StrictHostKeyChecking=no").ignored == ("StrictHostKeyChecking=no",)
    rerouting = parse_ssh_args("-o ProxyCommand='nc %h %p' -o HostName=x -p 2222 -F cfg")
    assert rerouting.refused == ("ProxyCommand=nc %h %p", "HostName=x", "-p 2222", "-F cfg")
    for malformed in ("-o 'unclosed", "-J", "-J u@:1", "stray"):
        with pytest.raises(ValueError):
            parse_ssh_args(malformed)


def test_rerouting_options_refuse_the_host_not_the_inventory(tmp_path: Path) -> None:
    """Ansible honours ProxyCommand, so the inventory loads (playbooks reach the host); itops's
    own transports refuse the host before connecting rather than connect another way."""
    from toolkit.errors import TransportError
    from toolkit.inventory import refuse_rerouting_ssh_args

    inv = load(
        tmp_path,
        "all:\n  hosts:\n    a: {ansible_ssh_common_args: '-o ProxyCommand=\"nc %h %p\"'}\n"
        "    b: {ansible_ssh_extra_args: '-o ServerAliveInterval=5'}\n",
    )
    with pytest.raises(TransportError, match="does not honour .*ProxyCommand") as err:
        refuse_rerouting_ssh_args(inv.get("a"))
    assert "ProxyJump" in str(err.value.hint)
    refuse_rerouting_ssh_args(inv.get("b"))


INVENTORY = """
all:
  children:
    bastions:
      hosts:
        bastion-a: {ansible_host: 10.0.0.1, ansible_user: jumper, password: "env:BASTION_PW"}
        bastion-b: {ansible_host: 10.0.0.2, ansible_port: 2222, jump: [bastion-a]}
    branch:
      vars:
        jump: [bastion-b]
      hosts:
        web-1: {ansible_host: 192.168.5.1}
        web-2: {ansible_host: 192.168.5.2, jump: "bastion-a,bastion-b"}
    ansible_style:
      vars:
        ansible_ssh_private_key_file: /keys/id
        password: "env:TARGET_PW"
      hosts:
        db-1:
          ansible_host: 192.168.6.1
          ansible_ssh_common_args: "-o ProxyJump=ops@10.9.9.9:2200,bastion-a"
        db-2: {ansible_ssh_extra_args: "-J bastion-b"}
"""


def test_jump_hosts_resolve_to_hosts_with_their_own_variables(tmp_path: Path) -> None:
    inv = load(tmp_path, INVENTORY)
    web1 = inv.get("web-1")
    # bastion-b is reached through bastion-a (its own jump), so the chain nests
    assert [h.name for h in web1.jump] == ["bastion-a", "bastion-b"]
    assert web1.jump[0].user == "jumper" and web1.jump[0].var("password") == "env:BASTION_PW"
    assert web1.jump[1].port == 2222 and web1.jump[1].jump == ()
    assert [h.name for h in inv.get("web-2").jump] == ["bastion-a", "bastion-b"]
    assert inv.get("bastion-a").jump == ()


def test_ansible_proxyjump_to_an_address_logs_in_with_the_targets_key_never_its_password(
    tmp_path: Path,
) -> None:
    inv = load(tmp_path, INVENTORY)
    first, second = inv.get("db-1").jump
    assert (first.address, first.port, first.user) == ("10.9.9.9", 2200, "ops")
    assert first.var("ansible_ssh_private_key_file") == "/keys/id"
    assert first.var("password") is None
    assert second.name == "bastion-a" and second.var("password") == "env:BASTION_PW"
    assert [h.name for h in inv.get("db-2").jump] == ["bastion-a", "bastion-b"]


@pytest.mark.parametrize(
    ("hosts", "message"),
    [
        ("a: {jump: [b]}\n        b: {jump: [a]}", "cycle: a → b → a"),
        ("a: {jump: [a]}", "cycle"),
        ("a: {jump: [b]}\n        b: {jump: [c]}\n        c: {jump: [a]}", "a → b → c → a"),
        ("a: {}\n        b: {jump: [a, b]}", "names itself"),
        ("a: {jump: [nosuch]}", "not an inventory host"),
        ("a: {jump: 5}", "list of inventory host names"),
        ("a: {ansible_ssh_common_args: '-J u@:22'}", "invalid jump host"),
        ("a: {platform: windows, jump: [b]}\n        b: {}", "not WinRM"),
        (
            "a: {jump: [b], ansible_ssh_common_args: '-J b'}\n        b: {}",
            "both jump and a ProxyJump",
        ),
    ],
)
def test_bad_jump_settings_are_refused_at_load(tmp_path: Path, hosts: str, message: str) -> None:
    with pytest.raises(InventoryError, match=message) as err:
        load(tmp_path, f"all:\n  children:\n    g:\n      hosts:\n        {hosts}\n")
    assert "hosts.yml:" in str(err.value)


def test_playbooks_refuse_hosts_whose_jump_ansible_cannot_read(tmp_path: Path) -> None:
    from toolkit.automation.playbooks import PlaybookError, refuse_loosened_checks

    inv = load(tmp_path, INVENTORY)
    with pytest.raises(PlaybookError, match="ansible does not read") as err:
        refuse_loosened_checks([inv.get("web-1")])
    assert "ProxyJump" in str(err.value.hint)
    refuse_loosened_checks([inv.get("db-1"), inv.get("bastion-a")])  # ansible's own spelling


def test_an_actions_begin_record_names_its_jump_chain(tmp_path: Path) -> None:
    """The begin record keeps the jump hosts, first hop first: inventory name, address, user and
    the fingerprints of the keys pinned for each (all a connection through it accepts); a hop
    with none pinned has an empty list (the host is then refused before anything is sent); a
    host reached directly has no `jump` at all. The audit report shows the chain."""
    from toolkit.lab import ed25519_keypair
    from toolkit.ledger import Ledger
    from toolkit.reports.audit import build
    from toolkit.run.events import HostRun, LedgerRecorder
    from toolkit.secrets.credentials import CredentialStore, Redactor
    from toolkit.transports import ConnectOptions, Connector
    from toolkit.transports.ssh import fingerprint

    inv = load(
        tmp_path,
        "all:\n  hosts:\n"
        "    bastion-a: {ansible_host: 127.0.0.1, ansible_port: 2201, ansible_user: jump}\n"
        "    bastion-b: {ansible_host: 127.0.0.2, ansible_port: 2202}\n"
        "    ws-1: {ansible_host: 127.0.0.3, jump: [bastion-a, bastion-b]}\n"
        "    ws-2: {ansible_host: 127.0.0.4}\n",
    )
    _, public = ed25519_keypair("bastion-a")
    known = tmp_path / "known_hosts"
    known.write_text(f"[127.0.0.1]:2201 {' '.join(public.split()[:2])}\n")
    import asyncssh

    pinned = fingerprint(asyncssh.import_public_key(public))
    connector = Connector(ConnectOptions(known_hosts=(known,)), CredentialStore(Redactor()))
    book = Ledger(f"sqlite:///{tmp_path / 'ledger.db'}", operator="ana")
    try:
        recorder = LedgerRecorder(book, Redactor().mask, connector.route)
        for name in ("ws-1", "ws-2"):
            run = HostRun("printer.clear-queue", inv.hosts[name], "INC-1", True, {}, None, {})
            recorder.begin(run)
        first, second = book.records(kind="action.begin")
        assert first.info["jump"] == [
            {"name": "bastion-a", "address": "127.0.0.1:2201", "user": "jump",
             "host_keys": [pinned]},
            {"name": "bastion-b", "address": "127.0.0.2:2202", "user": None, "host_keys": []},
        ]  # fmt: skip
        assert "jump" not in second.info
        page = build(book, Redactor(), {"ticket": "INC-1"}).html
        assert f"via bastion-a (127.0.0.1:2201, {pinned}) → bastion-b (127.0.0.2:2202)" in page
    finally:
        book.close()
        connector.close()
