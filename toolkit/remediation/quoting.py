"""The one module that turns values into remote command text: POSIX sh and PowerShell.

Every remote command is built here from an argument list or from a template written in code whose
placeholders are filled with quoted values; nothing else in itops concatenates user input into a
command. Validators for common value shapes live here too, so a bad value is refused with the same
words wherever it is used.

Example:
    >>> cmd("lpstat", "-o", "office 2").text
    "lpstat -o 'office 2'"
    >>> script("cancel -a {queue} && cupsenable {queue}", queue="lab").text
    'cancel -a lab && cupsenable lab'
"""

from __future__ import annotations

import base64
import re
import shlex
import string
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from pathlib import PurePath
from typing import Any

from toolkit.errors import ValidationError
from toolkit.secrets.credentials import MASK, Secret

Arg = str | int | PurePath


@dataclass(frozen=True)
class Command:
    """A remote command: `text` is sent, `display` is what output, logs and the ledger show."""

    text: str
    display: str
    shell: str = "sh"

    def __str__(self) -> str:
        return self.display

    def __or__(self, other: Command) -> Command:
        return self._join(" | ", other)

    def then(self, other: Command) -> Command:
        """`self && other`."""
        return self._join(" && ", other)

    def _join(self, op: str, other: Command) -> Command:
        if other.shell != self.shell:
            raise TypeError("cannot join commands for different shells")
        return Command(self.text + op + other.text, self.display + op + other.display, self.shell)


# --------------------------------------------------------------------------- POSIX sh


def _posix_arg(value: Any) -> str:
    if isinstance(value, Secret):
        raise ValidationError(
            "a secret cannot be put on a command line (it would show in the process list)",
            hint="pass it on stdin instead",
        )
    if isinstance(value, bool) or not isinstance(value, str | int | PurePath):
        raise TypeError(f"cannot quote {type(value).__name__} for a shell")
    text = str(value)
    if "\x00" in text:
        raise ValidationError("a value contains a NUL byte")
    return shlex.quote(text)


def cmd(*argv: Arg) -> Command:
    """A simple command from an argument list; every argument is quoted."""
    if not argv:
        raise ValueError("empty command")
    text = " ".join(_posix_arg(a) for a in argv)
    return Command(text, text)


class _QuotingFormatter(string.Formatter):
    def __init__(self, quote: Any) -> None:
        self._quote = quote

    def format_field(self, value: Any, format_spec: str) -> str:
        if format_spec:
            raise ValueError("format specs are not allowed in command templates")
        return str(self._quote(value))

    def convert_field(self, value: Any, conversion: str | None) -> Any:
        if conversion is not None:
            raise ValueError("conversions are not allowed in command templates")
        return value


_POSIX_FORMATTER = _QuotingFormatter(_posix_arg)


def script(template: str, /, **values: Arg) -> Command:
    """A shell snippet written in code (pipes, `&&`, redirections) with quoted `{name}` values.

    The template must be a literal in the source: it is the program, the values are data.
    """
    text = _POSIX_FORMATTER.vformat(template, (), values)
    return Command(text, text)


def become(command: Command, *, method: str = "sudo", user: str = "root") -> Command:
    """Run a command as another user without a password prompt (`sudo -n`), never a root login."""
    if method != "sudo":
        raise ValidationError(f"unsupported become method {method!r}", hint="itops supports sudo")
    check_token(user, "become user")
    if command.shell != "sh":
        raise ValidationError(f"become wraps sh commands in sudo, not {command.shell} ones")
    prefix = cmd("sudo", "-n", "-u", user, "--", "/bin/sh", "-c")
    return Command(
        f"{prefix.text} {shlex.quote(command.text)}",
        f"{prefix.display} {shlex.quote(command.display)}",
    )


# --------------------------------------------------------------------------- PowerShell

# PowerShell treats the typographic single quotes as quote characters too.
_PS_SINGLE_QUOTES = re.compile("['\u2018\u2019\u201a\u201b]")


def ps_quote(value: str) -> str:
    """A PowerShell single-quoted literal: no expansion of `$`, backticks or subexpressions."""
    if "\x00" in value:
        raise ValidationError("a value contains a NUL byte")
    return "'" + _PS_SINGLE_QUOTES.sub(lambda m: m.group(0) * 2, value) + "'"


@dataclass(frozen=True)
class StdinSecret:
    """A secret a PowerShell script reads from its own stdin into a SecureString.

    A value inside the script would be part of powershell.exe's command line, which Windows
    process auditing (event 4688 with command lines) and EDR tools log; stdin is not logged.
    Put the object in the template (`$pw = {password}`) and send `.stdin()` as the command's
    stdin: base64 of UTF-8, so any character survives the console's code page.
    """

    secret: Secret

    TEXT = (
        "(ConvertTo-SecureString -AsPlainText -Force -String ([Text.Encoding]::UTF8.GetString("
        "[Convert]::FromBase64String([Console]::In.ReadToEnd().Trim()))))"
    )

    def stdin(self) -> Secret:
        """What to send on stdin; a Secret too (the encoded value is as good as the plain)."""
        encoded = base64.b64encode(self.secret.reveal().encode("utf-8")).decode("ascii")
        return Secret(encoded, self.secret.label)


def _ps_value(value: Any) -> tuple[str, str]:
    """(text, display) for one PowerShell value. A secret is refused: scripts read one from stdin
    (StdinSecret), never from their command line."""
    if isinstance(value, Secret):
        raise ValidationError(
            "a secret cannot be put in a PowerShell command line (process auditing logs it)",
            hint="read it from stdin: StdinSecret(secret) in the script, .stdin() as its stdin",
        )
    if isinstance(value, StdinSecret):
        return StdinSecret.TEXT, StdinSecret.TEXT
    if isinstance(value, bool):
        return ("$true", "$true") if value else ("$false", "$false")
    if isinstance(value, int):
        return str(value), str(value)
    if isinstance(value, str | PurePath):
        quoted = ps_quote(str(value))
        return quoted, quoted
    if isinstance(value, list | tuple):
        parts = [_ps_value(v) for v in value]
        return "@(" + ",".join(p[0] for p in parts) + ")", "@(" + ",".join(
            p[1] for p in parts
        ) + ")"
    raise TypeError(f"cannot quote {type(value).__name__} for PowerShell")


class _PsFormatter(_QuotingFormatter):
    def __init__(self, pick: int) -> None:
        super().__init__(lambda v: _ps_value(v)[pick])


_PS_TEXT, _PS_DISPLAY = _PsFormatter(0), _PsFormatter(1)


def ps_script(template: str, /, **values: Any) -> Command:
    """A PowerShell script written in code with `{name}` placeholders filled by quoted literals."""
    return Command(
        _PS_TEXT.vformat(template, (), values),
        _PS_DISPLAY.vformat(template, (), values),
        "powershell",
    )


def ps_join(*commands: Command) -> Command:
    """PowerShell commands as one script, one statement block per line (quoting already done)."""
    if not commands or any(c.shell != "powershell" for c in commands):
        raise TypeError("ps_join joins one or more PowerShell commands")
    return Command(
        "\n".join(c.text for c in commands), "\n".join(c.display for c in commands), "powershell"
    )


def ps_encoded(command: Command) -> str:
    """The `-EncodedCommand` form: base64 of UTF-16LE, so no quoting layer of cmd.exe is involved."""
    if command.shell != "powershell":
        raise TypeError("only PowerShell commands can be encoded")
    return base64.b64encode(command.text.encode("utf-16-le")).decode("ascii")


# --------------------------------------------------------------------------- validators

_TOKEN = re.compile(r"[A-Za-z0-9_.:@%+=,/-]+")
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")


def _describe(ch: str) -> str:
    names = {"\n": "a newline", "\r": "a carriage return", "\t": "a tab", " ": "a space"}
    return names.get(ch, repr(ch))


def check_token(value: str, what: str) -> str:
    """A name-like value (user, queue, package, service): no shell metacharacters, no leading `-`."""
    if not value:
        raise ValidationError(f"{what} is empty")
    if value.startswith("-"):
        raise ValidationError(f"{what} {value!r} starts with '-' (it would read as an option)")
    if not _TOKEN.fullmatch(value):
        bad = next(ch for ch in value if not _TOKEN.fullmatch(ch))
        raise ValidationError(
            f"{what} {value!r} contains {_describe(bad)}",
            hint="allowed: letters, digits and _ . : @ % + = , / -",
        )
    return value


def check_path(value: str, what: str, *, absolute: bool = False) -> str:
    """A filesystem path: printable, no `..` segments, no leading `-`; spaces are fine (quoted)."""
    if not value:
        raise ValidationError(f"{what} is empty")
    bad = _CONTROL.search(value)
    if bad:
        raise ValidationError(f"{what} {value!r} contains {_describe(bad.group())}")
    if value.startswith("-"):
        raise ValidationError(f"{what} {value!r} starts with '-' (it would read as an option)")
    if ".." in PurePath(value).parts:
        raise ValidationError(f"{what} {value!r} contains a '..' segment")
    if absolute and not value.startswith("/"):
        raise ValidationError(f"{what} {value!r} must be an absolute path")
    return value


def check_text(value: str, what: str) -> str:
    """Free text (a reason, a comment): any printable characters, passed literally; no newlines."""
    bad = _CONTROL.search(value)
    if bad:
        raise ValidationError(f"{what} contains {_describe(bad.group())}")
    return value


def mapping_display(values: Mapping[str, Any]) -> dict[str, Any]:
    """Parameters as they may be shown and recorded: secrets masked."""
    return {k: (MASK if isinstance(v, Secret) else v) for k, v in values.items()}


# --------------------------------------------------------------------------- network CLIs
# Network operating systems have no shell: a command is one line typed at a prompt, and a change is
# a list of configuration lines typed in configuration mode. What must never reach the device is a
# line break inside a value (it would type a second command), a `?` (IOS answers with help and
# keeps the half-typed line), a `|` in a show command (an output filter) or a `!`/`#` (a comment).

NETCLI = "netcli"
MAX_CONFIG_LINE = 1024

# Interface names per platform: full and abbreviated forms, slot/port numbering, sub-interfaces.
_IOS_NAMES = (
    "GigabitEthernet|FastEthernet|TenGigabitEthernet|TwentyFiveGigE|FortyGigabitEthernet|"
    "HundredGigE|TwoGigabitEthernet|FiveGigabitEthernet|AppGigabitEthernet|Ethernet|"
    "Port-channel|Vlan|Loopback|Tunnel|Gi|Fa|Te|Twe|Fo|Hu|Tw|Fi|Et|Eth|Po|Vl|Lo|Tu"
)
INTERFACE_PATTERNS: dict[str, str] = {
    "cisco_ios": rf"(?i:{_IOS_NAMES})\d+(/\d+){{0,3}}(\.\d+)?",
    "cisco_xe": rf"(?i:{_IOS_NAMES})\d+(/\d+){{0,3}}(\.\d+)?",
    "arista_eos": r"(?i:Ethernet|Et|Port-Channel|Po|Management|Ma|Vlan|Vl|Loopback|Lo)"
    r"\d+(/\d+){0,2}(\.\d+)?",
    "cisco_nxos": r"(?i:Ethernet|Eth|Et)\d+/\d+(/\d+)?(\.\d+)?"
    r"|(?i:port-channel|po|Vlan|loopback|lo)\d+(\.\d+)?|mgmt0",
    "cisco_xr": r"(?:GigabitEthernet|TenGigE|TwentyFiveGigE|FortyGigE|HundredGigE|MgmtEth|"
    r"Bundle-Ether|Loopback|BVI|Gi|Te|Hu|BE|Lo)\d+(/(\d+|RS?P\d|CPU\d)){0,4}(\.\d+)?",
    "cisco_asa": r"(?:GigabitEthernet|TenGigabitEthernet|Management|Port-channel|Redundant)"
    r"\d+(/\d+){0,2}(\.\d+)?",
    "juniper_junos": r"(?:ge|xe|et|fe|mge)-\d+/\d+/\d+(:\d+)?(\.\d+)?"
    r"|(?:ae|em|fxp|me)\d+(\.\d+)?|(?:lo0|irb|vlan)(\.\d+)?",
    "huawei_vrp": r"(?:GigabitEthernet|XGigabitEthernet|Ethernet|25GE|40GE|100GE|Eth-Trunk|"
    r"Vlanif|LoopBack|MEth|GE|XGE)\d+(/\d+){0,3}(\.\d+)?",
}
INTERFACE_PATTERNS["huawei"] = INTERFACE_PATTERNS["huawei_vrp"]
INTERFACE_EXAMPLES = {
    "cisco_ios": "GigabitEthernet1/0/1, Gi1/0/1, Port-channel1",
    "cisco_xe": "GigabitEthernet1/0/1, Gi1/0/1, Port-channel1",
    "arista_eos": "Ethernet1, Et49/1, Port-Channel10",
    "cisco_nxos": "Ethernet1/1, port-channel10, mgmt0",
    "cisco_xr": "GigabitEthernet0/0/0/1, Bundle-Ether10",
    "cisco_asa": "GigabitEthernet0/1, Management0/0",
    "juniper_junos": "ge-0/0/1, xe-0/1/0.100, ae0",
    "huawei_vrp": "GigabitEthernet0/0/1, Eth-Trunk1, Vlanif10",
    "huawei": "GigabitEthernet0/0/1, Eth-Trunk1, Vlanif10",
}
_CLI_WORD = re.compile(r"[A-Za-z0-9_.:/@+=,-]+")
_CONFIG_FORBIDDEN = re.compile(r"[\x00-\x1f\x7f?]")


def check_interface(value: str, platform: str) -> str:
    """An interface name in the form the platform's CLI uses (refused if it has another shape)."""
    pattern = INTERFACE_PATTERNS.get(platform)
    if pattern is None:
        raise ValidationError(f"no interface naming rules for platform {platform!r}")
    bad = _CONTROL.search(value)
    if bad:
        raise ValidationError(f"interface name {value!r} contains {_describe(bad.group())}")
    if not re.fullmatch(pattern, value):
        raise ValidationError(
            f"{value!r} is not a {platform} interface name",
            hint=f"for example: {INTERFACE_EXAMPLES[platform]}",
        )
    return value


def check_vlan(value: int | str) -> int:
    """An 802.1Q VLAN id usable on an access port: 1–4094 (0 and 4095 are reserved)."""
    try:
        number = int(value)
    except (TypeError, ValueError):
        raise ValidationError(f"VLAN {value!r} is not a number") from None
    if isinstance(value, bool) or not 1 <= number <= 4094:
        raise ValidationError(f"VLAN {value!r} is outside 1–4094")
    return number


def check_config_line(line: str, what: str = "config line") -> str:
    """One configuration line: printable text, no line break inside, no `?`, bounded length."""
    bad = _CONFIG_FORBIDDEN.search(line)
    if bad:
        where = f"{what} {line[:60]!r}"
        raise ValidationError(
            f"{where} contains {_describe(bad.group())}",
            hint="a configuration line is one line; `?` would make the device print help",
        )
    if len(line) > MAX_CONFIG_LINE:
        raise ValidationError(f"{what} is longer than {MAX_CONFIG_LINE} characters")
    if not line.strip():
        raise ValidationError(f"{what} is empty")
    return line


def _cli_value(value: Any) -> str:
    if isinstance(value, Secret):
        raise ValidationError(
            "a secret cannot be typed into a network CLI command by itops",
            hint="network secrets belong in dedicated tasks, never in a recorded command",
        )
    if isinstance(value, bool) or not isinstance(value, str | int):
        raise TypeError(f"cannot put {type(value).__name__} into a network CLI command")
    text = str(value)
    if not text or text.startswith("-") or not _CLI_WORD.fullmatch(text):
        raise ValidationError(
            f"{text!r} is not a single CLI word",
            hint="allowed: letters, digits and _ . : / @ + = , - (no spaces, |, ?, ! or #)",
        )
    return text


_CLI_FORMATTER = _QuotingFormatter(_cli_value)


def cli(template: str, /, **values: str | int) -> Command:
    """A network CLI command (a `show …`, `clear …`) from a template literal and checked words."""
    text = _CLI_FORMATTER.vformat(template, (), values)
    check_config_line(text, "command")
    return Command(text, text, NETCLI)


def config(*templates: str, **values: str | int) -> tuple[str, ...]:
    """Configuration lines from template literals whose `{name}` placeholders take checked words."""
    return config_lines(_CLI_FORMATTER.vformat(t, (), values) for t in templates)


def config_display(lines: Iterable[str], scrub: Callable[[str], str] | None = None) -> str:
    """How a configuration push is shown and recorded: each line stripped and, for a device,
    scrubbed of secret values (the device still gets the real lines)."""
    return "configure: " + " ; ".join(
        scrub(line.strip()) if scrub else line.strip() for line in lines
    )


def config_lines(lines: Iterable[str]) -> tuple[str, ...]:
    """Configuration lines given as data (a file, a rendered template), each checked."""
    out = tuple(check_config_line(line, f"config line {n}") for n, line in enumerate(lines, 1))
    if not out:
        raise ValidationError("no configuration lines to send")
    return out
