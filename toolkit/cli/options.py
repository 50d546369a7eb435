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


def fan_out(command: F) -> F:
    """--forks, --connect-timeout and --timeout, as `itops fix` and `itops runbook run` take them."""
    for option in reversed(
        (
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
    ):
        command = option(command)
    return command
