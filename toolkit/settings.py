"""The one schema of itops.toml: every section and key, its type, range and allowed values.

The workspace checks its itops.toml against SCHEMA once, when it loads, before any command records
or connects anything; every problem is reported at once as `FILE:LINE: run.forks: must be …` (exit
2). An unknown section or key is an error with the closest known name. The CLI builds the click
types of the options that set the same values (--forks, --connect-timeout, --timeout, …) from the
same checks (`toolkit.cli.options.Checked`), so a bad value reads the same from either place.

Sections whose own modules look deeper (maintenance windows, SLA durations and hours) are checked
here with those modules' parsers, so their errors carry the file and line too.

TOML parsers give no line numbers: `lines` finds a key's line by scanning the text for table
headers and `key =` lines (a key inside an inline table or a multi-line value is reported at the
line where that value starts). docs/configuration.md is `reference()`'s output.
"""

from __future__ import annotations

import difflib
import math
import re
from collections.abc import Callable, Iterator, Mapping
from datetime import date
from typing import Any, NamedTuple, Protocol

from toolkit.clock import WEEKDAYS
from toolkit.desk.kpinames import KPI_KEYS
from toolkit.errors import ConfigError, ToolkitError

# The schema's records are NamedTuples rather than frozen dataclasses: this module loads with every
# command, and each dataclass costs ~0.35 ms to create, a NamedTuple ~0.08 ms.


class Invalid(Exception):
    """A value broke its check: `problem` completes the sentence `KEY: …`."""

    def __init__(self, problem: str) -> None:
        super().__init__(problem)
        self.problem = problem


class Check(Protocol):
    @property
    def expected(self) -> str: ...

    def __call__(self, value: Any) -> Any: ...

    def parse(self, text: str) -> Any: ...


def _show(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    return f"{value:g}" if isinstance(value, float) else repr(value)


def _span(low: float | None, high: float | None) -> str:
    if low is not None and high is not None:
        return f" from {low:g} to {high:g}"
    return f" of at least {low:g}" if low is not None else ""


class Number(NamedTuple):
    """An int or float (not a bool, not inf/nan) within [low, high]; `integer` takes ints only."""

    low: float | None = None
    high: float | None = None
    integer: bool = False

    @property
    def expected(self) -> str:
        return ("an integer" if self.integer else "a number") + _span(self.low, self.high)

    def __call__(self, value: Any) -> Any:
        ok = isinstance(value, int) if self.integer else isinstance(value, int | float)
        if (
            isinstance(value, bool)
            or not ok
            or not math.isfinite(value)
            or (self.low is not None and value < self.low)
            or (self.high is not None and value > self.high)
        ):
            raise Invalid(f"must be {self.expected}, not {_show(value)}")
        return value

    def parse(self, text: str) -> Any:
        try:
            value: float = int(text) if self.integer else float(text)
        except ValueError:
            raise Invalid(f"must be {self.expected}, not {text!r}") from None
        return self(value)


def Int(low: int | None = None, high: int | None = None) -> Number:
    return Number(low, high, integer=True)


class Text(NamedTuple):
    """A string, optionally one of `choices`; `many`: a list of strings (a lone string too if
    `one_or_many`)."""

    choices: tuple[str, ...] = ()
    many: bool = False
    one_or_many: bool = False

    @property
    def expected(self) -> str:
        if self.choices:
            return "one of " + ", ".join(map(repr, self.choices))
        if self.many:
            return "a string or a list of strings" if self.one_or_many else "a list of strings"
        return "a string"

    def __call__(self, value: Any) -> Any:
        items = [value] if not self.many or (self.one_or_many and isinstance(value, str)) else value
        if not (
            isinstance(items, list)
            and all(isinstance(v, str) and (not self.choices or v in self.choices) for v in items)
        ):
            raise Invalid(f"must be {self.expected}, not {_show(value)}")
        return value

    def parse(self, text: str) -> Any:
        return self([text] if self.many else text)


class Flag(NamedTuple):
    expected: str = "true or false"

    def __call__(self, value: Any) -> Any:
        if not isinstance(value, bool):
            raise Invalid(f"must be {self.expected}, not {_show(value)}")
        return value

    def parse(self, text: str) -> Any:
        return self({"true": True, "false": False}.get(text.lower(), text))


class Rule(NamedTuple):
    """A value another module knows how to read: `read(value, what)` raises a ToolkitError whose
    message starts with `what: ` (given empty here: the caller names the key)."""

    expected: str
    read: Callable[[Any, str], object]

    def __call__(self, value: Any) -> Any:
        try:
            self.read(value, "")
        except ToolkitError as exc:
            raise Invalid(exc.message.removeprefix(": ")) from None
        return value

    def parse(self, text: str) -> Any:
        return self(text)


def _zone(value: Any, key: str) -> None:
    from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

    try:
        ZoneInfo(value)
    except (ZoneInfoNotFoundError, ValueError, TypeError):
        raise ToolkitError(f"unknown time zone {value!r}") from None


def _duration(value: Any, key: str) -> None:
    from toolkit.clock import parse_duration

    if isinstance(value, bool) or not isinstance(value, str | int | float):
        raise ToolkitError(f"cannot read the duration {_show(value)}")
    if parse_duration(value, key).total_seconds() <= 0:
        raise ToolkitError(f"a duration must be positive, not {_show(value)}")


def _sla_duration(value: Any, key: str) -> None:
    from toolkit.desk.sla import parse_duration

    parse_duration(value, day_minutes=1440, what=key)  # business days vs `d`: sla.load_policy


def _hours(value: Any, key: str) -> None:
    from toolkit.desk.sla import parse_hours

    if not all(isinstance(v, str) for v in (value if isinstance(value, list) else [value])):
        raise ToolkitError(f'must be "HH:MM-HH:MM", a list of them, or "", not {_show(value)}')
    parse_hours(value, key)


def _dates(value: Any, key: str) -> None:
    if not isinstance(value, list):
        raise ToolkitError(f"must be a list of dates (YYYY-MM-DD), not {_show(value)}")
    for item in value:
        try:
            if not isinstance(item, date):
                date.fromisoformat(item if isinstance(item, str) else "")
        except ValueError:
            raise ToolkitError(f"{item!r} is not a date (YYYY-MM-DD)") from None


def _reference(value: Any, key: str) -> None:
    from toolkit.secrets.credentials import REFERENCE_HINT, is_reference

    if not isinstance(value, str) or not is_reference(value):
        raise ToolkitError(f"must be a reference, never the secret itself ({REFERENCE_HINT})")


def _category(value: Any, key: str) -> None:
    from toolkit.desk.tickets import CATEGORIES

    if value not in CATEGORIES:
        raise ToolkitError(f"must be one of {', '.join(map(repr, CATEGORIES))}, not {_show(value)}")


ZONE = Rule("an IANA time zone name (e.g. Europe/Berlin)", _zone)
REFERENCE = Rule("a reference: env:VAR, keyring:service/user, file:/path or prompt", _reference)


def _desks() -> tuple[str, ...]:
    from toolkit.itsm import SYSTEMS

    return SYSTEMS


CATEGORY = Rule("an itops ticket category (docs/tickets.md)", _category)
DURATION = Rule("a duration: 90s, 30m, 24h, 7d, 2w or seconds", _duration)
SLA_DURATION = Rule(
    "a duration: 30m, 4h, 1d (24×7 only), 2bd (business days) or minutes", _sla_duration
)
HOURS = Rule('business hours: "09:00-18:00", a list of such windows, or "" for none', _hours)
DATES = Rule("a list of dates (YYYY-MM-DD)", _dates)


class Key(NamedTuple):
    check: Check
    help: str
    default: str = ""  # as documented (some defaults depend on the machine or another key)


class Table(NamedTuple):
    """A table of known `keys`, or of free-named `entries` (each checked by the one schema;
    `names`, if given, are the only names allowed); `then` reads a whole entry with its module's
    parser (name, table, key) once its keys are valid."""

    help: str
    keys: Mapping[str, Key | Table] = {}  # never mutated
    entries: Key | Table | None = None
    entry: str = "NAME"  # how the docs name a free entry
    names: tuple[str, ...] = ()
    then: Callable[[str, Mapping[str, Any], str], object] | None = None


def _window(name: str, table: Mapping[str, Any], key: str) -> None:
    from toolkit.run.maintenance import parse_window

    parse_window(name, table, "UTC")


def _priority(name: str, table: Mapping[str, Any], key: str) -> None:
    from toolkit.desk.sla import DEFAULT_PRIORITIES

    missing = {"response", "resolution"} - set(table) - set(DEFAULT_PRIORITIES.get(name, {}))
    if missing:
        raise ToolkitError(f"{key}: a new priority needs {' and '.join(sorted(missing))}")


TARGETS = Table(
    "targets reported beside the KPIs (met/missed)",
    entries=Key(Number(0), "target of that KPI (rates 0–1, minutes)", "KPI.md"),
    entry="KPI",
    names=(*KPI_KEYS, "availability", "availability_core"),
)

SCHEMA = Table(
    "itops.toml",
    {
        "inventory": Table(
            "where the hosts are",
            {
                "sources": Key(
                    Text(many=True, one_or_many=True),
                    "Ansible-compatible YAML inventory files",
                    '["inventory/hosts.yml"]',
                ),
                "known_hosts": Key(Text(), "pinned SSH host keys", '"inventory/known_hosts"'),
            },
        ),
        "paths": Table(
            "folders, relative to the workspace",
            {
                "tasks": Key(Text(), "this workspace's remediations (*.py)", '"tasks"'),
                "runbooks": Key(Text(), "runbooks", '"runbooks"'),
                "playbooks": Key(Text(), "Ansible playbooks", '"playbooks"'),
                "software": Key(
                    Text(), "the software catalog (*.yml, docs/software.md)", '"software"'
                ),
                "state": Key(Text(), "ledger, lab, command outputs, itops.log", '".itops"'),
            },
        ),
        "ledger": Table(
            "the ticket log (ITOPS_LEDGER_URL overrides url)",
            {
                "url": Key(
                    Text(),
                    "sqlite:///FILE or postgresql+psycopg://…",
                    '"sqlite:///.itops/ledger.db"',
                ),
                "synchronous": Key(
                    Text(choices=("normal", "full")),
                    'SQLite: "full" fsyncs every commit',
                    '"normal"',
                ),
                "anchor_log": Key(
                    Text(),
                    "signed heads of the ledger, kept outside it (put it on another mount)",
                    '".itops/anchors-<ledger>.jsonl" (one per ledger URL)',
                ),
                "anchor_key": Key(
                    Text(),
                    "the workspace's anchoring key (ssh-keygen ed25519, made on first use)",
                    '".itops/anchor_ed25519"',
                ),
                "anchor_syslog": Key(
                    Text(),
                    "also send each anchor to syslog, for a copy on another machine: "
                    "unix:/dev/log, udp://HOST:PORT or tcp://HOST:PORT (audit verify --anchors "
                    "checks against the copy)",
                    "off",
                ),
            },
        ),
        "run": Table(
            "how runs fan out (itops fix, runbook run, inventory check, schedules)",
            {
                "forks": Key(Int(1, 1000), "hosts worked on at once (--forks)", "50"),
                "connect_timeout": Key(
                    Number(0.1), "seconds to connect to a host (--connect-timeout)", "10"
                ),
                "command_timeout": Key(
                    Number(0.1), "seconds one remote command may take (--timeout)", "120"
                ),
            },
        ),
        "operator": Table(
            "the name the ledger shows for who ran a command (a label, not an identity)",
            {"name": Key(Text(), "operator name (ITOPS_OPERATOR overrides)", "the OS user")},
        ),
        "identity": Table(
            "who signs and who may approve (docs/security.md)",
            {
                "allowed_signers": Key(
                    Text(),
                    "OpenSSH allowed_signers: `principal key-type key` per operator",
                    '"allowed_signers"',
                ),
                "key": Key(
                    Text(),
                    "your SSH signing key, private or agent-held public (ITOPS_SIGNING_KEY overrides)",
                    "~/.ssh/id_ed25519, id_ecdsa or id_rsa",
                ),
            },
        ),
        "policy": Table(
            "approvals and maintenance windows",
            {
                "risky": Key(Text(many=True), "task names/globs that need an approval", "[]"),
                "overrides": Key(
                    Text(many=True),
                    "built-in task names this workspace's tasks/ replaces (keeping their marks)",
                    "[]",
                ),
                "disruptive": Key(Text(many=True), "task names/globs that need a window", "[]"),
                "core_groups": Key(Text(many=True), "inventory groups of core devices", '["core"]'),
                "require_window": Key(Flag(), "every change needs a maintenance window", "false"),
                "approval_ttl": Key(DURATION, "how long an approval stays valid", '"24h"'),
                "request_ttl": Key(DURATION, "how long an approval request stays open", '"7d"'),
            },
        ),
        "directory": Table(
            "directory accounts (Active Directory, OpenLDAP: docs/directory.md)",
            {
                "privileged_groups": Key(
                    Text(many=True),
                    "groups whose membership changes always need an approval, beyond Domain "
                    "Admins, Enterprise Admins, Administrators and Schema Admins",
                    "[]",
                ),
            },
        ),
        "maintenance_windows": Table(
            "named windows; attach with the host/group variable maintenance_window",
            entries=Table(
                "one window",
                {
                    "timezone": Key(ZONE, "the window's zone", "[scheduler] timezone, else UTC"),
                    "weekly": Key(Text(many=True), 'weekly ranges, e.g. "Sun 01:00-05:00"', "[]"),
                    "dates": Key(
                        Text(many=True), 'one-off ranges, e.g. "2026-12-24 20:00-23:00"', "[]"
                    ),
                    "blackout": Key(Text(many=True), "date ranges when the window is closed", "[]"),
                    "description": Key(Text(), "free text", '""'),
                },
                then=_window,
            ),
        ),
        "workers": Table(
            "distributed runs: sites' workers on Celery (docs/scale.md)",
            {
                "broker": Key(
                    Text(),
                    "Celery broker: amqp://USER:PASSWORD@HOST:5672/VHOST or redis://HOST:6379/N",
                    '"amqp://guest:guest@127.0.0.1:5672//"',
                ),
                "result_backend": Key(
                    Text(),
                    "where job results come back",
                    '"rpc://" on RabbitMQ, the broker itself on Redis',
                ),
                "ping_timeout": Key(
                    Number(0.1, 30), "seconds to wait for workers to answer (no worker: fail)", "1"
                ),
                "job_hosts": Key(Int(1, 10000), "hosts per job sent to a site", "200"),
                "jobs": Key(Int(1, 64), "jobs a worker runs at once (--jobs)", "2"),
                "lost_after": Key(
                    Number(1),
                    "seconds a site may be without a live worker mid-run before its jobs fail",
                    "60",
                ),
            },
        ),
        "scheduler": Table(
            "scheduled jobs",
            {
                "timezone": Key(ZONE, "zone of cron fields (--tz)", "this machine's zone"),
                "grace": Key(
                    DURATION, "later than this after its time, a run counts as missed", '"5m"'
                ),
                "lease": Key(DURATION, "how long a scheduler's claim on a run lasts", '"2m"'),
                "interval": Key(Number(0.5), "seconds between checks (--interval)", "30"),
            },
        ),
        "calendar": Table(
            "the business calendar of SLA clocks",
            {
                "timezone": Key(ZONE, "IANA zone", "this machine's zone"),
                "hours": Table(
                    "business hours per weekday",
                    entries=Key(HOURS, "that weekday's business hours", '"09:00-18:00" Mon–Fri'),
                    entry="DAY",
                    names=WEEKDAYS,
                ),
                "holidays": Key(DATES, "local dates without business hours", "[]"),
                "holidays_file": Key(
                    Text(), "iCalendar file: every event's day(s) are holidays", ""
                ),
                "country": Key(Text(), "public holidays from the `holidays` package", ""),
                "subdivision": Key(Text(), "state/province for country", ""),
                "first_year": Key(Int(1900, 2200), "first year of country holidays", "2000"),
                "last_year": Key(Int(1900, 2200), "last year of country holidays", "2050"),
            },
        ),
        "sla": Table(
            "SLA targets",
            {
                "update_every": Key(SLA_DURATION, "a status update is due after this", '"4h"'),
                "recurrence_days": Key(
                    Int(0, 3650), "a new ticket within this is a recurrence", "30"
                ),
                "repeat_fix_threshold": Key(
                    Int(1), "itops fix suggests a problem record at N fixes", "3"
                ),
                "priorities": Table(
                    "response and resolution targets per priority",
                    entries=Table(
                        "one priority",
                        {
                            "response": Key(SLA_DURATION, "first response due after", "KPI.md"),
                            "resolution": Key(SLA_DURATION, "resolution due after", "KPI.md"),
                            "always": Key(Flag(), "a 24×7 clock", "false (P1: true)"),
                            "update_every": Key(
                                SLA_DURATION, "status update interval", "[sla] update_every"
                            ),
                        },
                        then=_priority,
                    ),
                    entry="PRIORITY",
                ),
            },
        ),
        "itsm": Table(
            "the service desk whose tickets --ticket takes and every run writes back to "
            "(docs/itsm.md)",
            {
                "system": Key(
                    Text(choices=_desks()),
                    "the desk: Request Tracker, GLPI, Zammad, ServiceNow, Jira Service Management",
                    "none: tickets are local",
                ),
                "url": Key(Text(), "its base URL (https: the certificate is verified)", '""'),
                "user": Key(Text(), "the itops account at the desk", '""'),
                "password": Key(REFERENCE, "that account's password", ""),
                "token": Key(
                    REFERENCE,
                    "or its API token (RT: an auth token; GLPI: user_token; Zammad: access "
                    "token; ServiceNow: an OAuth token; Jira: an API token or a PAT)",
                    "",
                ),
                "app_token": Key(REFERENCE, "GLPI: the API client's App-Token", ""),
                "ca_bundle": Key(
                    Text(), "PEM file of a private CA that signed the desk's certificate", ""
                ),
                "timeout": Key(Number(0.5, 300), "seconds per request to the desk", "10"),
                "max_attempts": Key(
                    Int(1, 1000), "deliveries of a note tried before it counts as failed", "20"
                ),
                "deliver": Key(
                    Text(choices=("detach", "wait")),
                    "after a run: a detached process delivers its note (detach), or the command "
                    "waits for it (wait); ITOPS_ITSM_DELIVER overrides",
                    '"detach"',
                ),
                "closed_states": Key(
                    Text(many=True),
                    "desk states no run may go under",
                    'RT: ["resolved", "rejected", "deleted"]; other desks: docs/itsm.md',
                ),
                "waiting_states": Key(
                    Text(many=True),
                    "desk states that wait on the user (itsm sync: the SLA clock pauses)",
                    'RT: ["stalled"]; other desks: docs/itsm.md',
                ),
                "resolved_states": Key(
                    Text(many=True),
                    "desk states that are a resolution (itsm sync); other closed states close",
                    'RT: ["resolved"]; other desks: docs/itsm.md',
                ),
                "survey_metric": Key(
                    Text(),
                    "ServiceNow: the survey question (asmt_metric name) whose answer is the "
                    "satisfaction score, scaled to 1–5",
                    "the survey's first scale question",
                ),
                "survey_comment_metric": Key(
                    Text(),
                    "ServiceNow: the string survey question (asmt_metric name) whose answer is "
                    "the comment",
                    "the survey's first answered string question",
                ),
                "priorities": Table(
                    "desk priority → itops priority: the lowest desk value of each",
                    entries=Key(
                        Int(0),
                        "lowest desk priority value",
                        "RT: P1 90, P2 50, P3 20, P4 0; other desks: docs/itsm.md",
                    ),
                    entry="PRIORITY",
                    names=("P1", "P2", "P3", "P4"),
                ),
                "projects": Key(
                    Text(many=True),
                    "Jira: the project keys whose issues --ticket takes (others stay local)",
                    "[]: every KEY-N is the desk's",
                ),
                "priority_names": Table(
                    "desk priority name → itops priority (ServiceNow's 1–5, Jira's names; "
                    "any case)",
                    entries=Key(Text(choices=("P1", "P2", "P3", "P4")), "its itops priority", ""),
                    entry="NAME",
                ),
                "categories": Table(
                    "desk queue → itops category (default: the queue's name if a category, "
                    'else "other")',
                    entries=Key(CATEGORY, "the category of that queue's tickets", ""),
                    entry="QUEUE",
                ),
            },
        ),
        "kpi": Table(
            "KPI settings",
            {
                "availability_tasks": Key(
                    Text(many=True),
                    "actions that sample availability",
                    '["monitor.*", "network.ping"]',
                ),
                "core_hosts": Key(
                    Text(many=True), "hosts with the 99.9 % availability target", "[]"
                ),
                "targets": TARGETS,
                "category_targets": Table(
                    "targets per category", entries=TARGETS, entry="CATEGORY"
                ),
                "weights": Table(
                    "workload weight per priority",
                    entries=Key(Number(0), "weight", "P1 4, P2 3, P3 2, P4 1"),
                    entry="PRIORITY",
                ),
            },
        ),
        "serve": Table(
            "the read-only web view (itops serve; docs/web.md)",
            {
                "host": Key(Text(), "the address it listens on", '"127.0.0.1"'),
                "port": Key(Int(1, 65535), "the port it listens on", "8470"),
                "cert": Key(Text(), "TLS: the certificate (PEM), with key", "off (plain HTTP)"),
                "key": Key(Text(), "TLS: the certificate's private key (PEM)", "off"),
                "proxy_header": Key(
                    Text(),
                    "take the user's name from this request header (set by a reverse proxy "
                    "that authenticated them), from trusted_proxies only",
                    "off (accounts and passwords)",
                ),
                "trusted_proxies": Key(
                    Text(many=True),
                    "the addresses whose proxy_header is believed",
                    '["127.0.0.1"]',
                ),
                "proxy_role": Key(
                    Text(choices=("auditor", "lead")),
                    "the role of a proxy user without an account of its own",
                    '"auditor"',
                ),
                "session_hours": Key(Int(1, 168), "a login lasts this long", "8"),
                "page_size": Key(Int(10, 1000), "records per search page", "50"),
                "signin_failures": Key(
                    Int(1, 1000),
                    "failed sign-ins of one account name (in signin_window_minutes) that lock "
                    "it, with exponential backoff (docs/web.md)",
                    "5",
                ),
                "signin_source_failures": Key(
                    Int(1, 100000),
                    "failed sign-ins from one client address that lock it the same way",
                    "20",
                ),
                "signin_window_minutes": Key(
                    Int(1, 10080), "how long a failed sign-in counts", "60"
                ),
                "signin_backoff_seconds": Key(
                    Int(1, 86400), "the first lock; each further failure doubles it", "60"
                ),
                "signin_backoff_max_minutes": Key(Int(1, 10080), "the longest lock", "30"),
            },
        ),
    },
)

# Values only the command line sets, checked the same way (`toolkit.cli.options.Checked`).
OPTIONS: dict[str, Check] = {
    "serial": Int(1),
    "max_fail_percent": Number(0, 100),
    "playbook_forks": Int(1, 200),
}


def check(key: str) -> Check:
    """The check of a dotted key (`run.forks`) or of an OPTIONS name."""
    if key in OPTIONS:
        return OPTIONS[key]
    node: Key | Table = SCHEMA
    for part in key.split("."):
        assert isinstance(node, Table), key
        found = node.keys.get(part, node.entries)
        assert found is not None, key
        node = found
    assert isinstance(node, Key), key
    return node.check


# -- validating a file -----------------------------------------------------------------------
Problem = tuple[tuple[str, ...], str]  # (the key's path, "run.forks: must be …")


def problems(config: Mapping[str, Any]) -> list[Problem]:
    """Everything wrong with a parsed itops.toml, in file order."""
    found: list[Problem] = []
    _walk(SCHEMA, config, (), found)
    return found


def _walk(
    table: Table, values: Mapping[str, Any], path: tuple[str, ...], out: list[Problem]
) -> None:
    for name, value in values.items():
        here = (*path, name)
        key = ".".join(here)
        node = table.keys.get(name)
        if node is None and (not table.names or name in table.names):
            node = table.entries
        if node is None:
            what = "section" if not path and isinstance(value, Mapping) else "key"
            out.append((here, f"{key}: unknown {what}{_suggest(table, name, path)}"))
        elif isinstance(node, Key):
            try:
                node.check(value)
            except Invalid as exc:
                out.append((here, f"{key}: {exc.problem}"))
        elif not isinstance(value, Mapping):
            out.append((here, f"{key}: must be a table ([{key}]), not {_show(value)}"))
        else:
            before = len(out)
            _walk(node, value, here, out)
            if node.then is not None and len(out) == before:
                try:
                    node.then(name, value, key)
                except ToolkitError as exc:  # messages start `[KEY]` or `KEY:`
                    detail = exc.message.removeprefix(f"[{key}]").removeprefix(key).lstrip(": ")
                    out.append((here, f"{key}: {detail}"))


def _suggest(table: Table, name: str, path: tuple[str, ...]) -> str:
    prefix = "".join(f"{p}." for p in path)
    # the same key in another table first (`forks` at the top is run.forks, not `workers`)
    elsewhere = [k for k in paths(entries=False) if k.rsplit(".", 1)[-1] == name]
    if elsewhere:
        return f"; did you mean {elsewhere[0]}?"
    close = difflib.get_close_matches(name, [*table.keys, *table.names], n=1, cutoff=0.6)
    return f"; did you mean {prefix}{close[0]}?" if close else ""


def paths(table: Table = SCHEMA, prefix: str = "", *, entries: bool = True) -> Iterator[str]:
    """Every dotted key and table of the schema (free names as NAME, PRIORITY, … if `entries`)."""
    items = list(table.keys.items())
    if entries and table.entries is not None:
        items.append((table.entry, table.entries))
    for name, node in items:
        yield prefix + name
        if isinstance(node, Table):
            yield from paths(node, f"{prefix}{name}.", entries=entries)


_PART = r"[\w-]+|\"[^\"]*\"|'[^']*'"  # a bare or quoted key (compiled on first error only)
_HEADER = r"\s*\[\[?([^\]]*)\]\]?\s*(#.*)?$"
_KEY = rf"\s*((?:{_PART})(?:\s*\.\s*(?:{_PART}))*)\s*="


def lines(text: str) -> dict[tuple[str, ...], int]:
    """The 1-based line of each table header and `key =` in a TOML text (first occurrence)."""
    found: dict[tuple[str, ...], int] = {}
    table: tuple[str, ...] = ()
    for number, line in enumerate(text.splitlines(), 1):
        header = re.match(_HEADER, line)
        key = None if header else re.match(_KEY, line)
        if header:
            table = tuple(p.strip("\"'") for p in re.findall(_PART, header.group(1)))
            found.setdefault(table, number)
        elif key:
            found.setdefault(
                (*table, *(p.strip("\"'") for p in re.findall(_PART, key.group(1)))), number
            )
    return found


def validate(config: Mapping[str, Any], text: str, file: str) -> None:
    """Raise one ConfigError naming FILE:LINE and the key of every problem (exit 2)."""
    found = problems(config)
    if not found:
        return
    where = lines(text)

    def line(path: tuple[str, ...]) -> str:
        while path and path not in where:
            path = path[:-1]  # inside an inline table: the line of the enclosing key
        return f"{file}:{where[path]}" if path else file

    described = [f"{line(path)}: {message}" for path, message in found]
    hint = "every section and key, with its type and range: docs/configuration.md"
    if len(described) == 1:
        raise ConfigError(described[0], hint=hint)
    raise ConfigError(
        f"{file} has {len(described)} problems:\n" + "\n".join(f"  {d}" for d in described),
        hint=hint,
    )


# -- the reference -----------------------------------------------------------------------------
def reference() -> str:
    """docs/configuration.md's key table, from SCHEMA (a test keeps the two equal)."""
    rows = ["| key | value | default | meaning |", "|---|---|---|---|"]

    def walk(table: Table, prefix: str) -> None:
        items = list(table.keys.items())
        if table.entries is not None:
            items.append((table.entry, table.entries))
        for name, node in items:
            key = prefix + name
            if isinstance(node, Table):
                names = f" ({node.entry}: {', '.join(node.names)})" if node.names else ""
                rows.append(f"| `[{key}]` | table | | {node.help}{names} |")
                walk(node, key + ".")
            else:
                rows.append(f"| `{key}` | {node.check.expected} | {node.default} | {node.help} |")

    walk(SCHEMA, "")
    return "\n".join(rows) + "\n"
