"""Options that several run commands share, declared once."""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any, TypeVar, cast

import click

F = TypeVar("F", bound=Callable[..., Any])


def reads_only(command: F) -> F:
    """For a command that only reads the ticket log: it opens the ledger read-only, so it works
    for an auditor's copy on read-only media, an account that may only read, a `?mode=ro` URL.

    Goes under `@click.pass_obj` (it finds the App in the click context)."""

    @functools.wraps(command)
    def reading(*args: Any, **kwargs: Any) -> Any:
        from ..app import App

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
                type=click.IntRange(1, 1000),
                help="Hosts worked on at once [default: 50].",
            ),
            click.option(
                "--connect-timeout",
                type=click.FloatRange(0.1),
                metavar="S",
                help="Per-host connect timeout.",
            ),
            click.option(
                "--timeout",
                "command_timeout",
                type=click.FloatRange(0.1),
                metavar="S",
                help="Per-command timeout.",
            ),
        )
    ):
        command = option(command)
    return command
