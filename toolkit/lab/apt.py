"""Lab service `apt`: a package repository on loopback and a private package database per host.

What `patch.apply` meets on a lab host is real apt and real dpkg, isolated from this machine:

- a repository served over HTTP on 127.0.0.1 (this lab only) with two tiny packages built here
  with `dpkg-deb`: `itops-lab-tool` 2.0 in suite `lab` and `itops-lab-libsafe` 2.0 in suite
  `lab-security` (unsigned, so the source line says `[trusted=yes]`);
- per host, its own dpkg database (`--root` = the host's root folder, see `disk`) with both
  packages at version 1.0 installed, and its own APT configuration, set as `APT_CONFIG` in the
  host's SSH sessions (and kept across sudo). That file points the sources list, lists, cache,
  logs, the dpkg status file and dpkg itself (`DPkg::Options --root`) at the host's folder, and
  it replaces the configuration-parts directory, so nothing of this machine's /etc/apt (its
  mirrors, proxies, hooks) is read. `apt-get upgrade` on a lab host therefore sees only the lab's
  repository and can change only the host's own packages; it takes the host's own dpkg lock.

For the software tasks the repository also offers packages no host has yet (suite `lab`), each
with a tiny program in /usr/bin that answers `--version`: `itops-lab-hello` in two versions (1.0
and 2.0, so a pin matters), `itops-lab-greet` which depends on `itops-lab-libgreet` (its program
prints the library's version too), `itops-lab-broken` whose dependency exists nowhere (its
install fails), `itops-lab-rival`, which conflicts with the installed `itops-lab-tool` (installing
it would remove that), and `itops-lab-base`, Essential and of Priority required (what the OS needs).
A lab host's packages live under its root folder: the host variable `package_root` says where.

At start each host's package lists are refreshed once, as the apt-daily timer would.
"""

from __future__ import annotations

import contextlib
import fcntl
import gzip
import hashlib
import os
import shutil
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING

from toolkit.lab.core import LabError, LabState, serve_directory
from toolkit.lab.disk import host_root

if TYPE_CHECKING:
    from toolkit.lab.core import Lab

PACKAGES = {"itops-lab-tool": "lab", "itops-lab-libsafe": "lab-security"}
# (package, version, control fields): offered in suite `lab`, installed nowhere at start
SOFTWARE: tuple[tuple[str, str, dict[str, str]], ...] = (
    ("itops-lab-hello", "1.0", {}),
    ("itops-lab-hello", "2.0", {}),
    ("itops-lab-libgreet", "1.0", {}),
    ("itops-lab-greet", "1.0", {"Depends": "itops-lab-libgreet (>= 1.0)"}),
    ("itops-lab-broken", "1.0", {"Depends": "itops-lab-missing"}),
    ("itops-lab-rival", "1.0", {"Conflicts": "itops-lab-tool"}),
    ("itops-lab-base", "1.0", {"Essential": "yes", "Priority": "required"}),
)
# What each package's /usr/bin program says to --version (`$V`: its version; greet adds the
# version of the library it depends on, read from where that package put it)
PROGRAM = """#!/bin/sh
here=$(dirname "$0")
case "$1" in
  --version) echo "{package} {version}{extra}" ;;
  *) echo "hello from {package}" ;;
esac
"""
GREET_EXTRA = ' (libgreet $(cat "$here/../share/itops-lab-libgreet/VERSION"))'
SUITES = ("lab", "lab-security")
INSTALL_HINT = "apt-get install apt dpkg"

APT_CONF = """\
// itops lab host {host}: this host's own APT (read instead of /etc/apt; see toolkit/lab/apt.py)
Dir::Etc::parts "{root}/etc/apt/apt.conf.d";
Dir::Etc::main "{root}/etc/apt/apt.conf.main";
Dir::Etc::sourcelist "{root}/etc/apt/sources.list";
Dir::Etc::sourceparts "{root}/etc/apt/sources.list.d";
Dir::Etc::preferences "{root}/etc/apt/preferences";
Dir::Etc::preferencesparts "{root}/etc/apt/preferences.d";
Dir::Etc::netrc "{root}/etc/apt/auth.conf";
Dir::Etc::netrcparts "{root}/etc/apt/auth.conf.d";
Dir::Etc::trustedparts "{root}/etc/apt/trusted.gpg.d";
Dir::State "{root}/var/lib/apt";
Dir::State::status "{root}/var/lib/dpkg/status";
Dir::Cache "{root}/var/cache/apt";
Dir::Log "{root}/var/log/apt";
DPkg::Options {{ "--root={root}"; "--log={root}/var/log/dpkg.log"; }};
Acquire::http::Proxy "DIRECT";
Acquire::Languages "none";
APT::Architectures {{ "{arch}"; }};
"""


class Apt:
    name = "apt"
    requires = ("sudo", "disk")

    def preflight(self, hosts: int) -> None:
        for tool in ("apt-get", "dpkg", "dpkg-deb"):
            if not shutil.which(tool):
                raise LabError(f"{tool} is missing", hint=INSTALL_HINT)

    def prepare(self, lab: Lab, state: LabState) -> None:
        base = Path(state.runtime) / "apt"
        repo, debs = base / "repo", base / "debs"
        for version in ("1.0", "2.0"):
            for package in PACKAGES:
                build_deb(base / "build", debs, package, version)
        for package, suite in PACKAGES.items():
            publish(repo, suite, debs / f"{package}_2.0_all.deb")
        for package, version, fields in SOFTWARE:
            publish(repo, "lab", build_deb(base / "build", debs, package, version, fields))
        for suite in SUITES:
            write_release(repo, suite)
        arch = subprocess.run(
            ["dpkg", "--print-architecture"], capture_output=True, text=True, check=True
        ).stdout.strip()
        for host in state.hosts:
            root = host_root(state, host)
            etc = root / "etc" / "apt"
            for sub in (
                "apt.conf.d",
                "sources.list.d",
                "preferences.d",
                "auth.conf.d",
                "trusted.gpg.d",
            ):
                (etc / sub).mkdir(parents=True, exist_ok=True)
            (etc / "apt.conf.main").write_text("")
            for sub in (
                "var/lib/dpkg/updates",
                "var/lib/dpkg/info",
                "var/lib/apt/lists/partial",
                "var/cache/apt/archives/partial",
                "var/log/apt",
            ):
                (root / sub).mkdir(parents=True, exist_ok=True)
            for name in ("status", "available"):
                (root / "var/lib/dpkg" / name).touch()
            (etc / "apt.conf").write_text(APT_CONF.format(host=host.name, root=root, arch=arch))
            host.env["APT_CONFIG"] = str(etc / "apt.conf")
            host.vars["package_root"] = str(root)  # its dpkg database and installed files
            dpkg(root, "-i", *(str(debs / f"{p}_1.0_all.deb") for p in PACKAGES))

    def start(self, lab: Lab, state: LabState) -> None:
        base = Path(state.runtime) / "apt"
        port = serve_directory(state, "apt-mirror", base / "repo", lab.dir / "apt-mirror.log")
        state.data["apt"] = {"port": port, "repo": str(base / "repo")}
        for host in state.hosts:
            etc = host_root(state, host) / "etc" / "apt"
            (etc / "sources.list").write_text(
                "".join(
                    f"deb [trusted=yes] http://127.0.0.1:{port} {suite} main\n" for suite in SUITES
                )
            )
            self.refresh(state, host.name)

    def cleanup(self, lab: Lab, state: LabState) -> None:
        pass  # everything lives in the lab's runtime folder and the hosts' disks

    # -- for tests and practice --------------------------------------------------------------
    def apt(self, state: LabState, name: str, *args: str) -> str:
        """Run apt-get for one lab host, here, as root (with that host's APT_CONFIG)."""
        host = state.host(name)
        env = {**os.environ, "APT_CONFIG": host.env["APT_CONFIG"], "LC_ALL": "C"}
        env["DEBIAN_FRONTEND"] = "noninteractive"
        done = subprocess.run(
            ["apt-get", *args], env=env, capture_output=True, text=True, timeout=120
        )
        if done.returncode != 0:
            raise LabError(f"apt-get {' '.join(args)} on {name} failed: {done.stderr.strip()}")
        return done.stdout

    def refresh(self, state: LabState, name: str) -> None:
        """What the apt-daily timer does on a real host: refresh the package lists."""
        self.apt(state, name, "-q", "update")

    def installed(self, state: LabState, name: str) -> dict[str, str]:
        """Package → installed version in a lab host's own dpkg database."""
        root = host_root(state, state.host(name))
        out = subprocess.run(
            [
                "dpkg-query",
                f"--admindir={root}/var/lib/dpkg",
                "-W",
                "-f",
                "${Package} ${Version}\\n",
            ],
            capture_output=True,
            text=True,
            check=True,
        ).stdout
        return dict(line.split(" ", 1) for line in out.splitlines() if " " in line)

    def purge(self, state: LabState, name: str, *packages: str) -> None:
        """Take packages off a lab host whatever they are (Essential too): a test's cleanup."""
        root = host_root(state, state.host(name))
        dpkg(root, "--force-remove-essential", "--force-depends", "--purge", *packages)

    @contextlib.contextmanager
    def hold_lock(self, state: LabState, name: str) -> Iterator[None]:
        """Hold a lab host's dpkg frontend lock, as a running apt or unattended-upgrade would."""
        lock = host_root(state, state.host(name)) / "var/lib/dpkg/lock-frontend"
        fd = os.open(lock, os.O_RDWR | os.O_CREAT, 0o640)
        try:
            fcntl.lockf(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            yield
        finally:
            os.close(fd)


def build_deb(
    work: Path, out: Path, package: str, version: str, fields: dict[str, str] | None = None
) -> Path:
    """A tiny .deb: /usr/share/PACKAGE/VERSION, and with `fields` (control fields such as
    Depends, Essential) a /usr/bin/PACKAGE program that answers --version."""
    tree = work / f"{package}-{version}"
    (tree / "DEBIAN").mkdir(parents=True, exist_ok=True)
    share = tree / "usr" / "share" / package
    share.mkdir(parents=True, exist_ok=True)
    (share / "VERSION").write_text(version + "\n")
    control = {"Priority": "optional", **(fields or {})}
    if fields is not None:
        program = tree / "usr" / "bin" / package
        program.parent.mkdir(parents=True, exist_ok=True)
        extra = GREET_EXTRA if package == "itops-lab-greet" else ""
        program.write_text(PROGRAM.format(package=package, version=version, extra=extra))
        program.chmod(0o755)
    (tree / "DEBIAN" / "control").write_text(
        f"Package: {package}\nVersion: {version}\nArchitecture: all\n"
        "Maintainer: itops lab <lab@localhost>\nSection: misc\n"
        + "".join(f"{k}: {v}\n" for k, v in control.items())
        + f"Description: itops lab test package ({package})\n"
        " A package that exists only in an itops lab repository.\n"
    )
    out.mkdir(parents=True, exist_ok=True)
    deb = out / f"{package}_{version}_all.deb"
    subprocess.run(
        ["dpkg-deb", "--root-owner-group", "-Zgzip", "--build", str(tree), str(deb)],
        capture_output=True,
        check=True,
    )
    return deb


def publish(repo: Path, suite: str, deb: Path) -> None:
    """Add a .deb to a suite of the lab repository (its Packages index; then write_release)."""
    pool = repo / "pool" / suite
    pool.mkdir(parents=True, exist_ok=True)
    shutil.copy(deb, pool / deb.name)
    fields = subprocess.run(
        ["dpkg-deb", "-f", str(deb)], capture_output=True, text=True, check=True
    ).stdout.rstrip("\n")
    data = deb.read_bytes()
    stanza = (
        f"{fields}\nFilename: pool/{suite}/{deb.name}\nSize: {len(data)}\n"
        f"SHA256: {hashlib.sha256(data).hexdigest()}\n\n"
    )
    index = repo / "dists" / suite / "main" / "binary-all" / "Packages"
    index.parent.mkdir(parents=True, exist_ok=True)
    with open(index, "a") as f:
        f.write(stanza)


def write_release(repo: Path, suite: str) -> None:
    base = repo / "dists" / suite
    index = base / "main" / "binary-all" / "Packages"
    index.parent.mkdir(parents=True, exist_ok=True)
    index.touch()
    index.with_suffix(".gz").write_bytes(gzip.compress(index.read_bytes(), mtime=0))
    lines = [
        "Origin: itops-lab",
        "Label: itops-lab",
        f"Suite: {suite}",
        f"Codename: {suite}",
        "Date: " + time.strftime("%a, %d %b %Y %H:%M:%S UTC", time.gmtime()),
        "Architectures: all",
        "Components: main",
        "SHA256:",
    ]
    for path in sorted(p for p in base.rglob("*") if p.is_file() and p.name != "Release"):
        data = path.read_bytes()
        lines.append(f" {hashlib.sha256(data).hexdigest()} {len(data)} {path.relative_to(base)}")
    (base / "Release").write_text("\n".join(lines) + "\n")


def dpkg(root: Path, *args: str) -> None:
    done = subprocess.run(
        ["dpkg", f"--root={root}", f"--log={root}/var/log/dpkg.log", *args],
        capture_output=True,
        text=True,
    )
    if done.returncode != 0:
        raise LabError(f"dpkg {' '.join(args)} in {root} failed: {done.stderr.strip()}")
