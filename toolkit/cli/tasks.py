"""`itops tasks`: the remediation catalog."""

from __future__ import annotations

import click

from ..app import App
from . import render


@click.group()
def tasks() -> None:
    """List and describe remediations.

    \b
    Examples:
      itops tasks list
      itops tasks show printer.clear-queue
    """


@tasks.command("list")
@click.option("--json", "as_json", is_flag=True, help="Print the catalog as JSON.")
@click.pass_obj
def list_(app: App, as_json: bool) -> None:
    """List every remediation with its platforms and summary."""
    specs = list(app.catalog)
    if as_json:
        render.emit_json(
            [
                {
                    "name": s.name,
                    "category": s.category,
                    "platforms": sorted(s.platforms),
                    "summary": s.summary,
                    "disruptive": s.disruptive,
                    "risky": s.risky,
                }
                for s in specs
            ]
        )
        return
    render.table(
        ["task", "platforms", "summary"],
        [(s.name, ",".join(sorted(s.platforms)), s.summary) for s in specs],
    )


@tasks.command("show")
@click.argument("name")
@click.option("--json", "as_json", is_flag=True, help="Print the description as JSON.")
@click.pass_obj
def show(app: App, name: str, as_json: bool) -> None:
    """Describe one remediation: what it does, its parameters and examples."""
    spec = app.catalog.get(name)
    params = {
        n: {"type": p.describe(), "help": p.help, "required": p.required, "default": p.default}
        for n, p in spec.params.items()
    }
    if as_json:
        render.emit_json(
            {
                "name": spec.name,
                "category": spec.category,
                "platforms": sorted(spec.platforms),
                "summary": spec.summary,
                "description": spec.doc,
                "params": params,
                "examples": list(spec.examples),
                "disruptive": spec.disruptive,
                "risky": spec.risky,
                "source": spec.source,
            }
        )
        return
    click.secho(spec.name, bold=True)
    click.echo(f"  {spec.summary}")
    click.echo(
        f"  category: {spec.category}   platforms: {', '.join(sorted(spec.platforms))}"
        + ("   disruptive" if spec.disruptive else "")
        + ("   risky" if spec.risky else "")
    )
    click.echo()
    click.echo(spec.doc)
    click.echo()
    if params:
        click.secho("Parameters (-p NAME=VALUE):", bold=True)
        for n, p in spec.params.items():
            click.echo(f"  {n:<16} {p.describe()}")
            if p.help:
                click.echo(f"  {'':<16} {p.help}")
    click.echo(f"\nsource: {spec.source}")
