"""Jump hosts against a real lab of sites: each site's hosts in a network namespace of their own,
reachable only through the site's bastion sshd (`itops lab up --hosts 0 --sites 2`).

This lab has no hosts on 127.1.0.x (it is a lab of sites only, in its own workspace), so these
tests need no lab lock: the site hosts listen on 127.3.s.N inside their namespaces, the bastions
on 169.254.K.2 veth addresses this lab chose free."""

from __future__ import annotations

import contextlib
import json
import os
import re
import shutil
import socket
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.integration.conftest import HERE, OPERATORS, LabEnv
from tests.signers import make_operators
from toolkit.lab import Lab, ed25519_keypair
from toolkit.workspace import Workspace

pytestmark = pytest.mark.integration

AUTH_LINE = ("publickey", "password", "keyboard-interactive", "Accepted", "Failed")


@pytest.fixture(scope="module")
def sites(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LabEnv]:
    if os.geteuid() != 0:
        if os.environ.get("CI"):
            pytest.fail("integration tests need root (they start sshd in network namespaces)")
        pytest.skip("integration tests need root: run them as root or under sudo")
    root = tmp_path_factory.mktemp("itops-sites") / "ws"
    Workspace.init(root)
    (root / "inventory" / "hosts.yml").write_text("all:\n  hosts: {}\n")
    keys = make_operators(tmp_path_factory.mktemp("keys"), OPERATORS)
    keys.write(root / "allowed_signers", OPERATORS)
    shutil.copy(HERE / "tasks" / "faults.py", root / "tasks" / "faults.py")
    lab = Lab(Workspace.load(root))
    state = lab.up(0, services=(), sites=2, site_hosts=3, site_devices=True)
    try:
        yield LabEnv(root, lab, state, keys)
    finally:
        lab.down()


def site(env: LabEnv, number: int) -> dict[str, object]:
    found: dict[str, object] = env.state.data["sites"][number - 1]
    return found


def log_of(env: LabEnv, name: str) -> str:
    return "".join(p.read_text() for p in sorted(env.lab.dir.glob(f"{name}*.log")))


def settled(env: LabEnv, name: str, before: str, closed: int, timeout: float = 15) -> str:
    """What a log got since `before`, once `closed` connections ended in it."""
    ends = re.compile(
        r"^(?:Disconnected from|Connection closed by|Connection reset by|Read error from) ", re.M
    )
    deadline = time.monotonic() + timeout
    while True:
        new = log_of(env, name)[len(before) :]
        if len(ends.findall(new)) >= closed or time.monotonic() > deadline:
            return new
        time.sleep(0.05)


def logins(log: str) -> int:
    return len(re.findall(r"^Accepted publickey for ", log, re.M))


def report(result: subprocess.CompletedProcess[str]) -> dict[str, dict[str, object]]:
    assert result.stdout.strip(), result.stderr
    return {h["host"]: h for h in json.loads(result.stdout)["hosts"]}


def test_site_hosts_answer_only_through_their_bastion(sites: LabEnv) -> None:
    port = sites.state.port
    status = json.loads(sites.itops("lab", "status", "--json").stdout)
    assert [(s["site"], s["hosts"], s["sshd"]) for s in status["sites"]] == [
        ("site1", 3, "running"),
        ("site2", 3, "running"),
    ]
    with socket.socket() as sock, pytest.raises(ConnectionRefusedError):
        sock.settimeout(5)
        sock.connect(("127.3.1.1", port))  # this namespace's loopback: nothing of the site
    # the same host without its jump host, in a workspace that trusts its key: refused
    direct = sites.root.parent / "direct"
    Workspace.init(direct)
    (direct / "inventory" / "hosts.yml").write_text(
        "all:\n  hosts:\n    site1-01:\n"
        f"      ansible_host: 127.3.1.1\n      ansible_port: {port}\n"
        f"      ansible_user: {sites.state.user}\n"
        f"      ansible_ssh_private_key_file: {sites.lab.dir / 'client_ed25519'}\n"
    )
    shutil.copy(sites.lab.dir / "known_hosts", direct / "inventory" / "known_hosts")
    alone = sites.itops("inventory", "check", "site1-01", "--json", workspace=direct)
    assert alone.returncode == 3
    assert "refused" in alone.stdout

    mark = f"itops-jump-{os.getpid()}"
    names = [f"site{s}-0{i}" for s in (1, 2) for i in (1, 2, 3)]
    try:
        fix = sites.itops(
            "fix", "test.slow-mark", "sites", "-p", "seconds=0", "-p", f"mark={mark}",
            "--ticket", "INC-7001", "--json",
        )  # fmt: skip
        hosts = report(fix)
        assert fix.returncode == 0, fix.stdout + fix.stderr
        assert sorted(hosts) == names
        assert all(h["outcome"] == "fixed" for h in hosts.values()), hosts
        assert all(Path(f"/tmp/{mark}-{name}").exists() for name in names)  # applied there
    finally:
        for name in names:
            Path(f"/tmp/{mark}-{name}").unlink(missing_ok=True)


def test_one_bastion_connection_serves_every_host_behind_it(sites: LabEnv) -> None:
    bastion, targets = log_of(sites, "bastion1_sshd"), log_of(sites, "site1_sshd")
    fix = sites.itops("fix", "test.echo", "site1", "-p", "note=shared", "--forks", "3", "--check")
    assert fix.returncode == 0, fix.stdout + fix.stderr
    new_targets = settled(sites, "site1_sshd", targets, closed=3)
    new_bastion = settled(sites, "bastion1_sshd", bastion, closed=1)
    assert logins(new_targets) == 3  # each site host logged in once …
    assert logins(new_bastion) == 1  # … all through one login at the bastion
    assert len(re.findall(r"^Connection from ", new_bastion, re.M)) == 1
    assert "Disconnected from user" in new_bastion  # closed when the run ended


def test_a_chain_of_two_jump_hosts(sites: LabEnv) -> None:
    """Ansible's spelling with two hops: the bastion, then (through it) the bastion again as a
    second hop — two SSH connections, the second tunnelled in the first — then the host."""
    address, port = site(sites, 1)["address"], sites.state.port
    hop = f"{sites.state.user}@{address}:{port}"
    (sites.root / "inventory" / "hosts.yml").write_text(
        "all:\n  hosts:\n    chained:\n"
        f"      ansible_host: 127.3.1.2\n      ansible_port: {port}\n"
        f"      ansible_user: {sites.state.user}\n"
        f"      ansible_ssh_private_key_file: {sites.lab.dir / 'client_ed25519'}\n"
        f"      ansible_ssh_common_args: '-o ProxyJump={hop},{hop} -o TCPKeepAlive=no'\n"
    )
    try:
        before = log_of(sites, "bastion1_sshd")
        fix = sites.itops("fix", "test.echo", "chained", "-p", "note=chain", "--check", "--json")
        host = report(fix)["chained"]
        assert fix.returncode == 0, fix.stdout + fix.stderr
        assert host["outcome"] == "already-ok"
        # the option itops does not honour is said, not silently dropped
        assert "TCPKeepAlive=no" in json.dumps(host)
        new = settled(sites, "bastion1_sshd", before, closed=2)
        assert logins(new) == 2
        assert f"from {address} port" in new  # the second hop came through the first
    finally:
        (sites.root / "inventory" / "hosts.yml").write_text("all:\n  hosts: {}\n")


def test_changed_bastion_key_stops_every_host_behind_it_before_a_credential(
    sites: LabEnv,
) -> None:
    known = sites.lab.dir / "known_hosts"
    original = known.read_text()
    address, port = site(sites, 2)["address"], sites.state.port
    _, impostor = ed25519_keypair("impostor")
    lines = [ln for ln in original.splitlines(keepends=True) if f"[{address}]:{port}" not in ln]
    known.write_text("".join(lines) + f"[{address}]:{port} {' '.join(impostor.split()[:2])}\n")
    try:
        bastion, targets = log_of(sites, "bastion2_sshd"), log_of(sites, "site2_sshd")
        fix = sites.itops("fix", "test.echo", "site2", "-p", "note=x", "--check", "--json")
        hosts = report(fix)
        assert fix.returncode == 3
        for name in ("site2-01", "site2-02", "site2-03"):
            assert hosts[name]["error"] == "host-key-mismatch", hosts[name]
            assert "via jump host bastion-2" in str(hosts[name]["message"])
        new_bastion = settled(sites, "bastion2_sshd", bastion, closed=1)
        assert "Connection from" in new_bastion  # the key exchange happened …
        assert not [ln for ln in new_bastion.splitlines() if any(w in ln for w in AUTH_LINE)]
        time.sleep(0.5)
        assert log_of(sites, "site2_sshd") == targets  # … and the hosts were never contacted
    finally:
        known.write_text(original)


def test_the_pool_counts_hosts_per_bastion_and_closes_at_run_end(sites: LabEnv) -> None:
    from toolkit.app import App
    from toolkit.remediation.quoting import cmd
    from toolkit.transports.ssh import SSHFactory

    app = App(sites.root)
    hosts = app.inventory.select("site1")
    factory = SSHFactory(app.connect_options(), app.credentials)
    before = log_of(sites, "bastion1_sshd")
    try:
        transports = [factory.open(h) for h in hosts]
        assert [t.run(cmd("printenv", "ITOPS_LAB_HOST")).stdout.strip() for t in transports] == [
            h.name for h in hosts
        ]  # each channel reached its own host
        assert factory.jumps.opened == 1
        assert list(factory.jumps.users.values()) == [3]
        for t in transports:
            t.close()
        assert list(factory.jumps.users.values()) == [0]
    finally:
        factory.close()
    new = settled(sites, "bastion1_sshd", before, closed=1)
    assert logins(new) == 1 and "Disconnected from user" in new


def test_trust_fetches_a_site_hosts_key_through_its_bastion(sites: LabEnv) -> None:
    known = sites.lab.dir / "known_hosts"
    original = known.read_text()
    port = sites.state.port
    line = next(ln for ln in original.splitlines() if ln.startswith(f"[127.3.1.3]:{port} "))
    known.write_text(original.replace(line + "\n", ""))
    try:
        check = sites.itops("fix", "test.echo", "site1-03", "-p", "note=x", "--check", "--json")
        assert report(check)["site1-03"]["error"] == "host-key-unknown"
        trust = sites.itops("inventory", "trust", "site1-03", "--json")
        (row,) = json.loads(trust.stdout)
        assert row["status"] == "new", trust.stdout + trust.stderr
        import asyncssh

        from toolkit.transports.ssh import fingerprint

        expected = asyncssh.import_public_key(" ".join(line.split()[1:3]))
        assert row["fingerprint"] == fingerprint(expected)
    finally:
        known.write_text(original)


def device_inventory(sites: LabEnv) -> str:
    """Site hosts as netmiko devices (netmiko's `linux` driver on the site's sshd): the device
    path — paramiko channel through the bastion, netmiko's strict key check — with a real sshd."""
    key = sites.lab.dir / "client_ed25519"
    hosts = "".join(
        f"    dev{i}:\n      ansible_host: 127.3.1.{i}\n      ansible_port: {sites.state.port}\n"
        "      jump: [bastion-1]\n"
        for i in (1, 2)
    )
    return (
        "all:\n  vars:\n    transport: netdev\n    netmiko_device_type: linux\n"
        f"    ansible_user: {sites.state.user}\n    ansible_ssh_private_key_file: {key}\n"
        f"  hosts:\n{hosts}"
    )


def test_network_devices_behind_a_bastion_share_one_paramiko_connection(sites: LabEnv) -> None:
    from toolkit.app import App
    from toolkit.remediation.quoting import cli
    from toolkit.transports.netdev import NetdevFactory

    inventory = sites.root / "inventory" / "hosts.yml"
    inventory.write_text(device_inventory(sites))
    before = log_of(sites, "bastion1_sshd")
    try:
        app = App(sites.root)
        factory = NetdevFactory(app.connect_options(), app.credentials)
        try:
            devices = [factory.open(app.inventory.get(name)) for name in ("dev1", "dev2")]
            outputs = [d.run(cli("printenv ITOPS_LAB_HOST")).stdout for d in devices]
            assert ["site1-01" in outputs[0], "site1-02" in outputs[1]] == [True, True], outputs
            assert factory.jumps.opened == 1
            for device in devices:
                device.close()
        finally:
            factory.close()
        new = settled(sites, "bastion1_sshd", before, closed=1)
        assert logins(new) == 1
    finally:
        inventory.write_text("all:\n  hosts: {}\n")


def test_changed_bastion_key_stops_network_devices_before_a_credential(sites: LabEnv) -> None:
    from toolkit.app import App
    from toolkit.errors import HostKeyMismatch
    from toolkit.transports.netdev import NetdevFactory

    inventory = sites.root / "inventory" / "hosts.yml"
    inventory.write_text(device_inventory(sites))
    known = sites.lab.dir / "known_hosts"
    original = known.read_text()
    address, port = site(sites, 1)["address"], sites.state.port
    _, impostor = ed25519_keypair("impostor")
    lines = [ln for ln in original.splitlines(keepends=True) if f"[{address}]:{port}" not in ln]
    known.write_text("".join(lines) + f"[{address}]:{port} {' '.join(impostor.split()[:2])}\n")
    bastion, targets = log_of(sites, "bastion1_sshd"), log_of(sites, "site1_sshd")
    try:
        app = App(sites.root)
        factory = NetdevFactory(app.connect_options(), app.credentials)
        try:
            for name in ("dev1", "dev2"):
                with pytest.raises(HostKeyMismatch, match="via jump host bastion-1"):
                    factory.open(app.inventory.get(name))
            assert factory.jumps.opened == 1  # the failure is kept: no second attempt
        finally:
            factory.close()
        new = settled(sites, "bastion1_sshd", bastion, closed=1)
        assert "Connection from" in new
        assert not [ln for ln in new.splitlines() if any(w in ln for w in AUTH_LINE)]
        assert log_of(sites, "site1_sshd") == targets
    finally:
        known.write_text(original)
        inventory.write_text("all:\n  hosts: {}\n")


def descendants(pid: int) -> list[int]:
    found, todo = [], [pid]
    while todo:
        parent = todo.pop()
        for task in Path(f"/proc/{parent}/task").iterdir():
            with contextlib.suppress(OSError):
                kids = [int(k) for k in (task / "children").read_text().split()]
                found += kids
                todo += kids
    return found


def test_a_lost_bastion_connection_is_opened_again_for_the_next_host(sites: LabEnv) -> None:
    from toolkit.app import App
    from toolkit.errors import Unreachable
    from toolkit.remediation.quoting import cmd
    from toolkit.transports.ssh import SSHFactory

    bastion = next(p for p in sites.state.processes if p.role == "sshd:bastion-1")
    app = App(sites.root)
    factory = SSHFactory(app.connect_options(), app.credentials)
    try:
        first = factory.open(app.inventory.get("site1-01"))
        assert first.run(cmd("true")).exit_code == 0
        # the bastion's sshd serving this connection dies: the tunnel goes with it
        doomed = descendants(bastion.pid)
        assert doomed
        for pid in doomed:
            os.kill(pid, 9)
        with pytest.raises(Unreachable, match="session lost"):
            first.run(cmd("true"))
        second = factory.open(app.inventory.get("site1-02"))
        assert second.run(cmd("printenv", "ITOPS_LAB_HOST")).stdout.strip() == "site1-02"
        assert factory.jumps.opened == 2
    finally:
        factory.close()


def test_simulated_switches_behind_their_bastions(sites: LabEnv) -> None:
    """A stateful simulated Cisco switch per site (fake-switches, in the site's namespace): the
    device facts come through the bastion; directly, the switch's address is refused."""
    with socket.socket() as sock, pytest.raises(ConnectionRefusedError):
        sock.settimeout(5)
        sock.connect(("127.3.1.250", sites.state.port))
    before = {n: log_of(sites, f"bastion{n}_sshd") for n in (1, 2)}
    done = sites.itops("fix", "network.device-facts", "site_devices", "--check", "--json")
    hosts = report(done)
    assert done.returncode == 0, done.stdout + done.stderr
    assert sorted(hosts) == ["site1-sw", "site2-sw"]
    for host in hosts.values():
        assert host["outcome"] == "already-ok", host
        assert host["check"]["facts"]["model"] == "WS-C3750G-24TS-1U"  # type: ignore[index]
    for n in (1, 2):
        assert logins(settled(sites, f"bastion{n}_sshd", before[n], closed=1)) == 1


def test_a_proxycommand_host_is_refused_by_itops_not_connected_directly(sites: LabEnv) -> None:
    port = sites.state.port
    (sites.root / "inventory" / "hosts.yml").write_text(
        "all:\n  hosts:\n    proxied:\n"
        f"      ansible_host: 127.3.1.1\n      ansible_port: {port}\n"
        f"      ansible_user: {sites.state.user}\n"
        "      ansible_ssh_common_args: '-o ProxyCommand=\"ssh -W %h:%p bastion\"'\n"
    )
    try:
        listed = sites.itops("inventory", "list", "proxied")
        assert listed.returncode == 0, listed.stderr  # the inventory loads: ansible honours it
        done = sites.itops("fix", "test.echo", "proxied", "-p", "note=x", "--check", "--json")
        host = report(done)["proxied"]
        assert done.returncode != 0
        assert host["error"] == "transport-error", host
        assert "does not honour ansible_ssh_common_args: ProxyCommand" in str(host["message"])
    finally:
        (sites.root / "inventory" / "hosts.yml").write_text("all:\n  hosts: {}\n")


def test_the_ledger_names_the_jump_hosts_each_action_went_through(sites: LabEnv) -> None:
    """The begin record of an action on a host behind a bastion keeps the chain: the bastion's
    inventory name, address and the fingerprint of its pinned key (the one its connection
    accepted); `itops log --json` has it and the audit report shows it."""
    import asyncssh

    from toolkit.transports.ssh import fingerprint

    address, port = site(sites, 1)["address"], sites.state.port
    line = next(
        ln for ln in (sites.lab.dir / "known_hosts").read_text().splitlines()
        if ln.startswith(f"[{address}]:{port} ")
    )  # fmt: skip
    pinned = fingerprint(asyncssh.import_public_key(" ".join(line.split()[1:3])))
    ticket = f"INC-{os.getpid() % 10000:04d}9"
    fix = sites.itops(
        "fix", "test.echo", "site1-02", "-p", "note=via", "--check", "--ticket", ticket, "--json"
    )
    assert fix.returncode == 0, fix.stdout + fix.stderr
    log = sites.itops("log", "--ticket", ticket, "--json")
    records = [json.loads(ln) for ln in log.stdout.splitlines() if ln.strip()]
    (begin,) = [r for r in records if r["kind"] == "action.begin"]
    assert begin["host"] == "site1-02"
    assert begin["data"]["jump"] == [
        {"name": "bastion-1", "address": f"{address}:{port}", "user": sites.state.user,
         "host_keys": [pinned]}
    ]  # fmt: skip
    out = sites.root / f"audit-{ticket}.html"
    audit = sites.itops("report", "audit", "--ticket", ticket, "--html", str(out))
    assert audit.returncode == 0, audit.stdout + audit.stderr
    page = out.read_text()
    assert f"via bastion-1 ({address}:{port}, {pinned})" in page
