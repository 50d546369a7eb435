"""The workspace backup store (manifest, verify by re-hashing, retention, extract) and the secret
handover (0600 file or one stderr line)."""

from __future__ import annotations

import hashlib
import io
import json
import os
import stat
import tarfile
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
import zstandard

from toolkit.backups.files import FileBackupStore, series_of
from toolkit.errors import NotFound, ValidationError
from toolkit.secrets.credentials import Secret
from toolkit.secrets.handover import Handover, deliver

FILES = {"./home/jdoe/a.txt": b"alpha\n", "./home/jdoe/sub dir/b $x.txt": b"beta\n"}


def make_archive(path: Path, files: dict[str, bytes], compression: str) -> None:
    raw = io.BytesIO()
    with tarfile.open(fileobj=raw, mode="w") as tar:
        for name, data in files.items():
            info = tarfile.TarInfo(name)
            info.size, info.mode, info.uid, info.uname = len(data), 0o640, 1001, "jdoe"
            tar.addfile(info, io.BytesIO(data))
    data = raw.getvalue()
    if compression == "zstd":
        path.write_bytes(zstandard.ZstdCompressor().compress(data))
    else:
        import gzip

        path.write_bytes(gzip.compress(data))


def add_backup(
    store: FileBackupStore,
    host: str,
    compression: str = "zstd",
    files: dict[str, bytes] = FILES,
    **kw: object,
) -> object:
    backup_id = kw.pop("backup_id", None) or store.new_id()
    with store.incoming(host, str(backup_id), compression) as archive:
        make_archive(archive, files, compression)
        hashes = {"/" + n[2:]: hashlib.sha256(d).hexdigest() for n, d in files.items()}
        hashes.update(kw.pop("host_hashes", {}))  # type: ignore[arg-type]
        return store.record(
            host,
            str(backup_id),
            archive,
            compression=compression,
            paths=["/home/jdoe"],
            ticket="INC-1",
            host_hashes=hashes,
        )


@pytest.mark.parametrize("compression", ["zstd", "gzip"])
def test_a_backup_is_recorded_with_hashes_and_verifies(tmp_path: Path, compression: str) -> None:
    store = FileBackupStore(tmp_path / "backups")
    backup = add_backup(store, "web-01", compression)
    found = store.backups("web-01")
    assert [b.id for b in found] == [backup.id]  # type: ignore[attr-defined]
    files = {m.path: m.sha256 for m in found[0].files}
    assert files == {
        "/home/jdoe/a.txt": hashlib.sha256(b"alpha\n").hexdigest(),
        "/home/jdoe/sub dir/b $x.txt": hashlib.sha256(b"beta\n").hexdigest(),
    }
    assert found[0].series == series_of(["/home/jdoe"]) and found[0].mismatches == ()
    assert store.verify(found[0]) == []
    folder = store.folder("web-01", found[0].id)
    assert stat.S_IMODE(folder.stat().st_mode) == 0o700
    assert stat.S_IMODE((folder / "manifest.json").stat().st_mode) == 0o600
    assert store.hosts() == ["web-01"]


def test_verify_finds_a_damaged_archive_or_manifest(tmp_path: Path) -> None:
    store = FileBackupStore(tmp_path / "backups")
    backup = add_backup(store, "web-01")
    archive = store.archive_path(backup)  # type: ignore[arg-type]
    good = archive.read_bytes()
    archive.write_bytes(good[:-7] + b"garbage")
    assert store.verify(backup) == [f"archive {archive.name} does not match its SHA-256"]  # type: ignore[arg-type]
    archive.write_bytes(good)
    manifest = archive.parent / "manifest.json"
    data = json.loads(manifest.read_text())
    data["members"][0]["sha256"] = "0" * 64
    manifest.write_text(json.dumps(data))
    reloaded = store.get("web-01", backup.id)  # type: ignore[attr-defined]
    assert store.verify(reloaded) == ["/home/jdoe/a.txt: SHA-256 differs from the manifest"]


def test_files_that_changed_while_archived_are_recorded(tmp_path: Path) -> None:
    store = FileBackupStore(tmp_path / "backups")
    backup = add_backup(
        store, "web-01", host_hashes={"/home/jdoe/a.txt": "f" * 64, "/home/jdoe/gone": "e" * 64}
    )
    assert backup.mismatches == ("/home/jdoe/a.txt", "/home/jdoe/gone")  # type: ignore[attr-defined]


def test_retention_keeps_n_and_drops_old_within_a_series_never_the_newest(tmp_path: Path) -> None:
    store = FileBackupStore(tmp_path / "backups")
    now = datetime.now(UTC)
    ids = [store.new_id(now - timedelta(days=d)) for d in (40, 20, 10, 1)]
    for backup_id in ids:
        add_backup(store, "web-01", backup_id=backup_id)
    other = add_backup(store, "web-01", files={"./etc/hosts": b"x"})
    series = series_of(["/home/jdoe"])
    # age from the manifest's created time: make the old ones old
    for backup_id, days in zip(ids, (40, 20, 10, 1), strict=True):
        manifest = store.folder("web-01", backup_id) / "manifest.json"
        data = json.loads(manifest.read_text())
        data["created"] = (now - timedelta(days=days)).isoformat(timespec="seconds")
        manifest.write_text(json.dumps(data))
    removed = store.prune("web-01", series, keep=3, keep_days=15, protect=ids[-1])
    assert sorted(removed) == sorted(ids[:2])
    assert {b.id for b in store.backups("web-01")} == {ids[2], ids[3], other.id}  # type: ignore[attr-defined]
    assert store.prune("web-01", series, keep=1, keep_days=None, protect=ids[3]) == [ids[2]]


def test_extract_gives_private_copies_of_chosen_files(tmp_path: Path) -> None:
    store = FileBackupStore(tmp_path / "backups")
    backup = add_backup(store, "web-01")
    out = store.extract(backup, ["/home/jdoe/sub dir/b $x.txt"], tmp_path / "out")  # type: ignore[arg-type]
    (local,) = out.values()
    assert local.read_bytes() == b"beta\n" and stat.S_IMODE(local.stat().st_mode) == 0o600
    assert [m.path for m in store.select(backup, "/home/jdoe/sub dir")] == [
        "/home/jdoe/sub dir/b $x.txt"
    ]  # type: ignore[arg-type]
    assert store.select(backup, "/home/jdo") == []  # type: ignore[arg-type]


def test_bad_names_and_unknown_backups(tmp_path: Path) -> None:
    store = FileBackupStore(tmp_path / "backups")
    with pytest.raises(ValidationError):
        store.folder("../x")
    with pytest.raises(ValidationError):
        store.folder("web-01", "../../etc")
    with pytest.raises(NotFound):
        store.get("web-01", "20261121T101500Z-3f9a")
    with pytest.raises(RuntimeError), store.incoming("web-01", store.new_id(), "zstd"):
        raise RuntimeError("the download failed")
    assert store.backups("web-01") == [] and not any((tmp_path / "backups" / "web-01").iterdir())


def test_handover_writes_a_0600_file_or_prints_once(tmp_path: Path) -> None:
    lines: list[str] = []
    target = tmp_path / "pw.txt"
    deliver(
        [
            Handover("ws-1", "new password for jdoe", Secret("S3cret-1"), str(target)),
            Handover("ws-2", "new password for ann", Secret("S3cret-2")),
        ],
        lines.append,
    )
    assert target.read_text() == "ws-1\tnew password for jdoe\tS3cret-1\n"
    assert stat.S_IMODE(target.stat().st_mode) == 0o600
    assert lines[0] == f"ws-1: new password for jdoe written to {target} (mode 0600), not recorded"
    assert lines[1] == "ws-2: new password for ann (shown once, not recorded): S3cret-2"
    assert "S3cret" not in repr(Handover("h", "l", Secret("S3cret-3")))


def test_a_handover_file_readable_by_others_is_refused_and_shown_instead(tmp_path: Path) -> None:
    target = tmp_path / "shared.txt"
    target.write_text("")
    os.chmod(target, 0o644)
    lines: list[str] = []
    deliver(
        [Handover("ws-1", "new password for jdoe", Secret("S3cret-4"), str(target))], lines.append
    )
    assert target.read_text() == ""
    assert "readable by others" in lines[0]
    assert lines[1] == "ws-1: new password for jdoe (shown once, not recorded): S3cret-4"
