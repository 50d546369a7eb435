"""Directory accounts from the Windows side: the ActiveDirectory PowerShell module over WinRM.

The alternative to the LDAP tasks (tasks/directory.py) where a workspace reaches its domain only
through a Windows management host with RSAT (`Import-Module ActiveDirectory`): run against that
host, `account.status`, `account.unlock`, `account.enable`, `account.disable` and
`account.group-add|remove` act on the domain account named by `user`. The name is validated (sAMAccountName or UPN) and reaches
PowerShell only as a single-quoted literal; a UPN is looked up with `-Filter 'UserPrincipalName
-eq $name'` (the module reads the variable: no filter text is built from it). Changes name the
account by the SID check found. Password resets from this side are `password.reset scope=ad`
(tasks/windows/password.py).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, ClassVar

from toolkit.errors import NotFound
from toolkit.remediation.accounts import (
    account_task,
    describe,
    membership_done,
    membership_needed,
    refuse_privileged_group,
    status,
    toggle_needed,
    unlocked,
)
from toolkit.remediation.catalog import Context, Finding, Param, Remediation
from toolkit.remediation.facts import read
from toolkit.remediation.ldapsafe import check_account, check_group
from toolkit.remediation.quoting import Command, ps_script
from toolkit.remediation.windows import JsonFact, change_json, strings, text

AD_ACCOUNT = r"""$ErrorActionPreference = 'Stop'
Import-Module ActiveDirectory
$name = {user}
$props = 'LockedOut', 'Enabled', 'AccountExpirationDate', 'pwdLastSet', 'PasswordLastSet', 'LastBadPasswordAttempt', 'badPwdCount', 'MemberOf', 'msDS-ResultantPSO'
if ($name.Contains('@')) {{ $u = @(Get-ADUser -Filter 'UserPrincipalName -eq $name' -Properties $props)[0] }}
else {{ try {{ $u = Get-ADUser -Identity $name -Properties $props }} catch [Microsoft.ActiveDirectory.Management.ADIdentityNotFoundException] {{ $u = $null }} }}
if (-not $u) {{ ConvertTo-Json -Compress -InputObject @{{ found = $false }}; exit 0 }}
function utc($t) {{ if ($t) {{ $t.ToUniversalTime().ToString('o') }} else {{ $null }} }}
$expires = $u.AccountExpirationDate
$groups = @($u.MemberOf | ForEach-Object {{ ($_ -split '(?<!\\),')[0] -replace '^CN=', '' }})
ConvertTo-Json -Compress -InputObject @{{ found = $true; name = [string]$u.SamAccountName; dn = [string]$u.DistinguishedName; sid = [string]$u.SID.Value; enabled = [bool]$u.Enabled; locked = [bool]$u.LockedOut; expired = [bool]($expires -and $expires -lt (Get-Date)); must_change = ($u.pwdLastSet -eq 0); password_last_set = (utc $u.PasswordLastSet); last_bad_password = (utc $u.LastBadPasswordAttempt); bad_count = [int]$u.badPwdCount; groups = $groups; pso = [string]$u.'msDS-ResultantPSO' }}"""

AD_CHANGE = r"""$ErrorActionPreference = 'Stop'
Import-Module ActiveDirectory
$sid = {sid}
{verb} -Identity $sid
ConvertTo-Json -Compress -InputObject @{{ done = $true }}"""

# one script per cmdlet (a fixed word in code, never a value)
CHANGES = {
    verb: AD_CHANGE.replace("{verb}", verb)
    for verb in ("Unlock-ADAccount", "Enable-ADAccount", "Disable-ADAccount")
}


@dataclass(frozen=True)
class DomainAccount(JsonFact["dict[str, Any] | None"]):
    """A domain account's state from Get-ADUser (None when there is no such account)."""

    user: str
    what: ClassVar[str] = "Get-ADUser"

    def command(self) -> Command:
        return ps_script(AD_ACCOUNT, user=self.user)

    def value(self, data: Any) -> dict[str, Any] | None:
        if not isinstance(data, dict) or not data.get("found"):
            return None
        return {
            "account": text(data.get("name")),
            "dn": text(data.get("dn")),
            "sid": text(data.get("sid")),
            "locked": bool(data.get("locked")),
            "disabled": not data.get("enabled", True),
            "expired": bool(data.get("expired")),
            "must_change": bool(data.get("must_change")),
            "password_last_set": data.get("password_last_set"),
            "last_bad_password": data.get("last_bad_password"),
            "bad_password_count": int(data.get("bad_count") or 0),
            "groups": sorted(strings(data.get("groups"))),
            **({"password_policy": text(data["pso"])} if data.get("pso") else {}),
        }


def read_account(ctx: Context, user: str) -> dict[str, Any]:
    facts = read(ctx, DomainAccount(user))
    if facts is None:
        raise NotFound(f"no domain account {user!r} (asked on {ctx.host.name})")
    return facts


class _WindowsAccount(Remediation):
    user = Param(
        str, required=True, check=check_account, help="the domain account: sAMAccountName or UPN"
    )

    before: dict[str, Any]
    """The account as check found it (its SID names it in apply)."""

    def _change(self, ctx: Context, verb: str) -> None:
        change_json(ctx, ps_script(CHANGES[verb], sid=self.before["sid"]), verb)


@account_task("account.status", {"windows"})
class WindowsAccountStatus(_WindowsAccount):
    """From a Windows management host with the ActiveDirectory module: the domain account's
    state (locked, disabled, expired, must change, last bad password, groups, its PSO). Read-only.

    Example:
        itops fix account.status mgmt-01 -p user=jdoe --check
    """

    def check(self, ctx: Context) -> Finding:
        return status(read_account(ctx, str(self.user)))

    def apply(self, ctx: Context) -> None:
        ctx.note("account.status only reads; see the findings")


@account_task("account.unlock", {"windows"})
class WindowsAccountUnlock(_WindowsAccount):
    """From a Windows management host: Unlock-ADAccount, then Get-ADUser reads it back.

    Example:
        itops fix account.unlock mgmt-01 -p user=jdoe --ticket INC-1042
    """

    def check(self, ctx: Context) -> Finding:
        self.before = facts = read_account(ctx, str(self.user))
        if not facts["locked"]:
            return Finding.healthy(f"{facts['account']} is not locked", **facts)
        return Finding.problem(describe(facts), **facts)

    def apply(self, ctx: Context) -> None:
        self._change(ctx, "Unlock-ADAccount")
        ctx.note(f"unlocked {self.before['account']}")

    def verify(self, ctx: Context) -> Finding:
        return unlocked(read_account(ctx, str(self.user)))


class _WindowsToggle(_WindowsAccount):
    enable = True

    def check(self, ctx: Context) -> Finding:
        self.before = facts = read_account(ctx, str(self.user))
        return toggle_needed(facts, self.enable)

    def apply(self, ctx: Context) -> None:
        self._change(ctx, "Enable-ADAccount" if self.enable else "Disable-ADAccount")
        ctx.note(f"{'enabled' if self.enable else 'disabled'} {self.before['account']}")

    def verify(self, ctx: Context) -> Finding:
        facts = read_account(ctx, str(self.user))
        if facts["disabled"] == self.enable:
            return Finding.problem(f"{facts['account']} did not change", **facts)
        word = "enabled" if self.enable else "disabled"
        return Finding.healthy(f"{facts['account']} is {word}", **facts)


@account_task("account.enable", {"windows"})
class WindowsAccountEnable(_WindowsToggle):
    """From a Windows management host: Enable-ADAccount, read back with Get-ADUser.

    Example:
        itops fix account.enable mgmt-01 -p user=jdoe --ticket INC-1042
    """

    enable = True


@account_task("account.disable", {"windows"})
class WindowsAccountDisable(_WindowsToggle):
    """From a Windows management host: Disable-ADAccount, read back with Get-ADUser.

    Example:
        itops fix account.disable mgmt-01 -p user=leaver --ticket CHG-2001
    """

    enable = False


# --------------------------------------------------------------------------- groups

# The group and whether the account is in it (by the account's memberOf, which also works for
# groups Get-ADGroupMember cannot list). Privileged: the domain's and the built-in
# administrative groups, by well-known SID, so a renamed or localized group is still caught.
AD_GROUP = r"""$ErrorActionPreference = 'Stop'
Import-Module ActiveDirectory
$gname = {group}
$sid = {sid}
try {{ $g = Get-ADGroup -Identity $gname }} catch [Microsoft.ActiveDirectory.Management.ADIdentityNotFoundException] {{ ConvertTo-Json -Compress -InputObject @{{ found = $false }}; exit 0 }}
$dom = (Get-ADDomain).DomainSID.Value
$privileged = @(($dom + '-512'), ($dom + '-518'), ($dom + '-519'), 'S-1-5-32-544', 'S-1-5-32-548', 'S-1-5-32-549', 'S-1-5-32-551')
$member = @((Get-ADUser -Identity $sid -Properties MemberOf).MemberOf) -contains $g.DistinguishedName
ConvertTo-Json -Compress -InputObject @{{ found = $true; name = [string]$g.Name; sid = [string]$g.SID.Value; privileged = ($privileged -contains $g.SID.Value); member = [bool]$member }}"""

GROUP_CHANGES = {
    "Add-ADGroupMember": r"""$ErrorActionPreference = 'Stop'
Import-Module ActiveDirectory
Add-ADGroupMember -Identity {group} -Members {sid}
ConvertTo-Json -Compress -InputObject @{{ done = $true }}""",
    "Remove-ADGroupMember": r"""$ErrorActionPreference = 'Stop'
Import-Module ActiveDirectory
Remove-ADGroupMember -Identity {group} -Members {sid} -Confirm:$false
ConvertTo-Json -Compress -InputObject @{{ done = $true }}""",
}


@dataclass(frozen=True)
class GroupMembership:
    name: str
    sid: str
    privileged: bool
    member: bool


@dataclass(frozen=True)
class DomainGroup(JsonFact["GroupMembership | None"]):
    """A domain group (Get-ADGroup) and whether the account with `sid` is a member of it."""

    group: str
    sid: str
    what: ClassVar[str] = "Get-ADGroup"

    def command(self) -> Command:
        return ps_script(AD_GROUP, group=self.group, sid=self.sid)

    def value(self, data: Any) -> GroupMembership | None:
        if not isinstance(data, dict) or not data.get("found"):
            return None
        return GroupMembership(
            text(data.get("name")),
            text(data.get("sid")),
            data.get("privileged") is not False,  # unknown counts as privileged
            bool(data.get("member")),
        )


class _WindowsMembership(_WindowsAccount):
    add: bool = True
    group = Param(str, required=True, kind="text", check=check_group, help="the group's name")
    allow_privileged = Param(
        bool, default=False, help="allow changing a privileged group (bound into the approval)"
    )

    found: GroupMembership | None = None
    """The group as check found it (its SID names it in apply)."""

    def _group(self, ctx: Context) -> GroupMembership:
        found = read(ctx, DomainGroup(str(self.group), self.before["sid"]))
        if found is None:
            raise NotFound(f"no domain group {self.group!r} (asked on {ctx.host.name})")
        return found

    def check(self, ctx: Context) -> Finding:
        self.before = read_account(ctx, str(self.user))
        self.found = group = self._group(ctx)
        if group.privileged and not self.allow_privileged:
            refuse_privileged_group(group.name, self.before["account"], self.add)
        return membership_needed(self.before["account"], group.name, group.member, self.add)

    def apply(self, ctx: Context) -> None:
        assert self.found is not None
        verb = "Add-ADGroupMember" if self.add else "Remove-ADGroupMember"
        script = ps_script(GROUP_CHANGES[verb], group=self.found.sid, sid=self.before["sid"])
        change_json(ctx, script, verb)
        word = "added to" if self.add else "removed from"
        ctx.note(f"{self.before['account']} {word} {self.found.name}")

    def verify(self, ctx: Context) -> Finding:
        group = self._group(ctx)
        return membership_done(self.before["account"], group.name, group.member, self.add)


@account_task("account.group-add", {"windows"})
class WindowsGroupAdd(_WindowsMembership):
    """From a Windows management host: Add-ADGroupMember, read back through the account's
    memberOf. A permission change: every run needs a second operator's approval. The domain's
    and the built-in administrative groups (Domain/Enterprise/Schema Admins, Administrators,
    Account/Server/Backup Operators, recognised by SID) are refused unless
    allow_privileged=true, which the approval then binds.

    Example:
        itops fix account.group-add mgmt-01 -p user=jdoe -p group='VPN Users' --ticket REQ-2001
    """

    add = True


@account_task("account.group-remove", {"windows"})
class WindowsGroupRemove(_WindowsMembership):
    """From a Windows management host: Remove-ADGroupMember (no prompt), read back through the
    account's memberOf; approval and privileged groups as account.group-add.

    Example:
        itops fix account.group-remove mgmt-01 -p user=jdoe -p group='VPN Users' --ticket REQ-2002
    """

    add = False
