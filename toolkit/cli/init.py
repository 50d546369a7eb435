"""`itops init`: a new workspace."""

from __future__ import annotations

from pathlib import Path

import click

from toolkit.workspace import Workspace


@click.command()
@click.argument("directory", default=".", type=click.Path(file_okay=False, path_type=Path))
def init(directory: Path) -> None:
    """Create itops.toml and the inventory/, tasks/, runbooks/ and playbooks/ folders.

    \b
    Example:
      itops init ~/itops-office && cd ~/itops-office && itops inventory list
    """
    path = Workspace.init(directory)
    click.echo(f"created {path}; add hosts to {directory / 'inventory' / 'hosts.yml'}")
