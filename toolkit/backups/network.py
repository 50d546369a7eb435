"""Network configuration backups: one file per device in a git repository inside the workspace.

`.itops/backups/network/` is an ordinary git repository (the `git` command, nothing to install in
Python): `DEVICE.cfg` holds the device's sanitised running configuration and, when it differs, its
startup configuration. A backup run writes the files of the devices that changed and commits them
once, with the task and the ticket or change id in the message; `history` and `diff` read it back.
git's own index lock aside, writers serialise on a lock file, so two itops processes (the nightly
job and an engineer) never interleave a write and a commit.

Sites: a site's worker backs its devices up into its own workspace's repository. For the controller
and every worker to see one history, give the repositories a shared remote, as Oxidized and RANCID
keep configurations in a central git: `itops backup remote URL` (a bare repository — a path, or
ssh:// with the usual host-key checking). Each commit is then rebased onto what the other sites
pushed meanwhile (each device is its own file: they do not conflict) and pushed; each read first
fetches and reads the local and the shared history together. A remote that cannot be reached
never loses a backup: it stays committed here and goes with the next push.
"""

from __future__ import annotations

import contextlib
import fcntl
import logging
import os
import re
import subprocess
import threading
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

from toolkit.errors import NotFound, ToolkitError, ValidationError

FOLDER = "backups/network"
BRANCH = "main"  # the shared remote's branch
SHARED = f"origin/{BRANCH}"
_DEVICE = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.-]*")
_REV = re.compile(r"[A-Za-z0-9_.^~/-]{1,80}")
_THREAD_LOCK = threading.Lock()
log = logging.getLogger("itops.backups")
FETCH_EVERY = 30.0  # seconds: one fetch serves a run's many reads (each device's check)
_fetched: dict[Path, float] = {}
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
        self.unpushed: str | None = None  # why the last commit did not reach the shared remote

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

    # -- the shared remote (sites) -------------------------------------------------------------
    def remote(self) -> str | None:
        """The shared remote's URL, if one is set (`itops backup remote`)."""
        if not self.exists():
            return None
        found = self._git("config", "--get", "remote.origin.url", check=False).stdout.strip()
        return found or None

    def set_remote(self, url: str) -> str | None:
        """Share this repository's history through `url` (a bare repository) and push what is
        here; returns why the push did not happen, None when it did."""
        if not url or url.startswith("-") or any(c in url for c in "\r\n\0"):
            raise ValidationError(f"invalid git remote {url!r}")
        with self.locked():
            self._init()
            self._git("remote", "set-url" if self.remote() else "add", "origin", url)
            return self._push()

    def _fetch(self) -> str | None:
        """Fetch the shared history; why it failed, None when it worked."""
        fetched = self._git("fetch", "-q", "origin", check=False)
        if fetched.returncode != 0:
            return f"cannot reach the backups' shared remote {self.remote()}: " + (
                fetched.stderr.strip() or f"git fetch exited {fetched.returncode}"
            )
        return None

    def _has(self, ref: str) -> bool:
        return (
            self._git("rev-parse", "-q", "--verify", f"{ref}^{{commit}}", check=False).returncode
            == 0
        )

    def _push(self) -> str | None:
        """Under the lock: rebase our commits onto the shared ones and push them; why not, or
        None. Nothing to do without a remote or without a commit."""
        if self.remote() is None or not self._has("HEAD"):
            return None
        problem = self._fetch()
        if problem:
            return problem
        if self._has(SHARED):
            rebased = self._git("rebase", "-q", "--autostash", SHARED, check=False)
            if rebased.returncode != 0:
                self._git("rebase", "--abort", check=False)
                return f"the shared history conflicts with this one: {rebased.stderr.strip()}"
        pushed = self._git("push", "-q", "origin", f"HEAD:{BRANCH}", check=False)
        if pushed.returncode != 0:
            return f"could not push to {self.remote()}: {pushed.stderr.strip()}"
        return None

    def _refs(self) -> list[str] | None:
        """What reads give `git log`: nothing without a remote (git's default, HEAD — as reads
        were before remotes, no extra git call on a backup's hot path); with one, HEAD and the
        shared history, fetched first (an unreachable remote leaves what was fetched last, with
        a warning). A ref that does not exist yet (no commit here, nothing shared) is left out;
        none at all: None, nothing to read."""
        if self.remote() is None:
            return []
        with self.locked():
            last = _fetched.get(self.root)
            fresh = last is not None and time.monotonic() - last < FETCH_EVERY
            problem = None if fresh else self._fetch()
            if not fresh and not problem:
                _fetched[self.root] = time.monotonic()
        if problem:
            log.warning("%s; reading the history fetched last", problem)
        return [ref for ref in ("HEAD", SHARED) if self._has(ref)] or None

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
        refs = self._refs()
        if refs is None:
            return None
        found = self._git("log", "-1", "--format=%h", *refs, "--", name, check=False)
        commit = found.stdout.strip()
        if found.returncode != 0 or not commit:
            return None
        return self._git("show", f"{commit}:{name}").stdout, commit

    def history(self, device: str) -> list[Revision]:
        name = device_file(device)
        if not self.exists():
            return []
        refs = self._refs()
        if refs is None:
            return []
        out = self._git("log", "--format=%h%x1f%cI%x1f%s", *refs, "--", name, check=False).stdout
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
        return self._git("diff", base, revisions[0].commit, "--", name).stdout

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
            self.unpushed = self._push()  # (a shared remote: onto the other sites' commits)
            if self.unpushed:
                log.warning("%s", self.unpushed)
            return self._git("rev-parse", "--short", "HEAD").stdout.strip()
