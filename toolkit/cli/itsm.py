"""`itops itsm`: the service desk's outbox (deliver, status) and the connection check."""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

import click

from toolkit.app import App
from toolkit.cli import render
from toolkit.cli.options import reads_only

if TYPE_CHECKING:
    from toolkit.itsm.outbox import Delivery, Note


@click.group()
def itsm() -> None:
    """The service desk ([itsm] in itops.toml, docs/itsm.md): deliver the notes runs queued
    for desk tickets, show what is pending or failed, check the connection.

    \b
    Examples:
      itops itsm check
      itops itsm status
      itops itsm deliver
    """


def _deliver(app: App, keys: Sequence[str] | None) -> list[Delivery]:
    from toolkit.itsm import ItsmSettings, open_desk
    from toolkit.itsm.outbox import deliver

    settings = ItsmSettings.of(app.workspace)
    desk = open_desk(settings, app.credentials)
    try:
        return deliver(
            app.ledger,
            desk,
            lock=app.workspace.state_dir / "itsm-outbox.lock",
            keys=keys,
            max_attempts=settings.max_attempts,
        )
    finally:
        desk.close()


def deliver_after_run(app: App, notes: Sequence[Note]) -> None:
    """After a run's report: try its notes once; whatever fails stays pending (one line on
    stderr says so). Never changes the run's exit code."""
    from toolkit.errors import ToolkitError

    try:
        done = _deliver(app, [n.key for n in notes])
    except ToolkitError as exc:
        render.echo(
            f"desk note for {notes[0].ticket} queued, not delivered: {exc.message} "
            "(itops itsm deliver)",
            fg="yellow",
            err=True,
        )
        return
    for d in done:
        if d.result in ("delivered", "already-there"):
            what = "resolved with a note" if d.note.resolve else "note delivered"
            render.echo(f"{d.note.ticket}: {what} ({d.note.key})", err=True)
        else:
            render.echo(
                f"{d.note.ticket}: note pending ({d.result}: {d.detail}); itops itsm deliver "
                "sends it later",
                fg="yellow",
                err=True,
            )


@itsm.command()
@click.option("--json", "as_json", is_flag=True, help="Print the deliveries as JSON.")
@click.pass_obj
def deliver(app: App, as_json: bool) -> None:
    """Deliver every pending note now (a desk's Retry-After is still honoured).

    Before re-posting a note whose last attempt failed, the ticket is searched for its dedupe
    key: a note the desk took before its answer was lost is not posted twice. Exit 0 when
    nothing is left pending, 1 otherwise.

    \b
    Example:
      itops itsm deliver
    """
    done = _deliver(app, None)
    if as_json:
        render.emit_json(
            [{**d.note.as_dict(), "result": d.result, "detail": d.detail} for d in done]
        )
    elif not done:
        click.echo("nothing to deliver")
    else:
        render.table(
            ["ticket", "note", "result", "detail"],
            [(d.note.ticket, d.note.key, d.result, d.detail) for d in done],
            style_column="result",
        )
    left = [d for d in done if d.result not in ("delivered", "already-there")]
    click.get_current_context().exit(1 if left else 0)


@itsm.command()
@click.option("--all", "show_all", is_flag=True, help="Also list delivered notes.")
@click.option("--json", "as_json", is_flag=True, help="Print the notes as JSON.")
@click.pass_obj
@reads_only
def status(app: App, show_all: bool, as_json: bool) -> None:
    """Show the notes waiting for the desk (pending) and those given up (failed).

    \b
    Examples:
      itops itsm status
      itops itsm status --json
    """
    from toolkit.itsm.outbox import notes

    found = [n for n in notes(app.ledger) if show_all or n.state != "delivered"]
    if as_json:
        render.emit_json([n.as_dict() for n in found])
        return
    if not found:
        click.echo("the outbox is empty: every note is delivered")
        return
    render.table(
        ["ticket", "note", "state", "attempts", "queued", "last error"],
        [(n.ticket, n.key, n.state, n.attempts, n.queued_at, n.error) for n in found],
        style_column="state",
    )


@itsm.command()
@click.pass_obj
def check(app: App) -> None:
    """Test the desk's URL, TLS and credentials (one read-only call).

    \b
    Example:
      itops itsm check
    """
    from toolkit.itsm import ItsmSettings, open_desk

    settings = ItsmSettings.of(app.workspace)
    desk = open_desk(settings, app.credentials)
    try:
        for line in desk.check():
            click.echo(f"ok: {line}")
    finally:
        desk.close()
