"""The workspace's state folder (`.itops`: the ledger, its log, full command outputs, caches,
session logs, backups) is private to its owner, whatever the umask: the folder 0700, the files
itops creates there 0600.

What holds them private is the folder: without its search permission nobody else can open
anything below it, whatever a file's own mode. The files the ledger and the log are made of, and
the full command outputs, are created 0600 besides (a copy of the folder keeps them private), and
SQLite gives a database's -wal and -shm files the database file's own mode. A workspace made
before this is made private on its next open; a state folder on read-only media or owned by
someone else is left as it is.
"""

from __future__ import annotations

import contextlib
import logging
import os
import stat
from pathlib import Path

PRIVATE_DIR = 0o700
PRIVATE_FILE = 0o600

log = logging.getLogger("itops.state")


def secure(state_dir: Path) -> None:
    """Create `state_dir` private, or make an existing one (and the files in it) private."""
    try:
        state_dir.mkdir(mode=PRIVATE_DIR, parents=True, exist_ok=True)
        _private(state_dir, PRIVATE_DIR)
        for entry in os.scandir(state_dir):
            if entry.is_file(follow_symlinks=False):
                _private(Path(entry.path), PRIVATE_FILE)
    except OSError as exc:  # read-only media (an auditor's copy), someone else's folder
        log.debug("state folder %s left as it is: %s", state_dir, exc)


def _private(path: Path, mode: int) -> None:
    info = path.lstat()
    if info.st_uid == os.getuid() and stat.S_IMODE(info.st_mode) & 0o077:
        os.chmod(path, stat.S_IMODE(info.st_mode) & mode)


def private_file(path: Path) -> None:
    """Create `path` empty and 0600 if it is not there (before a library creates it 0644)."""
    with contextlib.suppress(FileExistsError):
        os.close(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, PRIVATE_FILE))


def write_private(path: Path, text: str) -> None:
    """Write a new file 0600 (its folder made 0700 if it is new)."""
    path.parent.mkdir(mode=PRIVATE_DIR, parents=True, exist_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, PRIVATE_FILE)
    with os.fdopen(fd, "w", encoding="utf-8") as handle:
        handle.write(text)
