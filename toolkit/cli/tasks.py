"""`itops tasks`: the remediation catalog."""

from __future__ import annotations

from typing import TYPE_CHECKING

import click

from toolkit.app import App
from toolkit.cli import render
from toolkit.cli.completion import complete_task

if TYPE_CHECKING:
    from toolkit.remediation.catalog import TaskSpec


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
    """List every remediation with its platforms and summary.

    \b
    Example:
      itops tasks list --json
    """
    entries = app.catalog.infos()
    if as_json:
        render.emit_json(
            [
                {
                    "name": t.name,
                    "category": t.category,
                    "platforms": sorted(t.platforms),
                    "summary": t.summary,
                    "disruptive": t.disruptive,
                    "risky": t.risky,
                }
                for t in entries
            ]
        )
        return
    render.table(
        ["task", "platforms", "summary"],
        [(t.name, ",".join(sorted(t.platforms)), t.summary) for t in entries],
    )


@tasks.command("show")
@click.argument("name", shell_complete=complete_task)
@click.option("--json", "as_json", is_flag=True, help="Print the description as JSON.")
@click.pass_obj
def show(app: App, name: str, as_json: bool) -> None:
    """Describe one remediation: what it does, its parameters and examples, per platform.

    \b
    Example:
      itops tasks show printer.clear-queue
    """
    entry = app.catalog.get(name)
    if as_json:
        render.emit_json(
            {
                "name": entry.name,
                "category": entry.category,
                "kind": entry.kind,
                "platforms": sorted(entry.platforms),
                "summary": entry.summary,
                "implementations": [
                    {
                        "platforms": sorted(s.platforms),
                        "description": s.doc,
                        "source": s.source,
                        "disruptive": s.disruptive,
                        "risky": _rule(s.risky) if callable(s.risky) else s.risky,
                        "risky_on_core": s.risky_on_core,
                        "examples": list(s.examples),
                        "params": {
                            n: {
                                "type": p.describe(),
                                "help": p.help,
                                "required": p.required,
                                "default": p.default,
                            }
                            for n, p in s.params.items()
                        },
                    }
                    for s in entry.specs
                ],
            }
        )
        return
    render.echo(entry.name, bold=True)
    render.echo(f"  {entry.summary}")
    for spec in entry.specs:
        flags = ("   disruptive" if spec.disruptive else "") + _risk(spec)
        render.echo(
            f"\n  category: {spec.category}   ticket kind: {spec.kind}   "
            f"platforms: {', '.join(sorted(spec.platforms))}{flags}"
        )
        render.echo()
        render.echo(spec.doc)
        if spec.params:
            render.echo()
            render.echo(
                "Parameters (-p NAME=VALUE, or --name VALUE / --flag after TARGETS):", bold=True
            )
            for n, p in spec.params.items():
                render.echo(f"  {n:<16} {p.describe()}")
                if p.help:
                    render.echo(f"  {'':<16} {p.help}")
        render.echo(f"\nsource: {spec.source}")


def _rule(rule: object) -> str:
    """A risk rule of the parameters, as its docstring's first line says it."""
    doc = (getattr(rule, "__doc__", None) or "").strip()
    return doc.splitlines()[0].rstrip(".") if doc else "by its parameters"


def _risk(spec: TaskSpec) -> str:
    if spec.risky is True:
        return "   risky"
    if callable(spec.risky):
        return f"   risky {_rule(spec.risky)}"
    when = ([f"with {spec.risky}=true"] if spec.risky else []) + (
        ["on core devices"] if spec.risky_on_core else []
    )
    return f"   risky {' or '.join(when)}" if when else ""
