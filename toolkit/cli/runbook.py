"""`itops runbook`: list, show and run the YAML procedures in runbooks/."""

from __future__ import annotations

import sys
from pathlib import Path

import click

from toolkit.app import App
from toolkit.automation.runbooks import Runbook, RunbookReport, StepRun
from toolkit.cli import render
from toolkit.cli.completion import complete_runbook, complete_targets
from toolkit.cli.fix import emit_report, parse_params, show_report
from toolkit.cli.options import (
    check_resolve,
    fan_out,
    kind_option,
    param_option,
    resolve_option,
)
from toolkit.desk.tickets import PRIORITIES, check_ticket_id

EPILOG = """\b
Exit codes:
  0  no host needed escalating (every fix step ended fixed or already-ok)
  1  a host was escalated (its last fix step did not end fixed/already-ok);
     with --check: a step failed
  2  bad usage or input: nothing ran
  3  a host was unreachable (later steps skipped on it)
  4  --check found something a step would fix
  5  a step needs an approval (itops approve REQUEST-ID, then run the runbook again)
"""


def _folders(app: App) -> list[Path]:
    from toolkit.automation.runbooks import runbook_folders

    return runbook_folders(app.workspace.folder("runbooks", "runbooks"))


def _load(app: App, name: str) -> Runbook:
    from toolkit.automation.runbooks import get_runbook

    return get_runbook(name, _folders(app), app.catalog)


@click.group()
def runbook() -> None:
    """Runbooks: procedures per ticket category that chain remediations,
    diagnose → fix → verify → escalate to L3 with the findings.

    \b
    Examples:
      itops runbook list
      itops runbook show printer-not-printing
      itops runbook run printer-not-printing ws-042 --ticket INC-1042 --resolve
      itops runbook run password-locked ws-042 -p user=jdoe --ticket INC-1043 --priority P2
      itops runbook run no-network office -p name=intranet.example.com --check
    """


@runbook.command("list")
@click.option("--json", "as_json", is_flag=True, help="Print the runbooks as JSON.")
@click.pass_obj
def list_(app: App, as_json: bool) -> None:
    """List the runbooks (built in, and the workspace's runbooks/ folder).

    \b
    Example:
      itops runbook list --json
    """
    from toolkit.automation.runbooks import load_runbooks

    books = load_runbooks(_folders(app), app.catalog)
    if as_json:
        render.emit_json(
            [
                {
                    "name": b.name,
                    "category": b.category,
                    "summary": b.summary,
                    "steps": [s.task for s in b.steps],
                    "source": b.source,
                }
                for b in books.values()
            ]
        )
        return
    render.table(
        ["runbook", "category", "summary", "steps"],
        [
            (b.name, b.category, b.summary, " → ".join(s.task for s in b.steps))
            for b in books.values()
        ],
    )


@runbook.command("show")
@click.argument("name", shell_complete=complete_runbook)
@click.option("--json", "as_json", is_flag=True, help="Print the runbook as JSON.")
@click.pass_obj
def show(app: App, name: str, as_json: bool) -> None:
    """Describe one runbook: its parameters, steps and escalation.

    \b
    Example:
      itops runbook show printer-not-printing
    """
    book = _load(app, name)
    if as_json:
        render.emit_json(
            {
                "name": book.name,
                "summary": book.summary,
                "category": book.category,
                "kind": book.kind,
                "source": book.source,
                "params": {
                    p.name: {"help": p.help, "required": p.required, "default": p.default}
                    for p in book.params.values()
                },
                "steps": [
                    {
                        "name": s.name,
                        "task": s.task,
                        "params": dict(s.params),
                        "check_only": s.check_only,
                        "if_failed": s.if_failed,
                    }
                    for s in book.steps
                ],
                "escalate": (
                    {"to": book.escalate.to, "note": book.escalate.note} if book.escalate else None
                ),
            }
        )
        return
    render.echo(book.name, bold=True)
    render.echo(f"  {book.summary}   (category: {book.category})")
    if book.params:
        render.echo()
        render.echo("Parameters (-p NAME=VALUE):", bold=True)
        for p in book.params.values():
            extra = (
                "required" if p.required else (f"default {p.default}" if p.default else "optional")
            )
            render.echo(f"  {p.name:<16} {extra}  {p.help}")
    render.echo()
    render.echo("Steps:", bold=True)
    for n, s in enumerate(book.steps, 1):
        flags = []
        if s.check_only:
            flags.append("check only")
        if s.if_failed:
            flags.append(f"only where '{s.if_failed}' did not end fixed/already-ok")
        params = " ".join(f"{k}={v}" for k, v in s.params.items())
        render.echo(
            f"  {n}. {s.name}: {s.task}"
            + (f" {params}" if params else "")
            + (f"  ({'; '.join(flags)})" if flags else "")
        )
    if book.escalate:
        render.echo(f"\nEscalate to {book.escalate.to}: {book.escalate.note}")
    render.echo(f"\nsource: {book.source}")


@runbook.command("run", epilog=EPILOG)
@click.argument("name", shell_complete=complete_runbook)
@click.argument("targets", shell_complete=complete_targets)
@param_option("A runbook parameter (repeatable).")
@click.option(
    "--ticket", "-t", metavar="ID", help="Ticket the run is done under (required to change hosts)."
)
@click.option(
    "--priority", type=click.Choice(PRIORITIES), help="Priority, if --ticket opens a new ticket."
)
@kind_option("Kind, if --ticket opens a new ticket [default: the runbook's, else incident].")
@click.option(
    "--check", "check_only", is_flag=True, help="Run every step read-only: never changes a host."
)
@fan_out
@resolve_option
@click.option("--json", "as_json", is_flag=True, help="Print the run report as JSON.")
@click.pass_obj
def run(
    app: App,
    name: str,
    targets: str,
    params: tuple[str, ...],
    ticket: str | None,
    priority: str | None,
    kind: str | None,
    check_only: bool,
    forks: int | None,
    connect_timeout: float | None,
    command_timeout: float | None,
    resolve: bool,
    as_json: bool,
) -> None:
    """Run runbook NAME on the hosts matching TARGETS, step by step, under one ticket.

    Every action is recorded under the ticket and tagged with the runbook and its run id; a
    host whose last fix step did not end fixed or already-ok is escalated (one ticket.escalated
    event with the findings).

    \b
    Examples:
      itops runbook run printer-not-printing ws-042 --ticket INC-1042
      itops runbook run patch-compliance 'lab:!lab-03' -p security_only=true --ticket CHG-9
      itops runbook run av-out-of-date workstations --check
    """
    from toolkit.automation.runbooks import prepare
    from toolkit.automation.runbooks import run as run_book
    from toolkit.desk.tickets import ensure

    check_resolve(resolve, ticket, check_only)
    book = _load(app, name)
    raw = parse_params(params)
    if ticket is not None:
        from toolkit.run.service import refuse_desk_overrides

        check_ticket_id(ticket)
        refuse_desk_overrides(app, ticket, category=None, priority=priority)
    hosts = app.inventory.select(targets)
    prepare(book, hosts, raw, app.catalog)  # bad values: refused before anything is recorded
    if ticket and not check_only and not _desk_ticket(app, ticket):
        ensure(
            app.ledger,
            ticket,
            category=book.category,
            priority=priority,
            kind=kind or book.kind,
            source=f"itops runbook {book.name}",
        )
    total = len(book.steps)

    def on_step(index: int, step: StepRun) -> None:
        if as_json:
            return
        what = f"step {index + 1}/{total}: {step.step.name} ({step.step.task})"
        render.echo(f"\n== {what}", bold=True)
        if step.skipped:
            render.echo(f"   not needed on: {', '.join(step.skipped)}")
        if step.report is not None:
            show_report(step.report)

    report = run_book(
        app,
        book,
        hosts,
        raw,
        ticket=ticket,
        check_only=check_only,
        forks=forks,
        connect_timeout=connect_timeout,
        command_timeout=command_timeout,
        on_step=on_step,
    )
    resolved = None
    notes = list(report.desk_notes)
    if resolve and ticket:
        from toolkit.desk.service import resolve_after_run

        last = {r.host: str(r.outcome) for r in report.results}  # each host's last step
        held = ", ".join(sorted({*report.escalated, *report.held}))
        resolved = resolve_after_run(
            app, ticket, f"itops runbook {book.name}", last,
            held_by=f"{held} escalated or held" if held else "",
        )  # fmt: skip
        system = _desk_ticket(app, ticket)
        if resolved[0] and system:
            from toolkit.itsm.outbox import queue

            notes.append(queue(app.ledger, ticket, system, f"itops: {resolved[1]}", resolve=True))
    if as_json:
        emit_report(app, report, resolved)
    else:
        _summary(report, book)
        if resolved is not None:
            render.echo(resolved[1], err=not resolved[0])
        for request in report.approval_requests:
            render.echo(
                f"approval requested: {request} — another operator runs "
                f"`itops approve {request}`, then run this runbook again"
            )
    render.handovers(report.results)
    sys.stdout.flush()
    if notes:  # after the report: a desk that is down never holds the runbook's outcome back
        from toolkit.cli.itsm import deliver_after_run

        deliver_after_run(app, notes)
    click.get_current_context().exit(report.exit_code)


def _desk_ticket(app: App, ticket: str) -> str | None:
    """The desk system if `ticket` is the configured desk's id (then the desk opens it)."""
    if "itsm" not in app.workspace.config:
        return None
    from toolkit.itsm import ItsmSettings

    settings = ItsmSettings.of(app.workspace)
    return settings.system if settings.owns(ticket) else None


def _summary(report: RunbookReport, book: Runbook) -> None:
    mode = "check" if report.check_only else "run"
    where = f" under {report.ticket}" if report.ticket else ""
    render.echo(
        f"\nrunbook {report.runbook} ({mode} {report.run_id}) in {report.duration:.1f}s; "
        f"recorded in the ticket log{where}"
    )
    if report.check_only:
        render.echo("check only: nothing changed, nothing escalated")
        return
    for host, why in report.held.items():
        render.echo(f"held: {host}: {why}")
    if not report.escalated:
        render.echo("no host needs escalating")
        return
    to = book.escalate.to if book.escalate else "L3"
    for host, why in report.escalated.items():
        render.echo(f"escalated to {to}: {host}: {why}")  # messages are masked by the runner
