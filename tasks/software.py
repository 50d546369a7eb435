"""Software requests on Linux: install, remove and list catalog software with apt or dnf.

Only software listed in the workspace's catalog (`software/*.yml`, toolkit.software) is
installed or removed: `-p name=` is the catalog name, which resolves to the host's package
(apt on Debian/Ubuntu, dnf/yum on the RHEL family, chosen from what the host has) and its pinned
version. An entry with `approval: true` needs a second operator's approval. The package tools'
shared parts (lock waits, the non-interactive environment, dpkg/rpm reads) are in
toolkit.remediation.packages, as patch.apply uses them.
"""

from __future__ import annotations

import fnmatch
from dataclasses import dataclass
from typing import Any

from toolkit import software
from toolkit.errors import ChangeRefused, Unsupported
from toolkit.inventory import Host
from toolkit.remediation.catalog import Context, Finding, Param, Remediation
from toolkit.remediation.facts import Fact, read
from toolkit.remediation.linux import read_service, service_manager
from toolkit.remediation.packages import (
    ITOPS_NEEDS,
    AptRemoveSimulation,
    DebPackages,
    DnfProtected,
    Installed,
    PackageTools,
    RpmDependants,
    RpmPackages,
    apt_get,
    rpm_version_matches,
    run_manager,
)
from toolkit.remediation.quoting import Command, cmd
from toolkit.remediation.softwaretasks import CatalogSoftwareTask, judge, software_task
from toolkit.software import Software

CONFOLD = ["-o", "Dpkg::Options::=--force-confdef", "-o", "Dpkg::Options::=--force-confold"]
PATH_DIRS = ("usr/local/sbin", "usr/local/bin", "usr/sbin", "usr/bin", "sbin", "bin")


def package_root(host: Host) -> str:
    """Where the host's packages live (`/`; a lab host keeps its own under a folder)."""
    return str(host.var("package_root", "/") or "/")


class SoftwareTask(CatalogSoftwareTask):
    """What install and remove share: the catalog entry, the host's manager (apt, dnf or yum:
    what the host has) and its package."""

    lock_timeout = Param(
        int, default=120, minimum=0, maximum=3600, help="seconds to wait for a dpkg/apt lock"
    )
    timeout_minutes = Param(int, default=30, minimum=1, maximum=240, help="install time limit")

    def resolve(self, ctx: Context) -> None:
        self.entry = software.active().get(str(self.name))
        tools = read(ctx, PackageTools())
        manager = tools.manager
        if manager is None:
            raise Unsupported(
                f"{ctx.host.name} ({tools.os}) has neither apt nor dnf/yum",
                hint="itops installs software with apt (Debian/Ubuntu) or dnf (RHEL family)",
            )
        key = "apt" if manager == "apt" else "dnf"
        package = self.entry.package(key)
        if package is None:
            raise Unsupported(
                f"the catalog lists no {key} package for {self.entry.name} "
                f"({self.entry.source}); {ctx.host.name} uses {manager}",
                hint=f"add packages.{key} to its entry",
            )
        self.manager, self.package = manager, package

    def installed(self, ctx: Context) -> Installed | None:
        if self.manager == "apt":
            found = read(ctx, DebPackages((self.package.id,), package_root(ctx.host)))
        else:
            found = read(ctx, RpmPackages((self.package.id,)))
        return found.get(self.package.id)

    def at_pin(self, inst: Installed) -> bool:
        pin = self.package.version
        if pin is None:
            return True
        if self.manager == "apt":
            return inst.version == pin
        return rpm_version_matches(inst.version, pin)

    def change(self, ctx: Context, args: list[str], what: str, done: str) -> None:
        timeout = int(self.timeout_minutes) * 60.0
        lock = int(self.lock_timeout)
        if self.manager == "apt":
            command = apt_get(args, lock)
            timeout += lock
        else:
            command = cmd(self.manager, *args)
        run_manager(ctx, command, timeout, what, lock, done)

    def facts(self, inst: Installed | None) -> dict[str, Any]:
        return {
            "software": self.entry.name,
            "manager": self.manager,
            "package": self.package.id,
            "pinned": self.package.version,
            "installed": inst.version if inst is not None and inst.installed else None,
            "state": inst.state if inst is not None else "not-installed",
            "licence": self.entry.licence,
        }


@software_task(
    "software.install",
    {"linux"},
    "Install catalog software (apt or dnf) at its pinned version and prove it answers",
)
class InstallSoftware(SoftwareTask):
    """Install software listed in the workspace catalog (software/*.yml) with the host's
    package manager: apt on Debian/Ubuntu, dnf (or yum) on the RHEL family.

    Check reads the package database: is the entry's package installed, at the pinned version
    if the catalog pins one? Apply refreshes the package index (apt) and installs it
    non-interactively (a pin: exactly that version, downgrading if need be); a held dpkg lock
    is waited for lock_timeout seconds, then reported with its holder. Verify reads the
    database again and runs the entry's verify command (its output must match `expect`) or
    checks its service runs. An unlisted name is refused before anything connects, with the
    closest listed names; an entry with `approval: true` needs an approval.

    Example:
        itops fix software.install ws-042 -p name=firefox --ticket REQ-2001
        itops fix software.install office -p name=7zip --check
    """

    def check(self, ctx: Context) -> Finding:
        self.resolve(ctx)
        inst = self.installed(ctx)
        facts = self.facts(inst)
        if inst is not None and inst.installed and self.at_pin(inst):
            return Finding.healthy(f"{self.label()}: {inst.version} is installed", **facts)
        if inst is None or inst.state in ("config-files",):
            return Finding.problem(f"{self.label()}: not installed", **facts)
        if not inst.installed:
            return Finding.problem(f"{self.label()}: {inst.version} is {inst.state}", **facts)
        return Finding.problem(
            f"{self.label()}: {inst.version} is installed, {self.package.version} is pinned",
            **facts,
        )

    def apply(self, ctx: Context) -> None:
        pkg, pin = self.package.id, self.package.version
        if self.manager == "apt":
            self.change(ctx, ["-q", "update"], "apt-get update", "installed")
            target = f"{pkg}={pin}" if pin else pkg
            # --no-remove: an install that would remove another package stops instead (dnf does
            # the same by default: it never erases without --allowerasing)
            extra = ["--no-remove", *(["--allow-downgrades"] if pin else [])]
            self.change(
                ctx, ["-y", "-q", *CONFOLD, *extra, "install", "--", target],
                f"apt-get install {target}", "installed",
            )  # fmt: skip
        else:
            # dnf installs exactly the version named, replacing another one if installed
            target = f"{pkg}-{pin}" if pin else pkg
            self.change(
                ctx, ["-y", "-q", "install", target], f"{self.manager} install", "installed"
            )
        ctx.note(f"installed {target} with {self.manager}")

    def verify(self, ctx: Context) -> Finding:
        inst = self.installed(ctx)
        facts = self.facts(inst)
        if inst is None or not inst.installed:
            state = inst.state if inst is not None else "not installed"
            return Finding.problem(f"{self.label()}: {state} after the install", **facts)
        if not self.at_pin(inst):
            return Finding.problem(
                f"{self.label()}: {inst.version} is installed, not the pinned "
                f"{self.package.version}",
                **facts,
            )
        return self.proven(inst.version, answers(ctx, self.entry), facts)


@dataclass(frozen=True)
class Said:
    """What the verify command answered."""

    exit_code: int
    text: str  # stdout, or stderr if it printed nothing there


@dataclass(frozen=True)
class Answer(Fact[Said]):
    """The catalog's verify command, run from the host's package root when it has its own
    (its programs are looked up in that root's bin folders first)."""

    argv: tuple[str, ...]
    root: str = "/"

    def command(self) -> Command:
        root = self.root.rstrip("/")
        if not root:
            return cmd(*self.argv)
        path = ":".join([*(f"{root}/{d}" for d in PATH_DIRS), "/usr/sbin:/usr/bin:/sbin:/bin"])
        return cmd("env", f"PATH={path}", *self.argv)

    def parse(self, stdout: str, stderr: str, exit_code: int) -> Said:
        return Said(exit_code, stdout.strip() or stderr.strip())


def answers(ctx: Context, entry: Software) -> dict[str, Any]:
    """Does the installed software answer as the catalog says ({} when it says nothing)?"""
    check = entry.verify
    if not check.command and check.service is None:
        return {}
    if check.command:
        said = read(ctx, Answer(check.command, package_root(ctx.host)), timeout=30)
        return judge(check.command, said.exit_code, said.text, check.expect)
    state = read_service(ctx, str(check.service), service_manager(ctx))
    if not state.running:
        return {"ok": False, "detail": f"{state.describe()}"}
    return {"ok": True, "detail": state.describe()}


@software_task(
    "software.remove",
    {"linux"},
    "Remove catalog software (apt or dnf); packages the OS needs are refused",
)
class RemoveSoftware(SoftwareTask):
    """Remove software listed in the workspace catalog with apt or dnf.

    Check refuses, before anything changes, a package the OS needs: apt's Essential packages
    and those of Priority required or important (read from the host's dpkg database); for dnf
    its protected packages (/etc/dnf/protected.d on the host, plus dnf's built-in set); on both,
    what itops needs to manage the host (openssh-server, sudo, the package tools). It also
    refuses a removal that would take other installed packages with it, naming them (apt: a
    simulated removal; dnf: the installed packages that require it).
    Apply removes the package (purge=true: its configuration files too); verify proves it is
    gone.

    Example:
        itops fix software.remove ws-042 -p name=vlc --ticket REQ-2002
        itops fix software.remove ws-042 -p name=vlc -p purge=true --ticket REQ-2002
    """

    purge = Param(bool, default=False, help="apt: remove its configuration files too")

    def check(self, ctx: Context) -> Finding:
        self.resolve(ctx)
        inst = self.installed(ctx)
        facts = self.facts(inst)
        self.refuse_os_needed(ctx, inst)
        gone = inst is None or (inst.state == "config-files" and not self.purge)
        if gone:
            return Finding.healthy(f"{self.label()}: not installed", **facts)
        assert inst is not None
        if self.manager == "apt":
            removes = read(ctx, AptRemoveSimulation(self.package.id)).removes
        else:
            removes = read(ctx, RpmDependants(self.package.id)).removes
        others = [p for p in removes if p != self.package.id]
        if others:
            raise ChangeRefused(
                f"removing {self.package.id} would also remove {', '.join(others)}: refused",
                hint="remove those first (if the catalog lists them), or from the console",
            )
        return Finding.problem(f"{self.label()}: {inst.version} is {inst.state}", **facts)

    def refuse_os_needed(self, ctx: Context, inst: Installed | None) -> None:
        pkg = self.package.id
        why = ""
        if pkg in ITOPS_NEEDS:
            why = "itops needs it to manage the host"
        elif self.manager == "apt" and inst is not None:
            if inst.essential:
                why = "it is Essential (dpkg)"
            elif inst.priority in ("required", "important"):
                why = f"its Priority is {inst.priority}"
        elif self.manager != "apt" and pkg in read(ctx, DnfProtected()).names:
            why = "dnf protects it (protected_packages)"
        if why:
            raise ChangeRefused(
                f"refusing to remove {pkg} from {ctx.host.name}: the OS needs it ({why})",
                hint="remove it from the console if you really mean it; nothing was changed",
            )

    def apply(self, ctx: Context) -> None:
        pkg = self.package.id
        if self.manager == "apt":
            verb = "purge" if self.purge else "remove"
            self.change(ctx, ["-y", "-q", verb, "--", pkg], f"apt-get {verb} {pkg}", "removed")
        else:
            self.change(ctx, ["-y", "-q", "remove", pkg], f"{self.manager} remove", "removed")
        ctx.note(f"removed {pkg} with {self.manager}")

    def verify(self, ctx: Context) -> Finding:
        inst = self.installed(ctx)
        facts = self.facts(inst)
        if inst is None or (inst.state == "config-files" and not self.purge):
            return Finding.healthy(f"{self.label()}: removed", **facts)
        return Finding.problem(f"{self.label()}: still {inst.state} ({inst.version})", **facts)


@software_task(
    "software.list",
    {"linux"},
    "List installed packages: name, version, and the catalog name if listed (read-only)",
    risky=False,
)
class ListSoftware(Remediation):
    """List what the package database (dpkg or rpm) says is installed: name, version, state, and
    the catalog name of packages the workspace catalog lists. Changes nothing: run it with
    --check (the list is in --json's check facts). `match` filters package names (a glob),
    `listed=true` keeps catalog software only.

    Example:
        itops fix software.list ws-042 --check --json
        itops fix software.list office -p 'match=firefox*' --check
        itops fix software.list ws-042 -p listed=true --check
    """

    match = Param(str, kind="text", pattern=r"[A-Za-z0-9_.+*?\[\]-]{1,128}",
                  help="only package names matching this glob")  # fmt: skip
    listed = Param(bool, default=False, help="only packages the software catalog lists")

    def check(self, ctx: Context) -> Finding:
        tools = read(ctx, PackageTools())
        manager = tools.manager
        if manager == "apt":
            found = read(ctx, DebPackages((), package_root(ctx.host)))
        elif manager is not None:
            found = read(ctx, RpmPackages())
        else:
            raise Unsupported(f"{ctx.host.name} ({tools.os}) has neither dpkg nor rpm")
        names = software.active().by_package("apt" if manager == "apt" else "dnf")
        rows = []
        for p in sorted(found.packages, key=lambda p: p.name):
            if self.match and not fnmatch.fnmatchcase(p.name, str(self.match)):
                continue
            entry = names.get(p.name)
            if self.listed and entry is None:
                continue
            row = {"name": p.name, "version": p.version, "state": p.state}
            if entry is not None:
                row["software"] = entry.name
            rows.append(row)
        listed = sum(1 for r in rows if "software" in r)
        shown = ", ".join(f"{r['name']} {r['version']}" for r in rows[:8])
        more = f", … ({len(rows) - 8} more)" if len(rows) > 8 else ""
        return Finding.healthy(
            f"{manager}: {len(rows)} package(s), {listed} in the catalog"
            + (f": {shown}{more}" if rows else ""),
            manager=manager,
            packages=rows,
        )

    def apply(self, ctx: Context) -> None:
        ctx.note("software.list only reads; run software.install or software.remove")
