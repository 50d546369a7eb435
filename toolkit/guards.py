"""Guards remediations share across platforms: never reset a privileged account by accident.

password.reset on Linux and on Windows both call `privileged_guard` after reading the account's
group memberships, before anything changes.
"""

from __future__ import annotations

from collections.abc import Sequence

from .errors import ToolkitError


class PrivilegedAccount(ToolkitError):
    """The account is a member of an administrative group; resetting it was not explicitly allowed."""


def privileged_guard(
    account: str, privileged_groups: Sequence[str], *, allow: bool, host: str
) -> str | None:
    """Refuse to touch a privileged account unless `allow_privileged` was given.

    Returns a note to record when an override let the reset go ahead (None if not privileged).

    HOOK(core, ticket priority): the policy is that an override also needs a high-priority
    ticket (P1/P2). The run context does not expose the ticket's priority yet; when the core adds
    it, check it here, so Linux and Windows get it at once. Until then `allow` alone decides.
    """
    if not privileged_groups:
        return None
    groups = ", ".join(sorted(privileged_groups))
    if not allow:
        raise PrivilegedAccount(
            f"{account} on {host} is a member of {groups}: refusing to reset a privileged account",
            hint="privileged accounts are reset by their owners' process; if this ticket really "
            "covers it, rerun with -p allow_privileged=true",
        )
    return f"allow_privileged: resetting {account}, a member of {groups}"
