"""`itops playbook`: Ansible playbooks for heavy jobs, through ansible-runner, into the ledger."""

from __future__ import annotations

import sys

import click

from toolkit.app import App
from toolkit.cli import render
from toolkit.cli.completion import complete_playbook, complete_targets
from toolkit.cli.fix import EPILOG, show_report
from toolkit.cli.options import Checked, governance, new_ticket
from toolkit.desk.tickets import check_ticket_id
from toolkit.run.service import check_governance
from toolkit.textsafe import visible


@click.group()
def playbook() -> None:
    """List and run the workspace's Ansible playbooks (playbooks/*.yml).

    \b
    Examples:
      itops playbook list
      itops playbook run backup_configs lab --ticket CHG-12
    """


@playbook.command("list")
@click.option("--json", "as_json", is_flag=True, help="Print the playbooks as JSON.")
@click.pass_obj
def list_(app: App, as_json: bool) -> None:
    """List the playbooks in the workspace's playbooks/ folder.

    \b
    Example:
      itops playbook list
    """
    from toolkit.automation.playbooks import list_playbooks

    found = list_playbooks(app.workspace)
    if as_json:
        render.emit_json(
            [{"name": p.name, "path": str(p.path), "summary": p.summary} for p in found]
        )
        return
    render.table(["playbook", "summary"], [(p.name, p.summary) for p in found])


@playbook.command(epilog=EPILOG)
@click.argument("name", shell_complete=complete_playbook)
@click.argument("targets", shell_complete=complete_targets)
@click.option(
    "--ticket",
    "-t",
    metavar="ID",
    help="Ticket the change is done under (required unless --check).",
)
@click.option(
    "--check", "check_only", is_flag=True, help="Ansible check mode with diffs: changes nothing."
)
@click.option(
    "-e",
    "--extra-var",
    "extra_vars",
    multiple=True,
    metavar="NAME=VALUE",
    help="An extra variable (repeatable); secrets as references (env:VAR, …).",
)
@new_ticket
@click.option(
    "--forks",
    "-f",
    type=Checked("playbook_forks"),
    default=20,
    show_default=True,
    help="Hosts ansible works on at once.",
)
@governance
@click.option("--json", "as_json", is_flag=True, help="Print the run report as JSON.")
@click.pass_obj
def run(
    app: App,
    name: str,
    targets: str,
    ticket: str | None,
    check_only: bool,
    extra_vars: tuple[str, ...],
    category: str | None,
    priority: str | None,
    kind: str | None,
    forks: int,
    break_glass: bool,
    reason: str | None,
    approval: str | None,
    as_json: bool,
) -> None:
    """Run playbook NAME on the hosts matching TARGETS (an inventory pattern).

    Every per-host task result goes into the ticket log (task, host, ok/changed/failed/
    unreachable, duration, masked output). Host keys are checked against the workspace's
    known_hosts; an unknown or changed key makes the host unreachable.

    A run with --ticket goes through the same per-host policy as `itops fix`: maintenance
    windows (`[policy] disruptive = ["playbook:NAME"]`, or `itops_disruptive: true` in the
    play's vars), approvals (`risky`, `itops_risky`), --break-glass on a P1 ticket.

    \b
    Examples:
      itops playbook run patch_linux lab --check
      itops playbook run backup_configs 'lab:!lab-03' --ticket CHG-12 -e backup_paths=/etc/hosts
    """
    from toolkit.automation.playbooks import (
        TaskEvent,
        check_name,
        parse_extra_vars,
        refuse_site_hosts,
        run_playbook,
    )
    from toolkit.desk.tickets import ensure

    check_name(name)
    check_governance(break_glass, reason, approval, check_only)
    variables = parse_extra_vars(extra_vars)
    if ticket is not None:
        check_ticket_id(ticket)
    hosts = app.inventory.select(targets)
    refuse_site_hosts(name, hosts)  # before the ticket is opened
    if ticket and not check_only:
        ensure(
            app.ledger,
            ticket,
            category=category or ("backup" if "backup" in name else "software"),
            priority=priority,
            kind=kind,
            source=f"itops playbook {name}",
        )
    show = True  # progress goes to stderr, so --json output stays clean

    def progress(event: TaskEvent) -> None:
        if show:
            click.echo(  # (the outcome's colour is ours; the host and task are made visible)
                f"  {visible(event.host):<16} {render.outcome_text(event.status):<11} "
                f"{visible(event.task)} "
                f"({event.duration:.1f}s)",
                err=True,
            )

    if show:
        mode = "check mode" if check_only else f"under {ticket}"
        render.echo(f"playbook {name} on {len(hosts)} host(s), {mode}:", err=True)
    report = run_playbook(
        app,
        name,
        hosts,
        ticket=ticket,
        check_only=check_only,
        extra_vars=variables,
        on_event=progress,
        forks=forks,
        break_glass=reason if break_glass else None,
        approval_id=approval,
    )
    if as_json:
        render.emit_json(app.redactor.mask_data(report.as_dict()))
    else:
        show_report(report)
    sys.stdout.flush()
    click.get_current_context().exit(report.exit_code)
