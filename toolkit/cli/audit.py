"""`itops audit`: verify the ledger; for auditors (read-only)."""

from __future__ import annotations

import json
from pathlib import Path

import click

from toolkit.app import App
from toolkit.cli import render
from toolkit.cli.options import reads_only
from toolkit.errors import ValidationError


@click.group()
def audit() -> None:
    """Check that the ticket log is complete and unaltered; export and check evidence bundles.

    \b
    Examples:
      itops audit verify
      itops audit head          # note the head hash somewhere safe to detect truncation
      itops audit export --ticket INC-1042 --out INC-1042.zip
      itops audit verify --bundle INC-1042.zip
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
@click.option(
    "--bundle",
    type=click.Path(dir_okay=False, exists=True, path_type=Path),
    metavar="FILE",
    help="Check an evidence bundle (from `audit export`) instead: offline, no workspace needed.",
)
@click.option(
    "--trusted-key",
    metavar="FILE",
    help="With --bundle: require that this public key (a .pub file, or its SHA256: fingerprint) "
    "signed it.",
)
@click.option("--json", "as_json", is_flag=True, help="Print the result as JSON.")
@click.pass_obj
@reads_only
def verify(
    app: App,
    expect_head: str | None,
    copies: tuple[Path, ...],
    bundle: Path | None,
    trusted_key: str | None,
    as_json: bool,
) -> None:
    """Recompute every record's hash and link. Exit 0 if intact, 1 if not.

    Names the first broken record: edited, deleted, reordered or inserted rows all break the
    chain there. Actions begun but never finished (a crash) are listed; they do not break it.

    With --bundle, checks an evidence bundle anywhere, without the ledger or a workspace: its
    signed manifest, every file's SHA-256, every record's hash and link, and the signed anchors.
    It prints the signing key's fingerprint: compare it with one you trust, or pass
    --trusted-key.

    \b
    Examples:
      itops audit verify
      itops audit verify --expect-head 1842:9f2c…   # what `itops audit head` printed earlier
      itops audit verify --json | jq .open_actions
      itops audit verify --anchors /mnt/loghost/auth.log   # the anchors syslog shipped away
      itops audit verify --bundle INC-1042.zip --trusted-key itops-anchor.pub
    """
    if bundle is not None:
        _verify_bundle(bundle, trusted_key, as_json)
        return
    if trusted_key is not None:
        raise ValidationError("--trusted-key goes with --bundle FILE")
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
                **report.as_dict(problem),
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


def _verify_bundle(path: Path, trusted_key: str | None, as_json: bool) -> None:
    """`audit verify --bundle`: everything printed from the bundle is its author's text (scope,
    names): shown through render, which makes control characters visible."""
    from toolkit.ledger import evidence

    trusted = None
    if trusted_key is not None:
        given = Path(trusted_key)
        if not given.is_file() and not trusted_key.startswith("SHA256:"):
            raise ValidationError(
                f"--trusted-key {trusted_key}: no such file",
                hint="give the trusted public key's file (…/anchor_ed25519.pub) or its SHA256: "
                "fingerprint",
            )
        trusted = given.read_text(errors="replace") if given.is_file() else trusted_key
    check = evidence.verify(path.read_bytes(), trusted_key=trusted)
    manifest = check.manifest
    anchored = check.anchored
    if as_json:
        render.emit_json(
            {
                "ok": check.ok,
                "problem": check.problem,
                "key_fingerprint": check.fingerprint,
                "trusted_key_checked": trusted is not None,
                "scope": manifest.get("scope"),
                "created_at": manifest.get("created_at"),
                "created_by": manifest.get("created_by"),
                "segment": manifest.get("segment"),
                "records": check.selected,
                "links": check.links,
                "unproven_links": check.unproven_links,
                "anchors": check.anchors,
                "anchored": None
                if anchored is None
                else {"seq": anchored.seq, "hash": anchored.hash, "at": anchored.at},
            }
        )
    elif check.ok:
        scope = ", ".join(f"{k} {v}" for k, v in (manifest.get("scope") or {}).items()) or "all"
        segment = manifest.get("segment") or {}
        render.echo(
            f"bundle intact: {check.selected} record(s) ({scope}), exported "
            f"{manifest.get('created_at')} by {manifest.get('created_by')}",
            fg="green",
        )
        render.echo(
            f"chain segment #{segment.get('first')}–#{segment.get('last')} links every record "
            f"({check.links} record(s) outside the scope link it), closed by the anchor of "
            f"{anchored.at if anchored else '?'}; {check.anchors} anchor(s) checked (their "
            "chain, each against its record, the newest one's signature)"
        )
        if check.unproven_links:
            render.echo(
                f"{check.unproven_links} link(s) are hashes only: taken on the manifest's "
                "signature, not recomputed",
                fg="yellow",
            )
    else:
        render.echo(f"BUNDLE REFUSED: {check.problem}", fg="red", err=True)
    if not as_json:
        which = "the trusted key" if trusted is not None and check.ok else "key"
        render.echo(
            f"signed by {which} {check.fingerprint or '?'}"
            + ("" if trusted is not None else " — compare it with the fingerprint you trust")
        )
    click.get_current_context().exit(0 if check.ok else 1)


@audit.command()
@click.option("--ticket", help="The records of this ticket.")
@click.option(
    "--host", help="The records of this host (with the approvals and break-glass for it)."
)
@click.option(
    "--since", metavar="WHEN", help="From this time (the calendar's zone unless an offset)."
)
@click.option("--until", metavar="WHEN", help="Before this time.")
@click.option(
    "--out",
    required=True,
    type=click.Path(dir_okay=False, writable=True, path_type=Path),
    help="The bundle to write (a ZIP archive).",
)
@click.option(
    "--links",
    "links_mode",
    type=click.Choice(["full", "hashes"]),
    default="full",
    show_default=True,
    help="Records outside the scope that link the chain: whole (every hash recomputed), or "
    "hashes only (nothing outside the scope leaves; those links rest on the signature).",
)
@click.option("--json", "as_json", is_flag=True, help="Print what was written as JSON.")
@click.pass_obj
def export(
    app: App,
    ticket: str | None,
    host: str | None,
    since: str | None,
    until: str | None,
    out: Path,
    links_mode: str,
    as_json: bool,
) -> None:
    """Write a signed evidence bundle an auditor checks anywhere with `audit verify --bundle`.

    One ZIP: the selected records (JSON Lines, every field), the chain segment that links them
    to a signed anchor, the anchors, the anchoring public key, the HTML audit report, and a
    manifest of every file's SHA-256 signed with the workspace's anchoring key. The export is
    itself recorded in the ticket log (scope and the bundle's SHA-256).

    \b
    Examples:
      itops audit export --ticket INC-1042 --out INC-1042.zip
      itops audit export --host lab-03 --since 2026-11-01 --until 2026-12-01 --out lab-03.zip
      itops audit verify --bundle lab-03.zip
    """
    from toolkit.cli.log import ledger_time
    from toolkit.reports.evidence import export as write_bundle
    from toolkit.reports.evidence import record_export

    if not (ticket or host or since or until):
        raise ValidationError(
            "say what to export", hint="--ticket ID, --host NAME, --since/--until WHEN"
        )
    scope = {
        "ticket": ticket,
        "host": host,
        "since": ledger_time(app, since),
        "until": ledger_time(app, until),
    }
    ledger = app.ledger
    app.anchor()  # the head signed, so an anchor closes the newest selected records
    done = write_bundle(
        ledger, app.redactor, app.workspace.anchor_log(), scope, out, links_mode=links_mode
    )
    rec = record_export(app.ledger, done)
    segment = done.manifest["segment"]
    if as_json:
        render.emit_json(
            {
                "file": str(out),
                "sha256": done.sha256,
                "bytes": done.bytes,
                "segment": segment,
                "key_fingerprint": done.manifest["key_fingerprint"],
                "recorded_as": rec.seq,
            }
        )
        return
    render.echo(
        f"wrote {out}: {segment['selected']} record(s), chain #{segment['first']}–"
        f"#{segment['last']} ({segment['links']} link record(s)), {done.bytes} bytes, "
        f"sha256 {done.sha256}"
    )
    render.echo(f"signed by {done.manifest['key_fingerprint']}; export recorded as #{rec.seq}")
