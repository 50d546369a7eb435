"""Structured data from network `show` output: TextFSM (ntc-templates) first, a stated fallback next.

    parsed = parse("cisco_ios", "show interfaces Gi1/0/1 status", output, fallback=my_regex_parser)
    parsed.rows    # list of dicts, keys in lower case as ntc-templates names them
    parsed.source  # "textfsm" or "fallback" or "none"
    parsed.note    # why TextFSM was not used (no template, template failed, nothing matched)

TextFSM and ntc-templates are the `[netdev]` extra; they are imported on first use, so loading the
catalog never pays for them. A template that raises or matches nothing is not an error: the fallback
parser (a task's own regular expressions) runs instead and the note says so, so a device whose output
differs from the templates' samples still gets an answer, and the record says which parser gave it.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

Rows = Sequence[Mapping[str, Any]]
Fallback = Callable[[str], Rows]

# netmiko device types whose ntc-templates live under another platform name
TEMPLATE_PLATFORM = {"cisco_xe": "cisco_ios", "huawei": "huawei_vrp"}

_local = threading.local()


@dataclass(frozen=True)
class Parsed:
    rows: tuple[Mapping[str, Any], ...]
    source: str  # "textfsm" | "fallback" | "none"
    note: str = ""

    def first(self) -> Mapping[str, Any]:
        return self.rows[0] if self.rows else {}


def _table() -> Any:
    """One CliTable per thread (it keeps parse state), built from ntc-templates' index once."""
    table = getattr(_local, "table", None)
    if table is None:
        from ntc_templates.parse import _get_template_dir
        from textfsm import clitable

        table = clitable.CliTable("index", _get_template_dir())
        _local.table = table
    return table


def textfsm(platform: str, command: str, output: str) -> tuple[list[dict[str, Any]], str]:
    """Rows from the ntc-templates template for (platform, command), and a note if none came."""
    try:
        from textfsm import clitable
        from textfsm.parser import TextFSMError
    except ImportError:
        return [], "TextFSM is not installed (pip install 'itops-toolkit[netdev]')"
    table = _table()
    attrs = {"Command": command, "Platform": TEMPLATE_PLATFORM.get(platform, platform)}
    try:
        table.ParseCmd(output, attrs)
    except clitable.CliTableError:
        return [], f"no TextFSM template for {platform} {command!r}"
    except TextFSMError as exc:
        return [], f"the TextFSM template for {command!r} failed: {str(exc).splitlines()[0]}"
    header = [str(h).lower() for h in table.header]
    rows = [dict(zip(header, row, strict=False)) for row in table]
    if not rows:
        return [], f"the TextFSM template for {command!r} matched nothing"
    return rows, ""


def parse(platform: str, command: str, output: str, fallback: Fallback | None = None) -> Parsed:
    """TextFSM where a template parses the output; otherwise the fallback, with the reason."""
    rows, note = textfsm(platform, command, output)
    if rows:
        return Parsed(tuple(rows), "textfsm")
    if fallback is not None:
        found = tuple(dict(r) for r in fallback(output))
        if found:
            return Parsed(found, "fallback", note)
    return Parsed((), "none", note or "nothing parsed")
