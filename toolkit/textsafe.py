"""Outside text made safe to show and to export: terminal control characters become visible
stand-ins, and spreadsheet formulas become plain text.

Text from hosts (a command's stderr), from other desks (an imported ticket's summary) and from
the ledger is data, never instructions to the terminal or the spreadsheet that shows it:

- `visible()`: every C0 control (NUL…US, and DEL) becomes its Unicode control picture (ESC → ␛,
  TAB → ␉, LF → ␊), every C1 control (U+0080–U+009F: 8-bit CSI, OSC…) and every bidirectional
  override or isolate (U+202A–U+202E, U+2066–U+2069: "Trojan Source" reordering) and line or
  paragraph separator becomes a `<U+009B>` tag. `multiline=True` keeps LF and TAB for text shown
  on its own lines (a multi-line error message); table cells never keep them (one row, one line).
  Rich markup is not this module's business: the rich tables build `Text` objects, which take
  no markup (see `cli.render`).
- `csv_cell()`: OWASP's CSV-injection rule — a cell starting with `=`, `+`, `-`, `@`, TAB or CR
  gets a leading `'` so a spreadsheet shows it as text instead of evaluating it (`=HYPERLINK(…)`,
  `=cmd|' /C calc'!A0`, `@SUM(…)`). Numbers are data: an int or float cell (say a duration of
  `-3`) is written as a number, untouched; a *string* that merely looks like a negative number
  (`"-3"`) is neutralised like any other, since `-3+cmd|…` also starts with a digit-like `-`.
"""

from __future__ import annotations

import csv
import re
from collections.abc import Iterable
from typing import IO, Any

_BIDI_AND_SEPARATORS = "\u2028\u2029\u202a\u202b\u202c\u202d\u202e\u2066\u2067\u2068\u2069"


def _table(keep: str) -> dict[int, str]:
    table: dict[int, str] = {c: chr(0x2400 + c) for c in range(0x20)}  # ␀ … ␟
    table[0x7F] = "\u2421"  # ␡
    for c in range(0x80, 0xA0):
        table[c] = f"<U+{c:04X}>"
    for ch in _BIDI_AND_SEPARATORS:
        table[ord(ch)] = f"<U+{ord(ch):04X}>"
    for ch in keep:
        del table[ord(ch)]
    return table


_CELL = _table("")
_LINES = _table("\n\t")
_UNSAFE = re.compile("[\x00-\x1f\x7f-\x9f" + _BIDI_AND_SEPARATORS + "]")
_UNSAFE_JSON = re.compile("[\x7f-\x9f" + _BIDI_AND_SEPARATORS + "]")  # JSON escapes C0 itself
_UNSAFE_LINES = re.compile("[\x00-\x08\x0b-\x1f\x7f-\x9f" + _BIDI_AND_SEPARATORS + "]")


def visible(text: str, *, multiline: bool = False) -> str:
    """`text` with every control character shown as a visible stand-in (module docstring)."""
    if multiline:
        return text.translate(_LINES) if _UNSAFE_LINES.search(text) else text
    return text.translate(_CELL) if _UNSAFE.search(text) else text


def json_safe(dumped: str) -> str:
    """JSON text (from `json.dumps(..., ensure_ascii=False)`) with the characters JSON leaves raw
    but a terminal obeys (C1 controls, bidi overrides, line separators) written as `\\uXXXX`
    escapes: the same JSON value, nothing for a terminal to act on. (JSON already escapes C0.)"""
    if not _UNSAFE_JSON.search(dumped):
        return dumped
    return _UNSAFE_JSON.sub(lambda m: f"\\u{ord(m.group()):04x}", dumped)


FORMULA_START = ("=", "+", "-", "@", "\t", "\r")


def csv_cell(value: Any) -> Any:
    """One CSV cell, safe to open in a spreadsheet (OWASP): see the module docstring."""
    if isinstance(value, str) and value.startswith(FORMULA_START):
        return "'" + value
    return value


class CsvWriter:
    """`csv.writer` for cells an outsider may have written (every CSV itops writes): each
    cell through `csv_cell`; a row with a neutralised cell is written with every cell quoted (as
    OWASP asks: `"'=HYPERLINK(…)"`), the others as usual (quoted only where CSV needs it)."""

    def __init__(self, out: IO[str]) -> None:
        self._plain = csv.writer(out)
        self._quoted = csv.writer(out, quoting=csv.QUOTE_ALL)

    def writerow(self, values: Iterable[Any]) -> None:
        row = list(values)
        changed = False
        for i, value in enumerate(row):
            if isinstance(value, str) and value.startswith(FORMULA_START):
                row[i] = "'" + value
                changed = True
        (self._quoted if changed else self._plain).writerow(row)
