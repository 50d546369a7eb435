"""Printer fixes (CUPS on Linux)."""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import datetime

from toolkit.catalog import Context, Finding, Param, Remediation, remediation
from toolkit.quoting import cmd, script

QUEUE = r"[A-Za-z0-9_][A-Za-z0-9_.-]{0,126}"
_QUEUE = re.compile(QUEUE)
_PRINTER = re.compile(r"^printer (\S+) (?:is (\w+)\.|(disabled)|now printing \S+\.)")
_ACCEPTING = re.compile(r"^(\S+) (not )?accepting requests")
_JOB = re.compile(r"^(\S+)-(\d+)\s+(\S+)\s+(\d+)\s+(.+)$")
_NOW = re.compile(r"^now (.+)$")
CUPS_TIME = "%a %b %d %H:%M:%S %Y"


@dataclass(frozen=True)
class Queue:
    name: str
    enabled: bool = True
    accepting: bool = True
    reason: str = ""
    jobs: tuple[tuple[str, int], ...] = ()  # (job id, age in seconds)


def parse_lpstat(text: str) -> dict[str, Queue]:
    """Queues from `lpstat -p -a -o` output (C locale), with a trailing `now <date>` line."""
    info: dict[str, dict[str, object]] = {}
    jobs: dict[str, list[tuple[str, str]]] = {}
    now: datetime | None = None
    last: str | None = None
    for line in text.splitlines():
        if line.startswith("\t") and last:
            info[last]["reason"] = line.strip()
            continue
        if m := _PRINTER.match(line):
            last = m.group(1)
            info.setdefault(last, {})["enabled"] = m.group(3) is None
        elif m := _ACCEPTING.match(line):
            last = m.group(1)
            info.setdefault(last, {})["accepting"] = m.group(2) is None
        elif m := _NOW.match(line):
            now = _parse_time(m.group(1))
        elif m := _JOB.match(line):
            last = None
            jobs.setdefault(m.group(1), []).append((f"{m.group(1)}-{m.group(2)}", m.group(5)))
    queues = {}
    for name in info.keys() | jobs.keys():
        if not _QUEUE.fullmatch(name):
            continue  # not a name CUPS would give; never pass it on to a command
        ages = tuple((job, _age(now, when)) for job, when in jobs.get(name, []))
        fields = info.get(name, {})
        queues[name] = Queue(
            name,
            enabled=bool(fields.get("enabled", True)),
            accepting=bool(fields.get("accepting", True)),
            reason=str(fields.get("reason", "")),
            jobs=ages,
        )
    return queues


def _parse_time(text: str) -> datetime | None:
    try:
        return datetime.strptime(" ".join(text.split()), CUPS_TIME)
    except ValueError:
        return None


def _age(now: datetime | None, when: str) -> int:
    started = _parse_time(when)
    if now is None or started is None:
        return 0
    return max(0, int((now - started).total_seconds()))


@remediation(
    "printer.clear-queue",
    category="printer",
    platforms={"linux"},
    summary="Cancel stuck print jobs and resume a paused or rejecting queue",
)
class ClearPrintQueue(Remediation):
    """Cancel stuck jobs, re-enable a disabled queue and make it accept jobs again (CUPS).

    A job is stuck if its queue is disabled, or if it has waited longer than `stuck_after`
    minutes. Only those jobs are cancelled; fresh jobs on a working queue are left alone.

    Example:
        itops fix printer.clear-queue ws-042 --ticket INC-1042
        itops fix printer.clear-queue office-floor2 -p queue=hp-4th --check
    """

    queue = Param(str, pattern=QUEUE, help="the queue to fix (default: every queue on the host)")
    stuck_after = Param(
        int, default=15, minimum=0, help="minutes before a waiting job counts as stuck"
    )

    def check(self, ctx: Context) -> Finding:
        queues = self._queues(ctx)
        if self.queue and self.queue not in queues:
            return Finding.problem(
                f"queue {self.queue} does not exist on {ctx.host.name}", missing=self.queue
            )
        problems = {name: self._problems(q) for name, q in sorted(queues.items())}
        problems = {name: p for name, p in problems.items() if p}
        if not queues:
            return Finding.healthy("no print queues configured")
        if not problems:
            return Finding.healthy(
                f"{len(queues)} queue(s) enabled and accepting, no stuck jobs",
                queues=sorted(queues),
            )
        summary = "; ".join(f"{name}: {', '.join(p)}" for name, p in problems.items())
        return Finding.problem(
            summary,
            problems=problems,
            stuck_jobs=[j for q in queues.values() for j in self._stuck(q)],
        )

    def apply(self, ctx: Context) -> None:
        queues = self._queues(ctx)
        if self.queue and self.queue not in queues:
            return  # verify reports the missing queue; there is nothing safe to do
        targets = [q for q in queues.values() if self._problems(q)]
        stuck = [job for q in targets for job in self._stuck(q)]
        if stuck:
            ctx.change(cmd("cancel", *stuck))
        for q in targets:
            if not q.enabled:
                ctx.change(cmd("/usr/sbin/cupsenable", q.name))
            if not q.accepting:
                ctx.change(cmd("/usr/sbin/cupsaccept", q.name))

    def _queues(self, ctx: Context) -> dict[str, Queue]:
        if self.queue:
            probe = script(
                "lpstat -p {q} -a {q} -o {q}; printf 'now %s\\n' \"$(date '+%a %b %d %H:%M:%S %Y')\"",
                q=self.queue,
            )
        else:
            probe = script(
                "lpstat -p -a -o; printf 'now %s\\n' \"$(date '+%a %b %d %H:%M:%S %Y')\""
            )
        result = ctx.read(probe)
        queues = parse_lpstat(result.stdout)
        return {n: q for n, q in queues.items() if not self.queue or n == self.queue}

    def _stuck(self, q: Queue) -> list[str]:
        limit = int(self.stuck_after) * 60
        return [job for job, age in q.jobs if not q.enabled or age >= limit]

    def _problems(self, q: Queue) -> list[str]:
        found = []
        if not q.enabled:
            found.append("disabled" + (f" ({q.reason})" if q.reason else ""))
        if not q.accepting:
            found.append("rejecting jobs")
        stuck = self._stuck(q)
        if stuck:
            found.append(f"{len(stuck)} stuck job(s)")
        return found
