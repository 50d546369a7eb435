"""`itops approve`: show, then sign, a risky change another operator asked for."""

from __future__ import annotations

import json
import sys
from typing import Any

import click

from toolkit.app import App
from toolkit.cli import render


def _show(found: dict[str, Any]) -> None:
    scope = f"schedule {found['schedule']}" if found["schedule"] else f"ticket {found['ticket']}"
    params = json.dumps(found["params"], sort_keys=True, ensure_ascii=False) or "{}"
    asked = found["requested_by"] or f"NOT VERIFIED ({found['problem']})"
    click.echo(
        f"request     {found['request_id']}\n"
        f"for         {scope}\n"
        f"task        {found['task']}\n"
        f"hosts       {', '.join(found['hosts'])}\n"
        f"parameters  {params}\n"
        f"binding     sha256:{found['binding_sha256']}\n"
        f"requested   by {asked} (shown as {found['requested_as']})",
        err=True,
    )
    for host, lines in (found.get("plan") or {}).items():  # what apply will do there
        render.echo(
            f"plan on {host}:\n" + "\n".join(f"  {ln}" for ln in str(lines).splitlines()), err=True
        )


@click.command()
@click.argument("request_id", required=False)
@click.option("--note", metavar="TEXT", default="", help="A note kept with the approval.")
@click.option("--list", "list_pending", is_flag=True, help="List requests waiting for approval.")
@click.option("--yes", "-y", is_flag=True, help="Sign without asking (needed without a terminal).")
@click.option(
    "--uses",
    type=click.IntRange(1, 100),
    default=1,
    show_default=True,
    help="How many runs the approval covers (a schedule's: all until it expires).",
)
@click.option("--json", "as_json", is_flag=True, help="Print the approval (or the list) as JSON.")
@click.pass_obj
def approve(
    app: App,
    request_id: str | None,
    note: str,
    list_pending: bool,
    yes: bool,
    uses: int,
    as_json: bool,
) -> None:
    """Approve the risky change REQUEST-ID with your SSH key, as another principal than its
    requester.

    Shows what you approve (ticket, task, exact hosts, parameters with secrets masked, the
    binding's SHA-256 and, per host, the plan: a push's rendered lines), then signs it with your
    key (ITOPS_SIGNING_KEY, [identity] key, or ~/.ssh/id_ed25519) after checking the request's
    signature against the workspace's allowed_signers. The grant is bound to exactly that — the
    parameters, the task's code and each host's plan, so an edited template needs a new
    approval — covers one run unless --uses N (a schedule's: its runs until it expires), and
    expires ([policy] approval_ttl, default 24h); every use re-verifies both signatures.
    ITOPS_OPERATOR is only the label the records show: your identity is your key.

    \b
    Examples:
      itops approve --list
      itops approve APR-1a2b3c4d --note "checked with the account owner"
      itops approve APR-1a2b3c4d --yes
    """
    from toolkit.errors import ToolkitError
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
    found = approvals.describe(app.ledger, request_id, app.identity)
    _show(found)
    if not yes:
        if not sys.stdin.isatty():
            raise ToolkitError(
                "not confirmed: nothing signed",
                hint=f"read the above, then: itops approve {request_id} --yes",
            )
        click.confirm(f"Sign this approval with {app.identity.key}?", abort=True, err=True)
    settings = app.policy_settings
    approval = approvals.grant(
        app.ledger,
        request_id,
        clock=app.clock,
        identity=app.identity,
        ttl=settings.approval_ttl,
        request_ttl=settings.request_ttl,
        note=note,
        uses=uses,
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
                "binding_sha256": b.sha256,
                "requested_by": approval.requested_by,
                "approved_by": approval.approved_by,
                "expires_at": approval.expires_at.isoformat(),
            }
        )
        return
    render.echo(
        f"approved {approval.request_id}: {b.task} on {', '.join(b.hosts)} "
        + (f"for the runs of schedule {b.schedule} " if b.schedule else f"under {b.ticket} ")
        + f"(requested by {approval.requested_by}, signed by {approval.approved_by}); valid "
        f"until {approval.expires_at.strftime('%Y-%m-%d %H:%M')} UTC for exactly these hosts and "
        "parameters"
    )
