"""Every command's --help shows at least one example, as a mature CLI's does."""

from __future__ import annotations

import click
import pytest
from click.testing import CliRunner

from toolkit.cli import cli


def commands(group: click.Group, prefix: tuple[str, ...] = ()) -> list[tuple[str, ...]]:
    ctx = click.Context(group)
    found: list[tuple[str, ...]] = []
    for name in group.list_commands(ctx):
        command = group.get_command(ctx, name)
        assert command is not None, name
        if command.hidden:
            continue
        found.append((*prefix, name))
        if isinstance(command, click.Group):
            found += commands(command, (*prefix, name))
    return found


@pytest.mark.parametrize("command", commands(cli), ids=" ".join)
def test_every_command_has_an_example(command: tuple[str, ...]) -> None:
    result = CliRunner().invoke(cli, [*command, "--help"], catch_exceptions=False)
    assert result.exit_code == 0, result.output
    _, found, after = result.output.partition("Example")
    lines = [ln.strip() for ln in after.splitlines() if ln.strip().startswith("itops ")]
    assert found and lines, f"`itops {' '.join(command)} --help` shows no example"
