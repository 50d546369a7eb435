"""What every password reset task shares (Linux, Windows, directories): the generator, the
catalog entry's marks, the parameters and the steps around the reset itself.

The alphabet leaves out characters people misread when a password is read out or typed from a
screen (l/1/I, O/0), and its symbols need no quoting in a shell, PowerShell or an LDAP value.
"""

from __future__ import annotations

import secrets
from collections.abc import Mapping, Sequence
from typing import Any

from toolkit.errors import ValidationError
from toolkit.remediation.catalog import Context, Finding, Param, Remediation, remediation
from toolkit.remediation.guards import admit_privileged
from toolkit.remediation.linux import done_before
from toolkit.secrets.credentials import Secret

CLASSES = {
    "lower": "abcdefghijkmnopqrstuvwxyz",
    "upper": "ABCDEFGHJKLMNPQRSTUVWXYZ",
    "digit": "23456789",
    "symbol": "!#%+-=?@^_",
}


def generate_password(length: int, classes: Sequence[str] = tuple(CLASSES)) -> str:
    """A random password with at least one character of every class asked for."""
    alphabet = "".join(CLASSES[c] for c in classes)
    while True:
        value = "".join(secrets.choice(alphabet) for _ in range(length))
        if all(any(ch in CLASSES[c] for ch in value) for c in classes):
            return value


def reset_task(name: str, platforms: set[str] | frozenset[str], summary: str) -> Any:
    """`@remediation` for a password reset: category account, a standard request (KPI.md:
    measured apart from incidents), and a privileged reset (allow_privileged) needs a second
    operator's approval."""
    return remediation(
        name,
        category="account",
        platforms=platforms,
        summary=summary,
        risky="allow_privileged",
        kind="request",
    )


class PrivilegedReset(Remediation):
    """A reset that refuses privileged accounts unless allow_privileged (a bool Param of the
    task) is given on a P1/P2 ticket: checked before an approval is asked for."""

    @classmethod
    def admit(cls, params: Mapping[str, Any], ticket_priority: str | None) -> None:
        admit_privileged(params, ticket_priority)


class PasswordReset(PrivilegedReset):
    """The parameters and steps the Linux (chpasswd) and the directory (LDAP) resets share: the
    new password from a reference or generated, handed over once; one reset per ticket.

    A subclass lists it before the base that declares `user`, so `user` stays the first
    parameter; it may redeclare a parameter's help (its place in the list is kept)."""

    password = Param(str, secret=True, help="new password reference (default: generated)")
    length = Param(int, default=20, minimum=12, maximum=128, help="generated password length")
    classes = Param(
        str,
        many=True,
        choices=tuple(CLASSES),
        help="character classes of a generated password (repeatable; default: all four)",
    )
    expire = Param(bool, default=True, help="the user must change it at next logon")
    unlock = Param(bool, default=True, help="unlock the account too")
    allow_privileged = Param(
        bool, default=False, help="allow resetting a privileged account (P1/P2 ticket only)"
    )
    output_file = Param(
        str, kind="path", help="write a generated password to this local file (0600), not stderr"
    )
    force = Param(bool, default=False, help="reset again even if this ticket already did")

    def refuse_file_for_given(self) -> None:
        """output_file is for a generated password only (check, before anything is read)."""
        if self.output_file and self.password:
            raise ValidationError(
                "output_file is for a generated password; this run was given one",
                hint="leave out -p password=… to generate one, or leave out output_file",
            )

    def requested(
        self, ctx: Context, account: str, locked: bool, state: str, facts: Mapping[str, Any]
    ) -> Finding:
        """Check's finding: already-ok if an earlier run under this ticket reset the account and
        it is not locked (unless force=true), else the reset requested (with the account's
        `state`, if any)."""
        past = done_before(ctx, user=account)
        if past is not None and not self.force and not locked:
            return Finding.healthy(
                f"{account} was already reset under {ctx.ticket} at {past.at[:19]}Z and is "
                "not locked; force=true resets it again",
                **facts,
            )
        return Finding.problem(
            f"reset requested for {account}" + (f" ({state})" if state else ""), **facts
        )

    def generated(self, ctx: Context, label: str) -> Secret:
        """A new password of `length` characters of `classes` (default: all four), adopted by
        the run so that it is masked in every output."""
        classes = list(self.classes or []) or list(CLASSES)
        if int(self.length) < len(classes):
            raise ValidationError("length is shorter than the number of character classes")
        return ctx.adopt(Secret(generate_password(int(self.length), classes), label))

    def hand_over(self, ctx: Context, account: str, secret: Secret) -> None:
        """Show a generated password to the engineer once (stderr, or the 0600 output_file)."""
        to_file = str(self.output_file) if self.output_file else None
        ctx.handover(f"new password for {account}", secret, to_file=to_file)
