"""Lab service `netdev`: simulated network devices on loopback, reached over SSH through netmiko.

- **FakeNOS** (PyPI `fakenos`, third party) serves read-only devices of several platforms from one
  process: sw-ios-01 (cisco_ios), sw-eos-01 (arista_eos), sw-nxos-01 (cisco_nxos), rt-junos-01
  (juniper_junos), sw-vrp-01 (huawei_vrp), with FakeNOS' canned `show` outputs; the lab adds the
  configuration commands some of them lack (canned texts below, labelled as ours).
- **fake-switches** (PyPI `fake-switches`, third party, stateful) serves sw-01 and sw-02, Cisco
  2960 switches whose configuration changes persist, with itops' own thin layer for port status,
  faults and sticky MACs (see `netsim.py`, which says exactly what is theirs and what is ours).

Both run from their own virtual environment (`.venv/netsim`, made once and cached): FakeNOS pins an
older paramiko than netmiko wants, and neither belongs in itops' process. Every device listens on its
own 127.3.0.x address and port; the lab pins its one generated host key for all of them
and writes the device credentials to 0600 files that the inventory references (`file:`).
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import secrets
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

from toolkit.lab.core import LabError, LabState, _listening, can_bind, wait_for

if TYPE_CHECKING:
    from toolkit.lab.core import Lab

# The simulators' own environment: exact versions, so every machine runs the same fakes.
NETSIM_PACKAGES = (
    "fakenos==1.2.1",
    "twisted[conch]==26.10.0",
    "tftpy==0.8.7",
    "netaddr==1.3.0",
    "lxml==6.1.3",
)
NETSIM_NODEPS = ("fake-switches==1.5.0",)  # its metadata pins a 2016 Twisted; it runs on today's
USER = "netops"
PREFIX = "127.3.0."
FAKENOS_DEVICES = (  # name, FakeNOS platform, itops platform
    ("sw-ios-01", "cisco_ios", "cisco_ios"),
    ("sw-eos-01", "arista_eos", "arista_eos"),
    ("sw-nxos-01", "cisco_nxos", "cisco_nxos"),
    ("rt-junos-01", "juniper_junos", "juniper_junos"),
    ("sw-vrp-01", "huawei_vrp", "huawei_vrp"),
)
STATEFUL_DEVICES = ("sw-01", "sw-02")
LAB_VLANS = {20: "users", 30: "voice"}
FAULTS = ("errdisable", "link-down", "clear")


def netsim_venv() -> Path:
    return Path(os.environ.get("ITOPS_NETSIM_VENV") or Path(sys.prefix) / "netsim")


def ensure_netsim_venv() -> Path:
    """Create the simulators' virtual environment once (about 30 s); later calls return at once."""
    venv = netsim_venv()
    stamp = venv / ".itops-netsim"
    wanted = "\n".join(NETSIM_PACKAGES + NETSIM_NODEPS)
    if stamp.is_file() and stamp.read_text() == wanted:
        return venv
    venv.parent.mkdir(parents=True, exist_ok=True)
    with open(venv.parent / ".netsim.lock", "a") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if stamp.is_file() and stamp.read_text() == wanted:
            return venv
        steps = [
            [sys.executable, "-m", "venv", "--clear", str(venv)],
            [str(venv / "bin/pip"), "install", "-q", *NETSIM_PACKAGES],
            [str(venv / "bin/pip"), "install", "-q", "--no-deps", *NETSIM_NODEPS],
        ]
        for argv in steps:
            done = subprocess.run(argv, capture_output=True, text=True, timeout=600)
            if done.returncode != 0:
                tail = "\n".join(done.stderr.strip().splitlines()[-5:])
                raise LabError(
                    f"cannot build the network simulators' environment: {tail}",
                    hint="python3-venv and a reachable package index are needed (scripts/setup)",
                )
        stamp.write_text(wanted)
    return venv


def rsa_host_key() -> tuple[bytes, str]:
    """A new RSA host key: PEM that paramiko and Twisted both read, and its OpenSSH public line."""
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import rsa

    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    pem = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.TraditionalOpenSSL,
        serialization.NoEncryption(),
    )
    public = key.public_key().public_bytes(
        serialization.Encoding.OpenSSH, serialization.PublicFormat.OpenSSH
    )
    return pem, public.decode()


def _write_secret(path: Path, text: str) -> None:
    path.write_text("")
    os.chmod(path, 0o600)
    path.write_text(text)


class Netdev:
    name = "netdev"

    def preflight(self, hosts: int) -> None:
        if shutil.which("git") is None:
            raise LabError("git is not installed (network backups are kept in git)")

    def prepare(self, lab: Lab, state: LabState) -> None:
        pass

    def start(self, lab: Lab, state: LabState) -> None:
        venv = ensure_netsim_venv()
        root = lab.dir / "netdev"
        root.mkdir(parents=True, exist_ok=True)
        os.chmod(root, 0o700)
        names = [d[0] for d in FAKENOS_DEVICES] + list(STATEFUL_DEVICES)
        addresses = {name: f"{PREFIX}{i + 1}" for i, name in enumerate(names)}
        ports = _free_ports(addresses)
        password, enable = secrets.token_urlsafe(12), secrets.token_urlsafe(12)
        _write_secret(root / "password", password)
        _write_secret(root / "enable", enable)
        pem, public = rsa_host_key()
        key = root / "host_rsa"
        _write_secret(key, pem.decode())
        (root / "host_rsa.pub").write_text(public + "\n")

        inventory = _fakenos_inventory(key, ports, addresses, password, enable)
        fakenos_yaml = root / "fakenos.yaml"
        import yaml

        _write_secret(fakenos_yaml, yaml.safe_dump(inventory, sort_keys=False))
        state.spawn(
            "netdev:fakenos",
            [str(venv / "bin/fakenos"), "-i", str(fakenos_yaml), "-l", "WARNING"],
            fakenos_yaml,
            root / "fakenos.log",
        )
        switches = root / "switches.json"
        faults = root / "faults.json"
        _write_secret(
            switches,
            json.dumps(
                {
                    "user": USER,
                    "password": password,
                    "enable": enable,
                    "host_key": str(key),
                    "faults": str(faults),
                    "vlans": LAB_VLANS,
                    "devices": [
                        {"name": n, "address": addresses[n], "port": ports[n]}
                        for n in STATEFUL_DEVICES
                    ],
                }
            ),
        )
        state.spawn(
            "netdev:switches",
            [str(venv / "bin/python"), str(Path(__file__).with_name("netsim.py")), str(switches)],
            switches,
            root / "switches.log",
        )
        state.data["netdev"] = {
            "ports": ports,
            "faults": str(faults),
            "devices": addresses,
        }
        platforms = {n: p for n, _, p in FAKENOS_DEVICES} | dict.fromkeys(
            STATEFUL_DEVICES, "cisco_ios"
        )
        state.inventory["netlab"] = {
            "vars": {
                "ansible_user": USER,
                "password": f"file:{root / 'password'}",
                "enable_secret": f"file:{root / 'enable'}",
            },
            "hosts": {
                name: {"ansible_host": addresses[name], "ansible_port": ports[name], "platform": p}
                for name, p in platforms.items()
            },
        }
        blob = " ".join(public.split()[:2])
        state.known_hosts += [
            f"[{addresses[name]}]:{ports[name]} {blob} itops-lab:{name}" for name in names
        ]
        wait_for(
            lambda: all(addresses[n] in _listening(ports[n]) for n in names),
            60,
            f"the simulated network devices did not start listening (see {root}/*.log)",
        )

    def cleanup(self, lab: Lab, state: LabState) -> None:
        shutil.rmtree(lab.dir / "netdev", ignore_errors=True)

    # -- faults, for practice and tests ------------------------------------------------------
    def break_port(
        self, state: LabState, device: str, port: str, fault: str, reason: str = ""
    ) -> None:
        """Put a stateful lab switch's port in trouble: err-disabled (with a reason, and a sticky
        MAC for psecure-violation), link down (a bounce will not help), or clear it again."""
        info: dict[str, Any] = state.data.get("netdev") or {}
        if device not in STATEFUL_DEVICES or not info:
            raise LabError(
                f"{device} is not a stateful lab switch",
                hint=f"one of {', '.join(STATEFUL_DEVICES)}",
            )
        if fault not in FAULTS:
            raise LabError(f"unknown port fault {fault!r}", hint=f"one of {', '.join(FAULTS)}")
        full = _full_port_name(port)
        entry: dict[str, Any] = {"switch": device, "port": full, "fault": fault}
        if fault == "errdisable":
            entry["reason"] = reason or "psecure-violation"
            if entry["reason"] == "psecure-violation":
                entry["sticky"] = ["0050.56aa.0001"]
        path = Path(info["faults"])
        path.write_text(json.dumps([entry]))
        # Signal only the simulator this lab started and that still runs (`alive` checks its
        # command line): a recorded pid reused by another process would die of SIGUSR1.
        switches = next(
            (p for p in state.processes if p.role == "netdev:switches" and p.alive()), None
        )
        if switches is None:
            raise LabError(
                "the lab switches are not running", hint="itops lab up --services netdev"
            )
        with contextlib.suppress(ProcessLookupError):
            os.kill(switches.current_pid(), signal.SIGUSR1)
        wait_for(lambda: not path.exists(), 10, "the lab switches did not take the fault")
        time.sleep(0.05)


def _full_port_name(port: str) -> str:
    for short, full in (("Fa", "FastEthernet"), ("Gi", "GigabitEthernet")):
        if port.startswith(short) and not port.startswith(full):
            return full + port[len(short) :]
    return port


def _free_ports(addresses: dict[str, str], start: int = 2400, stop: int = 3400) -> dict[str, int]:
    """A port per device (FakeNOS wants distinct ports even on distinct addresses): base + i."""
    names = list(addresses)
    for base in range(start, stop, len(names)):
        if all(can_bind(addresses[n], base + i) for i, n in enumerate(names)):
            return {n: base + i for i, n in enumerate(names)}
    raise LabError(f"no free ports between {start} and {stop} on {PREFIX}x")


def _fakenos_inventory(
    key: Path, ports: dict[str, int], addresses: dict[str, str], password: str, enable: str
) -> dict[str, Any]:
    hosts: dict[str, Any] = {}
    for name, fakenos_platform, platform in FAKENOS_DEVICES:
        commands = {
            command: {
                "output": text,
                "help": "itops lab",
                "prompt": ["{base_prompt}>", "{base_prompt}#"],
            }
            for command, text in CANNED.get(platform, {}).items()
        }
        if platform == "cisco_ios":  # the canary: a device that shows our secrets in its config
            text = IOS_RUNNING.format(password=password, enable=enable)
            commands["show running-config"] = {
                "output": text,
                "help": "itops lab",
                "prompt": "{base_prompt}#",
            }
            commands["show startup-config"] = {
                "output": text,
                "help": "itops lab",
                "prompt": "{base_prompt}#",
            }
        hosts[name] = {
            "port": ports[name],
            "platform": fakenos_platform,
            "server": {
                "plugin": "ParamikoSshServer",
                "configuration": {"address": addresses[name], "ssh_key_file": str(key)},
            },
            "nos": {"plugin": fakenos_platform, "configuration": {"commands": commands}},
        }
    return {
        "default": {
            "username": USER,
            "password": password,
            "server": {"plugin": "ParamikoSshServer", "configuration": {"timeout": 1}},
        },
        "hosts": hosts,
    }


# -- canned configuration texts (ours, for FakeNOS platforms that ship none) ------------------

IOS_RUNNING = """\
Building configuration...

Current configuration : 1543 bytes
!
! Last configuration change at 09:14:22 UTC Mon Mar 3 2025 by netops
!
version 17.3
service timestamps log datetime msec
no service password-encryption
!
hostname sw-ios-01
!
enable secret 0 {enable}
!
username netops privilege 15 secret 0 {password}
username backup privilege 1 password 7 0822455D0A16
!
ntp clock-period 36028797018963968
!
vlan 10
 name office
!
interface GigabitEthernet1/0/1
 description uplink
 switchport mode trunk
!
interface GigabitEthernet1/0/2
 switchport access vlan 10
 switchport mode access
!
snmp-server community Publ1cRO RO
snmp-server location lab rack 1
tacacs server TAC1
 address ipv4 192.0.2.10
 key 7 0822455D0A16
!
line vty 0 4
 password 7 1234ABCD5678
 transport input ssh
!
end
"""

VRP_CONFIG = """\
!Software Version V200R010C00SPC600
!Last configuration was {when} at 2025-03-03 09:14:22 UTC by netops
#
 sysname sw-vrp-01
#
aaa
 local-user netops password irreversible-cipher $1a$abcdefghijklmnop$
 local-user netops privilege level 15
#
snmp-agent community read cipher %^%#abcdefghijklmnop%^%#
#
interface GigabitEthernet0/0/1
 port link-type access
 port default vlan 10
#
return
"""

# NX-OS: the saved configuration, and the running one with an unsaved change (Ethernet1/2's VLAN).
NXOS_SAVED = """\
version 9.3(5) Bios:version
hostname sw-nxos-01
feature interface-vlan
username admin password 5 $5$ABCDEFGH$abcdefghijklmnopqrstuvwxyz0123456789ABCDE role network-admin
snmp-server user admin network-admin auth md5 0x1234567890abcdef priv 0xfedcba0987654321 localizedkey
snmp-server community Publ1cRO group network-operator
vlan 1,10
interface Ethernet1/1
  description uplink
  switchport mode trunk
"""

CANNED: dict[str, dict[str, str]] = {
    "cisco_nxos": {
        "show running-config": "!Command: show running-config\n"
        "!Running configuration last done at: Mon Mar  3 09:14:22 2025\n"
        "!Time: Tue Mar  4 10:00:00 2025\n\n"
        + NXOS_SAVED
        + "interface Ethernet1/2\n  switchport access vlan 10\n",
        "show startup-config": "!Command: show startup-config\n"
        "!Time: Tue Mar  4 10:00:00 2025\n"
        "!Startup config saved at: Mon Mar  3 09:14:22 2025\n\n" + NXOS_SAVED,
    },
    "arista_eos": {
        "show startup-config": """\
! Command: show startup-config
! Startup-config last modified at Mon Mar  3 09:14:22 2025 by netops
! device: sw-eos-01 (cEOSLab, EOS-4.26.0F)
!
hostname sw-eos-01
username netops privilege 15 role network-admin secret sha512 $6$abcdefgh$ijklmnop
!
interface Ethernet1
   description uplink
!
end
""",
    },
    "juniper_junos": {
        "show configuration": """\
## Last commit: 2025-03-03 09:14:22 UTC by netops
version 20.4R3.8;
system {
    host-name rt-junos-01;
    root-authentication {
        encrypted-password "$6$abcdefgh$ijklmnopqrstuvwxyz"; ## SECRET-DATA
    }
    login {
        user netops {
            class super-user;
            authentication {
                encrypted-password "$6$qrstuvwx$yz0123456789"; ## SECRET-DATA
            }
        }
    }
}
snmp {
    community Publ1cRO {
        authorization read-only;
    }
}
interfaces {
    ge-0/0/0 {
        unit 0 {
            family inet {
                address 192.0.2.1/24;
            }
        }
    }
}
""",
    },
    "huawei_vrp": {
        "display current-configuration": VRP_CONFIG.format(when="updated"),
        "display saved-configuration": VRP_CONFIG.format(when="saved"),
    },
}
