"""The local lab: real OpenSSH hosts on loopback addresses, with real services behind them.

`itops lab up --hosts N` starts N SSH identities on 127.1.x.y (one sshd serves up to 16 addresses,
OpenSSH's limit), then the requested services (a cupsd per host by default), writes
`.itops/lab/hosts.yml` (inventory group `lab`, plus what services add) and `.itops/lab/known_hosts`,
and records every pid it started. `itops lab down` stops exactly those processes. Lab hosts share
this machine's filesystem: they are distinct SSH endpoints, not isolated machines.

Needs root: it creates the unprivileged login user `itops-lab` (key login only, never root) and runs
sshd and the services' daemons. Every listener binds 127.0.0.0/8 only.
"""

from __future__ import annotations

import contextlib
import importlib
import itertools
import json
import os
import pwd
import re
import secrets
import shutil
import signal
import socket
import subprocess
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any, Protocol

from toolkit.errors import ToolkitError
from toolkit.workspace import Workspace

LAB_USER = "itops-lab"
RUNTIME_ROOT = Path("/run/itops-lab")
SSHD = "/usr/sbin/sshd"
PER_SSHD = 16  # OpenSSH's MAX_LISTEN_SOCKS
INSTALL_HINT = "apt-get install openssh-server openssh-client"
DEFAULT_SERVICES = ("cups", "netdev", "sudo", "disk", "apt", "clamav", "accounts")
# What can run behind the lab's hosts: one module per service in this package, imported on use.
SERVICES = {
    "cups": "toolkit.lab.cups:Cups",
    "netdev": "toolkit.lab.netdev:Netdev",
    "sudo": "toolkit.lab.sudo:Sudo",
    "disk": "toolkit.lab.disk:Disk",
    "apt": "toolkit.lab.apt:Apt",
    "clamav": "toolkit.lab.clamav:ClamAV",
    "accounts": "toolkit.lab.accounts:Accounts",
    "rt": "toolkit.lab.rt:Rt",
    "ad": "toolkit.lab.directory:SambaAD",
    "ldap": "toolkit.lab.directory:OpenLDAP",
}


class LabError(ToolkitError):
    """The lab cannot be started, inspected or stopped as asked."""


@dataclass
class LabHost:
    name: str
    address: str
    port: int
    env: dict[str, str] = field(default_factory=dict)  # set in its SSH sessions (sshd SetEnv)
    vars: dict[str, Any] = field(default_factory=dict)  # its inventory variables


@dataclass
class Process:
    role: str  # "sshd", or "<service>:<host>" / "<service>" for a service's daemon
    pid: int
    config: str
    # A daemon that a lab host's own service manager may restart (an init script) keeps its
    # current pid here; `pid` is then only the first one.
    pidfile: str = ""

    def current_pid(self) -> int:
        if self.pidfile:
            with contextlib.suppress(OSError, ValueError):
                return int(Path(self.pidfile).read_text().split()[0])
        return self.pid

    def alive(self) -> bool:
        """Still running, and still ours: its command line names our config file. (sshd
        rewrites its title, so the command line is searched, not split on NULs.) A daemon that
        renames its processes altogether (samba: "samba: root process") is ours when its pid
        file (in our folder) names it and its executable is named like the pid file."""
        pid = self.current_pid()
        try:
            cmdline = Path(f"/proc/{pid}/cmdline").read_bytes()
        except OSError:
            return False
        path = re.escape(self.config.encode())
        if re.search(rb"(^|[\0 ])" + path + rb"([\0 ]|$)", cmdline) is not None:
            return True
        if not self.pidfile:
            return False
        try:
            named = int(Path(self.pidfile).read_text().split()[0])
            exe = Path(os.readlink(f"/proc/{pid}/exe")).name
        except (OSError, ValueError, IndexError):
            return False
        return named == pid and exe == Path(self.pidfile).stem


@dataclass
class LabState:
    lab_id: str
    user: str
    port: int
    hosts: list[LabHost] = field(default_factory=list)
    processes: list[Process] = field(default_factory=list)
    runtime: str = ""
    authorized_keys: str = ""
    services: list[str] = field(default_factory=list)
    # what services add to the lab inventory (groups) and known_hosts (e.g. network devices)
    inventory: dict[str, Any] = field(default_factory=dict)
    known_hosts: list[str] = field(default_factory=list)
    data: dict[str, Any] = field(default_factory=dict)  # per-service state, by service name

    @classmethod
    def load(cls, path: Path) -> LabState | None:
        if not path.is_file():
            return None
        raw = json.loads(path.read_text())
        # Tolerate state written by another itops version: a lab must always be stoppable.
        hosts = []
        for h in raw.get("hosts", []):
            env = dict(h.get("env") or {})
            if h.get("cups_socket"):
                env["CUPS_SERVER"] = h["cups_socket"]
            hosts.append(
                LabHost(h["name"], h["address"], h["port"], env, dict(h.get("vars") or {}))
            )
        known = {f.name for f in fields(cls)}
        raw = {k: v for k, v in raw.items() if k in known}
        raw["hosts"] = hosts
        raw["processes"] = [
            Process(p["role"], p["pid"], p["config"], p.get("pidfile", ""))
            for p in raw["processes"]
        ]
        return cls(**raw)

    def save(self, path: Path) -> None:
        tmp = path.with_suffix(".tmp")
        tmp.write_text(json.dumps(asdict(self), indent=2))
        tmp.replace(path)

    def host(self, name: str) -> LabHost:
        try:
            return next(h for h in self.hosts if h.name == name)
        except StopIteration:
            raise LabError(f"{name} is not a lab host") from None

    def spawn(
        self,
        role: str,
        argv: Sequence[str],
        config: Path,
        log: Path,
        env: dict[str, str] | None = None,
    ) -> Process:
        """Start a daemon in its own session (it outlives `itops lab up`) and track its pid.
        `config` must appear on its command line: that is how `lab down` knows it is ours."""
        log.parent.mkdir(parents=True, exist_ok=True)
        with open(log, "ab") as out:
            proc = subprocess.Popen(
                list(argv),
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=out,
                start_new_session=True,
                env=env,
            )
        process = Process(role, proc.pid, str(config))
        self.processes.append(process)
        return process


class Service(Protocol):
    """Something the lab runs behind its hosts (a cupsd per host, a package mirror, devices…).

    Daemons it starts go through `state.spawn`, so `lab down` stops them with everything else;
    `cleanup` removes its files. `prepare` runs before sshd starts (e.g. to set host env).
    A service may name others it needs in a `requires` tuple; `lab up` adds and orders them."""

    name: str

    def preflight(self, hosts: int) -> None: ...

    def prepare(self, lab: Lab, state: LabState) -> None: ...

    def start(self, lab: Lab, state: LabState) -> None: ...

    def cleanup(self, lab: Lab, state: LabState) -> None: ...


def load_service(name: str) -> Service:
    if name not in SERVICES:
        raise LabError(f"unknown lab service {name!r}", hint=f"one of: {', '.join(SERVICES)}")
    module, _, attr = SERVICES[name].partition(":")
    service: Service = getattr(importlib.import_module(module), attr)()
    return service


def with_requirements(names: Sequence[str]) -> list[str]:
    """Service names with what each requires, every requirement before its dependants."""
    ordered: list[str] = []

    def add(name: str, chain: tuple[str, ...]) -> None:
        if name in ordered:
            return
        if name in chain:
            raise LabError(f"lab services require each other: {' → '.join((*chain, name))}")
        for needed in getattr(load_service(name), "requires", ()):
            add(needed, (*chain, name))
        ordered.append(name)

    for name in dict.fromkeys(names):
        add(name, ())
    return ordered


def address_for(index: int) -> str:
    """Lab host i (0-based) → 127.1.x.y, skipping .0 and .255."""
    return f"127.1.{index // 254}.{index % 254 + 1}"


class Lab:
    """Start, inspect and stop the lab of one workspace."""

    def __init__(self, workspace: Workspace) -> None:
        self.workspace = workspace
        self.dir = workspace.lab_dir
        self.state_file = self.dir / "state.json"

    # -- queries -----------------------------------------------------------------------------
    def state(self) -> LabState | None:
        return LabState.load(self.state_file)

    def require(self) -> LabState:
        state = self.state()
        if state is None:
            raise LabError("no lab is running in this workspace", hint="itops lab up")
        return state

    def service(self, name: str) -> Any:
        """A running service of this lab, for commands that act on it (e.g. `lab break`)."""
        state = self.require()
        if name not in state.services:
            raise LabError(
                f"the lab runs without {name}",
                hint=f"itops lab down && itops lab up --services {name},…",
            )
        return load_service(name)

    def status(self) -> dict[str, Any]:
        state = self.state()
        if state is None:
            return {"running": False, "hosts": []}
        listening = _listening(state.port)
        hosts = []
        for host in state.hosts:
            services = {
                p.role.split(":")[0]: "running" if p.alive() else "down"
                for p in state.processes
                if p.role.endswith(f":{host.name}")
            }
            hosts.append(
                {
                    "name": host.name,
                    "address": f"{host.address}:{host.port}",
                    "ssh": "listening" if host.address in listening else "down",
                    "services": services,
                }
            )
        alive = [p for p in state.processes if p.alive()]
        sites = [
            {
                "site": f"site{r['site']}",
                "netns": r["netns"],
                "bastion": f"{r.get('bastion')} {r.get('address')}:{state.port}",
                "hosts": len(r.get("hosts", [])),
                "sshd": "running"
                if all(
                    p.alive()
                    for p in state.processes
                    if p.role in (f"sshd:site{r['site']}", f"sshd:{r.get('bastion')}")
                )
                else "down",
            }
            for r in state.data.get("sites", [])
        ]
        return {
            "running": bool(alive),
            "sites": sites,
            "lab_id": state.lab_id,
            "port": state.port,
            "user": state.user,
            "services": state.services,
            "processes": len(alive),
            "expected": len(state.processes),
            "hosts": hosts,
        }

    # -- up ----------------------------------------------------------------------------------
    def up(
        self,
        hosts: int = 4,
        *,
        port: int | None = None,
        services: Sequence[str] = DEFAULT_SERVICES,
        sites: int = 0,
        site_hosts: int = 2,
        site_devices: bool = False,
    ) -> LabState:
        """Start the lab; with `sites`, also that many sites behind bastions (`lab.sites`).
        `hosts` may be 0 for a lab of sites only (then with no services)."""
        existing = self.state()
        if existing is not None:
            if any(p.alive() for p in existing.processes):
                raise LabError(
                    f"a lab with {len(existing.hosts)} hosts is already running here",
                    hint="itops lab status, or itops lab down first",
                )
            self._cleanup(existing)
        if hosts == 0 and (not sites or services):
            raise LabError(
                "a lab without hosts is a lab of sites only, with no services",
                hint="itops lab up --hosts 0 --sites 2 --services none",
            )
        plugins = [load_service(name) for name in with_requirements(services)]
        _preflight(hosts)
        if sites:
            from toolkit.lab import sites as lab_sites

            lab_sites.preflight(sites, site_hosts)
        for plugin in plugins:
            plugin.preflight(hosts)
        self.dir.mkdir(parents=True, exist_ok=True)
        os.chmod(self.dir, 0o700)
        lab_id = secrets.token_hex(4)
        runtime = RUNTIME_ROOT / lab_id
        runtime.mkdir(parents=True, exist_ok=True)
        os.chmod(RUNTIME_ROOT, 0o755)
        os.chmod(runtime, 0o755)
        user = _ensure_user()
        addresses = [address_for(i) for i in range(hosts)]
        port = port or _free_port(addresses)
        width = max(2, len(str(hosts)))
        state = LabState(
            lab_id=lab_id,
            user=user.pw_name,
            port=port,
            runtime=str(runtime),
            hosts=[LabHost(f"lab-{i + 1:0{width}d}", addresses[i], port) for i in range(hosts)],
            services=[p.name for p in plugins],
        )
        try:
            state.authorized_keys = self._authorize(user, lab_id, self._client_key())
            for plugin in plugins:
                plugin.prepare(self, state)
            state.save(self.state_file)
            host_keys = self._start_sshd(state)
            state.save(self.state_file)
            for plugin in plugins:
                plugin.start(self, state)
                state.save(self.state_file)
            if sites:
                lab_sites.start(self, state, sites, site_hosts, site_devices)
                state.save(self.state_file)
            _wait_listening(state)
            self._write_inventory(state, host_keys)
            state.save(self.state_file)
        except BaseException:
            self._stop(state)
            self._cleanup(state)
            raise
        return state

    def _client_key(self) -> str:
        private = self.dir / "client_ed25519"
        if not private.exists():
            pem, public = ed25519_keypair(f"itops-lab-client@{socket.gethostname()}")
            private.write_bytes(pem)
            os.chmod(private, 0o600)
            (self.dir / "client_ed25519.pub").write_text(public)
        return (self.dir / "client_ed25519.pub").read_text()

    def _authorize(self, user: pwd.struct_passwd, lab_id: str, public: str) -> str:
        ssh_dir = Path(user.pw_dir) / ".ssh"
        ssh_dir.mkdir(mode=0o700, exist_ok=True)
        os.chown(ssh_dir, user.pw_uid, user.pw_gid)
        keys = ssh_dir / f"authorized_keys.itops-{lab_id}"
        keys.write_text(public)
        os.chown(keys, user.pw_uid, user.pw_gid)
        os.chmod(keys, 0o600)
        return str(keys)

    def _start_sshd(self, state: LabState) -> dict[str, str]:
        """One sshd per 16 hosts; returns host name → its public host key (type and base64)."""
        conf_dir = self.dir / "sshd"
        conf_dir.mkdir(exist_ok=True)
        public_keys: dict[str, str] = {}
        for group, start in enumerate(range(0, len(state.hosts), PER_SSHD)):
            members = state.hosts[start : start + PER_SSHD]
            key_path = conf_dir / f"host_ed25519_{group}"
            pem, public = ed25519_keypair(f"itops-lab-{group}")
            key_path.write_bytes(pem)
            os.chmod(key_path, 0o600)
            for host in members:
                public_keys[host.name] = " ".join(public.split()[:2])
            config = conf_dir / f"sshd_{group}.conf"
            config.write_text(_sshd_config(state, members, key_path))
            check = subprocess.run([SSHD, "-t", "-f", str(config)], capture_output=True, text=True)
            if check.returncode != 0:
                raise LabError(f"sshd rejected {config}: {check.stderr.strip()}")
            state.spawn(
                "sshd",
                [SSHD, "-D", "-e", "-f", str(config)],
                config,
                self.dir / f"sshd_{group}.log",
            )
        return public_keys

    def _write_inventory(self, state: LabState, host_keys: dict[str, str]) -> None:
        import yaml

        known = self.dir / "known_hosts"
        lines = [
            f"[{h.address}]:{h.port} {host_keys[h.name]} itops-lab:{h.name}\n" for h in state.hosts
        ]
        lines += [line if line.endswith("\n") else line + "\n" for line in state.known_hosts]
        known.write_text("".join(lines))
        lab_group = {
            "vars": {
                "platform": "linux",
                "ansible_user": state.user,
                "ansible_ssh_private_key_file": str(self.dir / "client_ed25519"),
                "ansible_ssh_common_args": f"-o UserKnownHostsFile={known} "
                "-o StrictHostKeyChecking=yes",
                "ansible_python_interpreter": "/usr/bin/python3",
            },
            "hosts": {
                h.name: {"ansible_host": h.address, "ansible_port": h.port, **h.vars}
                for h in state.hosts
            },
        }
        document = {"all": {"children": {"lab": lab_group, **state.inventory}}}
        (self.dir / "hosts.yml").write_text(
            "# Written by `itops lab up`; removed by `itops lab down`. Do not edit.\n"
            + yaml.safe_dump(document, sort_keys=False, default_flow_style=False)
        )

    # -- down --------------------------------------------------------------------------------
    def down(self) -> int:
        state = self.state()
        if state is None:
            return 0
        stopped = self._stop(state)
        self._cleanup(state)
        return stopped

    @staticmethod
    def _stop(state: LabState) -> int:
        alive = [p for p in state.processes if p.alive()]
        for proc in alive:
            with contextlib.suppress(ProcessLookupError):
                os.kill(proc.current_pid(), signal.SIGTERM)
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline and any(p.alive() for p in alive):
            time.sleep(0.05)
        for proc in alive:
            if proc.alive():
                with contextlib.suppress(ProcessLookupError):
                    os.kill(proc.current_pid(), signal.SIGKILL)
        for proc in state.processes:  # reap our own children (when the same process started them)
            with contextlib.suppress(ChildProcessError):
                os.waitpid(proc.pid, os.WNOHANG)
        _stop_sessions(state)
        return len(alive)

    def _cleanup(self, state: LabState) -> None:
        for name in reversed(state.services):  # dependants first (apt before its disk)
            with contextlib.suppress(LabError):
                load_service(name).cleanup(self, state)
        if state.data.get("sites"):
            from toolkit.lab import sites as lab_sites

            lab_sites.cleanup(state)
        if state.authorized_keys:
            Path(state.authorized_keys).unlink(missing_ok=True)
        if state.runtime:
            shutil.rmtree(state.runtime, ignore_errors=True)
        shutil.rmtree(self.dir / "site_devices", ignore_errors=True)
        for name in ("hosts.yml", "known_hosts", "state.json"):
            (self.dir / name).unlink(missing_ok=True)
        shutil.rmtree(self.dir / "sshd", ignore_errors=True)


# --------------------------------------------------------------------------- helpers


def _stop_sessions(state: LabState) -> None:
    """Stop what commands run in this lab's SSH sessions left behind (a background job, a
    long command of a killed client): processes of the lab user marked with this lab's id."""
    try:
        uid = pwd.getpwnam(state.user).pw_uid
    except KeyError:
        return
    marker = f"ITOPS_LAB_ID={state.lab_id}".encode()

    def marked() -> list[int]:
        found = []
        for entry in Path("/proc").iterdir():
            if not entry.name.isdigit():
                continue
            try:
                if entry.stat().st_uid == uid and marker in (entry / "environ").read_bytes().split(
                    b"\0"
                ):
                    found.append(int(entry.name))
            except OSError:
                continue  # gone meanwhile
        return found

    for sig, wait in ((signal.SIGTERM, 5.0), (signal.SIGKILL, 2.0)):
        pids = marked()
        if not pids:
            return
        for pid in pids:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, sig)
        deadline = time.monotonic() + wait
        while time.monotonic() < deadline and marked():
            time.sleep(0.05)


def _preflight(hosts: int) -> None:
    if os.geteuid() != 0:
        raise LabError(
            "the lab needs root: it creates the login user itops-lab and runs sshd and services",
            hint="run it with sudo (the lab binds loopback addresses only)",
        )
    if not 0 <= hosts <= 2000:
        raise LabError(f"--hosts must be between 0 (sites only) and 2000, not {hosts}")
    if not os.access(SSHD, os.X_OK):
        raise LabError(f"missing {SSHD}", hint=INSTALL_HINT)
    Path("/run/sshd").mkdir(mode=0o755, exist_ok=True)  # sshd's privilege-separation directory


def _ensure_user() -> pwd.struct_passwd:
    try:
        user = pwd.getpwnam(LAB_USER)
    except KeyError:
        subprocess.run(
            ["useradd", "-m", "-s", "/bin/bash", LAB_USER], check=True, capture_output=True
        )
        user = pwd.getpwnam(LAB_USER)
    # A new account is locked ('!'); with UsePAM no sshd then refuses even key logins.
    # '*' allows key login and still no password login.
    subprocess.run(["usermod", "-p", "*", LAB_USER], check=True, capture_output=True)
    return user


def add_user_to_group(group: str) -> None:
    """Put the lab user in a group a service needs (e.g. lpadmin for CUPS administration)."""
    groups = subprocess.run(["id", "-nG", LAB_USER], capture_output=True, text=True).stdout.split()
    if group not in groups:
        subprocess.run(["usermod", "-aG", group, LAB_USER], check=True, capture_output=True)


def _free_port(addresses: Sequence[str], start: int = 2200, stop: int = 3200) -> int:
    for port in range(start, stop):
        if all(can_bind(a, port) for a in addresses):
            return port
    raise LabError(f"no free port between {start} and {stop} on the lab addresses")


def serve_directory(state: LabState, role: str, directory: Path, log: Path) -> int:
    """Serve a folder over HTTP on 127.0.0.1 (a package or signature mirror); returns the port.

    Python's http.server, started like every lab daemon (tracked, stopped by `lab down`). The
    port is probed from a random start so labs starting at the same moment rarely collide, and
    the server must then be seen listening on it."""
    import sys

    first = 20000 + secrets.randbelow(20000)
    for port in itertools.chain(range(first, 40000), range(20000, first)):
        if not can_bind("127.0.0.1", port):
            continue
        process = state.spawn(
            role,
            [
                sys.executable,
                "-m",
                "http.server",
                "--bind",
                "127.0.0.1",
                "--directory",
                str(directory),
                str(port),
            ],
            directory,
            log,
        )
        deadline = time.monotonic() + 10
        exited = False
        while time.monotonic() < deadline:
            listening = "127.0.0.1" in _listening(port)
            # Our own child: waitpid tells an early exit (a lost race for the port) at once,
            # where /proc/PID/cmdline would still show this process until it execs.
            exited = os.waitpid(process.pid, os.WNOHANG)[0] != 0
            if exited:
                break
            if listening:
                return port
            time.sleep(0.05)
        state.processes.remove(process)
        if not exited:
            os.kill(process.pid, signal.SIGKILL)
            os.waitpid(process.pid, 0)
            raise LabError(f"the {role} server did not start listening (see {log})")
    raise LabError("no free port on 127.0.0.1 for the lab's HTTP server")


def can_bind(address: str, port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        try:
            sock.bind((address, port))
            return True
        except OSError:
            return False


def _listening(port: int) -> set[str]:
    """Addresses in LISTEN state on a TCP port, read from /proc/net/tcp (no probe connection)."""
    found = set()
    for line in Path("/proc/net/tcp").read_text().splitlines()[1:]:
        fields = line.split()
        local, state = fields[1], fields[3]
        hex_addr, hex_port = local.split(":")
        if state == "0A" and int(hex_port, 16) == port:
            found.add(socket.inet_ntoa(bytes.fromhex(hex_addr)[::-1]))
    return found


def _wait_listening(state: LabState, timeout: float = 30) -> None:
    wanted = {h.address for h in state.hosts}
    wait_for(
        lambda: wanted <= _listening(state.port),
        timeout,
        "sshd did not start listening on every lab address (see .itops/lab/sshd_*.log)",
    )


def wait_for(predicate: Callable[[], bool], timeout: float, message: str) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise LabError(message)
        time.sleep(0.05)


def ed25519_keypair(comment: str) -> tuple[bytes, str]:
    """A new OpenSSH-format ed25519 private key and its public line."""
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

    key = Ed25519PrivateKey.generate()
    pem = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.OpenSSH,
        serialization.NoEncryption(),
    )
    public = (
        key.public_key()
        .public_bytes(serialization.Encoding.OpenSSH, serialization.PublicFormat.OpenSSH)
        .decode()
    )
    return pem, f"{public} {comment}\n"


def sshd_logins(state: LabState, host_key: Path) -> list[str]:
    """The sshd_config lines every lab sshd shares (hosts and site bastions): its key, and
    logins only by the lab user's key."""
    return [
        f"HostKey {host_key}",
        "PidFile none",
        "PasswordAuthentication no",
        "KbdInteractiveAuthentication no",
        "UsePAM no",
        "PermitRootLogin no",
        f"AllowUsers {state.user}",
        f"AuthorizedKeysFile {state.authorized_keys}",
    ]


def _sshd_config(state: LabState, members: Sequence[LabHost], host_key: Path) -> str:
    lines = [f"Port {state.port}", *[f"ListenAddress {h.address}" for h in members]]
    lines += [
        *sshd_logins(state, host_key),
        "Subsystem sftp internal-sftp",
        "X11Forwarding no",
        "AllowTcpForwarding no",
        "PrintMotd no",
        "MaxStartups 200:30:400",
        "MaxSessions 32",
        "LogLevel VERBOSE",
    ]
    for h in members:
        # ITOPS_LAB_ID marks every process started in this lab's sessions, even one that
        # detached from its session (setsid, nohup): `lab down` finds and stops them by it.
        env = {"ITOPS_LAB_HOST": h.name, "ITOPS_LAB_ID": state.lab_id, **h.env}
        for key, value in env.items():
            if not re.fullmatch(r"[A-Z_][A-Z0-9_]*", key) or re.search(r"[\s\"\\]", value):
                raise LabError(f"cannot pass {key}={value!r} to lab sessions")
        lines += [
            f"Match LocalAddress {h.address}",
            "    SetEnv " + " ".join(f"{k}={v}" for k, v in env.items()),
        ]
    return "\n".join(lines) + "\n"
