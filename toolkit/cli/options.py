"""Options that several run commands share, declared once."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, TypeVar

import click

F = TypeVar("F", bound=Callable[..., Any])


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
