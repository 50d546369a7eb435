"""What the package tasks share (patch.apply, software.*): which package manager a Linux host has,
apt-get run non-interactively under a bounded lock wait, and the installed-package reads.

apt and dpkg: `apt-get` runs with DEBIAN_FRONTEND=noninteractive (no debconf prompt, no
needrestart question, no changelog pager) and `DPkg::Lock::Timeout`, so a held dpkg lock is
waited for a bounded time and then reported with its holder (`PackageManagerBusy`). Installed
packages are read from the dpkg database with `dpkg-query`; its `--admindir` follows the host
variable `package_root` (default `/`: the lab's hosts keep their own package database under a
folder of their own, see toolkit/lab/apt.py).

dnf/yum and rpm: installed packages from `rpm -q` with a query format that gives `[E:]V-R`.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

from toolkit.errors import ToolkitError, ValidationError
from toolkit.remediation.catalog import Context
from toolkit.remediation.facts import Fact, succeeded
from toolkit.remediation.quoting import Command, cmd, script
from toolkit.transports.base import CommandResult

FACTS = script(
    ". /etc/os-release 2>/dev/null; echo id=$ID; echo like=$ID_LIKE; echo version=$VERSION_ID; "
    "for t in apt-get dnf yum; do command -v $t >/dev/null 2>&1 && echo tool=$t; done; true"
)
APT_ENV = (
    "env",
    "DEBIAN_FRONTEND=noninteractive",
    "NEEDRESTART_MODE=a",
    "APT_LISTCHANGES_FRONTEND=none",
)
# apt: `E: Unable to acquire the dpkg frontend lock (PATH), is another process using it?` (or
# `Could not get lock PATH`); while waiting it says `… It is held by process N (NAME)` on stdout.
_LOCK = re.compile(r"(?:Unable to acquire the dpkg frontend lock \(|Could not get lock )([^\s),]+)")
_UNMET = re.compile(r"^ +\S+ : (?:Pre)?Depends: ")
_HOLDER = re.compile(r"It is held by process (\d+)(?: \(([^)]*)\))?")

# Never removed whatever the package database says: what itops needs to reach and manage the
# host (dnf has no Essential flag; its own protected list is read from the host as well).
ITOPS_NEEDS = frozenset({"openssh-server", "sudo", "apt", "dpkg", "dnf", "yum", "rpm", "python3"})
# dnf's built-in protected set (dnf protects these and the running kernel itself), for hosts
# whose /etc/dnf/protected.d is missing or unreadable.
DNF_PROTECTED = frozenset(
    {"dnf", "yum", "rpm", "systemd", "systemd-udev", "sudo", "setup", "glibc", "bash",
     "coreutils", "filesystem", "kernel-core", "openssh-server", "shadow-utils", "util-linux"}
)  # fmt: skip


class PackageManagerBusy(ToolkitError):
    """Another package operation held the lock longer than the bounded wait."""


def _key_values(text: str) -> dict[str, str]:
    out: dict[str, str] = {}
    for line in text.splitlines():
        key, found, value = line.partition("=")
        if found and key.strip():
            out[key.strip()] = value.strip()
    return out


@dataclass(frozen=True)
class Packaging:
    """The host's OS (`ID VERSION_ID` of os-release) and the package tools it has."""

    os: str
    tools: tuple[str, ...]

    @property
    def manager(self) -> str | None:
        """apt, dnf or yum (the first the host has), None for none of them."""
        if "apt-get" in self.tools:
            return "apt"
        return next((t for t in ("dnf", "yum") if t in self.tools), None)


@dataclass(frozen=True)
class PackageTools(Fact[Packaging]):
    """Which of apt-get, dnf and yum the host has, and its os-release."""

    def command(self) -> Command:
        return FACTS

    def parse(self, stdout: str, stderr: str, exit_code: int) -> Packaging:
        text = succeeded("reading the host's facts", stdout, stderr, exit_code)
        info = _key_values(text)
        tools = tuple(line[5:] for line in text.splitlines() if line.startswith("tool="))
        return Packaging(f"{info.get('id', '?')} {info.get('version', '')}".strip(), tools)


def apt_get(args: list[str], lock_timeout: int) -> Command:
    """`apt-get ARGS` non-interactively, waiting at most `lock_timeout` s for the dpkg lock."""
    lock = ["-o", f"DPkg::Lock::Timeout={int(lock_timeout)}"]
    return cmd(*APT_ENV, "apt-get", *lock, *args)


def run_manager(
    ctx: Context, command: Command, timeout: float, what: str, lock_timeout: int, done: str
) -> CommandResult:
    """Run a package manager's change as root; a held lock is PackageManagerBusy naming the
    holder, another failure a ToolkitError with the manager's last line. `done` says what
    did not happen ("installed", "removed") in the busy message."""
    result = ctx.change(command, become=True, timeout=timeout, check=False)
    if result.exit_code != 0:
        held = _LOCK.search(result.stderr)
        if held:
            holder = _HOLDER.search(result.stdout + result.stderr)
            who = f" by process {holder.group(1)} ({holder.group(2) or '?'})" if holder else ""
            raise PackageManagerBusy(
                f"the package manager is busy: {held.group(1).rstrip('.')} was held{who} "
                f"for more than {lock_timeout}s; nothing was {done}",
                hint="another update is running (unattended-upgrades, an engineer): "
                "try again when it has finished, or raise -p lock_timeout",
            )
        lines = (result.stderr.strip() or result.stdout.strip()).splitlines()
        errors = [line for line in lines if line.startswith(("E:", "Error"))]
        detail = (errors or lines)[-1][:200] if lines else ""
        # apt names what it could not resolve on lines of its own (` pkg : Depends: x but …`)
        said = (result.stdout + "\n" + result.stderr).splitlines()
        unmet = [line.strip() for line in said if _UNMET.match(line)]
        if unmet:
            detail += " (" + "; ".join(unmet[:3])[:300] + ")"
        raise ToolkitError(f"{what} exited {result.exit_code}" + (f": {detail}" if detail else ""))
    return result


# --------------------------------------------------------------------------- installed packages


@dataclass(frozen=True)
class Installed:
    """One package as the package database has it."""

    name: str
    version: str
    state: str = "installed"  # dpkg: installed, config-files, half-configured, unpacked, …
    essential: bool = False  # dpkg: Essential: yes
    priority: str = ""  # dpkg: required, important, standard, optional, extra
    arch: str = ""

    @property
    def installed(self) -> bool:
        return self.state == "installed"


@dataclass(frozen=True)
class PackageSet:
    packages: tuple[Installed, ...] = field(default_factory=tuple)

    def get(self, name: str) -> Installed | None:
        return next((p for p in self.packages if p.name == name), None)


_DPKG_STATUS = {
    "n": "not-installed",
    "c": "config-files",
    "H": "half-installed",
    "U": "unpacked",
    "F": "half-configured",
    "W": "triggers-awaited",
    "t": "triggers-pending",
    "i": "installed",
}
DPKG_FORMAT = (
    "${Package}\t${Version}\t${db:Status-Abbrev}\t${Essential}\t${Priority}\t${Architecture}\n"
)


def admindir(root: str) -> list[str]:
    """dpkg-query's `--admindir` for a host whose packages live under `root` (none for `/`)."""
    if root in ("", "/"):
        return []
    if not root.startswith("/") or "\n" in root:
        raise ValidationError(f"package_root {root!r} must be an absolute path")
    return [f"--admindir={root.rstrip('/')}/var/lib/dpkg"]


@dataclass(frozen=True)
class DebPackages(Fact[PackageSet]):
    """Packages in the dpkg database: the named ones (an unknown name is simply absent), or all."""

    names: tuple[str, ...] = ()
    root: str = "/"

    def command(self) -> Command:
        names = ["--", *self.names] if self.names else []
        return cmd("dpkg-query", *admindir(self.root), "-W", "-f", DPKG_FORMAT, *names)

    def parse(self, stdout: str, stderr: str, exit_code: int) -> PackageSet:
        # exit 1 with "no packages found matching X" on stderr: X is not known (not installed)
        if exit_code not in (0, 1) or (exit_code == 1 and "no packages found" not in stderr):
            succeeded("dpkg-query -W", stdout, stderr, exit_code)
        return PackageSet(tuple(parse_dpkg_query(stdout)))


def parse_dpkg_query(text: str) -> list[Installed]:
    found = []
    for line in text.splitlines():
        parts = line.split("\t")
        if len(parts) < 5 or not parts[0]:
            continue
        abbrev = parts[2] + "  "
        state = _DPKG_STATUS.get(abbrev[1], f"unknown ({parts[2].strip()})")
        if abbrev[2] == "R":
            state += " (reinstall required)"
        if state == "not-installed":
            continue
        found.append(
            Installed(
                parts[0],
                parts[1],
                state,
                parts[3].strip().lower() == "yes",
                parts[4].strip().lower(),
                parts[5].strip() if len(parts) > 5 else "",
            )
        )
    return found


RPM_FORMAT = "%{NAME}\\t%|EPOCH?{%{EPOCH}:}:{}|%{VERSION}-%{RELEASE}\\t%{ARCH}\\n"


@dataclass(frozen=True)
class RpmPackages(Fact[PackageSet]):
    """Packages in the rpm database: the named ones (an unknown name is absent), or all."""

    names: tuple[str, ...] = ()

    def command(self) -> Command:
        if self.names:
            return cmd("rpm", "-q", "--qf", RPM_FORMAT, "--", *self.names)
        return cmd("rpm", "-qa", "--qf", RPM_FORMAT)

    def parse(self, stdout: str, stderr: str, exit_code: int) -> PackageSet:
        # `rpm -q` exits with the number of names not installed ("package X is not installed")
        if exit_code != 0 and not (self.names and "is not installed" in stdout + stderr):
            succeeded("rpm -q", stdout, stderr, exit_code)
        return PackageSet(tuple(parse_rpm_query(stdout)))


def parse_rpm_query(text: str) -> list[Installed]:
    found = []
    for line in text.splitlines():
        parts = line.split("\t")
        if len(parts) == 3 and parts[0] and not parts[0].startswith("package "):
            found.append(Installed(parts[0], parts[1], arch=parts[2]))
    return found


def rpm_version_matches(installed: str, pin: str) -> bool:
    """An rpm pin `V` or `V-R` (optionally `E:`) against an installed `[E:]V-R`."""
    if installed == pin:
        return True
    bare = installed.split(":", 1)[1] if ":" in installed else installed
    return bare == pin or bare.rsplit("-", 1)[0] == pin


@dataclass(frozen=True)
class Protected:
    names: frozenset[str]


@dataclass(frozen=True)
class DnfProtected(Fact[Protected]):
    """dnf's protected packages from the host (`/etc/dnf/protected.d/*.conf`, one a line,
    `#` comments), with dnf's built-in set (DNF_PROTECTED) added."""

    def command(self) -> Command:
        return script("cat /etc/dnf/protected.d/*.conf 2>/dev/null; true")

    def parse(self, stdout: str, stderr: str, exit_code: int) -> Protected:
        names = {
            line.split("#", 1)[0].strip()
            for line in stdout.splitlines()
            if line.split("#", 1)[0].strip()
        }
        return Protected(frozenset(names) | DNF_PROTECTED)


# `Remv pkg [1.0]` lines of `apt-get -s remove`
_REMV = re.compile(r"^Remv (\S+)", re.M)


@dataclass(frozen=True)
class Removal:
    removes: tuple[str, ...]


@dataclass(frozen=True)
class AptRemoveSimulation(Fact[Removal]):
    """What `apt-get remove NAME` would remove (simulated, without the lock)."""

    name: str

    def command(self) -> Command:
        return cmd("apt-get", "-s", "-q", "-o", "Debug::NoLocking=1", "remove", "--", self.name)

    def parse(self, stdout: str, stderr: str, exit_code: int) -> Removal:
        text = succeeded(f"apt-get -s remove {self.name}", stdout, stderr, exit_code)
        return Removal(tuple(_REMV.findall(text)))


@dataclass(frozen=True)
class RpmDependants(Fact[Removal]):
    """Installed packages that require `name` (`rpm -q --whatrequires`): what `dnf remove`
    would take with it. Exit 1 with "no package requires" means none."""

    name: str

    def command(self) -> Command:
        return cmd("rpm", "-q", "--whatrequires", self.name, "--qf", "%{NAME}\\n")

    def parse(self, stdout: str, stderr: str, exit_code: int) -> Removal:
        if exit_code != 0 and "no package requires" not in stdout + stderr:
            succeeded(f"rpm -q --whatrequires {self.name}", stdout, stderr, exit_code)
        if exit_code != 0:
            return Removal(())
        names = sorted({line.strip() for line in stdout.splitlines() if line.strip()})
        return Removal(tuple(n for n in names if n != self.name))
