"""`itops schedule` and `itops scheduler`: unattended, cron-timed jobs."""

from __future__ import annotations

import shlex
import sys
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

import click

from toolkit.app import App
from toolkit.cli import render
from toolkit.cli.completion import complete_schedule
from toolkit.cli.fix import parse_params
from toolkit.cli.options import Checked
from toolkit.desk.tickets import CATEGORIES, PRIORITIES
from toolkit.errors import ValidationError

if TYPE_CHECKING:
    from toolkit.automation.schedule import Scheduler, TickEvent


def _scheduler(app: App) -> Scheduler:
    from toolkit.automation.jobs import JobRunner
    from toolkit.automation.schedule import Scheduler, ScheduleStore, settings

    conf = settings(app.workspace.config)
    store = ScheduleStore(app.workspace.ledger_url)
    app.on_close(store.close)
    return Scheduler(
        store,
        app.ledger,
        app.clock,
        JobRunner(app),
        grace=conf["grace"],
        lease=conf["lease"],
    )


@click.group()
def schedule() -> None:
    """Scheduled jobs: a task, runbook or playbook on a cron timer.

    Each run opens its own change ticket (CHG-…), records every action under it and resolves
    it with the outcome. Run what is due with `itops schedule run-due` (cron, a systemd timer)
    or keep `itops scheduler` running (systemd service).

    \b
    Examples:
      itops schedule add weekly-patch --playbook patch_linux --targets linux \
            --cron "0 2 * * SUN" --window sunday-night
      itops schedule list
      itops schedule run-due
    """


@schedule.command()
@click.argument("name")
@click.option(
    "--task", "task_name", metavar="TASK", help="Run this catalog task (check → apply → verify)."
)
@click.option("--runbook", metavar="NAME", help="Run this runbook.")
@click.option("--playbook", metavar="NAME", help="Run this playbook from playbooks/.")
@click.option(
    "--targets", required=True, metavar="PATTERN", help="Inventory pattern, as for itops fix."
)
@click.option("--cron", required=True, metavar="EXPR", help='Five cron fields, e.g. "0 2 * * SUN".')
@click.option(
    "--tz",
    "timezone",
    type=Checked("scheduler.timezone"),
    metavar="ZONE",
    help="Time zone of the cron fields [default: [scheduler] timezone, else this machine's].",
)
@click.option("--window", metavar="NAME", help="Run only inside this maintenance window.")
@click.option(
    "-p",
    "--param",
    "--params",
    "params",
    multiple=True,
    metavar="NAME=VALUE",
    help="A task parameter or playbook extra var (repeatable).",
)
@click.option(
    "--missed",
    type=click.Choice(["run-once", "record"]),
    default="run-once",
    show_default=True,
    help="When the scheduler was down at run time: run once at start-up, or only record the miss.",
)
@click.option(
    "--category",
    type=click.Choice(CATEGORIES),
    help="Category of the change tickets [default: the task's].",
)
@click.option(
    "--priority",
    type=click.Choice(PRIORITIES),
    default="P3",
    show_default=True,
    help="Priority of the change tickets.",
)
@click.option(
    "--check",
    "check_only",
    is_flag=True,
    help="Runs only diagnose (task --check, playbook check mode).",
)
@click.option("--json", "as_json", is_flag=True, help="Print the new schedule as JSON.")
@click.pass_obj
def add(
    app: App,
    name: str,
    task_name: str | None,
    runbook: str | None,
    playbook: str | None,
    targets: str,
    cron: str,
    timezone: str | None,
    window: str | None,
    params: tuple[str, ...],
    missed: str,
    category: str | None,
    priority: str,
    check_only: bool,
    as_json: bool,
) -> None:
    """Add schedule NAME: run a task, runbook or playbook on TARGETS at CRON times.

    \b
    Examples:
      itops schedule add nightly-printers --task printer.clear-queue --targets lab \
            --cron "30 2 * * *" --tz Europe/Berlin
      itops schedule add backups --playbook backup_configs --targets lab --cron "0 3 * * *" --missed record
    """
    from toolkit.automation.jobs import check
    from toolkit.automation.schedule import Schedule, settings

    jobs = [
        (k, v) for k, v in (("task", task_name), ("runbook", runbook), ("playbook", playbook)) if v
    ]
    if len(jobs) != 1:
        raise ValidationError("give exactly one of --task, --runbook or --playbook")
    kind, what = jobs[0]
    if kind == "task" and category is None:
        category = app.catalog.get(what).category
    s = Schedule(
        name=name,
        kind=kind,
        what=what,
        targets=targets,
        cron=cron,
        timezone=timezone or settings(app.workspace.config)["timezone"],
        window=window,
        params=parse_params(params),
        missed=missed,
        category=category or ("backup" if "backup" in what else "software"),
        priority=priority,
        check_only=check_only,
    )
    from toolkit.automation.schedule import validate_definition

    validate_definition(s)
    check(app, s)
    added = _scheduler(app).add(s)
    if as_json:
        render.emit_json(added.as_dict())
        return
    render.echo(
        f"added {added.name}: {added.job()} on {added.targets}, cron {added.cron!r} ({added.timezone})"
    )
    render.echo(f"next run: {_local(added.next_run_at, added.timezone)}")


def _local(at: Any, timezone: str) -> str:
    if at is None:
        return "-"
    from zoneinfo import ZoneInfo

    return str(at.astimezone(ZoneInfo(timezone)).strftime("%Y-%m-%d %H:%M %Z"))


@schedule.command("list")
@click.option("--json", "as_json", is_flag=True, help="Print the schedules as JSON.")
@click.pass_obj
def list_(app: App, as_json: bool) -> None:
    """List schedules with their next run and last outcome.

    \b
    Example:
      itops schedule list
    """
    items = _scheduler(app).store.list()
    if as_json:
        render.emit_json([s.as_dict() for s in items])
        return
    render.table(
        ["name", "job", "targets", "cron", "zone", "window", "next run", "last", "state"],
        [
            (
                s.name,
                s.job(),
                s.targets,
                s.cron,
                s.timezone,
                s.window or "",
                _local(s.next_run_at, s.timezone) if not s.paused else "paused",
                f"{s.last_outcome} {s.last_ticket}" if s.last_outcome else "",
                "running" if s.lease_owner else ("paused" if s.paused else "active"),
            )
            for s in items
        ],
    )


@schedule.command()
@click.argument("name", shell_complete=complete_schedule)
@click.option("--json", "as_json", is_flag=True, help="Print the schedule and its history as JSON.")
@click.pass_obj
def show(app: App, name: str, as_json: bool) -> None:
    """Show a schedule, its next five run times and its recorded history.

    \b
    Example:
      itops schedule show weekly-patch
    """
    from toolkit.automation.schedule import occurrences

    s = _scheduler(app).store.get(name)
    upcoming = []
    if s.next_run_at is not None and not s.paused:
        upcoming = [s.next_run_at]
        for moment in occurrences(s.cron, s.timezone, s.next_run_at):
            upcoming.append(moment)
            if len(upcoming) == 5:
                break
    history = [
        r
        for r in app.ledger.records()
        if r.kind.startswith("schedule.") and r.info.get("schedule") == name
    ]
    if as_json:
        render.emit_json(
            {
                **s.as_dict(),
                "upcoming": [u.isoformat() for u in upcoming],
                "history": [r.as_dict() for r in history],
            }
        )
        return
    for key, value in s.as_dict().items():
        if value not in (None, {}, ""):
            render.echo(f"{key:>13}: {value}")
    render.echo("     upcoming: " + ", ".join(_local(u, s.timezone) for u in upcoming))
    render.table(
        ["time (UTC)", "event", "ticket", "detail"],
        [
            (
                r.at[:19].replace("T", " "),
                r.kind,
                r.ticket or "",
                r.outcome or r.info.get("reason") or r.info.get("action") or "",
            )
            for r in history[-20:]
        ],
    )


def _one_schedule(action: Callable[[Scheduler, str], str], help: str) -> click.Command:
    """A `schedule <verb> NAME` command: `action` does it (recorded by the scheduler) and
    says what it did."""

    @schedule.command(name=action.__name__.strip("_"), help=help)
    @click.argument("name", shell_complete=complete_schedule)
    @click.pass_obj
    def command(app: App, name: str) -> None:
        render.echo(action(_scheduler(app), name))

    return command


def _remove(scheduler: Scheduler, name: str) -> str:
    scheduler.remove(name)
    return f"removed {name}"


def _pause(scheduler: Scheduler, name: str) -> str:
    scheduler.pause(name)
    return f"paused {name}"


def _resume(scheduler: Scheduler, name: str) -> str:
    s = scheduler.resume(name)
    return f"resumed {name}; next run: {_local(s.next_run_at, s.timezone)}"


remove = _one_schedule(
    _remove,
    """Remove a schedule (recorded in the ticket log).

    \b
    Example:
      itops schedule remove weekly-patch
    """,
)
pause = _one_schedule(
    _pause,
    """Pause a schedule: no runs until resumed (recorded).

    \b
    Example:
      itops schedule pause weekly-patch
    """,
)
resume = _one_schedule(
    _resume,
    """Resume a paused schedule from now on (runs while paused are not caught up).

    \b
    Example:
      itops schedule resume weekly-patch
    """,
)


def _show_events(events: list[TickEvent], as_json: bool) -> int:
    code = max((e.result.exit_code for e in events if e.result), default=0)
    if as_json:
        render.emit_json(
            [
                {
                    "schedule": e.schedule,
                    "what": e.what,
                    "occurrence": e.occurrence.isoformat(),
                    "ticket": e.ticket,
                    "resolution": e.result.resolution if e.result else None,
                    "summary": e.result.summary if e.result else None,
                    "detail": e.detail,
                }
                for e in events
            ]
        )
        return code
    if not events:
        render.echo("nothing due")
    for e in events:
        if e.result is not None:
            render.echo(f"{e.schedule}: {e.ticket} {e.result.resolution}: {e.result.summary}")
        else:
            render.echo(f"{e.schedule}: {e.what} ({e.detail})")
    return code


@schedule.command("run-due")
@click.option("--json", "as_json", is_flag=True, help="Print what ran as JSON.")
@click.pass_obj
def run_due(app: App, as_json: bool) -> None:
    """Run whatever is due now, once; record missed and overlapping runs. For cron or a timer.

    Exit code: the highest of the runs' exit codes (as itops fix), 0 if nothing was due.

    \b
    Example:
      itops schedule run-due
    """
    code = _show_events(_scheduler(app).run_due(), as_json)
    click.get_current_context().exit(code)


@schedule.command("run")
@click.argument("name", shell_complete=complete_schedule)
@click.option("--json", "as_json", is_flag=True, help="Print the run as JSON.")
@click.pass_obj
def run_now(app: App, name: str, as_json: bool) -> None:
    """Run schedule NAME now, on demand: its own change ticket, never beside a running one.

    \b
    Example:
      itops schedule run nightly-printers
    """
    code = _show_events([_scheduler(app).run_now(name)], as_json)
    click.get_current_context().exit(code)


UNIT = """\
[Unit]
Description=itops: run due scheduled jobs ({workspace})
After=network-online.target
Wants=network-online.target

[Service]
Type={type}
ExecStart={exec}
WorkingDirectory={workspace}
Environment=ITOPS_OPERATOR={operator}
{extra}"""

TIMER = """\
[Unit]
Description=itops: check for due scheduled jobs every minute ({workspace})

[Timer]
OnCalendar=*-*-* *:*:00
Persistent=true
AccuracySec=1s

[Install]
WantedBy=timers.target
"""


@schedule.command()
@click.option("--systemd", is_flag=True, required=True, help="Write systemd units.")
@click.option(
    "--daemon", is_flag=True, help="A long-running `itops scheduler` service instead of a timer."
)
@click.option(
    "--dir",
    "directory",
    type=click.Path(file_okay=False, path_type=Path),
    default=Path("/etc/systemd/system"),
    show_default=True,
    help="Where to write the units.",
)
@click.option(
    "--print", "print_only", is_flag=True, help="Print the units instead of writing them."
)
@click.option(
    "--operator",
    default="itops-scheduler",
    show_default=True,
    help="The identity scheduled runs record.",
)
@click.pass_obj
def install(
    app: App, systemd: bool, daemon: bool, directory: Path, print_only: bool, operator: str
) -> None:
    """Write a systemd timer + oneshot service (`schedule run-due` each minute), or a service.

    \b
    Examples:
      itops schedule install --systemd --print
      itops schedule install --systemd
      systemctl daemon-reload && systemctl enable --now itops-schedule.timer
    """
    workspace = app.workspace.root
    itops = Path(sys.executable).parent / "itops"
    base = [str(itops)] if itops.exists() else [sys.executable, "-m", "toolkit"]
    command = [*base, "--workspace", str(workspace)]
    if daemon:
        files = {
            "itops-scheduler.service": UNIT.format(
                workspace=workspace,
                type="simple",
                exec=shlex.join([*command, "scheduler"]),
                operator=operator,
                extra="KillSignal=SIGTERM\nTimeoutStopSec=30min\nRestart=on-failure\n\n"
                "[Install]\nWantedBy=multi-user.target\n",
            )
        }
        enable = "itops-scheduler.service"
    else:
        files = {
            "itops-schedule.service": UNIT.format(
                workspace=workspace,
                type="oneshot",
                exec=shlex.join([*command, "schedule", "run-due"]),
                operator=operator,
                extra="",
            ),
            "itops-schedule.timer": TIMER.format(workspace=workspace),
        }
        enable = "itops-schedule.timer"
    if print_only:
        for name, text in files.items():
            render.echo(f"# {name}\n{text}")
        return
    directory.mkdir(parents=True, exist_ok=True)
    for name, text in files.items():
        (directory / name).write_text(text)
        render.echo(f"wrote {directory / name}")
    render.echo(f"then: systemctl daemon-reload && systemctl enable --now {enable}")


@click.command()
@click.option(
    "--interval",
    type=Checked("scheduler.interval"),
    metavar="S",
    help="Check at least every S seconds [default: [scheduler] interval, 30].",
)
@click.pass_obj
def scheduler(app: App, interval: float | None) -> None:
    """Run due scheduled jobs in the foreground until SIGTERM or Ctrl-C (for systemd).

    A stop signal lets the running job finish, then exits 0. Missed runs (the scheduler was
    down) are handled at start-up by each schedule's --missed policy.

    \b
    Example:
      itops scheduler --interval 30
    """
    import signal
    import threading

    from toolkit.automation.schedule import settings

    stop = threading.Event()

    def on_signal(signum: int, _frame: Any) -> None:
        render.echo(f"itops scheduler: {signal.Signals(signum).name}, stopping", err=True)
        stop.set()

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    sched = _scheduler(app)
    every = interval or settings(app.workspace.config)["interval"]
    render.echo(f"itops scheduler {sched.owner}: checking every {every:g}s", err=True)
    sched.serve(stop, interval=every)
    render.echo("itops scheduler: stopped", err=True)
