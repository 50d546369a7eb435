"""What the software.* tasks share across platforms (tasks/software.py: apt or dnf;
tasks/windows/software.py: winget, Chocolatey or an MSI): the catalog entry they act on, their
catalog marks, and how a verify command's answer is judged.

Only software listed in the workspace's catalog (toolkit.software) is installed or removed; an
entry with `approval: true` needs a second operator's approval (`software.needs_approval`).
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping, Sequence
from typing import Any

from toolkit import software
from toolkit.inventory import Host
from toolkit.remediation.catalog import Finding, Param, Remediation, remediation
from toolkit.software import Package, Software


def software_task(
    name: str,
    platforms: set[str] | frozenset[str],
    summary: str,
    *,
    risky: Any = software.needs_approval,
) -> Any:
    """`@remediation` for a software task: category software, a standard request (KPI.md:
    fulfilment time, not incident MTTR), approval when the catalog entry asks for it."""
    return remediation(
        name, category="software", kind="request", platforms=platforms, summary=summary, risky=risky
    )


class CatalogSoftwareTask(Remediation):
    """Base of software.install and software.remove: the catalog entry named by `name`, the
    host's package manager (set by the platform's `resolve`) and the entry's package for it."""

    name = Param(
        str,
        required=True,
        check=software.check_listed,
        help="the software's name in the workspace catalog (software/*.yml)",
    )

    entry: Software
    """The catalog entry (read again by check, so an edited catalog takes effect)."""
    manager: str
    """The package manager the platform chose from what the host has."""
    package: Package
    """The entry's package for that manager: its id and pinned version."""

    @classmethod
    def admit(cls, params: Mapping[str, Any], ticket_priority: str | None) -> None:
        software.active().get(str(params["name"]))  # still listed when the run starts

    def plan(self, host: Host) -> str:
        """The catalog entry as it is now: an approval binds it (an edited pin or package id
        needs a new approval)."""
        return json.dumps(software.active().get(str(self.name)).describe(), sort_keys=True)

    def shown(self) -> str:
        """How the package is named in messages."""
        return self.package.id

    def label(self) -> str:
        pin = f" {self.package.version}" if self.package.version else ""
        return f"{self.entry.name} ({self.manager} {self.shown()}{pin})"

    def proven(self, version: str, answered: dict[str, Any], facts: dict[str, Any]) -> Finding:
        """Install's verify, once `version` is installed at the pin: what the verify command
        (or the service) `answered` decides ({}: the catalog asks nothing)."""
        facts["answers"] = answered
        if answered and not answered["ok"]:
            return Finding.problem(
                f"{self.label()}: {version} is installed but {answered['detail']}", **facts
            )
        tail = f"; {answered['detail']}" if answered else ""
        return Finding.healthy(f"{self.label()}: {version} is installed{tail}", **facts)


def judge(argv: Sequence[str], exit_code: int, output: str, expect: str | None) -> dict[str, Any]:
    """The catalog's verify command answered `output` with `exit_code`: it must exit 0 and, if
    the entry has `expect`, print a match of it (searched in `output` as given)."""
    shown = " ".join(argv)
    first = (output.strip().splitlines() or [""])[0][:120]
    if exit_code != 0:
        return {"ok": False, "detail": f"`{shown}` exited {exit_code}: {first}"}
    if expect and not re.search(expect, output):
        return {"ok": False, "detail": f"`{shown}` said {first!r}, not /{expect}/"}
    return {"ok": True, "detail": f"`{shown}` answered {first!r}"}
