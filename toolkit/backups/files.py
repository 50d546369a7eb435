"""The workspace backup store: archives fetched from hosts, each with a SHA-256 manifest.

Layout: `<state>/backups/files/<host>/<id>/archive.tar.zst` (or `.tar.gz`) and `manifest.json`
(`backups/network` holds the network configurations, toolkit/backups/network.py), where
`<id>` is the UTC time plus a random suffix (`20261121T101500Z-3f9a`). The manifest lists every
archive member (path on the host, type, size, mode, owner, mtime and, for files, SHA-256) and the
archive's own SHA-256; `verify()` re-reads the archive and re-hashes everything against it.
Backups of the same set of paths on the same host form a series; retention (keep the newest N,
drop those older than D days) works within a series and never removes the newest backup.
The store is private to the workspace's owner (folders 0700, files 0600).
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import re
import secrets
import shutil
import tarfile
import time
from collections.abc import Iterator, Sequence
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import IO, Any

from toolkit.clock import iso_seconds
from toolkit.errors import NotFound, ToolkitError, ValidationError

FOLDER = "backups/files"  # under the workspace's state folder (ctx.artifacts(FOLDER))
BACKUP_ID = r"[0-9]{8}T[0-9]{6}Z-[0-9a-f]{4}"
_ID = re.compile(BACKUP_ID)
_HOST = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.-]*")
SUFFIX = {"zstd": ".tar.zst", "gzip": ".tar.gz"}
CHUNK = 1 << 20


@dataclass(frozen=True)
class Member:
    path: str  # absolute path on the host
    type: str  # file | dir | symlink | other
    size: int = 0
    mode: int = 0
    uid: int = 0
    gid: int = 0
    user: str = ""
    group: str = ""
    mtime: int = 0
    sha256: str = ""
    target: str = ""  # symlinks


@dataclass(frozen=True)
class Backup:
    id: str
    host: str
    created: str  # ISO UTC
    paths: tuple[str, ...]
    series: str
    compression: str
    archive: str  # file name inside the backup folder
    archive_sha256: str
    archive_size: int
    members: tuple[Member, ...] = ()
    ticket: str | None = None
    mismatches: tuple[str, ...] = field(default=())  # files that changed while being archived

    @property
    def files(self) -> list[Member]:
        return [m for m in self.members if m.type == "file"]

    @property
    def created_at(self) -> datetime:
        return datetime.fromisoformat(self.created)

    def as_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["members"] = [asdict(m) for m in self.members]
        return data

    def summary(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "host": self.host,
            "created": self.created,
            "paths": list(self.paths),
            "files": len(self.files),
            "bytes": sum(m.size for m in self.files),
            "archive_bytes": self.archive_size,
            "compression": self.compression,
            "ticket": self.ticket,
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Backup:
        members = tuple(Member(**m) for m in data.get("members", []))
        return cls(
            data["id"],
            data["host"],
            data["created"],
            tuple(data["paths"]),
            data["series"],
            data["compression"],
            data["archive"],
            data["archive_sha256"],
            int(data["archive_size"]),
            members,
            data.get("ticket"),
            tuple(data.get("mismatches", ())),
        )


def series_of(paths: Sequence[str]) -> str:
    return hashlib.sha256("\n".join(sorted(paths)).encode()).hexdigest()[:12]


def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


@contextlib.contextmanager
def open_archive(path: Path, compression: str) -> Iterator[tarfile.TarFile]:
    """A tar archive opened for streaming reads (zstd through the zstandard module)."""
    if compression == "gzip":
        with tarfile.open(path, "r|gz") as tar:
            yield tar
        return
    if compression != "zstd":
        raise ToolkitError(f"unknown compression {compression!r}")
    try:
        import zstandard
    except ImportError as exc:  # pragma: no cover - a dependency of itops
        raise ToolkitError(
            "zstd archives need the zstandard module", hint="pip install zstandard"
        ) from exc
    with open(path, "rb") as raw:
        reader: IO[bytes] = zstandard.ZstdDecompressor().stream_reader(raw)
        with tarfile.open(fileobj=reader, mode="r|") as tar:
            yield tar


def host_path(name: str) -> str:
    """Archive member name (`./home/jdoe/a.txt`, as tar -C / stored it) → the host's path."""
    return "/" + name.removeprefix("./").lstrip("/")


def read_members(path: Path, compression: str) -> list[Member]:
    members = []
    with open_archive(path, compression) as tar:
        for info in tar:
            kind = (
                "file"
                if info.isreg()
                else "dir"
                if info.isdir()
                else "symlink"
                if info.issym()
                else "other"
            )
            digest = ""
            if info.isreg():
                stream = tar.extractfile(info)
                assert stream is not None
                h = hashlib.sha256()
                while chunk := stream.read(CHUNK):
                    h.update(chunk)
                digest = h.hexdigest()
            members.append(
                Member(
                    host_path(info.name),
                    kind,
                    info.size,
                    info.mode,
                    info.uid,
                    info.gid,
                    info.uname,
                    info.gname,
                    int(info.mtime),
                    digest,
                    info.linkname if info.issym() else "",
                )
            )
    return members


class FileBackupStore:
    """Backups on the controller, per host (see the module docstring)."""

    def __init__(self, root: Path) -> None:
        self.root = root

    @staticmethod
    def new_id(now: datetime | None = None) -> str:
        now = now or datetime.now(UTC)
        return f"{now.strftime('%Y%m%dT%H%M%SZ')}-{secrets.token_hex(2)}"

    def folder(self, host: str, backup_id: str | None = None) -> Path:
        if not _HOST.fullmatch(host):
            raise ValidationError(f"invalid host name {host!r}")
        if backup_id is not None and not _ID.fullmatch(backup_id):
            raise ValidationError(
                f"invalid backup id {backup_id!r}", hint="like 20261121T101500Z-3f9a"
            )
        base = self.root / host
        return base / backup_id if backup_id else base

    def hosts(self) -> list[str]:
        if not self.root.is_dir():
            return []
        return sorted(p.name for p in self.root.iterdir() if p.is_dir() and _HOST.fullmatch(p.name))

    def backups(self, host: str) -> list[Backup]:
        """A host's backups, newest first (folders without a readable manifest are skipped)."""
        base = self.folder(host)
        if not base.is_dir():
            return []
        found = []
        for entry in base.iterdir():
            if _ID.fullmatch(entry.name) and (entry / "manifest.json").is_file():
                with contextlib.suppress(ValueError, KeyError, TypeError):
                    found.append(
                        Backup.from_dict(json.loads((entry / "manifest.json").read_text()))
                    )
        return sorted(found, key=lambda b: b.id, reverse=True)

    def get(self, host: str, backup_id: str) -> Backup:
        manifest = self.folder(host, backup_id) / "manifest.json"
        if not manifest.is_file():
            raise NotFound(f"no backup {backup_id} of {host} in {self.root}")
        return Backup.from_dict(json.loads(manifest.read_text()))

    def archive_path(self, backup: Backup) -> Path:
        return self.folder(backup.host, backup.id) / backup.archive

    @contextlib.contextmanager
    def incoming(self, host: str, backup_id: str, compression: str) -> Iterator[Path]:
        """A path to download a new archive to; its folder is removed if no manifest follows."""
        folder = self.folder(host, backup_id)
        folder.mkdir(parents=True, exist_ok=False)
        for p in (self.root, self.root / host, folder):
            os.chmod(p, 0o700)
        target = folder / f"archive{SUFFIX[compression]}"
        try:
            yield target
        except BaseException:
            shutil.rmtree(folder, ignore_errors=True)
            raise
        if not (folder / "manifest.json").is_file():
            shutil.rmtree(folder, ignore_errors=True)

    def record(
        self,
        host: str,
        backup_id: str,
        archive: Path,
        *,
        compression: str,
        paths: Sequence[str],
        ticket: str | None,
        host_hashes: dict[str, str],
    ) -> Backup:
        """Write the manifest of a downloaded archive: its members hashed from the archive
        itself, compared with the hashes the host computed (`host_hashes`: path → sha256)."""
        os.chmod(archive, 0o600)
        members = read_members(archive, compression)
        mismatches = tuple(
            m.path
            for m in members
            if m.type == "file" and m.path in host_hashes and host_hashes[m.path] != m.sha256
        )
        archived = {m.path for m in members if m.type == "file"}
        mismatches += tuple(sorted(p for p in host_hashes if p not in archived))
        backup = Backup(
            backup_id,
            host,
            iso_seconds(time.time()),
            tuple(paths),
            series_of(paths),
            compression,
            archive.name,
            sha256_file(archive),
            archive.stat().st_size,
            tuple(members),
            ticket,
            mismatches,
        )
        manifest = archive.parent / "manifest.json"
        tmp = manifest.with_suffix(".tmp")
        tmp.write_text(json.dumps(backup.as_dict(), indent=1))
        os.chmod(tmp, 0o600)
        tmp.replace(manifest)
        return backup

    def verify(self, backup: Backup, *, members: bool = True) -> list[str]:
        """Re-hash the archive (and every member) against the manifest; the problems found."""
        path = self.archive_path(backup)
        if not path.is_file():
            return [f"archive {path.name} is missing"]
        if sha256_file(path) != backup.archive_sha256:
            return [f"archive {path.name} does not match its SHA-256"]
        if not members:
            return []
        try:
            found = {m.path: m for m in read_members(path, backup.compression)}
        except (tarfile.TarError, OSError, EOFError) as exc:
            return [f"archive {path.name} cannot be read: {exc}"]
        problems = []
        for m in backup.files:
            got = found.get(m.path)
            if got is None:
                problems.append(f"{m.path}: missing from the archive")
            elif got.sha256 != m.sha256:
                problems.append(f"{m.path}: SHA-256 differs from the manifest")
        return problems

    def latest(
        self, host: str, series: str | None = None, containing: str | None = None
    ) -> Backup | None:
        for backup in self.backups(host):
            if series is not None and backup.series != series:
                continue
            if containing is not None and not self.select(backup, containing):
                continue
            return backup
        return None

    @staticmethod
    def select(backup: Backup, path: str) -> list[Member]:
        """The files of a backup at `path` or below it."""
        prefix = path.rstrip("/") + "/"
        return [m for m in backup.files if m.path == path or m.path.startswith(prefix)]

    def extract(self, backup: Backup, wanted: Sequence[str], into: Path) -> dict[str, Path]:
        """Copy the given members' contents out of the archive into local files (0600)."""
        targets = set(wanted)
        out: dict[str, Path] = {}
        into.mkdir(parents=True, exist_ok=True)
        os.chmod(into, 0o700)
        with open_archive(self.archive_path(backup), backup.compression) as tar:
            for info in tar:
                path = host_path(info.name)
                if path not in targets or not info.isreg():
                    continue
                stream = tar.extractfile(info)
                assert stream is not None
                local = into / f"{len(out):05d}"
                fd = os.open(local, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
                with os.fdopen(fd, "wb") as f:
                    shutil.copyfileobj(stream, f, CHUNK)
                out[path] = local
        return out

    def prune(
        self, host: str, series: str, *, keep: int, keep_days: int | None, protect: str
    ) -> list[str]:
        """Remove backups of one series beyond the newest `keep` or older than `keep_days`
        days; never `protect` (the new backup) nor the newest one."""
        same = [b for b in self.backups(host) if b.series == series]
        cutoff = datetime.now(UTC) - timedelta(days=keep_days) if keep_days else None
        removed = []
        for index, backup in enumerate(same):
            if backup.id == protect or index == 0:
                continue
            if index >= keep or (cutoff is not None and backup.created_at < cutoff):
                shutil.rmtree(self.folder(host, backup.id), ignore_errors=True)
                removed.append(backup.id)
        return removed
