"""A bad itops.toml, or the same bad value as a CLI option, is refused by the real `itops` process
with exit 2 and a message naming the file, the key and the line — before the ledger is created,
a ticket opened or a host connected to."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from toolkit.workspace import Workspace

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture
def listener() -> Iterator[socket.socket]:
    """A port on loopback that records whether anything connected (nothing may)."""
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    sock.listen(8)
    sock.setblocking(False)
    yield sock
    sock.close()


@pytest.fixture
def ws(tmp_path: Path, listener: socket.socket) -> Path:
    root = tmp_path / "ws"
    Workspace.init(root)
    port = listener.getsockname()[1]
    (root / "inventory" / "hosts.yml").write_text(
        f"all:\n  hosts:\n    web-1: {{address: 127.0.0.1, port: {port}}}\n"
    )
    return root


def itops(ws: Path, *args: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PYTHONPATH": str(ROOT), "ITOPS_OPERATOR": "alice"}
    env.pop("ITOPS_WORKSPACE", None)
    env.pop("ITOPS_LEDGER_URL", None)
    return subprocess.run(
        [sys.executable, "-m", "toolkit", "-w", str(ws), *args],
        capture_output=True,
        text=True,
        timeout=60,  # forks = 0 hung `itops fix` forever: fail instead
        env=env,
        check=False,
    )


def nothing_happened(ws: Path, listener: socket.socket) -> None:
    assert not (ws / ".itops" / "ledger.db").exists(), "the ledger was created"
    with pytest.raises(BlockingIOError):
        listener.accept()  # no connection is waiting: nothing was connected to


def edit(ws: Path, old: str, new: str) -> int:
    """Replace `old` by `new` in itops.toml; the 1-based line of the change."""
    path = ws / "itops.toml"
    text = path.read_text()
    assert old in text
    path.write_text(text.replace(old, new, 1))
    return text[: text.index(old)].count("\n") + 1


FIX = ["fix", "printer.clear-queue", "web-1", "--ticket", "INC-7001"]


@pytest.mark.parametrize(
    ("old", "new", "key", "problem"),
    [
        ("forks = 50", 'forks = "many"', "run.forks", "must be an integer from 1 to 1000"),
        ("forks = 50", "forks = 0", "run.forks", "must be an integer from 1 to 1000, not 0"),
        ("forks = 50", "forks = -3", "run.forks", "must be an integer from 1 to 1000, not -3"),
        (
            "connect_timeout = 10",
            'connect_timeout = "soon"',
            "run.connect_timeout",
            "must be a number of at least 0.1, not 'soon'",
        ),
        (
            "command_timeout = 120",
            "command_timeout = -5",
            "run.command_timeout",
            "must be a number of at least 0.1, not -5",
        ),
        ("forks = 50", "frks = 50", "run.frks", "unknown key; did you mean run.forks?"),
        (
            "[run]",
            "[sheduler]\ngrace = '5m'\n[run]",
            "sheduler",
            "unknown section; did you mean scheduler?",
        ),
        (
            'url = "sqlite:///.itops/ledger.db"',
            'url = "sqlite:///.itops/ledger.db"\nsynchronous = "fast"',
            "ledger.synchronous",
            "must be one of 'normal', 'full', not 'fast'",
        ),
    ],
)
def test_a_bad_setting_stops_fix_before_anything_is_recorded_or_connected(
    ws: Path, listener: socket.socket, old: str, new: str, key: str, problem: str
) -> None:
    line = edit(ws, old, new)
    if key == "ledger.synchronous":
        line += 1
    done = itops(ws, *FIX)
    assert done.returncode == 2, done.stderr
    assert f"{ws / 'itops.toml'}:{line}: {key}: {problem}" in done.stderr
    assert "Traceback" not in done.stderr
    nothing_happened(ws, listener)


@pytest.mark.parametrize(
    ("args", "problem"),
    [
        ([*FIX, "--forks", "0"], "must be an integer from 1 to 1000, not 0"),
        ([*FIX, "--forks", "-3"], "must be an integer from 1 to 1000, not -3"),
        ([*FIX, "--forks", "many"], "must be an integer from 1 to 1000, not 'many'"),
        ([*FIX, "--connect-timeout", "soon"], "must be a number of at least 0.1, not 'soon'"),
        ([*FIX, "--timeout", "-5"], "must be a number of at least 0.1, not -5"),
        ([*FIX, "--serial", "0"], "must be an integer of at least 1, not 0"),
        ([*FIX, "--max-fail-percent", "101"], "must be a number from 0 to 100, not 101"),
        (["runbook", "run", "x", "web-1", "--forks", "0"], "must be an integer from 1 to 1000"),
        (["inventory", "check", "web-1", "--forks", "0"], "must be an integer from 1 to 1000"),
        (["playbook", "run", "x", "web-1", "--forks", "0"], "must be an integer from 1 to 200"),
        (["scheduler", "--interval", "0.1"], "must be a number of at least 0.5, not 0.1"),
    ],
)
def test_the_same_bad_value_as_an_option_gets_the_same_check(
    ws: Path, listener: socket.socket, args: list[str], problem: str
) -> None:
    done = itops(ws, *args)
    assert done.returncode == 2, done.stderr
    assert problem in done.stderr
    nothing_happened(ws, listener)


def test_every_problem_of_the_file_is_reported_at_once(ws: Path, listener: socket.socket) -> None:
    forks = edit(ws, "forks = 50", "forks = 0")
    timeout = edit(ws, "command_timeout = 120", "command_timout = 5")
    done = itops(ws, "log")
    assert done.returncode == 2, done.stderr
    config = ws / "itops.toml"
    assert f"{config}:{forks}: run.forks: must be" in done.stderr
    assert f"{config}:{timeout}: run.command_timout: unknown key; did you mean" in done.stderr
    nothing_happened(ws, listener)
