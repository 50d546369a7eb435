"""Anchors shipped to a real rsyslogd: the copy on the log host catches what whoever owns this
machine can hide here — they can rewrite the ledger AND the local anchor log (they hold the
anchoring key too), but not take back the lines syslog already delivered elsewhere."""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.inprocess import itops
from tests.unit.test_anchors import tamper
from toolkit.workspace import Workspace

pytestmark = [
    pytest.mark.integration,
    pytest.mark.skipif(shutil.which("rsyslogd") is None, reason="rsyslog is not installed"),
]


def free_port(kind: int) -> int:
    with socket.socket(socket.AF_INET, kind) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class LogHost:
    def __init__(self, folder: Path) -> None:
        self.folder = folder
        self.udp = free_port(socket.SOCK_DGRAM)
        self.tcp = free_port(socket.SOCK_STREAM)
        self.file = folder / "auth.log"
        conf = folder / "rsyslog.conf"
        conf.write_text(
            f'global(workDirectory="{folder}")\n'
            'module(load="imudp")\nmodule(load="imtcp")\n'
            f'input(type="imudp" address="127.0.0.1" port="{self.udp}")\n'
            f'input(type="imtcp" address="127.0.0.1" port="{self.tcp}")\n'
            f'authpriv.* action(type="omfile" file="{self.file}")\n'
        )
        self.proc = subprocess.Popen(
            ["rsyslogd", "-n", "-f", str(conf), "-i", str(folder / "rsyslogd.pid")],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
        )
        deadline = time.monotonic() + 15
        while not _listening(self.tcp):
            assert self.proc.poll() is None, self.proc.stderr.read() if self.proc.stderr else ""
            assert time.monotonic() < deadline, "rsyslogd did not start"
            time.sleep(0.1)

    def lines(self, count: int, timeout: float = 10) -> list[str]:
        deadline = time.monotonic() + timeout
        while True:
            text = self.file.read_text() if self.file.exists() else ""
            found = [ln for ln in text.splitlines() if "itops-anchor: " in ln]
            if len(found) >= count or time.monotonic() > deadline:
                return found
            time.sleep(0.1)

    def stop(self) -> None:
        self.proc.terminate()
        self.proc.wait(timeout=10)


def _listening(port: int) -> bool:
    with socket.socket() as sock:
        return sock.connect_ex(("127.0.0.1", port)) == 0


@pytest.fixture
def loghost(tmp_path: Path) -> Iterator[LogHost]:
    """A real rsyslogd on loopback (UDP and TCP), writing authpriv to its own file."""
    folder = tmp_path / "loghost"
    folder.mkdir()
    host = LogHost(folder)
    yield host
    host.stop()


def configure(ws: Path, target: str) -> None:
    config = ws / "itops.toml"
    text = config.read_text()
    assert "[ledger]\n" in text
    config.write_text(text.replace("[ledger]\n", f'[ledger]\nanchor_syslog = "{target}"\n', 1))


@pytest.mark.parametrize("scheme", ["udp", "tcp"])
def test_anchors_reach_the_log_host_and_catch_a_rewrite_hidden_here(
    workspace: Workspace, loghost: LogHost, scheme: str
) -> None:
    host = loghost
    root = workspace.root
    configure(root, f"{scheme}://127.0.0.1:{host.udp if scheme == 'udp' else host.tcp}")
    for n in range(1, 4):
        assert itops(root, "ticket", "open", f"INC-{n}", "-c", "printer")[0] == 0
    shipped = host.lines(3)
    assert len(shipped) == 3, shipped
    (log,) = (root / ".itops").glob("anchors-*.jsonl")
    local = log.read_text().splitlines()
    assert [json.loads(ln.split("itops-anchor: ", 1)[1]) for ln in shipped] == [
        json.loads(ln) for ln in local
    ]
    code, out = itops(root, "audit", "verify", "--anchors", str(host.file))
    assert code == 0 and "checked against 3 anchor(s)" in out and str(host.file) in out, out

    # The owner of this machine cuts off the newest record and hides it here: the local
    # anchor log rewritten to end before the cut (re-signed with the key they hold).
    tamper(root, "DELETE FROM ledger WHERE seq = 3")
    log.write_text("\n".join(local[:2]) + "\n")
    code, out = itops(root, "audit", "verify")
    assert code == 0, "the local evidence alone was rewritten consistently"
    code, out = itops(root, "audit", "verify", "--anchors", str(host.file))
    assert code == 1 and "records after #2 are missing" in out, out
    assert str(host.file) in out
    code, out = itops(root, "audit", "verify", "--anchors", str(host.file), "--json")
    report = json.loads(out)
    assert report["ok"] is False and report["anchors"]["copies"][0]["count"] == 3


def test_an_unreachable_log_host_warns_and_the_local_anchor_stays(workspace: Workspace) -> None:
    root = workspace.root
    configure(root, f"tcp://127.0.0.1:{free_port(socket.SOCK_STREAM)}")  # nobody listens
    done = subprocess.run(
        [sys.executable, "-m", "toolkit", "-w", str(root), "ticket", "open", "INC-1", "-c", "printer"],
        capture_output=True, text=True, timeout=60, env={**os.environ, "ITOPS_OPERATOR": "ana"},
    )  # fmt: skip
    assert done.returncode == 0, done.stderr  # the command's outcome is not the log host's
    assert "could not send the ledger's anchor to syslog" in done.stderr, done.stderr
    assert "Connection refused" in done.stderr and "local anchor log" in done.stderr
    (log,) = (root / ".itops").glob("anchors-*.jsonl")
    assert len(log.read_text().splitlines()) == 1
    code, out = itops(root, "audit", "verify")
    assert code == 0, out


def test_a_copy_that_is_not_anchors_is_refused(workspace: Workspace, tmp_path: Path) -> None:
    root = workspace.root
    assert itops(root, "ticket", "open", "INC-1", "-c", "printer")[0] == 0
    bogus = tmp_path / "bogus.log"
    bogus.write_text("Dec  4 10:00:00 host sshd[1]: nothing of ours\n")
    code, out = itops(root, "audit", "verify", "--anchors", str(bogus))
    assert code == 1 and "holds no anchor" in out, out
