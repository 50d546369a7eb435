"""The one error family: every expected failure is a ToolkitError with a message and a hint.

The CLI turns these into a clean message and an exit code; anything else reaching the user is a bug.
"""

from __future__ import annotations

import difflib
from collections.abc import Iterable


class ToolkitError(Exception):
    """An expected error the user can act on."""

    exit_code = 2

    def __init__(self, message: str, *, hint: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.hint = hint

    def __str__(self) -> str:
        return self.message


class ConfigError(ToolkitError):
    """The workspace or its itops.toml is missing or invalid."""


class InventoryError(ToolkitError):
    """An inventory file is malformed; the message names the file and line."""


class NotFound(ToolkitError):
    """A host, group, task or ticket name that does not exist."""

    @classmethod
    def named(cls, kind: str, name: str, known: Iterable[str], where: str = "") -> NotFound:
        """`unknown task 'x'` with the closest known names as the hint."""
        close = difflib.get_close_matches(name, list(known), n=3, cutoff=0.5)
        hint = f"did you mean: {', '.join(close)}?" if close else None
        return cls(f"unknown {kind} {name!r}" + (f" {where}" if where else ""), hint=hint)


class ValidationError(ToolkitError):
    """A value given by the user was refused before anything ran."""


class TicketRequired(ToolkitError):
    """A change was asked for without a ticket."""


class ChangeRefused(ToolkitError):
    """A change was attempted outside the apply step (check and verify may only read)."""


class CommandFailed(ToolkitError):
    """A change command exited non-zero (reads return their exit code as data instead)."""

    def __init__(self, command: str, exit_code: int, stderr: str) -> None:
        detail = (stderr.strip().splitlines() or [""])[-1][:200]
        super().__init__(f"`{command}` exited {exit_code}" + (f": {detail}" if detail else ""))
        self.command = command
        self.exit_code = exit_code


class Unsupported(ToolkitError):
    """The task asked for something this host's transport does not offer (file transfer on a
    WinRM host, configuration on a Linux host): the task's mistake, not the host's."""


class DeviceRejected(ToolkitError):
    """A network device refused a command or a configuration line (its CLI said so)."""


class LedgerError(ToolkitError):
    """The ledger cannot be opened or written."""


class TransportError(ToolkitError):
    """Talking to a remote host failed; subclasses say how. The host's outcome records which."""

    kind = "transport-error"

    def __init__(self, host: str, message: str, *, hint: str | None = None) -> None:
        super().__init__(f"{host}: {message}", hint=hint)
        self.host = host
        self.detail = message


class Unreachable(TransportError):
    """The host did not answer (refused, timed out, no route) within the connect timeout."""

    kind = "unreachable"


class AuthFailed(TransportError):
    """The host answered but refused our credentials."""

    kind = "auth-failed"


class HostKeyError(TransportError):
    """The host's key could not be verified; nothing was sent to it."""

    kind = "host-key"


class HostKeyUnknown(HostKeyError):
    """No pinned key for this host: it must be trusted explicitly first."""

    kind = "host-key-unknown"


class HostKeyMismatch(HostKeyError):
    """The host presented a key different from the pinned one: possible interception."""

    kind = "host-key-mismatch"


class CertificateError(TransportError):
    """A TLS certificate could not be validated (WinRM over HTTPS)."""

    kind = "certificate"


class CommandTimeout(TransportError):
    """A remote command did not finish within its timeout: it was stopped on the host (its
    detail says whether that was confirmed), so the host may have been changed part-way."""

    kind = "command-timeout"


class CommandInterrupted(TransportError):
    """The run was interrupted (Ctrl-C) while a command ran: it was stopped on the host (its
    detail says whether that was confirmed), so the host may have been changed part-way."""

    kind = "interrupted"
