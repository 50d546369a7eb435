"""The governance of a change: its approval and policy decision, linked by ids already recorded.

Approvals (`approval.requested`, `.granted`, `.used`, `.refused`), break-glass
(`policy.break-glass`) and refused runs (`run.refused`) are recorded once per run, not per host:
they carry the ticket and task in their columns and the hosts in their data (`hosts`), with no
`host` column, so a host filter on the column misses them. An action's begin and finish records
carry the run policy's verdict for their host under `policy` (decision, windows, the break-glass
reason, the approval's request id). These helpers join the two by those ids — nothing is added to
the records, so the ledger's format and hashes are unchanged.
"""

from __future__ import annotations

import heapq
from collections.abc import Iterable, Iterator, Sequence
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from toolkit.ledger import Ledger, Record

APPROVAL_KINDS = ("approval.requested", "approval.granted", "approval.used", "approval.refused")
GOVERNANCE_KINDS = (*APPROVAL_KINDS, "policy.break-glass", "run.refused")
_POLICY_KEYS = (
    "decision",
    "reason",
    "job_window",
    "windows",
    "disruptive",
    "risky",
    "evaluated_at",
)


def concerning(ledger: Ledger, hosts: Iterable[str], **filters: Any) -> list[Record]:
    """The governance records that concern any of `hosts` (their data lists the host; a refusal
    of an approval whose request did), in seq order. `filters` as `Ledger.records` (ticket,
    operator, task, since, until)."""
    wanted = set(hosts)
    filters = {k: v for k, v in filters.items() if k not in ("host", "hosts", "kind", "kinds")}
    found = list(ledger.records(kinds=GOVERNANCE_KINDS, **filters))
    requests = {
        r.info.get("request_id")
        for r in found
        if r.kind != "approval.refused" and wanted & set(r.info.get("hosts") or ())
    }
    refused = {
        r.info.get("request_id")
        for r in found
        if r.kind == "approval.refused" and r.info.get("request_id") not in requests
    }
    if refused:  # a refusal in the period of a request made before it
        requests |= {
            r.info.get("request_id")
            for r in ledger.records(kind="approval.requested")
            if r.info.get("request_id") in refused and wanted & set(r.info.get("hosts") or ())
        }
    return [
        r
        for r in found
        if wanted & set(r.info.get("hosts") or ())
        or (r.kind == "approval.refused" and r.info.get("request_id") in requests)
    ]


def host_records(ledger: Ledger, hosts: Sequence[str], **filters: Any) -> Iterator[Record]:
    """`ledger.records(hosts=hosts, **filters)` and the governance records that concern those
    hosts (`concerning`), merged in chain order."""
    own = ledger.records(hosts=list(hosts), **filters)
    if filters.get("outcome") or filters.get("kind") or filters.get("action_id"):
        return own  # (governance records have no outcome or action)
    return heapq.merge(own, concerning(ledger, hosts, **filters), key=lambda r: r.seq)


def policy_of(record: Record) -> dict[str, Any] | None:
    """The run policy's decision recorded on an action's begin or finish record, or None (a
    check run, or a run without a policy)."""
    if not record.kind.startswith("action.") or not record.data or '"policy"' not in record.data:
        return None
    policy = record.info.get("policy")
    if not isinstance(policy, dict):
        return None
    out = {k: policy[k] for k in _POLICY_KEYS if policy.get(k) not in (None, "", [])}
    rid = policy.get("approval") or policy.get("approval_request")
    if rid:
        out["request_id"] = rid
    return out


def approvals(ledger: Ledger, request_ids: Iterable[str]) -> dict[str, dict[str, Any]]:
    """Per request id: who asked, when and why; what exactly (ticket or schedule, task, hosts,
    the parameters as given and the SHA-256 the approval binds); who approved, when, until when,
    with what note; how often it was used or refused. From the approval records themselves."""
    ids = {i for i in request_ids if i}
    if not ids:
        return {}
    out: dict[str, dict[str, Any]] = {}
    for r in ledger.records(kinds=APPROVAL_KINDS):
        info = r.info
        rid = info.get("request_id")
        if rid not in ids:
            continue
        a = out.setdefault(
            rid, {"request_id": rid, "state": "requested", "used": 0, "refusals": []}
        )
        if r.kind == "approval.requested":
            a.update(
                ticket=r.ticket,
                schedule=info.get("schedule"),
                task=info.get("task"),
                hosts=info.get("hosts") or [],
                params=r.as_dict()["params"] or {},
                params_sha256=info.get("params_sha256"),
                binding_sha256=info.get("binding_sha256"),
                requested_by=info.get("principal") or f"{r.operator} (unsigned)",
                requested_at=info.get("requested_at") or r.at,
                reason=info.get("reason") or "",
            )
        elif r.kind == "approval.granted":
            a.update(
                state="granted",
                approved_by=info.get("approved_by"),
                approved_at=info.get("approved_at") or r.at,
                expires_at=info.get("expires_at"),
                note=info.get("note") or "",
                requested_by=info.get("requested_by") or a.get("requested_by"),
            )
        elif r.kind == "approval.used":
            a["used"] += 1
        else:
            a["refusals"].append({"at": r.at, "by": r.operator, "reason": info.get("reason")})
    return out


def links(ledger: Ledger, records: Iterable[Record]) -> dict[str, dict[str, Any]]:
    """Per action id (of the actions among `records` that a run policy decided): its `policy`
    decision and its `approval` (`approvals()`, None when it needed none)."""
    decided: dict[str, dict[str, Any]] = {}
    for r in records:
        if r.action_id and r.action_id not in decided and (policy := policy_of(r)) is not None:
            decided[r.action_id] = policy
    found = approvals(ledger, {str(p["request_id"]) for p in decided.values() if "request_id" in p})
    return {
        action: {"policy": policy, "approval": found.get(str(policy.get("request_id")))}
        for action, policy in decided.items()
    }


def describe(link: dict[str, Any] | None) -> str:
    """One line for a table cell: the policy decision and the approval, or ''."""
    if not link:
        return ""
    policy, approval = link.get("policy") or {}, link.get("approval")
    parts = []
    decision = policy.get("decision")
    if decision == "break-glass":
        parts.append(f"break-glass: {policy.get('reason') or '?'}")
    elif decision and decision not in ("allowed", "needs-approval"):
        parts.append(f"policy: {decision}")
    elif policy.get("windows"):
        parts.append(f"in window {', '.join(map(str, policy['windows']))}")
    if approval and decision == "needs-approval":  # the run stopped here: what became of it
        later = (
            f"approved later by {approval.get('approved_by') or '?'} at "
            f"{_short(approval.get('approved_at'))}"
            if approval.get("state") == "granted"
            else "not granted"
        )
        parts.append(
            f"approval {approval['request_id']} asked by {approval.get('requested_by') or '?'}: "
            + later
        )
    elif approval:
        what = f"{approval.get('task') or '?'} on {', '.join(approval.get('hosts') or []) or '?'}"
        if approval.get("state") == "granted":
            parts.append(
                f"approval {approval['request_id']}: {what}, asked by "
                f"{approval.get('requested_by') or '?'}, approved by "
                f"{approval.get('approved_by') or '?'} at {_short(approval.get('approved_at'))}"
            )
        else:
            parts.append(
                f"approval {approval['request_id']} requested by "
                f"{approval.get('requested_by') or '?'}: not granted"
            )
    elif policy.get("request_id"):
        parts.append(f"approval {policy['request_id']}")
    return "; ".join(parts)


def _short(at: Any) -> str:
    """A recorded time to the minute (UTC, as recorded)."""
    return str(at or "?")[:16].replace("T", " ") + " UTC" if at else "?"


def summary(record: Record) -> str | None:
    """One line for a governance record in a table (its signatures left to --json), or None
    for any other record."""
    if record.kind not in GOVERNANCE_KINDS:
        return None
    info = record.info
    rid = info.get("request_id") or ""
    hosts = ", ".join(map(str, info.get("hosts") or []))
    if record.kind == "approval.requested":
        why = f" ({info['reason']})" if info.get("reason") else ""
        return f"{rid}: {info.get('task') or record.task} on {hosts}{why}"
    if record.kind == "approval.granted":
        return (
            f"{rid}: {info.get('task') or record.task} on {hosts}, asked by "
            f"{info.get('requested_by') or '?'}, approved by {info.get('approved_by') or '?'} "
            f"until {_short(info.get('expires_at'))}"
        )
    if record.kind == "approval.used":
        return f"{rid} used for {hosts}, approved by {info.get('approved_by') or '?'}"
    if record.kind == "approval.refused":
        return f"{rid}: {info.get('reason') or ''}"
    return f"{hosts}: {info.get('reason') or ''}"  # break-glass, a refused run: why
