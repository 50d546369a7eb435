"""Who an operator is: an SSH key listed under their name in the workspace's `allowed_signers`.

A name in ITOPS_OPERATOR or `[operator] name` can be typed by anyone, so it is only a display
label. What an approval trusts is a signature: the operator signs a statement with the SSH key they
already have (`ssh-keygen -Y sign`, namespace `itops-approval`; a private key file, or a public key
whose private half is in ssh-agent), and anyone holding the workspace's `allowed_signers` file
(OpenSSH's format: `principal key-type key` per line) learns whose it is with
`ssh-keygen -Y find-principals` and `-Y verify`. A signature that does not verify, or whose key is
listed under no principal (or under several), is an error — never a fallback to the label.

OpenSSH's own `ssh-keygen` does the work, run without a shell: it is wherever OpenSSH is, and it is
the reference implementation of the SSHSIG format; a Python SSHSIG library would be a new
dependency to trust with the same job (see docs/security.md).

Settings in itops.toml (ITOPS_SIGNING_KEY overrides `key`):

    [identity]
    allowed_signers = "allowed_signers"   # relative to the workspace
    key = "~/.ssh/id_ed25519"             # default: the first of id_ed25519, id_ecdsa, id_rsa
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from toolkit.errors import ToolkitError

if TYPE_CHECKING:
    from toolkit.workspace import Workspace

NAMESPACE = "itops-approval"
DEFAULT_KEYS = ("id_ed25519", "id_ecdsa", "id_rsa")
VERIFY_TIMEOUT = 30.0  # seconds for ssh-keygen to check (signing may wait for a passphrase: none)
PROBE = "itops identity probe"
SETUP_HINT = (
    "each operator adds a line `NAME KEY-TYPE KEY` (their public key, e.g. "
    '`echo "alice $(cat ~/.ssh/id_ed25519.pub)" >> allowed_signers`) to the workspace\'s '
    "allowed_signers file ([identity] allowed_signers); `itops identity show` checks yours "
    "(see docs/security.md)"
)
_PATTERN = re.compile(r"[*?!,]")


class IdentityError(ToolkitError):
    """An operator's identity cannot be proven: no key, no allowed_signers, a bad signature."""


def _keygen() -> str:
    found = shutil.which("ssh-keygen")
    if found is None:
        raise IdentityError(
            "ssh-keygen is not installed: signatures cannot be made or checked",
            hint="install the OpenSSH client (e.g. apt install openssh-client)",
        )
    return found


def _run(*args: str, message: str | None = None) -> subprocess.CompletedProcess[str]:
    """ssh-keygen with these arguments, no shell; `message` on stdin (else none)."""
    return subprocess.run(
        [_keygen(), *args],
        input=message,
        stdin=None if message is not None else subprocess.DEVNULL,
        capture_output=True,
        text=True,
        timeout=VERIFY_TIMEOUT,
        check=False,
    )


def sign(message: str, *, key: Path) -> str:
    """An armored SSH signature of `message` (namespace itops-approval) with `key`: a private key
    file, or a public key whose private half ssh-agent holds."""
    if not key.is_file():
        raise IdentityError(
            f"signing key {key} does not exist",
            hint="set ITOPS_SIGNING_KEY or [identity] key to your SSH key",
        )
    with tempfile.TemporaryDirectory(prefix="itops-sign-") as folder:
        data = Path(folder) / "message"
        data.write_text(message)
        done = subprocess.run(
            [_keygen(), "-Y", "sign", "-q", "-n", NAMESPACE, "-f", str(key), str(data)],
            capture_output=True,  # (a passphrase is asked on the terminal, not on stdin)
            text=True,
            check=False,
        )
        signature = Path(f"{data}.sig")
        if done.returncode != 0 or not signature.is_file():
            raise IdentityError(
                f"cannot sign with {key}: {done.stderr.strip() or 'ssh-keygen failed'}",
                hint="a public key needs its private half in ssh-agent (ssh-add)",
            )
        return signature.read_text()


def principal_of(message: str, signature: str, *, allowed_signers: Path) -> str:
    """The one principal of `allowed_signers` whose key made `signature` over `message`.

    IdentityError when the file is missing, the key is listed under no principal or under
    several (or a pattern), or the signature does not verify."""
    if not allowed_signers.is_file():
        raise IdentityError(
            f"no allowed_signers file at {allowed_signers}: nobody's identity can be checked",
            hint=SETUP_HINT,
        )
    if not signature.strip():
        raise IdentityError("there is no signature")
    with tempfile.TemporaryDirectory(prefix="itops-verify-") as folder:
        sig = Path(folder) / "message.sig"
        sig.write_text(signature)
        found = _run("-Y", "find-principals", "-s", str(sig), "-f", str(allowed_signers))
        names = sorted({n for line in found.stdout.split() for n in line.split(",") if n})
        names = sorted({*names, *_listed_as(signature, allowed_signers)})
        if found.returncode != 0 or not names:
            raise IdentityError(
                f"the signing key is not listed in {allowed_signers.name}", hint=SETUP_HINT
            )
        if len(names) > 1 or _PATTERN.search(names[0]):
            raise IdentityError(
                f"the signing key is listed under several principals ({', '.join(names)}) in "
                f"{allowed_signers.name}: it identifies nobody",
                hint="list each key under exactly one name",
            )
        verify = ["-Y", "verify", "-f", str(allowed_signers), "-I", names[0], "-n", NAMESPACE]
        verified = _run(*verify, "-s", str(sig), message=message)
    if verified.returncode != 0:
        raise IdentityError(f"the signature of {names[0]} does not verify")
    return names[0]


def _listed_as(signature: str, allowed_signers: Path) -> set[str]:
    """Every principal the signature's key is listed under (find-principals reports only the
    first line that lists a key: a second line would go unnoticed)."""
    import base64
    import struct

    body = "".join(line for line in signature.splitlines() if not line.startswith("-----"))
    try:
        blob = base64.b64decode(body)
        if blob[:6] != b"SSHSIG":
            return set()
        (size,) = struct.unpack(">I", blob[10:14])  # after the magic and the uint32 version
        key = base64.b64encode(blob[14 : 14 + size]).decode()
    except (ValueError, struct.error):
        return set()
    names: set[str] = set()
    for line in allowed_signers.read_text().splitlines():
        fields = line.split()
        if fields and not fields[0].startswith("#") and key in fields[1:]:
            names.update(n.strip('"') for n in fields[0].split(",") if n)
    return names


def fingerprint(key: Path) -> str:
    """The key's SHA-256 fingerprint, as ssh-keygen -l prints it."""
    done = _run("-l", "-f", str(key))
    if done.returncode != 0:
        raise IdentityError(f"cannot read the key {key}: {done.stderr.strip()}")
    parts = done.stdout.split()
    return parts[1] if len(parts) > 1 else done.stdout.strip()


@dataclass(frozen=True)
class Identity:
    """This operator's signing key and the workspace's allowed_signers: sign, and check others."""

    allowed_signers: Path
    key: Path | None = None

    @classmethod
    def of(cls, ws: Workspace) -> Identity:
        section = ws.section("identity")
        given = os.environ.get("ITOPS_SIGNING_KEY") or section.get("key")
        if given:
            key: Path | None = ws.path(str(given))
        else:
            home = Path.home() / ".ssh"
            key = next((home / n for n in DEFAULT_KEYS if (home / n).is_file()), None)
        return cls(ws.path(str(section.get("allowed_signers", "allowed_signers"))), key)

    @property
    def configured(self) -> bool:
        return self.allowed_signers.is_file()

    def sign(self, message: str) -> str:
        if self.key is None:
            raise IdentityError(
                "no SSH key to sign with (none of ~/.ssh/id_ed25519, id_ecdsa, id_rsa)",
                hint="set ITOPS_SIGNING_KEY or [identity] key, or create one: "
                "ssh-keygen -t ed25519",
            )
        return sign(message, key=self.key)

    def principal_of(self, message: str, signature: str) -> str:
        return principal_of(message, signature, allowed_signers=self.allowed_signers)

    def whoami(self) -> dict[str, str | None]:
        """This operator's key, its fingerprint and the principal it proves (None when the key
        is not listed, with the reason)."""
        key = self.key
        shown: dict[str, str | None] = {
            "key": str(key) if key else None,
            "fingerprint": fingerprint(key) if key and key.is_file() else None,
            "allowed_signers": str(self.allowed_signers),
            "principal": None,
            "problem": None,
        }
        try:
            shown["principal"] = self.principal_of(PROBE, self.sign(PROBE))
        except IdentityError as exc:
            shown["problem"] = exc.message
        return shown
