"""Directory accounts: Active Directory and OpenLDAP (ppolicy) over LDAP — status, unlock, reset,
enable/disable, group membership.

Every task runs on hosts of platform `active_directory` or `ldap` (transport `ldap`, see
docs/directory.md) through the DirectoryContext: names validated and escaped (RFC 4515/4514),
every operation recorded like a command, changes only in apply, secrets masked.

What each directory keeps where:
  - Active Directory: disabled = userAccountControl bit 0x2; locked = msDS-User-Account-
    Control-Computed bit 0x10 (lockoutTime > 0 and the lockout duration not over), unlocked by
    lockoutTime = 0; expired = accountExpires in the past; must change = pwdLastSet = 0; the
    password is unicodePwd (only over TLS); the password policy that applies is the user's
    msDS-ResultantPSO (a fine-grained policy) or the domain's.
  - OpenLDAP ppolicy: locked = pwdAccountLockedTime (a time); disabled = pwdAccountLockedTime
    000001010000Z (the overlay's "locked until an administrator unlocks": itops' choice for
    account.disable, as OpenLDAP has no disabled flag); expired = shadowExpire in the past; must
    change = pwdReset TRUE; the password is set with the Password Modify extended operation.
"""

from __future__ import annotations

import datetime
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from toolkit.errors import ChangeRefused, ToolkitError, ValidationError
from toolkit.remediation.accounts import (
    account_task,
    describe,
    membership_done,
    membership_needed,
    problems,
    refuse_privileged_group,
    status,
    toggle_needed,
    unlocked,
)
from toolkit.remediation.catalog import (
    Context,
    DirectoryContext,
    Entry,
    Finding,
    Param,
    Remediation,
    directory,
)
from toolkit.remediation.guards import guard_privileged
from toolkit.remediation.ldapsafe import (
    all_of,
    check_account,
    check_group,
    eq,
    in_chain,
    rdn_value,
)
from toolkit.remediation.passwords import PasswordReset, reset_task
from toolkit.secrets.credentials import Secret

PLATFORMS = {"active_directory", "ldap"}

# userAccountControl bits (MS-ADTS 2.2.16)
UAC = {
    0x0002: "disabled",
    0x0010: "locked",
    0x0020: "no password required",
    0x10000: "password never expires",
    0x800000: "password expired",
}
UAC_DISABLED = 0x0002
UAC_LOCKOUT = 0x0010
UAC_PASSWORD_EXPIRED = 0x800000
NEVER = (0, 0x7FFFFFFFFFFFFFFF)  # accountExpires: never
PPOLICY_PERMANENT = "000001010000Z"  # pwdAccountLockedTime: locked until an administrator unlocks
# primaryGroupID (a RID of the domain) of the privileged groups memberOf never lists as primary
PRIVILEGED_PRIMARY = {512: "Domain Admins", 518: "Schema Admins", 519: "Enterprise Admins"}

AD_ATTRS = (
    "sAMAccountName", "userPrincipalName", "userAccountControl", "lockoutTime", "accountExpires",
    "pwdLastSet", "badPasswordTime", "badPwdCount", "memberOf", "adminCount",
    "msDS-User-Account-Control-Computed", "msDS-ResultantPSO", "primaryGroupID",
)  # fmt: skip
LDAP_ATTRS = (
    "uid", "cn", "pwdAccountLockedTime", "pwdFailureTime", "pwdChangedTime", "pwdReset",
    "shadowExpire", "pwdPolicySubentry",
)  # fmt: skip


def uac_flags(value: int) -> list[str]:
    """The userAccountControl bits itops reports, by name."""
    return [name for bit, name in UAC.items() if value & bit]


def with_disabled(value: int, disabled: bool) -> int:
    """userAccountControl with the ACCOUNTDISABLE bit set or cleared, every other bit kept."""
    return value | UAC_DISABLED if disabled else value & ~UAC_DISABLED


def filetime(value: str) -> datetime.datetime | None:
    """An AD FILETIME (100 ns since 1601-01-01 UTC) → UTC datetime; None for 0 / never."""
    try:
        ticks = int(value)
    except (TypeError, ValueError):
        return None
    if ticks in NEVER or ticks <= 0:
        return None
    epoch = datetime.datetime(1601, 1, 1, tzinfo=datetime.UTC)
    try:
        return epoch + datetime.timedelta(microseconds=ticks // 10)
    except OverflowError:
        return None


def generalized(value: str) -> datetime.datetime | None:
    """LDAP GeneralizedTime (20261204152000Z, optional fraction) → UTC datetime."""
    text = value.strip().rstrip("Z").split(".")[0]
    try:
        return datetime.datetime.strptime(text, "%Y%m%d%H%M%S").replace(tzinfo=datetime.UTC)
    except ValueError:
        return None


def _int(value: str, default: int = 0) -> int:
    try:
        return int(value)
    except (TypeError, ValueError):
        return default


@dataclass(frozen=True)
class Account:
    """A directory account's state, from one read (`parse_account`)."""

    dn: str
    name: str
    kind: str
    disabled: bool
    locked: bool
    expired: bool
    must_change: bool
    password_set: datetime.datetime | None
    last_bad_password: datetime.datetime | None
    bad_count: int
    groups: tuple[str, ...]
    policy: str  # the password policy that applies (a PSO's DN on AD, if one)
    uac: int = 0
    raw_locked_time: str = ""
    primary_group: int = 0  # AD primaryGroupID (513: Domain Users)

    def problems(self) -> list[str]:
        return problems(vars(self))

    def privileged(self, privileged_groups: Sequence[str]) -> list[str]:
        wanted = {g.lower() for g in privileged_groups}
        return sorted(g for g in self.groups if g.lower() in wanted)

    def facts(self, now: datetime.datetime) -> dict[str, Any]:
        age = (now - self.password_set).days if self.password_set else None
        return {
            "account": self.name,
            "dn": self.dn,
            "locked": self.locked,
            "disabled": self.disabled,
            "expired": self.expired,
            "must_change": self.must_change,
            "password_age_days": age,
            "last_bad_password": self.last_bad_password.isoformat()
            if self.last_bad_password
            else None,
            "bad_password_count": self.bad_count,
            "groups": list(self.groups),
            **({"password_policy": self.policy} if self.policy else {}),
            **({"uac_flags": uac_flags(self.uac)} if self.kind == "active_directory" else {}),
        }


def parse_account(
    kind: str, entry: Entry, groups: Sequence[str], now: datetime.datetime
) -> Account:
    """A directory entry (AD_ATTRS or LDAP_ATTRS) → Account. Pure: unit-tested alone."""
    if kind == "active_directory":
        uac = _int(entry.first("userAccountControl"))
        computed = _int(entry.first("msDS-User-Account-Control-Computed"), -1)
        lockout = _int(entry.first("lockoutTime"))
        locked = bool(computed & UAC_LOCKOUT) if computed >= 0 else lockout > 0
        expires = filetime(entry.first("accountExpires"))
        pwd_last_set = entry.first("pwdLastSet")
        return Account(
            dn=entry.dn,
            name=entry.first("sAMAccountName") or entry.first("userPrincipalName"),
            kind=kind,
            disabled=bool(uac & UAC_DISABLED),
            locked=locked,
            expired=expires is not None and expires < now,
            must_change=pwd_last_set == "0"
            or (computed >= 0 and bool(computed & UAC_PASSWORD_EXPIRED)),
            password_set=filetime(pwd_last_set),
            last_bad_password=filetime(entry.first("badPasswordTime")),
            bad_count=_int(entry.first("badPwdCount")),
            groups=tuple(sorted(rdn_value(g) for g in groups)),
            policy=entry.first("msDS-ResultantPSO"),
            uac=uac,
            primary_group=_int(entry.first("primaryGroupID")),
        )
    locked_time = entry.first("pwdAccountLockedTime")
    shadow = entry.first("shadowExpire")
    today = (now - datetime.datetime(1970, 1, 1, tzinfo=datetime.UTC)).days
    failures = [t for t in (generalized(v) for v in entry.get("pwdFailureTime")) if t]
    return Account(
        dn=entry.dn,
        name=entry.first("uid"),
        kind=kind,
        disabled=locked_time == PPOLICY_PERMANENT,
        locked=bool(locked_time) and locked_time != PPOLICY_PERMANENT,
        expired=bool(shadow) and _int(shadow, 1 << 30) <= today,
        must_change=entry.first("pwdReset").upper() == "TRUE",
        password_set=generalized(entry.first("pwdChangedTime")),
        last_bad_password=max(failures) if failures else None,
        bad_count=len(failures),
        groups=tuple(sorted(groups)),
        policy=entry.first("pwdPolicySubentry"),
        raw_locked_time=locked_time,
    )


def read_account(ctx: DirectoryContext, name: str) -> Account:
    """Find the user and read its state (its groups: AD memberOf; OpenLDAP groupOfNames)."""
    if ctx.kind == "active_directory":
        entry = ctx.find_user(name, AD_ATTRS)
        groups: Sequence[str] = entry.get("memberOf")
    else:
        entry = ctx.find_user(name, LDAP_ATTRS)
        found = ctx.search(
            "(&" + eq("objectClass", "groupOfNames") + eq("member", entry.dn) + ")", ["cn"]
        )
        groups = [g.first("cn") for g in found]
    return parse_account(ctx.kind, entry, groups, now())


def privileged_memberships(ctx: DirectoryContext, account: Account) -> list[str]:
    """The privileged groups (ctx.privileged_groups) the account is in. On Active Directory
    nested groups count (a member of a group that is in Domain Admins is a Domain Admin: the
    in-chain rule) and so does the primary group, which memberOf never lists."""
    found = set(account.privileged(ctx.privileged_groups))
    if ctx.kind == "active_directory":
        found.update(privileged_chain(ctx, account.dn))
        if account.primary_group in PRIVILEGED_PRIMARY:
            found.add(PRIVILEGED_PRIMARY[account.primary_group])
    return sorted(found)


def privileged_chain(ctx: DirectoryContext, dn: str) -> list[str]:
    """Active Directory: the privileged groups `dn` (a user or a group) is in, nested or not."""
    wanted = {g.lower() for g in ctx.privileged_groups}
    groups = ctx.search(all_of(eq("objectClass", "group"), in_chain("member", dn)),
                        ["cn", "sAMAccountName"])  # fmt: skip
    return [
        g.first("cn") or rdn_value(g.dn)
        for g in groups
        if {g.first("cn").lower(), g.first("sAMAccountName").lower()} & wanted
    ]


def now() -> datetime.datetime:
    return datetime.datetime.now(datetime.UTC)


class AccountTask(Remediation):
    """Base of the directory account tasks: the user they act on."""

    user = Param(
        str,
        required=True,
        check=check_account,
        help="the account: sAMAccountName or UPN (Active Directory), uid (OpenLDAP)",
    )

    before: Account
    """The account as check found it."""

    def _read(self, ctx: Context) -> tuple[DirectoryContext, Account]:
        dctx = directory(ctx)
        return dctx, read_account(dctx, str(self.user))


# --------------------------------------------------------------------------- status


@account_task("account.status", PLATFORMS)
class AccountStatus(AccountTask):
    """Read a directory account (Active Directory or OpenLDAP): whether it is locked out,
    disabled or expired, must change its password, when it last had a bad password and how many,
    the password's age, the password policy that applies and its group memberships. Changes
    nothing: run it with --check; a problem comes back as would-fix with the evidence in the
    facts (the directory branch of the password-locked runbook starts here).

    Example:
        itops fix account.status dc-01 -p user=jdoe --check
        itops fix account.status dc-01 -p user=jdoe@corp.example --check --json
    """

    def check(self, ctx: Context) -> Finding:
        _, account = self._read(ctx)
        return status(account.facts(now()))

    def apply(self, ctx: Context) -> None:
        ctx.note("account.status only reads; see the findings")


# --------------------------------------------------------------------------- unlock


@account_task("account.unlock", PLATFORMS)
class AccountUnlock(AccountTask):
    """Unlock a directory account that bad passwords locked out: Active Directory lockoutTime
    = 0, OpenLDAP ppolicy: pwdAccountLockedTime removed (the overlay clears the failure
    times). A disabled account (userAccountControl; ppolicy's permanent lock) is not unlocked by
    this: that is account.enable. Verify reads the account back: not locked.

    Example:
        itops fix account.unlock dc-01 -p user=jdoe --ticket INC-1042
        itops fix account.unlock dc-01 -p user=jdoe --check
    """

    def check(self, ctx: Context) -> Finding:
        _, account = self._read(ctx)
        self.before = account
        facts = account.facts(now())
        if not account.locked:
            extra = " (it is disabled: account.enable)" if account.disabled else ""
            return Finding.healthy(f"{account.name} is not locked{extra}", **facts)
        return Finding.problem(describe(facts), **facts)

    def apply(self, ctx: Context) -> None:
        dctx = directory(ctx)
        unlock(dctx, self.before)
        ctx.note(f"unlocked {self.before.name}")

    def verify(self, ctx: Context) -> Finding:
        _, account = self._read(ctx)
        return unlocked(account.facts(now()))


def unlock(ctx: DirectoryContext, account: Account) -> None:
    if ctx.kind == "active_directory":
        ctx.modify(account.dn, [("replace", "lockoutTime", ["0"])])
    else:
        # (the overlay drops pwdFailureTime with the lock: it is not user-modifiable)
        ctx.modify(account.dn, [("delete", "pwdAccountLockedTime", None)])


# --------------------------------------------------------------------------- enable / disable


class _Toggle(AccountTask):
    enable: bool = True

    def check(self, ctx: Context) -> Finding:
        _, account = self._read(ctx)
        self.before = account
        return toggle_needed(account.facts(now()), self.enable)

    def apply(self, ctx: Context) -> None:
        dctx = directory(ctx)
        account = self.before
        if dctx.kind == "active_directory":
            value = with_disabled(account.uac, not self.enable)
            dctx.modify(account.dn, [("replace", "userAccountControl", [str(value)])])
        elif self.enable:
            dctx.modify(account.dn, [("delete", "pwdAccountLockedTime", [PPOLICY_PERMANENT])])
        else:
            dctx.modify(account.dn, [("replace", "pwdAccountLockedTime", [PPOLICY_PERMANENT])])
        ctx.note(f"{'enabled' if self.enable else 'disabled'} {account.name}")

    def verify(self, ctx: Context) -> Finding:
        _, account = self._read(ctx)
        facts = account.facts(now())
        if account.disabled == self.enable:
            return Finding.problem(
                f"{account.name} is still {'disabled' if account.disabled else 'enabled'}", **facts
            )
        return Finding.healthy(
            f"{account.name} is {'enabled' if self.enable else 'disabled'}", **facts
        )


@account_task("account.enable", PLATFORMS)
class AccountEnable(_Toggle):
    """Enable a directory account: Active Directory clears userAccountControl's ACCOUNTDISABLE
    bit (0x2, every other bit kept); OpenLDAP removes ppolicy's permanent lock
    (pwdAccountLockedTime 000001010000Z, itops' disabled mark). A lockout by bad passwords is
    left as it is (account.unlock). Verify reads the account back.

    Example:
        itops fix account.enable dc-01 -p user=jdoe --ticket INC-1042
    """

    enable = True


@account_task("account.disable", PLATFORMS)
class AccountDisable(_Toggle):
    """Disable a directory account: Active Directory sets userAccountControl's ACCOUNTDISABLE
    bit (0x2); OpenLDAP sets ppolicy's pwdAccountLockedTime to 000001010000Z (locked until an
    administrator unlocks: OpenLDAP has no disabled flag). Verify reads the account back.

    Example:
        itops fix account.disable dc-01 -p user=leaver --ticket CHG-2001
    """

    enable = False


# --------------------------------------------------------------------------- password reset


class PasswordRefused(ToolkitError):
    """The directory refused the new password (its password policy); nothing was changed."""


@reset_task(
    "account.reset-password",
    PLATFORMS,
    "Reset a directory account's password (shown once), must change at next logon",
)
class AccountResetPassword(PasswordReset, AccountTask):
    """Reset a directory account's password as an administrator, unlock it, and by default make
    the user change it at next logon (Active Directory pwdLastSet = 0; OpenLDAP ppolicy pwdReset
    TRUE).

    The new password comes from a reference (-p password=env:VAR, prompt, stdin, file:,
    keyring:) or is generated (length characters of the classes asked for) and shown to the
    engineer once (stderr, or a 0600 file with output_file); it is masked in every output, log
    and ticket-log record. It is sent only over an encrypted connection (Active Directory
    unicodePwd; OpenLDAP's Password Modify operation): a directory reached with ldap_tls: none
    is refused. A password the directory refuses is a failure naming the policy that applies
    (the user's fine-grained password policy, msDS-ResultantPSO, or the domain's), and nothing
    changed. Members of privileged groups (Domain Admins, Enterprise Admins, Administrators,
    Schema Admins, [directory] privileged_groups; on Active Directory through nested groups and
    the primary group too) are refused unless allow_privileged=true on a P1/P2 ticket, which
    also needs a second operator's approval. A disabled or expired account is refused, nothing
    changed: a reset never re-enables an account (account.enable does).

    Verify binds as the user with the new password (Active Directory answers "must change" to
    a right password when the flag is set: that proves it too), then reads the flags back.

    Example:
        itops fix account.reset-password dc-01 -p user=jdoe --ticket INC-1042
        itops fix account.reset-password dc-01 -p user=jdoe -p password=prompt -p expire=false --ticket I-1
        itops fix account.reset-password dc-01 -p user=jdoe -p output_file=/root/jdoe.pw --ticket INC-1042
    """

    # (its parameters: PasswordReset's)

    secret: Secret | None = None
    """The new password (set by apply, proved by verify's bind)."""

    def check(self, ctx: Context) -> Finding:
        self.refuse_file_for_given()
        dctx, account = self._read(ctx)
        self.before = account
        if not dctx.encrypted:
            raise ToolkitError(
                f"{ctx.host.name} is reached over plain LDAP: refusing to send a password "
                "in clear text",
                hint="set ldap_tls: ldaps (or starttls) for this directory",
            )
        if account.disabled or account.expired:
            # (ppolicy would even drop a disabled account's permanent lock with a new password)
            state = "disabled" if account.disabled else "expired"
            raise ChangeRefused(
                f"{account.name} is {state}: a new password would not let it log in, and a "
                "reset never re-enables an account; nothing was changed",
                hint="account.enable for a disabled account (its own request); an expired one "
                "needs its expiry extended first",
            )
        allow = bool(self.allow_privileged)
        guard_privileged(ctx, account.name, privileged_memberships(dctx, account), allow)
        state = ", ".join(account.problems())
        return self.requested(ctx, account.name, account.locked, state, account.facts(now()))

    def _new_secret(self, ctx: Context) -> tuple[Secret, bool]:
        if isinstance(self.password, Secret):
            if not self.password.reveal() or "\x00" in self.password.reveal():
                raise ValidationError("the new password is empty or holds a NUL")
            return self.password, False
        return self.generated(ctx, "new password"), True

    def apply(self, ctx: Context) -> None:
        dctx = directory(ctx)
        account = self.before
        secret, generated = self._new_secret(ctx)
        try:
            dctx.set_password(account.dn, secret)
        except ToolkitError as exc:
            if getattr(exc, "code", None) in (19, 53):  # constraint violation, unwilling
                raise PasswordRefused(
                    f"{dctx.host.name} refused the new password for {account.name}: "
                    f"{getattr(exc, 'info', '') or exc.message}; policy: {policy(dctx, account)}",
                    hint="the password was not changed; give one the policy accepts, or let "
                    "itops generate one (-p length=N)",
                ) from None
            raise
        self.secret = secret
        if generated:
            self.hand_over(ctx, account.name, secret)
        ctx.note(f"password of {account.name} reset")
        # (ppolicy unlocks an account whose password an administrator sets: read again)
        if (
            self.unlock
            and account.locked
            and (dctx.kind == "active_directory" or read_account(dctx, account.name).locked)
        ):
            unlock(dctx, account)
        if dctx.kind == "active_directory":
            # pwdLastSet: 0 = must change at next logon; -1 = "now" (the flag cleared)
            dctx.modify(account.dn, [("replace", "pwdLastSet", ["0" if self.expire else "-1"])])
        elif self.expire:
            dctx.modify(account.dn, [("replace", "pwdReset", ["TRUE"])])
        else:
            after = read_account(dctx, account.name)
            if after.must_change:
                dctx.modify(account.dn, [("delete", "pwdReset", None)])

    def verify(self, ctx: Context) -> Finding:
        dctx = directory(ctx)
        problems = []
        bind = ""
        if self.secret is not None:
            bind = dctx.bind_check(self.before.dn, self.secret)
            proved = ("ok", "must-change") if self.expire else ("ok",)
            if bind not in proved:
                problems.append(f"a bind with the new password failed ({bind})")
        account = read_account(dctx, self.before.name)
        if self.unlock and account.locked:
            problems.append("still locked")
        if self.expire and not account.must_change:
            problems.append("not marked to change at next logon")
        if not self.expire and account.must_change:
            problems.append("still marked to change at next logon")
        facts = {**account.facts(now()), "bind_check": bind}
        if problems:
            return Finding.problem(f"{account.name}: {', '.join(problems)}", **facts)
        return Finding.healthy(
            f"password of {account.name} reset, a bind with it succeeded"
            + (" (must change at next logon)" if self.expire else ""),
            **facts,
        )


def policy(ctx: DirectoryContext, account: Account) -> str:
    """The password policy that applies to the account, in words (for a refused password)."""
    try:
        if ctx.kind == "active_directory" and account.policy:
            # a PSO: named by its DN; its settings where the service account may read them
            # (by default only Domain Admins read the Password Settings Container)
            name = f"fine-grained password policy {rdn_value(account.policy)!r}"
            found = ctx.search(
                "(objectClass=*)",
                ["cn", "msDS-MinimumPasswordLength", "msDS-PasswordComplexityEnabled",
                 "msDS-PasswordHistoryLength"],
                base=account.policy, scope="base",
            )  # fmt: skip
            if found and found[0].first("msDS-MinimumPasswordLength"):
                p = found[0]
                return (
                    f"{name} (minimum length {p.first('msDS-MinimumPasswordLength')}, "
                    f"complexity {p.first('msDS-PasswordComplexityEnabled').lower()}, history "
                    f"{p.first('msDS-PasswordHistoryLength')})"
                )
            return f"{name} ({account.policy})"
        if ctx.kind == "active_directory":
            found = ctx.search(
                "(objectClass=domain)",
                ["minPwdLength", "pwdProperties", "pwdHistoryLength"],
                base=ctx.base_dn,
                scope="base",
            )
            if found:
                d = found[0]
                complexity = "on" if _int(d.first("pwdProperties")) & 1 else "off"
                return (
                    f"the domain's password policy (minimum length {d.first('minPwdLength')}, "
                    f"complexity {complexity}, history {d.first('pwdHistoryLength')})"
                )
        if account.policy:
            return f"password policy {account.policy}"
    except ToolkitError:
        pass
    return "the directory's password policy"


# --------------------------------------------------------------------------- groups


class _Membership(AccountTask):
    add: bool = True
    group = Param(str, required=True, kind="text", check=check_group, help="the group's name (cn)")
    allow_privileged = Param(
        bool, default=False, help="allow changing a privileged group (bound into the approval)"
    )

    group_dn: str = ""
    """The group's DN (found by check)."""

    def _member(self, ctx: DirectoryContext, user_dn: str) -> bool:
        return bool(ctx.search(eq("member", user_dn), ["1.1"], base=self.group_dn, scope="base"))

    def check(self, ctx: Context) -> Finding:
        dctx, account = self._read(ctx)
        self.before = account
        group = dctx.find_group(str(self.group), ["cn", "sAMAccountName"])
        self.group_dn = group.dn
        names = {group.first("cn").lower(), group.first("sAMAccountName").lower()} - {""}
        privileged = {g.lower() for g in dctx.privileged_groups}
        # on AD a group nested in a privileged one makes its members privileged too
        within = privileged_chain(dctx, group.dn) if dctx.kind == "active_directory" else []
        if (names & privileged or within) and not self.allow_privileged:
            refuse_privileged_group(
                f"{group.first('cn')} on {ctx.host.name}", account.name, self.add, within
            )
        member = self._member(dctx, account.dn)
        return membership_needed(account.name, group.first("cn"), member, self.add)

    def apply(self, ctx: Context) -> None:
        dctx = directory(ctx)
        op = "add" if self.add else "delete"
        dctx.modify(self.group_dn, [(op, "member", [self.before.dn])])
        word = "added to" if self.add else "removed from"
        ctx.note(f"{self.before.name} {word} {rdn_value(self.group_dn)}")

    def verify(self, ctx: Context) -> Finding:
        dctx = directory(ctx)
        member = self._member(dctx, self.before.dn)
        return membership_done(self.before.name, rdn_value(self.group_dn), member, self.add)


@account_task("account.group-add", PLATFORMS)
class GroupAdd(_Membership):
    """Add a directory account to a group (its member attribute): a permission change, so every
    run needs a second operator's approval. Privileged groups (Domain Admins, Enterprise Admins,
    Administrators, Schema Admins, and [directory] privileged_groups of itops.toml) are refused
    unless allow_privileged=true, which the approval then binds. Verify reads the group back.

    Example:
        itops fix account.group-add dc-01 -p user=jdoe -p group='VPN Users' --ticket REQ-2001
    """

    add = True


@account_task("account.group-remove", PLATFORMS)
class GroupRemove(_Membership):
    """Remove a directory account from a group: a permission change, so every run needs a
    second operator's approval; privileged groups are refused unless allow_privileged=true (see
    account.group-add). Verify reads the group back.

    Example:
        itops fix account.group-remove dc-01 -p user=jdoe -p group='VPN Users' --ticket REQ-2002
    """

    add = False
