"""Evidence bundles: `itops audit export` writes one signed archive of the records in scope with
their proof; `itops audit verify --bundle` checks it anywhere, offline, with no workspace, and
refuses a changed byte, a removed or reordered record, an edited record, a forged signature or a
substituted key, saying what. The export is recorded in the ledger."""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
import zipfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.inprocess import itops
from tests.signers import Operators
from toolkit.ledger import Entry, Ledger, evidence
from toolkit.ledger.anchors import AnchorLog
from toolkit.workspace import Workspace

HOSTILE = "paper jam \x1b[2J\x1b]0;pwned\x07 <script>alert(1)</script>"
ROOT = Path(__file__).resolve().parents[2]


def fill(root: Path) -> None:
    """Three tickets, interleaved: INC-1's records are not contiguous in the chain."""
    for n in (1, 2, 3):
        assert itops(root, "ticket", "open", f"INC-{n}", "-c", "printer")[0] == 0
    assert itops(root, "ticket", "note", "INC-1", HOSTILE)[0] == 0
    assert itops(root, "ticket", "note", "INC-2", "unrelated")[0] == 0
    assert itops(root, "ticket", "note", "INC-1", "second note")[0] == 0
    assert itops(root, "ticket", "note", "INC-3", "after")[0] == 0


@pytest.fixture
def ws(workspace: Workspace) -> Path:
    fill(workspace.root)
    return workspace.root


@pytest.fixture
def bundle(ws: Path, tmp_path: Path) -> Path:
    out = tmp_path / "out" / "INC-1.zip"
    code, text = itops(ws, "audit", "export", "--ticket", "INC-1", "--out", str(out))
    assert code == 0 and "wrote" in text, text
    return out


def members(path: Path) -> dict[str, bytes]:
    with zipfile.ZipFile(path) as archive:
        return {i.filename: archive.read(i) for i in archive.infolist()}


def rebuild(path: Path, files: dict[str, bytes]) -> Path:
    """The archive rewritten with these members, in itops's own layout (what someone who knows
    the format does)."""
    path.write_bytes(evidence.pack(files))
    return path


def resign(files: dict[str, bytes], key: Path, *, public: bytes | None = None) -> dict[str, bytes]:
    """What someone holding `key` does after changing members: recompute the manifest's
    SHA-256s and sign it again (with `public` as the bundle's key if given)."""
    if public is not None:
        files[evidence.KEY] = public
    manifest = json.loads(files[evidence.MANIFEST])
    for name in manifest["files"]:
        manifest["files"][name] = {
            "sha256": hashlib.sha256(files[name]).hexdigest(),
            "bytes": len(files[name]),
        }
    manifest["segment"]["selected"] = files[evidence.RECORDS].count(b"\n")
    text = json.dumps(manifest, indent=2, sort_keys=True) + "\n"
    files[evidence.MANIFEST] = text.encode()
    signer = AnchorLog(key.parent / "unused.jsonl", key)
    files[evidence.SIGNATURE] = signer.sign(text, evidence.NAMESPACE).encode()
    return files


def anchor_key(ws: Path) -> Path:
    return Workspace.load(ws).anchor_log().key


def check(path: Path, *extra: str, ws: Path) -> tuple[int, str]:
    return itops(ws, "audit", "verify", "--bundle", str(path), *extra)


def test_export_then_verify_holds_and_the_bundle_is_complete(ws: Path, bundle: Path) -> None:
    code, out = check(bundle, ws=ws)
    assert code == 0 and "bundle intact: 3 record(s) (ticket INC-1)" in out, out
    pub = (anchor_key(ws).parent / "anchor_ed25519.pub").read_text()
    fingerprint = evidence.fingerprint(pub)
    assert f"signed by key {fingerprint}" in out, out
    files = members(bundle)
    assert set(files) == set(evidence.MEMBERS)
    records = [json.loads(line) for line in files[evidence.RECORDS].splitlines()]
    assert {r["ticket"] for r in records} == {"INC-1"} and len(records) == 3
    assert set(records[0]) == {*evidence.READ_COLUMNS}  # every field, as stored
    assert json.loads(records[1]["data"])["text"] == HOSTILE
    links = [json.loads(line) for line in files[evidence.LINKS].splitlines()]
    assert links and {r["ticket"] for r in links} == {"INC-2", "INC-3"}  # the chain between
    manifest = json.loads(files[evidence.MANIFEST])
    seqs = sorted(r["seq"] for r in (*records, *links))
    assert seqs == list(range(manifest["segment"]["first"], manifest["segment"]["last"] + 1))
    assert b"INC-1" in files[evidence.REPORT] and b"<script>alert" not in files[evidence.REPORT]
    assert files[evidence.KEY].decode() == pub
    # the same key given as trusted: accepted; as a file or as its fingerprint
    key_file = bundle.parent / "trusted.pub"
    key_file.write_text(pub)
    assert check(bundle, "--trusted-key", str(key_file), ws=ws)[0] == 0
    code, out = check(bundle, "--trusted-key", fingerprint, "--json", ws=ws)
    data = json.loads(out)
    assert code == 0 and data["ok"] and data["key_fingerprint"] == fingerprint, out
    assert data["records"] == 3 and data["anchored"]["seq"] == manifest["segment"]["last"]


def test_the_export_is_recorded_with_its_scope_and_the_bundles_sha256(
    ws: Path, bundle: Path
) -> None:
    _, out = itops(ws, "log", "--json")
    exports = [r for r in map(json.loads, out.splitlines()) if r["kind"] == "audit.export"]
    assert len(exports) == 1, out
    data = exports[0]["data"]
    assert data["sha256"] == hashlib.sha256(bundle.read_bytes()).hexdigest()
    assert data["scope"] == {"ticket": "INC-1"} and data["file"] == str(bundle)
    assert data["bytes"] == bundle.stat().st_size
    assert itops(ws, "audit", "verify")[0] == 0  # and the ledger still verifies, anchored


def test_verify_needs_no_workspace_no_database(ws: Path, bundle: Path, tmp_path: Path) -> None:
    """Anywhere: a fresh folder, no workspace above it, the workspace and its ledger gone."""
    elsewhere = tmp_path / "auditor"
    elsewhere.mkdir()
    copy = elsewhere / "evidence.zip"
    copy.write_bytes(bundle.read_bytes())
    import shutil

    shutil.rmtree(ws)
    env = {k: v for k, v in os.environ.items() if not k.startswith("ITOPS_")}
    env.update(PYTHONPATH=str(ROOT), HOME=str(elsewhere))
    done = subprocess.run(
        [sys.executable, "-m", "toolkit", "audit", "verify", "--bundle", "evidence.zip"],
        cwd=elsewhere, env=env, capture_output=True, text=True, timeout=60, check=False,
    )  # fmt: skip
    assert done.returncode == 0, done.stdout + done.stderr
    assert "bundle intact: 3 record(s)" in done.stdout
    assert sorted(p.name for p in elsewhere.iterdir()) == ["evidence.zip"]  # nothing made there


def test_any_byte_changed_in_the_archive_is_refused(ws: Path, bundle: Path) -> None:
    """Every single-byte change of the archive, wherever it falls — a record, the signature, a
    header's date, the central directory — is refused; one inside a member names it."""
    original = bundle.read_bytes()
    assert evidence.verify(original).ok
    for at in range(len(original)):
        changed = bytearray(original)
        changed[at] ^= 0x01 if at % 2 else 0x80
        result = evidence.verify(bytes(changed))
        assert not result.ok, f"byte {at} changed and verify accepted it"
    with zipfile.ZipFile(bundle) as archive:
        for info in archive.infolist():
            start = info.header_offset + 30 + len(info.filename)
            changed = bytearray(original)
            changed[start + info.compress_size // 2] ^= 0x40
            result = evidence.verify(bytes(changed))
            assert not result.ok and info.filename in str(result.problem), result.problem


def test_the_same_files_in_another_zip_layout_are_refused(ws: Path, bundle: Path) -> None:
    files = members(bundle)
    with zipfile.ZipFile(bundle, "w", zipfile.ZIP_DEFLATED) as archive:
        for name, data in files.items():
            archive.writestr(name, data)
    code, out = check(bundle, ws=ws)
    assert code == 1 and "the archive was altered outside its files" in out, out
    bundle.write_bytes(b"prepended " + evidence.pack(files))  # zipfile itself tolerates this
    code, out = check(bundle, ws=ws)
    assert code == 1 and "altered outside its files" in out, out


def test_a_changed_member_is_refused_naming_it(ws: Path, bundle: Path) -> None:
    original = members(bundle)
    files = dict(original)
    files[evidence.RECORDS] = files[evidence.RECORDS].replace(b"second note", b"second nose")
    code, out = check(rebuild(bundle, dict(files)), ws=ws)
    assert code == 1 and "BUNDLE REFUSED: records.jsonl does not match the signed manifest" in out
    files[evidence.REPORT] = files[evidence.REPORT] + b"<!-- -->"
    code, out = check(rebuild(bundle, files), ws=ws)
    assert code == 1 and "records.jsonl, report.html do not match" in out, out


def test_a_removed_record_is_refused_even_when_the_key_holder_re_signs(
    ws: Path, bundle: Path
) -> None:
    original = members(bundle)
    lines = original[evidence.RECORDS].splitlines(keepends=True)
    files = dict(original, **{evidence.RECORDS: b"".join(lines[:1] + lines[2:])})
    code, out = check(rebuild(bundle, dict(files)), ws=ws)
    assert code == 1 and "records.jsonl does not match the signed manifest" in out, out
    removed = json.loads(lines[1])["seq"]
    code, out = check(rebuild(bundle, resign(files, anchor_key(ws))), ws=ws)
    assert code == 1, out
    assert f"record #{removed} is missing from the chain segment (removed)" in out, out
    # the last selected record dropped, and the segment shortened to end before it: no anchor
    # closes the shorter segment
    files = dict(original, **{evidence.RECORDS: b"".join(lines[:-1])})
    code, out = check(rebuild(bundle, resign(files, anchor_key(ws))), ws=ws)
    assert code == 1 and "is missing from the chain segment" in out, out


def test_a_reordered_record_is_refused(ws: Path, bundle: Path) -> None:
    files = members(bundle)
    lines = files[evidence.RECORDS].splitlines(keepends=True)
    lines[1], lines[2] = lines[2], lines[1]
    files[evidence.RECORDS] = b"".join(lines)
    code, out = check(rebuild(bundle, resign(files, anchor_key(ws))), ws=ws)
    assert code == 1 and "records.jsonl is out of order" in out and "(reordered)" in out, out


def test_an_edited_record_is_refused_even_when_re_signed(ws: Path, bundle: Path) -> None:
    files = members(bundle)
    lines = files[evidence.RECORDS].splitlines(keepends=True)
    record = json.loads(lines[1])
    record["operator"] = "mallory"
    lines[1] = (json.dumps(record, ensure_ascii=False) + "\n").encode()
    files[evidence.RECORDS] = b"".join(lines)
    code, out = check(rebuild(bundle, resign(files, anchor_key(ws))), ws=ws)
    assert code == 1 and f"record #{record['seq']} in records.jsonl was altered" in out, out


def test_a_forged_signature_or_a_substituted_key_is_refused(
    ws: Path, bundle: Path, operators: Operators
) -> None:
    mallory = operators.key("carol")
    pub = (mallory.parent / "carol.pub").read_bytes()
    # a signature by another key over the same manifest
    files = members(bundle)
    signer = AnchorLog(mallory.parent / "unused.jsonl", mallory)
    files[evidence.SIGNATURE] = signer.sign(
        files[evidence.MANIFEST].decode(), evidence.NAMESPACE
    ).encode()
    code, out = check(rebuild(bundle, files), ws=ws)
    assert code == 1 and "the manifest's signature does not verify" in out, out
    # a signature in the anchors' namespace cannot stand for the manifest's
    files[evidence.SIGNATURE] = (
        AnchorLog(bundle, anchor_key(ws))
        .sign(files[evidence.MANIFEST].decode(), "itops-anchor")
        .encode()
    )
    code, out = check(rebuild(bundle, files), ws=ws)
    assert code == 1 and "the manifest's signature does not verify" in out, out
    # the whole bundle re-signed with another key, that key put inside: its manifest verifies,
    # the anchors do not (the workspace's key signed them), and a trusted key says no at once
    forged = rebuild(bundle, resign(members(bundle), mallory, public=pub))
    code, out = check(forged, ws=ws)
    assert code == 1 and "is not signed by the bundle's key: forged" in out, out
    real = anchor_key(ws).parent / "anchor_ed25519.pub"
    code, out = check(forged, "--trusted-key", str(real), ws=ws)
    assert code == 1 and "not by the trusted key" in out, out


def test_what_verify_prints_from_a_bundle_stays_escaped(
    ws: Path, bundle: Path, tmp_path: Path
) -> None:
    files = members(bundle)
    manifest = json.loads(files[evidence.MANIFEST])
    manifest["created_by"] = "\x1b]0;owned\x07eve\u202e"
    manifest["scope"] = {"ticket": "INC-1\x1b[31m"}
    files[evidence.MANIFEST] = (json.dumps(manifest, indent=2, sort_keys=True) + "\n").encode()
    files = resign(files, anchor_key(ws))
    for extra in ((), ("--json",)):
        code, out = check(rebuild(bundle, dict(files)), *extra, ws=ws)
        assert code == 0, out
        assert "\x1b" not in out and "\x07" not in out and "\u202e" not in out, out
    assert "␛]0;owned␇eve" in check(bundle, ws=ws)[1]
    # a member named to attack the terminal: refused, its name shown inert
    files["\x1b[2Jevil"] = b""
    code, out = check(rebuild(bundle, files), ws=ws)
    assert code == 1 and "should not" in out and "\x1b" not in out, out


def test_hashes_only_links_verify_and_say_so(ws: Path, tmp_path: Path) -> None:
    out = tmp_path / "h.zip"
    code, text = itops(
        ws, "audit", "export", "--ticket", "INC-1", "--links", "hashes", "--out", str(out)
    )
    assert code == 0, text
    links = [json.loads(line) for line in members(out)[evidence.LINKS].splitlines()]
    assert links and all(set(r) == {"seq", "prev_hash", "hash"} for r in links)
    code, text = check(out, ws=ws)
    assert code == 0 and f"{len(links)} link(s) are hashes only" in text, text


def test_export_by_host_and_period_and_refusals(ws: Path, tmp_path: Path) -> None:
    code, out = itops(ws, "audit", "export", "--out", str(tmp_path / "x.zip"))
    assert code == 2 and "say what to export" in out, out
    code, out = itops(
        ws, "audit", "export", "--ticket", "INC-404", "--out", str(tmp_path / "x.zip")
    )
    assert code != 0 and "nothing in the ticket log matches" in out, out
    assert not (tmp_path / "x.zip").exists()
    # records written by something that did not anchor them: the export anchors the head first
    book = Ledger(Workspace.load(ws).ledger_url, operator="bob")
    book.append(Entry("ticket.note", ticket="INC-2", data={"text": "unanchored"}))
    book.close()
    code, out = itops(ws, "audit", "export", "--since", "1d", "--out", str(tmp_path / "p.zip"))
    assert code == 0, out
    assert check(tmp_path / "p.zip", ws=ws)[0] == 0


@pytest.fixture
def pg_ws(
    workspace: Workspace, pg_ledger_url: str, monkeypatch: pytest.MonkeyPatch
) -> Iterator[Path]:
    monkeypatch.setenv("ITOPS_LEDGER_URL", pg_ledger_url)
    fill(workspace.root)
    yield workspace.root


def test_export_and_verify_from_a_postgresql_ledger(pg_ws: Path, tmp_path: Path) -> None:
    out = tmp_path / "pg.zip"
    code, text = itops(pg_ws, "audit", "export", "--ticket", "INC-1", "--out", str(out))
    assert code == 0, text
    code, text = check(out, ws=pg_ws)
    assert code == 0 and "bundle intact: 3 record(s)" in text, text
    records = [json.loads(line) for line in members(out)[evidence.RECORDS].splitlines()]
    assert all(r["db_user"] for r in records)  # PostgreSQL's word on who wrote each
