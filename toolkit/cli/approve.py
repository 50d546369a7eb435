"""`itops approve`: grant a risky change another operator asked for."""

from __future__ import annotations

import click

from toolkit.app import App
from toolkit.cli import render


@click.command()
@click.argument("request_id", required=False)
@click.option("--note", metavar="TEXT", default="", help="A note kept with the approval.")
@click.option("--list", "list_pending", is_flag=True, help="List requests waiting for approval.")
@click.option("--json", "as_json", is_flag=True, help="Print the approval (or the list) as JSON.")
@click.pass_obj
def approve(app: App, request_id: str | None, note: str, list_pending: bool, as_json: bool) -> None:
    """Approve the risky change REQUEST-ID, as a different operator than its requester.

    The approval is recorded in the ticket log, bound to the request's ticket, task, exact hosts
    and parameters, and expires ([policy] approval_ttl, default 24h). The requester then runs the
    same command again; a request from a scheduled run is bound to the schedule instead, and
    its next runs go ahead until the approval expires. Your identity: ITOPS_OPERATOR, [operator]
    name in itops.toml, or your OS user.

    \b
    Examples:
      itops approve --list
      itops approve APR-1a2b3c4d --note "checked with the account owner"
    """
    from toolkit.run import approvals

    if list_pending or request_id is None:
        if request_id is not None:
            raise click.UsageError("give a REQUEST-ID or --list, not both")
        rows = approvals.pending(app.ledger, clock=app.clock)
        if as_json:
            render.emit_json(rows)
            return
        render.table(
            ["request", "ticket", "task", "hosts", "requested by", "at (UTC)"],
            [
                (
                    r["request_id"],
                    r["ticket"],
                    r["task"],
                    ", ".join(r["hosts"] or []),
                    r["requested_by"],
                    str(r["requested_at"])[:19].replace("T", " "),
                )
                for r in rows
            ],
        )
        return
    settings = app.policy_settings
    approval = approvals.grant(
        app.ledger,
        request_id,
        clock=app.clock,
        ttl=settings.approval_ttl,
        request_ttl=settings.request_ttl,
        note=note,
    )
    b = approval.binding
    if as_json:
        render.emit_json(
            {
                "request_id": approval.request_id,
                "ticket": b.ticket,
                "schedule": b.schedule,
                "task": b.task,
                "hosts": list(b.hosts),
                "params_sha256": b.params_sha256,
                "requested_by": approval.requested_by,
                "approved_by": approval.approved_by,
                "expires_at": approval.expires_at.isoformat(),
            }
        )
        return
    render.echo(
        f"approved {approval.request_id}: {b.task} on {', '.join(b.hosts)} "
        + (f"for the runs of schedule {b.schedule} " if b.schedule else f"under {b.ticket} ")
        + f"(requested by {approval.requested_by}); valid until "
        f"{approval.expires_at.strftime('%Y-%m-%d %H:%M')} UTC for exactly these hosts and "
        "parameters"
    )
