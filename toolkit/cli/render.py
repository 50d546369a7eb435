"""Output helpers shared by the commands: tables (rich on a terminal, plain columns in a pipe),
JSON, and outcome colours. Secrets are masked by the caller's Redactor before anything prints."""

from __future__ import annotations

import json
import sys
from collections import Counter
from collections.abc import Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any

import click

if TYPE_CHECKING:
    from toolkit.run.events import HostRun, RunObserver
    from toolkit.run.results import HostResult

OUTCOME_STYLE = {
    "already-ok": "green",
    "fixed": "green",
    "would-fix": "yellow",
    "failed": "red",
    "unreachable": "red",
    "skipped": "dim",
    "needs-approval": "magenta",
    "open": "yellow",
    "ok": "green",
    "error": "red",
}


def is_tty() -> bool:
    return sys.stdout.isatty()


def emit_json(data: Any) -> None:
    click.echo(json.dumps(data, indent=2, default=str, ensure_ascii=False))


def emit_jsonl(rows: Iterable[Mapping[str, Any]]) -> None:
    for row in rows:
        click.echo(json.dumps(row, default=str, ensure_ascii=False, separators=(",", ":")))


def table(
    columns: Sequence[str],
    rows: Iterable[Sequence[Any]],
    *,
    title: str | None = None,
    style_column: str | None = None,
) -> None:
    """A table: rich on a terminal, tab-free aligned plain text otherwise (greppable)."""
    rows = [["" if v is None else str(v) for v in row] for row in rows]
    if is_tty():
        from rich.console import Console
        from rich.table import Table

        t = Table(title=title, title_justify="left", header_style="bold")
        for col in columns:
            t.add_column(col, overflow="fold")
        index = columns.index(style_column) if style_column in columns else None
        for row in rows:
            cells = list(row)
            if index is not None:
                style = OUTCOME_STYLE.get(cells[index].split(" ")[0])
                if style:
                    cells[index] = f"[{style}]{cells[index]}[/]"
            t.add_row(*cells)
        Console().print(t)
        return
    if title:
        click.echo(title)
    widths = [max([len(c), *(len(r[i]) for r in rows)]) for i, c in enumerate(columns)]
    click.echo("  ".join(c.upper().ljust(w) for c, w in zip(columns, widths, strict=True)).rstrip())
    for row in rows:
        click.echo("  ".join(v.ljust(w) for v, w in zip(row, widths, strict=True)).rstrip())


def outcome_text(outcome: str) -> str:
    style = OUTCOME_STYLE.get(outcome)
    return click.style(outcome, fg=style) if style and is_tty() and style != "dim" else outcome


def handovers(results: Iterable[Any]) -> None:
    """Deliver the secrets a run made for the engineer (HostResult.handovers): once, on stderr
    or into their 0600 file; they are in no other output."""
    from toolkit.secrets.handover import deliver

    deliver(
        (h for r in results for h in getattr(r, "handovers", ())),
        lambda text: click.echo(text, err=True),
    )


@contextmanager
def progress_bar(hosts: Sequence[Any], *, enabled: bool) -> Iterator[tuple[RunObserver, ...]]:
    """A live bar on stderr while hosts finish (on a terminal): the run observers to pass to
    the run service (none when disabled)."""
    enabled = enabled and sys.stderr.isatty()
    if not enabled:
        yield ()
        return
    from rich.console import Console
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    from toolkit.run.events import RunObserver

    progress = Progress(
        TextColumn("[bold]{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn("{task.fields[counts]}"),
        TimeElapsedColumn(),
        console=Console(stderr=True),
        transient=True,
    )
    bar = progress.add_task("hosts", total=len(hosts), counts="")
    counts: Counter[str] = Counter()

    class Bar(RunObserver):
        def host_done(self, run: HostRun, result: HostResult) -> None:
            counts[str(result.outcome)] += 1
            text = " ".join(f"{k}:{v}" for k, v in sorted(counts.items()))
            progress.update(bar, advance=1, counts=text)

    with progress:
        yield (Bar(),)
