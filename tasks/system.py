"""Linux services and disk space: the two most common L2 fixes after the domain-specific ones."""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, ClassVar

from toolkit.errors import ToolkitError
from toolkit.remediation.catalog import Context, Finding, Param, Remediation, remediation
from toolkit.remediation.facts import Fact, read, succeeded
from toolkit.remediation.linux import (
    ABSOLUTE_PATH,
    SERVICE_NAME,
    RestartLinuxService,
    as_int,
    host_var,
    human_bytes,
    key_values,
)
from toolkit.remediation.quoting import Command, script


@remediation(
    "service.restart",
    category="software",
    platforms={"linux"},
    summary="Restart a systemd (or SysV/OpenRC) service and prove it is running again",
)
class RestartService(RestartLinuxService):
    """Restart a hung or stopped service through the host's service manager, as root:
    `systemctl restart` under systemd, else `service NAME restart` (init scripts) or OpenRC.

    A running service is restarted (a hung one often still says active); only_if_stopped=true
    leaves running ones alone. Verify waits until it runs again — under systemd with a new start
    time. Masked services and the ones itops depends on (ssh, dbus, journald, logind, sudo) are
    refused. A restart is one-shot per ticket: a rerun under the same ticket is already-ok while
    the service runs.

    Example:
        itops fix service.restart web-01 -p service=nginx --ticket INC-1042
        itops fix service.restart web-01 -p service=php8.2-fpm.service -p wait_seconds=60 --ticket INC-1042
        itops fix service.restart servers -p service=postfix -p only_if_stopped=true --check
    """

    service = Param(str, required=True, pattern=SERVICE_NAME, help="service (unit) name")

    def service_name(self, ctx: Context) -> str:
        return str(self.service)

    def identity(self) -> Mapping[str, Any]:
        return {"service": self.service}


# Rotated logs: numbered, compressed or .old copies — never the live log files.
ROTATED = (
    "\\( -name '*.[0-9]' -o -name '*.[0-9].log' -o -name '*.gz' -o -name '*.xz' "
    "-o -name '*.bz2' -o -name '*.zst' -o -name '*.old' \\)"
)
DISK_PROBE = (
    'df -P -B1 -- {path} | awk \'NR == 2 {{ print "total=" $2; print "avail=" $4; '
    'print "mount=" $6 }}\'; '
    "if command -v apt-config >/dev/null 2>&1; then "
    'eval "$(apt-config shell ARCHIVES Dir::Cache::archives/d)"; '
    "echo cache=$(find \"$ARCHIVES\" -maxdepth 2 -type f -name '*.deb' -printf '%s\\n' 2>/dev/null "
    "| awk '{{ s += $1 }} END {{ print s + 0 }}'); "
    "elif [ -d /var/cache/dnf ]; then echo cache=$(du -sb /var/cache/dnf | cut -f1); fi; "
    "if [ -d /run/systemd/system ]; then "
    "echo journal=$(journalctl --disk-usage 2>/dev/null | grep -o '[0-9.]*[KMGT]\\?B' | head -n 1); fi; "
    "echo old_logs=$(find {logs} -xdev -type f " + ROTATED + " -mtime +{days} -printf '%s\\n' "
    "2>/dev/null | awk '{{ s += $1 }} END {{ print s + 0 }}'); "
    "echo rotated_logs=$(find {logs} -xdev -type f " + ROTATED + " -printf '%s\\n' 2>/dev/null "
    "| awk '{{ s += $1 }} END {{ print s + 0 }}')"
)


@dataclass(frozen=True)
class DiskState:
    """A filesystem's size and free space, and what could be cleaned on it (bytes)."""

    mount: str
    total: int
    avail: int
    free_percent: float
    cache: int  # the package manager's download cache
    journal: str  # journalctl --disk-usage, as it prints it
    old_logs: int  # rotated logs older than the fact's `days`
    rotated_logs: int  # every rotated log


@dataclass(frozen=True)
class DiskSpace(Fact[DiskState]):
    """`path`'s filesystem (df), the package cache, the journal and the rotated logs under
    `logs`, as root (some caches and logs are root-only)."""

    path: str
    logs: str
    days: int
    become: ClassVar[bool] = True

    def command(self) -> Command:
        return script(DISK_PROBE, path=self.path, logs=self.logs, days=self.days)

    def parse(self, stdout: str, stderr: str, exit_code: int) -> DiskState:
        data = key_values(succeeded("measuring the disk", stdout, stderr, exit_code))
        total, avail = as_int(data.get("total")), as_int(data.get("avail"))
        if total <= 0:
            raise ToolkitError(f"df reported no size for {self.path}")
        return DiskState(
            mount=data.get("mount", ""),
            total=total,
            avail=avail,
            free_percent=round(100.0 * avail / total, 1),
            cache=as_int(data.get("cache")),
            journal=data.get("journal", ""),
            old_logs=as_int(data.get("old_logs")),
            rotated_logs=as_int(data.get("rotated_logs")),
        )


@remediation(
    "disk.cleanup",
    category="software",
    platforms={"linux"},
    summary="Free disk space: package caches, the journal, due log rotation, old rotated logs",
)
class DiskCleanup(Remediation):
    """Free space on a filesystem (path, default /) that has less than min_free_percent free.

    Steps, in order, each only while space is still short: clean the package cache (apt-get
    clean / dnf clean packages), vacuum the systemd journal to older_than_days, run the due log
    rotations (logrotate with the host's config), delete rotated logs (numbered, .gz/.xz/…, .old)
    older than older_than_days, then the remaining rotated logs. Live log files are never
    touched. Logs are in /var/log (host variable `log_dir`); logrotate uses the host variables
    `logrotate_conf` and `logrotate_state` when set. Verify re-reads the free space.

    Example:
        itops fix disk.cleanup ws-042 --ticket INC-1042
        itops fix disk.cleanup web-01 -p path=/var -p min_free_percent=20 --ticket INC-1042
        itops fix disk.cleanup servers -p min_free_percent=15 --check
    """

    path = Param(str, kind="path", pattern=ABSOLUTE_PATH, help="the filesystem (default: /)")
    min_free_percent = Param(
        int, default=10, minimum=1, maximum=90, help="fix hosts below this much free space"
    )
    older_than_days = Param(
        int, default=7, minimum=0, maximum=365, help="rotated logs older than this go first"
    )

    def _path(self, ctx: Context) -> str:
        return str(self.path or host_var(ctx, "disk_path", "/"))

    def _probe(self, ctx: Context) -> DiskState:
        logs = host_var(ctx, "log_dir", "/var/log")
        return read(ctx, DiskSpace(self._path(ctx), logs, int(self.older_than_days)))

    def _finding(self, state: DiskState, after: str = "") -> Finding:
        data = dataclasses.asdict(state)
        summary = (
            f"{data['mount']} {data['free_percent']}% free ({human_bytes(data['avail'])} of "
            f"{human_bytes(data['total'])})"
        )
        if data["free_percent"] >= int(self.min_free_percent):
            return Finding.healthy(summary + after, **data)
        cleanable = ", ".join(
            f"{what} {human_bytes(data[key])}"
            for what, key in (("package cache", "cache"), ("rotated logs", "rotated_logs"))
            if data[key]
        )
        return Finding.problem(
            f"{summary}, below {self.min_free_percent}%"
            + (f"; cleanable: {cleanable}" if cleanable else "")
            + after,
            **data,
        )

    before: DiskState
    """The filesystem as check measured it: apply frees space until it is enough."""
    freed: int
    """Bytes apply freed (verify reports them)."""

    def check(self, ctx: Context) -> Finding:
        self.before = self._probe(ctx)
        return self._finding(self.before)

    def _steps(self, ctx: Context) -> list[tuple[str, Command]]:
        logs = host_var(ctx, "log_dir", "/var/log")
        days = int(self.older_than_days)
        conf = host_var(ctx, "logrotate_conf", "/etc/logrotate.conf")
        state = host_var(ctx, "logrotate_state", "/var/lib/logrotate/status")
        find = "find {logs} -xdev -type f " + ROTATED
        return [
            (
                "package cache",
                script(
                    "if command -v apt-get >/dev/null 2>&1; then apt-get clean; "
                    "elif command -v dnf >/dev/null 2>&1; then dnf -q clean packages; "
                    "elif command -v yum >/dev/null 2>&1; then yum -q clean packages; fi"
                ),
            ),
            (
                "journal",
                script(
                    "if [ -d /run/systemd/system ]; then journalctl --vacuum-time={days}d; fi",
                    days=f"{max(days, 1)}",
                ),
            ),
            (
                "log rotation",
                script(
                    "if command -v logrotate >/dev/null 2>&1 && [ -f {conf} ]; then "
                    "logrotate -s {state} {conf}; fi",
                    conf=conf,
                    state=state,
                ),
            ),
            (
                f"rotated logs older than {days} days",
                script(find + " -mtime +{days} -print -delete | wc -l", logs=logs, days=days),
            ),
            ("all rotated logs", script(find + " -print -delete | wc -l", logs=logs)),
        ]

    def apply(self, ctx: Context) -> None:
        data = self.before
        done = []
        for name, command in self._steps(ctx):
            if data.free_percent >= int(self.min_free_percent):
                break
            result = ctx.change(command, become=True, timeout=1800, check=False)
            if result.exit_code != 0:
                ctx.note(f"{name}: exited {result.exit_code}, continuing")
            after = self._probe(ctx)
            freed = after.avail - data.avail
            done.append(f"{name}: {human_bytes(max(freed, 0))}")
            data = after
        self.freed = data.avail - self.before.avail
        ctx.note("freed " + "; ".join(done) if done else "nothing needed freeing")

    def verify(self, ctx: Context) -> Finding:
        return self._finding(self._probe(ctx), f" after freeing {human_bytes(max(self.freed, 0))}")
