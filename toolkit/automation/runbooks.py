"""Runbooks: YAML procedures per ticket category that chain remediations, diagnose → fix → verify →
escalate (format: docs/runbooks.md).

A runbook file is validated whole when it is loaded — every task must exist in the catalog, every
parameter must be one the task takes (literal values are checked by the task's own rules), every
`$name` must be a declared runbook parameter, every `if_failed` an earlier step — and errors name
the file and line. A run goes through the same Runner and ledger as `itops fix`: one
`runbook.begin` / `runbook.finish` pair around it, every action tagged with the runbook and the
run id, all under one ticket; when the last fix step on a host does not end fixed or already-ok,
the ticket gets one `ticket.escalated` event naming the hosts and what was found. Fix steps go
through the run policy like `itops fix` (maintenance windows, approvals): a host a step leaves
`needs-approval` or `skipped` is held — left out of the later steps, not escalated. A step whose
task has no implementation for a host's platform is not that host's (a runbook may hold branches
for several platforms: Linux accounts and directory accounts): it is left out of it, not held.
"""

from __future__ import annotations

import os
import re
import time
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from types import MappingProxyType
from typing import TYPE_CHECKING, Any, Protocol

from toolkit.desk.sla import default_policy
from toolkit.desk.tickets import CATEGORIES, DEFAULT_KIND, TICKET_KINDS, TicketError
from toolkit.desk.tickets import record as record_event
from toolkit.errors import NotFound, ToolkitError, ValidationError
from toolkit.inventory import Host
from toolkit.remediation.catalog import Catalog, Param, Task, existing_folders

if TYPE_CHECKING:
    import yaml

    from toolkit.app import App
    from toolkit.ledger import Ledger
    from toolkit.run.runner import HostResult, RunOptions, RunReport
    from toolkit.workspace import Workspace

BUILTIN_RUNBOOKS = Path(__file__).resolve().parents[2] / "runbooks"
RUNBOOK_NAME = re.compile(r"[a-z][a-z0-9-]{0,63}")
STEP_KEYS = ("name", "task", "params", "check_only", "if_failed", "when")
TOP_KEYS = ("summary", "category", "kind", "params", "steps", "escalate")
TIERS = ("L1", "L2", "L3", "ops")
_REF = re.compile(r"\$([A-Za-z_][A-Za-z0-9_]*)")

Value = str | list[str]


class RunbookError(ValidationError):
    """A runbook file that cannot be used as written; the message names the file and line."""


@dataclass(frozen=True)
class RunbookParam:
    name: str
    help: str = ""
    required: bool = False
    default: str | None = None


@dataclass(frozen=True)
class Step:
    name: str
    task: str
    params: Mapping[str, Value] = field(default_factory=dict)
    check_only: bool = False
    if_failed: str | None = None
    line: int = 0
    when: str | None = None  # a runbook parameter (true/false): the step runs only when true

    def refs(self) -> dict[str, str]:
        """Task parameter → the runbook parameter it takes its value from (`$name`)."""
        return {
            k: m.group(1)
            for k, v in self.params.items()
            if isinstance(v, str) and (m := _REF.fullmatch(v))
        }


@dataclass(frozen=True)
class Escalation:
    to: str
    note: str


@dataclass(frozen=True)
class Runbook:
    name: str
    summary: str
    category: str
    params: Mapping[str, RunbookParam]
    steps: tuple[Step, ...]
    escalate: Escalation | None
    source: str
    kind: str = "incident"  # the kind of ticket a run opens (`kind: request` in the file)

    def bind(self, given: Mapping[str, Value]) -> dict[str, Value]:
        """The run's parameter values: given ones checked against the declared ones, defaults
        filled in, required ones enforced."""
        unknown = set(given) - set(self.params)
        if unknown:
            raise NotFound.named(
                "runbook parameter", sorted(unknown)[0], self.params, f"for {self.name}"
            )
        bound: dict[str, Value] = {}
        for name, spec in self.params.items():
            if name in given:
                bound[name] = given[name]
            elif spec.default is not None:
                bound[name] = spec.default
            elif spec.required:
                raise ValidationError(
                    f"runbook {self.name} needs parameter {name}",
                    hint=f"-p {name}=… ({spec.help})" if spec.help else f"-p {name}=…",
                )
        return bound

    def wanted(self, step: Step, bound: Mapping[str, Value]) -> bool:
        """Whether the step runs at all: its `when` parameter is true (a step without one:
        always). The value is checked as the tasks' true/false parameters are."""
        if step.when is None:
            return True
        value = bound.get(step.when)
        if value is None:
            return False  # an optional parameter not given
        try:
            return bool(Param(bool).parse(value if isinstance(value, str) else ",".join(value)))
        except ToolkitError:
            raise ValidationError(
                f"step {step.name!r} runs when ${step.when}: it must be true or false, "
                f"not {value!r}"
            ) from None

    def step_params(self, step: Step, bound: Mapping[str, Value]) -> dict[str, Value]:
        """A step's task parameters with `$name` replaced; unbound optional ones left out."""
        out: dict[str, Value] = {}
        refs = step.refs()
        for key, value in step.params.items():
            if key in refs:
                if refs[key] in bound:
                    out[key] = bound[refs[key]]
            else:
                out[key] = value
        return out


# --------------------------------------------------------------------------- loading


def load(workspace: Workspace, name: str) -> Runbook:
    """Runbook NAME of a workspace (built in or its own), validated (schedules call this)."""
    catalog = Catalog.load(workspace.task_folders, overrides=workspace.task_overrides)
    return get_runbook(name, runbook_folders(workspace.folder("runbooks", "runbooks")), catalog)


def run(
    app: App,
    name: str | Runbook,
    hosts: Sequence[Host],
    params: Mapping[str, Value],
    *,
    ticket: str | None,
    check_only: bool = False,
    forks: int | None = None,
    connect_timeout: float | None = None,
    command_timeout: float | None = None,
    on_step: Any = None,
) -> RunbookReport:
    """Run a runbook of the app's workspace as `itops runbook run` does — each step through the
    run service of `itops fix` (schedules call this under their change ticket)."""
    from toolkit.run.runner import RunOptions
    from toolkit.run.service import RunRequest, RunService

    book = name if isinstance(name, Runbook) else load(app.workspace, name)
    requests: list[str] = []
    with RunService(
        app, connect_timeout=connect_timeout, command_timeout=command_timeout, write_back=False
    ) as service:
        # hosts with a site: their workers live, before runbook.begin is recorded (each step
        # goes to them through service.run, as `itops fix` does)
        service.preflight(hosts)
        desk = service.desk_system(ticket)
        first = None
        if desk is not None:
            service.look_up(str(ticket))  # unknown or closed at the desk: refused before step 1
            head = app.ledger.head()
            first = (head.seq if head else 0) + 1

        def run_step(
            task: Task, step_hosts: Sequence[Host], values: Mapping[str, Value], options: RunOptions
        ) -> RunReport:
            ran = service.run(
                RunRequest(
                    task,
                    step_hosts,
                    values,
                    ticket=ticket,
                    check_only=options.check_only,
                    forks=forks,
                    command_timeout=command_timeout,
                    tags=options.tags,
                )
            )
            if ran.policy is not None and ran.policy.request_id:
                requests.append(ran.policy.request_id)
            return ran.report

        report = run_runbook(
            book,
            hosts,
            params,
            catalog=app.catalog,
            run_step=run_step,
            ledger=app.ledger,
            ticket=ticket,
            options=RunOptions(check_only=check_only),
            on_step=on_step,
        )
    report = replace(report, approval_requests=tuple(dict.fromkeys(requests)))
    if desk is not None and first is not None:
        report = replace(report, desk_notes=(_desk_note(app, report, desk, first),))
    return report


def _desk_note(app: App, report: RunbookReport, system: str, first: int) -> Any:
    """ONE note for the whole runbook (its steps write none of their own), queued in the
    ledger's outbox: each host's last step, who escalated or was held, the ledger evidence."""
    from toolkit.itsm.outbox import queue
    from toolkit.run.writeback import evidence, host_lines

    ticket = str(report.ticket)
    last = {r.host: r for r in report.results}  # each host's last step
    mode = "check (read-only)" if report.check_only else "run"
    lines = [
        f"itops: runbook {report.runbook} ({mode} {report.run_id}) by {app.ledger.operator} "
        f"under {ticket}",
        "steps: "
        + ", ".join(
            f"{s.step.name} ({s.step.task})" + ("" if s.report else " not needed")
            for s in report.steps
        ),
        *host_lines(list(last.values()), report.duration, ticket),
    ]
    lines += [f"escalated: {host}: {why}" for host, why in report.escalated.items()]
    lines += [f"held: {host}: {why}" for host, why in report.held.items()]
    lines += [f"approval requested: {r}" for r in report.approval_requests]
    head = app.ledger.head()
    span = (first, head.seq) if head is not None and head.seq >= first else None
    lines.append(evidence(app.ledger, span, ticket))
    return queue(app.ledger, ticket, system, app.redactor.mask("\n".join(lines)))


def runbook_folders(workspace_folder: Path | None) -> list[Path]:
    folders = [BUILTIN_RUNBOOKS]
    if workspace_folder is not None:
        folders.append(workspace_folder)
    return folders


def load_runbooks(folders: Sequence[Path], catalog: Catalog) -> dict[str, Runbook]:
    """Every runbook in the folders (a later folder's file overrides an earlier one's by name),
    each validated against the catalog."""
    found: dict[str, Path] = {}
    for folder in existing_folders(folders):
        for path in sorted(folder.glob("*.yml")) + sorted(folder.glob("*.yaml")):
            found[path.stem] = path
    return {name: load_runbook(path, catalog) for name, path in sorted(found.items())}


def get_runbook(name: str, folders: Sequence[Path], catalog: Catalog) -> Runbook:
    if not RUNBOOK_NAME.fullmatch(name):
        raise ValidationError(
            f"invalid runbook name {name!r}", hint="runbook names look like printer-not-printing"
        )
    books = load_runbooks(folders, catalog)
    if name not in books:
        raise NotFound.named("runbook", name, books)
    return books[name]


class _Reader:
    """Plain values from a YAML node tree, with `file:line` for every error."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def fail(self, node: yaml.Node | None, message: str) -> RunbookError:
        line = f":{node.start_mark.line + 1}" if node is not None else ""
        return RunbookError(f"{self.path}{line}: {message}")

    def mapping(self, node: yaml.Node, what: str) -> dict[str, tuple[yaml.Node, yaml.Node]]:
        import yaml

        if not isinstance(node, yaml.MappingNode):
            raise self.fail(node, f"{what} must be a mapping")
        out: dict[str, tuple[yaml.Node, yaml.Node]] = {}
        for key, value in node.value:
            if not isinstance(key, yaml.ScalarNode):
                raise self.fail(key, f"{what}: keys must be plain names")
            if key.value in out:
                raise self.fail(key, f"{what}: {key.value!r} is given twice")
            out[key.value] = (key, value)
        return out

    def scalar(self, node: yaml.Node, what: str) -> Any:
        import yaml

        if not isinstance(node, yaml.ScalarNode):
            raise self.fail(node, f"{what} must be a single value")
        return yaml.safe_load(yaml.serialize(node))

    def text(self, node: yaml.Node, what: str) -> str:
        value = self.scalar(node, what)
        if not isinstance(value, str) or not value.strip():
            raise self.fail(node, f"{what} must be text")
        return value

    def flag(self, node: yaml.Node, what: str) -> bool:
        value = self.scalar(node, what)
        if not isinstance(value, bool):
            raise self.fail(node, f"{what} must be true or false")
        return value

    def value(self, node: yaml.Node, what: str) -> Value:
        """A task parameter value: as the command line would give it (text, or a list)."""
        import yaml

        if isinstance(node, yaml.SequenceNode):
            return [str(self._as_text(item, what)) for item in node.value]
        return self._as_text(node, what)

    def _as_text(self, node: yaml.Node, what: str) -> str:
        value = self.scalar(node, what)
        if isinstance(value, bool):
            return "true" if value else "false"
        if value is None or isinstance(value, dict | list):
            raise self.fail(node, f"{what} must be a value")
        return str(value)

    def unknown(
        self, keys: Mapping[str, tuple[yaml.Node, yaml.Node]], allowed: Iterable[str], what: str
    ) -> None:
        for name, (key, _) in keys.items():
            if name not in allowed:
                raise self.fail(key, f"{what}: unknown key {name!r} (known: {', '.join(allowed)})")


def load_runbook(path: Path, catalog: Catalog) -> Runbook:
    """Read and validate one runbook file (see the module docstring)."""
    import yaml

    name = path.stem
    if not RUNBOOK_NAME.fullmatch(name):
        raise RunbookError(f"{path}: the file name must be a runbook name like no-network.yml")
    r = _Reader(path)
    try:
        root = yaml.compose(path.read_text(), Loader=yaml.SafeLoader)
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark
        raise RunbookError(
            f"{path}:{mark.line + 1 if mark else '?'}: invalid YAML: {exc.problem}"
        ) from None
    except OSError as exc:
        raise RunbookError(f"{path}: cannot read: {exc.strerror}") from None
    if root is None:
        raise RunbookError(f"{path}: empty runbook")
    top = r.mapping(root, "the runbook")
    r.unknown(top, TOP_KEYS, "the runbook")
    for required in ("summary", "category", "steps"):
        if required not in top:
            raise r.fail(root, f"the runbook needs {required!r}")
    summary = r.text(top["summary"][1], "summary")
    category = r.text(top["category"][1], "category")
    if category not in CATEGORIES:
        raise r.fail(top["category"][1], f"unknown category {category!r} ({', '.join(CATEGORIES)})")
    kind = r.text(top["kind"][1], "kind") if "kind" in top else DEFAULT_KIND
    if kind not in TICKET_KINDS:
        raise r.fail(top["kind"][1], f"unknown kind {kind!r} ({', '.join(TICKET_KINDS)})")

    params: dict[str, RunbookParam] = {}
    if "params" in top:
        for pname, (key, node) in r.mapping(top["params"][1], "params").items():
            if not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", pname):
                raise r.fail(key, f"parameter name {pname!r} must be a plain name")
            spec = r.mapping(node, f"parameter {pname}")
            r.unknown(spec, ("help", "required", "default"), f"parameter {pname}")
            default = spec.get("default")
            params[pname] = RunbookParam(
                pname,
                r.text(spec["help"][1], "help") if "help" in spec else "",
                r.flag(spec["required"][1], "required") if "required" in spec else False,
                r._as_text(default[1], "default") if default else None,
            )

    steps_node = top["steps"][1]
    if not isinstance(steps_node, yaml.SequenceNode) or not steps_node.value:
        raise r.fail(steps_node, "steps must be a list of one or more steps")
    steps: list[Step] = []
    for node in steps_node.value:
        spec = r.mapping(node, "a step")
        r.unknown(spec, STEP_KEYS, "a step")
        for required in ("name", "task"):
            if required not in spec:
                raise r.fail(node, f"a step needs {required!r}")
        step_name = r.text(spec["name"][1], "name")
        if any(s.name == step_name for s in steps):
            raise r.fail(spec["name"][1], f"step name {step_name!r} is used twice")
        task_name = r.text(spec["task"][1], "task")
        step_params: dict[str, Value] = {}
        if "params" in spec:
            for key_name, (_, value) in r.mapping(spec["params"][1], "params").items():
                step_params[key_name] = r.value(value, f"parameter {key_name}")
        if_failed = r.text(spec["if_failed"][1], "if_failed") if "if_failed" in spec else None
        if if_failed is not None and not any(s.name == if_failed for s in steps):
            raise r.fail(spec["if_failed"][1], f"if_failed: {if_failed!r} is not an earlier step")
        when = None
        if "when" in spec:
            ref = _REF.fullmatch(r.text(spec["when"][1], "when"))
            if ref is None or ref.group(1) not in params:
                raise r.fail(spec["when"][1], "when: takes a declared runbook parameter, as $name")
            when = ref.group(1)
        step = Step(
            step_name,
            task_name,
            MappingProxyType(step_params),
            r.flag(spec["check_only"][1], "check_only") if "check_only" in spec else False,
            if_failed,
            node.start_mark.line + 1,
            when,
        )
        _check_step(r, node, step, catalog, params)
        steps.append(step)

    escalate = None
    if "escalate" in top:
        spec = r.mapping(top["escalate"][1], "escalate")
        r.unknown(spec, ("to", "note"), "escalate")
        to = r.text(spec["to"][1], "to") if "to" in spec else "L3"
        if to not in TIERS:
            raise r.fail(spec["to"][1], f"escalate to {to!r}: one of {', '.join(TIERS)}")
        note = r.text(spec["note"][1], "note") if "note" in spec else summary
        escalate = Escalation(to, note)
    return Runbook(
        name, summary, category, MappingProxyType(params), tuple(steps), escalate, str(path), kind
    )


def _check_step(
    r: _Reader, node: yaml.Node, step: Step, catalog: Catalog, params: Mapping[str, RunbookParam]
) -> None:
    where = f"step {step.name!r}"
    try:
        task = catalog.get(step.task)
    except ToolkitError as exc:
        hint = f" ({exc.hint})" if exc.hint else ""
        raise r.fail(node, f"{where}: {exc.message}{hint}") from None
    refs = step.refs()
    for key, ref in refs.items():
        if ref not in params:
            raise r.fail(node, f"{where}: parameter {key} refers to ${ref}, which is not declared")
    given = set(step.params)
    specs = [s for s in task.specs if given <= set(s.params)]
    if not specs:
        unknown = sorted(given - set().union(*(set(s.params) for s in task.specs)))
        name = unknown[0] if unknown else sorted(given)[0]
        known = sorted({p for s in task.specs for p in s.params})
        raise r.fail(node, f"{where}: {task.name} takes no parameter {name!r} ({', '.join(known)})")
    for spec in specs:
        for key, value in step.params.items():
            if key in refs:
                continue
            param = spec.params[key]
            items = value if isinstance(value, list) else [value]
            if len(items) > 1 and not param.many:
                raise r.fail(node, f"{where}: parameter {key} takes one value")
            for item in items:
                try:
                    param.parse(item)
                except ToolkitError as exc:
                    raise r.fail(node, f"{where}: {exc.message}") from None
        for key, param in spec.params.items():
            if not param.required:
                continue
            if key not in given:
                raise r.fail(node, f"{where}: {task.name} needs parameter {key}")
            source = refs.get(key)
            if source and not (params[source].required or params[source].default is not None):
                raise r.fail(
                    node,
                    f"{where}: {task.name} needs {key}, but ${source} is optional: "
                    "make it required or give it a default",
                )


# --------------------------------------------------------------------------- running


class StepRunner(Protocol):
    """Runs one step's task over its hosts under the run policy (the run service does, with the
    runbook's ticket); `options` carries the step's mode and the tags recorded with it."""

    def __call__(
        self, task: Task, hosts: Sequence[Host], params: Mapping[str, Value], options: RunOptions, /
    ) -> RunReport: ...


@dataclass(frozen=True)
class StepRun:
    step: Step
    report: RunReport | None  # None: no host needed this step
    skipped: tuple[str, ...] = ()  # hosts it did not run on (if_failed satisfied, unreachable)


@dataclass(frozen=True)
class RunbookReport:
    runbook: str
    run_id: str
    ticket: str | None
    check_only: bool
    steps: tuple[StepRun, ...]
    escalated: Mapping[str, str]  # host → why (what the deciding step found)
    duration: float
    held: Mapping[str, str] = field(default_factory=dict)  # host → why (approval, window)
    approval_requests: tuple[str, ...] = ()  # REQUEST-IDs the run policy opened
    desk_notes: tuple[Any, ...] = ()  # the one note queued for a desk ticket (itsm.outbox.Note)

    def describe(self) -> str:
        """One line: per-host counts of the last step each host reached, and who escalated."""
        hosts = {r.host for r in self.results}
        text = f"{len(hosts)} host(s)"
        if self.escalated:
            text += f"; escalated: {', '.join(self.escalated)}"
        if self.held:
            text += f"; held: {', '.join(self.held)}"
        return text + ("" if self.escalated or self.held else "; nothing to escalate")

    @property
    def results(self) -> list[HostResult]:
        return [r for s in self.steps if s.report for r in s.report.results]

    @property
    def exit_code(self) -> int:
        """0 nothing left to do; 1 a host escalated (or, with --check, a step failed); 3 a host
        unreachable; 5 a step needs an approval; 4 --check found something to fix. The one
        exit_code of every run: in a fix run a step's failures are counted by what escalated."""
        from toolkit.run.results import Outcome, exit_code

        counted = {Outcome.UNREACHABLE, Outcome.NEEDS_APPROVAL}
        if self.check_only:
            counted |= {Outcome.FAILED, Outcome.WOULD_FIX}
        outcomes = (r.outcome for r in self.results if r.outcome in counted)
        return exit_code(outcomes, failed=bool(self.escalated))

    def as_dict(self) -> dict[str, Any]:
        return {
            "runbook": self.runbook,
            "run_id": self.run_id,
            "ticket": self.ticket,
            "mode": "check" if self.check_only else "fix",
            "duration": round(self.duration, 3),
            "exit_code": self.exit_code,
            "escalated": dict(self.escalated),
            "held": dict(self.held),
            "steps": [
                {
                    "name": s.step.name,
                    "task": s.step.task,
                    "check_only": s.step.check_only,
                    "skipped": list(s.skipped),
                    "hosts": [r.as_dict() for r in s.report.results] if s.report else [],
                }
                for s in self.steps
            ],
        }


def prepare(
    runbook: Runbook, hosts: Sequence[Host], given: Mapping[str, Value], catalog: Catalog
) -> tuple[dict[str, Value], dict[str, Task]]:
    """The run's parameters and tasks, every step's values checked by the rules of the hosts'
    platforms — before anything runs or is recorded."""
    bound = runbook.bind(given)
    tasks: dict[str, Task] = {s.task: catalog.get(s.task) for s in runbook.steps}
    platforms = {h.platform for h in hosts}
    for step in runbook.steps:
        task = tasks[step.task]
        if not runbook.wanted(step, bound):  # (a bad value refused before anything is recorded)
            continue
        if not any(task.implementation(p) for p in platforms):
            continue  # another platform's branch: none of these hosts runs it
        task.validate(runbook.step_params(step, bound), platforms)
    return bound, tasks


def run_runbook(
    runbook: Runbook,
    hosts: Sequence[Host],
    given: Mapping[str, Value],
    *,
    catalog: Catalog,
    run_step: StepRunner,
    ledger: Ledger,
    ticket: str | None,
    options: RunOptions,
    on_step: Any = None,
) -> RunbookReport:
    """Run the steps in order over the hosts (see the module docstring)."""
    from toolkit.errors import TicketRequired
    from toolkit.ledger import Entry
    from toolkit.run.runner import Outcome

    ok = {Outcome.FIXED, Outcome.ALREADY_OK}
    held_by_policy = {Outcome.NEEDS_APPROVAL, Outcome.SKIPPED}  # (or no implementation for it)
    if not options.check_only and not ticket:
        raise TicketRequired(
            f"runbook {runbook.name} changes hosts: a ticket is required",
            hint="add --ticket INC-1234, or --check to look only",
        )
    bound, tasks = prepare(runbook, hosts, given, catalog)
    run_id = os.urandom(8).hex()
    mode = "check" if options.check_only else "fix"
    ledger.append(
        Entry(
            "runbook.begin",
            ticket=ticket,
            task=runbook.name,
            data={
                "runbook": runbook.name,
                "run_id": run_id,
                "mode": mode,
                "hosts": [h.name for h in hosts],
                "params": bound,
                "source": runbook.source,
            },
        )
    )
    started = time.monotonic()
    by_host: dict[str, dict[str, HostResult]] = {h.name: {} for h in hosts}
    held: dict[str, str] = {}
    runs: list[StepRun] = []
    for index, step in enumerate(runbook.steps):
        active, skipped = [], []
        wanted = runbook.wanted(step, bound)
        for host in hosts:
            done = by_host[host.name]
            unreachable = any(r.outcome == Outcome.UNREACHABLE for r in done.values())
            not_needed = bool(step.if_failed) and (
                step.if_failed not in done or done[str(step.if_failed)].outcome in ok
            )
            # a step for other platforms (the password runbook's directory branch on a Linux
            # host) is not this host's: it neither runs nor holds the host
            other_platform = tasks[step.task].implementation(host.platform) is None
            if not wanted or unreachable or not_needed or other_platform or host.name in held:
                skipped.append(host.name)
            else:
                active.append(host)
        report = None
        if active:
            check_only = options.check_only or step.check_only
            step_options = replace(
                options,
                check_only=check_only,
                tags={"runbook": runbook.name, "run_id": run_id, "step": step.name},
            )
            params = runbook.step_params(step, bound)
            report = run_step(tasks[step.task], active, params, step_options)
            for result in report.results:
                by_host[result.host][step.name] = result
                if result.outcome in held_by_policy:
                    held[result.host] = f"{step.name} ({result.outcome}): {result.message}"
        run = StepRun(step, report, tuple(skipped))
        runs.append(run)
        if on_step is not None:
            on_step(index, run)
    # A check-only run cannot know whether a fix would hold: it escalates nothing.
    escalated = {} if options.check_only else _escalations(runbook, hosts, by_host, held)
    report_ = RunbookReport(
        runbook.name,
        run_id,
        ticket,
        options.check_only,
        tuple(runs),
        MappingProxyType(escalated),
        time.monotonic() - started,
        MappingProxyType(held),
    )
    if escalated and not options.check_only and runbook.escalate is not None and ticket:
        found = "; ".join(f"{h}: {why}" for h, why in escalated.items())
        fields = {
            "tier": runbook.escalate.to,
            "reason": f"{runbook.escalate.note} [runbook {runbook.name}, run {run_id}] {found}"[
                :2000
            ],
        }
        try:
            # The same checks as `itops ticket escalate`: fields, and the ticket's lifecycle
            # (a resolved or closed ticket is not escalated behind the desk's back).
            record_event(ledger, ticket, "escalated", fields, default_policy())
        except TicketError as exc:
            ledger.append(
                Entry(
                    "runbook.escalation-refused",
                    ticket=ticket,
                    task=runbook.name,
                    data={**fields, "why": exc.message, "run_id": run_id},
                )
            )
    ledger.append(
        Entry(
            "runbook.finish",
            ticket=ticket,
            task=runbook.name,
            outcome="escalated" if escalated else "done",
            duration_ms=round(report_.duration * 1000),
            data={
                "runbook": runbook.name,
                "run_id": run_id,
                "mode": mode,
                "outcomes": {
                    h: {s: str(r.outcome) for s, r in steps.items()} for h, steps in by_host.items()
                },
                "escalated": dict(escalated),
                "escalated_to": runbook.escalate.to if escalated and runbook.escalate else None,
                "held": dict(held),
                "findings": {
                    h: {s: r.message for s, r in steps.items()} for h, steps in by_host.items()
                },
            },
        )
    )
    return report_


def _escalations(
    runbook: Runbook,
    hosts: Sequence[Host],
    by_host: Mapping[str, Mapping[str, HostResult]],
    held: Mapping[str, str],
) -> dict[str, str]:
    """Hosts whose last fix step that ran did not end fixed/already-ok (or, where no fix step
    ran, whose last step failed or could not connect) → what that step found. Held hosts
    (waiting for an approval or a window) are not escalated."""
    from toolkit.run.runner import Outcome

    out = {}
    order = [s.name for s in runbook.steps]
    fix_steps = {s.name for s in runbook.steps if not s.check_only}
    for host in hosts:
        if host.name in held:
            continue
        ran = [name for name in order if name in by_host[host.name]]
        deciding = [n for n in ran if n in fix_steps]
        if deciding:
            last = by_host[host.name][deciding[-1]]
            if last.outcome not in (Outcome.FIXED, Outcome.ALREADY_OK):
                out[host.name] = f"{deciding[-1]} ({last.outcome}): {last.message}"
        elif ran:
            last = by_host[host.name][ran[-1]]
            if last.outcome in (Outcome.FAILED, Outcome.UNREACHABLE):
                out[host.name] = f"{ran[-1]} ({last.outcome}): {last.message}"
    return out
