"""What a run produces, once: each host's outcome and result, the run's report, its exit code.

The runner makes these; the CLI renders them, runbooks, schedules and jobs read them, and the
exit code of `itops fix`, `itops backup run`, `itops runbook run` and a scheduled job comes from
`exit_code` alone.
"""

from __future__ import annotations

import enum
from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from toolkit.remediation.catalog import Finding
from toolkit.secrets.handover import Handover


class Outcome(enum.StrEnum):
    ALREADY_OK = "already-ok"  # check found nothing to fix
    FIXED = "fixed"  # apply ran and verify passed
    WOULD_FIX = "would-fix"  # check-only run: the problem is there
    FAILED = "failed"  # apply or verify failed, or a step raised
    UNREACHABLE = "unreachable"  # could not connect or authenticate, or the host key was refused
    SKIPPED = "skipped"  # not this platform, outside its window, or not run (max-fail-percent)
    NEEDS_APPROVAL = "needs-approval"


# Exit codes, documented in `itops fix --help`; the first that applies wins.
EXIT_CODES: tuple[tuple[Outcome, int], ...] = (
    (Outcome.FAILED, 1),
    (Outcome.UNREACHABLE, 3),
    (Outcome.NEEDS_APPROVAL, 5),
    (Outcome.SKIPPED, 6),  # held back: outside its window, or not run after --max-fail-percent
    (Outcome.WOULD_FIX, 4),
)
# A host the task has no implementation for is skipped too, but that is no work left undone.
NOT_ITS_PLATFORM = "not-its-platform"
# A host whose action the ledger could not record (its begin: never contacted; its finish: open).
LEDGER_UNAVAILABLE = "ledger-unavailable"


def exit_code(outcomes: Iterable[Outcome], *, failed: bool = False) -> int:
    """The exit code of a run whose hosts ended with `outcomes`: the first of EXIT_CODES that
    applies, else 0. `failed`: the run itself failed beyond its hosts (a task's finish_run
    raised, a runbook escalated a host), which counts as a failed host."""
    present = set(outcomes)
    if failed:
        present.add(Outcome.FAILED)
    return next((code for outcome, code in EXIT_CODES if outcome in present), 0)


@dataclass(frozen=True)
class CommandRecord:
    step: str
    command: str
    exit_code: int | None
    duration: float
    stdout: str = ""
    stderr: str = ""

    def as_ledger(self) -> dict[str, Any]:
        return {
            "step": self.step,
            "command": self.command,
            "exit_code": self.exit_code,
            "duration_ms": round(self.duration * 1000),
        }


def transcript(commands: Iterable[CommandRecord]) -> str:
    """Commands and their output as a terminal would show them (the ledger's `output`)."""
    return "".join(
        f"$ {c.command}\n{c.stdout}{c.stderr}"
        + ("" if (c.stdout + c.stderr).endswith("\n") or not (c.stdout + c.stderr) else "\n")
        for c in commands
    )


@dataclass(frozen=True)
class HostResult:
    host: str
    outcome: Outcome
    message: str
    duration: float = 0.0
    check: Finding | None = None
    verify: Finding | None = None
    commands: tuple[CommandRecord, ...] = ()
    error: str | None = None
    action_id: str | None = None
    notes: tuple[str, ...] = ()
    # Secrets for the engineer (a generated password): delivered once by the CLI, never in
    # as_dict(), the notes or the ledger.
    handovers: tuple[Handover, ...] = field(default=(), repr=False)

    def as_dict(self) -> dict[str, Any]:
        return {
            "host": self.host,
            "outcome": str(self.outcome),
            "message": self.message,
            "error": self.error,
            "duration": round(self.duration, 3),
            "action_id": self.action_id,
            "check": finding_dict(self.check),
            "verify": finding_dict(self.verify),
            "notes": list(self.notes),
            "commands": [
                {**c.as_ledger(), "stdout": c.stdout, "stderr": c.stderr} for c in self.commands
            ],
        }


def finding_dict(f: Finding | None) -> dict[str, Any] | None:
    return None if f is None else {"ok": f.ok, "summary": f.summary, "facts": dict(f.facts)}


@dataclass(frozen=True)
class RunReport:
    task: str
    ticket: str | None
    check_only: bool
    results: tuple[HostResult, ...]
    duration: float
    notes: tuple[str, ...] = ()  # from the task's finish_run (e.g. the backup commit)
    finish_failed: bool = False  # finish_run raised: its note says why

    @property
    def counts(self) -> Counter[str]:
        return Counter(str(r.outcome) for r in self.results)

    @property
    def exit_code(self) -> int:
        counted = (r.outcome for r in self.results if r.error != NOT_ITS_PLATFORM)
        return exit_code(counted, failed=self.finish_failed)

    def as_dict(self) -> dict[str, Any]:
        return {
            "task": self.task,
            "ticket": self.ticket,
            "mode": "check" if self.check_only else "fix",
            "duration": round(self.duration, 3),
            "counts": dict(self.counts),
            "exit_code": self.exit_code,
            "notes": list(self.notes),
            "hosts": [r.as_dict() for r in self.results],
        }


def max_fail_stop(
    batch: Sequence[Any], results: Mapping[str, HostResult], limit: float | None
) -> str | None:
    """After a `--serial` batch: why the later batches are not run (more of this batch's hosts
    failed or were unreachable than --max-fail-percent allows), or None. `batch`: its Hosts."""
    failed = sum(
        results[h.name].outcome in (Outcome.FAILED, Outcome.UNREACHABLE)
        for h in batch
        if h.name in results
    )
    if limit is None or failed * 100 <= limit * len(batch):
        return None
    return (
        f"not run: {failed} of {len(batch)} hosts failed in an earlier batch "
        f"(more than --max-fail-percent {limit:g})"
    )
