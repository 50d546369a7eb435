"""The Transport interface every protocol implements, and the value it returns."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol, runtime_checkable

from toolkit.errors import ValidationError
from toolkit.inventory import Host
from toolkit.remediation.quoting import Command
from toolkit.secrets.credentials import Secret


@dataclass(frozen=True)
class CommandResult:
    """What one remote command did. A non-zero exit is data, never an exception."""

    command: str  # the display form: secrets masked
    exit_code: int
    stdout: str
    stderr: str
    duration: float

    @property
    def ok(self) -> bool:
        return self.exit_code == 0


@runtime_checkable
class Transport(Protocol):
    """One open connection to one host, used for a whole check → apply → verify sequence: the
    commands every transport runs. What only some offer is a Protocol of its own that those
    implement (FileTransfer: SSH; ConfigSession: network devices), so a caller asks
    `isinstance(transport, FileTransfer)` and no transport has a method that only raises.

    `run` returns a CommandResult whatever the exit code, and raises the typed TransportErrors
    (Unreachable, AuthFailed, HostKeyMismatch, CommandTimeout, …) for everything else.
    """

    host: Host
    # Warnings raised when it opened (an insecure WinRM connection the inventory allowed): the
    # runner copies them into the host's notes, every run. Empty for most.
    notices: Sequence[str]

    def run(
        self, command: Command, *, stdin: bytes | Secret | None = None, timeout: float | None = None
    ) -> CommandResult: ...

    def interrupt(self) -> None:
        """Ctrl-C, from another thread: stop the command in flight on the host (its `run`
        raises CommandInterrupted saying whether the stop was confirmed); start no other."""
        ...

    def close(self) -> None: ...


@runtime_checkable
class FileTransfer(Protocol):
    """Copying files to and from the host (SSH: SFTP on the same connection)."""

    def put(self, local: Path, remote: str) -> None: ...

    def get(self, remote: str, local: Path) -> None: ...


@runtime_checkable
class ConfigSession(Protocol):
    """A network device's configuration mode: configuration lines and saving them are verbs of
    their own. `configure` stops at the first line the device rejects and returns a failed
    result naming it; `scrub` removes secret-bearing configuration values (`password 7 …`)
    from any text of this device before it is recorded."""

    def configure(self, lines: Sequence[str], *, timeout: float | None = None) -> CommandResult: ...

    def save(self) -> CommandResult: ...

    def scrub(self, text: str) -> str: ...


class NetworkTransport(Transport, ConfigSession, Protocol):
    """A network device's transport: commands and a configuration session."""


@runtime_checkable
class DirectorySession(Protocol):
    """A directory's verbs (LDAP: Active Directory, OpenLDAP). Errors the directory answers are
    `transports.ldap.DirectoryError` (a ToolkitError with the LDAP result code and the server's
    message). Its transport also says (DirectoryTransport) what the directory is."""

    def search(
        self,
        base: str,
        scope: str,
        filterstr: str,
        attrs: Sequence[str],
        *,
        timeout: float | None = None,
    ) -> list[tuple[str, dict[str, list[bytes]]]]: ...

    def modify(
        self,
        dn: str,
        changes: Sequence[tuple[str, str, Sequence[bytes] | Secret | None]],
        *,
        timeout: float | None = None,
    ) -> None: ...

    def set_password(self, dn: str, password: Secret, *, timeout: float | None = None) -> None: ...

    def bind_check(self, dn: str, password: Secret) -> str: ...


class DirectoryTransport(Transport, DirectorySession, Protocol):
    """A directory's transport: `kind` is the host's platform (active_directory | ldap),
    `base_dn` the naming context searched, `encrypted` whether the connection is TLS-protected,
    `privileged_groups` the groups the workspace adds to the built-in privileged ones."""

    kind: str
    base_dn: str
    encrypted: bool
    privileged_groups: tuple[str, ...]


@dataclass(frozen=True)
class ConnectOptions:
    """Per-run connection settings, shared by every transport."""

    connect_timeout: float = 10.0
    command_timeout: float = 60.0
    known_hosts: tuple[Path, ...] = ()
    session_log_dir: Path | None = None  # network device session logs (masked), if set
    # [directory] privileged_groups of itops.toml: beyond Domain Admins, Enterprise Admins, …
    directory_privileged_groups: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        # The settings refuse these at load and as options; a library caller that passes one
        # anyway must not get a run where every host "times out after -5s".
        for name in ("connect_timeout", "command_timeout"):
            if not getattr(self, name) > 0:
                raise ValidationError(f"{name} must be a positive number of seconds")
