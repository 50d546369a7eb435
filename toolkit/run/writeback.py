"""Write-back to the service desk: one note per ticket per run, queued in the ledger's outbox.

A run observer (toolkit.run.events): it keeps the run's action ids as hosts start and, when the
run is done, composes ONE note — task, mode, operator, per-host outcomes, the approval or
break-glass, the ledger records of the run and the ledger's head hash — and records it in the
outbox (toolkit.itsm.outbox). It never talks to the desk: delivery comes after the run, and a
desk that is down never fails or slows the fix. Secrets are masked by the run's redactor (and
again by the ledger when it records the note).
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING

from toolkit.run.events import HostRun, RunObserver

if TYPE_CHECKING:
    from toolkit.inventory import Host
    from toolkit.itsm.outbox import Note
    from toolkit.ledger import Ledger
    from toolkit.run.policy import RunPolicy
    from toolkit.run.results import HostResult, RunReport

log = logging.getLogger("itops.itsm")
MAX_HOST_LINES = 50


class DeskWriteBack(RunObserver):
    def __init__(
        self,
        ledger: Ledger,
        *,
        ticket: str,
        system: str,
        mask: Callable[[str], str],
        policy: RunPolicy | None = None,
        source: str = "itops fix",
        resolve: Callable[[RunReport], tuple[bool, str]] | None = None,
    ) -> None:
        """`resolve` (`--resolve`): decides from the report whether the run resolves the
        ticket (and records it locally); its answer is folded into the run's one note, which
        then also resolves the desk's ticket."""
        self.resolve = resolve
        self.resolution: tuple[bool, str] | None = None
        self.ledger = ledger
        self.ticket = ticket
        self.system = system
        self.mask = mask
        self.policy = policy
        self.source = source
        self.queued: list[Note] = []
        self._actions: list[str] = []
        self._lock = threading.Lock()

    def run_started(self, task: str, hosts: Sequence[Host]) -> None:
        with self._lock:
            self._actions.clear()

    def host_started(self, run: HostRun) -> None:
        if run.action_id:
            with self._lock:
                self._actions.append(run.action_id)

    def run_done(self, report: RunReport) -> None:
        from toolkit.itsm.outbox import queue

        text = self.compose(report)
        resolves = False
        if self.resolve is not None:
            self.resolution = resolves, line = self.resolve(report)
            text += f"\nresolution: {line}" if resolves else f"\n--resolve: {line}"
        self.queued.append(
            queue(self.ledger, self.ticket, self.system, self.mask(text), resolve=resolves)
        )

    def compose(self, report: RunReport) -> str:
        mode = "check (read-only)" if report.check_only else "fix"
        lines = [
            f"itops: {report.task} ({mode}) by {self.ledger.operator} under {self.ticket}",
            *host_lines(report.results, report.duration, self.ticket),
        ]
        policy = self.policy
        if policy is not None and policy.approval is not None:
            lines.append(
                f"approval: {policy.approval.request_id}, granted by {policy.approval.approved_by}"
            )
        elif policy is not None and policy.request_id:
            lines.append(f"approval requested: {policy.request_id} (not yet granted)")
        if policy is not None and policy.break_glass:
            lines.append(f"break-glass: {policy.break_glass}")
        lines.append(self._evidence())
        return "\n".join(lines)

    def _evidence(self) -> str:
        """Where an auditor finds the run in the ledger: its records' range and the head."""
        try:
            with self._lock:
                actions = list(self._actions)
            seqs = [
                r.seq
                for i in range(0, len(actions), 500)
                for r in self.ledger.records(action_ids=actions[i : i + 500])
            ]
        except Exception as exc:  # the note still goes out; it says what is missing
            log.warning("ledger evidence for the desk note: %s", exc)
            return f"ledger: (could not be read: {exc})"
        return evidence(self.ledger, (min(seqs), max(seqs)) if seqs else None, self.ticket)


def host_lines(results: Sequence[HostResult], duration: float, ticket: str) -> list[str]:
    """The outcome counts, then one line per host (the first MAX_HOST_LINES)."""
    counts: dict[str, int] = {}
    for r in results:
        counts[str(r.outcome)] = counts.get(str(r.outcome), 0) + 1
    summary = ", ".join(f"{n} {o}" for o, n in sorted(counts.items())) or "no hosts"
    lines = [f"{len(results)} host(s): {summary}; {duration:.1f} s", ""]
    for r in results[:MAX_HOST_LINES]:
        detail = f" ({r.error})" if r.error else ""
        lines.append(f"- {r.host}: {r.outcome}{detail} {r.message}".rstrip())
    if len(results) > MAX_HOST_LINES:
        lines.append(
            f"- … and {len(results) - MAX_HOST_LINES} more host(s): itops log --ticket {ticket}"
        )
    return lines


def evidence(ledger: Ledger, span: tuple[int, int] | None, ticket: str) -> str:
    """`ledger: records A–B; head #N sha256 H` for a note (A–B: the run's records)."""
    try:
        head = ledger.head()
    except Exception as exc:
        log.warning("ledger head for the desk note: %s", exc)
        head = None
    where = f"records {span[0]}–{span[1]}" if span else "no host records"
    if head is None:
        return f"ledger: {where}"
    return (
        f"ledger: {where}; head #{head.seq} sha256 {head.hash} "
        f"(itops audit verify; itops log --ticket {ticket})"
    )
