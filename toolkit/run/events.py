"""A run's typed events and who sees them: the ledger recorder first, then the observers.

As Nornir's `Processor`: the runner announces what happens (a run starts, a host starts, a step
starts, a host is done, the run is done), and what reacts to it (the ledger's records, the CLI's
progress bar, a test) is an object beside the runner, not a branch inside it.

Per host the events come in order: `host_started`, then `step` for each step that starts
("check", "apply", "verify"), then `host_done` with the host's result. A host ended before it
connects (not its platform, the run policy, a max-fail-percent stop) has no `step`; a host whose
begin record could not be written has only `host_done`.
In an all-SSH run the events of one host come from its greenlet on the SSH loop; otherwise from
its worker thread: an observer that keeps state across hosts guards it (or only adds to it).

The ledger recorder is not an observer like the others: "ledger first" is a gate. A begin record
it cannot write ends the host before anything touches it; a finish record it cannot write makes
the host's result a failure that says the action stays open. An observer's exception is logged
and never reaches the host: a broken progress bar does not fail a fix.
"""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Protocol

from toolkit.errors import ToolkitError
from toolkit.inventory import Host
from toolkit.run.results import (
    LEDGER_UNAVAILABLE,
    HostResult,
    Outcome,
    RunReport,
    finding_dict,
    transcript,
)

if TYPE_CHECKING:
    from toolkit.ledger import Ledger

log = logging.getLogger("itops.runner")


@dataclass(frozen=True)
class HostRun:
    """One host's run as its recorder and observers see it (what its begin record holds)."""

    task: str
    host: Host
    ticket: str | None
    check_only: bool
    params: Mapping[str, Any]  # display form: secrets masked
    policy: Mapping[str, Any] | None  # the run policy's record for this host, if one decided
    tags: Mapping[str, Any]  # recorded with the action (a runbook: its name and run id)
    action_id: str | None = None  # set once the begin record is written
    code: Mapping[str, str] | None = None  # the implementation's source file and its SHA-256


class RunObserver(Protocol):
    """Sees a run's events (see the module docstring). Subclass it to get a no-op for each
    event you do not need, or implement all five."""

    def run_started(self, task: str, hosts: Sequence[Host]) -> None:
        """Before any host starts; `hosts` in inventory order."""
        return None

    def host_started(self, run: HostRun) -> None:
        """The host's begin record is written; nothing has touched the host yet."""
        return None

    def step(self, run: HostRun, name: str) -> None:
        """A step starts on the host: "check", "apply" or "verify"."""
        return None

    def host_done(self, run: HostRun, result: HostResult) -> None:
        """The host has its final result (its finish record written, or the failure to write
        it in the result)."""
        return None

    def run_done(self, report: RunReport) -> None:
        """Every host has a result (not called when Ctrl-C ends the run: RunInterrupted)."""
        return None


class NotRecorded(ToolkitError):
    """The ledger could not write a host's begin record: the host is not run."""


class LedgerRecorder:
    """Writes each host's begin record before anything touches it and its finish record after.

    The finish is written once, retried by the ledger on a fresh connection (never twice);
    the begin and finish carry the run policy's record and the run's tags."""

    def __init__(
        self,
        ledger: Ledger,
        mask: Callable[[str], str],
        route: Callable[[Host], list[dict[str, Any]]] | None = None,
    ) -> None:
        """`route`: the jump hosts a host is reached through (`Connector.route`), kept in its
        begin record as `jump` (first hop first: name, address, user, pinned key fingerprints)."""
        self.ledger = ledger
        self._mask = mask
        self._route = route

    def begin(self, run: HostRun) -> HostRun:
        """`run` with its action id; NotRecorded if the ledger cannot write it."""
        host = run.host
        try:
            jump = self._route(host) if self._route is not None and host.jump else []
            action_id = self.ledger.begin(
                task=run.task,
                host=host.name,
                ticket=run.ticket,
                params=run.params,
                data={
                    "mode": "check" if run.check_only else "fix",
                    "platform": host.platform,
                    "transport": host.transport,
                    "address": f"{host.address}:{host.port}",
                    **({"jump": jump} if jump else {}),
                    **self._policy(run),
                    **({"code": dict(run.code)} if run.code else {}),
                    **run.tags,
                },
            )
        except Exception as exc:  # nothing may touch a host the ledger has not recorded
            log.error("%s: the ledger could not record the action: %s", host.name, exc)
            raise NotRecorded(
                self._mask(f"not run: the ledger could not record it: {exc}")
            ) from exc
        return dataclasses.replace(run, action_id=action_id)

    def finish(self, run: HostRun, result: HostResult) -> HostResult:
        """Write the finish record: `result`, or, if the ledger cannot, a failure saying the
        action stays open there (what ran on the host is still reported)."""
        assert run.action_id is not None, "finish without a begin"
        try:
            self.ledger.finish(
                run.action_id,
                task=run.task,
                host=run.host.name,
                ticket=run.ticket,
                outcome=result.outcome,
                duration=result.duration,
                commands=[c.as_ledger() for c in result.commands],
                output=transcript(result.commands),
                data={
                    "message": result.message,
                    "error": result.error,
                    "check": finding_dict(result.check),
                    "verify": finding_dict(result.verify),
                    "notes": list(result.notes),
                    **self._policy(run),
                    **run.tags,
                },
            )
        except Exception as exc:  # what ran is still reported; the ledger shows it as open
            log.error("%s: the ledger could not record the finish: %s", run.host.name, exc)
            return dataclasses.replace(
                result,
                outcome=Outcome.FAILED,
                message=self._mask(
                    f"{result.outcome} on the host, but the ledger could not record it "
                    f"(the action stays open there): {exc}"
                ),
                error=LEDGER_UNAVAILABLE,
            )
        return result

    @staticmethod
    def _policy(run: HostRun) -> dict[str, Any]:
        return {"policy": dict(run.policy)} if run.policy is not None else {}


class Observers:
    """The runner's observers, each event to each in turn; an observer's exception is logged
    and goes no further (never the host's result, never another observer's event)."""

    def __init__(self, observers: Sequence[RunObserver] = ()) -> None:
        self.all = tuple(observers)

    def run_started(self, task: str, hosts: Sequence[Host]) -> None:
        for observer in self.all:
            _safely(observer.run_started, task, hosts)

    def host_started(self, run: HostRun) -> None:
        for observer in self.all:
            _safely(observer.host_started, run)

    def step(self, run: HostRun, name: str) -> None:
        for observer in self.all:
            _safely(observer.step, run, name)

    def host_done(self, run: HostRun, result: HostResult) -> None:
        for observer in self.all:
            _safely(observer.host_done, run, result)

    def run_done(self, report: RunReport) -> None:
        for observer in self.all:
            _safely(observer.run_done, report)


def _safely(event: Callable[..., None], *args: Any) -> None:
    try:
        event(*args)
    except Exception:
        log.exception("run observer %r failed", event)
