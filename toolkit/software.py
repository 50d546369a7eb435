"""The workspace's software catalog: only software listed in `software/*.yml` is installed or removed.

One YAML file or many (by vendor, by department), each a mapping of catalog names to entries:

    firefox:
      summary: Mozilla Firefox
      licence: MPL-2.0, free for business use
      approval: false              # true: every install/remove needs a second operator's approval
      version: "128.5.0"           # optional pin for every platform (a platform's own wins)
      packages:                    # at least one; the key names the package manager
        apt: firefox-esr                         # a package id …
        dnf: {id: firefox, version: 128.5.0-1.el9}   # … or an id with its own pin
        winget: Mozilla.Firefox
        choco: firefox
        msi: {source: '\\\\files\\packages\\firefox.msi', product_code: '{…GUID…}', version: 128.5.0}
      verify:                      # optional: how verify proves it answers
        command: [firefox, --version]            # runs after install; must exit 0 …
        expect: 'Mozilla Firefox 128'            # … and print a match of this regex (optional)
        # or: service: cups                      # a service that must be running

Loaded like the inventory: every value is checked when the catalog loads and a bad one is
refused with its file and line. An unlisted name is refused with the closest listed ones.

Why files, not an itops.toml section: a software catalog is data that grows to hundreds of
entries reviewed one by one (like Salt's Windows package repository or Ansible's package vars),
owned by whoever approves software, while itops.toml configures the tool itself. The folder is
`[paths] software` (default `software`).

The catalog in use is the loaded workspace's (`activate`, called when the workspace loads): the
software tasks validate their `name` against it before anything connects, and an entry's
`approval` makes a run need an approval (`needs_approval`, the tasks' `risky` rule).
"""

from __future__ import annotations

import difflib
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from toolkit.errors import ConfigError, ValidationError

if TYPE_CHECKING:
    import yaml

MANAGERS = ("apt", "dnf", "winget", "choco", "msi")
LINUX_MANAGERS = ("apt", "dnf")
WINDOWS_MANAGERS = ("winget", "choco", "msi")

NAME = re.compile(r"[a-z0-9][a-z0-9._+-]{0,63}")
_IDS = {
    # Debian and RPM package names (no wildcards: they would select more than asked)
    "apt": re.compile(r"[a-z0-9][a-z0-9.+-]{0,127}"),
    "dnf": re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.+-]{0,127}"),
    # winget: Publisher.Name identifiers; Chocolatey: package ids
    "winget": re.compile(r"[A-Za-z0-9][A-Za-z0-9_.+-]{0,127}"),
    "choco": re.compile(r"[A-Za-z0-9][A-Za-z0-9_.+-]{0,127}"),
}
VERSION = re.compile(r"[A-Za-z0-9][A-Za-z0-9.+~:_-]{0,63}")
PRODUCT_CODE = re.compile(
    r"\{[0-9A-Fa-f]{8}-[0-9A-Fa-f]{4}-[0-9A-Fa-f]{4}-[0-9A-Fa-f]{4}-[0-9A-Fa-f]{12}\}"
)
SERVICE = re.compile(r"[A-Za-z0-9_][A-Za-z0-9@_.:$ -]{0,254}")
_ENTRY_KEYS = ("summary", "licence", "approval", "version", "packages", "verify")


@dataclass(frozen=True)
class Package:
    """One platform's package: its id (MSI: the product code), and the pinned version, if any."""

    manager: str
    id: str
    version: str | None = None
    source: str | None = None  # msi: the installer's path (local or UNC)


@dataclass(frozen=True)
class Verify:
    """How verify proves the software answers: a command (argv) and a regex its output must
    match, and/or a service that must be running."""

    command: tuple[str, ...] = ()
    expect: str | None = None
    service: str | None = None


@dataclass(frozen=True)
class Software:
    name: str
    licence: str
    packages: Mapping[str, Package]
    summary: str = ""
    approval: bool = False
    verify: Verify = field(default_factory=Verify)
    source: str = ""  # file:line of the entry

    def package(self, *managers: str) -> Package | None:
        """The first of `managers` this entry lists a package for."""
        return next((self.packages[m] for m in managers if m in self.packages), None)

    def describe(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "summary": self.summary,
            "licence": self.licence,
            "approval": self.approval,
            "packages": {
                m: {k: v for k, v in vars(p).items() if v is not None and k != "manager"}
                for m, p in self.packages.items()
            },
            "source": self.source,
        }


class SoftwareCatalog:
    def __init__(self, entries: Mapping[str, Software], folder: Path | None = None) -> None:
        self.entries = dict(sorted(entries.items()))
        self.folder = folder

    def __contains__(self, name: object) -> bool:
        return name in self.entries

    def __len__(self) -> int:
        return len(self.entries)

    def get(self, name: str) -> Software:
        """The entry, or a ValidationError naming the closest listed ones."""
        entry = self.entries.get(name)
        if entry is not None:
            return entry
        where = f" ({self.folder}/*.yml)" if self.folder is not None else ""
        if not self.entries:
            raise ValidationError(
                f"{name!r} is not in the software catalog: the workspace lists no software{where}",
                hint="add an entry to software/*.yml (see docs/software.md)",
            )
        close = difflib.get_close_matches(name, list(self.entries), n=3, cutoff=0.5)
        hint = (
            f"did you mean: {', '.join(close)}?"
            if close
            else (
                f"listed: {', '.join(list(self.entries)[:10])}"
                + (" …" if len(self.entries) > 10 else "")
            )
        )
        raise ValidationError(
            f"{name!r} is not in the software catalog{where}: only listed software is "
            "installed or removed",
            hint=hint,
        )

    def by_package(self, manager: str) -> dict[str, Software]:
        """Package id → entry, for one package manager (to name installed packages)."""
        return {e.packages[manager].id: e for e in self.entries.values() if manager in e.packages}

    @classmethod
    def load(cls, folder: Path, *, workspace: Path | None = None) -> SoftwareCatalog:
        """Every `*.yml`/`*.yaml` in `folder` (none: an empty catalog); errors name file:line.

        With `workspace`, the folder and its files must be yours (or root's) and not writable by
        others, like a tasks folder (toolkit.ownership): the catalog decides what is installed
        as root and which commands verify runs."""
        entries: dict[str, Software] = {}
        if folder.is_dir():
            files = sorted(p for p in folder.iterdir() if p.suffix in (".yml", ".yaml"))
            if workspace is not None:
                from toolkit.ownership import check_owned

                for path in (folder, *files):
                    check_owned(path, "the software catalog", workspace=workspace,
                                because="it decides what is installed as root on hosts")  # fmt: skip
            for path in files:
                for entry in _load_file(path):
                    other = entries.get(entry.name)
                    if other is not None:
                        raise ConfigError(
                            f"{entry.source}: {entry.name!r} is already listed at {other.source}"
                        )
                    entries[entry.name] = entry
        return cls(entries, folder)


# --------------------------------------------------------------------------- the active catalog

_active: Path | None = None
_workspace: Path | None = None
_cache: dict[Path, tuple[tuple[Any, ...], SoftwareCatalog]] = {}


def activate(folder: Path | None, workspace: Path | None = None) -> None:
    """The software catalog folder of the workspace this process works in (set when the
    workspace loads, with its root for the ownership check; a test sets its own)."""
    global _active, _workspace
    _active, _workspace = folder, workspace


def active() -> SoftwareCatalog:
    """The active workspace's catalog, loaded afresh whenever one of its files changed."""
    if _active is None:
        raise ConfigError(
            "no workspace is loaded, so there is no software catalog",
            hint="run itops inside a workspace (or --workspace DIR)",
        )
    folder = _active
    stamp: tuple[Any, ...] = ()
    if folder.is_dir():
        stamp = tuple(
            (p.name, p.stat().st_mtime_ns, p.stat().st_size)
            for p in sorted(folder.iterdir())
            if p.suffix in (".yml", ".yaml")
        )
    cached = _cache.get(folder)
    if cached is not None and cached[0] == stamp:
        return cached[1]
    catalog = SoftwareCatalog.load(folder, workspace=_workspace)
    _cache[folder] = (stamp, catalog)
    return catalog


def check_listed(name: str) -> str:
    """A `Param(check=…)` validator: the name is in the active catalog (else ValidationError)."""
    active().get(name)
    return name


def needs_approval(params: Mapping[str, Any]) -> bool:
    """when its software catalog entry says approval: true.

    The software tasks' `risky` rule (an unknown name counts as needing approval)."""
    name = params.get("name")
    if isinstance(name, list):
        name = name[0] if name else None
    if not isinstance(name, str):
        return True
    try:
        return active().get(name).approval
    except (ValidationError, ConfigError):
        return True


# --------------------------------------------------------------------------- loading


def _compose(path: Path) -> yaml.Node | None:
    import yaml

    try:
        return yaml.compose(path.read_text(), Loader=getattr(yaml, "CSafeLoader", yaml.SafeLoader))
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark
        where = f"{path}:{mark.line + 1}" if mark else str(path)
        raise ConfigError(f"{where}: not valid YAML: {exc.problem}") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"{path}: cannot read: {exc}") from None


def _where(path: Path, node: yaml.Node) -> str:
    return f"{path}:{node.start_mark.line + 1}"


def _mapping(path: Path, node: yaml.Node, what: str) -> list[tuple[str, yaml.Node, yaml.Node]]:
    import yaml

    if not isinstance(node, yaml.MappingNode):
        raise ConfigError(f"{_where(path, node)}: {what} must be a mapping")
    out: list[tuple[str, yaml.Node, yaml.Node]] = []
    for key, value in node.value:
        if not isinstance(key, yaml.ScalarNode):
            raise ConfigError(f"{_where(path, key)}: keys of {what} must be plain names")
        out.append((str(key.value), key, value))
    return out


def _scalar(path: Path, node: yaml.Node, what: str, pattern: re.Pattern[str] | None = None) -> str:
    import yaml

    if not isinstance(node, yaml.ScalarNode) or node.value in ("", "~", "null"):
        raise ConfigError(f"{_where(path, node)}: {what} must be a non-empty value")
    value = str(node.value)
    if any(ord(c) < 32 for c in value):
        raise ConfigError(f"{_where(path, node)}: {what} holds a control character")
    if pattern is not None and not pattern.fullmatch(value):
        raise ConfigError(
            f"{_where(path, node)}: {what} {value!r} is not valid (expected {pattern.pattern})"
        )
    return value


def _bool(path: Path, node: yaml.Node, what: str) -> bool:
    value = _scalar(path, node, what).lower()
    if value not in ("true", "false", "yes", "no"):
        raise ConfigError(f"{_where(path, node)}: {what} must be true or false, not {value!r}")
    return value in ("true", "yes")


def _unknown(path: Path, key_node: yaml.Node, key: str, known: tuple[str, ...], what: str) -> None:
    close = difflib.get_close_matches(key, known, n=1, cutoff=0.5)
    hint = f"did you mean {close[0]!r}?" if close else f"known: {', '.join(known)}"
    raise ConfigError(f"{_where(path, key_node)}: unknown {what} {key!r}", hint=hint)


def _load_file(path: Path) -> list[Software]:
    import yaml

    root = _compose(path)
    if root is None or (isinstance(root, yaml.ScalarNode) and root.value in ("", "~", "null")):
        return []
    found = []
    seen: set[str] = set()
    for name, key_node, node in _mapping(path, root, "a software file"):
        if not NAME.fullmatch(name):
            raise ConfigError(
                f"{_where(path, key_node)}: software name {name!r} is not valid",
                hint="lower case letters, digits and . _ + - (e.g. firefox, 7zip, vlc)",
            )
        if name in seen:
            raise ConfigError(f"{_where(path, key_node)}: {name!r} is listed twice in this file")
        seen.add(name)
        found.append(_entry(path, name, key_node, node))
    return found


def _entry(path: Path, name: str, key_node: yaml.Node, node: yaml.Node) -> Software:
    fields: dict[str, tuple[yaml.Node, yaml.Node]] = {}
    for key, k_node, v_node in _mapping(path, node, f"software {name!r}"):
        if key not in _ENTRY_KEYS:
            _unknown(path, k_node, key, _ENTRY_KEYS, f"key of software {name!r}")
        fields[key] = (k_node, v_node)
    where = _where(path, key_node)
    if "licence" not in fields:
        raise ConfigError(
            f"{where}: software {name!r} has no licence note",
            hint="licence: what it is and whether it may be used here (e.g. 'MPL-2.0, free')",
        )
    if "packages" not in fields:
        raise ConfigError(f"{where}: software {name!r} lists no packages (apt, dnf, winget, …)")
    version = None
    if "version" in fields:
        version = _scalar(path, fields["version"][1], f"{name}: version", VERSION)
    packages = {}
    for manager, m_node, p_node in _mapping(path, fields["packages"][1], f"{name}: packages"):
        if manager not in MANAGERS:
            _unknown(path, m_node, manager, MANAGERS, "package manager")
        packages[manager] = _package(path, name, manager, p_node, version)
    if not packages:
        raise ConfigError(f"{_where(path, fields['packages'][1])}: {name}: packages is empty")
    verify = Verify()
    if "verify" in fields:
        verify = _verify(path, name, fields["verify"][1])
    return Software(
        name=name,
        licence=_scalar(path, fields["licence"][1], f"{name}: licence"),
        packages=packages,
        summary=_scalar(path, fields["summary"][1], f"{name}: summary") if "summary" in fields else "",
        approval=_bool(path, fields["approval"][1], f"{name}: approval") if "approval" in fields else False,
        verify=verify,
        source=where,
    )  # fmt: skip


def _package(path: Path, name: str, manager: str, node: yaml.Node, version: str | None) -> Package:
    import yaml

    what = f"{name}: packages.{manager}"
    if manager != "msi" and isinstance(node, yaml.ScalarNode):
        return Package(manager, _scalar(path, node, what, _IDS[manager]), version)
    allowed = ("source", "product_code", "version") if manager == "msi" else ("id", "version")
    values: dict[str, str] = {}
    for key, k_node, v_node in _mapping(path, node, what):
        if key not in allowed:
            _unknown(path, k_node, key, allowed, f"key of {what}")
        pattern = {
            "id": _IDS.get(manager),
            "version": VERSION,
            "product_code": PRODUCT_CODE,
        }.get(key)
        values[key] = _scalar(path, v_node, f"{what}.{key}", pattern)
    need = ("source", "product_code") if manager == "msi" else ("id",)
    for key in need:
        if key not in values:
            raise ConfigError(f"{_where(path, node)}: {what} needs {key}")
    if manager == "msi":
        source = values["source"]
        if not source.lower().endswith(".msi") or any(c in source for c in '"<>|*?'):
            raise ConfigError(
                f"{_where(path, node)}: {what}.source {source!r} must be a path to an .msi file"
            )
        return Package(
            "msi", values["product_code"].upper(), values.get("version", version), source
        )
    return Package(manager, values["id"], values.get("version", version))


def _verify(path: Path, name: str, node: yaml.Node) -> Verify:
    import yaml

    what = f"{name}: verify"
    command: tuple[str, ...] = ()
    expect = service = None
    for key, k_node, v_node in _mapping(path, node, what):
        if key == "command":
            if not isinstance(v_node, yaml.SequenceNode) or not v_node.value:
                raise ConfigError(
                    f"{_where(path, v_node)}: {what}.command must be a list: [binary, args…]"
                )
            command = tuple(_scalar(path, n, f"{what}.command") for n in v_node.value)
        elif key == "expect":
            expect = _scalar(path, v_node, f"{what}.expect")
            try:
                re.compile(expect)
            except re.error as exc:
                raise ConfigError(f"{_where(path, v_node)}: {what}.expect: {exc}") from None
        elif key == "service":
            service = _scalar(path, v_node, f"{what}.service", SERVICE)
        else:
            _unknown(path, k_node, key, ("command", "expect", "service"), f"key of {what}")
    if expect is not None and not command:
        raise ConfigError(f"{_where(path, node)}: {what}.expect needs a command")
    if not command and service is None:
        raise ConfigError(f"{_where(path, node)}: {what} needs a command or a service")
    return Verify(command, expect, service)
