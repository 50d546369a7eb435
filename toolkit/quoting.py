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
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import PurePath
from typing import Any

from .credentials import MASK, Secret
from .errors import ValidationError

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


def _ps_value(value: Any) -> tuple[str, str]:
    """(text, display) for one PowerShell value; secrets become SecureStrings and are masked."""
    if isinstance(value, Secret):
        text = f"(ConvertTo-SecureString -String {ps_quote(value.reveal())} -AsPlainText -Force)"
        return text, f"(ConvertTo-SecureString -String '{MASK}' -AsPlainText -Force)"
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
