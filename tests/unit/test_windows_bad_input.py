"""PowerShell metacharacters in user-given names, paths, printers and services.

Each value is either refused before anything connects (a ValidationError from the task's
parameters) or passed literally. "Literally" is checked structurally, by running the task twice
through the strict transport — once with the hostile value, once with a harmless one — and
comparing the scripts sent: with every PowerShell single-quoted literal blanked out they must be
identical (the value changed no code), and the hostile value must come back, unchanged, from one
of the literals. The literal reader below follows PowerShell's rules for single-quoted strings
(no expansion; a quote is doubled, and the typographic quotes count as quotes); no PowerShell can
run here, so this is a model of the parser, not the parser.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from winfakes import CATALOG, Expect, run_task

from toolkit.errors import ValidationError

QUOTES = "'\u2018\u2019\u201a\u201b"


def literals(script: str) -> tuple[str, list[str]]:
    """(the script with single-quoted literals blanked, the literals' values)."""
    skeleton: list[str] = []
    values: list[str] = []
    i, n = 0, len(script)
    while i < n:
        ch = script[i]
        if ch in QUOTES:
            j, value = i + 1, []
            while j < n:
                if script[j] in QUOTES:
                    if j + 1 < n and script[j + 1] in QUOTES:
                        value.append(script[j])
                        j += 2
                        continue
                    break
                value.append(script[j])
                j += 1
            else:
                raise AssertionError(f"unterminated literal at {i}")
            values.append("".join(value))
            skeleton.append("'…'")
            i = j + 1
        elif ch == '"':  # a double-quoted string: its own token, quotes inside are not literals
            j = i + 1
            while j < n and script[j] != '"':
                j += 2 if script[j] == "`" else 1
            skeleton.append(script[i : j + 1])
            i = j + 1
        else:
            skeleton.append(ch)
            i += 1
    return "".join(skeleton), values


HOSTILE = {
    "semicolon": "a; Stop-Computer -Force",
    "backtick": "a`nb",
    "subexpr": "a$(Stop-Computer)b",
    "single-quote": "o'brien",
    "typographic-quote": "a\u2019; Stop-Computer; \u2018b",
    "double-quote": 'a"b',
    "newline": "a\nStop-Computer",
    "crlf": "a\r\nb",
}

SID = "S-1-5-21-1-2-3-1013"


def svc_reply(value: str) -> Any:
    return {
        "found": True,
        "name": "Spooler",
        "display": "x",
        "state": "Running",
        "start_mode": "Auto",
        "pid": 1,
    }


def account(value: str) -> Any:
    return {
        "found": True,
        "name": value,
        "sid": SID,
        "enabled": True,
        "locked": False,
        "admin": False,
    }


def printers(value: str) -> Any:
    return {
        "spooler": "Running",
        "spool_dir": "C:\\S",
        "spool_files": 0,
        "printers": {"name": value, "status": "Normal", "jobs": []},
    }


def mp(value: str) -> Any:
    return {"service": True, "version": "1.1", "age_days": 0, "active": []}


SOURCES = {"dest": "D:\\B\\WS", "items": [], "last": None}


@pytest.fixture(autouse=True)
def canary(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ITOPS_TEST_PW", "irrelevant-Pw-1")


# (task, param, harmless value, other params, replies(value) for a whole run, check_only,
#  the hostile values expected to be refused)
Flow = Callable[[str], list[Expect]]
TARGETS: list[tuple[str, str, str, dict[str, Any], Flow, bool, set[str]]] = [
    (
        "service.restart",
        "service",
        "Spooler",
        {},
        lambda v: [
            Expect("check", ".", svc_reply(v)),
            Expect("apply", "."),
            Expect("verify", ".", svc_reply(v) | {"pid": 2}),
        ],
        False,
        {"newline", "crlf"},
    ),
    (
        "password.reset",
        "user",
        "jdoe",
        {"password": "env:ITOPS_TEST_PW"},
        lambda v: [Expect("check", ".", account(v))],
        True,
        {
            "semicolon",
            "backtick",
            "subexpr",
            "typographic-quote",
            "double-quote",
            "newline",
            "crlf",
        },
    ),
    (
        "printer.clear-queue",
        "queue",
        "HP 4th",
        {},
        lambda v: [Expect("check", ".", printers(v))],
        True,
        {"newline", "crlf"},
    ),
    (
        "printer.status",
        "queue",
        "HP 4th",
        {},
        lambda v: [Expect("check", ".", printers(v))],
        True,
        {"newline", "crlf"},
    ),
    (
        "backup.files",
        "paths",
        "C:\\Data",
        {"store": "D:\\Backups"},
        lambda v: [
            Expect(
                "check",
                ".",
                SOURCES | {"items": {"path": v, "exists": True, "files": 1, "bytes": 1}},
            ),
            Expect("apply", ".", {"target": "t", "files": 1, "bytes": 1}),
            Expect("apply", ".", {"checked": 1, "bad": []}),
            Expect("apply", ".", {"removed": []}),
            Expect("verify", ".", {"checked": 1, "bad": []}),
        ],
        False,
        {"double-quote", "newline", "crlf"},
    ),
    (
        "av.scan",
        "path",
        "C:\\Users\\jdoe\\Downloads",
        {},
        lambda v: [
            Expect("check", ".", mp(v)),
            Expect("apply", ".", {"started": "x", "detections": []}),
            Expect("verify", ".", mp(v)),
        ],
        False,
        {"double-quote", "newline", "crlf"},
    ),
    ("network.diagnose", "name", "intranet.example.com", {}, lambda v: [], True, set(HOSTILE)),
    ("network.diagnose", "target", "mail.example.com:443", {}, lambda v: [], True, set(HOSTILE)),
    ("network.renew-dhcp", "adapter", "Ethernet", {}, lambda v: [], True, set(HOSTILE)),
    ("patch.apply", "include", "KB5034441", {}, lambda v: [], True, set(HOSTILE)),
]

# Paths are only valid as absolute Windows paths: the hostile part goes into a folder name.
PATHS = {"paths", "path"}


def hostile_value(param: str, sample: str) -> str:
    return ("C:\\Users\\" + sample) if param in PATHS else sample


CASES = [
    pytest.param(target, kind, id=f"{target[0]}-{target[1]}-{kind}")
    for target in TARGETS
    for kind in HOSTILE
]


@pytest.mark.parametrize(("target", "kind"), CASES)
def test_hostile_value_is_refused_or_literal(target: Any, kind: str, tmp_path: Path) -> None:
    task, param, harmless, others, flow, check_only, refused = target
    value = hostile_value(param, HOSTILE[kind])
    spec = CATALOG.get(task).implementation("windows")
    assert spec is not None
    if kind in refused:
        with pytest.raises(ValidationError):
            spec.validate({param: value, **others})
        return
    spec.validate({param: value, **others})  # accepted: it must then travel as a literal
    sent = {}
    for label, v in (("hostile", value), ("harmless", harmless)):
        run = run_task(tmp_path / label, task, {param: v, **others}, flow(v), check_only=check_only)
        assert run.result.error in (None,), run.result.message
        sent[label] = [c.text for c in run.transport.sent]
    assert len(sent["hostile"]) == len(sent["harmless"])
    carried = False
    for bad, good in zip(sent["hostile"], sent["harmless"], strict=True):
        bad_skeleton, bad_values = literals(bad)
        good_skeleton, _ = literals(good)
        assert bad_skeleton == good_skeleton, "the value changed the script's code"
        carried = carried or value in bad_values
    assert carried, "the value reached the host as one intact literal"


def test_the_literal_model_sees_injection() -> None:
    """The check above would catch a value pasted into code, and quotes that are not doubled."""
    skeleton, values = literals("$a = 'x'; $b = 'y''z'")
    assert (skeleton, values) == ("$a = '…'; $b = '…'", ["x", "y'z"])
    benign, _ = literals("Get-Item 'x'")
    pasted, _ = literals("Get-Item 'x'; Stop-Computer; ''")
    assert benign != pasted
    unescaped, _ = literals("Get-Item 'o\u2019; Stop-Computer; \u2018'")
    assert unescaped != benign


@pytest.mark.parametrize(
    ("path", "ok"),
    [
        ("C:\\", True),
        ("C:\\Windows\\", True),
        ("\\\\srv\\share\\dir\\f.txt", True),
        ("D:\\My Docs\\a b.txt", True),
        ("C:\\a\\..\\b", False),
        ("C:\\a\\\\b", False),
        ("relative\\x", False),
        # ran for minutes in a pattern with a nested choice (catastrophic backtracking): a
        # parameter, or a spool folder a host reports, must not stall the run
        ("C:\\Windows\\System32\\spool\\PRINTERS" + "x" * 40 + "*", False),
    ],
)
def test_windows_paths_are_checked_in_linear_time(path: str, ok: bool) -> None:
    import re
    import time

    from toolkit.remediation.windows import WINDOWS_PATH

    started = time.monotonic()
    assert bool(re.fullmatch(WINDOWS_PATH, path)) is ok
    assert time.monotonic() - started < 1.0
