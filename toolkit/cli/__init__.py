"""The `itops` command line: thin click commands that parse, call the library, render.

Subcommands are imported only when invoked (like Flask's CLI), so `itops --help` stays fast and
never imports a transport library.
"""

from __future__ import annotations

import atexit
import gc
import sys
from typing import Any

import click

from toolkit import __version__
from toolkit.cli.lazy import LazyGroup
from toolkit.errors import ToolkitError

COMMANDS = {
    "fix": ("toolkit.cli.fix", "fix", "Run a remediation: check → apply → verify on target hosts."),
    "tasks": ("toolkit.cli.tasks", "tasks", "List and describe the remediation catalog."),
    "inventory": (
        "toolkit.cli.inventory",
        "inventory",
        "List, show, check and trust inventory hosts.",
    ),
    "log": ("toolkit.cli.log", "log", "Read the ticket log (the ledger) with filters."),
    "audit": ("toolkit.cli.audit", "audit", "Verify the ledger's hash chain; for auditors."),
    "ticket": (
        "toolkit.cli.ticket",
        "ticket",
        "Open, work, list, import and export tickets; show their SLA clocks.",
    ),
    "kpi": (
        "toolkit.cli.kpi",
        "kpi",
        "Support KPIs (SLA compliance, MTTR, …) from the ticket log.",
    ),
    "report": (
        "toolkit.cli.report",
        "report",
        "HTML/CSV reports: KPIs for leads, audit for auditors.",
    ),
    "runbook": (
        "toolkit.cli.runbook",
        "runbook",
        "List, show and run runbooks: diagnose → fix → verify → escalate.",
    ),
    "lab": ("toolkit.cli.lab", "lab", "Start and stop the local lab of real SSH/CUPS hosts."),
    "backup": (
        "toolkit.cli.backup",
        "backup",
        "Backups: network configurations (run, history, diff), files (list, show, verify).",
    ),
    "init": ("toolkit.cli.init", "init", "Create a new workspace (itops.toml and folders)."),
    "approve": (
        "toolkit.cli.approve",
        "approve",
        "Approve a risky change another operator requested.",
    ),
    "identity": (
        "toolkit.cli.identity",
        "identity",
        "Your signing identity: an SSH key listed in allowed_signers.",
    ),
    "playbook": ("toolkit.cli.playbook", "playbook", "List and run Ansible playbooks."),
    "schedule": (
        "toolkit.cli.schedule",
        "schedule",
        "Scheduled jobs: add, list, pause, run what is due.",
    ),
    "scheduler": (
        "toolkit.cli.schedule",
        "scheduler",
        "Run due scheduled jobs in the foreground (for systemd).",
    ),
    "itsm": (
        "toolkit.cli.itsm",
        "itsm",
        "The service desk: deliver notes to its tickets, outbox status, check.",
    ),
    "serve": (
        "toolkit.cli.serve",
        "serve",
        "The read-only web view for auditors and leads (search, tickets, KPIs, exports).",
    ),
    "worker": (
        "toolkit.cli.worker",
        "worker",
        "Run a site's worker (Celery) for distributed runs; list the live workers.",
    ),
    "completion": (
        "toolkit.cli.completion",
        "completion",
        "Print the shell completion script (bash, zsh, fish).",
    ),
}


_APPS: list[Any] = []  # the invocation's App, so errors printed here are masked too


@click.group(
    cls=LazyGroup,
    lazy_subcommands={name: f"{module}:{attr}" for name, (module, attr, _) in COMMANDS.items()},
    short_help_of={name: text for name, (_, _, text) in COMMANDS.items()},
    context_settings={"help_option_names": ["-h", "--help"]},
)
@click.option(
    "--workspace",
    "-w",
    metavar="DIR",
    envvar="ITOPS_WORKSPACE",
    help="Workspace folder (default: nearest itops.toml upwards).",
)
@click.option("--verbose", "-v", is_flag=True, help="Log debug detail to stderr too.")
@click.version_option(__version__, prog_name="itops")
@click.pass_context
def cli(ctx: click.Context, workspace: str | None, verbose: bool) -> None:
    """itops: one-line, audited remediations for L2 support.

    Every fix runs check → apply → verify on each target host and is written to a
    hash-chained ticket log before anything touches the host.

    \b
    Examples:
      itops lab up --hosts 4
      itops fix printer.clear-queue lab --check
      itops fix printer.clear-queue ws-042 --ticket INC-1042
      itops log --ticket INC-1042
      itops audit verify
    """
    from toolkit.app import App

    app = App(workspace, verbose=verbose)
    _APPS[:] = [app]
    ctx.obj = app
    ctx.call_on_close(app.close)


# At exit (after the command closed the ledger and its connections, and after the exit handlers
# registered later, e.g. temporary folders'): spare the interpreter's final garbage collection a
# walk over every object the imports made; after an SSH run, asyncssh's and cryptography's cost
# ~35 ms of each command's exit. Memory is the operating system's to reclaim at that point.
atexit.register(gc.freeze)


def main(argv: list[str] | None = None) -> None:
    try:
        code = cli.main(args=argv, prog_name="itops", standalone_mode=False)
        sys.exit(code if isinstance(code, int) else 0)
    except ToolkitError as exc:
        _error(exc.message, exc.hint)
        sys.exit(exc.exit_code)
    except click.exceptions.Abort:
        click.echo("aborted", err=True)
        sys.exit(130)
    except KeyboardInterrupt:
        click.echo("interrupted", err=True)
        sys.exit(130)
    except click.ClickException as exc:
        exc.show()
        sys.exit(exc.exit_code)
    except click.exceptions.Exit as exc:
        sys.exit(exc.exit_code)


def _error(message: str, hint: str | None) -> None:
    from toolkit.textsafe import visible

    mask = _APPS[0].redactor.mask if _APPS else (lambda text: text)
    click.secho(visible(f"error: {mask(message)}", multiline=True), fg="red", err=True)
    if hint:
        click.echo(visible(f"hint: {mask(hint)}", multiline=True), err=True)
