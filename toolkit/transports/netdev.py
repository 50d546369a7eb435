"""Network devices over netmiko: strict host keys, enable from a reference, errors read from output.

The only module that imports netmiko (the `[netdev]` extra). One netmiko session per host carries a
whole check → apply → verify, like the other transports.

- **Host keys**: the host's pinned keys are looked up in the workspace known_hosts files (the same
  lookup as the SSH transport) *before* connecting: an unpinned device is refused without a packet
  sent. netmiko then runs with `ssh_strict=True, system_host_keys=False, alt_host_keys=True` and an
  `alt_key_file` holding exactly those keys (netmiko's default accepts any key). A key that differs is
  refused by paramiko during the key exchange, before any credential is sent; netmiko reports that
  as a NetmikoTimeoutException, which becomes HostKeyMismatch here.
- **Credentials**: `password` (or `ansible_password`) and `enable_secret` (or
  `ansible_become_password`) are references resolved through the run's CredentialStore, so the
  redactor masks them everywhere; `ssh_key` logs in with a key instead.
- **Reads** go through `send_command`, **changes** through `send_config_set` one line at a time,
  stopping at the first line the device rejects. `save()` writes the running configuration to
  startup (netmiko's per-platform `save_config`); tasks call it only after verifying.
- **Errors**: network CLIs have no exit codes. Output lines matching the platform's error patterns
  (`% Invalid input`, `% Incomplete command`, `syntax error`, `Error:` …) make the result's exit code 1
  and are copied to stderr.
- **No file transfer**: the transport implements `Transport` and `ConfigSession`, not
  `FileTransfer`; a task's `ctx.put`/`ctx.get` on a device is refused before anything is sent.
- **Jump hosts** (`Host.jump`, docs/jump-hosts.md): netmiko gets `sock=`, a paramiko direct-tcpip
  channel of one paramiko connection per hop chain (`ParamikoJumps`), shared by every device
  behind it. Each hop's key is compared with its pinned keys right after the key exchange, before
  its credentials are sent; the device's own key is then checked by netmiko as above.
- **Session log** (`.itops/sessions/HOST.log`, mode 0600): everything netmiko reads and writes,
  written only after the run's redactor masked every secret (held back across reads, so a secret
  split between two reads is masked too) and secret-bearing configuration lines were scrubbed.
  A log past 5 MiB is rotated when a session opens (HOST.log.1 … HOST.log.5, the oldest dropped).
"""

from __future__ import annotations

import contextlib
import os
import re
import shutil
import socket
import tempfile
import threading
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import paramiko
from netmiko import ConnectHandler
from netmiko.exceptions import (
    NetmikoAuthenticationException,
    NetmikoBaseException,
    NetmikoTimeoutException,
    ReadTimeout,
)
from netmiko.session_log import SessionLog

from toolkit.errors import (
    AuthFailed,
    CommandTimeout,
    HostKeyUnknown,
    TransportError,
    Unreachable,
    ValidationError,
)
from toolkit.inventory import Host, refuse_rerouting_ssh_args
from toolkit.remediation.network import config as netconfig
from toolkit.remediation.quoting import NETCLI, Command, config_display, config_lines
from toolkit.secrets.credentials import CredentialStore, Redactor, Secret
from toolkit.transports.base import CommandResult, ConnectOptions
from toolkit.transports.ssh import (
    USER_KNOWN_HOSTS,
    KnownHosts,
    auth_refused,
    key_mismatch,
    known_hosts_line,
)

# inventory platform → netmiko device_type (a host may override with `netmiko_device_type`)
DEVICE_TYPES = {
    "cisco_ios": "cisco_ios",
    "cisco_xe": "cisco_xe",
    "cisco_nxos": "cisco_nxos",
    "cisco_xr": "cisco_xr",
    "cisco_asa": "cisco_asa",
    "arista_eos": "arista_eos",
    "juniper_junos": "juniper_junos",
    "huawei_vrp": "huawei",
    "huawei": "huawei",
}

_IOS_ERRORS = (
    r"^\s*% ?(?:Invalid|Incomplete|Ambiguous|Unknown|Unrecognized|Bad|Error|Access denied|"
    r"Not authorized|Authorization failed|Failed)\b",
    r"^\s*Command rejected\b",
)
# Shown by several NOSes, and by the simulators the tests use (FakeNOS, fake-switches).
_GENERIC_ERRORS = (r"^\s*(?:Unknown command|No such command)\b",)
ERROR_PATTERNS: dict[str, tuple[str, ...]] = {
    "cisco_ios": _IOS_ERRORS,
    "cisco_xe": _IOS_ERRORS,
    "cisco_nxos": (*_IOS_ERRORS, r"^\s*ERROR:"),
    "cisco_xr": (*_IOS_ERRORS, r"^\s*!!% "),
    "cisco_asa": (*_IOS_ERRORS, r"^\s*ERROR:"),
    "arista_eos": _IOS_ERRORS,
    "juniper_junos": (
        r"^\s*syntax error\b",
        r"^\s*unknown command\b",
        r"^\s*error:",
        r"^\s*missing argument\b",
        r"^\s*invalid (?:value|interface|command)\b",
    ),
    "huawei_vrp": (
        r"^\s*Error:",
        r"^\s*Unrecognized command\b",
        r"^\s*Incomplete command\b",
        r"^\s*(?:Wrong|Too many) parameters?\b",
    ),
}
ERROR_PATTERNS["huawei"] = ERROR_PATTERNS["huawei_vrp"]


def error_regex(platform: str) -> re.Pattern[str]:
    patterns = ERROR_PATTERNS.get(platform, _IOS_ERRORS) + _GENERIC_ERRORS
    return re.compile("|".join(f"(?:{p})" for p in patterns), re.IGNORECASE | re.MULTILINE)


SESSION_LOG_MAX_BYTES = 5 * 1024 * 1024
SESSION_LOG_KEEP = 5


def rotate(
    path: Path, *, max_bytes: int = SESSION_LOG_MAX_BYTES, keep: int = SESSION_LOG_KEEP
) -> None:
    """Once HOST.log reaches max_bytes: HOST.log → HOST.log.1 → … → HOST.log.KEEP, the previous
    HOST.log.KEEP dropped."""
    try:
        if path.stat().st_size < max_bytes:
            return
    except FileNotFoundError:
        return
    for n in range(keep - 1, 0, -1):
        older = path.with_name(f"{path.name}.{n}")
        if older.exists():
            os.replace(older, path.with_name(f"{path.name}.{n + 1}"))
    os.replace(path, path.with_name(f"{path.name}.1"))


class MaskedSessionLog(SessionLog):
    """netmiko's session log, but nothing reaches the file before it is masked.

    Registered secrets are masked by a StreamMasker (which holds back a tail, so a secret split
    across two reads is still caught), then complete lines are scrubbed of secret-bearing
    configuration values; a partial line waits for its end or for close()."""

    def __init__(self, path: Path, redactor: Redactor, platform: str) -> None:
        super().__init__(file_name=str(path), file_mode="append", record_writes=True)
        self._masker = redactor.stream()
        self._platform = platform
        self._line = ""

    def open(self) -> None:
        path = Path(str(self.file_name))
        path.parent.mkdir(parents=True, exist_ok=True)
        rotate(path)
        os.close(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600))
        super().open()

    def write(self, data: str) -> None:
        self._emit(self._masker.feed(data))

    def flush(self) -> None:
        """Nothing: text is written once masked and complete (see close)."""

    def close(self) -> None:
        if self.session_log is not None:
            self._emit(self._masker.flush())
            if self._line:
                self._write(netconfig.scrub_line(self._platform, self._line))
                self._line = ""
        super().close()

    def _emit(self, text: str) -> None:
        if not text or self.session_log is None:
            self._line += text
            return
        *complete, self._line = (self._line + text).split("\n")
        if complete:
            self._write("".join(netconfig.scrub_line(self._platform, ln) + "\n" for ln in complete))


class NetdevFactory:
    """Opens NetdevTransports for a run: one known_hosts parse, one private key-file folder."""

    def __init__(self, options: ConnectOptions, credentials: CredentialStore) -> None:
        self.options = options
        self.credentials = credentials
        self.known_hosts = KnownHosts([*options.known_hosts, USER_KNOWN_HOSTS])
        self._dir = Path(tempfile.mkdtemp(prefix="itops-netdev-"))
        self._lock = threading.Lock()
        self.jumps = ParamikoJumps(self)

    def open(self, host: Host) -> NetdevTransport:
        refuse_rerouting_ssh_args(host)
        trusted = self.known_hosts.require(host)
        sock = self.jumps.channel(host) if host.jump else None
        key_file = self._dir / f"{host.name}.known_hosts"
        with self._lock:
            key_file.write_text("".join(known_hosts_line(host, key) for key in trusted))
        device_type = str(host.var("netmiko_device_type") or DEVICE_TYPES.get(host.platform, ""))
        if not device_type:
            raise ValidationError(
                f"{host.name}: no netmiko device type for platform {host.platform!r}",
                hint="set netmiko_device_type for this host in the inventory",
            )
        if not host.user:
            raise ValidationError(f"{host.name}: network devices need a user (ansible_user)")
        secret = self._reference(host, ("enable_secret", "ansible_become_password"), "enable")
        password = self._reference(host, ("password", "ansible_password"), "password")
        key = host.var("ssh_key") or host.var("ansible_ssh_private_key_file")
        passphrase = self._reference(host, ("ssh_key_passphrase",), "key passphrase")
        session_log = None
        if self.options.session_log_dir is not None:
            session_log = MaskedSessionLog(
                self.options.session_log_dir / f"{host.name}.log",
                self.credentials.redactor,
                host.platform,
            )
        timeout = self.options.connect_timeout
        params: dict[str, Any] = {
            "device_type": device_type,
            "host": host.address,
            "port": host.port,
            "username": host.user,
            "password": password.reveal() if password else "",
            "secret": secret.reveal() if secret else "",
            "ssh_strict": True,
            "system_host_keys": False,
            "alt_host_keys": True,
            "alt_key_file": str(key_file),
            "allow_agent": False,
            "use_keys": bool(key),
            "key_file": os.path.expanduser(str(key)) if key else None,
            "passphrase": passphrase.reveal() if passphrase else None,
            "conn_timeout": timeout,
            "auth_timeout": timeout,
            "banner_timeout": timeout,
            "read_timeout_override": None,
            "session_log": session_log,
            "sock": sock,
        }
        try:
            conn = ConnectHandler(**params)
        except NetmikoAuthenticationException:
            raise auth_refused(
                host.name, host.user, "ansible_user and the password reference for this device"
            ) from None
        except NetmikoTimeoutException as exc:
            raise _connect_error(host, str(exc)) from None
        except (OSError, EOFError, paramiko.SSHException, ValueError) as exc:
            raise Unreachable(host.name, f"{type(exc).__name__}: {exc}") from None
        transport = NetdevTransport(host, conn, self.options)
        if secret is not None:
            try:
                conn.enable()
            except (ValueError, ReadTimeout, OSError) as exc:
                transport.close()
                raise AuthFailed(
                    host.name,
                    f"enable mode refused: {str(exc).splitlines()[0]}",
                    hint="check the enable_secret reference for this device",
                ) from None
        return transport

    def _reference(self, host: Host, keys: Sequence[str], label: str) -> Secret | None:
        for key in keys:
            value = host.var(key)
            if value:
                return self.credentials.resolve(str(value), f"{host.name} {label}")
        return None

    def close(self) -> None:
        self.jumps.close()
        shutil.rmtree(self._dir, ignore_errors=True)


class _Chain:
    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.transport: paramiko.Transport | None = None
        self.error: TransportError | None = None


class ParamikoJumps:
    """One paramiko connection per jump-host chain, shared by every device behind it (each
    device gets a direct-tcpip channel of it). A hop's failure is kept for the run: every device
    behind it fails alike, with nothing sent to them. Closed when the run ends."""

    def __init__(self, factory: NetdevFactory) -> None:
        self._factory = factory
        self._chains: dict[tuple[Any, ...], _Chain] = {}
        self._lock = threading.Lock()
        self.opened = 0

    def channel(self, host: Host) -> paramiko.Channel:
        """A channel to the host's own address through its last hop."""
        last = self._through(host)
        try:
            return last.open_channel(
                "direct-tcpip",
                (host.address, host.port),
                ("127.0.0.1", 0),
                timeout=self._factory.options.connect_timeout,
            )
        except (paramiko.SSHException, OSError, EOFError) as exc:
            hop = host.jump[-1].name
            raise Unreachable(
                host.name, f"via jump host {hop}: {exc or type(exc).__name__}"
            ) from None

    def _through(self, host: Host) -> paramiko.Transport:
        previous: paramiko.Transport | None = None
        chain: tuple[Any, ...] = ()
        for hop in host.jump:
            chain = (*chain, (hop.name, hop.address, hop.port, hop.user))
            with self._lock:
                entry = self._chains.setdefault(chain, _Chain())
            with entry.lock:
                if entry.transport is not None and not entry.transport.is_active():
                    entry.transport = None  # lost since: open it again
                if entry.transport is None and entry.error is None:
                    try:
                        entry.transport = self._open(hop, previous)
                    except TransportError as exc:
                        entry.error = exc
                if entry.error is not None:
                    error = entry.error
                    raise type(error)(
                        host.name, f"via jump host {hop.name}: {error.detail}", hint=error.hint
                    )
                assert entry.transport is not None
                previous = entry.transport
        assert previous is not None
        return previous

    def _open(self, hop: Host, through: paramiko.Transport | None) -> paramiko.Transport:
        options = self._factory.options
        trusted = self._factory.known_hosts.require(hop)
        self.opened += 1
        try:
            if through is None:
                sock: Any = socket.create_connection(
                    (hop.address, hop.port), timeout=options.connect_timeout
                )
            else:
                sock = through.open_channel(
                    "direct-tcpip", (hop.address, hop.port), ("127.0.0.1", 0),
                    timeout=options.connect_timeout,
                )  # fmt: skip
            transport = paramiko.Transport(sock)
            transport.banner_timeout = options.connect_timeout
            transport.start_client(timeout=options.connect_timeout)
        except (OSError, EOFError, paramiko.SSHException) as exc:
            raise Unreachable(hop.name, f"{type(exc).__name__}: {exc}") from None
        presented = transport.get_remote_server_key().asbytes()
        if not any(key.public_data == presented for key in trusted):
            transport.close()
            raise key_mismatch(hop.name)
        try:
            self._login(hop, transport)
        except paramiko.AuthenticationException:
            transport.close()
            raise auth_refused(
                hop.name, hop.user, "ssh_key / ansible_user / password for this jump host"
            ) from None
        except (OSError, EOFError, paramiko.SSHException) as exc:
            transport.close()
            raise Unreachable(hop.name, f"{type(exc).__name__}: {exc}") from None
        return transport

    def _login(self, hop: Host, transport: paramiko.Transport) -> None:
        factory = self._factory
        user = hop.user or _local_user()
        key = hop.var("ssh_key") or hop.var("ansible_ssh_private_key_file")
        if key:
            passphrase = factory._reference(hop, ("ssh_key_passphrase",), "key passphrase")
            try:
                pkey = paramiko.PKey.from_path(
                    os.path.expanduser(str(key)), passphrase.reveal() if passphrase else None
                )
            except (OSError, paramiko.SSHException) as exc:
                raise AuthFailed(hop.name, f"cannot load SSH key {key}: {exc}") from None
            transport.auth_publickey(user, pkey)
            if transport.is_authenticated():
                return
        password = factory._reference(hop, ("password", "ansible_password"), "password")
        if password is None:
            raise paramiko.AuthenticationException("no credential left to try")
        transport.auth_password(user, password.reveal())

    def close(self) -> None:
        with self._lock:
            chains = sorted(self._chains.items(), key=lambda item: len(item[0]), reverse=True)
            self._chains.clear()
        for _, entry in chains:
            if entry.transport is not None:
                entry.transport.close()


def _local_user() -> str:
    import getpass

    return getpass.getuser()


def _connect_error(host: Host, message: str) -> TransportError:
    if "does not match" in message:
        return key_mismatch(host.name, "the device was replaced")
    if "not found in known_hosts" in message:
        return HostKeyUnknown(host.name, "no pinned host key matched; refusing to connect")
    if "TCP connection to device failed" in message:
        return Unreachable(host.name, "connection refused or timed out")
    first = next((ln.strip() for ln in message.splitlines() if ln.strip()), message)
    return Unreachable(host.name, first[:200])


class NetdevTransport:
    """One netmiko session to one network device (see the module docstring)."""

    def __init__(self, host: Host, conn: Any, options: ConnectOptions) -> None:
        self.host = host
        self._conn = conn
        self._options = options
        self._errors = error_regex(host.platform)
        self._interrupted = threading.Event()
        self.notices: tuple[str, ...] = ()

    def scrub(self, text: str) -> str:
        """What the runner records of any output: secret-bearing config values scrubbed."""
        return netconfig.scrub(self.host.platform, text)

    # -- reads -----------------------------------------------------------------------------
    def run(
        self, command: Command, *, stdin: bytes | Secret | None = None, timeout: float | None = None
    ) -> CommandResult:
        if command.shell != NETCLI:
            raise TypeError(f"the netdev transport runs network CLI commands, not {command.shell}")
        if stdin is not None:
            raise ValidationError("network CLI commands take no standard input")
        limit = timeout if timeout is not None else self._options.command_timeout
        started = time.monotonic()
        output = self._call(self._conn.send_command, command.text, read_timeout=limit)
        return self._result(command.display, str(output), started)

    # -- changes ---------------------------------------------------------------------------
    def configure(self, lines: Sequence[str], *, timeout: float | None = None) -> CommandResult:
        """Type configuration lines in configuration mode, stopping at the first rejected one."""
        checked = config_lines(lines)
        limit = timeout if timeout is not None else self._options.command_timeout
        started = time.monotonic()
        output: list[str] = []
        failed: str | None = None
        try:
            output.append(self._call(self._conn.config_mode))
            for number, line in enumerate(checked, 1):
                if self._interrupted.is_set():  # a CLI line cannot be taken back once typed:
                    failed = f"interrupted before line {number}"  # stop between lines
                    break
                out = str(
                    self._call(
                        self._conn.send_config_set,
                        [line],
                        enter_config_mode=False,
                        exit_config_mode=False,
                        read_timeout=limit,
                    )
                )
                output.append(out)
                errors = [ln.strip() for ln in out.splitlines() if self._errors.search(ln)]
                if errors:
                    shown = self.scrub(line.strip())
                    failed = f"line {number} `{shown}` rejected: {' '.join(errors)}"
                    break
        finally:
            self._leave_config_mode()
        display = config_display(checked, self.scrub)
        text = "".join(output)
        if failed is not None:
            return CommandResult(display, 1, text, failed, time.monotonic() - started)
        return self._result(display, text, started)

    def save(self) -> CommandResult:
        """Write the running configuration to startup (only after the change was verified)."""
        started = time.monotonic()
        output = self._call(self._conn.save_config)
        return self._result("save running configuration", str(output), started)

    def _leave_config_mode(self) -> None:
        """`end` (netmiko's exit_config_mode); devices that lack it get `exit`s instead."""
        with contextlib.suppress(ValueError, CommandTimeout):
            self._call(self._conn.exit_config_mode)
        for _ in range(4):
            if not self._call(self._conn.check_config_mode):
                return
            prompt = re.escape(self._conn.base_prompt) + r".*[>#]"
            self._call(self._conn.send_command, "exit", expect_string=prompt, read_timeout=10)

    # -- plumbing ---------------------------------------------------------------------------
    def _call(self, method: Any, *args: Any, **kwargs: Any) -> Any:
        try:
            return method(*args, **kwargs)
        except ReadTimeout:
            raise CommandTimeout(self.host.name, "the device did not return its prompt") from None
        except (OSError, EOFError, paramiko.SSHException, NetmikoBaseException) as exc:
            # ReadException "Channel stream closed", WriteException: the session is gone
            raise Unreachable(self.host.name, f"session lost: {exc}") from None

    def _result(self, display: str, output: str, started: float) -> CommandResult:
        output = output.replace("\r\n", "\n")
        errors = [line.strip() for line in output.splitlines() if self._errors.search(line)]
        return CommandResult(
            display, 1 if errors else 0, output, "\n".join(errors), time.monotonic() - started
        )

    def interrupt(self) -> None:
        """A push stops before its next line (the apply step then rolls back what was typed);
        a read in flight ends at its prompt or its timeout."""
        self._interrupted.set()

    def close(self) -> None:
        """Close the SSH session (no `exit` dialogue: some NOSes take seconds to answer it)."""
        with contextlib.suppress(Exception):
            self._conn.paramiko_cleanup()
        log = self._conn.session_log
        if log is not None:
            with contextlib.suppress(Exception):
                log.close()
        self._conn.session_log = None
