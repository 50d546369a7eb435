"""`itops audit export`: the records an auditor asked for, with the chain segment and signed
anchors that prove them, the audit report, and a signed manifest, in one archive
(`toolkit.ledger.evidence` holds the format and its verification)."""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
import time
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from toolkit.clock import iso_seconds
from toolkit.errors import LedgerError, ValidationError

if TYPE_CHECKING:
    from toolkit.ledger import Ledger, Record
    from toolkit.ledger.anchors import AnchorLog
    from toolkit.secrets.credentials import Redactor


@dataclass(frozen=True)
class Exported:
    path: Path
    sha256: str
    bytes: int
    manifest: dict[str, Any]


def select(ledger: Ledger, scope: Mapping[str, Any]) -> list[Record]:
    """The records in scope (ticket, host, since, until): for a host, with the approvals,
    break-glass and refusals that concern it (`desk.governance`)."""
    from toolkit.desk.governance import host_records

    filters = {k: scope[k] for k in ("ticket", "since", "until") if scope.get(k)}
    if scope.get("host"):
        return list(host_records(ledger, [str(scope["host"])], **filters))
    return list(ledger.records(**filters))


def export(
    ledger: Ledger,
    redactor: Redactor,
    anchors: AnchorLog,
    scope: Mapping[str, Any],
    out: Path,
    *,
    links_mode: str = "full",
) -> Exported:
    """Write the bundle for `scope` to `out` (atomically). Refused when nothing is in scope, when
    the ledger or its anchors do not verify (a bundle would prove nothing), or when no anchor
    covers the selection yet."""
    from toolkit.ledger import evidence
    from toolkit.reports.audit import build

    scope = {k: v for k, v in scope.items() if v}
    selected = select(ledger, scope)
    if not selected:
        raise ValidationError(
            "nothing in the ticket log matches that scope: no bundle written",
            hint="check the ticket, host and period with: itops log …",
        )
    report = build(ledger, redactor, scope, selected)
    if not report.chain_ok:
        raise LedgerError(
            "the ledger does not verify: a bundle of it would prove nothing",
            hint="see: itops audit verify",
        )
    checked = anchors.check(ledger.hashes, report.head_seq)
    if checked.problem is not None:
        raise LedgerError(f"the anchors do not hold: {checked.problem}", hint="itops audit verify")
    lines = anchors.lines()
    seqs = [int(json.loads(line)["seq"]) for line in lines]
    last = selected[-1].seq
    closing = next((s for s in seqs if s >= last), None)
    if closing is None:
        raise LedgerError(
            f"no signed anchor covers record #{last} yet", hint="itops audit anchor, then again"
        )
    first = selected[0].seq
    chosen = {r.seq for r in selected}
    links = [r for r in ledger.records(seq_from=first, seq_to=closing) if r.seq not in chosen]
    anchor_lines = [line for line, s in zip(lines, seqs, strict=True) if first <= s <= closing]
    out.parent.mkdir(parents=True, exist_ok=True)
    fd, temp = tempfile.mkstemp(prefix=".itops-evidence-", dir=out.parent)
    try:
        with os.fdopen(fd, "wb") as handle:
            manifest = evidence.write(
                handle,
                selected=selected,
                links=links,
                anchor_lines=anchor_lines,
                report_html=report.html,
                anchors=anchors,
                links_mode=links_mode,
                manifest={
                    "scope": scope,
                    "created_at": iso_seconds(time.time()),
                    "created_by": ledger.operator,
                    "ledger_head": {"seq": report.head_seq, "hash": report.head_hash},
                },
            )
        os.chmod(temp, 0o644)
        os.replace(temp, out)
    except BaseException:
        Path(temp).unlink(missing_ok=True)
        raise
    data = out.read_bytes()
    return Exported(out, hashlib.sha256(data).hexdigest(), len(data), manifest)


def record_export(ledger: Ledger, exported: Exported) -> Record:
    """The export's own ledger event: who exported which scope, and the hash of the bundle."""
    from toolkit.ledger import Entry

    m = exported.manifest
    return ledger.append(
        Entry(
            "audit.export",
            data={
                "scope": m["scope"],
                "file": str(exported.path),
                "sha256": exported.sha256,
                "bytes": exported.bytes,
                "segment": m["segment"],
                "key_fingerprint": m["key_fingerprint"],
                "report_sha256": m["files"]["report.html"]["sha256"],
            },
        )
    )
