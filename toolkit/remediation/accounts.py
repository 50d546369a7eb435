"""The directory account tasks' catalog entries: one name, summary and approval rule each, for
every implementation (over LDAP in tasks/directory.py, through the ActiveDirectory PowerShell
module in tasks/windows/directory.py), so `itops list` shows one task whichever backend runs it.

Each is a standard request (KPI.md): measured by fulfilment time, not incident MTTR.
"""

from __future__ import annotations

from typing import Any

from toolkit.remediation.catalog import remediation

# name: (summary, risky)
ACCOUNT_TASKS: dict[str, tuple[str, bool]] = {
    "account.status": (
        "A directory account's state: locked, expired, disabled, bad passwords, groups "
        "(read-only)",
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
