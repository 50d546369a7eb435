"""Network configuration backups: one file per device in a git repository inside the workspace.

`.itops/backups/network/` is an ordinary git repository (the `git` command, nothing to install in
Python): `DEVICE.cfg` holds the device's sanitised running configuration and, when it differs, its
startup configuration. A backup run writes the files of the devices that changed and commits them
once, with the task and the ticket or change id in the message; `history` and `diff` read it back.
git's own index lock aside, writers serialise on a lock file, so two itops processes (the nightly
job and an engineer) never interleave a write and a commit.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import re
import subprocess
import threading
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

from toolkit.errors import NotFound, ToolkitError, ValidationError

FOLDER = "backups/network"
_DEVICE = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.-]*")
_REV = re.compile(r"[A-Za-z0-9_.^~/-]{1,80}")
_THREAD_LOCK = threading.Lock()
GIT_ENV = {
    "GIT_AUTHOR_NAME": "itops",
    "GIT_AUTHOR_EMAIL": "itops@localhost",
    "GIT_COMMITTER_NAME": "itops",
    "GIT_COMMITTER_EMAIL": "itops@localhost",
    "GIT_CONFIG_NOSYSTEM": "1",
    "GIT_TERMINAL_PROMPT": "0",
}


@dataclass(frozen=True)
class Revision:
    commit: str
    date: str
    message: str


def device_file(device: str) -> str:
    if not _DEVICE.fullmatch(device):
        raise ValidationError(f"invalid device name {device!r}")
    return f"{device}.cfg"


class ConfigRepository:
    """Network device configurations in a git repository, one file per device (created on
    first write; every run that changed something is one commit)."""

    def __init__(self, root: Path) -> None:
        self.root = root

    # -- git plumbing ----------------------------------------------------------------------
    def _git(self, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        # The caller's GIT_DIR / GIT_WORK_TREE / GIT_INDEX_FILE… would point git elsewhere
        # (another repository, another work tree): none of git's own variables pass through.
        env = {k: v for k, v in os.environ.items() if not k.startswith("GIT_")}
        env.update(GIT_ENV, HOME=str(self.root))
        try:
            result = subprocess.run(
                ["git", "-C", str(self.root), *args],
                capture_output=True,
                text=True,
                env=env,
                timeout=60,
            )
        except FileNotFoundError:
            raise ToolkitError("git is not installed", hint="apt-get install git") from None
        if check and result.returncode != 0:
            raise ToolkitError(f"git {args[0]} failed in {self.root}: {result.stderr.strip()}")
        return result

    def exists(self) -> bool:
        return (self.root / ".git").is_dir()

    def _init(self) -> None:
        if self.exists():
            return
        self._git("init", "-q")
        self._git("config", "commit.gpgsign", "false")
        (self.root / ".gitignore").write_text(".lock\n")

    @contextlib.contextmanager
    def locked(self) -> Iterator[None]:
        """Exclusive use of the repository: threads of this run and other itops processes."""
        # 0700: git keeps its objects world-readable (0444), so the folder is what protects
        # configurations (scrubbed of secrets, but still a map of the network).
        self.root.mkdir(mode=0o700, parents=True, exist_ok=True)
        self.root.chmod(0o700)
        with _THREAD_LOCK, open(self.root / ".lock", "a") as handle:
            fcntl.flock(handle, fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(handle, fcntl.LOCK_UN)

    # -- reading ---------------------------------------------------------------------------
    def committed(self, device: str) -> tuple[str, str] | None:
        """(text, short commit) of the device's last committed backup, or None if it has none."""
        name = device_file(device)
        if not self.exists():
            return None
        found = self._git("log", "-1", "--format=%h", "--", name, check=False)
        commit = found.stdout.strip()
        if found.returncode != 0 or not commit:
            return None
        return self._git("show", f"HEAD:{name}").stdout, commit

    def history(self, device: str) -> list[Revision]:
        name = device_file(device)
        if not self.exists():
            return []
        out = self._git("log", "--format=%h%x1f%cI%x1f%s", "--", name, check=False).stdout
        return [Revision(*line.split("\x1f", 2)) for line in out.splitlines() if line]

    def diff(self, device: str, rev: str | None = None) -> str:
        """The device's last change (rev None), or what changed since `rev` (a commit, HEAD~2…)."""
        name = device_file(device)
        revisions = self.history(device)
        if not revisions:
            raise NotFound(f"no backup of {device} yet", hint=f"itops backup run {device} …")
        if rev is None:
            if len(revisions) == 1:
                return self._git("show", "--format=", revisions[0].commit, "--", name).stdout
            base = revisions[1].commit
        else:
            if not _REV.fullmatch(rev) or rev.startswith("-"):
                raise ValidationError(f"invalid revision {rev!r}")
            if self._git(
                "rev-parse", "--verify", "-q", f"{rev}^{{commit}}", check=False
            ).returncode:
                raise NotFound(f"no revision {rev!r} in the backup history")
            base = rev
        return self._git("diff", base, "HEAD", "--", name).stdout

    def read(self, device: str) -> str | None:
        path = self.root / device_file(device)
        return path.read_text() if path.is_file() else None

    # -- writing ---------------------------------------------------------------------------
    def write(self, device: str, text: str) -> None:
        """Put a device's backup in the work tree (committed later, once per run)."""
        with self.locked():
            self._init()
            path = self.root / device_file(device)
            tmp = path.with_suffix(".tmp")
            tmp.write_text(text)
            os.chmod(tmp, 0o600)
            tmp.replace(path)

    def commit(self, devices: Sequence[str], message: str) -> str | None:
        """Commit these devices' files in one commit; None if none of them changed."""
        names = [device_file(d) for d in devices]
        if not names:
            return None
        with self.locked():
            self._init()
            self._git("add", "--", *names)
            staged = self._git("diff", "--cached", "--quiet", "--", *names, check=False)
            if staged.returncode == 0:
                return None
            self._git("commit", "-q", "-m", message, "--", *names)
            return self._git("rev-parse", "--short", "HEAD").stdout.strip()
