"""Output helpers shared by the commands: tables (rich on a terminal, plain columns in a pipe),
JSON, and outcome colours. Secrets are masked by the caller's Redactor before anything prints.

Every cell is outside text as far as this module knows (a host's stderr, an imported ticket's
summary): control characters are shown as visible stand-ins (`textsafe.visible`) on both paths,
and the rich table is built from `Text` objects, which take no markup, so `[/x]` cannot crash
it and `[link=…]` or `[bold green]…[/]` print as the brackets they are."""

from __future__ import annotations

import json
import sys
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
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
    click.echo("  ".join(_header(c).ljust(w) for c, w in zip(columns, widths, strict=True)).rstrip())
    for row in rows:
        click.echo("  ".join(v.ljust(w) for v, w in zip(row, widths, strict=True)).rstrip())


def _header(column: str) -> str:
    """A plain table's header: the name upper-cased, a parenthesised unit or zone as spelled
    (`TIME (Europe/Berlin)`: tz names are case-sensitive)."""
    name, paren, rest = column.partition(" (")
    return name.upper() + paren + rest


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


class HostProgress:
    """What a running fan-out is doing, for the progress bar (a run observer; its events come
    from the worker threads): outcomes so far, how many hosts are in which step, and the host
    longest in its current step with the time it has spent there — so a clamscan that runs for
    minutes is visibly running (`fixed:2 · 1 in check, 2 in apply · lab-03 in apply 4m05s`)."""

    STEPS = ("connect", "check", "apply", "verify")

    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self._clock = clock
        self._lock = threading.Lock()
        self._outcomes: Counter[str] = Counter()
        self._current: dict[str, tuple[str, float]] = {}  # host → (step, since)

    def run_started(self, task: str, hosts: Sequence[Any]) -> None:
        return None

    def host_started(self, run: HostRun) -> None:
        with self._lock:
            self._current[run.host.name] = ("connect", self._clock())

    def step(self, run: HostRun, name: str) -> None:
        with self._lock:
            self._current[run.host.name] = (name, self._clock())

    def host_done(self, run: HostRun, result: HostResult) -> None:
        with self._lock:
            self._current.pop(run.host.name, None)
            self._outcomes[str(result.outcome)] += 1

    def run_done(self, report: Any) -> None:
        return None

    def text(self) -> str:
        with self._lock:
            current = dict(self._current)
            outcomes = dict(self._outcomes)
        parts = []
        if outcomes:
            parts.append(" ".join(f"{k}:{v}" for k, v in sorted(outcomes.items())))
        if current:
            steps = Counter(step for step, _ in current.values())
            order = [*self.STEPS, *sorted(set(steps) - set(self.STEPS))]
            parts.append(", ".join(f"{steps[s]} in {s}" for s in order if steps[s]))
            host, (step, since) = min(current.items(), key=lambda item: (item[1][1], item[0]))
            parts.append(f"{host} in {step} {_elapsed(self._clock() - since)}")
        return " · ".join(parts)


def _elapsed(seconds: float) -> str:
    minutes, secs = divmod(int(max(seconds, 0)), 60)
    return f"{minutes}m{secs:02d}s" if minutes else f"{secs}s"


@contextmanager
def progress_bar(hosts: Sequence[Any], *, enabled: bool) -> Iterator[tuple[RunObserver, ...]]:
    """A live bar on stderr while hosts run (on a terminal): the run observers to pass to the
    run service (none when disabled). Beside the count it says which hosts are in which step
    and how long the slowest has been in its step, redrawn as the time passes."""
    enabled = enabled and sys.stderr.isatty()
    if not enabled:
        yield ()
        return
    from rich.console import Console
    from rich.progress import (
        BarColumn,
        MofNCompleteColumn,
        Progress,
        ProgressColumn,
        Task,
        TextColumn,
        TimeElapsedColumn,
    )
    from rich.text import Text

    class Bar(HostProgress):
        def host_done(self, run: HostRun, result: HostResult) -> None:
            super().host_done(run, result)
            progress.update(bar, advance=1)

    state = Bar()

    class Running(ProgressColumn):
        def render(self, task: Task) -> Text:
            return Text(state.text())

    progress = Progress(
        TextColumn("[bold]{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        Running(),
        console=Console(stderr=True),
        transient=True,
    )
    bar = progress.add_task("hosts", total=len(hosts))
    with progress:
        yield (state,)
