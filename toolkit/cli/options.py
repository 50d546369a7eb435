"""Options that several run commands share, declared once."""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, TypeVar, cast

import click

from toolkit import settings

F = TypeVar("F", bound=Callable[..., Any])

if TYPE_CHECKING:  # generic in recent click, for typing only
    _ParamType = click.ParamType[Any, Any]
else:
    _ParamType = click.ParamType


class Checked(_ParamType):
    """A click type from toolkit.settings: an option is refused with the very sentence a bad
    itops.toml value gets (`--forks`: "must be an integer from 1 to 1000, not 0"). `key` is a
    setting (`run.forks`) or a settings.OPTIONS name."""

    def __init__(self, key: str) -> None:
        self.check = settings.check(key)
        self.name = key

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> Any:
        if not isinstance(value, str):  # a default, already a value
            return value
        try:
            return self.check.parse(value)
        except settings.Invalid as exc:
            self.fail(exc.problem, param, ctx)


def reads_only(command: F) -> F:
    """For a command that only reads the ticket log: it opens the ledger read-only, so it works
    for an auditor's copy on read-only media, an account that may only read, a `?mode=ro` URL.

    Goes under `@click.pass_obj` (it finds the App in the click context)."""

    @functools.wraps(command)
    def reading(*args: Any, **kwargs: Any) -> Any:
        from toolkit.app import App

        click.get_current_context().ensure_object(App).read_only = True
        return command(*args, **kwargs)

    return cast(F, reading)


def _stack(command: F, *options: Callable[[F], F]) -> F:
    """Apply click options in the order they are listed (the first shows first in --help)."""
    for option in reversed(options):
        command = option(command)
    return command


def fan_out(command: F) -> F:
    """--forks, --connect-timeout and --timeout, as `itops fix` and `itops runbook run` take them."""
    return _stack(
        command,
        click.option(
            "--forks",
            "-f",
            type=Checked("run.forks"),
            metavar="N",
            help="Hosts worked on at once [default: [run] forks, 50].",
        ),
        click.option(
            "--connect-timeout",
            type=Checked("run.connect_timeout"),
            metavar="S",
            help="Per-host connect timeout [default: [run] connect_timeout, 10].",
        ),
        click.option(
            "--timeout",
            "command_timeout",
            type=Checked("run.command_timeout"),
            metavar="S",
            help="Per-command timeout [default: [run] command_timeout, 120].",
        ),
    )


def new_ticket(command: F) -> F:
    """--category, --priority and --kind: how --ticket opens a ticket it has not seen before."""
    from toolkit.desk.tickets import CATEGORIES, PRIORITIES

    return _stack(
        command,
        click.option(
            "--category",
            type=click.Choice(CATEGORIES),
            help="Category, if --ticket opens a new ticket.",
        ),
        click.option(
            "--priority",
            type=click.Choice(PRIORITIES),
            help="Priority, if --ticket opens a new ticket.",
        ),
        kind_option("Kind, if --ticket opens a new ticket [default: the task's, else incident]."),
    )


def kind_option(text: str) -> Callable[[F], F]:
    """--kind: incident or request (KPI.md's standard requests are measured apart)."""
    from toolkit.desk.tickets import TICKET_KINDS

    return click.option("--kind", type=click.Choice(TICKET_KINDS), help=text)


def param_option(text: str) -> Callable[[F], F]:
    """-p/--param NAME=VALUE, repeatable (`itops fix`, `itops runbook run`; fix.parse_params
    reads them)."""
    return click.option("-p", "--param", "params", multiple=True, metavar="NAME=VALUE", help=text)


def governance(command: F) -> F:
    """--break-glass, --reason and --approval: the run policy's overrides (fix, playbook run)."""
    return _stack(
        command,
        click.option(
            "--break-glass",
            is_flag=True,
            help="Run a disruptive change outside its maintenance window (P1 tickets only; "
            "needs --reason).",
        ),
        click.option("--reason", metavar="TEXT", help="Why --break-glass is needed (recorded)."),
        click.option(
            "--approval",
            metavar="REQUEST-ID",
            help="Use this approval for a risky change (default: a matching one, if granted).",
        ),
    )


def resolve_option(command: F) -> F:
    """--resolve: resolve the run's ticket when every host's fix is verified."""
    return click.option(
        "--resolve",
        is_flag=True,
        help="Resolve the ticket when every host ends fixed or already-ok (verify proved it; "
        "nothing escalated or held).",
    )(command)


def check_resolve(resolve: bool, ticket: str | None, check_only: bool) -> None:
    if resolve and (check_only or not ticket):
        raise click.UsageError(
            "--resolve resolves the run's ticket: it needs --ticket, not --check"
        )
