"""A worker's side of a job: a batch of one site's hosts, run by the run service.

`run_job` is what the Celery task calls (and what tests call directly). It runs the hosts with
`RunService.execute` — the same runner, catalog, transports and policy as `itops fix` — under the
run policy the controller admitted (rebuilt here from its ids: the approval is looked up in the
ledger and its signatures verified again with this worker's allowed_signers).

Exactly once per host action: every action a job writes carries the job's id (a tag in its begin
and finish records). A job delivered again (its worker died; acks_late) first reads the ledger:
a host finished under this job gets that result back; a host begun but never finished is
re-checked read-only and its open action finished with what the check found — never re-applied;
only hosts without a begin record are run. The same guard closes, within the job, a host whose
finish could not be written (the ledger unreachable past its retries): once the ledger answers
again (up to LEDGER_BACK seconds) the host is re-checked and its open action finished with what
the check found — never reported fixed without a record. A host whose begin could not be written
is never contacted (the runner's rule).
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from typing import TYPE_CHECKING, Any

from toolkit.errors import ToolkitError, ValidationError
from toolkit.run.events import HostRun, RunObserver
from toolkit.run.results import LEDGER_UNAVAILABLE, HostResult
from toolkit.workers import require_shared_ledger, site_of

if TYPE_CHECKING:
    from toolkit.app import App
    from toolkit.inventory import Host
    from toolkit.ledger import Ledger, Record
    from toolkit.remediation.catalog import Finding
    from toolkit.run.policy import RunPolicy

log = logging.getLogger("itops.worker")

WORKER_LOST = "worker-lost"


def policy_state(policy: RunPolicy | None) -> dict[str, Any] | None:
    """What a worker needs to rebuild the admitted policy (ids and names: JSON)."""
    if policy is None:
        return None
    return {
        "job_window": policy.job_window.name if policy.job_window is not None else None,
        "break_glass": policy.break_glass,
        "approval": policy.approval.request_id if policy.approval is not None else None,
        "request_id": policy.request_id,
        "schedule": policy.schedule,
    }


def rebuild_policy(
    app: App, state: Mapping[str, Any] | None, params: Mapping[str, Any]
) -> RunPolicy | None:
    if state is None:
        return None
    from toolkit.run import approvals
    from toolkit.run.maintenance import get_window
    from toolkit.run.policy import RunPolicy

    settings = app.policy_settings
    window = get_window(settings.windows, state["job_window"]) if state.get("job_window") else None
    approval = None
    if state.get("approval"):
        rid = str(state["approval"])
        grants = [
            r
            for r in app.ledger.records(kind="approval.granted")
            if r.info.get("request_id") == rid
        ]
        if not grants:
            raise ValidationError(f"approval {rid} is not granted in the ledger this worker reads")
        approval = approvals.verified(app.ledger, grants[0], app.identity)
    return RunPolicy(
        settings,
        app.clock,
        job_window=window,
        break_glass=state.get("break_glass"),
        approval=approval,
        request_id=state.get("request_id"),
        params=params,
        schedule=state.get("schedule"),
    )


def prior(
    ledger: Ledger, job: str, task: str, ticket: str | None, hosts: Sequence[str]
) -> tuple[dict[str, tuple[Record, Record]], dict[str, Record]]:
    """This job's earlier actions (a redelivery): per host (begin, finish) when finished, and
    the begin alone when it never finished."""
    filters: dict[str, Any] = {"task": task, "kinds": ["action.begin", "action.finish"]}
    if ticket:
        filters["ticket"] = ticket
    begins: dict[str, Record] = {}
    finished: dict[str, tuple[Record, Record]] = {}
    wanted = set(hosts)
    for i in range(0, len(hosts), 500):
        for rec in ledger.records(hosts=list(hosts[i : i + 500]), **filters):
            if rec.host not in wanted or rec.action_id is None:
                continue
            if rec.kind == "action.begin" and rec.info.get("job") == job:
                begins[rec.action_id] = rec
            elif rec.kind == "action.finish" and rec.action_id in begins:
                begin = begins.pop(rec.action_id)
                finished[str(rec.host)] = (begin, rec)
    opened = {str(r.host): r for r in begins.values() if str(r.host) not in finished}
    return finished, opened


def cancelled_job(ledger: Ledger, job: str, task: str, ticket: str | None) -> bool:
    from toolkit.workers import CANCELLED

    filters: dict[str, Any] = {"kind": CANCELLED, "task": task}
    if ticket:
        filters["ticket"] = ticket
    return any(job in (r.info.get("jobs") or ()) for r in ledger.records(**filters))


def _finding(value: Any) -> Finding | None:
    from toolkit.remediation.catalog import Finding

    if not isinstance(value, Mapping):
        return None
    return Finding(bool(value.get("ok")), str(value.get("summary") or ""), {})


def recorded_result(begin: Record, finish: Record) -> HostResult:
    """A host's result as its finish record has it (a redelivered job's finished host)."""
    from toolkit.run.results import HostResult, Outcome

    info = finish.info
    return HostResult(
        host=str(finish.host),
        outcome=Outcome(str(finish.outcome)),
        message=str(info.get("message") or ""),
        duration=(finish.duration_ms or 0) / 1000,
        check=_finding(info.get("check")),
        verify=_finding(info.get("verify")),
        error=info.get("error"),
        action_id=finish.action_id,
        notes=tuple(str(n) for n in info.get("notes") or ()),
    )


WORKER_GONE = "its worker was lost mid-run"
FINISH_LOST = "its finish could not be recorded (the ledger was unreachable)"


def settle(
    found: HostResult, begin: Record, why: str = WORKER_GONE, error: str = WORKER_LOST
) -> tuple[str, str, str | None]:
    """An open action's outcome from the re-check of its host: (outcome, message, error).
    `why` it was left open (its worker lost, or its finish could not be written)."""
    from toolkit.run.results import Outcome

    lost = f"{why}; re-checked, not re-applied"
    if begin.info.get("mode") == "check":
        return str(found.outcome), f"{lost}: {found.message}", found.error
    if found.outcome == Outcome.ALREADY_OK:
        return str(Outcome.FIXED), f"{lost}: the fix is in place ({found.message})", None
    if found.outcome == Outcome.WOULD_FIX:
        return (
            str(Outcome.FAILED),
            f"{lost}: still {found.message} (run again to fix it)",
            error,
        )
    return str(found.outcome), f"{lost}: the re-check failed: {found.message}", error


class _Progress(RunObserver):
    """The hosts done so far, sent by the job's watcher thread (never from a host's thread or
    the SSH event loop) at most every 0.3 s: the controller's progress bar."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._done: list[list[str]] = []
        self._sent = 0

    def host_done(self, run: HostRun, result: HostResult) -> None:
        with self._lock:
            self._done.append([result.host, str(result.outcome)])

    def pending(self) -> list[list[str]] | None:
        with self._lock:
            if len(self._done) == self._sent:
                return None
            self._sent = len(self._done)
            return list(self._done)


def run_job(
    app: App,
    payload: Mapping[str, Any],
    *,
    job: str,
    cancelled: Callable[[], bool] = lambda: False,
    default_forks: int | None = None,
    progress: Callable[[dict[str, Any]], None] | None = None,
) -> dict[str, Any]:
    """Run one job (see the module docstring); the report as JSON-ready data. `progress` gets
    `{"done": [[host, outcome], …]}` (all so far) as hosts finish."""
    from toolkit.run.service import RunRequest, RunService

    require_shared_ledger(app.workspace)
    site = str(payload["site"])
    from toolkit.remediation.catalog import Catalog

    # Loaded afresh per job, as the scheduler does: a worker runs for days, task files change.
    entry = Catalog.load(app.workspace.task_folders, overrides=app.workspace.task_overrides).get(
        str(payload["task"])
    )
    hosts: list[Host] = [app.inventory.get(str(n)) for n in payload["hosts"]]
    strangers = [h.name for h in hosts if site_of(h) != site]
    if strangers:
        raise ValidationError(
            f"this worker's inventory puts {', '.join(strangers[:5])} outside site {site}",
            hint="the controller and the workers must read the same inventory",
        )
    params: dict[str, Any] = dict(payload.get("params") or {})
    ticket = payload.get("ticket")
    tags = {**dict(payload.get("tags") or {}), "job": job, "site": site}
    finished, opened = prior(app.ledger, job, entry.name, ticket, [h.name for h in hosts])
    results: dict[str, HostResult] = {
        name: recorded_result(begin, fin) for name, (begin, fin) in finished.items()
    }
    notes: list[str] = []
    finish_failed = False
    fresh = [h for h in hosts if h.name not in finished and h.name not in opened]
    if fresh and cancelled_job(app.ledger, job, entry.name, ticket):
        # cancelled on the controller (Ctrl-C, or its site had no worker for too long) while
        # this worker was not up to hear the revoke: none of its hosts start (open ones are
        # still settled by a read-only re-check)
        log.info("job %s was cancelled on the controller: its hosts do not start", job)
        fresh = []
    timeouts = (payload.get("connect_timeout"), payload.get("command_timeout"))
    done = _Progress()
    with RunService(app, connect_timeout=timeouts[0], command_timeout=timeouts[1],
                    write_back=False, observers=[done]) as service:  # fmt: skip
        stop = threading.Event()

        def watch() -> None:  # Ctrl-C on the controller revokes the job: stop its hosts
            interrupted = False
            while not stop.wait(0.3):
                if not interrupted and cancelled():
                    log.info("job %s revoked: interrupting its hosts", job)
                    service.interrupt()
                    interrupted = True
                hosts_done = done.pending()
                if progress is not None and hosts_done is not None:
                    try:
                        progress({"done": hosts_done})
                    except Exception as exc:  # the bar is not the run: the result still comes
                        log.debug("progress of job %s not sent: %s", job, exc)

        def recheck(opened: Mapping[str, Record], why: str, error: str) -> None:
            """Settle open actions: their hosts re-checked read-only, never re-applied."""
            again = [h for h in hosts if h.name in opened]
            checked = service.execute(
                RunRequest(entry, again, params, ticket=ticket, check_only=True,
                           forks=payload.get("forks") or default_forks,
                           tags={**tags, "recheck": True}),
                None,
            ).report  # fmt: skip
            for found in checked.results:
                results[found.host] = _close_open(app, entry.name, ticket, opened[found.host],
                                                  found, tags, why, error)  # fmt: skip

        watcher = threading.Thread(target=watch, name="itops-job-watch", daemon=True)
        watcher.start()
        try:
            if opened:
                recheck(opened, WORKER_GONE, WORKER_LOST)
            if fresh:
                policy = rebuild_policy(app, payload.get("policy"), params)
                ran = service.execute(
                    RunRequest(
                        entry,
                        fresh,
                        params,
                        ticket=ticket,
                        check_only=bool(payload.get("check_only")),
                        forks=payload.get("forks") or default_forks,
                        command_timeout=payload.get("command_timeout"),
                        tags=tags,
                    ),
                    policy,
                )
                results.update({r.host: r for r in ran.report.results})
                notes.extend(ran.report.notes)
                finish_failed = ran.report.finish_failed
                unsure = [r.host for r in ran.report.results if _finish_lost(r)]
                if unsure:
                    # applied (or not) on the host, its finish not written: the ledger and the
                    # host must not disagree — once the ledger is back, the guard a redelivery
                    # runs closes them (finished after all: that record; open: a re-check)
                    back = _ledger_back(app, job, entry.name, ticket, unsure, cancelled)
                    if back is not None:
                        done_now, still_open = back
                        for name, (begin, fin) in done_now.items():
                            results[name] = recorded_result(begin, fin)
                        if still_open:
                            recheck(still_open, FINISH_LOST, LEDGER_UNAVAILABLE)
        finally:
            stop.set()
            watcher.join()
    made = [h for r in results.values() for h in r.handovers]
    sealed: list[dict[str, str]] = []
    if made and payload.get("handover_key"):
        # sealed to the controller's run key: the broker and the result backend see only boxes
        from toolkit.secrets.sealed import seal_handovers

        sealed = seal_handovers(made, str(payload["handover_key"]))
    elif made:  # a controller that sent no key cannot open a box: the secret stays here
        withheld = sorted({h.host for h in made})
        notes.append(
            f"{len(withheld)} host(s) made a secret for the engineer on a worker "
            f"({', '.join(withheld[:5])}), and the controller sent no key to seal it to: it "
            "never travels through the broker in clear — run this task from the controller "
            "(hosts without a site) to receive it"
        )
    return {
        "site": site,
        "job": job,
        "results": [results[h.name].as_dict() for h in hosts if h.name in results],
        "notes": notes,
        "finish_failed": finish_failed,
        "handovers": sealed,
    }


def _close_open(
    app: App,
    task: str,
    ticket: str | None,
    begin: Record,
    found: HostResult,
    tags: Mapping[str, Any],
    why: str = WORKER_GONE,
    kind: str = WORKER_LOST,
) -> HostResult:
    """Finish an action left open (its worker lost, or its finish not written) with what the
    re-check found."""
    import dataclasses

    from toolkit.run.results import Outcome, finding_dict

    outcome, message, error = settle(found, begin, why, kind)
    mask = app.redactor.mask
    assert begin.action_id is not None
    try:
        app.ledger.finish(
            begin.action_id,
            task=task,
            host=str(begin.host),
            ticket=ticket,
            outcome=outcome,
            duration=found.duration,
            data={
                "message": mask(message),
                "error": error,
                "check": finding_dict(found.check),
                "verify": None,
                "notes": list(found.notes),
                "recheck_action": found.action_id,
                **({"policy": begin.info["policy"]} if "policy" in begin.info else {}),
                **tags,
            },
        )
    except Exception as exc:
        log.error("%s: the ledger could not finish the open action: %s", begin.host, exc)
        return dataclasses.replace(
            found,
            outcome=Outcome.FAILED,
            message=mask(f"its open action could not be finished in the ledger: {exc}"),
            error=LEDGER_UNAVAILABLE,
        )
    return dataclasses.replace(
        found,
        outcome=Outcome(outcome),
        message=mask(message),
        error=error,
        action_id=begin.action_id,
    )


LEDGER_BACK = 120.0  # seconds a job waits for the ledger to settle the finishes it could not write
LEDGER_POLL = 2.0


def _finish_lost(result: HostResult) -> bool:
    """A host begun in the ledger whose finish could not be written (LedgerRecorder.finish)."""
    return result.action_id is not None and result.error == LEDGER_UNAVAILABLE


def _ledger_back(
    app: App,
    job: str,
    task: str,
    ticket: str | None,
    hosts: Sequence[str],
    cancelled: Callable[[], bool],
) -> tuple[dict[str, tuple[Record, Record]], dict[str, Record]] | None:
    """The job's records of `hosts` (`prior`) once the ledger answers again, waiting up to
    LEDGER_BACK seconds (None: it did not, or the job was revoked meanwhile — their actions
    stay open, and the hosts are reported failed, never fixed)."""
    deadline = time.monotonic() + LEDGER_BACK
    while True:
        try:
            return prior(app.ledger, job, task, ticket, hosts)
        except Exception as exc:
            if cancelled() or time.monotonic() >= deadline:
                log.error("job %s: the ledger is still unreachable, %d action(s) stay open: %s",
                          job, len(hosts), exc)  # fmt: skip
                return None
            log.warning("job %s: waiting for the ledger to settle %d action(s): %s",
                        job, len(hosts), exc)  # fmt: skip
            time.sleep(LEDGER_POLL)


def register(celery: Any, app: App, *, default_forks: int | None) -> None:
    """The worker's one Celery task: a job of hosts (its name is workers.TASK_NAME)."""
    from celery.worker import state as worker_state

    from toolkit.workers import TASK_NAME

    @celery.task(name=TASK_NAME, bind=True, acks_late=True, reject_on_worker_lost=True)  # type: ignore[untyped-decorator]
    def run_hosts(self: Any, payload: dict[str, Any]) -> dict[str, Any]:
        job = str(self.request.id)
        try:
            return run_job(
                app,
                payload,
                job=job,
                cancelled=lambda: job in worker_state.revoked,
                default_forks=default_forks,
                progress=lambda meta: self.update_state(state="PROGRESS", meta=meta),
            )
        except ToolkitError as exc:  # the controller shows it for the job's hosts
            return {"error": app.redactor.mask(exc.message), "hint": exc.hint,
                    "site": payload.get("site"), "job": job}  # fmt: skip
        except Exception as exc:  # the ledger unreachable, a bug: logged here, masked there
            log.exception("job %s failed", job)
            return {"error": app.redactor.mask(f"{type(exc).__name__}: {exc}"), "hint": None,
                    "site": payload.get("site"), "job": job}  # fmt: skip
