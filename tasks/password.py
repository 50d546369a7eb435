"""Password resets for local Linux accounts (chpasswd on stdin, never a command line)."""

from __future__ import annotations

import hashlib
import os
import secrets
from dataclasses import dataclass
from typing import Any, ClassVar

from toolkit.errors import NotFound, ValidationError
from toolkit.remediation.catalog import Context, Finding, Param, Remediation
from toolkit.remediation.facts import Fact, read, succeeded
from toolkit.remediation.guards import guard_privileged
from toolkit.remediation.linux import LINUX_USER, as_int, key_values
from toolkit.remediation.passwords import PasswordReset, reset_task
from toolkit.remediation.quoting import Command, cmd, script
from toolkit.secrets.credentials import Secret

PRIVILEGED_GROUPS = ("root", "sudo", "wheel", "admin")
# The account's state without ever printing its password hash: the lock flag, the change day,
# and a digest of the hash salted with a nonce of this run (it changes with every new password,
# and is worthless outside the run; the hash itself never leaves the host).
SHADOW_STATE = (
    "getent shadow {user} | awk -F: '{{ f = substr($2, 1, 1); "
    's = ($2 == "") ? "empty" : (f == "!") ? "locked" : (f == "*") ? "nologin" : "usable"; '
    'print "status=" s; print "lastchg=" $3; print "expire=" $8 }}\'; '
    "{{ printf '%s\\n' {nonce}; getent shadow {user} | cut -d: -f2; }} | sha256sum "
    "| cut -c1-16 | sed 's/^/hash=/'; "
    "if command -v faillock >/dev/null 2>&1; then "
    "faillock --user {user} 2>/dev/null | grep -c ' V$' | sed 's/^/failures=/'; fi; "
    "echo today=$(( $(date +%s) / 86400 ))"
)


def fingerprint(secret: Secret) -> str:
    """A salted, slow fingerprint of a password for the ticket log (scrypt, random salt): whoever
    holds the password can show it was this reset's, nobody can read the password from it."""
    salt = os.urandom(16)
    digest = hashlib.scrypt(secret.reveal().encode(), salt=salt, n=2**14, r=8, p=1, dklen=16)
    return f"scrypt:16384:8:1:{salt.hex()}:{digest.hex()}"


@dataclass(frozen=True)
class PasswdEntry(Fact[int | None]):
    """The account's uid from the passwd database (getent: local files, LDAP, SSSD alike);
    None when there is no such account."""

    user: str

    def command(self) -> Command:
        return cmd("getent", "passwd", self.user)

    def parse(self, stdout: str, stderr: str, exit_code: int) -> int | None:
        fields = stdout.strip().split(":")
        if exit_code != 0 or len(fields) < 3:
            return None
        return as_int(fields[2], -1)


@dataclass(frozen=True)
class Groups(Fact[tuple[str, ...]]):
    """The names of the groups the account is in (id -nG)."""

    user: str

    def command(self) -> Command:
        return cmd("id", "-nG", self.user)

    def parse(self, stdout: str, stderr: str, exit_code: int) -> tuple[str, ...]:
        return tuple(succeeded(f"id -nG {self.user}", stdout, stderr, exit_code).split())


@dataclass(frozen=True)
class ShadowState(Fact[dict[str, str]]):
    """The account's shadow state as root (SHADOW_STATE: lock status, change day, a digest of
    the hash salted with this run's `nonce`, faillock's count, today's day number)."""

    user: str
    nonce: str
    become: ClassVar[bool] = True

    def command(self) -> Command:
        return script(SHADOW_STATE, user=self.user, nonce=self.nonce)

    def parse(self, stdout: str, stderr: str, exit_code: int) -> dict[str, str]:
        what = f"reading the shadow entry of {self.user}"
        return key_values(succeeded(what, stdout, stderr, exit_code))


@dataclass(frozen=True)
class SudoRules(Fact[bool]):
    """Whether sudoers grants the account any rule (sudo -l -U, as root)."""

    user: str
    become: ClassVar[bool] = True

    def command(self) -> Command:
        return cmd("sudo", "-n", "-l", "-U", self.user)

    def parse(self, stdout: str, stderr: str, exit_code: int) -> bool:
        return "may run the following commands" in stdout


@dataclass(frozen=True)
class Account:
    name: str
    uid: int
    groups: tuple[str, ...]
    status: str  # usable | locked | nologin | empty
    lastchg: int  # days since 1970; 0 = must change at next login
    expire: str
    hash_digest: str
    failures: int
    today: int
    sudo_rules: bool

    @property
    def locked(self) -> bool:
        return self.status == "locked" or self.failures > 0

    def privileged(self) -> list[str]:
        found = [g for g in self.groups if g in PRIVILEGED_GROUPS]
        if self.uid == 0:
            found.append("uid 0")
        if self.sudo_rules:
            found.append("sudoers rules")
        return sorted(set(found))


class LocalAccountTask(Remediation):
    """Base of the tasks on a local Linux account: the user they act on."""

    user = Param(str, required=True, pattern=LINUX_USER, help="local account name")


@reset_task(
    "password.reset",
    {"linux"},
    "Reset a local account's password, unlock it, force a change at next login",
)
class ResetPassword(PasswordReset, LocalAccountTask):
    """Reset a local account's password with chpasswd, unlock it (shadow lock and faillock
    counter) and, by default, force a change at next login (chage -d 0).

    The new password comes from a reference (-p password=env:VAR, prompt, stdin, file:, keyring:)
    or is generated (length characters of the classes asked for). It reaches the host only on
    chpasswd's stdin, never a command line; the generated one is shown to the engineer once (on
    stderr, or appended to a 0600 file with output_file) and is masked in every output, log and
    ticket-log record, which get only "a reset happened" and a salted fingerprint. Accounts with
    uid 0, in sudo/wheel/admin or with sudoers rules are refused unless allow_privileged=true on
    a P1/P2 ticket. Verify: the account is unlocked and its password (and change date) changed.
    A reset is one-shot per ticket: a rerun under the same ticket is already-ok (force=true
    resets again).

    Example:
        itops fix password.reset ws-042 -p user=jdoe --ticket INC-1042
        itops fix password.reset ws-042 -p user=jdoe -p output_file=/root/jdoe.pw --ticket INC-1042
        itops fix password.reset ws-042 -p user=jdoe -p password=prompt -p expire=false --ticket INC-1042
        itops fix password.reset ws-042 -p user=jdoe --check
    """

    # (the other parameters: PasswordReset's; these three say it the Linux way)
    expire = Param(bool, default=True, help="the user must change it at next login")
    unlock = Param(bool, default=True, help="unlock the account (shadow lock, faillock)")
    allow_privileged = Param(
        bool, default=False, help="allow resetting an administrative account (P1/P2 ticket only)"
    )

    before: Account
    """The account as check found it: apply unlocks it, verify wants a new password hash."""
    nonce: str = ""
    """Marks this run's shadow probe output (made once, on the first read)."""

    def _shadow(self, ctx: Context, user: str) -> dict[str, str]:
        if not self.nonce:
            self.nonce = secrets.token_hex(8)
        return read(ctx, ShadowState(user, self.nonce))

    def _account(self, ctx: Context) -> Account:
        user = str(self.user)
        uid = read(ctx, PasswdEntry(user))
        if uid is None:
            raise NotFound(f"no local account {user!r} on {ctx.host.name}")
        groups = read(ctx, Groups(user))
        state = self._shadow(ctx, user)
        return Account(
            user,
            uid,
            groups,
            state.get("status", "unknown"),
            as_int(state.get("lastchg"), -1),
            state.get("expire", ""),
            state.get("hash", ""),
            as_int(state.get("failures")),
            as_int(state.get("today")),
            read(ctx, SudoRules(user)),
        )

    def check(self, ctx: Context) -> Finding:
        self.refuse_file_for_given()
        account = self._account(ctx)
        self.before = account
        guard_privileged(ctx, account.name, account.privileged(), bool(self.allow_privileged))
        state = ", ".join(
            bit
            for bit in (
                "locked" if account.status == "locked" else "",
                f"{account.failures} failed login(s) counted" if account.failures else "",
                "no password" if account.status == "empty" else "",
                "must change at next login" if account.lastchg == 0 else "",
            )
            if bit
        )
        facts = {"account": account.name, "uid": account.uid, "locked": account.locked}
        return self.requested(ctx, account.name, account.locked, state, facts)

    def _secret(self, ctx: Context) -> tuple[Secret, bool]:
        if isinstance(self.password, Secret):
            value = self.password.reveal()
            if not value or any(ch in value for ch in "\r\n\x00"):
                raise ValidationError(
                    "the new password is empty or holds a line break (chpasswd reads one line)"
                )
            return self.password, False
        return self.generated(ctx, "generated password"), True

    def apply(self, ctx: Context) -> None:
        secret, generated = self._secret(ctx)
        user = self.before.name
        line = ctx.adopt(Secret(f"{user}:{secret.reveal()}\n", "chpasswd input"))
        ctx.change(cmd("chpasswd"), stdin=line, become=True)
        # From here on the account has the new password: hand it over whatever happens next.
        if generated:
            self.hand_over(ctx, user, secret)
        ctx.note(f"password of {user} reset; fingerprint {fingerprint(secret)}")
        if self.unlock:
            if self.before.failures:
                ctx.change(cmd("faillock", "--user", user, "--reset"), become=True)
            if (
                self._shadow(ctx, user).get("status") == "locked"
            ):  # chpasswd keeps a `!` prefix on some systems
                ctx.change(cmd("usermod", "-U", user), become=True)
        if self.expire:
            ctx.change(cmd("chage", "-d", "0", user), become=True)

    def verify(self, ctx: Context) -> Finding:
        account = self._account(ctx)
        problems = []
        if self.unlock and account.locked:
            problems.append("still locked")
        if account.hash_digest == self.before.hash_digest:
            problems.append("the password did not change")
        if self.expire and account.lastchg != 0:
            problems.append("not marked to change at next login")
        if not self.expire and account.lastchg != account.today:
            problems.append("the password-change date is not today")
        facts: dict[str, Any] = {
            "account": account.name,
            "locked": account.locked,
            "must_change": account.lastchg == 0,
        }
        if problems:
            return Finding.problem(f"{account.name}: {', '.join(problems)}", **facts)
        return Finding.healthy(
            f"password of {account.name} reset"
            + (", must change at next login" if self.expire else "")
            + (", unlocked" if self.unlock and self.before.locked else ""),
            **facts,
        )
