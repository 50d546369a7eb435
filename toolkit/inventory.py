"""Hosts and groups from Ansible-compatible YAML inventories, and target patterns over them.

The same files serve ansible-runner: `all:` / `hosts:` / `children:` / `vars:`, with `group_vars/`
and `host_vars/` beside the inventory file. Variables are merged once at load (all → parent groups →
child groups → host; inventory-file values before the group_vars/host_vars files) and every Host is
immutable afterwards. Secret-looking variables must hold references, never values.

Example:
    inv = Inventory.load([Path("inventory/hosts.yml")])
    inv.select("linux:&office:!ws-013")
"""

from __future__ import annotations

import fnmatch
import ipaddress
import re
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from types import MappingProxyType
from typing import TYPE_CHECKING, Any

from toolkit.errors import InventoryError, NotFound
from toolkit.secrets.credentials import REFERENCE_HINT, is_reference, is_secret_key

if TYPE_CHECKING:
    import yaml

NETWORK_PLATFORMS = frozenset(
    {
        "cisco_ios",
        "cisco_xe",
        "cisco_nxos",
        "cisco_xr",
        "cisco_asa",
        "arista_eos",
        "juniper_junos",
        "huawei_vrp",
        "huawei",
    }
)
PLATFORM_TRANSPORT = {
    "linux": "ssh",
    "windows": "winrm",
    "active_directory": "ldap",
    "ldap": "ldap",
}
DIRECTORY_PLATFORMS = frozenset({"active_directory", "ldap"})
DEFAULT_PORTS = {"ssh": 22, "netdev": 22, "winrm": 5986, "ldap": 636}
TRANSPORTS = frozenset({"ssh", "winrm", "netdev", "ldap"})

_NAME = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.-]*")
_HOSTNAME = re.compile(
    r"[A-Za-z0-9]([A-Za-z0-9-]*[A-Za-z0-9])?(\.[A-Za-z0-9]([A-Za-z0-9-]*[A-Za-z0-9])?)*"
)
_RANGE = re.compile(r"\[([0-9a-z]+):([0-9a-z]+)\]")


@dataclass(frozen=True)
class Host:
    """One inventory host with its merged variables. Immutable after load."""

    name: str
    address: str
    port: int
    platform: str = "linux"
    transport: str = "ssh"
    user: str | None = None
    groups: tuple[str, ...] = ()
    vars: Mapping[str, Any] = field(default_factory=lambda: MappingProxyType({}), compare=False)
    source: str = ""

    def var(self, key: str, default: Any = None) -> Any:
        return self.vars.get(key, default)


@dataclass
class _Group:
    name: str
    vars: dict[str, Any] = field(default_factory=dict)
    children: list[str] = field(default_factory=list)
    hosts: list[str] = field(default_factory=list)
    parents: set[str] = field(default_factory=set)
    vars_source: dict[str, str] = field(default_factory=dict)


class _Loader:
    """Builds groups and hosts from YAML node trees, remembering file:line for every value."""

    def __init__(self) -> None:
        self.groups: dict[str, _Group] = {"all": _Group("all"), "ungrouped": _Group("ungrouped")}
        self.host_vars: dict[str, dict[str, Any]] = {}
        self.host_source: dict[str, str] = {}
        self.var_source: dict[tuple[str, str], str] = {}  # (host-or-@group, key) -> file:line
        self.order: list[str] = []
        self._constructor: Any = None

    # -- YAML plumbing ---------------------------------------------------------------------
    @staticmethod
    def compose(path: Path) -> yaml.Node | None:
        import yaml  # imported on first load: its reader compiles a large regex

        try:
            text = path.read_text()
        except OSError as exc:
            raise InventoryError(f"{path}: cannot read: {exc.strerror}") from exc
        try:
            # libyaml's C parser when PyYAML has it: ~5x faster on large inventories
            return yaml.compose(text, Loader=getattr(yaml, "CSafeLoader", yaml.SafeLoader))
        except yaml.MarkedYAMLError as exc:
            mark = exc.problem_mark or exc.context_mark
            where = f"{path}:{mark.line + 1}" if mark else str(path)
            context = ""
            if exc.context and exc.context_mark and exc.context_mark is not mark:
                context = f" ({exc.context} at line {exc.context_mark.line + 1})"
            raise InventoryError(f"{where}: invalid YAML: {exc.problem or exc}{context}") from exc

    @staticmethod
    def where(path: Path, node: yaml.Node) -> str:
        return f"{path}:{node.start_mark.line + 1}"

    def items(
        self, path: Path, node: yaml.Node | None, what: str
    ) -> Iterator[tuple[str, yaml.Node]]:
        import yaml

        if node is None or (isinstance(node, yaml.ScalarNode) and node.value in ("", "~", "null")):
            return
        if not isinstance(node, yaml.MappingNode):
            raise InventoryError(f"{self.where(path, node)}: {what} must be a mapping")
        seen: set[str] = set()
        for key_node, value_node in node.value:
            if not isinstance(key_node, yaml.ScalarNode):
                raise InventoryError(f"{self.where(path, key_node)}: {what} keys must be names")
            key = str(key_node.value)
            if key in seen:
                raise InventoryError(
                    f"{self.where(path, key_node)}: duplicate key {key!r} in {what}"
                )
            seen.add(key)
            yield key, value_node

    def value(self, node: yaml.Node) -> Any:
        if self._constructor is None:
            import yaml

            self._constructor = yaml.SafeLoader("")  # one constructor for every value
        value = self._constructor.construct_object(node, deep=True)
        self._constructor.constructed_objects.clear()
        return value

    # -- inventory structure -----------------------------------------------------------------
    def load_file(self, path: Path) -> None:
        root = self.compose(path)
        for name, node in self.items(path, root, "the inventory's top level"):
            self.group(path, name, node, parent=None)
        self.load_var_dirs(path.parent)

    def group(self, path: Path, name: str, node: yaml.Node, parent: str | None) -> None:
        if not _NAME.fullmatch(name):
            raise InventoryError(f"{self.where(path, node)}: invalid group name {name!r}")
        grp = self.groups.setdefault(name, _Group(name))
        if parent is not None and parent != name:
            grp.parents.add(parent)
            if name not in self.groups[parent].children:
                self.groups[parent].children.append(name)
        elif name != "all":
            grp.parents.add("all")
            if name not in self.groups["all"].children:
                self.groups["all"].children.append(name)
        for key, sub in self.items(path, node, f"group {name!r}"):
            if key == "hosts":
                for host_pattern, host_node in self.items(path, sub, f"hosts of {name!r}"):
                    for host in expand_range(host_pattern, self.where(path, host_node)):
                        self.host(path, host, host_node, name)
            elif key == "children":
                for child, child_node in self.items(path, sub, f"children of {name!r}"):
                    self.group(path, child, child_node, parent=name)
            elif key == "vars":
                self.merge_vars(path, sub, grp.vars, f"@{name}", f"vars of {name!r}")
            else:
                raise InventoryError(
                    f"{self.where(path, sub)}: unexpected key {key!r} in group {name!r}",
                    hint="a group holds hosts:, children: and vars:",
                )

    def host(self, path: Path, name: str, node: yaml.Node, group: str) -> None:
        if not _NAME.fullmatch(name):
            raise InventoryError(f"{self.where(path, node)}: invalid host name {name!r}")
        if name not in self.host_source:  # host_vars/ may have been read first (another source)
            self.host_vars.setdefault(name, {})
            self.host_source[name] = self.where(path, node)
            self.order.append(name)
        self.merge_vars(path, node, self.host_vars[name], name, f"host {name!r}")
        if name not in self.groups[group].hosts:
            self.groups[group].hosts.append(name)

    def merge_vars(
        self, path: Path, node: yaml.Node | None, into: dict[str, Any], owner: str, what: str
    ) -> None:
        for key, value_node in self.items(path, node, what):
            value = self.value(value_node)
            where = self.where(path, value_node)
            check_secret_var(key, value, where)
            into[key] = value
            self.var_source[(owner, key)] = where

    def load_var_dirs(self, base: Path) -> None:
        for kind in ("group_vars", "host_vars"):
            folder = base / kind
            if not folder.is_dir():
                continue
            for entry in sorted(folder.iterdir()):
                files = sorted(entry.glob("*.y*ml")) if entry.is_dir() else [entry]
                owner = entry.stem if entry.is_file() else entry.name
                for file in files:
                    if file.suffix not in (".yml", ".yaml"):
                        continue
                    if kind == "group_vars":
                        target = self.groups.setdefault(owner, _Group(owner)).vars
                        key = f"@{owner}"
                    else:
                        target = self.host_vars.setdefault(owner, {})
                        key = owner
                    # group_vars/ and host_vars/ files win over the inventory file's own vars.
                    self.merge_vars(file, self.compose(file), target, key, f"vars in {file.name}")

    # -- result ------------------------------------------------------------------------------
    def depth(self, name: str, seen: frozenset[str] = frozenset()) -> int:
        if name == "all" or name in seen:
            return 0
        parents = self.groups[name].parents or {"all"}
        return 1 + max(self.depth(p, seen | {name}) for p in parents)

    def ancestry(self, group: str) -> set[str]:
        out, todo = set(), [group]
        while todo:
            g = todo.pop()
            if g in out:
                continue
            out.add(g)
            todo.extend(self.groups[g].parents)
        return out

    def build(self) -> Inventory:
        direct: dict[str, set[str]] = {h: set() for h in self.order}
        for grp in self.groups.values():
            for h in grp.hosts:
                direct[h].add(grp.name)
        hosts: dict[str, Host] = {}
        for name in self.order:
            groups: set[str] = {"all"}
            for g in direct[name] or {"ungrouped"}:
                groups |= self.ancestry(g)
            if not direct[name]:
                self.groups["ungrouped"].hosts.append(name)
            ordered = sorted(groups, key=lambda g: (self.depth(g), g))
            merged: dict[str, Any] = {}
            sources: dict[str, str | None] = {}
            for owner, layer in [(f"@{g}", self.groups[g].vars) for g in ordered] + [
                (name, self.host_vars[name])
            ]:
                merged.update(layer)
                sources.update({k: self.var_source.get((owner, k)) for k in layer})
            hosts[name] = make_host(
                name,
                merged,
                tuple(g for g in ordered if g != "all"),
                self.host_source[name],
                sources,
            )
        groups_out = {
            name: tuple(h for h in self.order if name in hosts[h].groups or name == "all")
            for name in self.groups
        }
        return Inventory(hosts, groups_out)


def expand_range(pattern: str, where: str) -> list[str]:
    """Ansible host ranges: `ws-[001:050]` or `sw-[a:f]`."""
    match = _RANGE.search(pattern)
    if not match:
        return [pattern]
    start, end = match.groups()
    prefix, suffix = pattern[: match.start()], pattern[match.end() :]
    if start.isdigit() and end.isdigit():
        width = len(start) if start.startswith("0") else 0
        values = [str(i).zfill(width) for i in range(int(start), int(end) + 1)]
    elif len(start) == len(end) == 1 and start.isalpha() and end.isalpha():
        values = [chr(c) for c in range(ord(start), ord(end) + 1)]
    else:
        raise InventoryError(f"{where}: invalid host range {match.group(0)!r}")
    if not values:
        raise InventoryError(f"{where}: empty host range {match.group(0)!r}")
    return [h for v in values for h in expand_range(prefix + v + suffix, where)]


def check_secret_var(key: str, value: Any, where: str) -> None:
    """Refuse a plaintext secret in inventory; references (env:, keyring:, file:, prompt) are fine."""
    if isinstance(value, Mapping):
        for k, v in value.items():
            check_secret_var(str(k), v, where)
        return
    if (
        is_secret_key(key)
        and value not in (None, "")
        and not (isinstance(value, str) and is_reference(value))
    ):
        raise InventoryError(
            f"{where}: {key} holds a plaintext secret; inventory may only reference secrets",
            hint=REFERENCE_HINT,
        )


def _platform(v: Mapping[str, Any]) -> str:
    if "platform" in v:
        return str(v["platform"])
    if v.get("ansible_connection") in ("winrm", "psrp"):
        return "windows"
    network_os = v.get("ansible_network_os")
    if network_os:
        short = str(network_os).rsplit(".", 1)[-1]  # cisco.ios.ios -> ios
        vendor = str(network_os).split(".")[0]
        return {
            "ios": "cisco_ios",
            "nxos": "cisco_nxos",
            "iosxr": "cisco_xr",
            "eos": "arista_eos",
            "junos": "juniper_junos",
            "asa": "cisco_asa",
        }.get(short, f"{vendor}_{short}")
    return "linux"


def make_host(
    name: str,
    v: Mapping[str, Any],
    groups: tuple[str, ...],
    source: str,
    sources: Mapping[str, str | None] | None = None,
) -> Host:
    """Validate merged variables into a Host; errors name the file and line of the bad value."""
    sources = sources or {}

    def fail(key: str, message: str) -> InventoryError:
        return InventoryError(f"{sources.get(key) or source}: host {name!r}: {message}")

    platform = _platform(v)
    if not _NAME.fullmatch(platform):
        raise fail("platform", f"invalid platform {platform!r}")
    transport = str(
        v.get("transport")
        or PLATFORM_TRANSPORT.get(platform)
        or ("netdev" if platform in NETWORK_PLATFORMS else "ssh")
    )
    if transport not in TRANSPORTS:
        raise fail(
            "transport", f"unknown transport {transport!r} (one of {', '.join(sorted(TRANSPORTS))})"
        )
    address = str(v.get("address") or v.get("ansible_host") or name)
    if not _valid_address(address):
        key = "address" if "address" in v else "ansible_host"
        raise fail(key, f"invalid address {address!r}")
    raw_port = v.get("port", v.get("ansible_port", DEFAULT_PORTS[transport]))
    try:
        port = int(raw_port)
    except (TypeError, ValueError):
        port = -1
    if not 0 < port < 65536:
        raise fail("port" if "port" in v else "ansible_port", f"invalid port {raw_port!r}")
    user = v.get("user", v.get("ansible_user"))
    if transport == "ldap" and user is not None:
        # a directory's service account: a bind DN, or user@domain (validated as one DN)
        if "\x00" in str(user) or "\n" in str(user) or not str(user).strip():
            raise fail("user", f"invalid bind DN {user!r}")
    elif user is not None and not re.fullmatch(r"[A-Za-z0-9_][A-Za-z0-9_.@\\-]*", str(user)):
        raise fail("user" if "user" in v else "ansible_user", f"invalid user {user!r}")
    return Host(
        name=name,
        address=address,
        port=port,
        platform=platform,
        transport=transport,
        user=str(user) if user is not None else None,
        groups=groups,
        vars=MappingProxyType(dict(v)),
        source=source,
    )


def _valid_address(address: str) -> bool:
    try:
        ipaddress.ip_address(address)
        return True
    except ValueError:
        return bool(_HOSTNAME.fullmatch(address)) and len(address) <= 253


class Inventory:
    """Hosts in inventory order and group membership; `select()` resolves target patterns."""

    def __init__(self, hosts: Mapping[str, Host], groups: Mapping[str, tuple[str, ...]]) -> None:
        self.hosts = dict(hosts)
        self.groups = {g: members for g, members in groups.items() if members or g != "ungrouped"}

    @classmethod
    def load(cls, paths: Iterable[Path]) -> Inventory:
        loader = _Loader()
        for path in paths:
            loader.load_file(path)
        return loader.build()

    def get(self, name: str) -> Host:
        try:
            return self.hosts[name]
        except KeyError:
            raise NotFound.named("host", name, self.hosts) from None

    def select(self, pattern: str) -> list[Host]:
        """Hosts matching an Ansible-style pattern: `a:b` union, `a:&b` and, `a:!b` not, globs."""
        terms = [t.strip() for t in re.split(r"[:,]", pattern) if t.strip()]
        if not terms:
            raise NotFound(
                "empty target pattern", hint="name a host, a group or a glob such as ws-*"
            )
        # Ansible's order: unions first, then intersections, then exclusions; with no union,
        # the pattern starts from `all` (`!ws-013` is every host but ws-013).
        unions = [t for t in terms if t[0] not in "&!"] or ["all"]
        ordered = unions + [t for t in terms if t[0] == "&"] + [t for t in terms if t[0] == "!"]
        selected: set[str] = set()
        for term in ordered:
            if term.startswith("&"):
                selected &= self._term(term[1:])
            elif term.startswith("!"):
                selected -= self._term(term[1:])
            else:
                selected |= self._term(term)
        if not selected:
            raise NotFound(
                f"the targets {pattern!r} match no host",
                hint="check the pattern with: itops inventory list PATTERN",
            )
        return [h for name, h in self.hosts.items() if name in selected]

    def _term(self, term: str) -> set[str]:
        if term in self.groups:
            return set(self.groups[term])
        if term in self.hosts:
            return {term}
        if term.startswith("~"):
            try:
                rx = re.compile(term[1:])
            except re.error as exc:
                raise NotFound(f"invalid regular expression {term!r}: {exc}") from exc
            found = {h for h in self.hosts if rx.search(h)}
        elif any(ch in term for ch in "*?["):
            found = {h for h in self.hosts if fnmatch.fnmatchcase(h, term)}
            for g in self.groups:
                if fnmatch.fnmatchcase(g, term):
                    found |= set(self.groups[g])
        else:
            raise NotFound.named("host or group", term, [*self.hosts, *self.groups])
        if not found:
            raise NotFound(f"no host or group matches {term!r}")
        return found
