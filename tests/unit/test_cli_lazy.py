"""The one lazy click group: every name it lists resolves to a click command, nested groups too."""

from __future__ import annotations

import click
import pytest

from toolkit.cli import cli
from toolkit.cli.lazy import LazyGroup


def _paths(group: click.Group, prefix: str = "") -> list[str]:
    ctx = click.Context(group)
    found = []
    for name in group.list_commands(ctx):
        found.append(f"{prefix}{name}")
        command = group.get_command(ctx, name)
        if isinstance(command, LazyGroup):
            found += _paths(command, f"{prefix}{name} ")
    return found


@pytest.mark.parametrize("path", _paths(cli))
def test_every_lazily_listed_command_resolves(path: str) -> None:
    group: click.Group = cli
    for part in path.split():
        command = group.get_command(click.Context(group), part)
        assert isinstance(command, click.Command), path
        assert command.help or command.short_help, f"{path} has no --help text"
        if isinstance(command, click.Group):
            group = command


def test_a_name_that_is_not_a_command_is_refused() -> None:
    group = LazyGroup(lazy_subcommands={"x": "toolkit.cli.lazy:LazyGroup"})
    assert group.get_command(click.Context(group), "nothing") is None
    with pytest.raises(TypeError, match="not a click command"):
        group.get_command(click.Context(group), "x")
