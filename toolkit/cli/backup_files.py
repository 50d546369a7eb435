"""`itops backup list|show|verify`: the file backups that backup.files fetched from Linux hosts
(the workspace store, read without connecting). Added to the `itops backup` group."""

from __future__ import annotations

from typing import TYPE_CHECKING

import click

from toolkit.app import App
from toolkit.cli import render
from toolkit.cli.completion import complete_host

if TYPE_CHECKING:
    from toolkit.backups.files import FileBackupStore


def _store(app: App) -> FileBackupStore:
    from toolkit.backups.files import FOLDER, FileBackupStore

    return FileBackupStore(app.workspace.state_dir / FOLDER)


@click.command("list")
@click.argument("host", required=False, shell_complete=complete_host)
@click.option("--json", "as_json", is_flag=True, help="Print the backups as JSON.")
@click.pass_obj
def list_(app: App, host: str | None, as_json: bool) -> None:
    """List the file backups of HOST (default: every host), newest first.

    \b
    Example:
      itops backup list ws-042 --json
    """
    store = _store(app)
    hosts = [host] if host else store.hosts()
    rows = [b.summary() for h in hosts for b in store.backups(h)]
    if as_json:
        render.emit_json(rows)
        return
    from toolkit.remediation.shapes import human_bytes

    render.table(
        ["host", "backup", "paths", "files", "size", "archive", "ticket"],
        [
            (
                r["host"],
                r["id"],
                ", ".join(r["paths"]),
                r["files"],
                human_bytes(r["bytes"]),
                human_bytes(r["archive_bytes"]) + f" {r['compression']}",
                r["ticket"] or "",
            )
            for r in rows
        ],
    )


@click.command("show")
@click.argument("host", shell_complete=complete_host)
@click.argument("backup_id")
@click.option("--json", "as_json", is_flag=True, help="Print the whole manifest as JSON.")
@click.pass_obj
def show(app: App, host: str, backup_id: str, as_json: bool) -> None:
    """Show one file backup's manifest: every file with its size and SHA-256.

    \b
    Example:
      itops backup show ws-042 20261121T101500Z-3f9a
    """
    found = _store(app).get(host, backup_id)
    if as_json:
        render.emit_json(found.as_dict())
        return
    render.echo(f"{found.host} {found.id}", bold=True)
    render.echo(
        f"  created {found.created} under {found.ticket or '-'}; paths {', '.join(found.paths)}; "
        f"{found.compression} archive sha256 {found.archive_sha256}"
    )
    render.table(
        ["path", "type", "size", "mode", "owner", "sha256"],
        [
            (
                m.path,
                m.type,
                m.size,
                f"{m.mode:o}",
                f"{m.user or m.uid}:{m.group or m.gid}",
                m.sha256[:16],
            )
            for m in found.members
        ],
    )


@click.command("verify")
@click.argument("host", required=False, shell_complete=complete_host)
@click.pass_obj
def verify(app: App, host: str | None) -> None:
    """Re-read every file backup of HOST (default: all) and re-hash it against its manifest.

    Exit code 1 if any backup does not verify.

    \b
    Example:
      itops backup verify ws-042
    """
    store = _store(app)
    bad = 0
    rows = []
    for name in [host] if host else store.hosts():
        for b in store.backups(name):
            problems = store.verify(b)
            bad += bool(problems)
            rows.append((name, b.id, "ok" if not problems else "error", "; ".join(problems[:3])))
    render.table(["host", "backup", "status", "detail"], rows, style_column="status")
    click.get_current_context().exit(1 if bad else 0)
