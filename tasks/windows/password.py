"""Password resets for local Windows accounts and Active Directory accounts."""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, ClassVar

from toolkit.errors import NotFound, ToolkitError
from toolkit.remediation.catalog import Context, Finding, Param
from toolkit.remediation.facts import read
from toolkit.remediation.guards import guard_privileged
from toolkit.remediation.passwords import PrivilegedReset, generate_password, reset_task
from toolkit.remediation.quoting import Command, StdinSecret, ps_script
from toolkit.remediation.windows import (
    ACCOUNT_NAME,
    JsonFact,
    as_int,
    change_json,
    strings,
    text,
)
from toolkit.secrets.credentials import Secret

# Built-in accounts that are privileged whatever their groups: Administrator (500), krbtgt (502).
PRIVILEGED_RIDS = {500: "the built-in Administrator", 502: "krbtgt"}
_SID = re.compile(r"S-1-5-21(-[0-9]+){3,4}")

LOCAL_STATE = r"""$ErrorActionPreference = 'Stop'
$name = {user}
$u = @(Get-LocalUser | Where-Object {{ $_.Name -eq $name }})[0]
if (-not $u) {{ ConvertTo-Json -Compress -InputObject @{{ found = $false }}; exit 0 }}
$w = @(Get-CimInstance -ClassName Win32_UserAccount -Filter 'LocalAccount = TRUE' | Where-Object {{ $_.SID -eq $u.SID.Value }})[0]
try {{ $admin = [bool](@(Get-LocalGroupMember -SID 'S-1-5-32-544' | Where-Object {{ $_.SID.Value -eq $u.SID.Value }}).Count) }} catch {{ $admin = $null }}
$a = [ADSI]('WinNT://./' + $u.Name + ',user')
$set = $null; if ($u.PasswordLastSet) {{ $set = $u.PasswordLastSet.ToUniversalTime().ToString('o') }}
ConvertTo-Json -Compress -InputObject @{{ found = $true; name = [string]$u.Name; sid = [string]$u.SID.Value; enabled = [bool]$u.Enabled; locked = [bool]$w.Lockout; admin = $admin; password_last_set = $set; must_change = ([int]$a.PasswordExpired.Value -eq 1) }}"""

AD_STATE = r"""$ErrorActionPreference = 'Stop'
Import-Module ActiveDirectory
try {{ $u = Get-ADUser -Identity {user} -Properties LockedOut, Enabled, pwdLastSet, AdminCount }}
catch [Microsoft.ActiveDirectory.Management.ADIdentityNotFoundException] {{ ConvertTo-Json -Compress -InputObject @{{ found = $false }}; exit 0 }}
$dom = (Get-ADDomain).DomainSID.Value
$named = @{{ ($dom + '-512') = 'Domain Admins'; ($dom + '-518') = 'Schema Admins'; ($dom + '-519') = 'Enterprise Admins'; 'S-1-5-32-544' = 'Administrators'; 'S-1-5-32-548' = 'Account Operators'; 'S-1-5-32-549' = 'Server Operators'; 'S-1-5-32-551' = 'Backup Operators' }}
$groups = @((Get-ADUser -Identity $u.DistinguishedName -Properties tokenGroups).tokenGroups | ForEach-Object {{ $named[$_.Value] }} | Where-Object {{ $_ }})
ConvertTo-Json -Compress -InputObject @{{ found = $true; name = [string]$u.SamAccountName; sid = [string]$u.SID.Value; enabled = [bool]$u.Enabled; locked = [bool]$u.LockedOut; groups = $groups; protected = ($u.AdminCount -eq 1); password_last_set = [string]$u.pwdLastSet; must_change = ($u.pwdLastSet -eq 0) }}"""

# The secret is assigned on a line of its own: an error elsewhere echoes only `$pw`.
LOCAL_RESET = r"""$ErrorActionPreference = 'Stop'
$pw = {password}
$sid = {sid}
Set-LocalUser -SID $sid -Password $pw
$a = [ADSI]('WinNT://./' + (Get-LocalUser -SID $sid).Name + ',user')
if ({unlock} -and $a.IsAccountLocked) {{ $a.IsAccountLocked = $false; $a.SetInfo() }}
if ({expire}) {{ $a.PasswordExpired = 1; $a.SetInfo() }}
ConvertTo-Json -Compress -InputObject @{{ reset = $true }}"""

AD_RESET = r"""$ErrorActionPreference = 'Stop'
Import-Module ActiveDirectory
$pw = {password}
$sid = {sid}
Set-ADAccountPassword -Identity $sid -Reset -NewPassword $pw
if ({unlock}) {{ Unlock-ADAccount -Identity $sid }}
if ({expire}) {{ Set-ADUser -Identity $sid -ChangePasswordAtLogon $true }}
ConvertTo-Json -Compress -InputObject @{{ reset = $true }}"""


@dataclass(frozen=True)
class WindowsAccount:
    """An account as LOCAL_STATE / AD_STATE read it."""

    name: str
    sid: str
    enabled: bool
    locked: bool
    groups: tuple[str, ...]  # the privileged groups AD_STATE named (tokenGroups)
    admin: bool | None  # local: in Administrators (None: the membership could not be read)
    protected: bool  # AD: adminCount=1
    password_last_set: str
    must_change: bool

    def privileged(self) -> list[str]:
        """Why the account is privileged (none: an ordinary account)."""
        groups = list(self.groups)
        if self.admin is True:
            groups.append("Administrators")
        elif self.admin is None:
            groups.append("Administrators (membership could not be read)")
        if self.protected:
            groups.append("protected accounts (adminCount=1)")
        rid = as_int(self.sid.rsplit("-", 1)[-1], -1)
        if rid in PRIVILEGED_RIDS:
            groups.append(PRIVILEGED_RIDS[rid])
        return sorted(set(groups))


@dataclass(frozen=True)
class AccountState(JsonFact["WindowsAccount | None"]):
    """A local account (scope local) or an AD account (scope ad): None when there is none."""

    scope: str
    user: str
    what: ClassVar[str] = "account state"

    def command(self) -> Command:
        return ps_script(AD_STATE if self.scope == "ad" else LOCAL_STATE, user=self.user)

    def value(self, data: Any) -> WindowsAccount | None:
        if not isinstance(data, Mapping) or not data.get("found"):
            return None
        if not _SID.fullmatch(text(data.get("sid"))):
            raise ToolkitError(f"unexpected SID {data.get('sid')!r} for {self.user!r}")
        # AD_STATE has no admin key (its groups say it); LOCAL_STATE's null: it was unreadable
        admin: bool | None = False
        if "admin" in data:
            admin = None if data["admin"] is None else data["admin"] is True
        return WindowsAccount(
            name=text(data.get("name")),
            sid=text(data.get("sid")),
            enabled=bool(data.get("enabled")),
            locked=bool(data.get("locked")),
            groups=tuple(strings(data.get("groups"))),
            admin=admin,
            protected=bool(data.get("protected")),
            password_last_set=text(data.get("password_last_set")),
            must_change=bool(data.get("must_change")),
        )


@reset_task(
    "password.reset",
    {"windows"},
    "Reset a local or Active Directory account's password, unlock it, force a change",
)
class ResetPassword(PrivilegedReset):
    """Reset a password: a local account (Set-LocalUser) on the target host, or, with scope=ad, an
    Active Directory account (Set-ADAccountPassword -Reset, Unlock-ADAccount,
    -ChangePasswordAtLogon) from a management host that has the ActiveDirectory module.

    The new password comes from a reference (-p password=env:VAR or prompt) or is generated
    (length characters). It reaches the host only on the command's stdin (never its command line,
    which process auditing logs) and is read into a SecureString; it is never echoed, and is
    masked in output, logs and the ticket log. Members of Administrators,
    Domain/Enterprise/Schema Admins, Account/Server/Backup Operators, protected (adminCount=1)
    and built-in accounts are refused unless allow_privileged=true.

    Example:
        itops fix password.reset ws-042 -p user=jdoe -p password=prompt --ticket INC-1042
        itops fix password.reset mgmt-01 -p scope=ad -p user=jdoe -p password=env:NEW_PW --ticket INC-1042
        itops fix password.reset ws-042 -p user=jdoe --check
    """

    user = Param(str, required=True, kind="text", pattern=ACCOUNT_NAME, help="account name")
    password = Param(str, secret=True, help="new password reference (default: generated)")
    scope = Param(str, default="local", choices=("local", "ad"), help="local account or AD")
    length = Param(int, default=20, minimum=12, maximum=128, help="generated password length")
    expire = Param(bool, default=True, help="the user must change it at next logon")
    unlock = Param(bool, default=True, help="unlock the account if locked out")
    allow_privileged = Param(
        bool, default=False, help="allow resetting an administrative account (P1/P2 ticket only)"
    )

    before: WindowsAccount
    """The account as check found it: apply resets it by SID, verify compares against it."""
    generated: bool = False
    """Whether apply generated the new password (verify hands it to the operator, masked)."""
    secret: Secret
    """The new password apply set (masked everywhere)."""

    def _state(self, ctx: Context) -> WindowsAccount:
        account = read(ctx, AccountState(str(self.scope), str(self.user)))
        if account is None:
            where = "in Active Directory" if self.scope == "ad" else f"on {ctx.host.name}"
            raise NotFound(f"no account {self.user!r} {where}")
        return account

    def check(self, ctx: Context) -> Finding:
        account = self.before = self._state(ctx)
        guard_privileged(ctx, account.name, account.privileged(), bool(self.allow_privileged))
        state = ", ".join(
            bit
            for bit in (
                "locked out" if account.locked else "",
                "" if account.enabled else "disabled",
            )
            if bit
        )
        where = "AD" if self.scope == "ad" else "local"
        return Finding.problem(
            f"reset requested for {where} account {account.name}"
            + (f" ({state})" if state else ""),
            account=account.name,
            locked=account.locked,
            enabled=account.enabled,
        )

    def apply(self, ctx: Context) -> None:
        secret = self.password
        self.generated = secret is None
        if not isinstance(secret, Secret):
            secret = ctx.adopt(Secret(generate_password(int(self.length)), "generated password"))
        self.secret = secret
        template = AD_RESET if self.scope == "ad" else LOCAL_RESET
        password = StdinSecret(secret)  # on stdin: a command line is logged by process auditing
        script = ps_script(
            template,
            password=password,
            sid=self.before.sid,
            unlock=bool(self.unlock),
            expire=bool(self.expire),
        )
        done = change_json(ctx, script, "password reset", stdin=ctx.adopt(password.stdin()))
        if not isinstance(done, Mapping) or not done.get("reset"):
            raise ToolkitError("the password reset did not confirm")
        what = "unlocked and " if self.unlock and self.before.locked else ""
        ctx.note(f"{what}reset the password of {self.before.name or self.user}")

    def verify(self, ctx: Context) -> Finding:
        account = self._state(ctx)
        problems = []
        if self.unlock and account.locked:
            problems.append("still locked out")
        changed = account.password_last_set != self.before.password_last_set
        if self.expire and not account.must_change:
            problems.append("not marked to change at next logon")
        if not self.expire and not changed:
            problems.append("password-last-set time did not change")
        facts: dict[str, Any] = {"account": account.name, "must_change": account.must_change}
        if self.generated:
            # Masked in every record (a Secret renders as ********); the operator gets it from
            # the run's result object, never from the ticket log.
            facts["generated_password"] = self.secret
        if problems:
            return Finding.problem(f"{account.name}: {', '.join(problems)}", **facts)
        return Finding.healthy(
            f"password of {account.name} reset"
            + (", must change at next logon" if self.expire else "")
            + (", unlocked" if self.unlock and self.before.locked else ""),
            **facts,
        )
