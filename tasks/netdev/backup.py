"""Network configuration backups into the workspace's git history (netmiko devices)."""

from __future__ import annotations

from toolkit.backups.network import FOLDER, ConfigRepository
from toolkit.errors import ToolkitError
from toolkit.remediation.catalog import Context, Finding, Remediation, RunInfo, remediation
from toolkit.remediation.facts import read
from toolkit.remediation.network import config as netconfig
from toolkit.remediation.network.ops import CONFIG_COMMANDS, StartupConfig, running_config


@remediation(
    "backup.network-config",
    category="backup",
    platforms=set(CONFIG_COMMANDS),
    summary="Back up running and startup configuration into the workspace's git history",
)
class NetworkConfigBackup(Remediation):
    """Fetch a device's running (and startup) configuration and keep it in a git repository.

    Secrets (passwords, enable secrets, keys, SNMP communities) become <removed> and volatile
    lines (timestamps, byte counts) are dropped by per-platform rules before anything is stored,
    so an unchanged device gives an identical file. Per device: unchanged (already-ok), changed or
    new (fixed: written, with the diff in the record), or failed. One commit per run, with the
    ticket or change id in its message. `--check` shows what changed and stores nothing.
    `itops backup history DEVICE` and `itops backup diff DEVICE [REV]` read the history.

    Example:
        itops fix backup.network-config switches --ticket CHG-2001
        itops fix backup.network-config 'sw-*' --check
    """

    text: str = ""
    """The device's configuration as stored (sanitized), read by check: apply writes it."""

    def check(self, ctx: Context) -> Finding:
        self.text = self._fetch(ctx)
        store = ConfigRepository(ctx.artifacts(FOLDER))
        lines = self.text.count("\n")
        previous = store.committed(ctx.host.name)
        if previous is None:
            return Finding.problem(f"new: no backup yet ({lines} lines)", status="new")
        old, commit = previous
        if old == self.text:
            return Finding.healthy(f"unchanged since {commit}", status="unchanged", commit=commit)
        name = ctx.host.name
        diff = netconfig.unified_diff(old, self.text, f"{name}@{commit}", f"{name}@device")
        added, removed = netconfig.diff_stat(diff)
        return Finding.problem(
            f"changed since {commit}: +{added} -{removed} lines", status="changed", diff=diff
        )

    def apply(self, ctx: Context) -> None:
        ConfigRepository(ctx.artifacts(FOLDER)).write(ctx.host.name, self.text)

    def verify(self, ctx: Context) -> Finding:
        stored = ConfigRepository(ctx.artifacts(FOLDER)).read(ctx.host.name)
        if stored != self.text:
            return Finding.problem("the backup file does not hold what the device returned")
        return Finding.healthy("stored; committed when the run ends")

    @classmethod
    def finish_run(cls, run: RunInfo) -> list[str]:
        if run.check_only:
            return []
        written = sorted(host for host, outcome in run.outcomes.items() if outcome == "fixed")
        if not written:
            return ["backup: no device changed; nothing committed"]
        store = ConfigRepository(run.artifacts(FOLDER))
        title = f"{run.task}: {len(written)} device(s) changed or new"
        message = f"{title} under {run.ticket}\n\n" + "\n".join(written) + "\n"
        commit = store.commit(written, message)
        notes = [f"backup: commit {commit} in {store.root} ({', '.join(written)})"]
        if store.unpushed:
            notes.append(f"backup: kept here, not yet shared: {store.unpushed}")
        elif store.remote():
            notes.append(f"backup: pushed to {store.remote()}")
        return notes

    def _fetch(self, ctx: Context) -> str:
        platform = ctx.host.platform
        mark = netconfig.rules(platform).comment * 2
        running = netconfig.sanitize(platform, running_config(ctx))
        parts = [f"{mark} itops backup of {ctx.host.name} ({platform}): running configuration\n"]
        parts.append(running)
        if CONFIG_COMMANDS[platform][1] is not None:
            startup = read(ctx, StartupConfig(platform))
            startup = netconfig.sanitize(platform, startup) if startup else ""
            if not startup:
                parts.append(f"{mark} startup configuration: none\n")
            elif startup == running:
                parts.append(f"{mark} startup configuration: same as running\n")
            else:
                parts += [f"{mark} startup configuration (differs: unsaved changes)\n", startup]
        if not running.strip():
            raise ToolkitError("the device returned an empty running configuration")
        return "".join(parts)
