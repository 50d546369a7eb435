"""Patching Linux hosts: apt (Debian/Ubuntu) or dnf/yum (RHEL family), chosen from the host's facts."""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass

from toolkit.clock import WeeklyWindow
from toolkit.errors import ToolkitError
from toolkit.remediation.catalog import Context, Finding, Param, Remediation, remediation
from toolkit.remediation.facts import Fact, read, succeeded
from toolkit.remediation.linux import PACKAGE_NAME, host_clock
from toolkit.remediation.packages import (  # shared with the software tasks (and re-exported)
    APT_ENV as APT_ENV,
)
from toolkit.remediation.packages import FACTS as FACTS
from toolkit.remediation.packages import PackageManagerBusy as PackageManagerBusy
from toolkit.remediation.packages import PackageTools as PackageTools
from toolkit.remediation.packages import Packaging as Packaging
from toolkit.remediation.packages import apt_get, run_manager
from toolkit.remediation.quoting import Command, cmd, script
from toolkit.transports.base import CommandResult

APT_INDEX_AGE = script(
    'eval "$(apt-config shell LISTS Dir::State::lists/d)"; '
    "find \"$LISTS\" -maxdepth 1 -type f -name '*Packages*' -printf '%T@\\n' 2>/dev/null "
    "| sort -n | tail -n 1; date +%s"
)
REBOOT_PROBE = script(
    "if [ -f /var/run/reboot-required ]; then echo yes; "
    "elif command -v needs-restarting >/dev/null 2>&1; then "
    "needs-restarting -r >/dev/null 2>&1; case $? in 0) echo no;; 1) echo yes;; *) echo unknown;; esac; "
    "else echo no; fi"
)
# `Inst pkg [1.0] (2.0 Debian-Security:12/stable-security [amd64])`, `Inst pkg (2.0 … [all])`
_INST = re.compile(r"^Inst (\S+)(?: \[([^\]]*)\])? \((\S+) (.*?) \[[^\]]+\]\)")


@dataclass(frozen=True)
class Update:
    name: str
    current: str
    candidate: str
    origins: str = ""
    security: bool = False

    @property
    def label(self) -> str:
        return f"{self.name} {self.current or '(new)'} → {self.candidate}" + (
            " [security]" if self.security else ""
        )


def parse_apt_simulation(text: str) -> tuple[list[Update], list[str]]:
    """Updates and kept-back packages from `apt-get -s upgrade` output (C locale)."""
    updates, kept, in_kept = [], [], False
    for line in text.splitlines():
        if m := _INST.match(line):
            origins = m.group(4)
            updates.append(
                Update(
                    m.group(1),
                    m.group(2) or "",
                    m.group(3),
                    origins,
                    bool(re.search(r"security", origins, re.IGNORECASE)),
                )
            )
        elif line.startswith("The following packages have been kept back"):
            in_kept = True
        elif in_kept and line.startswith(" "):
            kept.extend(line.split())
        else:
            in_kept = False
    return updates, kept


def parse_dnf_check_update(text: str, security: set[str]) -> list[Update]:
    """Updates from `dnf -q check-update` (exit 100): `name.arch  version  repo` lines."""
    found = []
    for line in text.splitlines():
        if not line.strip() or line.startswith(("Obsoleting", "Security:", "Last metadata")):
            if line.startswith("Obsoleting"):
                break
            continue
        parts = line.split()
        if len(parts) != 3 or "." not in parts[0]:
            continue
        name = parts[0].rsplit(".", 1)[0]
        found.append(Update(name, "", parts[1], parts[2], name in security))
    return found


def parse_dnf_security(text: str) -> set[str]:
    """Package names from `dnf -q updateinfo list --security` (`ID  Sev/Sec.  name-[e:]v-r.arch`)."""
    names = set()
    for line in text.splitlines():
        parts = line.split()
        if len(parts) >= 3 and "/Sec" in parts[1]:
            names.add(parts[-1].rsplit("-", 2)[0])
    return names


@dataclass(frozen=True)
class Pending:
    """Updates the package index offers, and (apt) the packages it keeps back."""

    updates: tuple[Update, ...]
    kept: tuple[str, ...] = ()


@dataclass(frozen=True)
class AptSimulation(Fact[Pending]):
    """`apt-get -s upgrade --with-new-pkgs` without taking the lock: what an upgrade would do."""

    def command(self) -> Command:
        return cmd("apt-get", "-s", "-q", "-o", "Debug::NoLocking=1", "upgrade", "--with-new-pkgs")

    def parse(self, stdout: str, stderr: str, exit_code: int) -> Pending:
        updates, kept = parse_apt_simulation(
            succeeded("apt-get -s upgrade", stdout, stderr, exit_code)
        )
        return Pending(tuple(updates), tuple(kept))


@dataclass(frozen=True)
class Advisories:
    """Package names with a pending security advisory."""

    security: frozenset[str]


@dataclass(frozen=True)
class DnfSecurity(Fact[Advisories]):
    """Security advisories from the metadata cache (`updateinfo list --security`); none if the
    repositories publish no updateinfo (the command fails then)."""

    tool: str  # dnf or yum

    def command(self) -> Command:
        return cmd(self.tool, "-q", "-C", "updateinfo", "list", "--security", "--available")

    def parse(self, stdout: str, stderr: str, exit_code: int) -> Advisories:
        return Advisories(frozenset(parse_dnf_security(stdout) if exit_code == 0 else ()))


@dataclass(frozen=True)
class DnfCheckUpdate(Fact[Pending]):
    """Updates from the metadata cache (`check-update`: exit 100 means some are pending),
    marked security when their name is in `security`."""

    tool: str  # dnf or yum
    security: frozenset[str] = frozenset()

    def command(self) -> Command:
        return cmd(self.tool, "-q", "-C", "check-update")

    def parse(self, stdout: str, stderr: str, exit_code: int) -> Pending:
        if exit_code not in (0, 100):
            raise ToolkitError(
                f"{self.tool} check-update exited {exit_code}: {stderr.strip()[-200:]}",
                hint=f"the host may have no metadata cache yet: run `{self.tool} makecache` there",
            )
        return Pending(tuple(parse_dnf_check_update(stdout, set(self.security))))


@dataclass(frozen=True)
class IndexAge:
    """Hours since the apt package lists were refreshed (None: there are none)."""

    hours: float | None


@dataclass(frozen=True)
class AptIndexAge(Fact[IndexAge]):
    """When the apt package lists were last refreshed, against the host's own clock."""

    def command(self) -> Command:
        return APT_INDEX_AGE

    def parse(self, stdout: str, stderr: str, exit_code: int) -> IndexAge:
        lines = succeeded("reading the package index age", stdout, stderr, exit_code).split()
        if len(lines) < 2:
            return IndexAge(None)
        return IndexAge(max(0.0, (float(lines[-1]) - float(lines[0])) / 3600))


@dataclass(frozen=True)
class Reboot:
    required: bool


@dataclass(frozen=True)
class RebootRequired(Fact[Reboot]):
    """Does the host need a reboot (Debian's flag file, or RHEL's needs-restarting -r)?"""

    def command(self) -> Command:
        return REBOOT_PROBE

    def parse(self, stdout: str, stderr: str, exit_code: int) -> Reboot:
        return Reboot(stdout.strip() == "yes")


@remediation(
    "patch.apply",
    category="software",
    platforms={"linux"},
    summary="Install pending package updates with apt or dnf (optionally security only)",
    disruptive=True,
)
class ApplyPatches(Remediation):
    """Install pending updates with the host's package manager: apt on Debian/Ubuntu, dnf (or
    yum) on the RHEL family, chosen from what the host has.

    Check only reads: the updates pending in the host's package index and which of them are
    security updates (apt: from a -security suite; dnf: security advisories), and how old that
    index is — older than max_index_age_hours counts as a finding too. Apply refreshes the index,
    then upgrades everything or, with security_only / include / exclude, just those packages,
    non-interactively (keeping changed config files) and never removing packages. If another
    apt/dpkg holds the lock, it waits lock_timeout seconds, then fails and says who holds it.
    Verify: nothing selected is still pending; a needed reboot is reported, and with reboot=true
    scheduled (in 5 minutes) only inside reboot_window (or the host variable `reboot_window`),
    in the host's local time, e.g. -p 'reboot_window=Sun 02:00-05:00'.

    Example:
        itops fix patch.apply web-01 --ticket CHG-2001
        itops fix patch.apply office -p security_only=true --ticket CHG-2001
        itops fix patch.apply web-01 -p include=openssl -p include=libssl3 --ticket CHG-2002
        itops fix patch.apply db-01 -p exclude=postgresql-15 -p reboot=true --ticket CHG-2003
        itops fix patch.apply linux --check
    """

    security_only = Param(bool, default=False, help="only security updates")
    include = Param(str, many=True, pattern=PACKAGE_NAME, help="only these packages (repeatable)")
    exclude = Param(str, many=True, pattern=PACKAGE_NAME, help="never these packages (repeatable)")
    reboot = Param(bool, default=False, help="reboot (in 5 minutes) if needed, inside the window")
    reboot_window = Param(
        str, kind="text", help="when a reboot may happen, e.g. 'Sat 01:00-05:00' (host local time)"
    )
    lock_timeout = Param(
        int, default=120, minimum=0, maximum=3600, help="seconds to wait for a dpkg/apt lock"
    )
    max_index_age_hours = Param(
        int, default=24, minimum=0, maximum=24 * 30, help="an older package index is a finding"
    )
    timeout_minutes = Param(int, default=60, minimum=1, maximum=720, help="upgrade time limit")

    os: str
    """The host's OS as check read it (`ID VERSION_ID`), for the findings."""
    tool: str
    """The package manager check chose (apt, dnf or yum); apply and verify use the same."""
    scheduled: bool = False
    """Whether apply scheduled a reboot (verify reports it)."""

    # -- selection ---------------------------------------------------------------------------
    def wanted(self, updates: Sequence[Update]) -> list[Update]:
        include, exclude = set(self.include or []), set(self.exclude or [])
        return [
            u
            for u in updates
            if (u.security or not self.security_only)
            and (not include or u.name in include)
            and u.name not in exclude
        ]

    def _tool(self, ctx: Context) -> str:
        found = read(ctx, PackageTools())
        self.os = found.os
        if "apt-get" in found.tools:
            return "apt"
        for tool in ("dnf", "yum"):
            if tool in found.tools:
                return tool
        raise ToolkitError(
            f"{ctx.host.name} ({self.os}) has neither apt nor dnf/yum",
            hint="itops patches Debian/Ubuntu and RHEL-family hosts",
        )

    def _pending(self, ctx: Context) -> tuple[list[Update], list[str]]:
        if self.tool == "apt":
            pending = read(ctx, AptSimulation())
        else:
            security = read(ctx, DnfSecurity(self.tool)).security
            pending = read(ctx, DnfCheckUpdate(self.tool, security))
        return list(pending.updates), list(pending.kept)

    def _index_age_hours(self, ctx: Context) -> float | None:
        if self.tool != "apt":
            return None  # dnf refreshes expired metadata by itself before every upgrade
        return read(ctx, AptIndexAge()).hours

    def _reboot_required(self, ctx: Context) -> bool:
        return read(ctx, RebootRequired()).required

    # -- steps -------------------------------------------------------------------------------
    def check(self, ctx: Context) -> Finding:
        if self.reboot_window:
            # a bad window fails before any change
            WeeklyWindow.parse(str(self.reboot_window), "reboot window")
        self.tool = self._tool(ctx)
        updates, kept = self._pending(ctx)
        wanted = self.wanted(updates)
        age = self._index_age_hours(ctx)
        reboot = self._reboot_required(ctx)
        facts = {
            "os": self.os,
            "manager": self.tool,
            "pending": len(updates),
            "pending_security": sum(u.security for u in updates),
            "selected": [u.label for u in wanted],
            "kept_back": kept,
            "index_age_hours": None if age is None else round(age, 1),
            "reboot_required": reboot,
        }
        counts = (
            f"{len(updates)} pending ({facts['pending_security']} security), {len(wanted)} selected"
        )
        problems = []
        if wanted:
            problems.append(counts + ": " + ", ".join(u.label for u in wanted[:10]))
        if age is not None and age > int(self.max_index_age_hours):
            problems.append(f"the package index is {age:.0f} h old")
        if reboot and self.reboot:
            problems.append("a reboot is required")
        if problems:
            return Finding.problem(f"{self.tool}: " + "; ".join(problems), **facts)
        tail = "; a reboot is required" if reboot else ""
        return Finding.healthy(f"{self.tool}: {counts}, none to install{tail}", **facts)

    def apply(self, ctx: Context) -> None:
        self.scheduled = False
        timeout = int(self.timeout_minutes) * 60.0
        if self.tool == "apt":
            self._apt(ctx, ["-q", "update"], timeout)
        else:
            self._run(
                ctx, cmd(self.tool, "-y", "-q", "makecache"), timeout, f"{self.tool} makecache"
            )
        wanted = self.wanted(self._pending(ctx)[0])
        if not wanted:
            ctx.note("nothing selected to install after refreshing the package index")
        elif self.tool == "apt":
            everything = not (self.security_only or self.include or self.exclude)
            names = [u.name for u in wanted]
            args = ["upgrade", "--with-new-pkgs"] if everything else ["install", "--only-upgrade"]
            self._apt(
                ctx,
                [
                    "-y",
                    "-q",
                    "-o",
                    "Dpkg::Options::=--force-confdef",
                    "-o",
                    "Dpkg::Options::=--force-confold",
                    *args,
                    *([] if everything else names),
                ],
                timeout,
            )
            ctx.note(f"installed: {', '.join(u.label for u in wanted)}")
        else:
            argv = [self.tool, "-y", "-q", "upgrade"]
            if self.security_only:
                argv.append("--security")
            argv += [f"--exclude={name}" for name in self.exclude or []]
            argv += list(self.include or [])
            self._run(ctx, cmd(*argv), timeout, f"{self.tool} upgrade")
            ctx.note(f"installed: {', '.join(u.label for u in wanted)}")
        if self.reboot and self._reboot_required(ctx):
            self._maybe_reboot(ctx)

    def _apt(self, ctx: Context, args: list[str], timeout: float) -> CommandResult:
        what = "apt-get " + next(a for a in args if not a.startswith("-") and "::" not in a)
        command = apt_get(args, int(self.lock_timeout))
        return self._run(ctx, command, timeout + int(self.lock_timeout), what)

    def _run(self, ctx: Context, command: Command, timeout: float, what: str) -> CommandResult:
        return run_manager(ctx, command, timeout, what, int(self.lock_timeout), "installed")

    def _maybe_reboot(self, ctx: Context) -> None:
        window_text = self.reboot_window or ctx.host.var("reboot_window")
        day, minute, shown = host_clock(ctx)
        if not window_text:
            ctx.note("reboot required; not rebooting: no reboot_window is set for this host")
            return
        window = WeeklyWindow.parse(str(window_text), "reboot window")
        if not window.contains(day, minute):
            ctx.note(f"reboot required; not rebooting: {shown} is outside '{window_text}'")
            return
        ctx.change(
            cmd(
                "shutdown",
                "-r",
                "+5",
                "itops patch.apply: restarting in 5 minutes to finish updates",
            ),
            become=True,
        )
        self.scheduled = True
        ctx.note(f"reboot scheduled in 5 minutes ({shown}, inside '{window_text}')")

    def verify(self, ctx: Context) -> Finding:
        updates, kept = self._pending(ctx)
        left = self.wanted(updates)
        reboot = self._reboot_required(ctx)
        facts = {
            "manager": self.tool,
            "pending": len(updates),
            "still_selected": [u.label for u in left],
            "kept_back": kept,
            "reboot_required": reboot,
            "reboot_scheduled": self.scheduled,
        }
        tail = ""
        if reboot:
            tail = "; reboot scheduled" if self.scheduled else "; REBOOT REQUIRED"
        if left:
            return Finding.problem(
                f"still pending: {', '.join(u.label for u in left)}{tail}", **facts
            )
        return Finding.healthy(
            f"nothing selected is pending ({len(updates)} other update(s) left){tail}", **facts
        )
