"""Hand a secret made during a run (a generated password) to the engineer, once, outside every record.

A remediation calls `ctx.handover(label, secret)`; the runner keeps the Handover on the host's
result (never in its notes, output, JSON or the ledger) and the CLI delivers it after the run:
printed once on stderr, or appended to a local file created 0600 (`to_file`). The redactor keeps
masking the value everywhere else.
"""

from __future__ import annotations

import os
import stat
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path

from toolkit.errors import ToolkitError
from toolkit.secrets.credentials import Secret


@dataclass(frozen=True)
class Handover:
    host: str
    label: str  # e.g. "new password for jdoe"
    secret: Secret = field(repr=False)
    to_file: str | None = None


def deliver(handovers: Iterable[Handover], echo: Callable[[str], None]) -> None:
    """Print each secret once through `echo` (stderr), or append it to its 0600 file."""
    for h in handovers:
        if h.to_file:
            try:
                write_secret_line(Path(h.to_file), f"{h.host}\t{h.label}\t{h.secret.reveal()}\n")
            except ToolkitError as exc:
                # The host already has this secret: losing it would lock the user out.
                echo(f"{h.host}: {exc.message}; showing it here instead")
            else:
                echo(f"{h.host}: {h.label} written to {h.to_file} (mode 0600), not recorded")
                continue
        echo(f"{h.host}: {h.label} (shown once, not recorded): {h.secret.reveal()}")


def write_secret_line(path: Path, line: str) -> None:
    """Append to a file only its owner can read: created 0600, refused if it is anything else."""
    flags = os.O_WRONLY | os.O_CREAT | os.O_APPEND | os.O_NOFOLLOW | os.O_CLOEXEC
    try:
        fd = os.open(path, flags, 0o600)
    except OSError as exc:
        raise ToolkitError(f"cannot write the secret to {path}: {exc.strerror}") from None
    try:
        info = os.fstat(fd)
        if not stat.S_ISREG(info.st_mode) or info.st_mode & 0o077 or info.st_uid != os.geteuid():
            raise ToolkitError(
                f"refusing to write a secret to {path}: it is readable by others or not yours",
                hint="give a new file name, or chmod 600 the file first",
            )
        os.write(fd, line.encode())
    finally:
        os.close(fd)
