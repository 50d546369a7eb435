"""The controller's side: a run whose hosts have sites, dispatched to the sites' workers.

`run_distributed` is `RunService.run` for such a run: every site must have a live worker (asked
with Celery's inspect, a short timeout: "no worker for site X" rather than a hang); the request is
admitted once here (ticket, run policy); then per --serial batch, one job per site chunk is sent
to the site's queue while the controller runs its own hosts (no site) itself; the batch's results
come back through the result backend, and --max-fail-percent is applied across the whole batch
(the hosts of later batches are recorded as not run, here). Ctrl-C revokes the jobs: queued ones
never start, running ones interrupt their hosts (the remote commands stop) and send back what
finished.
"""

from __future__ import annotations

import contextlib
import dataclasses
import functools
import logging
import signal
import threading
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from typing import TYPE_CHECKING, Any

from toolkit.errors import ToolkitError
from toolkit.ledger import Entry, Ledger
from toolkit.run.events import HostRun, Observers
from toolkit.run.results import HostResult, Outcome, RunReport, max_fail_stop
from toolkit.run.runner import RunInterrupted
from toolkit.secrets.sealed import RunKey
from toolkit.workers import (
    CANCELLED,
    TASK_NAME,
    WorkerSettings,
    by_site,
    queue_of,
    require_shared_ledger,
    result_from_dict,
)
from toolkit.workers.serve import worker_pattern

if TYPE_CHECKING:
    from toolkit.app import App
    from toolkit.inventory import Host
    from toolkit.run.policy import RunPolicy
    from toolkit.run.service import Ran, RunRequest, RunService

log = logging.getLogger("itops.workers")

REVOKE_GRACE = 20.0  # seconds running jobs get, after Ctrl-C, to send back what they finished


class NoWorker(ToolkitError):
    """A site of the run has no live worker: nothing was recorded or sent."""

    exit_code = 3


class BrokerError(ToolkitError):
    """The broker (or the result backend) could not be reached."""

    exit_code = 3


def consumers(celery: Any, sites: Sequence[str]) -> dict[str, int] | None:
    """Consumers on each site's queue as RabbitMQ counts them (None on Redis, which does not)."""
    if not celery.conf.broker_url.startswith(("amqp", "pyamqp")):
        return None
    counts: dict[str, int] = {}
    with celery.connection_for_read() as conn:
        for site in sites:
            channel = conn.channel()
            try:
                counts[site] = int(
                    channel.queue_declare(queue=queue_of(site), passive=True).consumer_count
                )
            except Exception:  # no such queue: no worker ever consumed it
                counts[site] = 0
            finally:
                with contextlib.suppress(Exception):
                    channel.close()
    return counts


PING_TRIES = 3  # inspects of the wanted sites before one is declared without a live worker


def live_workers(
    celery: Any, settings: WorkerSettings, wanted: Sequence[str] = ()
) -> dict[str, list[str]]:
    """Live workers per site: those that answer Celery's inspect within the ping timeout (a
    worker that does not answer — stopped, hung — is not live, whatever RabbitMQ still counts
    as its queue's consumer). Without `wanted`: every worker, after the timeout.

    With `wanted` sites, only their workers are asked (by worker name: `itops-SITE-PID@HOST`),
    and a site without an answer is asked again, up to PING_TRIES times, before it counts as
    without a worker (one answer late on a loaded machine is not a dead site). On RabbitMQ, a
    site whose queue has no consumer is known without asking, and the inspect returns once as
    many workers answered as the asked sites' queues have consumers. (It broadcast to every
    worker with that limit: the first answers — another site's — could end it before a wanted
    site's worker answered, and that site was reported as without a worker.)"""
    try:
        if not wanted:
            inspect = celery.control.inspect(timeout=settings.ping_timeout)
            return _sites_of(inspect.active_queues() or {})
        counts = consumers(celery, wanted)
        asked = [s for s in wanted if counts is None or counts.get(s)]
        live: dict[str, list[str]] = {}
        for _ in range(PING_TRIES):
            if not asked:
                break
            inspect = celery.control.inspect(
                timeout=settings.ping_timeout,
                limit=sum(counts[s] for s in asked) if counts is not None else None,
                pattern=worker_pattern(asked),
                matcher="pcre",
            )
            for site, workers in _sites_of(inspect.active_queues() or {}).items():
                if site in asked:
                    live[site] = workers
            asked = [s for s in asked if s not in live]
        return live
    except Exception as exc:  # kombu's OperationalError, socket errors: the broker is down
        raise BrokerError(
            f"the broker at {settings.shown_broker} cannot be reached: {exc}",
            hint="start it, or set [workers] broker in itops.toml",
        ) from None


def _sites_of(answered: Mapping[str, Any]) -> dict[str, list[str]]:
    """{site: [worker, …]} from the workers' active_queues answers."""
    from toolkit.workers import QUEUE_PREFIX

    sites: dict[str, list[str]] = {}
    for worker, queues in sorted(answered.items()):
        for queue in queues or ():
            name = str(queue.get("name", ""))
            if name.startswith(QUEUE_PREFIX):
                sites.setdefault(name[len(QUEUE_PREFIX) :], []).append(worker)
    return sites


@dataclasses.dataclass
class _Job:
    site: str
    hosts: list[Host]
    result: Any  # celery AsyncResult


def require_workers(app: App, hosts: Sequence[Host]) -> tuple[Any, WorkerSettings]:
    """The shared ledger, and a live worker for every site of `hosts` — or refused before
    anything is recorded or sent; the Celery app and settings to send with."""
    from toolkit.workers.celeryapp import make_celery

    require_shared_ledger(app.workspace)
    settings = WorkerSettings.of(app.workspace)
    sites = sorted(s for s in by_site(hosts) if s is not None)
    celery = make_celery(settings)
    live = live_workers(celery, settings, sites)
    for site in sites:
        if not live.get(site):
            raise NoWorker(
                f"no worker for site {site}: nothing was run or recorded",
                hint=f"start one there: itops worker --site {site}  (itops worker list shows "
                "the live ones)",
            )
    return celery, settings


def run_distributed(
    service: RunService,
    request: RunRequest,
    *,
    connect_timeout: float | None = None,
) -> Ran:
    """Run `request` over the controller and the sites' workers (see the module docstring)."""
    from toolkit.run.service import Ran

    app = service.app
    celery, settings = require_workers(app, request.hosts)
    started = time.monotonic()
    policy = service.admit(request)
    key = RunKey()  # secrets the workers make come back sealed to it (toolkit.secrets.sealed)
    results: dict[str, HostResult] = {}
    notes: list[str] = []
    finish_failed = False
    pending: list[_Job] = []
    stop_reason: str | None = None
    local = dataclasses.replace(request, serial=None, max_fail_percent=None)
    observers = Observers(service.observers)
    by_name = {h.name: h for h in request.hosts}
    announced: set[str] = set()

    def shown(done: Sequence[Sequence[str]]) -> None:
        """Remote hosts done so far, to the progress bar like local ones."""
        for name, outcome in done:
            if name in by_name and name not in announced:
                announced.add(name)
                run = HostRun(request.task.name, by_name[name], request.ticket,
                              request.check_only, {}, None, {})  # fmt: skip
                observers.host_done(run, HostResult(name, Outcome(outcome), ""))

    try:
        for batch in _batches(list(request.hosts), request.serial):
            if stop_reason:
                ran = service.execute(
                    dataclasses.replace(local, hosts=batch, not_run=stop_reason), policy,
                    write_back=False,  # the run's one note is written for all its hosts
                )  # fmt: skip
                results.update({r.host: r for r in ran.report.results})
                continue
            groups = by_site(batch)
            pending = [
                _Job(site, chunk, _send(celery, request, policy, site, chunk, connect_timeout, key))
                for site, hosts in groups.items()
                if site is not None
                for chunk in _chunks(hosts, settings.job_hosts)
            ]
            if groups.get(None):
                ran = service.execute(
                    dataclasses.replace(local, hosts=groups[None]), policy, write_back=False
                )
                results.update({r.host: r for r in ran.report.results})
                notes.extend(ran.report.notes)
                finish_failed |= ran.report.finish_failed
            lost = functools.partial(cancel, celery, app.ledger, request)
            for job, data in _wait(pending, watch=(celery, settings, lost), progress=shown):
                got, job_notes, failed = _collect(job, data, key)
                shown([[r.host, str(r.outcome)] for r in got.values()])
                results.update(got)
                notes.extend(job_notes)
                finish_failed |= failed
            pending = []
            stop_reason = max_fail_stop(batch, results, request.max_fail_percent)
    except KeyboardInterrupt as stop:
        raise _interrupted(
            celery, app.ledger, request, pending, results, stop, started, key
        ) from None
    ordered = tuple(results[h.name] for h in request.hosts if h.name in results)
    report = RunReport(
        request.task.name,
        request.ticket,
        request.check_only,
        ordered,
        time.monotonic() - started,
        tuple(notes),
        finish_failed,
    )
    return Ran(report, policy)


def _send(
    celery: Any,
    request: RunRequest,
    policy: RunPolicy | None,
    site: str,
    hosts: Sequence[Host],
    connect_timeout: float | None,
    key: RunKey,
) -> Any:
    from toolkit.workers.jobs import policy_state

    payload = {
        "site": site,
        "task": request.task.name,
        "hosts": [h.name for h in hosts],
        "params": dict(request.params),
        "ticket": request.ticket,
        "check_only": request.check_only,
        "forks": request.forks,
        "connect_timeout": connect_timeout,
        "command_timeout": request.command_timeout,
        "policy": policy_state(policy),
        "tags": dict(request.tags),
        "handover_key": key.public,
    }
    try:
        return celery.send_task(TASK_NAME, args=[payload], queue=queue_of(site))
    except Exception as exc:
        raise BrokerError(f"could not send the job for site {site} to the broker: {exc}") from None


WATCH_EVERY = 5.0  # seconds between checks that the sites still waited for have a live worker


def _wait(
    jobs: Sequence[_Job],
    timeout: float | None = None,
    *,
    watch: tuple[Any, WorkerSettings, Callable[[list[_Job], str], None]] | None = None,
    progress: Callable[[Sequence[Sequence[str]]], None] | None = None,
) -> list[tuple[_Job, Any]]:
    """Each job with its result data once it is ready (in the order they finish). `watch`:
    a site left without a live worker for [workers] lost_after seconds has its jobs revoked
    and its hosts failed ("no worker for site X") instead of a wait without end."""
    with _ctrl_c_between_polls() as pressed:
        return _poll(jobs, timeout, watch, progress, pressed)


@contextlib.contextmanager
def _ctrl_c_between_polls() -> Iterator[threading.Event]:
    """Ctrl-C while waiting becomes KeyboardInterrupt between two polls, never inside the
    broker client's read (an AMQP frame cut in half leaves the connection unusable, and the
    revoke and the partial results after Ctrl-C need it)."""
    pressed = threading.Event()
    if threading.current_thread() is not threading.main_thread():
        yield pressed
        return
    previous = signal.signal(signal.SIGINT, lambda signum, frame: pressed.set())
    try:
        yield pressed
    finally:
        signal.signal(signal.SIGINT, previous)


def _poll(
    jobs: Sequence[_Job],
    timeout: float | None,
    watch: tuple[Any, WorkerSettings, Callable[[list[_Job], str], None]] | None,
    progress: Callable[[Sequence[Sequence[str]]], None] | None,
    pressed: threading.Event,
) -> list[tuple[_Job, Any]]:
    done: list[tuple[_Job, Any]] = []
    waiting = list(jobs)
    deadline = None if timeout is None else time.monotonic() + timeout
    lost_since: dict[str, float] = {}
    checked = time.monotonic()
    while waiting:
        if pressed.is_set():
            raise KeyboardInterrupt
        if watch is not None and time.monotonic() - checked >= WATCH_EVERY:
            checked = time.monotonic()
            for job, data in _lost_sites(waiting, lost_since, *watch):
                waiting.remove(job)
                done.append((job, data))
        for job in list(waiting):
            try:
                ready = job.result.ready()
            except Exception as exc:
                sites = ", ".join(sorted({j.site for j in waiting}))
                raise BrokerError(
                    f"lost the broker or result backend while waiting for site(s) {sites}: {exc}",
                    hint="their workers may still be finishing their hosts: every outcome is in "
                    "the ledger (itops log --outcome open shows what is left open)",
                ) from None
            if ready:
                waiting.remove(job)
                done.append((job, _data(job.result)))
            elif progress is not None and job.result.state == "PROGRESS":
                info = job.result.info
                if isinstance(info, Mapping) and isinstance(info.get("done"), list):
                    progress(info["done"])
        if waiting:
            if deadline is not None and time.monotonic() > deadline:
                break
            time.sleep(0.05)
    return done


def _lost_sites(
    waiting: Sequence[_Job],
    lost_since: dict[str, float],
    celery: Any,
    settings: WorkerSettings,
    on_lost: Callable[[list[_Job], str], None],
) -> list[tuple[_Job, Any]]:
    """The waiting jobs of sites whose last worker is gone for longer than lost_after: revoked,
    each with a refusal that names the site."""
    sites = sorted({job.site for job in waiting})
    live = live_workers(celery, settings, sites)
    now = time.monotonic()
    given_up: list[tuple[_Job, Any]] = []
    for site in sites:
        if live.get(site):
            lost_since.pop(site, None)
            continue
        since = lost_since.setdefault(site, now)
        if now - since < settings.lost_after:
            continue
        jobs = [job for job in waiting if job.site == site]
        on_lost(jobs, f"no worker for site {site}")
        log.error("no worker for site %s for %.0fs: its jobs are revoked", site, now - since)
        for job in jobs:
            given_up.append(
                (
                    job,
                    {
                        "error": f"no worker for site {site} since {now - since:.0f}s: its job "
                        "was cancelled; an action its worker began stays open "
                        "(itops log --outcome open)",
                        "kind": "no-worker",
                    },
                )
            )
    return given_up


def cancel(
    celery: Any, ledger: Ledger, request: RunRequest, jobs: Sequence[_Job], reason: str
) -> None:
    """Cancel jobs: recorded in the ledger first (a worker that starts one later — one that was
    not up to hear the revoke — reads it and runs none of its hosts), then revoked."""
    if not jobs:
        return
    ids = [job.result.id for job in jobs]
    try:
        ledger.append(
            Entry(
                CANCELLED,
                ticket=request.ticket,
                task=request.task.name,
                data={"jobs": ids, "sites": sorted({j.site for j in jobs}), "reason": reason},
            )
        )
    except Exception as exc:
        log.error("could not record the cancelled jobs: %s", exc)
    try:
        celery.control.revoke(ids)
    except Exception as exc:
        log.error("could not revoke the jobs: %s", exc)


def _data(result: Any) -> Any:
    if result.successful():
        return result.result
    if result.state == "REVOKED":  # never started: its hosts have no result
        return {"results": [], "revoked": True}
    return {"error": f"the job {result.state.lower()}: {result.result!r}"}


def _collect(job: _Job, data: Any, key: RunKey) -> tuple[dict[str, HostResult], list[str], bool]:
    """A finished job's host results (with the secrets its hosts made, opened with the run's
    key), notes and whether its run failed beyond its hosts."""
    if not isinstance(data, Mapping) or "results" not in data:
        error = str(data.get("error") if isinstance(data, Mapping) else data)
        kind = str(data.get("kind") or "worker-refused") if isinstance(data, Mapping) else (
            "worker-refused")  # fmt: skip
        said = error if kind == "no-worker" else (
            f"the worker for site {job.site} refused the job: {error}")  # fmt: skip
        failed = {h.name: HostResult(h.name, Outcome.FAILED, said, error=kind) for h in job.hosts}
        return failed, [], False
    got = {r.host: r for r in (result_from_dict(d) for d in data["results"])}
    for h in job.hosts:  # a host the job returned nothing for (revoked before it started)
        got.setdefault(h.name, _not_started(h.name))
    notes = [str(n) for n in data.get("notes") or ()]
    for row in data.get("handovers") or ():
        try:
            handover = key.open(row)
        except ToolkitError as exc:
            notes.append(exc.message)
            continue
        if handover.host in got:  # (the host named inside the box: one of this job's)
            r = got[handover.host]
            got[handover.host] = dataclasses.replace(r, handovers=(*r.handovers, handover))
    return got, notes, bool(data.get("finish_failed"))


def _not_started(host: str) -> HostResult:
    return HostResult(host, Outcome.SKIPPED, "not run: its job was cancelled before it started")


def _interrupted(
    celery: Any,
    ledger: Ledger,
    request: RunRequest,
    pending: Sequence[_Job],
    results: dict[str, HostResult],
    stop: KeyboardInterrupt,
    started: float,
    key: RunKey,
) -> RunInterrupted:
    """Ctrl-C: revoke every job of the run; what the running ones finish still comes back."""
    if isinstance(stop, RunInterrupted):  # the controller's own hosts were interrupted
        results.update({r.host: r for r in stop.results})
    ids = [job.result.id for job in pending]
    cancel(celery, ledger, request, pending, "interrupted (Ctrl-C)")
    back: set[str] = set()
    for job, data in _wait(pending, timeout=REVOKE_GRACE if ids else 0):
        got, _, _ = _collect(job, data, key)  # (a secret made before the stop still comes)
        for name, result in got.items():
            if result.action_id is not None or result.outcome != Outcome.SKIPPED:
                results[name] = result
        back.add(job.result.id)
    abandoned: list[str] = []
    for job in pending:
        if job.result.id not in back and job.result.state in ("STARTED", "PROGRESS"):
            abandoned += [h.name for h in job.hosts if h.name not in results]
    if isinstance(stop, RunInterrupted):
        abandoned += [h for h in stop.abandoned if h not in results]
    return RunInterrupted(
        request.task.name,
        request.ticket,
        tuple(results[h.name] for h in request.hosts if h.name in results),
        tuple(h.name for h in request.hosts if h.name in abandoned),
        tuple(h.name for h in request.hosts if h.name not in results and h.name not in abandoned),
        time.monotonic() - started,
    )


def _batches(hosts: list[Host], serial: int | None) -> list[list[Host]]:
    if not serial or serial >= len(hosts):
        return [hosts]
    return [hosts[i : i + serial] for i in range(0, len(hosts), serial)]


def _chunks(hosts: list[Host], size: int) -> list[list[Host]]:
    return [hosts[i : i + size] for i in range(0, len(hosts), max(1, size))]
