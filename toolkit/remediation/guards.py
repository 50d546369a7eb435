"""Guards remediations share across platforms: never reset a privileged account by accident.

password.reset on Linux and on Windows both call `privileged_guard` after reading the account's
group memberships, before anything changes. An override needs both `allow_privileged` and a
high-priority ticket (P1/P2, from the ticket's `ticket.opened` event in the ledger): resetting an
administrator's password is the kind of risky change the support policy reserves for urgent cases.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

from toolkit.errors import ToolkitError

if TYPE_CHECKING:
    from toolkit.remediation.catalog import Context

OVERRIDE_PRIORITIES = ("P1", "P2")


class PrivilegedAccount(ToolkitError):
    """The account is a member of an administrative group; resetting it was not explicitly allowed."""


def privileged_guard(
    account: str,
    privileged_groups: Sequence[str],
    *,
    allow: bool,
    host: str,
    priority: str | None,
) -> str | None:
    """Refuse to touch a privileged account unless `allow_privileged` was given on a P1/P2 ticket.

    Returns a note to record when an override let the reset go ahead (None if not privileged).
    """
    if not privileged_groups:
        return None
    groups = ", ".join(sorted(privileged_groups))
    if not allow:
        raise PrivilegedAccount(
            f"{account} on {host} is a member of {groups}: refusing to reset a privileged account",
            hint="privileged accounts are reset by their owners' process; if this ticket really "
            "covers it (a P1/P2 ticket), rerun with -p allow_privileged=true",
        )
    if priority not in OVERRIDE_PRIORITIES:
        raise PrivilegedAccount(
            f"{account} on {host} is a member of {groups}: allow_privileged needs a P1 or P2 "
            f"ticket, and this run's ticket is {priority or 'not in the ticket log'}",
            hint="run it under the P1/P2 ticket that covers this account",
        )
    return f"allow_privileged on a {priority} ticket: resetting {account}, a member of {groups}"


def guard_privileged(
    ctx: Context, account: str, privileged_groups: Sequence[str], allow: bool
) -> None:
    """`privileged_guard` for this run's host and ticket; an override's note goes into the run."""
    note = privileged_guard(
        account, privileged_groups, allow=allow, host=ctx.host.name, priority=ctx.ticket_priority
    )
    if note:
        ctx.note(note)


def admit_privileged(params: Mapping[str, Any], priority: str | None) -> None:
    """Before an approval is asked for: allow_privileged is only for a P1/P2 ticket (the same
    rule `privileged_guard` applies on the host, checked where nobody's time is spent yet)."""
    if params.get("allow_privileged") and priority not in OVERRIDE_PRIORITIES:
        raise PrivilegedAccount(
            "allow_privileged needs a P1 or P2 ticket, and this run's ticket is "
            f"{priority or 'not in the ticket log'}: nothing was asked or run",
            hint="run it under the P1/P2 ticket that covers this account, or raise this one: "
            "itops ticket update ID --priority P2 --reason '…'",
        )
