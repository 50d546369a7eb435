"""The local lab: real OpenSSH hosts on loopback addresses, with real services (CUPS) behind them.

`itops lab up --hosts N` starts N SSH identities on 127.1.x.y (one sshd serves up to 16 addresses,
OpenSSH's limit), a cupsd per host reached through the host's own `CUPS_SERVER` (sshd sets it per
listen address), writes `.itops/lab/hosts.yml` (inventory group `lab`) and `.itops/lab/known_hosts`,
and records every pid it started. `itops lab down` stops exactly those processes. Lab hosts share
this machine's filesystem: they are distinct SSH endpoints, not isolated machines.

Needs root: it creates the unprivileged login user `itops-lab` (key login only, never root) and runs
sshd and cupsd. Every listener binds 127.0.0.0/8 only.
"""

from __future__ import annotations

import contextlib
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
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from .errors import ToolkitError
from .workspace import Workspace

LAB_USER = "itops-lab"
RUNTIME_ROOT = Path("/run/itops-lab")
SSHD = "/usr/sbin/sshd"
CUPSD = "/usr/sbin/cupsd"
PER_SSHD = 16  # OpenSSH's MAX_LISTEN_SOCKS
MAX_CUPS_HOSTS = 32
PRINTER = "office"
INSTALL_HINT = "apt-get install openssh-server openssh-client cups-daemon cups-client cups-bsd"


class LabError(ToolkitError):
    """The lab cannot be started, inspected or stopped as asked."""


@dataclass
class LabHost:
    name: str
    address: str
    port: int
    cups_socket: str | None = None


@dataclass
class Process:
    role: str  # "sshd" or "cupsd:<host>"
    pid: int
    config: str

    def alive(self) -> bool:
        """Still running, and still ours: its command line names our config file. (sshd
        rewrites its title, so the command line is searched, not split on NULs.)"""
        try:
            cmdline = Path(f"/proc/{self.pid}/cmdline").read_bytes()
        except OSError:
            return False
        path = re.escape(self.config.encode())
        return re.search(rb"(^|[\0 ])" + path + rb"([\0 ]|$)", cmdline) is not None


@dataclass
class LabState:
    lab_id: str
    user: str
    port: int
    hosts: list[LabHost] = field(default_factory=list)
    processes: list[Process] = field(default_factory=list)
    runtime: str = ""
    authorized_keys: str = ""

    @classmethod
    def load(cls, path: Path) -> LabState | None:
        if not path.is_file():
            return None
        raw = json.loads(path.read_text())
        return cls(
            lab_id=raw["lab_id"],
            user=raw["user"],
            port=raw["port"],
            hosts=[LabHost(**h) for h in raw["hosts"]],
            processes=[Process(**p) for p in raw["processes"]],
            runtime=raw["runtime"],
            authorized_keys=raw["authorized_keys"],
        )

    def save(self, path: Path) -> None:
        tmp = path.with_suffix(".tmp")
        tmp.write_text(json.dumps(asdict(self), indent=2))
        tmp.replace(path)


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

    def status(self) -> dict[str, Any]:
        state = self.state()
        if state is None:
            return {"running": False, "hosts": []}
        listening = _listening(state.port)
        hosts = []
        for host in state.hosts:
            cups = next((p for p in state.processes if p.role == f"cupsd:{host.name}"), None)
            hosts.append(
                {
                    "name": host.name,
                    "address": f"{host.address}:{host.port}",
                    "ssh": "listening" if host.address in listening else "down",
                    "cups": None if cups is None else ("running" if cups.alive() else "down"),
                }
            )
        alive = [p for p in state.processes if p.alive()]
        return {
            "running": bool(alive),
            "lab_id": state.lab_id,
            "port": state.port,
            "user": state.user,
            "processes": len(alive),
            "expected": len(state.processes),
            "hosts": hosts,
        }

    # -- up ----------------------------------------------------------------------------------
    def up(self, hosts: int = 4, *, port: int | None = None, cups: bool = True) -> LabState:
        existing = self.state()
        if existing is not None:
            if any(p.alive() for p in existing.processes):
                raise LabError(
                    f"a lab with {len(existing.hosts)} hosts is already running here",
                    hint="itops lab status, or itops lab down first",
                )
            self._cleanup(existing)
        _preflight(hosts, cups)
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
        )
        try:
            client_pub = self._client_key()
            state.authorized_keys = self._authorize(user, lab_id, client_pub)
            if cups:
                for host in state.hosts:
                    host.cups_socket = str(runtime / f"{host.name}.cups.sock")
            state.save(self.state_file)
            host_keys = self._start_sshd(state)
            if cups:
                self._start_cups(state)
            state.save(self.state_file)
            _wait_listening(state)
            self._write_inventory(state, host_keys)
        except BaseException:
            self._stop(state)
            self._cleanup(state)
            raise
        return state

    def _client_key(self) -> str:
        private = self.dir / "client_ed25519"
        if not private.exists():
            pem, public = _ed25519_keypair(f"itops-lab-client@{socket.gethostname()}")
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
        """One sshd per 16 hosts; returns host name → public host key line part."""
        conf_dir = self.dir / "sshd"
        conf_dir.mkdir(exist_ok=True)
        public_keys: dict[str, str] = {}
        for group, start in enumerate(range(0, len(state.hosts), PER_SSHD)):
            members = state.hosts[start : start + PER_SSHD]
            key_path = conf_dir / f"host_ed25519_{group}"
            pem, public = _ed25519_keypair(f"itops-lab-{group}")
            key_path.write_bytes(pem)
            os.chmod(key_path, 0o600)
            for host in members:
                public_keys[host.name] = " ".join(public.split()[:2])
            config = conf_dir / f"sshd_{group}.conf"
            config.write_text(_sshd_config(state, members, key_path))
            check = subprocess.run([SSHD, "-t", "-f", str(config)], capture_output=True, text=True)
            if check.returncode != 0:
                raise LabError(f"sshd rejected {config}: {check.stderr.strip()}")
            log = open(self.dir / f"sshd_{group}.log", "ab")  # noqa: SIM115 - handed to the daemon
            proc = subprocess.Popen(
                [SSHD, "-D", "-e", "-f", str(config)],
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=log,
                start_new_session=True,
            )
            log.close()
            state.processes.append(Process("sshd", proc.pid, str(config)))
        return public_keys

    def _start_cups(self, state: LabState) -> None:
        for host in state.hosts:
            root = self.dir / "cups" / host.name
            for sub in ("spool", "cache", "state", "log", "ppd", "ssl"):
                (root / sub).mkdir(parents=True, exist_ok=True)
            assert host.cups_socket
            (root / "cupsd.conf").write_text(CUPSD_CONF.format(socket=host.cups_socket))
            (root / "cups-files.conf").write_text(CUPS_FILES_CONF.format(root=root))
            log = open(root / "log" / "cupsd.out", "ab")  # noqa: SIM115 - handed to the daemon
            proc = subprocess.Popen(
                [CUPSD, "-f", "-c", str(root / "cupsd.conf"), "-s", str(root / "cups-files.conf")],
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=log,
                start_new_session=True,
            )
            log.close()
            state.processes.append(
                Process(f"cupsd:{host.name}", proc.pid, str(root / "cupsd.conf"))
            )
        for host in state.hosts:
            assert host.cups_socket
            _wait_for(
                lambda h=host: Path(h.cups_socket or "").exists(),
                15,
                f"cupsd for {host.name} did not start (see {self.dir}/cups/{host.name}/log)",
            )
            self.cups(
                host,
                [
                    "lpadmin",
                    "-p",
                    PRINTER,
                    "-E",
                    "-v",
                    "file:/dev/null",
                    "-D",
                    f"Lab printer on {host.name}",
                ],
            )

    def _write_inventory(self, state: LabState, host_keys: dict[str, str]) -> None:
        known = self.dir / "known_hosts"
        known.write_text(
            "".join(
                f"[{h.address}]:{h.port} {host_keys[h.name]} itops-lab:{h.name}\n"
                for h in state.hosts
            )
        )
        lines = [
            "# Written by `itops lab up`; removed by `itops lab down`. Do not edit.",
            "all:",
            "  children:",
            "    lab:",
            "      vars:",
            "        platform: linux",
            f"        ansible_user: {state.user}",
            f"        ansible_ssh_private_key_file: {self.dir / 'client_ed25519'}",
            "        ansible_ssh_common_args: >-",
            f"          -o UserKnownHostsFile={known} -o StrictHostKeyChecking=yes",
            "        ansible_python_interpreter: /usr/bin/python3",
            "      hosts:",
        ]
        lines += [
            f"        {h.name}: {{ansible_host: {h.address}, ansible_port: {h.port}}}"
            for h in state.hosts
        ]
        (self.dir / "hosts.yml").write_text("\n".join(lines) + "\n")

    # -- faults ------------------------------------------------------------------------------
    def break_printer(self, names: Iterable[str], jobs: int = 3) -> list[str]:
        """Put a lab host's printer in the state L2 is called for: paused with stuck jobs."""
        state = self._require()
        by_name = {h.name: h for h in state.hosts}
        broken = []
        for name in names:
            host = by_name[name]
            if not host.cups_socket:
                raise LabError(f"{name} has no CUPS (the lab was started with --no-cups)")
            self.cups(host, ["cupsdisable", "-r", "paper jam", PRINTER])
            for _ in range(jobs):
                self.cups(host, ["lp", "-d", PRINTER, "-o", "raw"], stdin=b"itops lab test page\n")
            broken.append(name)
        return broken

    def cups(self, host: LabHost, argv: Sequence[str], stdin: bytes | None = None) -> str:
        """Run a CUPS client command locally against a lab host's own cupsd."""
        env = {**os.environ, "CUPS_SERVER": host.cups_socket or "", "LC_ALL": "C"}
        result = subprocess.run(list(argv), env=env, input=stdin, capture_output=True, timeout=30)
        if result.returncode != 0:
            raise LabError(
                f"{' '.join(argv)} on {host.name} failed: {result.stderr.decode().strip()}"
            )
        return result.stdout.decode()

    # -- down --------------------------------------------------------------------------------
    def down(self) -> int:
        state = self.state()
        if state is None:
            return 0
        stopped = self._stop(state)
        self._cleanup(state)
        return stopped

    def _require(self) -> LabState:
        state = self.state()
        if state is None:
            raise LabError("no lab is running in this workspace", hint="itops lab up")
        return state

    @staticmethod
    def _stop(state: LabState) -> int:
        alive = [p for p in state.processes if p.alive()]
        for proc in alive:
            os.kill(proc.pid, signal.SIGTERM)
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline and any(p.alive() for p in alive):
            time.sleep(0.05)
        for proc in alive:
            if proc.alive():
                os.kill(proc.pid, signal.SIGKILL)
        for proc in alive:  # reap our own children (when the same process started them)
            with contextlib.suppress(ChildProcessError):
                os.waitpid(proc.pid, os.WNOHANG)
        return len(alive)

    def _cleanup(self, state: LabState) -> None:
        if state.authorized_keys:
            Path(state.authorized_keys).unlink(missing_ok=True)
        if state.runtime:
            shutil.rmtree(state.runtime, ignore_errors=True)
        for name in ("hosts.yml", "known_hosts", "state.json"):
            (self.dir / name).unlink(missing_ok=True)
        shutil.rmtree(self.dir / "cups", ignore_errors=True)
        shutil.rmtree(self.dir / "sshd", ignore_errors=True)


# --------------------------------------------------------------------------- helpers


def _preflight(hosts: int, cups: bool) -> None:
    if os.geteuid() != 0:
        raise LabError(
            "the lab needs root: it creates the login user itops-lab and runs sshd and cupsd",
            hint="run it with sudo (the lab binds loopback addresses only)",
        )
    if not 1 <= hosts <= 2000:
        raise LabError(f"--hosts must be between 1 and 2000, not {hosts}")
    if cups and hosts > MAX_CUPS_HOSTS:
        raise LabError(
            f"CUPS on {hosts} hosts would start {hosts} cupsd processes",
            hint=f"use --no-cups for labs over {MAX_CUPS_HOSTS} hosts",
        )
    missing = [b for b in (SSHD, *([CUPSD] if cups else [])) if not os.access(b, os.X_OK)]
    if missing:
        raise LabError(f"missing {', '.join(missing)}", hint=INSTALL_HINT)
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
    groups = subprocess.run(["id", "-nG", LAB_USER], capture_output=True, text=True).stdout.split()
    if "lpadmin" not in groups and _group_exists("lpadmin"):
        subprocess.run(["usermod", "-aG", "lpadmin", LAB_USER], check=True, capture_output=True)
    return user


def _group_exists(name: str) -> bool:
    import grp

    try:
        grp.getgrnam(name)
        return True
    except KeyError:
        return False


def _free_port(addresses: Sequence[str], start: int = 2200, stop: int = 3200) -> int:
    for port in range(start, stop):
        if all(_can_bind(a, port) for a in addresses):
            return port
    raise LabError(f"no free port between {start} and {stop} on the lab addresses")


def _can_bind(address: str, port: int) -> bool:
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
    _wait_for(
        lambda: wanted <= _listening(state.port),
        timeout,
        "sshd did not start listening on every lab address (see .itops/lab/sshd_*.log)",
    )


def _wait_for(predicate: Any, timeout: float, message: str) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise LabError(message)
        time.sleep(0.05)


def _ed25519_keypair(comment: str) -> tuple[bytes, str]:
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


def _sshd_config(state: LabState, members: Sequence[LabHost], host_key: Path) -> str:
    lines = [f"Port {state.port}", *[f"ListenAddress {h.address}" for h in members]]
    lines += [
        f"HostKey {host_key}",
        "PidFile none",
        "PasswordAuthentication no",
        "KbdInteractiveAuthentication no",
        "UsePAM no",
        "PermitRootLogin no",
        f"AllowUsers {state.user}",
        f"AuthorizedKeysFile {state.authorized_keys}",
        "Subsystem sftp internal-sftp",
        "X11Forwarding no",
        "AllowTcpForwarding no",
        "PrintMotd no",
        "MaxStartups 200:30:400",
        "MaxSessions 32",
        "LogLevel VERBOSE",
    ]
    for h in members:
        env = [f"ITOPS_LAB_HOST={h.name}"]
        if h.cups_socket:
            env.append(f"CUPS_SERVER={h.cups_socket}")
        lines += [f"Match LocalAddress {h.address}", f"    SetEnv {' '.join(env)}"]
    return "\n".join(lines) + "\n"


CUPSD_CONF = """\
LogLevel warn
Listen {socket}
Browsing No
WebInterface No
DefaultAuthType Basic
<Location />
  Order allow,deny
  Allow all
</Location>
<Policy default>
  JobPrivateAccess default
  JobPrivateValues default
  SubscriptionPrivateAccess default
  SubscriptionPrivateValues default
  <Limit All>
    Order deny,allow
  </Limit>
  <Limit Cancel-Job Cancel-Jobs Cancel-My-Jobs Purge-Jobs CUPS-Authenticate-Job>
    Require user @OWNER @SYSTEM
    Order deny,allow
  </Limit>
  <Limit Pause-Printer Resume-Printer Enable-Printer Disable-Printer Hold-New-Jobs \
Release-Held-New-Jobs Restart-Printer CUPS-Accept-Jobs CUPS-Reject-Jobs CUPS-Add-Modify-Printer \
CUPS-Delete-Printer CUPS-Add-Modify-Class CUPS-Delete-Class CUPS-Set-Default>
    AuthType Default
    Require user @SYSTEM
    Order deny,allow
  </Limit>
</Policy>
"""

CUPS_FILES_CONF = """\
ServerRoot {root}
RequestRoot {root}/spool
CacheDir {root}/cache
StateDir {root}/state
AccessLog {root}/log/access_log
ErrorLog {root}/log/error_log
PageLog {root}/log/page_log
FileDevice Yes
SystemGroup lpadmin root
"""
