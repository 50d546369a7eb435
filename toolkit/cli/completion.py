"""Shell completion: `itops completion bash|zsh|fish` prints the script (click's own), and the
arguments that name things complete from the workspace — task names, inventory hosts and groups
for TARGETS, runbook, playbook and schedule names.

The callbacks run on every Tab press, in a process that parsed the command line but ran none of
its commands (click's resilient parsing: no App, nothing recorded). So they read what they need
directly and cheaply — the catalog's index, the inventory files, folder listings, the schedule
table opened read-only — and never fail: anything that goes wrong completes nothing."""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import TYPE_CHECKING

import click

if TYPE_CHECKING:
    from click.shell_completion import CompletionItem

    from toolkit.workspace import Workspace

SHELLS = ("bash", "zsh", "fish")
COMPLETE_VAR = "_ITOPS_COMPLETE"


@click.command("completion")
@click.argument("shell", type=click.Choice(SHELLS))
def completion(shell: str) -> None:
    """Print the shell completion script for SHELL (bash, zsh or fish).

    It completes commands and options, and task, host and group, runbook, playbook and
    schedule names from the workspace.

    \b
    Examples:
      eval "$(itops completion bash)"                # in ~/.bashrc
      eval "$(itops completion zsh)"                 # in ~/.zshrc
      itops completion fish > ~/.config/fish/completions/itops.fish
    """
    from click.shell_completion import get_completion_class

    from toolkit.cli import cli

    cls = get_completion_class(shell)
    assert cls is not None  # every name in SHELLS is one click ships
    click.echo(cls(cli, {}, "itops", COMPLETE_VAR).source())


def _workspace(ctx: click.Context) -> Workspace:
    from toolkit.workspace import Workspace

    return Workspace.find(ctx.find_root().params.get("workspace"))


def _names(
    read: Callable[[Workspace], Iterable[str]],
) -> Callable[[click.Context, click.Parameter, str], list[CompletionItem]]:
    """A `shell_complete=` callback: the names `read` finds that start with what was typed."""

    def complete(
        ctx: click.Context, param: click.Parameter, incomplete: str
    ) -> list[CompletionItem]:
        from click.shell_completion import CompletionItem

        try:
            found = sorted(set(read(_workspace(ctx))))
        except Exception:  # a Tab press never fails: no workspace, a bad file, a locked ledger
            return []
        return [CompletionItem(n) for n in found if n.startswith(incomplete)]

    return complete


def _tasks(ws: Workspace) -> Iterable[str]:
    from toolkit.remediation.catalog import Catalog

    catalog = Catalog.load(ws.task_folders, index=ws.state_dir / "cache" / "catalog.json")
    return (t.name for t in catalog.infos())


def _inventory_names(ws: Workspace) -> Iterable[str]:
    from toolkit.inventory import Inventory

    inventory = Inventory.load(ws.inventory_sources)
    return [*inventory.groups, *inventory.hosts]


def _runbooks(ws: Workspace) -> Iterable[str]:
    from toolkit.automation.runbooks import runbook_folders

    for folder in runbook_folders(ws.folder("runbooks", "runbooks")):
        if Path(folder).is_dir():
            yield from (p.stem for p in Path(folder).glob("*.y*ml"))


def _playbooks(ws: Workspace) -> Iterable[str]:
    from toolkit.automation.playbooks import list_playbooks

    return (p.name for p in list_playbooks(ws))


def _schedules(ws: Workspace) -> Iterable[str]:
    """Schedule names, read without writing anything: a SQLite ledger opened read-only (and
    none at all when the file does not exist), PostgreSQL with one SELECT."""
    url = ws.ledger_url
    query = "SELECT name FROM itops_schedules ORDER BY name"
    if url.startswith("sqlite"):
        import sqlite3
        from urllib.parse import quote

        from toolkit.ledger.store import SqliteTarget

        target = SqliteTarget.parse(url)
        if not Path(target.path).is_file():
            return []
        db = sqlite3.connect(f"file:{quote(target.path)}?mode=ro", uri=True, timeout=1)
        try:
            return [str(row[0]) for row in db.execute(query)]
        finally:
            db.close()
    from sqlalchemy import create_engine, text

    engine = create_engine(url, connect_args={"connect_timeout": 2})
    try:
        with engine.connect() as conn:
            return [str(row[0]) for row in conn.execute(text(query))]
    finally:
        engine.dispose()


complete_task = _names(_tasks)
complete_runbook = _names(_runbooks)
complete_playbook = _names(_playbooks)
complete_schedule = _names(_schedules)
complete_host = _names(_inventory_names)

_LAST_TERM = re.compile(r"^(.*[:,][&!]?|[&!])?([^:,&!]*)$")


def complete_targets(
    ctx: click.Context, param: click.Parameter, incomplete: str
) -> list[CompletionItem]:
    """Hosts and groups for a target pattern, also after `a:`, `a:&` and `a:!`: the last term
    completes, the part before it is kept."""
    from click.shell_completion import CompletionItem

    m = _LAST_TERM.match(incomplete)
    head, term = (m.group(1) or "", m.group(2)) if m else ("", incomplete)
    return [CompletionItem(head + item.value) for item in complete_host(ctx, param, term)]
