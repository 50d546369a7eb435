"""`itops ticket`: tickets and the actions run under them."""

from __future__ import annotations

import click

from ..app import App
from ..errors import NotFound
from ..tickets import check_ticket_id
from . import render
from .log import action_rows


@click.group()
def ticket() -> None:
    """Show tickets and their actions.

    \b
    Example:
      itops ticket show INC-1042
    """


@ticket.command()
@click.argument("ticket_id")
@click.option("--json", "as_json", is_flag=True, help="Print the ticket's records as JSON.")
@click.pass_obj
def show(app: App, ticket_id: str, as_json: bool) -> None:
    """Show a ticket: its events and every action run under it, in order."""
    check_ticket_id(ticket_id)
    records = list(app.ledger.records(ticket=ticket_id))
    if not records:
        raise NotFound(f"no ticket {ticket_id!r} in the ticket log")
    if as_json:
        render.emit_json({"ticket": ticket_id, "records": [r.as_dict() for r in records]})
        return
    opened = next((r for r in records if r.kind == "ticket.opened"), None)
    if opened is not None:
        info = opened.info
        click.secho(f"{ticket_id}", bold=True, nl=False)
        click.echo(
            f"  {info.get('priority', '')} {info.get('category', '')}  opened {opened.at[:19]}Z "
            f"by {opened.operator} ({info.get('source', '')})"
        )
    rows = action_rows(records)
    render.table(
        ["time (UTC)", "operator", "host", "action", "outcome", "detail"],
        [
            (
                r["at"][:19].replace("T", " "),
                r["operator"],
                r["host"] or "",
                r["action"],
                r["outcome"],
                r["detail"],
            )
            for r in rows
        ],
        style_column="outcome",
    )
