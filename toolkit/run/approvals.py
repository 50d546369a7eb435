"""Approvals for risky remediations, recorded in the ledger and bound to exactly one change.

A run of a risky remediation without a matching approval records an `approval.requested` event
and ends `needs-approval` with a REQUEST-ID. Another operator grants it (`itops approve ID`): an
`approval.granted` event that repeats the binding — ticket, task, the exact target hosts and the
SHA-256 of the parameters — and an expiry. A later run uses the grant only if all four match and it
has not expired; each use is an `approval.used` event. The requester cannot approve their own
request; every refusal is an `approval.refused` event.

A scheduled run opens a new change ticket each time, so its approvals are bound to the schedule
instead of a ticket: granted once, they cover that schedule's runs (same task, hosts and
parameters) until they expire.

Operators are who the ledger says they are (ITOPS_OPERATOR, [operator] name, or the OS user): as
strong as the account the command runs under.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from toolkit.clock import Clock, iso, parse_iso
from toolkit.errors import NotFound, ToolkitError, ValidationError
from toolkit.ledger import Entry, Ledger, Record

REQUEST_ID = re.compile(r"APR-[0-9a-f]{8}")
DEFAULT_TTL = timedelta(hours=24)  # how long a grant stays usable
DEFAULT_REQUEST_TTL = timedelta(days=7)  # how long a request may wait for its approver


class ApprovalError(ToolkitError):
    """An approval cannot be granted or used as asked."""


def params_hash(params: Mapping[str, Any]) -> str:
    """SHA-256 of the parameters as given (secret references, never secret values)."""
    text = json.dumps(params, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(text.encode()).hexdigest()


@dataclass(frozen=True)
class Binding:
    """What an approval is for: one ticket (or one schedule), one task, these hosts, these
    parameters."""

    ticket: str  # the ticket of the run that asked
    task: str
    hosts: tuple[str, ...]
    params_sha256: str
    schedule: str | None = None  # bound to a schedule's runs rather than to the ticket

    @classmethod
    def of(
        cls,
        ticket: str,
        task: str,
        hosts: Sequence[str],
        params: Mapping[str, Any],
        *,
        schedule: str | None = None,
    ) -> Binding:
        return cls(ticket, task, tuple(sorted(set(hosts))), params_hash(params), schedule)

    @property
    def scope(self) -> str:
        return f"schedule {self.schedule}" if self.schedule else f"ticket {self.ticket}"

    def as_data(self) -> dict[str, Any]:
        data = {"task": self.task, "hosts": list(self.hosts), "params_sha256": self.params_sha256}
        return {**data, "schedule": self.schedule} if self.schedule else data

    @classmethod
    def from_record(cls, record: Record) -> Binding:
        info = record.info
        return cls(
            record.ticket or "",
            str(info.get("task", "")),
            tuple(info.get("hosts", ())),
            str(info.get("params_sha256", "")),
            info.get("schedule") or None,
        )

    def mismatch(self, other: Binding) -> str | None:
        """Why `other` (a run) is not covered by this binding, or None when it is."""
        if other.schedule != self.schedule or (not self.schedule and other.ticket != self.ticket):
            return f"it is for {self.scope}, not {other.scope}"
        if other.task != self.task:
            return f"it is for task {self.task}, not {other.task}"
        if other.hosts != self.hosts:
            return f"it is for hosts {', '.join(self.hosts)}, not {', '.join(other.hosts)}"
        if other.params_sha256 != self.params_sha256:
            return "it was given for different parameters"
        return None


@dataclass(frozen=True)
class Approval:
    request_id: str
    binding: Binding
    requested_by: str
    approved_by: str
    approved_at: datetime
    expires_at: datetime


def request(
    ledger: Ledger,
    binding: Binding,
    *,
    clock: Clock,
    params: Mapping[str, Any],
    reason: str = "",
) -> str:
    """Record a request for approval; returns its REQUEST-ID."""
    request_id = f"APR-{os.urandom(4).hex()}"
    ledger.append(
        Entry(
            "approval.requested",
            ticket=binding.ticket,
            task=binding.task,
            params=dict(params),
            data={
                "request_id": request_id,
                **binding.as_data(),
                "requested_at": iso(clock.now()),
                "reason": reason,
            },
        )
    )
    return request_id


def _records(ledger: Ledger, kind: str, request_id: str) -> list[Record]:
    return [r for r in ledger.records(kind=kind) if r.info.get("request_id") == request_id]


def find_request(ledger: Ledger, request_id: str) -> Record:
    if not REQUEST_ID.fullmatch(request_id):
        raise ValidationError(
            f"invalid request id {request_id!r}", hint="request ids look like APR-1a2b3c4d"
        )
    found = _records(ledger, "approval.requested", request_id)
    if not found:
        raise NotFound(f"no approval request {request_id} in the ticket log")
    return found[0]


def refuse(ledger: Ledger, request_id: str, ticket: str | None, reason: str) -> ApprovalError:
    """Record a refusal and return the error to raise."""
    ledger.append(
        Entry(
            "approval.refused",
            ticket=ticket,
            data={"request_id": request_id, "reason": reason},
        )
    )
    return ApprovalError(f"{request_id}: {reason}")


def grant(
    ledger: Ledger,
    request_id: str,
    *,
    clock: Clock,
    ttl: timedelta = DEFAULT_TTL,
    request_ttl: timedelta = DEFAULT_REQUEST_TTL,
    note: str = "",
) -> Approval:
    """Approve a request as the ledger's operator; refused (and recorded) for the requester."""
    req = find_request(ledger, request_id)
    binding = Binding.from_record(req)
    now = clock.now()
    approver = ledger.operator
    if approver == req.operator:
        raise refuse(
            ledger,
            request_id,
            binding.ticket,
            f"self-approval: {approver} requested this change and cannot approve it",
        )
    if _records(ledger, "approval.granted", request_id):
        raise refuse(ledger, request_id, binding.ticket, "already approved")
    requested_at = parse_iso(str(req.info.get("requested_at") or req.at))
    if now - requested_at > request_ttl:
        raise refuse(
            ledger,
            request_id,
            binding.ticket,
            f"the request expired (made {iso(requested_at)[:16]}Z; requests wait at most "
            f"{_human(request_ttl)}): run the change again for a new request",
        )
    expires = now + ttl
    ledger.append(
        Entry(
            "approval.granted",
            ticket=binding.ticket,
            task=binding.task,
            data={
                "request_id": request_id,
                **binding.as_data(),
                "requested_by": req.operator,
                "approved_at": iso(now),
                "expires_at": iso(expires),
                "note": note,
            },
        )
    )
    return Approval(request_id, binding, req.operator, approver, now, expires)


def _approval(record: Record) -> Approval:
    info = record.info
    return Approval(
        str(info["request_id"]),
        Binding.from_record(record),
        str(info.get("requested_by", "")),
        record.operator,
        parse_iso(str(info["approved_at"])),
        parse_iso(str(info["expires_at"])),
    )


def find_valid(ledger: Ledger, binding: Binding, *, clock: Clock) -> Approval | None:
    """A granted, unexpired approval for exactly this binding, if there is one."""
    now = clock.now()
    # a schedule's runs each have their own ticket: its grants are found by the binding alone
    by_ticket = {} if binding.schedule else {"ticket": binding.ticket}
    for record in ledger.records(kind="approval.granted", **by_ticket):
        approval = _approval(record)
        if approval.binding.mismatch(binding) is None and now < approval.expires_at:
            return approval
    return None


def check_given(ledger: Ledger, request_id: str, binding: Binding, *, clock: Clock) -> Approval:
    """The approval an operator named with --approval: it must be granted, match and be live.

    A refusal is recorded on the run's ticket before the error is raised."""
    req = find_request(ledger, request_id)
    granted = _records(ledger, "approval.granted", request_id)
    if not granted:
        raise refuse(
            ledger,
            request_id,
            binding.ticket,
            f"not approved yet (ask another operator: itops approve {request_id})",
        )
    approval = _approval(granted[0])
    why = Binding.from_record(req).mismatch(binding)
    if why is not None:
        raise refuse(ledger, request_id, binding.ticket, f"approval does not match this run: {why}")
    if clock.now() >= approval.expires_at:
        raise refuse(
            ledger,
            request_id,
            binding.ticket,
            f"approval expired at {iso(approval.expires_at)[:19]}Z",
        )
    return approval


def record_use(ledger: Ledger, approval: Approval, ticket: str) -> None:
    """Record that the run under `ticket` goes ahead on this approval."""
    ledger.append(
        Entry(
            "approval.used",
            ticket=ticket,
            task=approval.binding.task,
            data={
                "request_id": approval.request_id,
                "hosts": list(approval.binding.hosts),
                "approved_by": approval.approved_by,
            },
        )
    )


def pending(ledger: Ledger, *, clock: Clock) -> list[dict[str, Any]]:
    """Requests not yet granted, newest first (for `itops approve --list`)."""
    decided = {r.info.get("request_id") for r in ledger.records(kind="approval.granted")}
    rows = []
    for r in ledger.records(kind="approval.requested"):
        info = r.info
        if info.get("request_id") in decided:
            continue
        rows.append(
            {
                "request_id": info.get("request_id"),
                "ticket": r.ticket,
                "task": info.get("task"),
                "hosts": info.get("hosts"),
                "requested_by": r.operator,
                "requested_at": r.at,
            }
        )
    return rows[::-1]


def parse_duration(text: str | int | float, where: str) -> timedelta:
    """'90m', '24h', '7d' or a number of seconds."""
    if isinstance(text, int | float):
        return timedelta(seconds=float(text))
    m = re.fullmatch(r"\s*(\d+)\s*([smhdw])\s*", str(text))
    if not m:
        raise ValidationError(
            f"{where}: cannot read the duration {text!r}", hint="e.g. 30m, 24h, 7d"
        )
    unit = {"s": "seconds", "m": "minutes", "h": "hours", "d": "days", "w": "weeks"}[m.group(2)]
    return timedelta(**{unit: int(m.group(1))})


def _human(delta: timedelta) -> str:
    hours = delta.total_seconds() / 3600
    return f"{hours / 24:g} days" if hours >= 48 else f"{hours:g} hours"
