"""Sites and workers, the parts that need no broker: refusals before anything is sent, the job's
wire format, and what a redelivered job records for an action its lost worker left open.
(End to end on RabbitMQ, PostgreSQL and lab hosts: tests/integration/test_workers.py.)"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from toolkit.errors import InventoryError
from toolkit.inventory import make_host
from toolkit.ledger import Record
from toolkit.remediation.catalog import Finding
from toolkit.run.results import CommandRecord, HostResult, Outcome
from toolkit.workers import by_site, result_from_dict, site_of, without_password
from toolkit.workers.jobs import WORKER_LOST, settle
from toolkit.workspace import Workspace

SITES = """\
all:
  children:
    branch:
      vars: {site: branch-12}
      hosts:
        ws-1: {address: 127.0.0.1, port: 2201}
    hq:
      hosts:
        ws-2: {address: 127.0.0.1, port: 2202}
"""


@pytest.fixture
def sited(workspace: Workspace) -> Workspace:
    (workspace.root / "inventory" / "hosts.yml").write_text(SITES)
    return workspace


def test_a_site_comes_from_the_inventory_and_hosts_without_one_stay_local(
    sited: Workspace,
) -> None:
    from toolkit.inventory import Inventory

    inventory = Inventory.load(sited.inventory_sources)
    groups = by_site(inventory.select("all"))
    assert {site: [h.name for h in hosts] for site, hosts in groups.items()} == {
        "branch-12": ["ws-1"],
        None: ["ws-2"],
    }


def test_a_site_name_that_cannot_name_a_queue_is_refused() -> None:
    host = make_host("ws-1", {"site": "branch 12; rm"}, ("all",), "hosts.yml:3")
    with pytest.raises(InventoryError, match="invalid site 'branch 12; rm'"):
        site_of(host)


def itops(workspace: Workspace, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "toolkit", "-w", str(workspace.root), *args],
        capture_output=True,
        text=True,
        timeout=60,
        stdin=subprocess.DEVNULL,
    )


def test_workers_with_a_sqlite_ledger_are_refused_with_a_hint(sited: Workspace) -> None:
    fix = itops(sited, "fix", "printer.clear-queue", "all", "--ticket", "INC-1")
    assert fix.returncode == 2, fix.stdout + fix.stderr
    assert "shared PostgreSQL ledger" in fix.stderr and "postgresql+psycopg://" in fix.stderr
    worker = itops(sited, "worker", "--site", "branch-12")
    assert worker.returncode == 2, worker.stdout + worker.stderr
    assert "shared PostgreSQL ledger" in worker.stderr
    # refused before the ticket, the policy or the broker: nothing recorded
    log = itops(sited, "log", "--json")
    assert "INC-1" not in log.stdout and "action.begin" not in log.stdout


def test_a_host_result_crosses_the_broker_as_json_and_back() -> None:
    result = HostResult(
        "ws-1",
        Outcome.FIXED,
        "resumed office (was: disabled)",
        1.25,
        check=Finding(False, "disabled", {"queue": "office"}),
        verify=Finding(True, "enabled"),
        commands=(CommandRecord("check", "lpstat -p office", 0, 0.5, "out", "err"),),
        action_id="ab" * 16,
        notes=("cancelled 3 jobs",),
    )
    back = result_from_dict(json.loads(json.dumps(result.as_dict())))
    assert back == result


def _begin(mode: str) -> Record:
    data = json.dumps({"mode": mode, "job": "j-1", "site": "branch-12"})
    return Record(1, "t", "action.begin", "op", "INC-1", "ws-1", "test.mark", "a" * 32, None,
                  None, None, None, None, None, data, "", "")  # fmt: skip


@pytest.mark.parametrize(
    ("mode", "found", "outcome", "error", "says"),
    [
        ("fix", Outcome.ALREADY_OK, "fixed", None, "the fix is in place"),
        ("fix", Outcome.WOULD_FIX, "failed", WORKER_LOST, "run again to fix it"),
        ("fix", Outcome.UNREACHABLE, "unreachable", WORKER_LOST, "the re-check failed"),
        ("check", Outcome.WOULD_FIX, "would-fix", None, "no mark"),
    ],
)
def test_an_open_action_of_a_lost_worker_is_settled_by_a_recheck_never_a_reapply(
    mode: str, found: Outcome, outcome: str, error: str | None, says: str
) -> None:
    got = settle(HostResult("ws-1", found, "no mark"), _begin(mode))
    assert got[0] == outcome and got[2] == error
    assert "re-checked, not re-applied" in got[1] and says in got[1]


def test_an_action_whose_finish_was_lost_is_settled_saying_so() -> None:
    from toolkit.workers.jobs import FINISH_LOST, LEDGER_UNAVAILABLE

    begin = _begin("fix")
    fixed = settle(HostResult("ws-1", Outcome.ALREADY_OK, "marked"), begin, FINISH_LOST,
                   LEDGER_UNAVAILABLE)  # fmt: skip
    assert fixed[0] == "fixed" and fixed[2] is None
    assert fixed[1].startswith(FINISH_LOST + "; re-checked, not re-applied")
    still = settle(HostResult("ws-1", Outcome.WOULD_FIX, "no mark"), begin, FINISH_LOST,
                   LEDGER_UNAVAILABLE)  # fmt: skip
    assert still[0] == "failed" and still[2] == LEDGER_UNAVAILABLE


def test_only_the_asked_sites_workers_answer_a_liveness_inspect() -> None:
    import re

    from toolkit.workers.serve import worker_pattern

    pattern = worker_pattern(["branch-a", "hq.1"])
    for name in ("itops-branch-a-123@vm", "itops-hq.1-9@host.example"):
        assert re.match(pattern, name), name
    for name in ("itops-branch-b-123@vm", "itops-branch-a-1-123@vm", "itops-hqx1-9@vm",
                 "itops-branch-a-@vm", "celery@vm"):  # fmt: skip
        assert not re.match(pattern, name), name


def test_a_broker_password_is_never_shown() -> None:
    shown = without_password("amqp://itops:s3cret@mq.example:5672/prod")
    assert "s3cret" not in shown and shown == "amqp://itops:***@mq.example:5672/prod"
    assert without_password("redis://127.0.0.1:6379/0") == "redis://127.0.0.1:6379/0"


def test_help_and_local_runs_never_import_celery(tmp_path: Path) -> None:
    code = (
        "import sys\n"
        "from toolkit.cli import main\n"
        "sys.argv = ['itops', 'fix', '--help']\n"
        "try:\n    main()\nexcept SystemExit:\n    pass\n"
        "import toolkit.cli.fix, toolkit.workers\n"
        "assert 'celery' not in sys.modules and 'kombu' not in sys.modules, 'celery imported'\n"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr


SITED_DEVICE = """\
    branch-net:
      vars: {site: branch-12}
      hosts:
        sw-1: {address: 127.0.0.1, port: 2203, platform: cisco_ios}
"""


def test_every_caller_of_the_run_service_sends_site_hosts_to_workers(sited: Workspace) -> None:
    """`backup run` and runbooks reach the distributed path through RunService.run as `fix`
    does: here it refuses the SQLite ledger (no broker is needed to see the switch taken)."""
    hosts = sited.root / "inventory" / "hosts.yml"
    hosts.write_text(hosts.read_text() + SITED_DEVICE)
    backup = itops(sited, "backup", "run", "sw-1", "--ticket", "CHG-1")
    assert backup.returncode == 2, backup.stdout + backup.stderr
    assert "shared PostgreSQL ledger" in backup.stderr
    runbook = itops(sited, "runbook", "run", "printer-not-printing", "ws-1", "--ticket", "INC-2")
    assert runbook.returncode == 2, runbook.stdout + runbook.stderr
    assert "shared PostgreSQL ledger" in runbook.stderr
    log = itops(sited, "log", "--json")  # refused before anything (a runbook's begin too)
    assert "action.begin" not in log.stdout and "runbook.begin" not in log.stdout
    assert "CHG-1" not in log.stdout


def test_a_playbook_on_site_hosts_is_refused_before_anything_is_recorded(
    sited: Workspace,
) -> None:
    done = itops(sited, "playbook", "run", "sample", "all", "--ticket", "CHG-3")
    assert done.returncode == 2, done.stdout + done.stderr
    assert "ws-1 in site branch-12" in done.stderr
    assert "playbooks run only from the controller" in done.stderr
    assert "TARGETS:!branch-12" in done.stderr  # the hint
    assert "CHG-3" not in itops(sited, "log", "--json").stdout  # no ticket opened
    added = itops(sited, "schedule", "add", "nightly", "--playbook", "sample", "--targets",
                  "all", "--cron", "0 3 * * *")  # fmt: skip
    assert added.returncode == 2 and "in site branch-12" in added.stderr, added.stderr
