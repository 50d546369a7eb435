"""Evidence bundles: selected ledger records with the proof that they are the ledger's, in one
signed archive an auditor checks anywhere, offline, without the database or the workspace.

The archive is a ZIP (it opens by double-click on the auditor's Windows or macOS desktop, where a
tar.gz needs a tool, and the report reads without unpacking the rest), its members stored
uncompressed in one fixed layout (`pack`): verify rebuilds that layout from the members and
compares it byte for byte, so not one byte of the file can change unnoticed — not even one no
member's content depends on (a header's date, a deflate stream's padding bits). Compress the file
for transport if need be; what is verified is the .zip. Its members:

- `records.jsonl` — the selected records, one JSON object per line, every column exactly as
  stored (the JSON columns `params`, `commands`, `data` as their stored text: the hash is over
  those bytes), in chain order;
- `links.jsonl` — the other records of the chain segment: from the first selected record to the
  first signed anchor at or past the last one, the records between that are not selected are
  needed to link the chain. By default they are whole records too, so every link's hash is
  recomputed (`links="hashes"` keeps only `seq`, `prev_hash` and `hash` when records outside the
  scope may not leave: those links are then taken on the manifest's signature, and verify says
  how many);
- `anchors.jsonl` — the anchor log's lines over the segment, verbatim (`toolkit.ledger.anchors`:
  each names a record's seq and hash, chains to the line before, and is signed);
- `anchor_key.pub` — the public half of the workspace's anchoring key, which signed the anchors
  and the manifest;
- `report.html` — the audit report of the selection;
- `manifest.json` — the scope, the segment, the anchor that closes it, and the SHA-256 and size
  of every other member; `manifest.json.sig` — its SSH signature by the anchoring key, namespace
  `itops-evidence` (an anchor signature cannot stand for a manifest's, or the reverse).

`verify()` checks, in order: the archive (only these members, once each), the manifest's
signature with the key inside the bundle (and, if given, that the key is the trusted one), every
member against the manifest, every record's hash (`schema.record_hash`, the ledger's own), the
segment's continuity and links, and the anchors (their own chain, the newest one's signature,
each against the record it names). The first failure is the answer.
"""

from __future__ import annotations

import hashlib
import io
import json
import struct
import zipfile
import zlib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from toolkit.ledger.anchors import NAMESPACE as ANCHOR_NAMESPACE
from toolkit.ledger.anchors import (
    Anchor,
    AnchorError,
    fingerprint,
    verify_signature,
)
from toolkit.ledger.schema import FIELDS, READ_COLUMNS, record_hash

if TYPE_CHECKING:
    from toolkit.ledger import Record
    from toolkit.ledger.anchors import AnchorLog

FORMAT = "itops-evidence/1"
NAMESPACE = "itops-evidence"
MANIFEST, SIGNATURE, KEY = "manifest.json", "manifest.json.sig", "anchor_key.pub"
RECORDS, LINKS, ANCHORS, REPORT = "records.jsonl", "links.jsonl", "anchors.jsonl", "report.html"
MEMBERS = (MANIFEST, SIGNATURE, KEY, RECORDS, LINKS, ANCHORS, REPORT)
LINK_FIELDS = ("seq", "prev_hash", "hash")
MAX_MEMBER = 0xFFFF_FFFF - 1  # bytes: ZIP without its 64-bit extension (and no zip bomb)
_DOS_TIME, _DOS_DATE = 0, (1 << 5) | 1  # 1980-01-01 00:00: the same selection, the same bytes
_REGULAR_0644 = 0o100644 << 16


def record_line(record: Record) -> str:
    """A record as stored, as one JSON line (every column, the JSON ones as their text)."""
    return json.dumps(dict(zip(READ_COLUMNS, record, strict=True)), ensure_ascii=False)


def link_line(record: Record) -> str:
    return json.dumps({"seq": record.seq, "prev_hash": record.prev_hash, "hash": record.hash})


def sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def write(
    out: io.BufferedIOBase | Any,
    *,
    selected: Sequence[Record],
    links: Sequence[Record],
    anchor_lines: Sequence[str],
    report_html: str,
    anchors: AnchorLog,
    manifest: Mapping[str, Any],
    links_mode: str = "full",
) -> dict[str, Any]:
    """Write the bundle to the binary file `out`; returns the signed manifest. `manifest`: what
    the caller says about the scope (merged into the manifest)."""
    key = anchors.public_key + "\n"
    line = record_line if links_mode == "full" else link_line
    files = {
        RECORDS: "".join(record_line(r) + "\n" for r in selected).encode(),
        LINKS: "".join(line(r) + "\n" for r in links).encode(),
        ANCHORS: "".join(a + "\n" for a in anchor_lines).encode(),
        KEY: key.encode(),
        REPORT: report_html.encode(),
    }
    body = {
        "format": FORMAT,
        **manifest,
        "segment": {
            "first": selected[0].seq,
            "last": int(json.loads(anchor_lines[-1])["seq"]),  # the anchor that closes it
            "selected": len(selected),
            "links": len(links),
            "links_mode": links_mode,
        },
        "key_fingerprint": fingerprint(key),
        "files": {n: {"sha256": sha256(d), "bytes": len(d)} for n, d in files.items()},
    }
    text = json.dumps(body, indent=2, sort_keys=True, ensure_ascii=True) + "\n"
    signature = anchors.sign(text, NAMESPACE)
    out.write(pack({MANIFEST: text.encode(), SIGNATURE: signature.encode(), **files}))
    return body


def pack(files: Mapping[str, bytes]) -> bytes:
    """The one ZIP layout a bundle has: members stored (not compressed) in MEMBERS order, no
    timestamps (1980-01-01), no extra fields or comments, regular files 0644. Built here rather
    than by zipfile so that verify can rebuild it byte for byte from the members: with every
    member's bytes under the signed manifest, no byte of the archive can change unnoticed
    (a deflate stream's padding bits, a header's date, data slipped between members)."""
    local, central = bytearray(), bytearray()
    names = [n for n in MEMBERS if n in files] + [n for n in files if n not in MEMBERS]
    for name in names:
        data, raw = files[name], name.encode()
        if len(data) > MAX_MEMBER or len(local) > MAX_MEMBER:
            raise ValueError(f"{name}: a bundle member or the bundle exceeds 4 GiB")
        crc = zlib.crc32(data)
        fields = (0, 0, _DOS_TIME, _DOS_DATE, crc, len(data), len(data), len(raw), 0)
        offset = len(local)
        local += struct.pack("<4sH2H2H3L2H", b"PK\x03\x04", 20, *fields) + raw + data
        central += (
            struct.pack(
                "<4s2BH2H2H3L5HLL",
                b"PK\x01\x02",
                20,
                3,
                20,
                *fields,
                0,
                0,
                0,
                _REGULAR_0644,
                offset,
            )
            + raw
        )
    end = struct.pack(
        "<4s4H2LH", b"PK\x05\x06", 0, 0, len(names), len(names), len(central), len(local), 0
    )
    return bytes(local + central + end)


@dataclass
class BundleCheck:
    """What verify found: `problem` None when the bundle holds."""

    problem: str | None = None
    fingerprint: str | None = None
    manifest: dict[str, Any] = field(default_factory=dict)
    selected: int = 0
    links: int = 0
    anchors: int = 0
    unproven_links: int = 0  # links kept as hashes only: taken on the manifest's signature
    anchored: Anchor | None = None

    @property
    def ok(self) -> bool:
        return self.problem is None


class _Refused(Exception):
    pass


def verify(data: bytes, *, trusted_key: str | None = None) -> BundleCheck:
    """Check a bundle's bytes (module docstring). `trusted_key`: an OpenSSH public key line (or
    its `SHA256:` fingerprint) the bundle's key must be."""
    check = BundleCheck()
    try:
        _verify(data, trusted_key, check)
    except _Refused as exc:
        check.problem = str(exc)
    return check


def _verify(data: bytes, trusted_key: str | None, check: BundleCheck) -> None:
    members = _read_archive(data)
    key = members[KEY].decode("ascii", "replace").strip()
    try:
        check.fingerprint = fingerprint(key)
    except AnchorError:
        raise _Refused(f"{KEY} is not an OpenSSH public key") from None
    if trusted_key is not None:
        trusted = trusted_key.strip()
        wanted = trusted if trusted.startswith("SHA256:") else _fingerprint_or(trusted)
        if wanted != check.fingerprint:
            raise _Refused(
                f"the bundle is signed by key {check.fingerprint}, not by the trusted key {wanted}"
            )
    text = members[MANIFEST]
    if not text.isascii():
        raise _Refused(f"{MANIFEST} was altered (it is not the ASCII JSON itops writes)")
    if not verify_signature(
        key, text.decode(), members[SIGNATURE].decode("ascii", "replace"), NAMESPACE
    ):
        raise _Refused(
            f"the manifest's signature does not verify with the bundle's key {check.fingerprint}: "
            "the manifest was altered or the signature forged"
        )
    try:
        manifest = json.loads(text)
        files, segment = dict(manifest["files"]), dict(manifest["segment"])
        first, last = int(segment["first"]), int(segment["last"])
        mode = segment["links_mode"]
    except (ValueError, KeyError, TypeError):
        raise _Refused(f"{MANIFEST} is signed but not an itops evidence manifest") from None
    check.manifest = manifest
    if manifest.get("format") != FORMAT:
        raise _Refused(
            f"unknown bundle format {manifest.get('format')!r} (this itops reads {FORMAT})"
        )
    changed = [
        name
        for name in MEMBERS[2:]
        if name not in files or files[name].get("sha256") != sha256(members[name])
    ]
    if changed:
        raise _Refused(
            f"{', '.join(changed)} {'does' if len(changed) == 1 else 'do'} not match the signed "
            "manifest's SHA-256 (changed after the bundle was signed)"
        )
    canonical = pack(members)
    if canonical != data:
        at = next(
            (i for i, (a, b) in enumerate(zip(canonical, data, strict=False)) if a != b),
            min(len(canonical), len(data)),
        )
        raise _Refused(
            f"the archive was altered outside its files (byte {at} is not what itops writes "
            "around these files): the ZIP was rewritten or edited"
        )
    selected = _records(members[RECORDS], RECORDS, full=True)
    links = _records(members[LINKS], LINKS, full=mode == "full")
    check.selected, check.links = len(selected), len(links)
    if len(selected) != segment.get("selected") or len(links) != segment.get("links"):
        raise _Refused("the record counts are not the manifest's")
    if mode != "full":
        check.unproven_links = len(links)
    chain = _segment(selected, links, first, last)
    _anchors(members[ANCHORS], key, chain, first, last, check)


def _fingerprint_or(key: str) -> str:
    try:
        return fingerprint(key)
    except AnchorError:
        raise _Refused(
            "the trusted key is neither an OpenSSH public key nor a SHA256: fingerprint"
        ) from None


# what zipfile raises on a damaged archive (a bad CRC, a broken deflate stream, a header naming
# an unknown compression method or encryption)
_UNREADABLE = (
    zipfile.BadZipFile,
    zlib.error,
    OSError,
    ValueError,
    EOFError,
    NotImplementedError,
    RuntimeError,
)


def _read_archive(data: bytes) -> dict[str, bytes]:
    try:
        archive = zipfile.ZipFile(io.BytesIO(data))
    except _UNREADABLE as exc:
        raise _Refused(f"not a readable evidence bundle (a ZIP archive): {exc}") from None
    with archive:
        infos = archive.infolist()
        names = [i.filename for i in infos]
        extra = sorted(set(names) - set(MEMBERS))
        if extra:
            raise _Refused(
                f"the bundle holds member(s) it should not: {', '.join(map(repr, extra))}"
            )
        twice = sorted({n for n in names if names.count(n) > 1})
        if twice:
            raise _Refused(f"the bundle holds {', '.join(twice)} more than once")
        missing = [n for n in MEMBERS if n not in names]
        if missing:
            raise _Refused(f"the bundle lacks {', '.join(missing)}")
        members = {}
        for info in infos:
            if info.file_size > MAX_MEMBER:
                raise _Refused(f"{info.filename} is too large ({info.file_size} bytes)")
            try:
                members[info.filename] = archive.read(info)
            except _UNREADABLE as exc:
                raise _Refused(
                    f"the archive is damaged at {info.filename} ({exc}): a byte was changed"
                ) from None
    return members


def _records(data: bytes, name: str, *, full: bool) -> list[dict[str, Any]]:
    rows, previous = [], 0
    keys = set(READ_COLUMNS) if full else set(LINK_FIELDS)
    for n, line in enumerate(data.decode("utf-8", "replace").splitlines(), 1):
        try:
            row = json.loads(line)
            if not isinstance(row, dict) or set(row) != keys or type(row["seq"]) is not int:
                raise ValueError
        except ValueError:
            raise _Refused(f"{name} line {n} is not a ledger record as itops writes it") from None
        seq = row["seq"]
        if seq <= previous:
            raise _Refused(f"{name} is out of order: record #{seq} follows #{previous} (reordered)")
        if full and record_hash([row[f] for f in FIELDS]) != row["hash"]:
            raise _Refused(f"record #{seq} in {name} was altered (its hash does not match)")
        previous = seq
        rows.append(row)
    return rows


def _segment(
    selected: list[dict[str, Any]], links: list[dict[str, Any]], first: int, last: int
) -> dict[int, str]:
    """Records and links merged: contiguous first..last, each linked to the one before; the hash
    per seq."""
    if not selected or selected[0]["seq"] != first:
        raise _Refused(f"the first selected record (#{first} per the manifest) is missing")
    by_seq: dict[int, dict[str, Any]] = {}
    for row in (*selected, *links):
        if row["seq"] in by_seq:
            raise _Refused(f"record #{row['seq']} is in the bundle twice")
        by_seq[row["seq"]] = row
    chain: dict[int, str] = {}
    prev: str | None = None
    for seq in range(first, last + 1):
        found = by_seq.get(seq)
        if found is None:
            raise _Refused(f"record #{seq} is missing from the chain segment (removed)")
        if prev is not None and found["prev_hash"] != prev:
            raise _Refused(f"record #{seq} does not link to record #{seq - 1}")
        prev = chain[seq] = found["hash"]
    if len(by_seq) != len(chain):
        outside = sorted(set(by_seq) - set(chain))
        raise _Refused(f"record #{outside[0]} lies outside the segment #{first}–#{last}")
    return chain


def _anchors(
    data: bytes, key: str, chain: Mapping[int, str], first: int, last: int, check: BundleCheck
) -> None:
    lines = [ln for ln in data.decode("utf-8", "replace").splitlines() if ln.strip()]
    anchors = []
    for n, line in enumerate(lines, 1):
        try:
            anchors.append(Anchor(**json.loads(line)))
        except (ValueError, TypeError):
            raise _Refused(f"{ANCHORS} line {n} is not an anchor line") from None
    check.anchors = len(anchors)
    if not anchors or anchors[-1].seq != last:
        raise _Refused(f"no signed anchor closes the segment at record #{last}")
    for n in range(1, len(lines)):
        if anchors[n].prev != sha256(lines[n - 1].encode()):
            raise _Refused(
                f"{ANCHORS} line {n + 1} does not follow line {n} (an anchor was removed)"
            )
    newest = anchors[-1]
    if not verify_signature(key, newest.message(), newest.signature, ANCHOR_NAMESPACE):
        raise _Refused(
            f"the anchor of record #{newest.seq} is not signed by the bundle's key: forged"
        )
    for anchor in anchors:
        if not first <= anchor.seq <= last or chain.get(anchor.seq) != anchor.hash:
            raise _Refused(
                f"record #{anchor.seq} is not the one anchored at {anchor.at} (rewritten)"
            )
    check.anchored = newest
