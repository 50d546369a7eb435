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

import dataclasses
import fnmatch
import functools
import ipaddress
import re
import shlex
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
_USER = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.@\\-]*")


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
    # The jump hosts (bastions) to pass through, first hop first; resolved at inventory load
    # (see `resolve_jumps`). Each hop is a Host of its own, its own `jump` empty.
    jump: tuple[Host, ...] = field(default=(), compare=False)
    # The hops as the inventory named them, before resolution (see `JumpSpec`).
    jump_spec: tuple[JumpSpec, ...] = field(default=(), compare=False, repr=False)

    def var(self, key: str, default: Any = None) -> Any:
        return self.vars.get(key, default)


@dataclass(frozen=True)
class JumpSpec:
    """One hop as the inventory names it: an inventory host (`jump: [bastion-a]`) or, in the
    OpenSSH/Ansible spelling (`-o ProxyJump=user@bastion:22`), an inventory host or an address;
    `user`/`port` are set only when the spelling gives them."""

    target: str
    user: str | None = None
    port: int | None = None
    inventory_only: bool = False  # the itops form: must name an inventory host


# ssh options itops's own transport honours (ProxyJump) or whose effect it already has or does
# not need (it always checks host keys strictly against the workspace's known_hosts; it keeps one
# connection per host for a whole run). Any other option is not honoured: those that would send
# the connection elsewhere are refused at load, the rest become a notice on the host's results.
SSH_OPTIONS_QUIET = frozenset(
    {
        "stricthostkeychecking",  # only "yes" is quiet (checked below)
        "userknownhostsfile",
        "globalknownhostsfile",
        "controlmaster",
        "controlpersist",
        "controlpath",
        "serveraliveinterval",
        "serveralivecountmax",
        "connecttimeout",
        "loglevel",
        "batchmode",
        "identitiesonly",
        "forwardagent",
        "forwardx11",
        "compression",
    }
)
# Options that choose where or through what the connection goes: itops cannot honour them, and
# connecting anyway would take another path than the inventory means.
SSH_OPTIONS_REFUSED = frozenset({"proxycommand", "hostname", "port", "user", "proxyusefdpass"})
# ssh flags that take an argument (to skip it), and those that choose the destination.
_SSH_FLAGS_WITH_ARG = set("BbcDEeFIiJLlmOoPpQRSWw")
_SSH_FLAGS_REFUSED = {"-p": "Port", "-l": "User", "-F": "a config file"}


@dataclass(frozen=True)
class SshArgs:
    """What itops makes of ansible_ssh_common_args / ansible_ssh_extra_args."""

    jump: tuple[JumpSpec, ...] | None = None  # None: no ProxyJump given; (): ProxyJump=none
    ignored: tuple[str, ...] = ()  # options itops does not honour (a notice per run)
    refused: tuple[str, ...] = ()  # options that would route elsewhere: the host is refused


def parse_proxy_jump(value: str) -> tuple[JumpSpec, ...]:
    """OpenSSH's ProxyJump: `[user@]host[:port]` or `ssh://[user@]host[:port]`, comma-separated,
    first hop first; `none` for no jump. Raises ValueError with what is wrong."""
    value = value.strip()
    if value.lower() == "none":
        return ()
    hops = []
    for part in value.split(","):
        part = part.strip()
        if part.startswith("ssh://"):
            part = part[len("ssh://") :].rstrip("/")
        user, _, hostport = part.rpartition("@")
        host, port = hostport, None
        if hostport.startswith("["):  # [v6]:port
            host, _, rest = hostport[1:].partition("]")
            if rest:
                port = rest.lstrip(":")
        elif hostport.count(":") == 1:
            host, port = hostport.split(":")
        if not host or not (_valid_address(host) or _NAME.fullmatch(host)):
            raise ValueError(f"invalid jump host {part!r} (want [user@]host[:port])")
        if user and not _USER.fullmatch(user):
            raise ValueError(f"invalid jump user {user!r}")
        number = None
        if port is not None:
            if not port.isdigit() or not 0 < int(port) < 65536:
                raise ValueError(f"invalid jump port in {part!r}")
            number = int(port)
        hops.append(JumpSpec(host, user or None, number))
    return tuple(hops)


@functools.lru_cache(maxsize=256)  # a group's value, merged into each of its hosts
def parse_ssh_args(text: str) -> SshArgs:
    """ProxyJump (`-o ProxyJump=…` or `-J …`) out of an ssh argument string; other options are
    listed as ignored, or as refused when ignoring them would change the destination (ansible
    honours them, so the inventory still loads: itops's own transports refuse the host).
    Malformed text raises ValueError."""
    try:
        words = shlex.split(text)
    except ValueError as exc:
        raise ValueError(f"cannot split the ssh arguments: {exc}") from None
    jump: tuple[JumpSpec, ...] | None = None
    ignored: list[str] = []
    refused: list[str] = []
    i = 0
    while i < len(words):
        word = words[i]
        i += 1
        if not word.startswith("-") or len(word) < 2:
            raise ValueError(f"unexpected ssh argument {word!r}")
        flag, inline = word[:2], word[2:]
        if flag[1] not in _SSH_FLAGS_WITH_ARG:
            ignored.append(word)  # -v, -C, -4 …: switches with no bearing on the path
            continue
        if not inline:
            if i >= len(words):
                raise ValueError(f"ssh option {flag} needs a value")
            inline = words[i]
            i += 1
        if flag in _SSH_FLAGS_REFUSED:
            refused.append(f"{flag} {inline}")
            continue
        if flag == "-J":
            jump = parse_proxy_jump(inline)
            continue
        if flag != "-o":
            ignored.append(f"{flag} {inline}")
            continue
        key, sep, val = inline.partition("=")
        if not sep:
            key, _, val = inline.partition(" ")
        key, val = key.strip(), val.strip()
        lowered = key.lower()
        if lowered == "proxyjump":
            jump = parse_proxy_jump(val)
        elif lowered in SSH_OPTIONS_REFUSED:
            refused.append(f"{key}={val}")
        elif lowered in SSH_OPTIONS_QUIET and not (
            lowered == "stricthostkeychecking" and val.lower() not in ("yes", "true")
        ):
            continue
        else:
            ignored.append(f"{key}={val}")
    return SshArgs(jump, tuple(ignored), tuple(refused))


def ssh_args_not_honoured(host: Host) -> tuple[list[str], list[str]]:
    """The host's ssh options itops's transports do not honour: (ignored, refused), each
    `variable: option` (see SshArgs; the values were checked at load)."""
    ignored: list[str] = []
    refused: list[str] = []
    for key in ("ansible_ssh_common_args", "ansible_ssh_extra_args"):
        text = host.var(key)
        if text:
            parsed = parse_ssh_args(str(text))
            ignored += [f"{key}: {o}" for o in parsed.ignored]
            refused += [f"{key}: {o}" for o in parsed.refused]
    return ignored, refused


def refuse_rerouting_ssh_args(host: Host) -> None:
    """Before connecting: a host whose ssh options would send ssh another way (ProxyCommand,
    HostName, Port, User, -F …) is refused, not connected to directly behind the inventory's
    back. Ansible honours those options, so playbooks still reach it."""
    refused = ssh_args_not_honoured(host)[1]
    if refused:
        from toolkit.errors import TransportError

        raise TransportError(
            host.name,
            f"itops does not honour {', '.join(refused)}: it would connect another way than the "
            "inventory means; nothing was sent",
            hint="use jump: [bastion] or -o ProxyJump=user@bastion:22, and ansible_host / "
            "ansible_port / ansible_user for the address, port and user",
        )


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
        return Inventory(resolve_jumps(hosts), groups_out)


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
    elif user is not None and not _USER.fullmatch(str(user)):
        raise fail("user" if "user" in v else "ansible_user", f"invalid user {user!r}")
    spec = _jump_spec(v, fail)
    if spec and transport == "winrm":
        raise fail(
            "jump" if "jump" in v else "ansible_ssh_common_args",
            "jump hosts carry SSH and network-device connections, not WinRM",
        )
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
        jump_spec=spec,
    )


def _jump_spec(v: Mapping[str, Any], fail: Any) -> tuple[JumpSpec, ...]:
    """The hops a host's variables name: `jump` (inventory hosts) or a ProxyJump in
    ansible_ssh_common_args / ansible_ssh_extra_args (the later one wins, as with ssh)."""
    from_args: tuple[JumpSpec, ...] | None = None
    where = None
    for key in ("ansible_ssh_common_args", "ansible_ssh_extra_args"):
        if v.get(key) in (None, ""):
            continue
        try:
            parsed = parse_ssh_args(str(v[key]))
        except ValueError as exc:
            raise fail(key, f"{key}: {exc}") from None
        if parsed.jump is not None and from_args is None:  # ssh keeps the first value given
            from_args, where = parsed.jump, key
    raw = v.get("jump")
    if raw in (None, "", []):
        return from_args or ()
    if from_args is not None:
        raise fail("jump", f"both jump and a ProxyJump in {where}: name the jump hosts once")
    names = raw.split(",") if isinstance(raw, str) else raw
    if not isinstance(names, list) or not all(isinstance(n, str) and n.strip() for n in names):
        raise fail("jump", "jump must be a list of inventory host names (first hop first)")
    return tuple(JumpSpec(n.strip(), inventory_only=True) for n in names)


def resolve_jumps(hosts: Mapping[str, Host]) -> dict[str, Host]:
    """Each host with jump hops gets them as Hosts: an inventory host as itself (its own
    variables: address, port, user, credentials), an address as a Host of its own that logs in
    with the target's key (never its password). A hop's own jump hosts come first (OpenSSH's
    ProxyJump of the first hop), so chains nest; a cycle is refused here, at load."""
    resolved: dict[str, tuple[Host, ...]] = {}

    def path(name: str, trail: tuple[str, ...]) -> tuple[Host, ...]:
        if name in resolved:
            return resolved[name]
        host = hosts[name]
        if name in trail:
            raise InventoryError(
                f"{host.source}: jump hosts form a cycle: {' → '.join((*trail, name))}",
                hint="a jump host cannot be reached through itself; check the jump / ProxyJump "
                "variables of these hosts",
            )
        hops: list[Host] = []
        for index, spec in enumerate(host.jump_spec):
            if spec.target in hosts:
                hop = hosts[spec.target]
                if index == 0:
                    hops.extend(path(spec.target, (*trail, name)))
                hop = dataclasses.replace(
                    hop,
                    port=spec.port or hop.port,
                    user=spec.user or hop.user,
                    jump=(),
                    jump_spec=(),
                )
            elif spec.inventory_only:
                close = NotFound.named("host", spec.target, hosts).hint
                raise InventoryError(
                    f"{host.source}: host {name!r}: jump names {spec.target!r}, which is not an "
                    "inventory host",
                    hint=close
                    or "jump: lists inventory host names; for an address use "
                    "ansible_ssh_common_args: '-o ProxyJump=user@address:port'",
                )
            else:
                hop = _address_hop(host, spec)
            if hop.name == name:
                raise InventoryError(
                    f"{host.source}: host {name!r} names itself as a jump host",
                    hint="a host cannot be reached through itself",
                )
            hops.append(hop)
        resolved[name] = tuple(hops)
        return resolved[name]

    out = {}
    for name, host in hosts.items():
        out[name] = dataclasses.replace(host, jump=path(name, ())) if host.jump_spec else host
    return out


_HOP_KEY_VARS = ("ssh_key", "ansible_ssh_private_key_file", "ssh_key_passphrase")


def _address_hop(target: Host, spec: JumpSpec) -> Host:
    port = spec.port or 22
    return Host(
        name=spec.target if port == 22 else f"{spec.target}:{port}",
        address=spec.target,
        port=port,
        user=spec.user or target.user,
        vars=MappingProxyType({k: target.vars[k] for k in _HOP_KEY_VARS if k in target.vars}),
        source=target.source,
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
