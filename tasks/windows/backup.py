"""File backups on Windows: a zip archive or a robocopy copy, with a SHA-256 manifest."""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, ClassVar

from toolkit.errors import ToolkitError, ValidationError
from toolkit.remediation.catalog import Context, Finding, Param, Remediation, remediation
from toolkit.remediation.facts import read
from toolkit.remediation.quoting import Command, ps_script
from toolkit.remediation.windows import (
    WINDOWS_PATH,
    JsonFact,
    as_int,
    change_json,
    human_bytes,
    records,
    strings,
    text,
)

SOURCES = r"""$ErrorActionPreference = 'Stop'
$paths = {paths}
$dest = Join-Path {store} $env:COMPUTERNAME
$items = @(foreach ($p in $paths) {{ $ok = Test-Path -LiteralPath $p; $f = @(); if ($ok) {{ $f = @(Get-ChildItem -LiteralPath $p -Recurse -File -Force -ErrorAction SilentlyContinue) }}; @{{ path = $p; exists = $ok; files = $f.Count; bytes = [int64]($f | Measure-Object -Property Length -Sum).Sum }} }})
$last = @(Get-ChildItem -LiteralPath $dest -Filter 'itops-*.manifest.json' -ErrorAction SilentlyContinue | Sort-Object Name)
$name = $null; if ($last.Count) {{ $name = $last[-1].Name }}
ConvertTo-Json -Compress -Depth 4 -InputObject @{{ dest = [string]$dest; items = $items; last = $name }}"""

# Hash each source file, copy it (zip entry or robocopy), then write the manifest next to it.
BACKUP = r"""$ErrorActionPreference = 'Stop'
$paths = {paths}
$dest = Join-Path {store} $env:COMPUTERNAME
$name = {name}
$method = {method}
New-Item -ItemType Directory -Force -Path $dest | Out-Null
$target = Join-Path $dest $name
$files = @(); $total = [int64]0
if ($method -eq 'zip') {{ Add-Type -AssemblyName System.IO.Compression, System.IO.Compression.FileSystem; $target += '.zip'; $zip = [IO.Compression.ZipFile]::Open($target, 'Create') }}
try {{
  for ($i = 0; $i -lt $paths.Count; $i++) {{
    $root = Get-Item -LiteralPath $paths[$i] -Force
    $base = if ($root.PSIsContainer) {{ $root.FullName.TrimEnd('\') }} else {{ $root.DirectoryName.TrimEnd('\') }}
    $prefix = '{{0}}-{{1}}' -f $i, $root.Name
    if ($method -eq 'copy') {{
      $to = Join-Path $target $prefix
      if ($root.PSIsContainer) {{ robocopy.exe $root.FullName $to /E /COPY:DAT /R:1 /W:1 /NP /NFL /NDL /NJH /NJS | Out-Null }} else {{ robocopy.exe $root.DirectoryName $to $root.Name /COPY:DAT /R:1 /W:1 /NP /NFL /NDL /NJH /NJS | Out-Null }}
      if ($LASTEXITCODE -ge 8) {{ throw ('robocopy failed with exit code ' + $LASTEXITCODE + ' for ' + $root.FullName) }}
    }}
    foreach ($f in @(Get-ChildItem -LiteralPath $root.FullName -Recurse -File -Force)) {{
      $rel = $f.FullName.Substring($base.Length).TrimStart('\').Replace('\', '/')
      $entry = if ($root.PSIsContainer) {{ $prefix + '/' + $rel }} elseif ($method -eq 'copy') {{ $prefix + '/' + $f.Name }} else {{ $prefix }}
      $files += @{{ entry = $entry; source = $f.FullName; bytes = $f.Length; sha256 = (Get-FileHash -LiteralPath $f.FullName -Algorithm SHA256).Hash }}
      $total += $f.Length
      if ($method -eq 'zip') {{ [void][IO.Compression.ZipFileExtensions]::CreateEntryFromFile($zip, $f.FullName, $entry) }}
    }}
  }}
}} finally {{ if ($zip) {{ $zip.Dispose() }} }}
ConvertTo-Json -Depth 4 -InputObject @{{ target = $target; method = $method; created = (Get-Date).ToUniversalTime().ToString('o'); files = $files }} | Set-Content -LiteralPath (Join-Path $dest ($name + '.manifest.json')) -Encoding UTF8
ConvertTo-Json -Compress -InputObject @{{ target = $target; files = $files.Count; bytes = $total }}"""

# Re-read every copied file (or zip entry) and compare with the manifest's hash.
VERIFY = r"""$ErrorActionPreference = 'Stop'
$dest = Join-Path {store} $env:COMPUTERNAME
$m = Get-Content -LiteralPath (Join-Path $dest ({name} + '.manifest.json')) -Raw | ConvertFrom-Json
$bad = @(); $sha = [Security.Cryptography.SHA256]::Create()
if ($m.method -eq 'zip') {{
  Add-Type -AssemblyName System.IO.Compression, System.IO.Compression.FileSystem
  $zip = [IO.Compression.ZipFile]::OpenRead($m.target)
  try {{ foreach ($f in @($m.files)) {{ $e = $zip.GetEntry($f.entry); if (-not $e) {{ $bad += $f.entry; continue }}; $s = $e.Open(); try {{ $h = [BitConverter]::ToString($sha.ComputeHash($s)).Replace('-', '') }} finally {{ $s.Dispose() }}; if ($h -ne $f.sha256) {{ $bad += $f.entry }} }} }} finally {{ $zip.Dispose() }}
}} else {{
  foreach ($f in @($m.files)) {{ $p = Join-Path $m.target $f.entry; if (-not (Test-Path -LiteralPath $p) -or (Get-FileHash -LiteralPath $p -Algorithm SHA256).Hash -ne $f.sha256) {{ $bad += $f.entry }} }}
}}
ConvertTo-Json -Compress -InputObject @{{ checked = @($m.files).Count; bad = $bad }}"""

# Keep the newest `keep` backups (and none older than keep_days, if given); never the new one.
PRUNE = r"""$ErrorActionPreference = 'Stop'
$dest = Join-Path {store} $env:COMPUTERNAME
$current = {name}
$keep = {keep}
$days = {keep_days}
$all = @(Get-ChildItem -LiteralPath $dest -Filter 'itops-*.manifest.json' | Sort-Object Name -Descending)
$removed = @()
for ($i = 0; $i -lt $all.Count; $i++) {{
  $n = $all[$i].Name -replace '\.manifest\.json$', ''
  if ($n -eq $current) {{ continue }}
  if ($i -ge $keep -or ($days -gt 0 -and $all[$i].LastWriteTime -lt (Get-Date).AddDays(-$days))) {{
    foreach ($x in @((Join-Path $dest ($n + '.zip')), (Join-Path $dest $n), $all[$i].FullName)) {{ if (Test-Path -LiteralPath $x) {{ Remove-Item -LiteralPath $x -Recurse -Force }} }}
    $removed += $n
  }}
}}
ConvertTo-Json -Compress -InputObject @{{ removed = $removed }}"""

_STAMP = re.compile(r"itops-(\d{8}T\d{6}Z)\.manifest\.json")


@dataclass(frozen=True)
class Source:
    path: str
    exists: bool
    files: int
    bytes: int


@dataclass(frozen=True)
class Sources:
    """What a backup would copy, where to (`dest`), and the newest backup's manifest there."""

    dest: str
    items: tuple[Source, ...]
    last: str  # the newest itops-<stamp>.manifest.json in dest, "" for none

    @property
    def missing(self) -> list[str]:
        return [i.path for i in self.items if not i.exists]

    @property
    def last_stamp(self) -> str:
        found = _STAMP.fullmatch(self.last)
        return found.group(1) if found else ""


@dataclass(frozen=True)
class BackupSources(JsonFact[Sources]):
    """Each path's existence, file count and size; the store's folder for this host."""

    paths: tuple[str, ...]
    store: str
    what: ClassVar[str] = "sources"

    def command(self) -> Command:
        return ps_script(SOURCES, paths=list(self.paths), store=self.store)

    def value(self, data: Any) -> Sources:
        data = data if isinstance(data, Mapping) else {}
        items = tuple(
            Source(
                text(i.get("path")),
                bool(i.get("exists")),
                as_int(i.get("files")),
                as_int(i.get("bytes")),
            )
            for i in records(data.get("items"))
        )
        return Sources(text(data.get("dest")), items, text(data.get("last")))


@dataclass(frozen=True)
class HashCheck:
    checked: int
    bad: list[str]  # manifest entries missing or with another SHA-256


@dataclass(frozen=True)
class BackupHashes(JsonFact[HashCheck]):
    """Re-read every file (or zip entry) of backup `name` against its manifest's SHA-256."""

    store: str
    name: str
    what: ClassVar[str] = "backup verify"

    def command(self) -> Command:
        return ps_script(VERIFY, store=self.store, name=self.name)

    def value(self, data: Any) -> HashCheck:
        data = data if isinstance(data, Mapping) else {}
        return HashCheck(as_int(data.get("checked")), strings(data.get("bad")))


@remediation(
    "backup.files",
    category="backup",
    platforms={"windows"},
    summary="Back up files and folders to the backup store, with a SHA-256 manifest verified after",
)
class BackupFiles(Remediation):
    """Copy the given files/folders into <store>\\<COMPUTERNAME>\\itops-<UTC time> as a zip archive
    (default) or a robocopy copy (method=copy), write a manifest with each file's SHA-256, then
    verify by re-reading every entry against the manifest. Old backups beyond `keep` (or older
    than keep_days) are removed after a backup verifies.

    The store is -p store=… or the host's `backup_store` inventory variable (a local folder or a
    UNC share the host can write). Paths are taken literally (-LiteralPath): no wildcards.

    Example:
        itops fix backup.files ws-042 -p 'paths=C:\\Users\\jdoe\\Documents' -p 'store=\\\\nas01\\backup' --ticket INC-1042
        itops fix backup.files ws-042 -p 'paths=C:\\Data' -p method=copy -p keep=3 --check
    """

    paths = Param(
        str, many=True, required=True, kind="text", pattern=WINDOWS_PATH, help="what to back up"
    )
    store = Param(
        str, kind="text", pattern=WINDOWS_PATH, help="backup store (default: host var backup_store)"
    )
    method = Param(str, default="zip", choices=("zip", "copy"), help="zip archive or robocopy copy")
    keep = Param(int, default=7, minimum=1, maximum=1000, help="backups kept per host")
    keep_days = Param(int, minimum=1, maximum=3650, help="also remove backups older than this")

    def _store(self, ctx: Context) -> str:
        store = self.store or ctx.host.var("backup_store")
        if not store:
            raise ValidationError(
                f"no backup store for {ctx.host.name}",
                hint="-p store=\\\\server\\share or set backup_store in the inventory",
            )
        if not re.fullmatch(WINDOWS_PATH, str(store)):
            raise ValidationError(f"backup_store {store!r} is not a Windows path")
        return str(store)

    missing: list[str]
    """Sources check did not find: apply refuses to back up while any is missing."""
    name: str
    """The new backup's name (apply), itops-<UTC time>: verify re-reads it."""
    count: int
    """How many files apply wrote: verify expects as many to check out."""

    def check(self, ctx: Context) -> Finding:
        store = self._store(ctx)
        data = read(ctx, BackupSources(tuple(self.paths), store))
        missing = data.missing
        self.missing = missing
        files = sum(i.files for i in data.items)
        size = sum(i.bytes for i in data.items)
        facts: dict[str, Any] = {"dest": data.dest, "files": files, "bytes": size}
        if missing:
            return Finding.problem(f"missing: {', '.join(missing)}", missing=missing, **facts)
        return Finding.problem(
            f"backup requested: {files} file(s), {human_bytes(size)} → {data.dest}; "
            f"last backup {data.last_stamp or 'none'}",
            **facts,
        )

    def apply(self, ctx: Context) -> None:
        if self.missing:
            raise ToolkitError(f"not backing up: missing {', '.join(self.missing)}")
        store = self._store(ctx)
        self.name = "itops-" + datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")
        done = change_json(
            ctx,
            ps_script(
                BACKUP, paths=list(self.paths), store=store, name=self.name, method=self.method
            ),
            "backup",
            timeout=3600,
        )
        done = done if isinstance(done, Mapping) else {}
        ctx.note(
            f"backup {done.get('target')}: {as_int(done.get('files'))} file(s), "
            f"{human_bytes(as_int(done.get('bytes')))}"
        )
        self.count = as_int(done.get("files"))
        # Old backups go only once the new one reads back intact.
        checked, bad = self._hashes(ctx, store)
        if bad or checked != self.count:
            ctx.note("the new backup did not verify: old backups kept")
            return
        pruned = change_json(
            ctx,
            ps_script(
                PRUNE,
                store=store,
                name=self.name,
                keep=int(self.keep),
                keep_days=int(self.keep_days or 0),
            ),
            "backup retention",
        )
        removed = strings((pruned or {}).get("removed"))
        if removed:
            ctx.note(f"removed old backups: {', '.join(removed)}")

    def _hashes(self, ctx: Context, store: str) -> tuple[int, list[str]]:
        found = read(ctx, BackupHashes(store, self.name), timeout=3600)
        return found.checked, found.bad

    def verify(self, ctx: Context) -> Finding:
        checked, bad = self._hashes(ctx, self._store(ctx))
        if bad or checked != self.count:
            return Finding.problem(
                f"backup {self.name}: {len(bad)} of {checked} file(s) do not match the manifest"
                + ("" if checked == self.count else f" ({self.count} written)"),
                bad=bad[:20],
            )
        return Finding.healthy(
            f"backup {self.name}: {checked} file(s) verified by SHA-256", name=self.name
        )
