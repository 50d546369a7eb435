"""ClamAV on Linux: signature updates (freshclam) and scans (clamscan)."""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any, ClassVar

from toolkit.errors import ToolkitError
from toolkit.remediation.catalog import Context, Finding, Param, Remediation, remediation
from toolkit.remediation.facts import Fact, read, succeeded
from toolkit.remediation.linux import ABSOLUTE_PATH, host_var
from toolkit.remediation.quoting import Command, cmd, script

FRESHCLAM_CONFIG = "/etc/clamav/freshclam.conf"
DEFAULT_DATABASE = "/var/lib/clamav"
QUARANTINE = "/var/lib/itops/quarantine"
# The EICAR anti-virus test string, in two halves so that no scanner flags this file — nor its
# bytecode: a `+` of two literals is folded into one constant in the .pyc (which av.scan then
# found in itops' own __pycache__), a join() is not.
EICAR = "".join(("X5O!P%@AP[4\\PZX54(P^)7CC)7}$", "EICAR-STANDARD-ANTIVIRUS-TEST-FILE!$H+H*"))

# The database folder freshclam writes (from its config), then one line per database file:
# `name|size|mtime|sha256|version|build time` (version and build time from CVD/CLD headers).
DATABASE_STATE = (
    "conf={conf}; db=$(sed -n 's/^[[:space:]]*DatabaseDirectory[[:space:]]\\{{1,\\}}//p' \"$conf\" "
    "2>/dev/null | tail -n 1); db=${{db:-{default}}}; echo \"dir|$db\"; date +'now|%s'; "
    'for f in "$db"/*.cvd "$db"/*.cld "$db"/*.cud "$db"/*.hdb "$db"/*.hsb "$db"/*.ndb '
    '"$db"/*.ldb "$db"/*.mdb "$db"/*.msb "$db"/*.cdb "$db"/*.ign2 "$db"/*.fp "$db"/*.sfp; do '
    '[ -f "$f" ] || continue; v=; b=; case "$f" in *.cvd|*.cld|*.cud) '
    "v=$(sigtool --info \"$f\" 2>/dev/null | sed -n 's/^Version: //p'); "
    "b=$(sigtool --info \"$f\" 2>/dev/null | sed -n 's/^Build time: //p');; esac; "
    'echo "db|$(basename "$f")|$(stat -c \'%s|%Y\' "$f")|$(sha256sum < "$f" | cut -c1-16)|$v|$b"; '
    "done"
)
# Is a freshclam daemon running (it would hold freshclam's lock), and is clamd?
DAEMONS = script(
    "if [ -d /run/systemd/system ]; then systemctl is-active --quiet clamav-freshclam && echo "
    "freshclam=systemd; elif [ -x /etc/init.d/clamav-freshclam ] && "
    "/etc/init.d/clamav-freshclam status >/dev/null 2>&1; then echo freshclam=sysv; fi; "
    "clamdscan --ping 1 >/dev/null 2>&1 && echo clamd=up; true"
)
# Write the EICAR string to a temporary file, scan it with the host's databases, remove it.
DETECTION_TEST = (
    't=$(mktemp) && printf %s {eicar} > "$t" && clamscan --no-summary --stdout --database={db} '
    '-- "$t"; rc=$?; rm -f "$t"; exit $rc'
)
# A quick scan's bounds: big files and archives are what a full scan is for.
QUICK_LIMITS = ["--max-filesize=25M", "--max-scansize=100M", "--max-recursion=8"]
_FOUND = re.compile(r"^(.*): (\S+) FOUND$")
_MOVED = re.compile(r"^(.*): moved to '(.*)'$")


@dataclass(frozen=True)
class Database:
    name: str
    size: int
    mtime: int
    digest: str
    version: str = ""
    built: str = ""


@dataclass(frozen=True)
class SignatureState:
    directory: str
    now: int
    databases: tuple[Database, ...]

    @property
    def newest(self) -> int:
        """When the newest database was built (CVD header) or written (custom database)."""
        stamps = [_build_time(d) or d.mtime for d in self.databases]
        return max(stamps, default=0)

    @property
    def age_days(self) -> float:
        return max(0.0, (self.now - self.newest) / 86400) if self.databases else float("inf")

    @property
    def version(self) -> str:
        """The official daily/main versions, or a digest of the (custom) databases' contents."""
        official = [f"{d.name}:{d.version}" for d in self.databases if d.version]
        if official:
            return " ".join(sorted(official))
        return "custom:" + "".join(
            d.digest[:4] for d in sorted(self.databases, key=lambda d: d.name)
        )


def _build_time(db: Database) -> int:
    try:
        return int(datetime.strptime(db.built.strip(), "%d %b %Y %H-%M %z").timestamp())
    except ValueError:
        return 0


@dataclass(frozen=True)
class SignatureDatabases(Fact[SignatureState]):
    """The databases freshclam maintains: their folder (from the freshclam config `conf`), the
    host's clock, and per file its size, time, digest and (CVD/CLD headers) version and build."""

    conf: str

    def command(self) -> Command:
        return script(DATABASE_STATE, conf=self.conf, default=DEFAULT_DATABASE)

    def parse(self, stdout: str, stderr: str, exit_code: int) -> SignatureState:
        text = succeeded("reading the ClamAV databases", stdout, stderr, exit_code)
        return parse_database_state(text)


def parse_database_state(text: str) -> SignatureState:
    directory, now, found = DEFAULT_DATABASE, 0, []
    for line in text.splitlines():
        kind, _, rest = line.partition("|")
        if kind == "dir":
            directory = rest.strip() or DEFAULT_DATABASE
        elif kind == "now":
            now = int(rest or 0)
        elif kind == "db":
            parts = rest.split("|")
            if len(parts) >= 6:
                found.append(
                    Database(
                        parts[0],
                        int(parts[1] or 0),
                        int(parts[2] or 0),
                        parts[3],
                        parts[4],
                        parts[5],
                    )
                )
    return SignatureState(directory, now, tuple(found))


def read_signatures(ctx: Context) -> SignatureState:
    return read(ctx, SignatureDatabases(host_var(ctx, "clamav_freshclam_config", FRESHCLAM_CONFIG)))


@dataclass(frozen=True)
class Detections:
    """What clamscan found — (file, signature) — and where it moved files (file → path)."""

    found: tuple[tuple[str, str], ...]
    moved: Mapping[str, str]


@dataclass(frozen=True)
class ClamScan(Fact[Detections]):
    """A clamscan run (`argv`, as root: it reads every user's files); exit 0 clean, 1 found,
    anything else an error. Apply runs the same command as a change (--move, --remove)."""

    argv: tuple[str, ...]
    become: ClassVar[bool] = True

    def command(self) -> Command:
        return cmd(*self.argv)

    def parse(self, stdout: str, stderr: str, exit_code: int) -> Detections:
        if exit_code not in (0, 1):
            last = (stderr or stdout).strip().splitlines()
            raise ToolkitError(
                f"clamscan exited {exit_code}" + (f": {last[-1][:200]}" if last else ""),
                hint="exit 2 with no database: run av.update first",
            )
        found, moved = parse_scan(stdout)
        return Detections(tuple(found), moved)


def parse_scan(text: str) -> tuple[list[tuple[str, str]], dict[str, str]]:
    """(file, signature) detections and file → quarantine path moves from clamscan output."""
    found, moved = [], {}
    for line in text.splitlines():
        if m := _FOUND.match(line):
            found.append((m.group(1), m.group(2)))
        elif m := _MOVED.match(line):
            moved[m.group(1)] = m.group(2)
    return found, moved


@remediation(
    "av.update",
    category="security",
    platforms={"linux"},
    summary="Update ClamAV signatures (freshclam) when they are out of date, then prove detection",
)
class UpdateSignatures(Remediation):
    """Update ClamAV's signature databases with freshclam when they are older than max_age_days.

    Check reads the databases freshclam maintains (their folder from the freshclam config: the
    host variable `clamav_freshclam_config`, default /etc/clamav/freshclam.conf): official CVD
    versions and build times, or for custom databases their digests and times. Apply runs
    freshclam with that config as root (pausing a running freshclam daemon meanwhile) and tells
    a running clamd to reload. Verify: the databases changed or are within the age limit, and
    the detection test passes — the EICAR test string written to a temporary file is detected.

    Example:
        itops fix av.update ws-042 --ticket INC-1042
        itops fix av.update linux -p max_age_days=0 --check
    """

    max_age_days = Param(int, default=1, minimum=0, maximum=60, help="oldest acceptable signatures")

    before: SignatureState
    """The databases as check found them; verify wants them changed or young enough."""
    current: bool = False
    """Whether freshclam said the mirror had nothing newer (then old signatures are the newest)."""

    def _finding(self, state: SignatureState, after: str = "") -> Finding:
        facts: dict[str, Any] = {
            "database_dir": state.directory,
            "version": state.version if state.databases else None,
            "age_days": round(state.age_days, 2) if state.databases else None,
            "databases": [d.name for d in state.databases],
        }
        if not state.databases:
            return Finding.problem(f"no ClamAV signature database in {state.directory}", **facts)
        summary = f"signatures {state.version}, {state.age_days:.1f} day(s) old{after}"
        if state.age_days > int(self.max_age_days):
            return Finding.problem(summary, **facts)
        return Finding.healthy(summary, **facts)

    def check(self, ctx: Context) -> Finding:
        self.before = read_signatures(ctx)
        return self._finding(self.before)

    def apply(self, ctx: Context) -> None:
        conf = host_var(ctx, "clamav_freshclam_config", FRESHCLAM_CONFIG)
        daemons = ctx.read(DAEMONS).stdout
        paused = "freshclam=systemd" in daemons or "freshclam=sysv" in daemons
        if "freshclam=systemd" in daemons:
            ctx.change(cmd("systemctl", "stop", "clamav-freshclam"), become=True)
        elif "freshclam=sysv" in daemons:
            ctx.change(cmd("service", "clamav-freshclam", "stop"), become=True)
        try:
            result = ctx.change(
                cmd("freshclam", f"--config-file={conf}", "--stdout"),
                become=True,
                timeout=600,
                check=False,
            )
        finally:
            if "freshclam=systemd" in daemons:
                ctx.change(cmd("systemctl", "start", "clamav-freshclam"), become=True)
            elif "freshclam=sysv" in daemons:
                ctx.change(cmd("service", "clamav-freshclam", "start"), become=True)
        updated = [ln.split()[0] for ln in result.stdout.splitlines() if " updated (" in ln]
        if result.exit_code != 0:
            last = (result.stdout + result.stderr).strip().splitlines()
            raise ToolkitError(
                f"freshclam exited {result.exit_code}" + (f": {last[-1][:200]}" if last else ""),
                hint="check the mirror settings in " + conf,
            )
        # freshclam said the mirror has nothing newer: current is as fresh as it gets, whatever
        # max_age_days asked (0 means "update now", not "newer than the mirror").
        self.current = not updated and result.exit_code == 0
        ctx.note("freshclam updated: " + (", ".join(updated) or "nothing (already current)"))
        if paused:
            ctx.note("the freshclam daemon was paused for the update and started again")
        if "clamd=up" in daemons:
            ctx.change(cmd("clamdscan", "--reload"), become=True)
            ctx.note("clamd told to reload its databases")

    def verify(self, ctx: Context) -> Finding:
        state = read_signatures(ctx)
        test = ctx.read(script(DETECTION_TEST, eicar=EICAR, db=state.directory))
        detected = test.exit_code == 1 and " FOUND" in test.stdout
        changed = state.version != self.before.version or state.newest > self.before.newest
        finding = self._finding(state, f" (was {self.before.version})")
        facts = {**finding.facts, "detection_test": "detected" if detected else "missed"}
        if not detected:
            return Finding.problem(
                f"the EICAR detection test failed (clamscan exit {test.exit_code}); "
                + finding.summary,
                **facts,
            )
        if not (finding.ok or changed or self.current):
            return Finding.problem(f"still {finding.summary} after freshclam", **facts)
        if not (finding.ok or changed):
            return Finding.healthy(
                f"{finding.summary}, the newest the mirror has; EICAR test detected", **facts
            )
        return Finding.healthy(f"{finding.summary}; EICAR test detected", **facts)


@remediation(
    "av.scan",
    category="security",
    platforms={"linux"},
    summary="Scan files with ClamAV and quarantine what it detects; detections are recorded",
)
class Scan(Remediation):
    """Scan a path (or, by mode, the usual download/temp folders or the whole system) with
    clamscan and record every detection (file and signature) in the findings and the ticket log.

    Check is the scan itself (it only reads files). With detections, apply handles them by
    action: quarantine (default: moved, as root, into a 0700 folder — the host variable
    `av_quarantine_dir`, default /var/lib/itops/quarantine), remove, or report (nothing is
    touched and the outcome stays failed for L3 to look at). Verify scans again.

    Example:
        itops fix av.scan ws-042 -p path=/home/jdoe/Downloads --ticket INC-1042
        itops fix av.scan ws-042 -p mode=full -p timeout_minutes=240 --ticket INC-1042
        itops fix av.scan linux -p action=report --check
    """

    path = Param(str, kind="path", pattern=ABSOLUTE_PATH, help="scan only this folder or file")
    mode = Param(str, default="quick", choices=("quick", "full"), help="quick or full")
    action = Param(
        str, default="quarantine", choices=("quarantine", "remove", "report"), help="on detection"
    )
    timeout_minutes = Param(
        int, minimum=1, maximum=1440, help="scan time limit (default: quick 15, full 60)"
    )

    found: list[tuple[str, str]]
    """The detections check found (file, signature): apply notes them, verify reports them."""
    moved: dict[str, str]
    """Where the latest scan moved files (file → quarantine path)."""

    def targets(self) -> list[str]:
        if self.path:
            return [str(self.path)]
        if self.mode == "full":
            return ["/"]
        return ["/home", "/root", "/tmp", "/var/tmp", "/dev/shm"]

    def excluded(self, ctx: Context) -> list[str]:
        """Folders never scanned: the host variable `av_exclude_dirs` (itops' own workspace and
        virtualenv where the host runs itops, as the lab does), checked as absolute paths."""
        value = ctx.host.var("av_exclude_dirs", [])
        folders = value if isinstance(value, list) else str(value or "").split(",")
        found = [str(f).strip().rstrip("/") for f in folders if str(f).strip()]
        for folder in found:
            if not re.fullmatch(ABSOLUTE_PATH, folder):
                raise ToolkitError(
                    f"av_exclude_dirs of {ctx.host.name}: {folder!r} is not an absolute path"
                )
        return found

    def _scan(self, ctx: Context, extra: list[str], step: str) -> list[tuple[str, str]]:
        db = read_signatures(ctx).directory
        argv = ["clamscan", "-r", "-i", "--no-summary", "--stdout", f"--database={db}"]
        if self.mode == "full" and not self.path:
            argv += [f"--exclude-dir=^/{d}" for d in ("proc", "sys", "dev", "run")]
        if self.mode == "quick" and not self.path:
            argv += QUICK_LIMITS  # a quick scan looks at what users download, not archives
        argv += [f"--exclude-dir=^{re.escape(d)}" for d in self.excluded(ctx)]
        argv += [*extra, "--", *self.targets()]
        minutes = self.timeout_minutes or (60 if self.mode == "full" or self.path else 15)
        timeout = int(minutes) * 60.0
        scan = ClamScan(tuple(argv))
        if step == "apply":
            result = ctx.change(scan.command(), become=True, timeout=timeout, check=False)
            done = scan.parse(result.stdout, result.stderr, result.exit_code)
        else:
            done = read(ctx, scan, timeout=timeout)
        self.moved = dict(done.moved)
        return list(done.found)

    def check(self, ctx: Context) -> Finding:
        found = self._scan(ctx, [], "check")
        self.found = found
        where = ", ".join(self.targets())
        facts = {"scanned": self.targets(), "detections": [f"{f}: {s}" for f, s in found]}
        if not found:
            return Finding.healthy(f"scanned {where}: nothing detected", **facts)
        shown = "; ".join(f"{f} ({s})" for f, s in found[:5])
        more = f" and {len(found) - 5} more" if len(found) > 5 else ""
        return Finding.problem(f"{len(found)} detection(s): {shown}{more}", **facts)

    def apply(self, ctx: Context) -> None:
        for f, s in self.found:
            ctx.note(f"detection: {f}: {s}")
        if self.action == "report":
            ctx.note("action=report: detections left in place for L3")
            return
        if self.action == "remove":
            found = self._scan(ctx, ["--remove=yes"], "apply")
            ctx.note(f"removed {len(found)} infected file(s)")
            return
        folder = host_var(ctx, "av_quarantine_dir", QUARANTINE)
        ctx.change(cmd("install", "-d", "-m", "0700", "--", folder), become=True)
        found = self._scan(ctx, [f"--move={folder}"], "apply")
        for f, dest in self.moved.items():
            ctx.note(f"quarantined {f} → {dest}")
        if len(self.moved) < len(found):
            ctx.note(f"{len(found) - len(self.moved)} detection(s) could not be moved")

    def verify(self, ctx: Context) -> Finding:
        found = self._scan(ctx, [], "verify")
        detections = [f"{f}: {s}" for f, s in self.found]
        if found:
            return Finding.problem(
                f"{len(found)} detection(s) remain: "
                + "; ".join(f"{f} ({s})" for f, s in found[:5]),
                detections=detections,
                remaining=[f"{f}: {s}" for f, s in found],
            )
        verb = {"quarantine": "quarantined", "remove": "removed"}.get(str(self.action), "handled")
        return Finding.healthy(
            f"{len(detections)} detection(s) {verb}; a new scan is clean",
            detections=detections,
            quarantine=dict(self.moved),
        )
