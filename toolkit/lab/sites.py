"""Lab sites: hosts in a network namespace of their own, reachable only through a bastion.

`itops lab up --sites 2` adds, per site s:
- a network namespace `itops-<lab id>-s<s>` whose hosts `site<s>-NN` listen on 127.3.<s>.N — the
  namespace's own loopback, which this machine's controller cannot reach (the same addresses in
  the main namespace are its loopback, where nothing of the lab listens: a direct connection is
  refused);
- a veth pair, one leg in the main namespace (169.254.K.1/30) and one in the site's (169.254.K.2),
  K chosen free on this machine: link-local addresses on a virtual cable that never leaves it
  (IPv6 is disabled on both legs, so not even router solicitations are sent);
- a bastion sshd `bastion-<s>` in the site's namespace listening on 169.254.K.2 only, which
  forwards (direct-tcpip, `AllowTcpForwarding local`) to its site's hosts and to itself only
  (`PermitOpen`), and no host forwards further.

The inventory gets group `bastions` and groups `site<s>` (children of `sites`) with `jump:
[bastion-<s>]` and `site: site-<s>`; known_hosts gets every site host's and bastion's key. `lab down`
stops the sshds (tracked like every lab daemon) and deletes the namespaces, which removes the veths.
"""

from __future__ import annotations

import contextlib
import re
import socket
import subprocess
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

from toolkit.lab.core import (
    SSHD,
    LabError,
    LabHost,
    LabState,
    _sshd_config,
    ed25519_keypair,
    sshd_logins,
)

if TYPE_CHECKING:
    from toolkit.lab.core import Lab

IP = "/usr/sbin/ip"
MAX_SITES = 20
MAX_SITE_HOSTS = 254
PER_SSHD = 16


def site_address(site: int, index: int) -> str:
    """Site host i (0-based) of site s (1-based) → 127.3.s.(i+1), in the site's namespace."""
    return f"127.3.{site}.{index + 1}"


def preflight(sites: int, per_site: int) -> None:
    if not 1 <= sites <= MAX_SITES:
        raise LabError(f"--sites must be between 1 and {MAX_SITES}, not {sites}")
    if not 1 <= per_site <= MAX_SITE_HOSTS:
        raise LabError(f"--site-hosts must be between 1 and {MAX_SITE_HOSTS}, not {per_site}")
    if not Path(IP).is_file():
        raise LabError(f"missing {IP}", hint="apt-get install iproute2")


def _ip(*args: str) -> str:
    done = subprocess.run([IP, *args], capture_output=True, text=True)
    if done.returncode != 0:
        raise LabError(f"ip {' '.join(args)} failed: {done.stderr.strip()}")
    return done.stdout


def _free_subnet(taken_by_labs: set[int]) -> int:
    """A /24 of 169.254.0.0/16 with no address on this machine's interfaces yet."""
    used = {
        int(m.group(1))
        for m in re.finditer(r"inet 169\.254\.(\d+)\.", _ip("-4", "-o", "addr", "show"))
    }
    for k in range(100, 250):
        if k not in used and k not in taken_by_labs:
            return k
    raise LabError("no free 169.254.K.0/30 subnet for a lab site's veth")


DEVICE_INDEX = 250  # a site's switch: 127.3.s.250


def start(lab: Lab, state: LabState, sites: int, per_site: int, devices: bool = False) -> None:
    """Create the sites (namespaces, veths, bastions, hosts) and add them to the inventory;
    with `devices`, also a stateful simulated Cisco switch per site (group site_devices)."""
    conf_dir = lab.dir / "sshd"
    conf_dir.mkdir(exist_ok=True)
    width = max(2, len(str(per_site)))
    connection_vars = {
        "platform": "linux",
        "ansible_user": state.user,
        "ansible_ssh_private_key_file": str(lab.dir / "client_ed25519"),
        "ansible_ssh_common_args": f"-o UserKnownHostsFile={lab.dir / 'known_hosts'} "
        "-o StrictHostKeyChecking=yes",
    }
    bastions: dict[str, Any] = {}
    site_groups: dict[str, Any] = {}
    switches: dict[str, Any] = {}
    device = _prepare_devices(lab, state) if devices else None
    records: list[dict[str, Any]] = state.data.setdefault("sites", [])
    for s in range(1, sites + 1):
        netns = f"itops-{state.lab_id}-s{s}"
        veth = f"itj{state.lab_id[:6]}s{s}"
        k = _free_subnet({r["subnet"] for r in records})
        record = {"site": s, "netns": netns, "veth": veth, "subnet": k}
        records.append(record)  # saved before anything is made: `lab down` undoes it
        state.save(lab.state_file)
        outer, inner = f"169.254.{k}.1", f"169.254.{k}.2"
        _ip("netns", "add", netns)
        _ip("link", "add", veth, "type", "veth", "peer", "name", "leg0", "netns", netns)
        for args in (("sysctl", "-qw", f"net.ipv6.conf.{veth}.disable_ipv6=1"),):
            subprocess.run(list(args), capture_output=True)
        _ip("-n", netns, "link", "set", "lo", "up")
        subprocess.run(
            [IP, "netns", "exec", netns, "sysctl", "-qw", "net.ipv6.conf.leg0.disable_ipv6=1"],
            capture_output=True,
        )
        _ip("addr", "add", f"{outer}/30", "dev", veth)
        _ip("-n", netns, "addr", "add", f"{inner}/30", "dev", "leg0")
        _ip("link", "set", veth, "up")
        _ip("-n", netns, "link", "set", "leg0", "up")

        hosts = [
            LabHost(f"site{s}-{i + 1:0{width}d}", site_address(s, i), state.port)
            for i in range(per_site)
        ]
        pids = []
        key_lines = []
        for group, first in enumerate(range(0, len(hosts), PER_SSHD)):
            members = hosts[first : first + PER_SSHD]
            key_path = conf_dir / f"site{s}_host_ed25519_{group}"
            pem, public = ed25519_keypair(f"itops-lab-site{s}-{group}")
            key_path.write_bytes(pem)
            key_path.chmod(0o600)
            config = conf_dir / f"site{s}_sshd_{group}.conf"
            config.write_text(_sshd_config(state, members, key_path))
            pids.append(_spawn(lab, state, netns, f"sshd:site{s}", config, f"site{s}_sshd_{group}"))
            key_lines += [
                f"[{h.address}]:{h.port} {' '.join(public.split()[:2])} itops-lab:{h.name}\n"
                for h in members
            ]
        bastion = f"bastion-{s}"
        key_path = conf_dir / f"bastion{s}_host_ed25519"
        pem, public = ed25519_keypair(f"itops-lab-{bastion}")
        key_path.write_bytes(pem)
        key_path.chmod(0o600)
        config = conf_dir / f"bastion{s}_sshd.conf"
        extra = []
        if device is not None:
            switch = LabHost(f"site{s}-sw", f"127.3.{s}.{DEVICE_INDEX}", state.port)
            extra.append(switch)
            _start_switch(lab, state, netns, switch, device)
            key_lines.append(f"[{switch.address}]:{switch.port} {device['public']} itops-lab:sw\n")
            switches[switch.name] = {
                "ansible_host": switch.address,
                "ansible_port": switch.port,
                "jump": [bastion],
            }
        config.write_text(_bastion_config(state, inner, hosts + extra, key_path))
        bastion_pid = _spawn(lab, state, netns, f"sshd:{bastion}", config, f"bastion{s}_sshd")
        key_lines.append(
            f"[{inner}]:{state.port} {' '.join(public.split()[:2])} itops-lab:{bastion}\n"
        )
        state.known_hosts.extend(key_lines)
        record.update(bastion=bastion, address=inner, log=str(lab.dir / f"bastion{s}_sshd.log"))
        record["logs"] = [
            str(lab.dir / f"site{s}_sshd_{g}.log") for g in range(len(range(0, per_site, 16)))
        ]
        record["hosts"] = [h.name for h in hosts]
        bastions[bastion] = {"ansible_host": inner, "ansible_port": state.port}
        site_groups[f"site{s}"] = {
            # no `site:` — that would send the site's hosts to its Celery workers
            # (toolkit.workers); the lab's sites are reached through their bastion
            "vars": {"jump": [bastion]},
            "hosts": {h.name: {"ansible_host": h.address, "ansible_port": h.port} for h in hosts},
        }
        _wait_listening(bastion_pid, {inner}, state.port)
        _wait_listening_all(pids, {h.address for h in hosts}, state.port, f"site {s}'s sshd")
    state.inventory["bastions"] = {"vars": dict(connection_vars), "hosts": bastions}
    if device is not None:
        state.inventory["site_devices"] = {"vars": device["vars"], "hosts": switches}
    state.inventory["sites"] = {"vars": dict(connection_vars), "children": site_groups}


def _prepare_devices(lab: Lab, state: LabState) -> dict[str, Any]:
    """The sites' switches' credentials and host key (the simulators' venv, built once)."""
    import secrets as random

    from toolkit.lab import netdev

    venv = netdev.ensure_netsim_venv()
    root = lab.dir / "site_devices"
    root.mkdir(parents=True, exist_ok=True)
    root.chmod(0o700)
    password, enable = random.token_urlsafe(12), random.token_urlsafe(12)
    netdev._write_secret(root / "password", password)
    netdev._write_secret(root / "enable", enable)
    pem, public = netdev.rsa_host_key()
    netdev._write_secret(root / "host_rsa", pem.decode())
    (root / "host_rsa.pub").write_text(public + "\n")
    return {
        "venv": str(venv),
        "root": str(root),
        "password": password,
        "enable": enable,
        "public": " ".join(public.split()[:2]),
        "vars": {
            "platform": "cisco_ios",
            "ansible_user": netdev.USER,
            "password": f"file:{root / 'password'}",
            "enable_secret": f"file:{root / 'enable'}",
        },
    }


def _start_switch(
    lab: Lab, state: LabState, netns: str, switch: LabHost, device: dict[str, Any]
) -> None:
    """A fake-switches Cisco switch (see lab.netsim) in the site's namespace."""
    import json

    from toolkit.lab import netdev

    root = Path(device["root"])
    config = root / f"{switch.name}.json"
    netdev._write_secret(
        config,
        json.dumps(
            {
                "user": netdev.USER,
                "password": device["password"],
                "enable": device["enable"],
                "host_key": str(root / "host_rsa"),
                "faults": str(root / f"{switch.name}.faults.json"),
                "vlans": netdev.LAB_VLANS,
                "devices": [{"name": switch.name, "address": switch.address, "port": switch.port}],
            }
        ),
    )
    process = state.spawn(
        f"netdev:{switch.name}",
        [
            IP, "netns", "exec", netns, str(Path(device["venv"]) / "bin/python"),
            str(Path(netdev.__file__).with_name("netsim.py")), str(config),
        ],
        config,
        root / f"{switch.name}.log",
    )  # fmt: skip
    _wait(lambda: switch.address in _listening(process.pid, switch.port), switch.name, 60)


def _spawn(lab: Lab, state: LabState, netns: str, role: str, config: Path, log: str) -> int:
    check = subprocess.run(
        [IP, "netns", "exec", netns, SSHD, "-t", "-f", str(config)], capture_output=True, text=True
    )
    if check.returncode != 0:
        raise LabError(f"sshd rejected {config}: {check.stderr.strip()}")
    process = state.spawn(
        role,
        [IP, "netns", "exec", netns, SSHD, "-D", "-e", "-f", str(config)],
        config,
        lab.dir / f"{log}.log",
    )
    return process.pid


def _bastion_config(state: LabState, address: str, hosts: list[LabHost], key: Path) -> str:
    targets = [f"{h.address}:{h.port}" for h in hosts] + [f"{address}:{state.port}"]
    return "\n".join(
        [
            f"Port {state.port}",
            f"ListenAddress {address}",
            *sshd_logins(state, key),
            "AllowTcpForwarding local",
            "PermitOpen " + " ".join(targets),
            "AllowAgentForwarding no",
            "X11Forwarding no",
            "PermitTTY no",
            "PrintMotd no",
            "MaxStartups 200:30:400",
            "LogLevel VERBOSE",
            "",
        ]
    )


def _listening(pid: int, port: int) -> set[str]:
    """Addresses in LISTEN on a port, as seen from process `pid`'s network namespace."""
    found = set()
    with contextlib.suppress(OSError):
        for line in Path(f"/proc/{pid}/net/tcp").read_text().splitlines()[1:]:
            fields = line.split()
            hex_addr, hex_port = fields[1].split(":")
            if fields[3] == "0A" and int(hex_port, 16) == port:
                found.add(socket.inet_ntoa(bytes.fromhex(hex_addr)[::-1]))
    return found


def _wait_listening_all(pids: list[int], wanted: set[str], port: int, what: str) -> None:
    def ready() -> bool:
        return wanted <= set().union(*(_listening(pid, port) for pid in pids))

    _wait(ready, what)


def _wait(predicate: Any, what: str, timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise LabError(f"{what} did not start listening (see .itops/lab/*sshd*.log)")
        time.sleep(0.05)


def _wait_listening(pid: int, wanted: set[str], port: int) -> None:
    _wait(lambda: wanted <= _listening(pid, port), f"sshd {pid}")


def cleanup(state: LabState) -> None:
    """Delete the sites' namespaces (their veth legs go with them) and any leg left over."""
    for record in state.data.get("sites", []):
        subprocess.run([IP, "netns", "del", record["netns"]], capture_output=True)
        subprocess.run([IP, "link", "del", record["veth"]], capture_output=True)
    state.data.pop("sites", None)
