"""The state folder is private under a permissive umask: .itops 0700, the ledger (and its -wal,
-shm), the log and full command outputs 0600; an older workspace is made private on open."""

from __future__ import annotations

import os
import stat
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from toolkit.ledger import Ledger
from toolkit.workspace import Workspace


@pytest.fixture(autouse=True)
def umask_022() -> Iterator[None]:
    old = os.umask(0o022)
    try:
        yield
    finally:
        os.umask(old)


def itops(ws: Path, *args: str) -> tuple[int, str]:
    """The real CLI in a process of its own (under the umask above): its logger writes itops.log."""
    import toolkit

    root = str(Path(toolkit.__file__).resolve().parents[1])
    env = {**os.environ, "ITOPS_OPERATOR": "ana", "PYTHONPATH": root}
    env.pop("ITOPS_WORKSPACE", None)
    done = subprocess.run(
        [sys.executable, "-m", "toolkit", "-w", str(ws), *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    return done.returncode, done.stdout + done.stderr


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def test_a_new_state_folder_and_its_files_are_private(workspace: Workspace) -> None:
    code, out = itops(workspace.root, "ticket", "open", "INC-1", "-p", "P2", "-c", "printer")
    assert code == 0, out
    state = workspace.state_dir
    assert mode(state) == 0o700
    files = [state / "ledger.db", state / "itops.log"]
    files += [p for p in (state / "ledger.db-wal", state / "ledger.db-shm") if p.exists()]
    for path in files:
        assert mode(path) == 0o600, (path, oct(mode(path)))


def test_full_command_outputs_are_private(workspace: Workspace) -> None:
    state = workspace.state_dir
    book = Ledger(f"sqlite:///{tmp_db(state)}", operator="ana", blob_dir=state / "outputs")
    action = book.begin(task="t.x", host="h", ticket=None, params={})
    book.finish(action, task="t.x", host="h", ticket=None, outcome="fixed", duration=0.1,
                output="x" * 10_000)  # fmt: skip
    book.close()
    blobs = [p for p in (state / "outputs").rglob("*") if p.is_file()]
    assert blobs and all(mode(p) == 0o600 for p in blobs)
    assert all(mode(p) == 0o700 for p in (state / "outputs").rglob("*") if p.is_dir())


def tmp_db(state: Path) -> Path:
    state.mkdir(mode=0o700, exist_ok=True)
    return state / "other.db"


def test_an_older_workspace_is_made_private_on_open(workspace: Workspace) -> None:
    assert itops(workspace.root, "ticket", "open", "INC-1", "-p", "P2", "-c", "printer")[0] == 0
    state = workspace.state_dir
    os.chmod(state, 0o755)
    os.chmod(state / "ledger.db", 0o644)
    os.chmod(state / "itops.log", 0o644)
    code, out = itops(workspace.root, "log")
    assert code == 0, out
    assert mode(state) == 0o700
    assert mode(state / "ledger.db") == 0o600 and mode(state / "itops.log") == 0o600
