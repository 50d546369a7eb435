"""`itops fix`: the one-line remediation."""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import click

from toolkit.app import App
from toolkit.cli import render
from toolkit.cli.completion import complete_targets, complete_task
from toolkit.cli.options import (
    Checked,
    check_resolve,
    fan_out,
    governance,
    new_ticket,
    param_option,
    resolve_option,
)
from toolkit.errors import ValidationError
from toolkit.run.runner import HostResult, Outcome, RunInterrupted, RunReport
from toolkit.run.service import check_governance

if TYPE_CHECKING:
    from toolkit.automation.runbooks import RunbookReport
    from toolkit.itsm.outbox import Note
    from toolkit.remediation.catalog import Task
    from toolkit.run.policy import RunPolicy

EPILOG = """\b
Exit codes (the first that applies):
  0  every host already-ok or fixed (or skipped: not its platform)
  1  at least one host failed (apply or verify failed, a step timed out),
     or the run's last step failed (a backup's commit)
  2  bad usage or input: nothing ran
  3  at least one host unreachable (refused, timed out, auth or host key refused)
  4  --check found something to fix
  5  at least one host needs approval
  6  at least one host was skipped: outside its maintenance window, or not run
     after --max-fail-percent (a host of another platform is no work left undone)
  130 interrupted (the per-host table is still printed)
"""


def parse_params(items: Sequence[str]) -> dict[str, str | list[str]]:
    """`-p name=value` pairs; a name given twice becomes a list."""
    out: dict[str, str | list[str]] = {}
    for item in items:
        name, sep, value = item.partition("=")
        if not sep or not name:
            raise ValidationError(f"parameter {item!r} is not NAME=VALUE")
        if name in out:
            prev = out[name]
            out[name] = [*prev, value] if isinstance(prev, list) else [prev, value]
        else:
            out[name] = value
    return out


def task_options(entry: Task, extras: Sequence[str]) -> list[str]:
    """A task's parameters given as options after TARGETS, as `-p` pairs: `--security-only`
    (a bool parameter; `--no-expire` sets one false), `--include curl` or `--include=curl`."""
    known = {name: p for spec in entry.specs for name, p in spec.params.items()}
    pairs: list[str] = []
    args = list(extras)
    while args:
        arg = args.pop(0)
        flag, sep, value = arg.partition("=")
        name = flag[2:].replace("-", "_")
        negated = name.startswith("no_") and known.get(name[3:]) is not None
        param = known.get(name[3:] if negated else name)
        if not flag.startswith("--") or param is None:
            offered = ", ".join("--" + n.replace("_", "-") for n in known) or "none"
            raise click.UsageError(
                f"{entry.name} has no option {flag!r} (its parameters: {offered}; "
                "or give -p NAME=VALUE)"
                if flag.startswith("--")
                else f"unexpected argument {arg!r}: TARGETS is one pattern — join hosts or "
                "groups with ':' (ws-041:ws-042)"
            )
        name = name[3:] if negated else name
        if param.type is bool and not sep:
            pairs.append(f"{name}={'false' if negated else 'true'}")
        elif negated:
            raise click.UsageError(f"--no-{name.replace('_', '-')} is only for on/off parameters")
        elif sep:
            pairs.append(f"{name}={value}")
        elif args and not args[0].startswith("-"):
            pairs.append(f"{name}={args.pop(0)}")
        else:
            raise click.UsageError(f"{flag} needs a value: {flag} VALUE or {flag}=VALUE")
    return pairs


@click.command(
    epilog=EPILOG, context_settings={"ignore_unknown_options": True, "allow_extra_args": True}
)
@click.argument("task", shell_complete=complete_task)
@click.argument("targets", shell_complete=complete_targets)
@param_option("A task parameter (repeatable). See: itops tasks show TASK")
@click.option(
    "--ticket",
    "-t",
    metavar="ID",
    help="Ticket the change is done under (required to change hosts).",
)
@new_ticket
@click.option(
    "--check", "check_only", is_flag=True, help="Only diagnose (read-only): never changes a host."
)
@fan_out
@click.option("--serial", type=Checked("serial"), metavar="N", help="Work in batches of N hosts.")
@click.option(
    "--max-fail-percent",
    type=Checked("max_fail_percent"),
    metavar="P",
    help="Stop before the next batch if more than P% of a batch failed.",
)
@governance
@resolve_option
@click.option("--json", "as_json", is_flag=True, help="Print the run report as JSON.")
@click.pass_obj
def fix(
    app: App,
    task: str,
    targets: str,
    params: tuple[str, ...],
    ticket: str | None,
    category: str | None,
    priority: str | None,
    kind: str | None,
    check_only: bool,
    forks: int | None,
    serial: int | None,
    max_fail_percent: float | None,
    connect_timeout: float | None,
    command_timeout: float | None,
    break_glass: bool,
    reason: str | None,
    approval: str | None,
    resolve: bool,
    as_json: bool,
) -> None:
    """Run remediation TASK on the hosts matching TARGETS: check → apply → verify.

    TARGETS is a host, a group, a glob (ws-0*), or a combination: a:b (either),
    a:&b (both), a:!b (a but not b).

    \b
    Examples:
      itops fix printer.clear-queue ws-042 --ticket INC-1042
      itops fix printer.clear-queue office --check
      itops fix printer.clear-queue 'lab:!lab-03' -p queue=office --ticket INC-1042 --serial 2
      itops fix patch.apply linux --security-only --exclude 'linux-image-*' --ticket CHG-7
      itops fix printer.clear-queue ws-042 --ticket INC-1042 --resolve

    A task's parameters (itops tasks show TASK) are given with -p NAME=VALUE or, after
    TARGETS, as options: --security-only, --no-expire, --include curl.

    Disruptive tasks run on a host only inside its maintenance window (outside: skipped),
    unless --break-glass --reason TEXT on a P1 ticket. Risky tasks need an approval from
    another operator: the first run records a request and exits 5 with its REQUEST-ID.
    """
    extras = click.get_current_context().args
    check_resolve(resolve, ticket, check_only)
    for positional in (task, targets):
        if positional.startswith("-"):
            raise click.UsageError(
                f"{positional!r} where TASK and TARGETS belong: give them first, then options"
            )
    if extras:
        params = (*params, *task_options(app.catalog.get(task), extras))
    try:
        report, policy, desk = execute(
            app,
            task,
            targets,
            params,
            ticket=ticket,
            category=category,
            priority=priority,
            kind=kind,
            check_only=check_only,
            forks=forks,
            serial=serial,
            max_fail_percent=max_fail_percent,
            connect_timeout=connect_timeout,
            command_timeout=command_timeout,
            break_glass=break_glass,
            reason=reason,
            approval=approval,
            progress=not as_json,
            resolve=resolve,
        )
    except RunInterrupted as stop:  # say what happened where; deliver passwords hosts now have
        try:
            show_interrupted(app, stop, as_json=as_json)
        finally:
            render.handovers(stop.results)
        click.get_current_context().exit(130)
    resolved = desk.resolution  # a desk ticket: decided with the run, in its one note
    if resolve and ticket and resolved is None:
        from toolkit.desk.service import resolve_after_run

        resolved = resolve_after_run(
            app, ticket, f"itops fix {task}", {r.host: str(r.outcome) for r in report.results}
        )
        if resolved[0] and desk.system:
            from toolkit.itsm.outbox import queue

            desk.notes.append(
                queue(app.ledger, ticket, desk.system, f"itops: {resolved[1]}", resolve=True)
            )
    try:
        if as_json:
            emit_report(app, report, resolved)
        else:
            show_report(report)
            if resolved is not None:
                render.echo(resolved[1], err=not resolved[0])
            if policy is not None and policy.request_id and report.counts.get("needs-approval"):
                render.echo(
                    f"approval requested: {policy.request_id} — another operator runs "
                    f"`itops approve {policy.request_id}`, then run this command again"
                )
        if not check_only:
            entry = app.catalog.get(task)
            _warn_repeat_fixes(
                app, entry.category, [r.host for r in report.results if r.outcome == Outcome.FIXED]
            )
    finally:  # whatever the reporting does, what the run made for the engineer reaches them
        render.handovers(report.results)
    for warning in desk.warnings:
        render.echo(f"warning: {warning}", fg="yellow", err=True)
    if desk.notes:  # after the report: a desk that is down never holds the fix's outcome back
        from toolkit.cli.itsm import deliver_after_run

        deliver_after_run(app, desk.notes)
    click.get_current_context().exit(report.exit_code)


@dataclass
class DeskNotes:
    """What a run queued for the service desk (delivered once the report is out)."""

    system: str | None = None
    notes: list[Note] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    resolution: tuple[bool, str] | None = None  # --resolve, folded into the run's note


def execute(
    app: App,
    task: str,
    targets: str,
    params: Sequence[str] = (),
    *,
    ticket: str | None = None,
    category: str | None = None,
    priority: str | None = None,
    kind: str | None = None,
    check_only: bool = False,
    forks: int | None = None,
    serial: int | None = None,
    max_fail_percent: float | None = None,
    connect_timeout: float | None = None,
    command_timeout: float | None = None,
    break_glass: bool = False,
    reason: str | None = None,
    approval: str | None = None,
    progress: bool = True,
    resolve: bool = False,
) -> tuple[RunReport, RunPolicy | None, DeskNotes]:
    """`itops fix` up to the report: what was typed, checked, then run by the run service."""
    from toolkit.desk.tickets import check_ticket_id
    from toolkit.run.service import RunService, plan, refuse_desk_overrides, start_desk_lookup

    check_governance(break_glass, reason, approval, check_only)
    lookup = None
    if ticket is not None:  # a desk's ticket: looked up while the hosts and the task are read
        check_ticket_id(ticket)
        refuse_desk_overrides(app, ticket, category=category, priority=priority)
        lookup = start_desk_lookup(app, ticket)
    request = plan(
        app,
        task,
        targets,
        parse_params(params),
        ticket=ticket,
        category=category,
        priority=priority,
        kind=kind,
        check_only=check_only,
        break_glass=reason if break_glass else None,
        approval_id=approval,
        forks=forks,
        serial=serial,
        max_fail_percent=max_fail_percent,
        command_timeout=command_timeout,
    )
    enabled = progress
    decide = None
    if resolve and ticket and not check_only:
        from toolkit.desk.service import resolve_after_run

        def decide(report: RunReport) -> tuple[bool, str]:
            outcomes = {r.host: str(r.outcome) for r in report.results}
            return resolve_after_run(app, str(ticket), f"itops fix {task}", outcomes)

    with (
        render.progress_bar(request.hosts, enabled=enabled) as observers,
        RunService(
            app,
            connect_timeout=connect_timeout,
            command_timeout=command_timeout,
            observers=observers,
            resolve=decide,
            desk_lookup=lookup,
        ) as service,
    ):
        # hosts of remote sites: their jobs go to the sites' workers (RunService.run)
        ran = service.run(request)
    desk = DeskNotes(
        service.desk_system(ticket), service.desk_notes, service.desk_warnings, service.resolution
    )
    return ran.report, ran.policy, desk


SHOW_REPEATS = 5  # one line each; the rest are summed up in one line


def _warn_repeat_fixes(app: App, category: str, hosts: list[str]) -> None:
    """Same host, same category, N fixes in 30 days: suggest a problem record (stderr)."""
    if not hosts:
        return
    from toolkit.desk.service import category_lookup, policy_for, repeat_fixes

    known = {t.name: t.category for t in app.catalog.infos()}
    threshold = policy_for(app.workspace).repeat_fix_threshold
    found = repeat_fixes(app.ledger, hosts, category, category_lookup(known), threshold=threshold)
    for repeat in found[:SHOW_REPEATS]:
        render.echo(f"warning: {repeat.message}", fg="yellow", err=True)
    if len(found) > SHOW_REPEATS:
        more = [r.host for r in found[SHOW_REPEATS:]]
        listed = ", ".join(more[:10]) + (f" and {len(more) - 10} more" if len(more) > 10 else "")
        render.echo(
            f"warning: {len(more)} more host(s) had {threshold}+ {category} fixes in "
            f"30 days: {listed}",
            fg="yellow",
            err=True,
        )


def emit_report(
    app: App, report: RunReport | RunbookReport, resolved: tuple[bool, str] | None
) -> None:
    """A run's report as JSON (`itops fix`, `itops runbook run`): with `ticket_resolved` when
    --resolve decided, masked."""
    data = report.as_dict()
    if resolved is not None:
        data["ticket_resolved"] = resolved[0]
    render.emit_json(app.redactor.mask_data(data))


def show_report(report: RunReport) -> None:
    render.table(
        ["host", "outcome", "detail", "time"],
        [(r.host, _outcome(r), r.message, f"{r.duration:.1f}s") for r in report.results],
        style_column="outcome",
    )
    # What a check found, as a diff (a configuration push's missing lines): shown, not only
    # in --json, so `--check` is the review before the change.
    for r in report.results:
        diff = (r.check.facts.get("diff") if r.check is not None else None) or ""
        if diff and str(r.outcome) == "would-fix":
            render.echo(f"--- {r.host}: what the check found missing\n{str(diff).rstrip()}")
    counts = ", ".join(f"{n} {o}" for o, n in sorted(report.counts.items()))
    where = f" under {report.ticket}" if report.ticket else ""
    mode = "check" if report.check_only else "fix"
    render.echo(
        f"{report.task} ({mode}) on {len(report.results)} host(s): {counts} "
        f"in {report.duration:.1f}s; recorded in the ticket log{where}"
    )
    for note in report.notes:
        render.echo(note)


def show_interrupted(app: App, stop: RunInterrupted, *, as_json: bool) -> None:
    """After Ctrl-C: the same per-host table as a finished run, plus the hosts abandoned while
    running and the ones never started, and where the actions left open are."""
    counts = Counter(str(r.outcome) for r in stop.results)
    if stop.abandoned:
        counts["abandoned"] = len(stop.abandoned)
    if stop.never_started:
        counts["not-started"] = len(stop.never_started)
    open_hint = f"itops log --ticket {stop.ticket} --outcome open" if stop.ticket else None
    if as_json:
        render.emit_json(
            app.redactor.mask_data(
                {
                    "task": stop.task,
                    "ticket": stop.ticket,
                    "interrupted": True,
                    "exit_code": 130,
                    "duration": round(stop.duration, 3),
                    "counts": dict(counts),
                    "hosts": [r.as_dict() for r in stop.results],
                    "abandoned": list(stop.abandoned),
                    "never_started": list(stop.never_started),
                }
            )
        )
        return
    rows = [(r.host, _outcome(r), r.message, f"{r.duration:.1f}s") for r in stop.results]
    rows += [
        (h, "abandoned", "still running at the second Ctrl-C: its action stays open; its "
         "command stops on the host as the connection closes", "")
        for h in stop.abandoned
    ]  # fmt: skip
    rows += [(h, "not-started", "never contacted: nothing recorded, nothing changed", "")
             for h in stop.never_started]  # fmt: skip
    render.table(["host", "outcome", "detail", "time"], rows, style_column="outcome")
    summary = ", ".join(f"{n} {o}" for o, n in sorted(counts.items()))
    render.echo(f"{stop.task} interrupted after {stop.duration:.1f}s: {summary}")
    if stop.abandoned and open_hint:
        render.echo(f"actions left open: {open_hint}")
    elif stop.abandoned:
        render.echo("actions left open: itops log --outcome open")


def _outcome(r: HostResult) -> str:
    return f"{r.outcome} ({r.error})" if r.error else str(r.outcome)
