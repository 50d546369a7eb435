"""Whose code runs: like git's `safe.directory`, itops refuses a workspace, a tasks folder or a
task file that another user owns, or that group or others may write to — opening one would run
that user's Python (a task module, loaded by path) as you.

Root's files are trusted (the system's own). A shared workspace that must be used anyway is
named in `ITOPS_SAFE_WORKSPACES` (paths separated by `:`, or `*` for any), the way git's
`safe.directory` is set by the one who runs it, never by the workspace itself.
"""

from __future__ import annotations

import os
import stat
from pathlib import Path

from toolkit.errors import ConfigError

ENV = "ITOPS_SAFE_WORKSPACES"


def declared_safe(path: Path) -> bool:
    value = os.environ.get(ENV, "")
    if value.strip() == "*":
        return True
    resolved = path.resolve()
    for entry in filter(None, value.split(":")):
        safe = Path(entry).expanduser().resolve()
        if resolved == safe or safe in resolved.parents:
            return True
    return False


def check_owned(
    path: Path, what: str, *, workspace: Path, because: str = "its Python would run as you"
) -> None:
    """Refuse `path` (a workspace's config, its tasks folder, a task file) when another user
    owns it or group/others may write it, unless the workspace is declared safe."""
    try:
        st = path.stat()
    except OSError:
        return  # what does not exist cannot run; the caller says what is missing
    owner_ok = st.st_uid in (os.geteuid(), 0)
    writable = bool(st.st_mode & (stat.S_IWGRP | stat.S_IWOTH))
    if (owner_ok and not writable) or declared_safe(workspace):
        return
    if not owner_ok:
        why = f"owned by uid {st.st_uid}, not you (uid {os.geteuid()})"
    else:
        who = [
            n for n, bit in (("group", stat.S_IWGRP), ("others", stat.S_IWOTH)) if st.st_mode & bit
        ]
        why = f"writable by {' and '.join(who)} (mode {stat.S_IMODE(st.st_mode):04o})"
    raise ConfigError(
        f"refusing {what} {path}: {why} — {because}",
        hint=f"if you trust it: export {ENV}={workspace} (or fix its owner/mode: chmod go-w)",
    )
