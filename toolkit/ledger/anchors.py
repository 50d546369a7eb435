"""Anchors: the ledger's head, signed and kept outside the database, so that what the hash chain
alone cannot show is caught by a plain `itops audit verify`.

The chain proves that no record was edited, inserted or reordered; it cannot prove that the
newest records were not cut off, or that someone who can drop the append-only triggers did not
rewrite every record from some point on and recompute every hash. An anchor pins the head at a
moment: after every command that wrote to the ledger (and on `itops audit anchor`), the head's
sequence number and hash are appended to an anchor log, a JSON Lines file outside the database
(`[ledger] anchor_log`, default `.itops/anchors-<ledger>.jsonl`, one per ledger URL; put it on
another machine's mount, or
ship it to syslog or a git remote, for an attacker who owns this one). Each line also carries
the SHA-256 of the line before it (the log is a chain of its own) and an SSH signature over all
of that by the workspace's anchoring key (`.itops/anchor_ed25519`, made on first use with
`ssh-keygen`, namespace `itops-anchor`).

`verify` then checks the anchor log's own chain (a line edited or removed breaks it), the newest
line's signature (one `ssh-keygen` call, whatever the log's length), and every anchor against
the ledger: a record an anchor names must be there with the anchored hash (a truncation or a
rewrite shows at the first anchor past it).
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import tempfile
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

from toolkit.errors import ToolkitError

NAMESPACE = "itops-anchor"
PRINCIPAL = "itops-anchor"
GENESIS = "0" * 64


class AnchorError(ToolkitError):
    """The anchor log or its key cannot be used."""


class ShipError(AnchorError):
    """The anchor is in the local log, but its copy could not be sent to syslog."""


@dataclass(frozen=True)
class Anchor:
    seq: int
    hash: str
    at: str
    prev: str  # SHA-256 of the previous line of the log (GENESIS for the first)
    signature: str = ""

    def message(self) -> str:
        """What the signature covers."""
        return f"itops anchor\n{self.seq}\n{self.hash}\n{self.at}\n{self.prev}\n"

    def line(self) -> str:
        return json.dumps(asdict(self), sort_keys=True, separators=(",", ":"))


@dataclass(frozen=True)
class AnchorCheck:
    """What the anchors say about a ledger: `problem` None when every anchor holds."""

    anchors: int
    newest: Anchor | None
    problem: str | None = None

    @property
    def used(self) -> str:
        if self.newest is None:
            return "no anchor yet"
        return (
            f"{self.anchors} anchor(s), the newest at record #{self.newest.seq} ({self.newest.at})"
        )


class AnchorLog:
    """The anchor log of one workspace (see the module docstring)."""

    def __init__(self, path: Path, key: Path, syslog: str | None = None) -> None:
        self.path = path
        self.key = key
        self.syslog = syslog  # where each new anchor line is also sent (see `ship`)

    # -- writing ----------------------------------------------------------------------------
    def last_line(self) -> str | None:
        """The newest line, read from the end (the log grows by one line per command)."""
        try:
            with open(self.path, "rb") as log:
                log.seek(0, os.SEEK_END)
                size = log.tell()
                log.seek(max(0, size - 65536))
                tail = log.read().decode()
        except FileNotFoundError:
            return None
        lines = [ln for ln in tail.splitlines() if ln.strip()]
        return lines[-1] if lines else None

    def newest_seq(self) -> int:
        line = self.last_line()
        return int(json.loads(line)["seq"]) if line else 0

    def append(self, seq: int, head_hash: str, at: str) -> Anchor | None:
        """Anchor the head (seq, hash); None if the newest anchor already names it. Several
        itops processes append one after the other (a lock beside the log): each line follows
        the one before it."""
        import fcntl

        self.path.parent.mkdir(parents=True, exist_ok=True)
        lock = os.open(f"{self.path}.lock", os.O_WRONLY | os.O_CREAT, 0o600)
        try:
            fcntl.flock(lock, fcntl.LOCK_EX)
            last_line = self.last_line()
            if last_line is not None and Anchor(**json.loads(last_line)).seq >= seq:
                return None
            prev = hashlib.sha256(last_line.encode()).hexdigest() if last_line else GENESIS
            anchor = Anchor(seq, head_hash, at, prev)
            anchor = Anchor(seq, head_hash, at, prev, self._sign(anchor.message()))
            fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
            with os.fdopen(fd, "a") as out:
                out.write(anchor.line() + "\n")
        finally:
            os.close(lock)  # (closing releases the lock)
        if self.syslog:
            ship(anchor.line(), self.syslog)
        return anchor

    def _sign(self, message: str) -> str:
        return self.sign(message, NAMESPACE)

    def sign(self, message: str | bytes, namespace: str) -> str:
        """An SSH signature of `message` by the anchoring key, in `namespace` (the anchors'
        own, or another use of the same key such as an evidence bundle's manifest)."""
        self._ensure_key()
        with tempfile.TemporaryDirectory(prefix="itops-anchor-") as folder:
            data = Path(folder) / "head"
            data.write_bytes(message.encode() if isinstance(message, str) else message)
            done = _keygen("-Y", "sign", "-q", "-n", namespace, "-f", str(self.key), str(data))
            signature = Path(f"{data}.sig")
            if done.returncode != 0 or not signature.is_file():
                raise AnchorError(f"cannot sign with {self.key}: {done.stderr.strip()}")
            return signature.read_text()

    @property
    def public_key(self) -> str:
        """The anchoring key's public half (its .pub file's line), made with the key if need be."""
        self._ensure_key()
        return Path(f"{self.key}.pub").read_text().strip()

    def _ensure_key(self) -> None:
        if self.key.is_file():
            return
        self.key.parent.mkdir(parents=True, exist_ok=True)
        done = _keygen("-q", "-t", "ed25519", "-N", "", "-C", PRINCIPAL, "-f", str(self.key))
        if done.returncode != 0:
            raise AnchorError(f"cannot make the anchoring key {self.key}: {done.stderr.strip()}")
        os.chmod(self.key, 0o600)

    # -- reading ----------------------------------------------------------------------------
    def lines(self) -> list[str]:
        """The log's lines, verbatim (what an evidence bundle copies)."""
        return self._lines()

    def _lines(self) -> list[str]:
        try:
            return [ln for ln in self.path.read_text().splitlines() if ln.strip()]
        except FileNotFoundError:
            return []

    def read(self, lines: Sequence[str] | None = None) -> list[Anchor]:
        anchors = []
        for n, line in enumerate(self._lines() if lines is None else lines, 1):
            try:
                anchors.append(Anchor(**json.loads(line)))
            except (ValueError, TypeError):
                raise AnchorError(f"{self.path}:{n}: not an anchor line") from None
        return anchors

    def check(
        self, hashes_of: Callable[[Sequence[int]], Mapping[int, str]], head_seq: int | None
    ) -> AnchorCheck:
        """Check the log's own chain, its newest signature, and every anchor against the
        ledger: `hashes_of(seqs)` gives its hash per seq (Ledger.hashes), `head_seq` its head."""
        lines = self._lines()
        try:
            anchors = self.read(lines)
        except AnchorError as exc:
            return AnchorCheck(len(lines), None, exc.message)
        if not anchors:
            return AnchorCheck(0, None)
        prev = GENESIS
        for n, (anchor, line) in enumerate(zip(anchors, lines, strict=True), 1):
            if anchor.prev != prev:
                return AnchorCheck(
                    len(anchors), anchors[-1],
                    f"the anchor log {self.path} was edited: line {n} does not follow line {n - 1}",
                )  # fmt: skip
            prev = hashlib.sha256(line.encode()).hexdigest()
        return self._against(anchors, hashes_of, head_seq)

    def check_copy(
        self,
        copy: Path,
        hashes_of: Callable[[Sequence[int]], Mapping[int, str]],
        head_seq: int | None,
    ) -> AnchorCheck:
        """Check the ledger against a copy of the anchors kept elsewhere: a syslog server's
        file or an export from a SIEM (lines carrying `itops-anchor: {…}`), or a copy of the
        anchor log. Whoever owns this machine can rewrite its anchor log and has its key; the
        lines a remote syslog already holds are out of their reach. A copy may miss lines (UDP
        drops some), so its own chain is not required: each anchor it holds must match the
        ledger, and its newest must carry this workspace's signature."""
        try:
            text = copy.read_text(errors="replace")
        except OSError as exc:
            return AnchorCheck(0, None, f"cannot read the anchor copy {copy}: {exc.strerror}")
        found: dict[int, Anchor] = {}
        for n, line in enumerate(text.splitlines(), 1):
            if MARK not in line and not line.startswith("{"):
                continue  # a syslog file holds other messages too
            body = line.split(MARK, 1)[1] if MARK in line else line
            try:
                anchor = Anchor(**json.loads(body.strip()))
            except (ValueError, TypeError):
                return AnchorCheck(len(found), None, f"{copy}:{n}: not an anchor line")
            found[anchor.seq] = anchor
        if not found:
            return AnchorCheck(0, None, f"{copy} holds no anchor")
        return self._against([found[seq] for seq in sorted(found)], hashes_of, head_seq)

    def _against(
        self,
        anchors: Sequence[Anchor],
        hashes_of: Callable[[Sequence[int]], Mapping[int, str]],
        head_seq: int | None,
    ) -> AnchorCheck:
        """The newest anchor's signature, then every anchor against the ledger."""
        newest = anchors[-1]
        why = self._verify(newest)
        if why is not None:
            return AnchorCheck(len(anchors), newest, why)
        hashes = hashes_of(sorted({a.seq for a in anchors}))
        for anchor in anchors:
            stored = hashes.get(anchor.seq)
            if head_seq is None or anchor.seq > head_seq:
                return AnchorCheck(
                    len(anchors), newest,
                    f"records after #{head_seq or 0} are missing: the anchor of {anchor.at} names "
                    f"record #{anchor.seq} (the newest records were cut off)",
                )  # fmt: skip
            if stored != anchor.hash:
                return AnchorCheck(
                    len(anchors), newest,
                    f"record #{anchor.seq} is not the one anchored at {anchor.at} (the ledger was "
                    "rewritten from there on, or that record was replaced)",
                )  # fmt: skip
        return AnchorCheck(len(anchors), newest)

    def _verify(self, anchor: Anchor) -> str | None:
        public = Path(f"{self.key}.pub")
        if not public.is_file():
            return f"the anchoring key's public half {public} is missing: anchors cannot be checked"
        if not verify_signature(public.read_text(), anchor.message(), anchor.signature, NAMESPACE):
            return (
                f"the newest anchor (record #{anchor.seq}) is not signed by this workspace's "
                f"anchoring key {public}: the anchor log was forged"
            )
        return None


MARK = "itops-anchor: "


def verify_signature(public_key: str, message: str | bytes, signature: str, namespace: str) -> bool:
    """Whether `signature` is `public_key`'s (an OpenSSH public key line) over `message` in
    `namespace` (`ssh-keygen -Y verify` against a one-line allowed_signers)."""
    try:
        algorithm, blob = public_key.split()[:2]
    except ValueError:
        return False
    if not algorithm.replace("-", "").replace("@", "").replace(".", "").isalnum():
        return False
    with tempfile.TemporaryDirectory(prefix="itops-anchor-") as folder:
        signers = Path(folder) / "allowed_signers"
        signers.write_text(f'{PRINCIPAL} namespaces="{namespace}" {algorithm} {blob}\n')
        sig = Path(folder) / "data.sig"
        sig.write_text(signature)
        data = message.decode() if isinstance(message, bytes) else message
        done = _keygen(
            "-Y", "verify", "-f", str(signers), "-I", PRINCIPAL, "-n", namespace,
            "-s", str(sig), message=data,
        )  # fmt: skip
    return done.returncode == 0


def fingerprint(public_key: str) -> str:
    """`SHA256:…` of an OpenSSH public key line, as `ssh-keygen -l` prints it."""
    import base64
    import binascii

    try:
        blob = base64.b64decode(public_key.split()[1], validate=True)
    except (IndexError, ValueError, binascii.Error):
        raise AnchorError("not an OpenSSH public key") from None
    return "SHA256:" + base64.b64encode(hashlib.sha256(blob).digest()).decode().rstrip("=")


def ship(line: str, target: str) -> None:
    """Send one anchor line to syslog (facility authpriv, where security logs go), so a copy
    lives on a machine an attacker of this one does not own: `target` is `unix:/dev/log` (the
    local daemon, which forwards), `udp://HOST:PORT` or `tcp://HOST:PORT` (RFC 6587 newline
    framing)."""
    import logging
    import socket
    from logging.handlers import SysLogHandler

    scheme, _, rest = target.partition(":")
    if scheme == "unix":
        address: str | tuple[str, int] = rest
        kind = socket.SOCK_DGRAM
    elif scheme in ("udp", "tcp") and rest.startswith("//"):
        host, _, port = rest[2:].rpartition(":")
        if not host or not port.isdigit():
            raise AnchorError(f"anchor_syslog {target!r}: expected {scheme}://HOST:PORT")
        address = (host.strip("[]"), int(port))
        kind = socket.SOCK_STREAM if scheme == "tcp" else socket.SOCK_DGRAM
    else:
        raise AnchorError(
            f"anchor_syslog {target!r}: not unix:PATH, udp://HOST:PORT or tcp://HOST:PORT"
        )

    class Strict(SysLogHandler):
        def handleError(self, record: logging.LogRecord) -> None:
            raise  # (called inside emit's except block) the caller says what failed

    message = MARK + line + ("\n" if kind == socket.SOCK_STREAM else "")
    try:
        handler = Strict(address, SysLogHandler.LOG_AUTHPRIV, kind)
        handler.append_nul = False
        handler.setFormatter(logging.Formatter("%(message)s"))
        try:
            handler.emit(logging.LogRecord("itops", logging.INFO, __file__, 0, message, None, None))
        finally:
            handler.close()
    except OSError as exc:
        raise ShipError(
            f"could not send the ledger's anchor to syslog at {target}: {exc.strerror or exc} "
            "(it is in the local anchor log)"
        ) from None


def _keygen(*args: str, message: str | None = None) -> subprocess.CompletedProcess[str]:
    found = shutil.which("ssh-keygen")
    if found is None:
        raise AnchorError(
            "ssh-keygen is not installed: anchors cannot be signed or checked",
            hint="install the OpenSSH client (e.g. apt install openssh-client)",
        )
    return subprocess.run(
        [found, *args],
        input=message,
        stdin=None if message is not None else subprocess.DEVNULL,
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
