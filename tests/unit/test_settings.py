"""The one schema of itops.toml (toolkit.settings): every value checked when the workspace loads,
each problem named by file, line and dotted key; the shipped configurations pass; the schema
covers every key the code reads and docs/configuration.md lists every key of the schema."""

from __future__ import annotations

import re
from pathlib import Path

import click
import pytest

from tests.fixture_tickets import CONFIG as TICKETS_CONFIG
from toolkit import settings
from toolkit.cli.options import Checked
from toolkit.errors import ConfigError, ValidationError
from toolkit.transports.base import ConnectOptions
from toolkit.workspace import DEFAULT_CONFIG, Workspace

ROOT = Path(__file__).resolve().parents[2]


def load(tmp_path: Path, text: str) -> Workspace:
    (tmp_path / "itops.toml").write_text(text)
    return Workspace.load(tmp_path)


def refused(tmp_path: Path, text: str) -> str:
    with pytest.raises(ConfigError) as info:
        load(tmp_path, text)
    return info.value.message


@pytest.mark.parametrize(
    "text",
    [
        DEFAULT_CONFIG,
        (ROOT / "itops.toml").read_text(),
        DEFAULT_CONFIG + TICKETS_CONFIG,
        DEFAULT_CONFIG + '\n[policy]\nrisky = ["password.reset"]\n',
        '[maintenance_windows.always]\ntimezone = "UTC"\nweekly = ["Mon 00:00-Mon 00:00"]\n',
        "",
    ],
    ids=["init", "repository", "tickets", "policy", "window", "empty"],
)
def test_the_shipped_configurations_are_valid(tmp_path: Path, text: str) -> None:
    load(tmp_path, text)


@pytest.mark.parametrize(
    ("text", "line", "message"),
    [
        ('[run]\nforks = "many"\n', 2, "run.forks: must be an integer from 1 to 1000, not 'many'"),
        ("[run]\nforks = 0\n", 2, "run.forks: must be an integer from 1 to 1000, not 0"),
        ("[run]\nforks = 2.5\n", 2, "run.forks: must be an integer from 1 to 1000, not 2.5"),
        ("[run]\nforks = true\n", 2, "run.forks: must be an integer from 1 to 1000, not true"),
        ("[run]\ncommand_timeout = -5\n", 2, "run.command_timeout: must be a number of at least"),
        ("[run]\ncommand_timeout = inf\n", 2, "run.command_timeout: must be a number of at least"),
        ('\n\n[run]\nconnect_timeout = "soon"\n', 4, "run.connect_timeout: must be a number"),
        ("[run]\nforsk = 5\n", 2, "run.forsk: unknown key; did you mean run.forks?"),
        ("[run]\ngrace = '5m'\n", 2, "run.grace: unknown key; did you mean scheduler.grace?"),
        ("[sheduler]\n", 1, "sheduler: unknown section; did you mean scheduler?"),
        ("[netdev]\nx = 1\n", 1, "netdev: unknown section"),
        ("forks = 5\n[run]\n", 1, "forks: unknown key; did you mean run.forks?"),
        ("run = 5\n", 1, "run: must be a table ([run]), not 5"),
        ('[ledger]\nsynchronous = "FULL"\n', 2, "ledger.synchronous: must be one of 'normal'"),
        (
            '[inventory]\nsources = ["a.yml", 3]\n',
            2,
            "inventory.sources: must be a string or a list",
        ),
        ('[policy]\nrisky = "x.*"\n', 2, "policy.risky: must be a list of strings, not 'x.*'"),
        ('[policy]\napproval_ttl = "soon"\n', 2, "policy.approval_ttl: cannot read the duration"),
        ("[policy]\napproval_ttl = -60\n", 2, "policy.approval_ttl: a duration must be positive"),
        ('[policy]\nrequire_window = "yes"\n', 2, "policy.require_window: must be true or false"),
        ('[scheduler]\ntimezone = "Berlin"\n', 2, "scheduler.timezone: unknown time zone 'Berlin'"),
        (
            "[scheduler]\ninterval = 0.1\n",
            2,
            "scheduler.interval: must be a number of at least 0.5",
        ),
        (
            '[maintenance_windows.night]\ntimezone = "UTC"\nweekley = ["Sun 01:00-02:00"]\n',
            3,
            "maintenance_windows.night.weekley: unknown key; did you mean maintenance_windows."
            "night.weekly?",
        ),
        (
            '[maintenance_windows.night]\ntimezone = "UTC"\n',
            1,
            "maintenance_windows.night: a window needs weekly ranges or dates",
        ),
        (
            '[maintenance_windows.night]\nweekly = ["Sunday 1-2"]\n',
            1,
            "maintenance_windows.night: cannot read the weekly range 'Sunday 1-2'",
        ),
        ("[maintenance_windows]\nnight = 3\n", 2, "maintenance_windows.night: must be a table"),
        (
            '[calendar]\nhours = { mon = "9-18", tue = "09:00-18:00" }\n',
            2,
            "calendar.hours.mon: cannot read '9-18'",
        ),
        ('[calendar]\nhours = { mo = "09:00-18:00" }\n', 2, "calendar.hours.mo: unknown key"),
        ('[calendar]\nholidays = ["2026-13-01"]\n', 2, "calendar.holidays: '2026-13-01' is not a"),
        ('[sla]\nupdate_every = "4 hours"\n', 2, "sla.update_every: cannot read the duration"),
        ("[sla]\nrecurrence_days = -1\n", 2, "sla.recurrence_days: must be an integer from 0"),
        ('[sla.priorities.P1]\nresponse = "0m"\n', 2, "sla.priorities.P1.response: a duration"),
        ('[sla.priorities.P9]\nresponse = "1h"\n', 1, "sla.priorities.P9: a new priority needs"),
        ("[kpi.targets]\ncsat_maen = 4.5\n", 2, "kpi.targets.csat_maen: unknown key; did you mean"),
        ('[kpi.targets]\ncsat_mean = "high"\n', 2, "kpi.targets.csat_mean: must be a number"),
        (
            "[kpi.category_targets]\nhardware = { resolution_sla = 0.9 }\n",
            2,
            "kpi.category_targets.hardware.resolution_sla: unknown key",
        ),
        ("[kpi]\nweights.P1 = -4\n", 2, "kpi.weights.P1: must be a number of at least 0, not -4"),
    ],
)
def test_a_bad_value_is_named_by_file_line_and_key(
    tmp_path: Path, text: str, line: int, message: str
) -> None:
    got = refused(tmp_path, text)
    assert got.startswith(f"{tmp_path / 'itops.toml'}:{line}: {message}"), got


def test_every_problem_is_reported_at_once(tmp_path: Path) -> None:
    got = refused(tmp_path, "[run]\nforks = 0\ncommand_timeout = 0\n[kpi]\nx = 1\n")
    assert got.splitlines()[0] == f"{tmp_path / 'itops.toml'} has 3 problems:"
    assert [line.split(": ", 2)[1] for line in got.splitlines()[1:]] == [
        "run.forks",
        "run.command_timeout",
        "kpi.x",
    ]


def test_lines_finds_headers_dotted_and_quoted_keys_and_falls_back_to_the_enclosing_key() -> None:
    text = (
        "# comment\n"
        "top = 1\n"
        "[a]\n"
        "b = 2\n"
        "c.d = 3\n"
        '[ "e" . f ]   # a comment\n'
        "'g h' = { i = 4 }\n"
        "[[arr]]\n"
        "j = [\n"
        "  1,\n"
        "]\n"
    )
    found = settings.lines(text)
    assert found[("top",)] == 2
    assert found[("a",)] == 3 and found[("a", "b")] == 4 and found[("a", "c", "d")] == 5
    assert found[("e", "f")] == 6 and found[("e", "f", "g h")] == 7
    assert found[("arr", "j")] == 9
    assert ("e", "f", "g h", "i") not in found  # inline: validate() reports line 7


def test_an_option_is_refused_with_the_sentence_the_file_gets(tmp_path: Path) -> None:
    for key, text, file_value in [
        ("run.forks", "0", "0"),
        ("run.forks", "many", '"many"'),
        ("run.command_timeout", "-5", "-5"),
        ("run.connect_timeout", "soon", '"soon"'),
        ("scheduler.interval", "0.1", "0.1"),
        ("scheduler.timezone", "Berlin", '"Berlin"'),
    ]:
        with pytest.raises(click.BadParameter) as info:
            Checked(key).convert(text, None, None)
        section, name = key.split(".")
        in_file = refused(tmp_path, f"[{section}]\n{name} = {file_value}\n")
        assert in_file.endswith(f"{key}: {info.value.message}"), (in_file, info.value.message)


def test_options_accept_what_the_file_accepts() -> None:
    assert Checked("run.forks").convert("7", None, None) == 7
    assert Checked("run.command_timeout").convert("2.5", None, None) == 2.5
    assert Checked("max_fail_percent").convert("0", None, None) == 0


def test_connect_options_refuse_a_timeout_that_cannot_pass() -> None:
    with pytest.raises(ValidationError, match="command_timeout"):
        ConnectOptions(command_timeout=-5)
    with pytest.raises(ValidationError, match="connect_timeout"):
        ConnectOptions(connect_timeout=0)


def test_the_schema_covers_every_key_the_code_reads() -> None:
    """A new setting read with run_setting("x") or section("s").get("x") must be declared."""
    known = set(settings.paths())
    read: set[str] = set()
    for path in (ROOT / "toolkit").rglob("*.py"):
        source = path.read_text()
        read |= {f"run.{k}" for k in re.findall(r"run_setting\(\s*\"(\w+)\"", source)}
        read |= {
            f"{s}.{k}" for s, k in re.findall(r"section\(\"(\w+)\"\)\.get\(\s*\"(\w+)\"", source)
        }
        read |= {f"paths.{k}" for k in re.findall(r"folder\(\"(\w+)\"", source)}
    assert read, "the scan found nothing: its patterns are stale"
    assert read - known == set()


def test_docs_configuration_is_the_schemas_reference() -> None:
    doc = (ROOT / "docs" / "configuration.md").read_text()
    assert settings.reference() in doc, (
        "docs/configuration.md is stale: paste in the output of "
        "python -c 'from toolkit.settings import reference; print(reference())'"
    )
    for key in settings.paths():
        assert f"`{key}`" in doc or f"`[{key}]`" in doc
