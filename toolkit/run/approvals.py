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
from toolkit.clock import parse_duration as parse_duration  # re-exported: it lived here
from toolkit.errors import NotFound, ToolkitError, ValidationError
from toolkit.ledger import Entry, Ledger, Record
from toolkit.secrets.identity import SETUP_HINT, Identity, IdentityError

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

    @property
    def sha256(self) -> str:
        """The SHA-256 both signatures cover: scope (ticket or schedule), task, hosts, params."""
        scope = {"schedule": self.schedule} if self.schedule else {"ticket": self.ticket}
        text = json.dumps(
            {**scope, "task": self.task, "hosts": list(self.hosts), "params": self.params_sha256},
            sort_keys=True,
            separators=(",", ":"),
        )
        return hashlib.sha256(text.encode()).hexdigest()

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
    requested_by: str  # the verified principals
    approved_by: str
    approved_at: datetime
    expires_at: datetime


def request_statement(request_id: str, binding_sha256: str) -> str:
    """What a requester signs (a grant's statement differs in its first line: one signature
    cannot stand for the other)."""
    return f"itops approval request\nrequest {request_id}\nbinding {binding_sha256}\n"


def grant_statement(
    request_id: str, binding_sha256: str, approved_at: str, expires_at: str, uses: int | None = None
) -> str:
    """What an approver signs (how many runs it covers, too: 0 = until it expires)."""
    return (
        f"itops approval grant\nrequest {request_id}\nbinding {binding_sha256}\n"
        f"approved {approved_at}\nexpires {expires_at}\n"
        + (f"uses {uses}\n" if uses is not None else "")
    )


def request(
    ledger: Ledger,
    binding: Binding,
    *,
    clock: Clock,
    params: Mapping[str, Any],
    identity: Identity | None,
    reason: str = "",
    plan: Mapping[str, str] | None = None,
) -> str:
    """Record a request for approval, signed by the requester when they can sign; returns its
    REQUEST-ID. An unsigned request is still recorded (with why), but no one can grant it."""
    request_id = f"APR-{os.urandom(4).hex()}"
    proof: dict[str, Any] = {"binding_sha256": binding.sha256}
    try:
        if identity is None:
            raise IdentityError("no identities configured", hint=SETUP_HINT)
        statement = request_statement(request_id, binding.sha256)
        signature = identity.sign(statement)
        proof.update(signature=signature, principal=identity.principal_of(statement, signature))
    except IdentityError as exc:
        proof["unsigned"] = exc.message
    ledger.append(
        Entry(
            "approval.requested",
            ticket=binding.ticket,
            task=binding.task,
            params=dict(params),
            data={
                "request_id": request_id,
                **binding.as_data(),
                **proof,
                "requested_at": iso(clock.now()),
                "reason": reason,
                # what apply will do per host (a push's lines), shown to the approver
                **(
                    {"plan": {h: t for h, t in plan.items() if t}}
                    if plan and any(plan.values())
                    else {}
                ),
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


def refuse(
    ledger: Ledger, request_id: str, ticket: str | None, reason: str, hint: str | None = None
) -> ApprovalError:
    """Record a refusal and return the error to raise."""
    ledger.append(
        Entry(
            "approval.refused",
            ticket=ticket,
            data={"request_id": request_id, "reason": reason},
        )
    )
    return ApprovalError(f"{request_id}: {reason}", hint=hint)


def requester(req: Record, identity: Identity | None) -> str:
    """The verified principal who signed the request `req` (IdentityError otherwise)."""
    info = req.info
    binding = Binding.from_record(req)
    if info.get("binding_sha256") != binding.sha256:
        raise IdentityError("the request's binding does not match its signed hash")
    if not info.get("signature"):
        why = info.get("unsigned") or "no signature"
        raise IdentityError(f"the request was not signed ({why})", hint=SETUP_HINT)
    if identity is None:
        raise IdentityError("no identities configured", hint=SETUP_HINT)
    statement = request_statement(str(info["request_id"]), binding.sha256)
    return identity.principal_of(statement, str(info["signature"]))


def describe(ledger: Ledger, request_id: str, identity: Identity | None) -> dict[str, Any]:
    """What approving `request_id` means, for the approver to read before signing: the binding,
    its hash, the parameters as recorded (secret values masked) and the verified requester."""
    req = find_request(ledger, request_id)
    b = Binding.from_record(req)
    try:
        asked_by, problem = requester(req, identity), None
    except IdentityError as exc:
        asked_by, problem = None, exc.message
    return {
        "request_id": request_id,
        "ticket": b.ticket,
        "schedule": b.schedule,
        "task": b.task,
        "hosts": list(b.hosts),
        "params": json.loads(req.params) if req.params else {},
        "params_sha256": b.params_sha256,
        "binding_sha256": b.sha256,
        "requested_by": asked_by,
        "requested_as": req.operator,
        "problem": problem,
        "plan": dict(req.info.get("plan") or {}),
    }


def grant(
    ledger: Ledger,
    request_id: str,
    *,
    clock: Clock,
    identity: Identity | None,
    ttl: timedelta = DEFAULT_TTL,
    request_ttl: timedelta = DEFAULT_REQUEST_TTL,
    note: str = "",
    uses: int = 1,
) -> Approval:
    """Approve a request with this operator's signing key, for `uses` runs (a schedule's
    approval covers its runs until it expires). Refused (and recorded) when the
    request's signature or the approver's own does not verify against allowed_signers, or both
    are the same principal's."""
    req = find_request(ledger, request_id)
    binding = Binding.from_record(req)

    def refused(reason: str, hint: str | None = None) -> ApprovalError:
        return refuse(ledger, request_id, binding.ticket, reason, hint)

    if identity is None or not identity.configured:
        where = identity.allowed_signers if identity else "allowed_signers"
        raise refused(f"no allowed_signers file at {where}: approvals need identities", SETUP_HINT)
    try:
        asked_by = requester(req, identity)
    except IdentityError as exc:
        raise refused(f"the request's signature does not verify: {exc.message}", exc.hint) from None
    now = clock.now()
    expires = now + ttl
    uses = 0 if binding.schedule else max(1, uses)
    statement = grant_statement(request_id, binding.sha256, iso(now), iso(expires), uses)
    try:
        signature = identity.sign(statement)
        approver = identity.principal_of(statement, signature)
    except IdentityError as exc:
        raise refused(f"your signature does not verify: {exc.message}", exc.hint) from None
    if approver == asked_by:
        raise refused(
            f"self-approval: {approver} requested this change and cannot approve it "
            "(four eyes: a key listed under another principal must sign)"
        )
    if _records(ledger, "approval.granted", request_id):
        raise refused("already approved")
    requested_at = parse_iso(str(req.info.get("requested_at") or req.at))
    if now - requested_at > request_ttl:
        raise refused(
            f"the request expired (made {iso(requested_at)[:16]}Z; requests wait at most "
            f"{_human(request_ttl)}): run the change again for a new request"
        )
    ledger.append(
        Entry(
            "approval.granted",
            ticket=binding.ticket,
            task=binding.task,
            data={
                "request_id": request_id,
                **binding.as_data(),
                "binding_sha256": binding.sha256,
                "requested_by": asked_by,
                "approved_by": approver,
                "approved_at": iso(now),
                "expires_at": iso(expires),
                "uses": uses,
                "signature": signature,
                "note": note,
            },
        )
    )
    return Approval(request_id, binding, asked_by, approver, now, expires)


def verified(ledger: Ledger, grant_record: Record, identity: Identity | None) -> Approval:
    """The approval a grant record stands for, both its signatures re-verified against the
    current allowed_signers (IdentityError when either fails or they are one principal's)."""
    info = grant_record.info
    request_id = str(info.get("request_id", ""))
    req = find_request(ledger, request_id)
    binding = Binding.from_record(grant_record)
    if binding.sha256 != Binding.from_record(req).sha256 or info.get("binding_sha256") != (
        binding.sha256
    ):
        raise IdentityError("the grant's binding is not the request's")
    asked_by = requester(req, identity)
    assert identity is not None  # (requester() refuses without one)
    approved_at, expires_at = str(info.get("approved_at", "")), str(info.get("expires_at", ""))
    uses = int(info["uses"]) if "uses" in info else None
    statement = grant_statement(request_id, binding.sha256, approved_at, expires_at, uses)
    approver = identity.principal_of(statement, str(info.get("signature") or ""))
    if approver == asked_by:
        raise IdentityError(f"{approver} both requested and approved it")
    return Approval(
        request_id, binding, asked_by, approver, parse_iso(approved_at), parse_iso(expires_at)
    )


def exhausted(ledger: Ledger, grant_record: Record) -> str | None:
    """Why a grant covers no more runs (all its uses spent), or None."""
    uses = int(grant_record.info.get("uses") or 0)
    if not uses:
        return None
    request_id = grant_record.info.get("request_id")
    spent = sum(
        1 for r in ledger.records(kind="approval.used") if r.info.get("request_id") == request_id
    )
    return f"already used for {spent} of its {uses} run(s)" if spent >= uses else None


def find_valid(
    ledger: Ledger, binding: Binding, *, clock: Clock, identity: Identity | None
) -> Approval | None:
    """A granted, unexpired approval for exactly this binding whose signatures verify, if there
    is one; a matching grant whose signatures do not verify is refused (recorded) and skipped."""
    now = clock.now()
    # a schedule's runs each have their own ticket: its grants are found by the binding alone
    by_ticket = {} if binding.schedule else {"ticket": binding.ticket}
    for record in ledger.records(kind="approval.granted", **by_ticket):
        info = record.info
        if Binding.from_record(record).mismatch(binding) is not None:
            continue
        try:
            if now >= parse_iso(str(info["expires_at"])) or exhausted(ledger, record):
                continue
            return verified(ledger, record, identity)
        except (IdentityError, NotFound, KeyError, ValueError) as exc:
            why = exc.message if isinstance(exc, ToolkitError) else f"malformed grant ({exc})"
            refuse(
                ledger,
                str(info.get("request_id", "?")),
                binding.ticket,
                f"approval not usable: {why}",
            )
    return None


def check_given(
    ledger: Ledger, request_id: str, binding: Binding, *, clock: Clock, identity: Identity | None
) -> Approval:
    """The approval an operator named with --approval: it must be granted, match, be live and
    its signatures verify.

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
    why = Binding.from_record(req).mismatch(binding)
    if why is not None:
        raise refuse(ledger, request_id, binding.ticket, f"approval does not match this run: {why}")
    try:
        approval = verified(ledger, granted[0], identity)
    except (IdentityError, KeyError, ValueError) as exc:
        reason = exc.message if isinstance(exc, ToolkitError) else f"malformed grant ({exc})"
        raise refuse(ledger, request_id, binding.ticket, f"approval not usable: {reason}") from None
    if clock.now() >= approval.expires_at:
        raise refuse(
            ledger,
            request_id,
            binding.ticket,
            f"approval expired at {iso(approval.expires_at)[:19]}Z",
        )
    spent = exhausted(ledger, granted[0])
    if spent:
        raise refuse(
            ledger, request_id, binding.ticket, f"approval {spent}: run it again for a new one"
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
                "requested_by": approval.requested_by,
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
                "requested_by": info.get("principal") or f"{r.operator} (unsigned)",
                "requested_at": r.at,
            }
        )
    return rows[::-1]


def _human(delta: timedelta) -> str:
    hours = delta.total_seconds() / 3600
    return f"{hours / 24:g} days" if hours >= 48 else f"{hours:g} hours"
