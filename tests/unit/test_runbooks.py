"""Runbooks: every shipped runbook names only existing remediations with valid parameters; broken
files are refused with file and line; a run chains steps, follows if_failed, tags every action,
and escalates exactly the hosts whose last fix step did not hold."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.fakes import FakeConnector, Script, hosts
from toolkit.automation.runbooks import (
    BUILTIN_RUNBOOKS,
    RunbookError,
    get_runbook,
    load_runbook,
    load_runbooks,
    run_runbook,
)
from toolkit.errors import NotFound, TicketRequired, Unreachable, ValidationError
from toolkit.ledger import Ledger
from toolkit.remediation.catalog import (
    BUILTIN_TASKS,
    Catalog,
    Context,
    Finding,
    Remediation,
    Task,
    remediation,
)
from toolkit.remediation.quoting import cmd
from toolkit.run.runner import Runner, RunOptions

REAL = Catalog.load([BUILTIN_TASKS])
SHIPPED = sorted(BUILTIN_RUNBOOKS.glob("*.yml"))


def test_the_five_runbooks_of_the_issue_are_shipped() -> None:
    names = {p.stem for p in SHIPPED}
    assert {
        "printer-not-printing",
        "no-network",
        "av-out-of-date",
        "password-locked",
        "patch-compliance",
    } <= names


@pytest.mark.parametrize("path", SHIPPED, ids=lambda p: p.stem)
def test_every_runbook_names_only_existing_tasks_with_valid_params(path: Path) -> None:
    book = load_runbook(path, REAL)  # raises on an unknown task, parameter or value
    assert book.summary and book.steps and book.escalate is not None
    for step in book.steps:
        task = REAL.get(step.task)
        assert any(set(step.params) <= set(s.params) for s in task.specs)
        for key, ref in step.refs().items():
            assert ref in book.params, f"{path.name}: {step.name}.{key} → ${ref}"
    assert any(not s.check_only for s in book.steps), "a runbook fixes something"


# --------------------------------------------------------------------------- refused files

GOOD_STEP = "  - {name: clear, task: printer.clear-queue}\n"


@pytest.mark.parametrize(
    ("text", "line", "words"),
    [
        (
            "summary: x\ncategory: printer\nsteps:\n  - {name: a, task: printer.nope}\n",
            4,
            "unknown task 'printer.nope'",
        ),
        (
            "summary: x\ncategory: printer\nsteps:\n  - {name: a, task: printer.clear-queue, params: {queu: x}}\n",
            4,
            "takes no parameter 'queu'",
        ),
        (
            "summary: x\ncategory: printer\nsteps:\n  - {name: a, task: printer.clear-queue, params: {queue: 'a;b'}}\n",
            4,
            "contains ';'",
        ),
        (
            "summary: x\ncategory: printer\nsteps:\n  - {name: a, task: printer.clear-queue, params: {queue: $q}}\n",
            4,
            "$q, which is not declared",
        ),
        (
            "summary: x\ncategory: printer\nsteps:\n"
            + GOOD_STEP
            + "  - {name: b, task: printer.status, if_failed: later}\n",
            5,
            "'later' is not an earlier step",
        ),
        ("summary: x\ncategory: printer\nsteps:\n" + GOOD_STEP + GOOD_STEP, 5, "used twice"),
        (
            "summary: x\ncategory: printer\nsteps:\n  - {name: a, task: printer.status, when: always}\n",
            4,
            "when: takes a declared runbook parameter, as $name",
        ),
        (
            "summary: x\ncategory: printer\nsteps:\n  - {name: a, task: printer.status, when: $later}\n",
            4,
            "when: takes a declared runbook parameter",
        ),
        (
            "summary: x\ncategory: printer\nsteps:\n  - {name: a, task: printer.status, unless: $x}\n",
            4,
            "unknown key 'unless'",
        ),
        ("summary: x\ncategory: printers\nsteps:\n" + GOOD_STEP, 2, "unknown category"),
        (
            "summary: x\ncategory: printer\nsteps:\n" + GOOD_STEP + "escalate: {to: L9}\n",
            5,
            "escalate to 'L9'",
        ),
        (
            "summary: x\ncategory: account\nparams: {user: {help: u}}\nsteps:\n  - {name: a, task: password.reset, params: {user: $user}}\n",
            5,
            "$user is optional",
        ),
        (
            "summary: x\ncategory: account\nsteps:\n  - {name: a, task: password.reset}\n",
            4,
            "needs parameter user",
        ),
        ("summary: x\ncategory: printer\nsteps: []\n", 3, "one or more steps"),
        ("summary: x\nsteps:\n" + GOOD_STEP, 1, "needs 'category'"),
        (
            "summary: x\ncategory: printer\nsteps:\n  - {name: a, task: printer.clear-queue, check_only: maybe}\n",
            4,
            "true or false",
        ),
        ("summary: [x\n", 2, "invalid YAML"),
        ("summary: x\ncategory: printer\nkind: problem\nsteps:\n" + GOOD_STEP, 3, "unknown kind"),
    ],
)
def test_broken_runbooks_are_refused_with_file_and_line(
    tmp_path: Path, text: str, line: int, words: str
) -> None:
    path = tmp_path / "broken.yml"
    path.write_text(text)
    with pytest.raises(RunbookError) as refused:
        load_runbook(path, REAL)
    assert str(refused.value).startswith(f"{path}:{line}: "), str(refused.value)
    assert words in str(refused.value)


def test_a_workspace_runbook_overrides_a_builtin_one(tmp_path: Path) -> None:
    (tmp_path / "printer-not-printing.yml").write_text(
        "summary: Our own way\ncategory: printer\nsteps:\n" + GOOD_STEP
    )
    books = load_runbooks([BUILTIN_RUNBOOKS, tmp_path], REAL)
    assert books["printer-not-printing"].summary == "Our own way"
    assert "no-network" in books
    with pytest.raises(NotFound) as unknown:
        get_runbook("printer-not-printin", [BUILTIN_RUNBOOKS], REAL)
    assert unknown.value.hint == "did you mean: printer-not-printing?"
    with pytest.raises(ValidationError):
        get_runbook("../etc/passwd", [BUILTIN_RUNBOOKS], REAL)


def test_a_runbook_declares_the_kind_of_ticket_it_opens() -> None:
    books = load_runbooks([BUILTIN_RUNBOOKS], REAL)
    assert books["password-locked"].kind == "request"  # a standard request (KPI.md)
    assert books["printer-not-printing"].kind == "incident"  # the default


def test_runbook_parameters_are_bound_and_required_ones_enforced() -> None:
    book = get_runbook("password-locked", [BUILTIN_RUNBOOKS], REAL)
    with pytest.raises(ValidationError, match="needs parameter user"):
        book.bind({})
    with pytest.raises(NotFound, match="unknown runbook parameter 'usr'"):
        book.bind({"usr": "jdoe"})
    reset = book.steps[1]
    assert book.step_params(reset, book.bind({"user": "jdoe"})) == {
        "user": "jdoe",
        "unlock": "true",
        "expire": "true",
    }
    patch = get_runbook("patch-compliance", [BUILTIN_RUNBOOKS], REAL)
    assert patch.bind({}) == {"security_only": "false"}  # the declared default


# --------------------------------------------------------------------------- running


@remediation("rb.diagnose", category="printer", platforms={"linux"}, summary="Read the state")
class RbDiagnose(Remediation):
    def check(self, ctx: Context) -> Finding:
        state = ctx.read(cmd("state")).stdout
        return Finding.healthy("ok") if state == "ok" else Finding.problem(state)

    def apply(self, ctx: Context) -> None:
        ctx.note("reads only")


@remediation("rb.clear", category="printer", platforms={"linux"}, summary="Clear a jam")
class RbClear(RbDiagnose):
    def apply(self, ctx: Context) -> None:
        ctx.change(cmd("clear"))


@remediation("rb.restart", category="printer", platforms={"linux"}, summary="Restart")
class RbRestart(RbDiagnose):
    def apply(self, ctx: Context) -> None:
        ctx.change(cmd("restart"))


CATALOG = Catalog(
    {
        c.__remediation__.name: Task(c.__remediation__.name, (c.__remediation__,))
        for c in (RbDiagnose, RbClear, RbRestart)
    }  # type: ignore[attr-defined]
)
RUNBOOK = """\
summary: Test printer runbook
category: printer
steps:
  - {name: diagnose, task: rb.diagnose, check_only: true}
  - {name: clear, task: rb.clear}
  - {name: restart, task: rb.restart, if_failed: clear}
escalate: {to: L3, note: Still broken}
"""


def device(state: str) -> Script:
    """ok; jam (clear fixes it); hung (restart fixes it); dead (nothing does)."""
    box = {"state": state}

    def clear(command: Any, stdin: Any) -> tuple[int, str, str]:
        if box["state"] == "jam":
            box["state"] = "ok"
        return 0, "", ""

    def restart(command: Any, stdin: Any) -> tuple[int, str, str]:
        if box["state"] in ("jam", "hung"):
            box["state"] = "ok"
        return 0, "", ""

    return (
        Script()
        .on("state", lambda c, s: (0, box["state"], ""))
        .on("clear", clear)
        .on("restart", restart)
    )


@pytest.fixture
def ledger(tmp_path: Path) -> Iterator[Ledger]:
    book = Ledger(f"sqlite:///{tmp_path / 'l.db'}", operator="tester")
    yield book
    book.close()


def run(
    ledger: Ledger,
    tmp_path: Path,
    states: dict[str, str],
    *,
    check: bool = False,
    down: tuple[str, ...] = (),
) -> Any:
    path = tmp_path / "test-printer.yml"
    path.write_text(RUNBOOK)
    book = load_runbook(path, CATALOG)
    conn = FakeConnector(
        {h: device(s) for h, s in states.items()},
        errors={h: Unreachable(h, "connection refused") for h in down},
    )
    runner = Runner(ledger=ledger, connector=conn, credentials=conn.credentials)  # type: ignore[arg-type]
    ticket = None if check else "INC-42"
    return run_runbook(
        book,
        hosts(*states, *down),
        {},
        catalog=CATALOG,
        run_step=steps_on(runner, ticket),
        ledger=ledger,
        ticket=ticket,
        options=RunOptions(check_only=check, forks=4),
    ), conn


def test_steps_chain_if_failed_and_only_lasting_failures_escalate(
    ledger: Ledger, tmp_path: Path
) -> None:
    from toolkit.desk.tickets import ensure

    ensure(ledger, "INC-42", category="printer", priority="P3")  # as `itops runbook run` does
    report, conn = run(
        ledger, tmp_path, {"a": "ok", "b": "jam", "c": "hung", "d": "dead"}, down=("e",)
    )
    outcome = {
        s.step.name: {r.host: str(r.outcome) for r in s.report.results} if s.report else {}
        for s in report.steps
    }
    assert outcome["diagnose"] == {
        "a": "already-ok",
        "b": "would-fix",
        "c": "would-fix",
        "d": "would-fix",
        "e": "unreachable",
    }
    assert outcome["clear"] == {"a": "already-ok", "b": "fixed", "c": "failed", "d": "failed"}
    assert outcome["restart"] == {"c": "fixed", "d": "failed"}
    assert report.steps[2].skipped == ("a", "b", "e")
    assert set(report.escalated) == {"d", "e"}
    assert report.escalated["d"].startswith("restart (failed): verify failed: dead")
    assert report.exit_code == 1

    records = [r for r in ledger.records(ticket="INC-42") if r.kind != "ticket.opened"]
    kinds = [r.kind for r in records]
    assert kinds[0] == "runbook.begin" and kinds[-1] == "runbook.finish"
    assert kinds.count("ticket.escalated") == 1
    begin = records[0].info
    run_id = begin["run_id"]
    actions = [r for r in records if r.kind.startswith("action.")]
    assert actions and all(
        r.info["runbook"] == "test-printer" and r.info["run_id"] == run_id for r in actions
    )
    escalated = next(r for r in records if r.kind == "ticket.escalated").info
    assert escalated["tier"] == "L3" and escalated["reason"].startswith(
        "Still broken [runbook test-printer, run "
    )
    assert (
        "d: restart (failed)" in escalated["reason"]
        and "e: diagnose (unreachable)" in escalated["reason"]
    )
    finish = records[-1]
    assert finish.outcome == "escalated"
    assert finish.info["outcomes"]["c"] == {
        "diagnose": "would-fix",
        "clear": "failed",
        "restart": "fixed",
    }
    assert conn.opened.count("e") == 1  # never tried again after it was unreachable
    assert ledger.verify().ok


def test_a_check_run_changes_nothing_and_escalates_nothing(ledger: Ledger, tmp_path: Path) -> None:
    report, conn = run(ledger, tmp_path, {"a": "ok", "d": "dead"}, check=True)
    assert report.exit_code == 4 and dict(report.escalated) == {}
    assert not [c for _, c in conn.log if c in ("clear", "restart")]
    assert "ticket.escalated" not in [r.kind for r in ledger.records()]
    assert json.loads(json.dumps(report.as_dict()))["mode"] == "check"


def test_a_change_run_needs_a_ticket(ledger: Ledger, tmp_path: Path) -> None:
    path = tmp_path / "test-printer.yml"
    path.write_text(RUNBOOK)
    conn = FakeConnector({"a": device("ok")})
    runner = Runner(ledger=ledger, connector=conn, credentials=conn.credentials)  # type: ignore[arg-type]
    with pytest.raises(TicketRequired):
        run_runbook(
            load_runbook(path, CATALOG),
            hosts("a"),
            {},
            catalog=CATALOG,
            run_step=steps_on(runner, None),
            ledger=ledger,
            ticket=None,
            options=RunOptions(),
        )
    assert list(ledger.records()) == [] and conn.opened == []


def steps_on(runner: Runner, ticket: str | None, policy_for: Any = None) -> Any:
    """What the run service does for a runbook step, on a test's runner: a fix step gets the
    run policy of its task and hosts; a check-only step gets none."""

    def run_step(task: Task, step_hosts: Any, params: Any, options: RunOptions) -> Any:
        policy = None
        if policy_for is not None and ticket and not options.check_only:
            policy = policy_for(task, step_hosts, params)
        return runner.run(task, step_hosts, params, ticket=ticket, options=options, policy=policy)

    return run_step


class HoldClear:
    """A run policy that holds rb.clear on host b for an approval (as toolkit.run.policy would)."""

    def decide(self, task: Task, spec: Any, host: Any) -> Any:
        from toolkit.run.runner import Outcome, PolicyDecision

        if task.name == "rb.clear" and host.name == "b":
            return PolicyDecision(Outcome.NEEDS_APPROVAL, "needs approval APR-0000abcd")
        return PolicyDecision(None)


def test_a_host_held_by_the_policy_is_neither_run_further_nor_escalated(
    ledger: Ledger, tmp_path: Path
) -> None:
    path = tmp_path / "test-printer.yml"
    path.write_text(RUNBOOK)
    conn = FakeConnector({"a": device("dead"), "b": device("jam")})
    runner = Runner(ledger=ledger, connector=conn, credentials=conn.credentials)  # type: ignore[arg-type]
    asked: list[tuple[str, list[str]]] = []

    def policy_for(task: Task, step_hosts: Any, params: Any, /) -> HoldClear:
        asked.append((task.name, [h.name for h in step_hosts]))
        return HoldClear()

    report = run_runbook(
        load_runbook(path, CATALOG),
        hosts("a", "b"),
        {},
        catalog=CATALOG,
        run_step=steps_on(runner, "INC-43", policy_for),
        ledger=ledger,
        ticket="INC-43",
        options=RunOptions(forks=2),
    )
    assert asked == [("rb.clear", ["a", "b"]), ("rb.restart", ["a"])]  # fix steps only
    assert dict(report.held) == {"b": "clear (needs-approval): needs approval APR-0000abcd"}
    assert set(report.escalated) == {"a"} and report.exit_code == 1
    assert not [c for h, c in conn.log if h == "b" and c in ("clear", "restart")]
    finish = list(ledger.records(kind="runbook.finish"))[0].info
    assert finish["held"] == {"b": "clear (needs-approval): needs approval APR-0000abcd"}


def test_a_resolved_ticket_is_not_escalated_behind_the_desks_back(
    ledger: Ledger, tmp_path: Path
) -> None:
    """The escalation goes through the ticket lifecycle: on a resolved ticket it is refused,
    and the refusal is recorded instead."""
    from toolkit.desk.tickets import ensure
    from toolkit.ledger import Entry

    ensure(ledger, "INC-42", category="printer", priority="P3")
    ledger.append(Entry("ticket.resolved", ticket="INC-42", data={"resolution": "done"}))
    report, _ = run(ledger, tmp_path, {"a": "dead"})
    assert set(report.escalated) == {"a"}
    kinds = [r.kind for r in ledger.records(ticket="INC-42")]
    assert "ticket.escalated" not in kinds and "runbook.escalation-refused" in kinds
    refused = next(ledger.records(ticket="INC-42", kind="runbook.escalation-refused")).info
    assert refused["tier"] == "L3" and "resolved" in refused["why"]


@pytest.mark.parametrize(
    ("check_only", "outcomes", "escalated", "code"),
    [
        (False, ["fixed", "already-ok"], False, 0),
        (False, ["fixed", "failed"], True, 1),  # escalation wins over everything
        (False, ["failed", "would-fix"], False, 0),  # a later step fixed it; a check step's find
        (False, ["unreachable", "needs-approval"], False, 3),
        (False, ["needs-approval", "fixed"], False, 5),
        (True, ["failed", "unreachable"], False, 1),
        (True, ["needs-approval", "would-fix"], False, 5),
        (True, ["would-fix", "already-ok"], False, 4),
    ],
)
def test_a_runbooks_exit_code_follows_the_runners_codes(
    check_only: bool, outcomes: list[str], escalated: bool, code: int
) -> None:
    from toolkit.automation.runbooks import RunbookReport, Step, StepRun
    from toolkit.run.runner import HostResult, Outcome, RunReport

    results = tuple(HostResult(f"h{i}", Outcome(o), "") for i, o in enumerate(outcomes))
    step = StepRun(Step("s", "t.x"), RunReport("t.x", None, check_only, results, 0.0))
    report = RunbookReport(
        "r", "id", None, check_only, (step,), {"h0": "why"} if escalated else {}, 0.0
    )
    assert report.exit_code == code


@remediation("rb.dir", category="printer", platforms={"active_directory"}, summary="Directory")
class RbDirectory(RbDiagnose):
    def apply(self, ctx: Context) -> None:
        ctx.change(cmd("dir-fix"))


def test_a_step_for_other_platforms_neither_runs_nor_holds_a_host(
    ledger: Ledger, tmp_path: Path
) -> None:
    """The password-locked runbook's directory branch: its steps are not a Linux host's."""
    catalog = Catalog(
        {
            c.__remediation__.name: Task(c.__remediation__.name, (c.__remediation__,))
            for c in (RbDiagnose, RbClear, RbDirectory)
        }  # type: ignore[attr-defined]
    )
    path = tmp_path / "branches.yml"
    path.write_text(
        "summary: Two branches\ncategory: printer\nsteps:\n"
        "  - {name: clear, task: rb.clear}\n"
        "  - {name: directory, task: rb.dir}\n"
        "escalate: {to: L3, note: Still broken}\n"
    )
    conn = FakeConnector({"a": device("jam"), "b": device("dead")})
    runner = Runner(ledger=ledger, connector=conn, credentials=conn.credentials)  # type: ignore[arg-type]
    report = run_runbook(
        load_runbook(path, catalog),
        hosts("a", "b"),
        {},
        catalog=catalog,
        run_step=steps_on(runner, "INC-44"),
        ledger=ledger,
        ticket="INC-44",
        options=RunOptions(forks=2),
    )
    assert not report.held
    assert set(report.escalated) == {"b"}  # decided by the step that was b's: clear
    directory_step = report.steps[1]
    assert directory_step.report is None and set(directory_step.skipped) == {"a", "b"}
    assert not [c for _, c in conn.log if c == "dir-fix"]


WHEN_RUNBOOK = """\
summary: Test printer runbook with an optional step
category: printer
params:
  restart: {help: also restart, default: "false"}
steps:
  - {name: clear, task: rb.clear}
  - {name: restart, task: rb.restart, when: $restart}
"""


@pytest.mark.parametrize(("given", "restarted"), [({}, False), ({"restart": "yes"}, True)])
def test_a_step_with_when_runs_only_when_its_parameter_is_true(
    ledger: Ledger, tmp_path: Path, given: dict[str, str], restarted: bool
) -> None:
    """password-locked's 'unlock and/or reset': a step `when: $param` runs only if the runbook
    parameter is true; otherwise every host skips it (nothing sent, nothing recorded)."""
    path = tmp_path / "test-when.yml"
    path.write_text(WHEN_RUNBOOK)
    book = load_runbook(path, CATALOG)
    assert book.steps[1].when == "restart"
    conn = FakeConnector({"a": device("hung")})
    runner = Runner(ledger=ledger, connector=conn, credentials=conn.credentials)  # type: ignore[arg-type]
    report = run_runbook(
        book, hosts("a"), given, catalog=CATALOG, run_step=steps_on(runner, "INC-43"),
        ledger=ledger, ticket="INC-43", options=RunOptions(forks=2),
    )  # fmt: skip
    restart = report.steps[1]
    if restarted:
        assert restart.report is not None and str(restart.report.results[0].outcome) == "fixed"
    else:
        assert restart.report is None and restart.skipped == ("a",)
        assert not any(r.task == "rb.restart" for r in ledger.records(ticket="INC-43"))


def test_a_when_parameter_that_is_not_true_or_false_is_refused_before_anything_runs(
    ledger: Ledger, tmp_path: Path
) -> None:
    path = tmp_path / "test-when.yml"
    path.write_text(WHEN_RUNBOOK)
    book = load_runbook(path, CATALOG)
    conn = FakeConnector({"a": device("hung")})
    runner = Runner(ledger=ledger, connector=conn, credentials=conn.credentials)  # type: ignore[arg-type]
    with pytest.raises(ValidationError, match=r"runs when \$restart: it must be true or false"):
        run_runbook(
            book, hosts("a"), {"restart": "maybe"}, catalog=CATALOG,
            run_step=steps_on(runner, "INC-44"), ledger=ledger, ticket="INC-44",
            options=RunOptions(forks=2),
        )  # fmt: skip
    assert list(ledger.records(ticket="INC-44")) == [] and conn.opened == []
