"""The run policy: maintenance windows and approvals, decided per host before anything connects.

`prepare()` does the run-level work once — every window the hosts name exists, a break-glass run is
on a P1 ticket, a risky task has a matching approval (or a new request is recorded) — and records
any refusal before raising it. The RunPolicy it returns is the runner's hook: `decide()` per host,
whose verdict the runner writes into that host's begin and finish records. `held()` is the windows'
part of that verdict on its own: read-only, it needs no `prepare()` (`itops fix --check` asks it
whether a fix now would be skipped).

Settings in itops.toml:

    [policy]
    risky = ["password.*"]          # task names (globs) that need approval beyond those marked risky
    core_groups = ["core"]           # inventory groups of core devices (also: host var device_role = "core")
    disruptive = ["service.restart"] # … that may run only inside a window, beyond those marked
    require_window = false           # true: a disruptive task skips hosts with no window attached
    approval_ttl = "24h"             # how long a granted approval stays usable
    request_ttl = "7d"               # how long a request waits for its approver
"""

from __future__ import annotations

import fnmatch
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from toolkit.clock import Clock, iso
from toolkit.desk.tickets import ticket_priority
from toolkit.errors import ConfigError, ToolkitError, ValidationError
from toolkit.inventory import Host
from toolkit.ledger import Entry, Ledger
from toolkit.remediation.catalog import Task, TaskSpec
from toolkit.run import approvals
from toolkit.run.approvals import Approval, Binding
from toolkit.run.maintenance import Window, get_window, host_windows, load_windows
from toolkit.run.runner import Outcome, PolicyDecision
from toolkit.secrets.identity import Identity


class RunRefused(ToolkitError):
    """The run policy refused the whole run before any host was touched (recorded)."""


@dataclass(frozen=True)
class PolicySettings:
    windows: Mapping[str, Window] = field(default_factory=dict)
    risky: tuple[str, ...] = ()
    core_groups: tuple[str, ...] = ("core",)
    disruptive: tuple[str, ...] = ()
    require_window: bool = False
    approval_ttl: timedelta = approvals.DEFAULT_TTL
    request_ttl: timedelta = approvals.DEFAULT_REQUEST_TTL

    @classmethod
    def from_config(cls, config: Mapping[str, Any]) -> PolicySettings:
        section = config.get("policy", {})
        if not isinstance(section, Mapping):
            raise ConfigError("[policy] must be a table")
        for key, what in (
            ("risky", "task names or globs"),
            ("disruptive", "task names or globs"),
            ("core_groups", "inventory group names"),
        ):
            value = section.get(key, [])
            if not (isinstance(value, list) and all(isinstance(v, str) for v in value)):
                raise ConfigError(f"[policy] {key} must be a list of {what}")
        return cls(
            windows=load_windows(config),
            risky=tuple(section.get("risky", [])),
            core_groups=tuple(section.get("core_groups", ["core"])),
            disruptive=tuple(section.get("disruptive", [])),
            require_window=bool(section.get("require_window", False)),
            approval_ttl=approvals.parse_duration(
                section.get("approval_ttl", "24h"), "[policy] approval_ttl"
            ),
            request_ttl=approvals.parse_duration(
                section.get("request_ttl", "7d"), "[policy] request_ttl"
            ),
        )

    def is_risky(self, spec: TaskSpec, params: Mapping[str, Any], host: Host) -> bool:
        """Marked risky (for these parameters, or on this host as a core device) or listed in the
        workspace's [policy] risky."""
        return (
            spec.risky_for(params)
            or (spec.risky_on_core and self.is_core(host))
            or any(fnmatch.fnmatchcase(spec.name, g) for g in self.risky)
        )

    def is_core(self, host: Host) -> bool:
        """A core device: in a [policy] core_groups group, or its device_role var says core."""
        return host.var("device_role") == "core" or not set(self.core_groups).isdisjoint(
            host.groups
        )

    def is_disruptive(self, spec: TaskSpec) -> bool:
        return spec.disruptive or any(fnmatch.fnmatchcase(spec.name, g) for g in self.disruptive)


@dataclass(frozen=True)
class Held:
    """The maintenance windows keep a change off a host now (`RunPolicy.held`)."""

    decision: str  # outside-window | no-window (what the begin record's policy says)
    detail: str  # the closed windows, each with when it next opens; or why there is none

    @property
    def reason(self) -> str:
        """'outside night (Europe/Berlin) next opens …', or 'no maintenance window is …'."""
        return f"outside {self.detail}" if self.decision == "outside-window" else self.detail

    @property
    def message(self) -> str:
        """What a skipped host's result says."""
        if self.decision == "outside-window":
            return f"outside window {self.detail}"
        return f"outside window: {self.detail}"


class RunPolicy:
    """The per-host verdicts of one prepared run (implements runner.HostPolicy).

    Constructed without `prepare()` (nothing recorded, no approval), it still answers `held()`."""

    def __init__(
        self,
        settings: PolicySettings,
        clock: Clock,
        *,
        job_window: Window | None = None,
        break_glass: str | None = None,
        approval: Approval | None = None,
        request_id: str | None = None,
        params: Mapping[str, Any] | None = None,
        schedule: str | None = None,
    ) -> None:
        self.params = params or {}
        self.schedule = schedule
        self.settings = settings
        self.clock = clock
        self.job_window = job_window
        self.break_glass = break_glass
        self.approval = approval
        self.request_id = request_id

    def held(
        self,
        spec: TaskSpec,
        host: Host,
        *,
        now: datetime | None = None,
        record: dict[str, Any] | None = None,
    ) -> Held | None:
        """Whether the maintenance windows keep `spec` off `host` at `now` (default: the
        clock's): outside the run's job window, or outside every window the host names (a
        disruptive task), or no window attached where [policy] require_window wants one. None
        when they let it run (--break-glass overrides the host's windows, not a job's).

        Read-only: nothing is recorded and no approval is looked at. `decide` starts from it;
        `record`, if given, gets the facts `decide` records (job window, disruptive, windows,
        break-glass)."""
        now = now if now is not None else self.clock.now()
        facts = record if record is not None else {}
        if self.job_window is not None:
            facts["job_window"] = self.job_window.name
            if not self.job_window.is_open(now):
                return Held("outside-window", self.job_window.describe(now))
        if self.settings.is_disruptive(spec):
            windows = host_windows(host, self.settings.windows)
            facts["disruptive"] = True
            facts["windows"] = [w.name for w in windows]
            if not windows and self.settings.require_window:
                return Held("no-window", "no maintenance window is attached to this host")
            if windows and not any(w.is_open(now) for w in windows):
                if self.break_glass is None:
                    return Held("outside-window", "; ".join(w.describe(now) for w in windows))
                facts.update(decision="break-glass", reason=self.break_glass)
        return None

    def decide(self, task: Task, spec: TaskSpec, host: Host) -> PolicyDecision:
        now = self.clock.now()
        record: dict[str, Any] = {"evaluated_at": iso(now)}
        hold = self.held(spec, host, now=now, record=record)
        if hold is not None:
            return PolicyDecision(
                Outcome.SKIPPED, hold.message, {**record, "decision": hold.decision}
            )
        if self.settings.is_risky(spec, self.params, host):
            record["risky"] = True
            if self.approval is None or host.name not in self.approval.binding.hosts:
                rid = self.request_id or "?"
                then = (
                    f"schedule {self.schedule}'s next run goes ahead"
                    if self.schedule
                    else "run this command again"
                )
                return PolicyDecision(
                    Outcome.NEEDS_APPROVAL,
                    f"needs approval {rid}: another operator runs `itops approve {rid}`, then {then}",
                    {**record, "decision": "needs-approval", "approval_request": rid},
                )
            record.update(approval=self.approval.request_id, approved_by=self.approval.approved_by)
        record.setdefault("decision", "allowed")
        return PolicyDecision(None, "", record)


def binding_params(
    task: Task, params: Mapping[str, Any], hosts: Sequence[Host], risky: Sequence[str]
) -> tuple[dict[str, Any], dict[str, str]]:
    """What an approval binds beyond the parameters: the SHA-256 of each implementation's code
    and of each risky host's plan (`Remediation.plan`). Returns (bound values, plan per host)."""
    import hashlib
    import json

    by_name = {h.name: h for h in hosts}
    validated = task.validate(params, {h.platform for h in hosts})
    plans: dict[str, str] = {}
    for name in risky:
        host = by_name[name]
        spec = task.implementation(host.platform)
        if spec is not None:
            plans[name] = spec.cls(validated.get(spec, {})).plan(host)
    code = sorted({spec.code_sha256 for spec in validated})
    plan_text = json.dumps(plans, sort_keys=True)
    bound = {
        "params": dict(params),
        "code_sha256": code,
        "plan_sha256": hashlib.sha256(plan_text.encode()).hexdigest(),
    }
    return bound, plans


def refuse_run(
    ledger: Ledger, *, ticket: str | None, task: str, hosts: Sequence[Host], reason: str
) -> RunRefused:
    """Record that a run was refused before any host was touched; returns the error to raise."""
    ledger.append(
        Entry(
            "run.refused",
            ticket=ticket,
            task=task,
            data={"hosts": [h.name for h in hosts], "reason": reason},
        )
    )
    return RunRefused(f"refused: {reason}")


def prepare(
    ledger: Ledger,
    settings: PolicySettings,
    *,
    clock: Clock,
    task: Task,
    hosts: Sequence[Host],
    params: Mapping[str, Any],
    ticket: str,
    break_glass: str | None = None,
    approval_id: str | None = None,
    job_window: str | None = None,
    schedule: str | None = None,
    identity: Identity | None = None,
) -> RunPolicy:
    """Run-level checks before any host is touched; refusals are recorded, then raised.

    `identity` signs a new approval request and verifies the signatures of any approval used
    (without one, a request is recorded unsigned and no approval is usable).

    A scheduled run names its schedule: its approvals are bound to the schedule, not to the
    change ticket each run opens."""

    def refused(reason: str, hint: str | None = None) -> RunRefused:
        error = refuse_run(ledger, ticket=ticket, task=task.name, hosts=hosts, reason=reason)
        error.hint = hint
        return error

    specs = {h.name: task.implementation(h.platform) for h in hosts}
    try:
        window = get_window(settings.windows, job_window) if job_window else None
        for host in hosts:
            spec = specs[host.name]
            if spec is not None and settings.is_disruptive(spec):
                host_windows(host, settings.windows)
    except ToolkitError as exc:
        raise refused(exc.message, exc.hint) from None
    if break_glass is not None:
        if not break_glass.strip():
            raise ValidationError("--break-glass needs --reason TEXT saying why")
        priority = ticket_priority(ledger, ticket)
        if priority != "P1":
            raise refused(
                f"--break-glass is only for P1 tickets; {ticket} is {priority or 'unprioritised'}",
                "if the outage warrants it: itops ticket update "
                f"{ticket} --priority P1 --reason '…'; or wait for the window",
            )
        ledger.append(
            Entry(
                "policy.break-glass",
                ticket=ticket,
                task=task.name,
                data={"hosts": [h.name for h in hosts], "reason": break_glass},
            )
        )
    risky_hosts = [
        h.name
        for h in hosts
        if (s := specs[h.name]) is not None and settings.is_risky(s, params, h)
    ]
    approval: Approval | None = None
    request_id: str | None = None
    if risky_hosts:
        # Bound to what will run, not only to what was typed: the code of the task and, per
        # host, its plan (a push's rendered lines), so an edited template or task file needs a
        # new approval.
        bound, plans = binding_params(task, params, hosts, risky_hosts)
        binding = Binding.of(ticket, task.name, risky_hosts, bound, schedule=schedule)
        if approval_id is not None:
            approval = approvals.check_given(
                ledger, approval_id, binding, clock=clock, identity=identity
            )
        else:
            approval = approvals.find_valid(ledger, binding, clock=clock, identity=identity)
        if approval is None:
            request_id = approvals.request(
                ledger,
                binding,
                clock=clock,
                params=params,
                identity=identity,
                reason=f"{task.name} is risky",
                plan=plans,
            )
        else:
            approvals.record_use(ledger, approval, ticket)
    elif approval_id is not None:
        raise refused(f"--approval {approval_id} given, but {task.name} needs no approval here")
    return RunPolicy(
        settings,
        clock,
        job_window=window,
        break_glass=break_glass,
        approval=approval,
        request_id=request_id,
        params=params,
        schedule=schedule,
    )
