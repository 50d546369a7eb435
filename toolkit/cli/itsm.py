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
    for desk tickets, show what is pending or failed, pull the desk's tickets into the ledger
    for the KPIs, check the connection.

    \b
    Examples:
      itops itsm check
      itops itsm status
      itops itsm deliver
      itops itsm sync
    """


LOCK_WAIT = 60.0  # `itsm deliver`: seconds to wait for a delivery already under way
BACKGROUND_LOCK_WAIT = 600.0  # a run's detached deliverer: the runs before it may still deliver


def _deliver(
    app: App,
    keys: Sequence[str] | None,
    *,
    lock_wait: float = 0.0,
    honour_backoff: bool = False,
) -> list[Delivery]:
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
            lock_wait=lock_wait,
            honour_backoff=honour_backoff,
        )
    finally:
        desk.close()


def deliver_after_run(app: App, notes: Sequence[Note]) -> None:
    """After a run's report: its notes handed to a detached deliverer (`[itsm] deliver =
    "detach"`, the default), or tried once here (`wait`); whatever fails stays pending (one
    line on stderr says so). Never changes the run's exit code, never fails the command."""
    from toolkit.errors import ToolkitError
    from toolkit.itsm import ItsmSettings

    settings = ItsmSettings.of(app.workspace)
    tickets = ", ".join(dict.fromkeys(n.ticket for n in notes))
    try:
        mode = settings.delivery()
    except ToolkitError as exc:
        render.echo(f"warning: {exc.message}: delivering now", fg="yellow", err=True)
        mode = "wait"
    if mode == "detach":  # started once this command has closed its ledger
        keys = [n.key for n in notes]
        render.echo(
            f"{tickets}: note queued ({', '.join(keys)}), delivering in the background "
            "(itops itsm status)",
            err=True,
        )
        app.after_close(lambda: _detach(app, tickets, keys))
        return
    try:
        done = _deliver(app, [n.key for n in notes], lock_wait=settings.timeout)
    except ToolkitError as exc:
        render.echo(
            f"desk note for {tickets} queued, not delivered: {exc.message} (itops itsm deliver)",
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


def _detach(app: App, tickets: str, keys: Sequence[str]) -> None:
    from toolkit.itsm.outbox import detach

    try:
        detach(app.workspace.root, keys)
    except OSError as exc:
        render.echo(
            f"{tickets}: note pending (its delivery could not be started: {exc}); "
            "itops itsm deliver sends it",
            fg="yellow",
            err=True,
        )


def _background(app: App, keys: Sequence[str]) -> list[Delivery]:
    """A run's detached deliverer: its notes now, then what earlier runs left pending (their
    backoff honoured), each result in itops.log; nothing on a screen (there is none)."""
    import logging

    from toolkit.errors import ToolkitError

    log = logging.getLogger("itops.itsm")
    try:
        done = _deliver(app, keys, lock_wait=BACKGROUND_LOCK_WAIT) if keys else []
        done += _deliver(app, None, honour_backoff=True)
    except ToolkitError as exc:  # (the desk's settings, its secrets): pending for later
        log.warning("desk notes %s not delivered: %s", ", ".join(keys), exc.message)
        return []
    except Exception:  # a bug must not go unseen: nobody reads this process's stderr
        log.exception("desk notes %s not delivered", ", ".join(keys))
        return []
    for d in done:
        ok = d.result in ("delivered", "already-there")
        log.log(
            logging.INFO if ok else logging.WARNING,
            "%s: note %s %s %s",
            d.note.ticket,
            d.note.key,
            d.result,
            d.detail,
        )
    return done


@itsm.command()
@click.option("--json", "as_json", is_flag=True, help="Print the deliveries as JSON.")
@click.option("--note", "keys", multiple=True, metavar="KEY", help="Only this note (repeatable).")
@click.option("--background", is_flag=True, hidden=True, help="A run's detached deliverer.")
@click.pass_obj
def deliver(app: App, as_json: bool, keys: tuple[str, ...], background: bool) -> None:
    """Deliver every pending note now (a desk's Retry-After is still honoured).

    A run hands its note to a detached deliverer; if one is delivering now, this waits for it
    (up to a minute) and then delivers what is still pending. Before re-posting a note that was
    sent or tried before, the ticket is searched for its dedupe key: a note the desk took
    before its answer was lost is not posted twice. Exit 0 when nothing is left pending, 1
    otherwise.

    \b
    Examples:
      itops itsm deliver
      itops itsm deliver --note itops-5f2c0a9e1b7d4c33
    """
    if background:
        done = _background(app, keys)
        left = [d for d in done if d.result not in ("delivered", "already-there", "waiting")]
        click.get_current_context().exit(1 if left else 0)
    done = _deliver(app, keys or None, lock_wait=LOCK_WAIT)
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


@itsm.command()
@click.option(
    "--since",
    metavar="WHEN",
    help="Read the desk's history from WHEN (2026-11-01, 2026-11-01T09:00+01:00, 7d) instead "
    "of from where the last sync stopped; what is already recorded is not recorded again.",
)
@click.option("--json", "as_json", is_flag=True, help="Print what was recorded as JSON.")
@click.pass_obj
def sync(app: App, since: str | None, as_json: bool) -> None:
    """Pull the desk's tickets and their lifecycle into the ledger, for `itops kpi`.

    Each step of a desk ticket's history since the last sync becomes a ticket event at the
    desk's own time: opened, first response (a reply by anyone but the requester), waiting
    and resumed, resolved, reopened, closed, priority and category changes — mapped by
    [itsm.priorities] and [itsm.categories]. Each event carries the desk step's id, so a second
    sync records nothing new. The first sync reads the whole desk (or from --since).

    \b
    Examples:
      itops itsm sync
      itops itsm sync --since 30d --json
      itops kpi
    """
    from toolkit.cli.log import read_when
    from toolkit.itsm import ItsmSettings, open_desk
    from toolkit.itsm.sync import sync as pull

    settings = ItsmSettings.of(app.workspace)
    start = read_when(app, since)
    desk = open_desk(settings, app.credentials)
    try:
        done = pull(
            app.ledger,
            desk,
            settings,
            lock=app.workspace.state_dir / "itsm-sync.lock",
            since=start.timestamp() if start else None,
        )
    finally:
        desk.close()
    if as_json:
        render.emit_json(done.as_dict())
    elif done.busy:
        render.echo("another itops is syncing this desk now; nothing read", fg="yellow", err=True)
    else:
        counts = ", ".join(f"{n} {e}" for e, n in sorted(done.events.items())) or "nothing new"
        click.echo(
            f"{settings.system.upper() if settings.system else 'desk'}: {done.steps} step(s) read "
            f"through #{done.through} in {done.seconds:.1f} s; {done.tickets} ticket(s): {counts}"
        )
        for line in done.skipped[:20]:
            render.echo(f"skipped: {line}", fg="yellow", err=True)
        if len(done.skipped) > 20:
            render.echo(f"… and {len(done.skipped) - 20} more skipped", fg="yellow", err=True)
    click.get_current_context().exit(1 if done.busy else 0)
