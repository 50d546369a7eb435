"""The directory account tasks' catalog entries and findings: one name, summary and approval
rule each, and one wording of what check and verify found, for every implementation (over LDAP
in tasks/directory.py, through the ActiveDirectory PowerShell module in
tasks/windows/directory.py), so a task reads the same whichever backend runs it.

Each is a standard request (KPI.md): measured by fulfilment time, not incident MTTR.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from toolkit.remediation.catalog import Finding, remediation
from toolkit.remediation.guards import PrivilegedAccount

# name: (summary, risky)
ACCOUNT_TASKS: dict[str, tuple[str, bool]] = {
    "account.status": (
        "A directory account's state: locked, expired, disabled, bad passwords, groups (read-only)",
        False,
    ),
    "account.unlock": ("Unlock a directory account locked out by bad passwords", False),
    "account.enable": ("Enable a disabled directory account", False),
    "account.disable": ("Disable a directory account (it can no longer log in)", False),
    # a permission change: every run needs a second operator's approval
    "account.group-add": (
        "Add a directory account to a group (a permission change: needs approval)",
        True,
    ),
    "account.group-remove": (
        "Remove a directory account from a group (a permission change: needs approval)",
        True,
    ),
}


def account_task(name: str, platforms: set[str] | frozenset[str]) -> Any:
    """`@remediation` for the directory account task `name` on `platforms`: its summary and
    approval rule from ACCOUNT_TASKS, category account, a standard request."""
    summary, risky = ACCOUNT_TASKS[name]
    return remediation(
        name, category="account", kind="request", platforms=platforms, summary=summary, risky=risky
    )


# ---------------------------------------------------------------- findings
# What both implementations conclude from an account's facts (a mapping with at least
# account, disabled, locked, expired, must_change), so they say it in the same words.


def problems(facts: Mapping[str, Any]) -> list[str]:
    """What is wrong with the account, in words."""
    words = ("disabled", "locked", "expired", "must_change")
    return [
        w.replace("_", " ") + (" password" if w == "must_change" else "") for w in words if facts[w]
    ]


def describe(facts: Mapping[str, Any]) -> str:
    return f"{facts['account']}: " + (", ".join(problems(facts)) or "enabled, not locked")


def status(facts: Mapping[str, Any]) -> Finding:
    """account.status: a problem is would-fix, with the evidence in the facts."""
    if problems(facts):
        return Finding.problem(describe(facts), **facts)
    return Finding.healthy(describe(facts), **facts)


def unlocked(facts: Mapping[str, Any]) -> Finding:
    """account.unlock's verify."""
    if facts["locked"]:
        return Finding.problem(f"{facts['account']} is still locked", **facts)
    return Finding.healthy(f"{facts['account']} is not locked", **facts)


def toggle_needed(facts: Mapping[str, Any], enable: bool) -> Finding:
    """account.enable / account.disable's check."""
    if facts["disabled"] != enable:
        state = "disabled" if facts["disabled"] else "enabled"
        return Finding.healthy(f"{facts['account']} is already {state}", **facts)
    return Finding.problem(describe(facts), **facts)


def refuse_privileged_group(
    group: str, account: str, add: bool, within: Sequence[str] = ()
) -> None:
    """account.group-add|remove on a privileged group without allow_privileged; `within`: the
    privileged groups it is nested in (AD), when it is privileged by nesting."""
    inside = f" (a member of {', '.join(sorted(within))})" if within else ""
    raise PrivilegedAccount(
        f"{group} is a privileged group{inside}: refusing to "
        f"{'add' if add else 'remove'} {account} without allow_privileged",
        hint="privileged group changes need -p allow_privileged=true, which the second "
        "operator's approval then covers",
    )


def membership_needed(account: str, group: str, member: bool, add: bool) -> Finding:
    """account.group-add|remove's check: is `account` already where `add` wants it?"""
    facts = {"account": account, "group": group, "member": member}
    if member == add:
        where = "a member of" if member else "not in"
        return Finding.healthy(f"{account} is already {where} {group}", **facts)
    action = "add to" if add else "remove from"
    return Finding.problem(f"{action} {group} requested for {account}", **facts)


def membership_done(account: str, group: str, member: bool, add: bool) -> Finding:
    """account.group-add|remove's verify."""
    facts = {"account": account, "group": group, "member": member}
    if member != add:
        still = "still" if member else "not"
        return Finding.problem(f"{account} is {still} a member of {group}", **facts)
    where = "a member of" if member else "not in"
    return Finding.healthy(f"{account} is {where} {group}", **facts)
