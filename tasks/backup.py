"""File backups of Linux hosts into the workspace backup store, and restores from it."""

from __future__ import annotations

import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

from toolkit.backups.files import BACKUP_ID, FOLDER, Backup, FileBackupStore, Member, series_of
from toolkit.errors import NotFound, ToolkitError, ValidationError
from toolkit.remediation.catalog import Context, Finding, Param, Remediation, remediation
from toolkit.remediation.facts import Fact, read, succeeded
from toolkit.remediation.linux import ABSOLUTE_PATH, human_bytes, output
from toolkit.remediation.quoting import Command, cmd, script

MAX_RESTORE_FILES = 500


def relative(path: str) -> str:
    """`/home/jdoe` → `./home/jdoe`: names for `tar -C /` that can never read as an option."""
    return "./" + path.strip("/") if path.strip("/") else "."


def hash_command(paths: list[str]) -> Command:
    """SHA-256 of every regular file under the paths, NUL-separated (any file name survives)."""
    return cmd("cd", "/").then(
        cmd("find", *[relative(p) for p in paths], "-type", "f", "-print0")
        | cmd("xargs", "-0", "-r", "sha256sum", "-z")
    )


def parse_hashes(text: str) -> dict[str, str]:
    """`sha256sum -z` output (`HASH  name` records, NUL-terminated) → host path → hash; names
    relative to / (`./home/…`) become absolute."""
    found = {}
    for record in text.split("\0"):
        digest, sep, name = record.partition("  ")
        if sep and len(digest) == 64:
            found["/" + name.removeprefix("./").lstrip("/")] = digest
    return found


@dataclass(frozen=True)
class TreeHashes(Fact[dict[str, str]]):
    """SHA-256 of every regular file under `paths` (as root), by absolute path."""

    paths: tuple[str, ...]
    become: ClassVar[bool] = True

    def command(self) -> Command:
        return hash_command(list(self.paths))

    def parse(self, stdout: str, stderr: str, exit_code: int) -> dict[str, str]:
        return parse_hashes(succeeded("hashing the files", stdout, stderr, exit_code))


@dataclass(frozen=True)
class FileHashes(Fact[dict[str, str]]):
    """SHA-256 of each of `paths` (as root), by path; a missing file is simply absent."""

    paths: tuple[str, ...]
    become: ClassVar[bool] = True

    def command(self) -> Command:
        return cmd("sha256sum", "-z", "--", *self.paths)

    def parse(self, stdout: str, stderr: str, exit_code: int) -> dict[str, str]:
        return parse_hashes(stdout)


@dataclass(frozen=True)
class Exists(Fact[bool]):
    """Is there anything at `path` (as root: it may be in a folder only root can read)?"""

    path: str
    become: ClassVar[bool] = True

    def command(self) -> Command:
        return cmd("test", "-e", self.path)

    def parse(self, stdout: str, stderr: str, exit_code: int) -> bool:
        return exit_code == 0


@dataclass(frozen=True)
class HasZstd(Fact[bool]):
    """Does the host have zstd (for `tar --zstd`)?"""

    def command(self) -> Command:
        return script("command -v zstd >/dev/null 2>&1")

    def parse(self, stdout: str, stderr: str, exit_code: int) -> bool:
        return exit_code == 0


@dataclass(frozen=True)
class FileSha256(Fact[str]):
    """One file's SHA-256 as the host computes it (the archive before it is fetched)."""

    path: str

    def command(self) -> Command:
        return cmd("sha256sum", "--", self.path)

    def parse(self, stdout: str, stderr: str, exit_code: int) -> str:
        return succeeded("sha256sum", stdout, stderr, exit_code).split()[0]


@dataclass(frozen=True)
class LinkFree(Fact[str | None]):
    """Why `dest` may not be written through (a folder on the way resolves elsewhere, or it is
    a symbolic link itself), as root; None if it may."""

    dest: str
    become: ClassVar[bool] = True

    def command(self) -> Command:
        return script(NO_SYMLINKS, dest=self.dest)

    def parse(self, stdout: str, stderr: str, exit_code: int) -> str | None:
        return None if exit_code == 0 else stderr.strip()


def store(ctx: Context) -> FileBackupStore:
    return FileBackupStore(ctx.artifacts(FOLDER))


@remediation(
    "backup.files",
    category="backup",
    platforms={"linux"},
    summary="Back up files and folders into the workspace backup store, with a SHA-256 manifest",
)
class BackupFiles(Remediation):
    """Archive the given paths on the host (tar with zstd, or gzip where the host has no zstd)
    as root into a temporary file, fetch it over the same SSH connection into the workspace
    backup store (.itops/backups/files/<host>/<id>/), and write a manifest with every file's SHA-256.

    Check hashes the files on the host: if the newest backup of the same paths still matches
    them (and its archive is intact) there is nothing to do. Verify re-reads the stored archive,
    re-hashes every file against the manifest and against the hashes the host computed. After a
    backup verifies, older ones of the same paths beyond keep (or older than keep_days) are
    removed. `itops backup list` shows the store; backup.restore puts files back.

    Example:
        itops fix backup.files ws-042 -p paths=/home/jdoe/Documents --ticket INC-1042
        itops fix backup.files web-01 -p paths=/etc -p paths=/srv/www -p keep=3 --ticket CHG-7
        itops fix backup.files ws-042 -p paths=/home/jdoe -p keep_days=30 --check
    """

    paths = Param(
        str, many=True, required=True, kind="path", pattern=ABSOLUTE_PATH, help="what to back up"
    )
    keep = Param(int, default=7, minimum=1, maximum=1000, help="backups of these paths to keep")
    keep_days = Param(int, minimum=1, maximum=3650, help="also remove ones older than this")
    compression = Param(str, default="auto", choices=("auto", "zstd", "gzip"), help="archive")

    def _paths(self) -> list[str]:
        paths = sorted({"/" + p.strip("/") for p in self.paths})
        if "/" in paths:
            raise ValidationError("backing up / as a whole is not what backup.files is for")
        return paths

    series: str
    """The backup series of these paths (check): the one whose newest backup check compares."""
    backup: Backup
    """The backup apply made: verify re-reads it."""
    host_hashes: dict[str, str]
    """Each file's SHA-256 as the host computed it while apply archived it."""

    def _host_hashes(self, ctx: Context, step: str) -> dict[str, str]:
        fact = TreeHashes(tuple(self._paths()))
        if step != "apply":
            return read(ctx, fact, timeout=3600)
        # in apply, on the record as part of the change (the hashes go into its manifest)
        result = ctx.change(fact.command(), become=fact.become, timeout=3600, check=False)
        return fact.parse(result.stdout, result.stderr, result.exit_code)

    def check(self, ctx: Context) -> Finding:
        paths = self._paths()
        missing = [p for p in paths if not read(ctx, Exists(p))]
        if missing:
            raise NotFound(f"nothing to back up at {', '.join(missing)} on {ctx.host.name}")
        hashes = self._host_hashes(ctx, "check")
        self.series = series_of(paths)
        backups = store(ctx)
        last = backups.latest(ctx.host.name, self.series)
        facts: dict[str, Any] = {"paths": paths, "files": len(hashes)}
        if last is not None:
            facts["last_backup"] = last.id
            stored = {m.path: m.sha256 for m in last.files}
            if stored == hashes and not backups.verify(last, members=False):
                return Finding.healthy(
                    f"backup {last.id} still matches all {len(hashes)} file(s) of "
                    f"{', '.join(paths)}",
                    **facts,
                )
        return Finding.problem(
            f"backup needed: {len(hashes)} file(s) in {', '.join(paths)}; last backup "
            + (last.id if last else "none"),
            **facts,
        )

    def apply(self, ctx: Context) -> None:
        paths = self._paths()
        compression = str(self.compression)
        if compression == "auto":
            compression = "zstd" if read(ctx, HasZstd()) else "gzip"
        remote = output(ctx.change(cmd("mktemp", "/tmp/itops-backup.XXXXXXXX")), "mktemp").strip()
        if not remote.startswith("/tmp/itops-backup."):
            raise ToolkitError(f"unexpected temporary file name {remote!r}")
        backups = store(ctx)
        backup_id = backups.new_id()
        try:
            hashes = self._host_hashes(ctx, "apply")
            flag = "--zstd" if compression == "zstd" else "--gzip"
            tar = ctx.change(
                cmd(
                    "tar",
                    "--create",
                    flag,
                    f"--file={remote}",
                    "-C",
                    "/",
                    "--",
                    *map(relative, paths),
                ),
                become=True,
                timeout=3600,
                check=False,
            )
            if tar.exit_code not in (0, 1):  # 1: a file changed while it was read (verify says)
                raise ToolkitError(
                    f"tar exited {tar.exit_code}: {(tar.stderr.strip().splitlines() or [''])[-1]}"
                )
            remote_sum = read(ctx, FileSha256(remote))
            with backups.incoming(ctx.host.name, backup_id, compression) as local:
                ctx.get(remote, local)
                self.backup = backups.record(
                    ctx.host.name,
                    backup_id,
                    local,
                    compression=compression,
                    paths=paths,
                    ticket=ctx.ticket,
                    host_hashes=hashes,
                )
        finally:
            ctx.change(cmd("rm", "-f", "--", remote), check=False)
        if self.backup.archive_sha256 != remote_sum:
            raise ToolkitError("the fetched archive's SHA-256 differs from the host's")
        self.host_hashes = hashes
        files = self.backup.files
        ctx.note(
            f"backup {backup_id}: {len(files)} file(s), {human_bytes(sum(m.size for m in files))} "
            f"→ {human_bytes(self.backup.archive_size)} {compression}"
        )
        if backups.verify(self.backup):
            ctx.note("the new backup did not verify: older backups kept")
            return
        removed = backups.prune(
            ctx.host.name,
            self.backup.series,
            keep=int(self.keep),
            keep_days=int(self.keep_days) if self.keep_days else None,
            protect=backup_id,
        )
        if removed:
            ctx.note(f"retention removed: {', '.join(removed)}")

    def verify(self, ctx: Context) -> Finding:
        backup = self.backup
        problems = store(ctx).verify(backup)
        problems += [f"{p}: changed while being archived" for p in backup.mismatches]
        facts = {
            "backup": backup.id,
            "files": len(backup.files),
            "archive_sha256": backup.archive_sha256,
            "store": str(store(ctx).folder(backup.host, backup.id)),
        }
        if problems:
            return Finding.problem(f"backup {backup.id}: " + "; ".join(problems[:5]), **facts)
        return Finding.healthy(
            f"backup {backup.id}: {len(backup.files)} file(s) verified by SHA-256", **facts
        )


# The destination's folder must be what it says (no symlink on the way), and the file no link.
NO_SYMLINKS = (
    'p={dest}; d=$(dirname -- "$p"); r=$(realpath -m -- "$d") || exit 3; '
    'if [ "$r" != "$d" ]; then echo "$d resolves to $r" >&2; exit 3; fi; '
    'if [ -L "$p" ]; then echo "$p is a symbolic link" >&2; exit 3; fi'
)
AS_ROOT = (
    "if [ -e {dest} ] && [ ! -e {keep} ]; then cp -p -- {dest} {keep}; fi "
    "&& install -D -m {mode} -o {uid} -g {gid} -- {tmp} {dest} "
    "&& touch -m -d @{mtime} -- {dest}"
)
AS_OWNER = (
    "chown {uid}:{gid} -- {tmp} && setpriv --reuid={uid} --regid={gid} --clear-groups -- "
    "/bin/sh -c '"
    'mkdir -p -- "$(dirname -- "$1")" && '
    'if [ -e "$1" ] && [ ! -e "$2" ]; then cp -p -- "$1" "$2"; fi && '
    'install -m "$3" -- "$4" "$1" && touch -m -d "@$5" -- "$1"'
    "' itops {dest} {keep} {mode} {tmp} {mtime}"
)


@remediation(
    "backup.restore",
    category="backup",
    platforms={"linux"},
    summary="Put a file or folder back from the workspace backup store (needs a ticket)",
)
class RestoreFiles(Remediation):
    """Restore a file (or every file under a folder) from a backup made by backup.files: the
    newest backup that holds the path, or the one named by `backup`.

    Check compares each file on the host with its SHA-256 in the manifest; matching files are
    left alone. Apply uploads each differing file over SFTP and installs it as root with its
    owner, mode and time from the archive, keeping the current file beside it as
    `<name>.itops-before-<backup id>`; `to` restores a single file under another name. Verify
    re-hashes the restored files. Like every change, it runs under a ticket.

    Example:
        itops fix backup.restore ws-042 -p path=/home/jdoe/Documents/report.odt --ticket INC-1043
        itops fix backup.restore ws-042 -p path=/home/jdoe/Mail -p backup=20261121T101500Z-3f9a -t INC-1043
        itops fix backup.restore ws-042 -p path=/etc/hosts -p to=/root/hosts.restored --ticket INC-1044
    """

    path = Param(str, required=True, kind="path", pattern=ABSOLUTE_PATH, help="file or folder")
    backup = Param(str, pattern=BACKUP_ID, help="backup id (default: the newest holding path)")
    to = Param(str, kind="path", pattern=ABSOLUTE_PATH, help="restore one file to this path")

    def _plan(self, ctx: Context) -> tuple[Backup, list[tuple[Member, str]]]:
        backups = store(ctx)
        path = "/" + str(self.path).strip("/")
        chosen = (
            backups.get(ctx.host.name, str(self.backup))
            if self.backup
            else backups.latest(ctx.host.name, containing=path)
        )
        if chosen is None:
            raise NotFound(f"no backup of {ctx.host.name} holds {path}", hint="itops backup list")
        members = backups.select(chosen, path)
        if not members:
            raise NotFound(f"backup {chosen.id} of {ctx.host.name} does not hold {path}")
        if len(members) > MAX_RESTORE_FILES:
            raise ValidationError(
                f"{path} holds {len(members)} files in backup {chosen.id}",
                hint=f"restore at most {MAX_RESTORE_FILES} at a time: name a smaller folder",
            )
        if self.to:
            if len(members) != 1 or members[0].path != path:
                raise ValidationError("`to` restores a single file: give its path, not a folder")
            return chosen, [(members[0], str(self.to))]
        return chosen, [(m, m.path) for m in members]

    chosen: Backup
    """The backup check restores from (the one named, or the newest holding the path)."""
    todo: list[tuple[Member, str]]
    """The files that differ from it (check), each with where it goes: apply restores them."""

    def _current(self, ctx: Context, destinations: list[str]) -> dict[str, str]:
        return read(ctx, FileHashes(tuple(destinations)))  # a missing file is simply absent

    def check(self, ctx: Context) -> Finding:
        chosen, plan = self._plan(ctx)
        current = self._current(ctx, [dest for _, dest in plan])
        self.chosen = chosen
        self.todo = [(m, dest) for m, dest in plan if current.get(dest) != m.sha256]
        facts = {"backup": chosen.id, "files": len(plan), "differing": [d for _, d in self.todo]}
        if not self.todo:
            return Finding.healthy(f"all {len(plan)} file(s) match backup {chosen.id}", **facts)
        missing = sum(dest not in current for _, dest in self.todo)
        return Finding.problem(
            f"{len(self.todo)} of {len(plan)} file(s) differ from backup {chosen.id} "
            f"({missing} missing): " + ", ".join(d for _, d in self.todo[:5]),
            **facts,
        )

    def apply(self, ctx: Context) -> None:
        backups = store(ctx)
        with tempfile.TemporaryDirectory(prefix="itops-restore-") as tmp:
            local = backups.extract(self.chosen, [m.path for m, _ in self.todo], Path(tmp))
            for member, dest in self.todo:
                remote = output(
                    ctx.change(cmd("mktemp", "/tmp/itops-restore.XXXXXXXX")), "mktemp"
                ).strip()
                try:
                    ctx.put(local[member.path], remote)
                    keep = f"{dest}.itops-before-{self.chosen.id}"
                    # Resolved on the host, as root: a folder on the way that a user replaced
                    # with a symlink (~/Documents → /etc/profile.d) stops the restore there.
                    why = read(ctx, LinkFree(dest))
                    if why is not None:
                        raise ToolkitError(
                            f"refusing to restore {dest}: {why}",
                            hint="a folder on the way is a symbolic link: restore with -p to=…",
                        )
                    values: dict[str, str | int] = {
                        "dest": dest,
                        "keep": keep,
                        "mode": f"{member.mode & 0o7777:o}",
                        "uid": member.uid,
                        "gid": member.gid,
                        "tmp": remote,
                        "mtime": member.mtime,
                    }
                    # A user's file is written as that user (a link it planted later still
                    # cannot reach what the user may not write); root's files as root.
                    ctx.change(script(AS_OWNER if member.uid else AS_ROOT, **values), become=True)
                finally:
                    # (as root: a user's restore made the temporary file theirs)
                    ctx.change(cmd("rm", "-f", "--", remote), become=True, check=False)
        ctx.note(
            f"restored from backup {self.chosen.id}: " + ", ".join(d for _, d in self.todo[:10])
        )

    def verify(self, ctx: Context) -> Finding:
        current = self._current(ctx, [dest for _, dest in self.todo])
        bad = [dest for m, dest in self.todo if current.get(dest) != m.sha256]
        if bad:
            return Finding.problem(f"not restored: {', '.join(bad[:5])}", differing=bad)
        return Finding.healthy(
            f"{len(self.todo)} file(s) restored from backup {self.chosen.id}, SHA-256 verified",
            restored=[d for _, d in self.todo],
        )


@remediation(
    "backup.list",
    category="backup",
    platforms={"linux"},
    summary="List a host's backups in the workspace store and check every archive is intact",
)
class ListBackups(Remediation):
    """List the host's backups in the workspace backup store (read-only): id, paths, files,
    sizes, and whether each archive still matches its SHA-256. A host without any backup, or
    with a damaged one, is reported as a problem. Run it with --check; `itops backup list` shows
    the same without connecting.

    Example:
        itops fix backup.list ws-042 --check
    """

    def check(self, ctx: Context) -> Finding:
        backups = store(ctx)
        found = backups.backups(ctx.host.name)
        damaged = [b.id for b in found if backups.verify(b, members=False)]
        facts = {"backups": [b.summary() for b in found], "damaged": damaged}
        if not found:
            return Finding.problem(f"no backup of {ctx.host.name} in the store", **facts)
        if damaged:
            return Finding.problem(f"damaged backup(s): {', '.join(damaged)}", **facts)
        newest = found[0]
        return Finding.healthy(
            f"{len(found)} backup(s); newest {newest.id} of {', '.join(newest.paths)} "
            f"({len(newest.files)} file(s))",
            **facts,
        )

    def apply(self, ctx: Context) -> None:
        ctx.note("backup.list only reads; run backup.files to make a backup")
