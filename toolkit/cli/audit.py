"""`itops audit`: verify the ledger; for auditors (read-only)."""

from __future__ import annotations

import json
from pathlib import Path

import click

from toolkit.app import App
from toolkit.cli import render
from toolkit.cli.options import reads_only


@click.group()
def audit() -> None:
    """Check that the ticket log is complete and unaltered.

    \b
    Examples:
      itops audit verify
      itops audit head          # note the head hash somewhere safe to detect truncation
    """


@audit.command()
@click.option(
    "--expect-head",
    metavar="SEQ:HASH",
    help="Also require this record (from `audit head`) to be in the chain.",
)
@click.option(
    "--anchors",
    "copies",
    multiple=True,
    type=click.Path(dir_okay=False, path_type=Path),
    metavar="FILE",
    help="Also check against a copy of the anchors kept elsewhere (a syslog file, a SIEM "
    "export, a copy of the anchor log). Repeatable.",
)
@click.option("--json", "as_json", is_flag=True, help="Print the result as JSON.")
@click.pass_obj
@reads_only
def verify(app: App, expect_head: str | None, copies: tuple[Path, ...], as_json: bool) -> None:
    """Recompute every record's hash and link. Exit 0 if intact, 1 if not.

    Names the first broken record: edited, deleted, reordered or inserted rows all break the
    chain there. Actions begun but never finished (a crash) are listed; they do not break it.

    \b
    Examples:
      itops audit verify
      itops audit verify --expect-head 1842:9f2c…   # what `itops audit head` printed earlier
      itops audit verify --json | jq .open_actions
      itops audit verify --anchors /mnt/loghost/auth.log   # the anchors syslog shipped away
    """
    report = app.ledger.verify()
    problem = None if report.ok else report.reason
    anchor_log = app.workspace.anchor_log()
    anchors = anchor_log.check(app.ledger.hashes, report.head_seq)
    if problem is None and anchors.problem is not None:
        problem = anchors.problem
    checked = {
        copy: anchor_log.check_copy(copy, app.ledger.hashes, report.head_seq) for copy in copies
    }
    for copy, result in checked.items():
        if problem is None and result.problem is not None:
            problem = f"{result.problem} (per the anchor copy {copy})"
    if report.ok and expect_head:
        seq_text, _, expected = expect_head.partition(":")
        record = next(app.ledger.records(seq=int(seq_text)), None) if seq_text.isdigit() else None
        if record is None or record.hash != expected:
            problem = (
                f"record {seq_text} is not the expected {expected[:16]}… (truncated or rewritten)"
            )
    if as_json:
        render.emit_json(
            {
                "ok": problem is None,
                "records": report.records,
                "head_seq": report.head_seq,
                "head_hash": report.head_hash,
                "first_bad_seq": report.first_bad_seq,
                "reason": problem,
                "open_actions": list(report.open_actions),
                "db_users": dict(report.db_users),
                "anchors": {
                    "count": anchors.anchors,
                    "newest_seq": anchors.newest.seq if anchors.newest else None,
                    "newest_at": anchors.newest.at if anchors.newest else None,
                    "log": str(anchor_log.path),
                    "copies": [
                        {
                            "file": str(copy),
                            "count": r.anchors,
                            "problem": r.problem,
                            "newest_seq": r.newest.seq if r.newest else None,
                        }
                        for copy, r in checked.items()
                    ],
                },
            }
        )
    elif problem is None:
        render.echo(
            f"ledger intact: {report.records} records, head #{report.head_seq} {report.head_hash}",
            fg="green",
        )
        render.echo(f"checked against {anchors.used} in {anchor_log.path}")
        for copy, result in checked.items():
            render.echo(f"checked against {result.used} in the copy {copy}")
        if report.db_users:
            render.echo(
                "database users (filled by the database): "
                + ", ".join(f"{user} ({count})" for user, count in report.db_users)
            )
        if report.open_actions:
            render.echo(
                f"{len(report.open_actions)} action(s) begun and never finished "
                "(see: itops log --outcome open)"
            )
    else:
        render.echo(f"LEDGER BROKEN: {problem}", fg="red", err=True)
        if report.first_bad_seq is None:
            render.echo(f"the hash chain itself is intact (head #{report.head_seq})", err=True)
        else:
            render.echo(f"the chain is intact up to record #{report.head_seq}", err=True)
    click.get_current_context().exit(0 if problem is None else 1)


@audit.command()
@click.option("--json", "as_json", is_flag=True, help="Print the anchor as JSON.")
@click.pass_obj
def anchor(app: App, as_json: bool) -> None:
    """Sign the ledger's head into the anchor log now (every command that writes does it too).

    The anchor log is kept outside the database ([ledger] anchor_log): with it, a plain
    `itops audit verify` catches the newest records cut off, or the chain rewritten.

    \b
    Examples:
      itops audit anchor
      itops audit anchor --json
    """
    app.anchor(force=True)
    log = app.workspace.anchor_log()
    newest = log.last_line()
    data = json.loads(newest) if newest else None
    if as_json:
        render.emit_json(data)
    elif data is None:
        render.echo("the ledger is empty: nothing to anchor")
    else:
        render.echo(f"record #{data['seq']} {data['hash']} anchored ({data['at']}) in {log.path}")


@audit.command()
@click.option("--json", "as_json", is_flag=True, help="Print seq, hash and time as JSON.")
@click.pass_obj
@reads_only
def head(app: App, as_json: bool) -> None:
    """Print the newest record as SEQ:HASH, to keep outside the ledger and pass to --expect-head.

    \b
    Examples:
      itops audit head >> /mnt/worm/itops-heads.txt
      itops audit verify --expect-head "$(tail -1 /mnt/worm/itops-heads.txt)"
    """
    record = app.ledger.head()
    if as_json:
        render.emit_json(
            None if record is None else {"seq": record.seq, "hash": record.hash, "at": record.at}
        )
        return
    render.echo("empty" if record is None else f"{record.seq}:{record.hash}")
