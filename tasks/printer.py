"""Printer fixes (CUPS on Linux)."""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime

from toolkit.errors import NotFound, ToolkitError, ValidationError
from toolkit.remediation.catalog import Context, Finding, Param, Remediation, remediation
from toolkit.remediation.facts import Fact, read
from toolkit.remediation.linux import RestartLinuxService, done_before, host_var
from toolkit.remediation.quoting import Command, cmd, script

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


@dataclass(frozen=True)
class Queues:
    """The host's print queues by name, as lpstat lists them."""

    by_name: Mapping[str, Queue]


@dataclass(frozen=True)
class PrintQueues(Fact[Queues]):
    """Every queue (or just `queue`): enabled, accepting, the reason it stopped, its jobs and
    their ages — `lpstat -p -a -o` (C locale) and the host's clock on a trailing `now` line."""

    queue: str | None = None

    def command(self) -> Command:
        clock = "printf 'now %s\\n' \"$(date '+%a %b %d %H:%M:%S %Y')\""
        if self.queue:
            return script("lpstat -p {q} -a {q} -o {q}; " + clock, q=self.queue)
        return script("lpstat -p -a -o; " + clock)

    def parse(self, stdout: str, stderr: str, exit_code: int) -> Queues:
        queues = parse_lpstat(stdout)
        return Queues({n: q for n, q in queues.items() if not self.queue or n == self.queue})


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
        done = []
        if stuck:
            ctx.change(cmd("cancel", *stuck))
        for q in targets:
            if not q.enabled:
                ctx.change(cmd("/usr/sbin/cupsenable", q.name))
                done.append(f"resumed {q.name}")
            if not q.accepting:
                ctx.change(cmd("/usr/sbin/cupsaccept", q.name))
                done.append(f"{q.name} accepts jobs again")
        if stuck:
            done.append(f"cancelled {len(stuck)} stuck job(s)")
        if done:
            ctx.note(", ".join(done))  # the result: what was done (the runner adds what was found)

    def _queues(self, ctx: Context) -> dict[str, Queue]:
        return read_queues(ctx, self.queue)

    def _stuck(self, q: Queue) -> list[str]:
        return stuck_jobs(q, int(self.stuck_after))

    def _problems(self, q: Queue) -> list[str]:
        return queue_problems(q, int(self.stuck_after))


def read_queues(ctx: Context, queue: str | None = None) -> dict[str, Queue]:
    """The host's queues (or just `queue`) with their state and jobs, read with lpstat."""
    return dict(read(ctx, PrintQueues(queue)).by_name)


def stuck_jobs(q: Queue, stuck_after: int) -> list[str]:
    """Jobs of a disabled queue, or jobs waiting longer than `stuck_after` minutes."""
    limit = stuck_after * 60
    return [job for job, age in q.jobs if not q.enabled or age >= limit]


def queue_problems(q: Queue, stuck_after: int) -> list[str]:
    found = []
    if not q.enabled:
        found.append("disabled" + (f" ({q.reason})" if q.reason else ""))
    if not q.accepting:
        found.append("rejecting jobs")
    stuck = stuck_jobs(q, stuck_after)
    if stuck:
        found.append(f"{len(stuck)} stuck job(s)")
    return found


@dataclass(frozen=True)
class Scheduler:
    running: bool


@dataclass(frozen=True)
class SchedulerStatus(Fact[Scheduler]):
    """Is the CUPS scheduler running (`lpstat -r`)?"""

    def command(self) -> Command:
        return cmd("lpstat", "-r")

    def parse(self, stdout: str, stderr: str, exit_code: int) -> Scheduler:
        return Scheduler(stdout.strip() == "scheduler is running")


@dataclass(frozen=True)
class Devices:
    """Each queue's device URI."""

    uris: Mapping[str, str]


@dataclass(frozen=True)
class QueueDevices(Fact[Devices]):
    """Every queue's device URI (`lpstat -v`)."""

    def command(self) -> Command:
        return cmd("lpstat", "-v")

    def parse(self, stdout: str, stderr: str, exit_code: int) -> Devices:
        found = re.finditer(r"^device for (\S+): (\S+)$", stdout, re.M)
        return Devices({m.group(1): m.group(2) for m in found})


@dataclass(frozen=True)
class Destination:
    """The system default destination ("" when there is none)."""

    name: str


@dataclass(frozen=True)
class DefaultQueue(Fact[Destination]):
    """The system default destination (`lpstat -d`)."""

    def command(self) -> Command:
        return cmd("lpstat", "-d")

    def parse(self, stdout: str, stderr: str, exit_code: int) -> Destination:
        line = stdout.strip()
        return Destination(line.rpartition(": ")[2] if ": " in line else "")


def scheduler_running(ctx: Context) -> bool:
    return read(ctx, SchedulerStatus()).running


@remediation(
    "printer.status",
    category="printer",
    platforms={"linux"},
    summary="Report the spooler, every queue, its jobs and the reasons it stopped (read-only)",
)
class PrinterStatus(Remediation):
    """Read the CUPS spooler's state: is the scheduler running, and per queue whether it is
    enabled and accepting jobs, why it stopped (the reason CUPS gives), its device and its jobs
    with their ages. Changes nothing: run it with --check; problems come back as would-fix with
    the evidence in the facts (the first step of the printer-not-printing runbook).

    Example:
        itops fix printer.status ws-042 --check
        itops fix printer.status office-floor2 -p queue=hp-4th --check
    """

    queue = Param(str, pattern=QUEUE, help="one queue (default: every queue on the host)")
    stuck_after = Param(
        int, default=15, minimum=0, help="minutes before a waiting job counts as stuck"
    )

    def check(self, ctx: Context) -> Finding:
        if not scheduler_running(ctx):
            return Finding.problem("the CUPS scheduler is not running", scheduler=False)
        queues = read_queues(ctx, self.queue)
        devices = read(ctx, QueueDevices()).uris
        facts = {
            "scheduler": True,
            "queues": {
                name: {
                    "enabled": q.enabled,
                    "accepting": q.accepting,
                    "reason": q.reason,
                    "device": devices.get(name, ""),
                    "jobs": [job for job, _ in q.jobs],
                    "oldest_job_minutes": max((age for _, age in q.jobs), default=0) // 60,
                }
                for name, q in sorted(queues.items())
            },
        }
        if self.queue and self.queue not in queues:
            return Finding.problem(f"queue {self.queue} does not exist", **facts)
        problems = {n: queue_problems(q, int(self.stuck_after)) for n, q in sorted(queues.items())}
        problems = {n: p for n, p in problems.items() if p}
        if problems:
            return Finding.problem(
                "; ".join(f"{n}: {', '.join(p)}" for n, p in problems.items()), **facts
            )
        jobs = sum(len(q.jobs) for q in queues.values())
        return Finding.healthy(
            f"scheduler running; {len(queues)} queue(s) enabled and accepting, {jobs} job(s)",
            **facts,
        )

    def apply(self, ctx: Context) -> None:
        ctx.note("printer.status only reads; see the findings")


@remediation(
    "printer.restart-spooler",
    category="printer",
    platforms={"linux"},
    summary="Restart the CUPS spooler (cupsd) and prove it is scheduling again",
)
class RestartSpooler(RestartLinuxService):
    """Restart the CUPS scheduler through the host's service manager (systemd or `service`),
    as root: the fix when cupsd hangs or stopped. The service name is `cups`, or the host
    variable `cups_service`. Verify waits until the service runs and `lpstat -r` reports the
    scheduler running. Once done under a ticket, a rerun is already-ok while it runs.

    Example:
        itops fix printer.restart-spooler ws-042 --ticket INC-1042
        itops fix printer.restart-spooler office -p only_if_stopped=true --check
    """

    def service_name(self, ctx: Context) -> str:
        return host_var(ctx, "cups_service", "cups")

    def check(self, ctx: Context) -> Finding:
        finding = super().check(ctx)
        if finding.ok and not scheduler_running(ctx):
            return Finding.problem(
                f"{self.before.describe()}, but lpstat says the scheduler is not running",
                **finding.facts,
            )
        return finding

    def verify(self, ctx: Context) -> Finding:
        finding = super().verify(ctx)
        if not finding.ok:
            return finding
        for _ in range(int(self.wait_seconds)):
            if scheduler_running(ctx):
                return Finding.healthy(f"{finding.summary}; scheduler running", **finding.facts)
            ctx.read(cmd("sleep", "1"))
        return Finding.problem(f"{finding.summary}, but lpstat does not see it", **finding.facts)


@dataclass(frozen=True)
class QueueOptions:
    """A queue's settings from `lpoptions -p` (`exists` False: there is no such queue)."""

    exists: bool
    values: Mapping[str, str]


@dataclass(frozen=True)
class QueueSettings(Fact[QueueOptions]):
    """A queue's `key=value` settings (`lpoptions -p QUEUE`)."""

    queue: str

    def command(self) -> Command:
        return cmd("lpoptions", "-p", self.queue)

    def parse(self, stdout: str, stderr: str, exit_code: int) -> QueueOptions:
        if exit_code != 0:
            return QueueOptions(False, {})
        return QueueOptions(True, parse_lpoptions(stdout))


@dataclass(frozen=True)
class QueueText:
    """A queue's free-text fields, one literal line each (None: lpstat shows none)."""

    description: str | None = None
    location: str | None = None


@dataclass(frozen=True)
class QueueDetails(Fact[QueueText]):
    """A queue's description and location from `lpstat -l -p QUEUE`: lpoptions does not escape
    quotes inside its quoted values, lpstat shows each free-text field as one literal line."""

    queue: str

    def command(self) -> Command:
        return cmd("lpstat", "-l", "-p", self.queue)

    def parse(self, stdout: str, stderr: str, exit_code: int) -> QueueText:
        fields = [re.search(rf"^\t{label}: ?(.*)$", stdout, re.M) for label in _FREE_TEXT]
        return QueueText(*(m.group(1) if m else None for m in fields))


_FREE_TEXT = ("Description", "Location")


def queue_settings(ctx: Context, queue: str) -> dict[str, str] | None:
    """A queue's settings from `lpoptions -p` (None if there is no such queue), with its
    description and location from `lpstat -l`."""
    options = read(ctx, QueueSettings(queue))
    if not options.exists:
        return None
    settings = dict(options.values)
    text = read(ctx, QueueDetails(queue))
    for key, value in (("printer-info", text.description), ("printer-location", text.location)):
        if value is not None:
            settings[key] = value
    return settings


def parse_lpoptions(text: str) -> dict[str, str]:
    """`lpoptions -p` output: `key=value` words, a value with spaces in single quotes (CUPS's
    own format, not a shell's; quotes inside a value are not escaped, so free text is read
    from `lpstat -l` instead)."""
    settings: dict[str, str] = {}
    i, n = 0, len(text)
    while i < n:
        while i < n and text[i].isspace():
            i += 1
        start = i
        while i < n and text[i] not in "= \t\n":
            i += 1
        key = text[start:i]
        if i >= n or text[i] != "=":
            continue
        i += 1
        value: list[str] = []
        if i < n and text[i] == "'":
            i += 1
            while i < n and not (text[i] == "'" and (i + 1 >= n or text[i + 1].isspace())):
                value.append(text[i])
                i += 1
            i += 1
        else:
            while i < n and not text[i].isspace():
                value.append(text[i])
                i += 1
        if key:
            settings[key] = "".join(value)
    return settings


@remediation(
    "printer.reinstall-queue",
    category="printer",
    platforms={"linux"},
    summary="Delete and re-create a print queue from a device URI and driver",
)
class ReinstallQueue(Remediation):
    """Re-create a CUPS queue: the fix for a queue whose driver or settings are broken beyond
    clearing it. Apply deletes the queue (its jobs go with it, counted in the notes) and adds it
    again with lpadmin, as root: device URI `uri` (default: the queue's current one), the driver
    `driver` (a model name from `lpinfo -m`, e.g. `everywhere`) or a PPD file `ppd` on the host
    (default: none, a raw queue), and its former description, location, sharing and
    default-destination flag. It is enabled and accepts jobs. A missing queue is created (then
    `uri` is required). One-shot: a rerun under the same ticket is already-ok while the queue
    works.

    Example:
        itops fix printer.reinstall-queue ws-042 -p queue=office --ticket INC-1042
        itops fix printer.reinstall-queue ws-042 -p queue=hp4 -p uri=ipp://10.1.4.20/ipp/print -t INC-1043
        itops fix printer.reinstall-queue ws-042 -p queue=office --check
    """

    queue = Param(str, required=True, pattern=QUEUE, help="the queue to re-create")
    uri = Param(
        str,
        kind="text",
        pattern=r"[a-z][a-z0-9+.-]*:[^\s'\"\\]{1,1000}",
        help="device URI (default: the queue's current one)",
    )
    driver = Param(
        str, pattern=r"(?!.*\.\.)[A-Za-z0-9_][A-Za-z0-9_.:/+=-]{0,255}", help="lpinfo -m model"
    )
    ppd = Param(str, kind="path", pattern=r"/.*\.ppd(\.gz)?", help="PPD file on the host")
    description = Param(str, kind="text", help="printer-info (default: the current one)")
    location = Param(str, kind="text", help="printer-location (default: the current one)")

    settings: dict[str, str] | None
    """The queue's settings as check read them (None: missing); apply re-creates it from them."""
    default: bool
    """Whether it was the system default destination; apply makes it the default again."""
    want_uri: str
    """The device URI apply gave the queue; verify checks the queue has it."""

    def check(self, ctx: Context) -> Finding:
        if self.driver and self.ppd:
            raise ValidationError("give driver or ppd, not both")
        queue = str(self.queue)
        self.settings = queue_settings(ctx, queue)
        self.default = read(ctx, DefaultQueue()).name == queue
        if self.settings is None:
            if not self.uri:
                raise NotFound(
                    f"no queue {queue} on {ctx.host.name} to re-create",
                    hint="to create it, give its device: -p uri=…",
                )
            return Finding.problem(f"queue {queue} is missing", missing=queue)
        facts = {
            "device": self.settings.get("device-uri", ""),
            "model": self.settings.get("printer-make-and-model", ""),
        }
        queues = read_queues(ctx, queue)
        state = queues.get(queue)
        working = state is not None and not queue_problems(state, 10**6)
        past = done_before(ctx, queue=queue)
        if past is not None and working:
            return Finding.healthy(
                f"queue {queue} was re-created under {ctx.ticket} at {past.at[:19]}Z and works",
                **facts,
            )
        return Finding.problem(
            f"re-create requested for {queue} ({facts['device']}, {facts['model']})", **facts
        )

    def apply(self, ctx: Context) -> None:
        queue = str(self.queue)
        old = self.settings or {}
        self.want_uri = str(self.uri or old.get("device-uri", ""))
        if not self.want_uri:
            raise ToolkitError(f"queue {queue} has no device URI to re-create it with")
        if self.settings is not None:
            jobs = len(read_queues(ctx, queue).get(queue, Queue(queue)).jobs)
            ctx.change(cmd("lpadmin", "-x", queue), become=True)
            ctx.note(f"deleted queue {queue}" + (f" and its {jobs} job(s)" if jobs else ""))
        argv = ["lpadmin", "-p", queue, "-E", "-v", self.want_uri]
        if self.driver:
            argv += ["-m", str(self.driver)]
        elif self.ppd:
            argv += ["-P", str(self.ppd)]
        info = self.description if self.description is not None else old.get("printer-info")
        where = self.location if self.location is not None else old.get("printer-location")
        if info:
            argv += ["-D", str(info)]
        if where:
            argv += ["-L", str(where)]
        if old.get("printer-is-shared") in ("true", "false"):
            argv += ["-o", f"printer-is-shared={old['printer-is-shared']}"]
        ctx.change(cmd(*argv), become=True)
        ctx.change(cmd("/usr/sbin/cupsenable", queue), become=True)
        ctx.change(cmd("/usr/sbin/cupsaccept", queue), become=True)
        if self.default:
            ctx.change(cmd("lpadmin", "-d", queue), become=True)
        ctx.note(f"re-created {queue} on {self.want_uri}")

    def verify(self, ctx: Context) -> Finding:
        queue = str(self.queue)
        settings = queue_settings(ctx, queue)
        if settings is None:
            return Finding.problem(f"queue {queue} is missing after re-creating it")
        state = read_queues(ctx, queue).get(queue)
        problems = queue_problems(state, 10**6) if state else ["not listed by lpstat"]
        if settings.get("device-uri") != self.want_uri:
            problems.append(f"device is {settings.get('device-uri')}, not {self.want_uri}")
        facts = {
            "device": settings.get("device-uri"),
            "model": settings.get("printer-make-and-model"),
        }
        if problems:
            return Finding.problem(f"{queue}: {', '.join(problems)}", **facts)
        return Finding.healthy(
            f"{queue} re-created on {facts['device']} ({facts['model']}), enabled and accepting",
            **facts,
        )
