"""Output helpers shared by the commands: tables (rich on a terminal, plain columns in a pipe),
JSON, and outcome colours. Secrets are masked by the caller's Redactor before anything prints.

Every cell is outside text as far as this module knows (a host's stderr, an imported ticket's
summary): control characters are shown as visible stand-ins (`textsafe.visible`) on both paths,
and the rich table is built from `Text` objects, which take no markup, so `[/x]` cannot crash
it and `[link=…]` or `[bold green]…[/]` print as the brackets they are."""

from __future__ import annotations

import json
import sys
from collections import Counter
from collections.abc import Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any

import click

from toolkit.textsafe import json_safe, visible

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
    click.echo(json_safe(json.dumps(data, indent=2, default=str, ensure_ascii=False)))


def emit_jsonl(rows: Iterable[Mapping[str, Any]]) -> None:
    for row in rows:
        click.echo(
            json_safe(json.dumps(row, default=str, ensure_ascii=False, separators=(",", ":")))
        )


def table(
    columns: Sequence[str],
    rows: Iterable[Sequence[Any]],
    *,
    title: str | None = None,
    style_column: str | None = None,
) -> None:
    """A table: rich on a terminal, tab-free aligned plain text otherwise (greppable)."""
    rows = [["" if v is None else visible(str(v)) for v in row] for row in rows]
    columns = [visible(c) for c in columns]
    title = None if title is None else visible(title)
    if is_tty():
        from rich.console import Console
        from rich.table import Table
        from rich.text import Text

        t = Table(title=Text(title) if title else None, title_justify="left", header_style="bold")
        for col in columns:
            t.add_column(Text(col), overflow="fold")
        index = columns.index(style_column) if style_column in columns else None
        for row in rows:
            cells = [Text(cell) for cell in row]
            if index is not None:
                style = OUTCOME_STYLE.get(row[index].split(" ")[0])
                if style:
                    cells[index].stylize(style)
            t.add_row(*cells)
        Console().print(t)
        return
    if title:
        click.echo(title)
    widths = [max([len(c), *(len(r[i]) for r in rows)]) for i, c in enumerate(columns)]
    click.echo("  ".join(c.upper().ljust(w) for c, w in zip(columns, widths, strict=True)).rstrip())
    for row in rows:
        click.echo("  ".join(v.ljust(w) for v, w in zip(row, widths, strict=True)).rstrip())


def echo(message: str = "", *, err: bool = False, **style: Any) -> None:
    """`click.secho` of a line that may hold outside text (a host name, a ticket's summary, a
    device's config diff): control characters shown as stand-ins (`textsafe.visible`; line
    breaks and tabs kept), so no escape sequence in it reaches the terminal."""
    click.secho(visible(message, multiline=True), err=err, **style)


SHOW_ANOMALIES = 10


def warn_anomalies(anomalies: Sequence[tuple[str, str]]) -> None:
    """Warn (stderr) of ticket events the clocks skipped or corrected, naming each record."""
    for ticket, note in anomalies[:SHOW_ANOMALIES]:
        echo(f"warning: {ticket} event {note}", err=True, fg="yellow")
    if len(anomalies) > SHOW_ANOMALIES:
        echo(
            f"warning: {len(anomalies) - SHOW_ANOMALIES} more odd ticket event(s); "
            "see itops ticket show TICKET",
            err=True,
            fg="yellow",
        )


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
