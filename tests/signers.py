"""SSH keys for tests of signed approvals: one ed25519 key per operator, made once per session
with `ssh-keygen -t ed25519 -N ''`, and the workspace's allowed_signers listing them."""

from __future__ import annotations

import subprocess
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

from toolkit.secrets.identity import Identity

NAMES = ("alice", "bob", "carol")


@dataclass(frozen=True)
class Operators:
    folder: Path

    def key(self, name: str) -> Path:
        return self.folder / name

    def line(self, name: str, principal: str | None = None) -> str:
        kind, blob = (self.folder / f"{name}.pub").read_text().split()[:2]
        return f"{principal or name} {kind} {blob}\n"

    def write(self, path: Path, names: Iterable[str] = NAMES) -> Path:
        """An allowed_signers file at `path` listing `names`' keys under their names."""
        path.write_text("".join(self.line(n) for n in names))
        return path

    def identity(self, name: str, allowed_signers: Path) -> Identity:
        return Identity(allowed_signers, self.key(name))


def make_operators(folder: Path, names: Iterable[str] = NAMES) -> Operators:
    folder.mkdir(parents=True, exist_ok=True)
    for name in names:
        subprocess.run(
            ["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", name, "-f", str(folder / name)],
            check=True,
            stdin=subprocess.DEVNULL,
        )
    return Operators(folder)
