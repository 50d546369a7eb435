"""An auditor reads a ledger on read-only media: a real read-only mount (tmpfs, remounted ro),
the real CLI in a subprocess. No lab: needs root only for the mount.

The auditor's copy is what they receive: `ledger.db` alone (closed cleanly), or `ledger.db` with
its `-wal` (copied while itops was still writing, records not yet checkpointed), without a `-shm`.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from toolkit.desk.sla import default_policy
from toolkit.desk.tickets import ensure, record
from toolkit.ledger import Ledger
from toolkit.workspace import Workspace

pytestmark = pytest.mark.integration

TICKETS = ("INC-1", "INC-2", "INC-3")


def _needs_root() -> None:
    if os.geteuid() != 0:
        if os.environ.get("CI"):
            pytest.fail("CI runs as root: the read-only mount test must run there")
        pytest.skip("a read-only mount needs root")


def fill(url: str) -> Ledger:
    """Tickets with events and actions, as itops writes them; the ledger is left open."""
    book = Ledger(url, operator="ana")
    policy = default_policy("UTC")
    for n, ticket in enumerate(TICKETS):
        ensure(book, ticket, category="printer", priority="P2")
        record(book, ticket, "responded", {}, policy)
        action = book.begin(task="printer.clear-queue", host=f"ws-{n}", ticket=ticket, params={})
        book.finish(
            action,
            task="printer.clear-queue",
            host=f"ws-{n}",
            ticket=ticket,
            outcome="fixed",
            duration=0.5,
            output="queue cleared\n",
        )
        record(book, ticket, "resolved", {"code": "fixed"}, policy)
    return book  # 15 records


def itops(ws: Path, *args: str) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("ITOPS_")}
    env["PYTHONPATH"] = str(Path(__file__).parents[2])
    return subprocess.run(
        [sys.executable, "-m", "toolkit", "--workspace", str(ws), *args],
        capture_output=True,
        text=True,
        timeout=120,
        env=env,
        stdin=subprocess.DEVNULL,
    )


def workspace_on(tmp_path: Path, url: str) -> Path:
    ws = tmp_path / "ws"
    config = Workspace.init(ws)
    text = config.read_text().replace('url = "sqlite:///.itops/ledger.db"', f'url = "{url}"')
    config.write_text(text)
    return ws


@pytest.fixture
def readonly_dir(tmp_path: Path) -> Iterator[Path]:
    """A tmpfs mount, writable until `remount_ro` is called; unmounted afterwards."""
    _needs_root()
    mount = tmp_path / "media"
    mount.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=64m", "tmpfs", str(mount)], check=True)
    try:
        yield mount
    finally:
        subprocess.run(["umount", str(mount)], check=True)


def remount_ro(mount: Path) -> None:
    subprocess.run(["mount", "-o", "remount,ro", str(mount)], check=True)
    with pytest.raises(OSError):
        (mount / "probe").write_text("x")


def read_everything(ws: Path) -> None:
    """Every read-only command an auditor runs, and what each must say."""
    verify = itops(ws, "audit", "verify")
    assert verify.returncode == 0, verify.stderr
    assert "ledger intact: 15 records" in verify.stdout
    head = itops(ws, "audit", "head")
    assert head.returncode == 0 and head.stdout.startswith("15:"), head.stderr
    log = itops(ws, "log", "--json")
    assert log.returncode == 0, log.stderr
    assert len(log.stdout.splitlines()) == 15
    show = itops(ws, "ticket", "show", "INC-2")
    assert show.returncode == 0 and "resolved" in show.stdout, show.stderr
    listed = itops(ws, "ticket", "list", "--json")
    assert listed.returncode == 0, listed.stderr
    assert '"INC-3"' in listed.stdout and '"resolved"' in listed.stdout
    kpi = itops(ws, "kpi", "--json")
    assert kpi.returncode == 0, kpi.stderr
    assert '"tickets_opened": 3' in kpi.stdout
    page = ws / "kpi.html"
    report = itops(ws, "report", "kpi", "--html", str(page), "--json")
    assert report.returncode == 0, report.stderr
    assert '"tickets_opened": 3' in report.stdout and page.stat().st_size > 0
    exported = itops(ws, "ticket", "export")
    assert exported.returncode == 0 and len(exported.stdout.splitlines()) == 9, exported.stderr


def test_an_auditor_reads_a_cleanly_closed_ledger_on_read_only_media(
    tmp_path: Path, readonly_dir: Path
) -> None:
    fill(f"sqlite:///{tmp_path / 'ledger.db'}").close()
    shutil.copy(tmp_path / "ledger.db", readonly_dir / "ledger.db")
    remount_ro(readonly_dir)
    ws = workspace_on(tmp_path, f"sqlite:///{readonly_dir / 'ledger.db'}")
    read_everything(ws)
    assert sorted(os.listdir(readonly_dir)) == ["ledger.db"]
    # a write is refused with a clear message, not a traceback
    opened = itops(ws, "ticket", "open", "INC-9", "--category", "printer")
    assert opened.returncode != 0 and "Traceback" not in opened.stderr
    assert "error:" in opened.stderr


def test_an_auditor_reads_a_ledger_copied_with_its_wal_on_read_only_media(
    tmp_path: Path, readonly_dir: Path
) -> None:
    book = fill(f"sqlite:///{tmp_path / 'ledger.db'}")
    try:  # copied while itops is still running: the newest records are only in the -wal
        assert (tmp_path / "ledger.db-wal").stat().st_size > 0
        for name in ("ledger.db", "ledger.db-wal"):
            shutil.copy(tmp_path / name, readonly_dir / name)
    finally:
        book.close()
    remount_ro(readonly_dir)
    ws = workspace_on(tmp_path, f"sqlite:///{readonly_dir / 'ledger.db'}")
    read_everything(ws)


def test_a_workspace_whose_ledger_url_says_mode_ro_reads_and_refuses_writes(
    tmp_path: Path,
) -> None:
    fill(f"sqlite:///{tmp_path / 'ledger.db'}").close()
    ws = workspace_on(tmp_path, f"sqlite:///{tmp_path / 'ledger.db'}?mode=ro")
    read_everything(ws)
    before = (tmp_path / "ledger.db").read_bytes()
    opened = itops(ws, "ticket", "open", "INC-9", "--category", "printer")
    assert opened.returncode != 0 and "Traceback" not in opened.stderr
    assert "read-only" in opened.stderr
    assert (tmp_path / "ledger.db").read_bytes() == before
