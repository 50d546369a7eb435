"""Device configuration text: per-platform secret and volatile-line rules, trees, diffs, rollback.

Backups store `sanitize(platform, text)`: secrets replaced by `<removed>` (passwords, enable
secrets, keys, SNMP communities, pre-shared keys…) and volatile lines dropped (timestamps,
"Current configuration : N bytes", NVRAM update times), so two backups of an unchanged device are
byte-identical and a diff shows only real changes.

Changes are checked and undone on indentation trees (IOS, EOS, NX-OS, IOS-XR, ASA style):
`missing(desired, running)` lists the desired lines the running configuration lacks (in their
context), and `rollback_lines(before, after)` is the configuration that takes a device from `after`
back to `before`: negate what was added, re-add what was removed, each inside its parent section.
"""

from __future__ import annotations

import difflib
import functools
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

REMOVED = "<removed>"
IOS_LIKE = frozenset({"cisco_ios", "cisco_xe", "cisco_nxos", "arista_eos", "cisco_xr", "cisco_asa"})


@dataclass(frozen=True)
class Rules:
    """How one platform family marks comments, and which lines are volatile or carry secrets.

    Patterns are compiled on first use: every `itops` command loads the catalog, few touch
    device configurations."""

    comment: str
    volatile_patterns: tuple[str, ...]
    secret_patterns: tuple[str, ...]  # each with a group named "secret"

    @functools.cached_property
    def volatile(self) -> tuple[re.Pattern[str], ...]:
        return tuple(re.compile(p) for p in self.volatile_patterns)

    @functools.cached_property
    def secrets(self) -> tuple[re.Pattern[str], ...]:
        return tuple(re.compile(p) for p in self.secret_patterns)


_IOS = Rules(
    comment="!",
    volatile_patterns=(
        r"^Building configuration",
        r"^Current configuration\s*:",
        r"^\s*!+\s*Last configuration change",
        r"^\s*!\s*NVRAM config last updated",
        r"^\s*!\s*No configuration change since last restart",
        r"^\s*!\s*Time:",
        r"^\s*!\s*Command:",
        r"^\s*!\s*device:",
        r"^\s*!\s*Running configuration last done at",
        r"^\s*!\s*Startup config(?:uration)? saved at",
        r"^\s*!\s*Startup-config last modified",
        r"^!! IOS XR Configuration",
        r"^(?:Mon|Tue|Wed|Thu|Fri|Sat|Sun) \w{3}\s+\d+ [\d:.]+ \S+$",  # IOS-XR's first line
        r"^ntp clock-period",
        r"^Using \d+ out of \d+ bytes",
        r"^: (?:Saved|Written by|Serial Number)",
        r"^Cryptochecksum:",
    ),
    secret_patterns=(
        r"\benable (?:secret|password)(?: level \d+)?(?: (?:\d+|sha512|sha256|md5))? (?P<secret>\S+)",
        r"^\s*username \S+\b.*? (?:secret|password)(?: (?:\d+|sha512|sha256|md5))? (?P<secret>\S+)",
        r"\bsnmp-server community (?P<secret>\S+)",
        r"\bsnmp-server host \S+(?: (?:informs|traps))?"
        r"(?: version (?:1|2c|3(?: (?:auth|noauth|priv))?))? (?P<secret>\S+)",
        # (`snmp-server group G v3 priv read VIEW`: a security level and a view, no secret)
        r"\b(?:auth (?:md5|sha\d*)|priv (?:des|3des|aes(?:-\d+)?(?: \d+)?)"
        r"|priv(?! (?:read|write|notify|access|context|match)\b)) (?P<secret>\S+)",
        r"\b(?:tacacs-server|radius-server) key(?: \d+)? (?P<secret>\S+)",
        r"\b(?:tacacs-server|radius-server) host \S+\b.*? key(?: [0-7])? (?P<secret>\S+)",
        r"\bstandby(?: \d+)? authentication(?: text)? (?!md5\b|text\b)(?P<secret>\S+)",
        r"\bip (?:ftp|http client) password(?: [0-7])? (?P<secret>\S+)",
        r"^\s*key (?:(?:0|6|7) (?=\S)|(?!\d+$))(?P<secret>\S+)$",
        r"\bkey-string(?: \d+)? (?P<secret>\S+)",
        r"^\s*password(?: \d+)? (?P<secret>\S+)",
        r"^\s*passwd (?P<secret>\S+)",
        r"\b(?:authentication-key|message-digest-key \d+ md5)(?: \d+)?(?: (?:md5|sha\d*))?"
        r" (?P<secret>\S+)",
        r"\bneighbor \S+ password(?: \d+)? (?P<secret>\S+)",
        r"\bcrypto isakmp key(?: \d+)? (?P<secret>\S+)",
        r"\bpre-shared-key(?: (?:local|remote|address \S+))?(?: \d+)? (?P<secret>\S+)",
        r"\b(?:wpa-psk ascii|ppp (?:chap|pap) password)(?: \d+)? (?P<secret>\S+)",
    ),
)
_JUNOS = Rules(
    comment="#",
    volatile_patterns=(r"^\s*## Last (?:commit|changed):", r"^\s*# Last commit"),
    secret_patterns=(
        r"\"(?P<secret>[^\"]*)\";? *## SECRET-DATA",
        r"\b(?:encrypted-password|authentication-key|secret|simple-password|"
        r"hello-authentication-key|pre-shared-key (?:ascii-text|hexadecimal)) \"?(?P<secret>[^\";\s]+)",
        r"^\s*(?:set snmp )?community (?P<secret>[^\s;{]++)(?!\s+members)",
    ),
)
_VRP = Rules(
    comment="#",
    volatile_patterns=(
        r"^\s*!Last configuration was (?:updated|saved)",
        r"^\s*!Time:",
        r"^\s*!Software Version",
    ),
    secret_patterns=(
        r"\b(?:cipher|irreversible-cipher|simple) (?P<secret>\S+)",
        r"\bsnmp-agent community (?:read|write) (?!cipher\b)(?P<secret>\S+)",
    ),
)
RULES = {p: _IOS for p in IOS_LIKE} | {
    "juniper_junos": _JUNOS,
    "huawei_vrp": _VRP,
    "huawei": _VRP,
}


def rules(platform: str) -> Rules:
    return RULES.get(platform, _IOS)


def scrub_line(platform: str, line: str) -> str:
    """The line with every secret value replaced by <removed>."""
    for pattern in rules(platform).secrets:
        match = pattern.search(line)
        while match and match.group("secret") != REMOVED:
            start, end = match.span("secret")
            line = line[:start] + REMOVED + line[end:]
            match = pattern.search(line, start + len(REMOVED))
    return line


def scrub(platform: str, text: str) -> str:
    """Secrets removed from every line (what itops records of any device output)."""
    return "\n".join(scrub_line(platform, line) for line in text.split("\n"))


def is_volatile(platform: str, line: str) -> bool:
    return any(p.search(line) for p in rules(platform).volatile)


def sanitize(platform: str, text: str) -> str:
    """What a backup stores: secrets removed, volatile lines dropped, line ends normalised."""
    lines = [
        scrub_line(platform, line.rstrip())
        for line in text.replace("\r\n", "\n").replace("\r", "\n").split("\n")
        if not is_volatile(platform, line)
    ]
    while lines and not lines[0].strip():
        lines.pop(0)
    while lines and not lines[-1].strip():
        lines.pop()
    return "\n".join(lines) + "\n" if lines else ""


def secret_lines(platform: str, lines: Iterable[str]) -> list[str]:
    """The lines that carry a secret (scrubbing would change them)."""
    return [line for line in lines if scrub_line(platform, line) != line]


def unified_diff(old: str, new: str, old_name: str, new_name: str) -> str:
    return "".join(
        difflib.unified_diff(
            old.splitlines(keepends=True), new.splitlines(keepends=True), old_name, new_name
        )
    )


def diff_stat(diff: str) -> tuple[int, int]:
    """(lines added, lines removed) of a unified diff."""
    lines = diff.splitlines()
    added = sum(1 for ln in lines if ln.startswith("+") and not ln.startswith("+++"))
    removed = sum(1 for ln in lines if ln.startswith("-") and not ln.startswith("---"))
    return added, removed


# --------------------------------------------------------------------------- trees

Tree = dict[str, "Tree"]


def tree(platform: str, text: str | Sequence[str]) -> Tree:
    """An indentation tree of configuration lines; comments, `end` and volatile lines dropped."""
    lines = text.splitlines() if isinstance(text, str) else list(text)
    comment = rules(platform).comment
    root: Tree = {}
    stack: list[tuple[int, Tree]] = [(-1, root)]
    for raw in lines:
        line = raw.rstrip()
        body = line.strip()
        if not body or body.startswith(comment) or body == "end" or is_volatile(platform, line):
            continue
        indent = len(line) - len(line.lstrip(" "))
        while stack[-1][0] >= indent:
            stack.pop()
        children = stack[-1][1].setdefault(body, {})
        stack.append((indent, children))
    return root


def _negate(line: str) -> str:
    return line[3:] if line.startswith("no ") else f"no {line}"


def _render(node: Tree, depth: int) -> list[str]:
    out = []
    for line, children in node.items():
        out.append(" " * depth + line)
        out += _render(children, depth + 1)
    return out


def rollback_lines(before: Tree, after: Tree, depth: int = 0) -> list[str]:
    """Configuration lines that turn `after` back into `before` (negations first, then re-adds)."""
    pad = " " * depth
    out = [pad + _negate(line) for line in after if line not in before]
    for line, children in before.items():
        if line not in after:
            if children or pad + line not in out:  # `no X` may already be the negation of X
                out.append(pad + line)
                out += _render(children, depth + 1)
            continue
        inner = rollback_lines(children, after[line], depth + 1)
        if inner:
            out += [pad + line, *inner]
    return out


def missing(desired: Tree, running: Tree, depth: int = 0) -> list[str]:
    """Desired lines absent from the running tree, as `+` lines under their (unmarked) parents.

    A desired `no X` is present when `X` is absent at that level."""
    pad = " " * depth
    out: list[str] = []
    for line, children in desired.items():
        if line.startswith("no ") and not children:
            if line[3:] in running:
                out.append("+" + pad + line)
            continue
        if line not in running:
            out.append("+" + pad + line)
            out += ["+" + ln for ln in _render(children, depth + 1)]
            continue
        inner = missing(children, running[line], depth + 1)
        if inner:
            out += [" " + pad + line, *inner]
    return out
