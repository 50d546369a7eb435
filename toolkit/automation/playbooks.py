"""Ansible playbooks from the workspace's playbooks/ folder, run through ansible-runner.

The same inventory files itops reads are given to ansible (`-i` each), narrowed with `--limit` to
the hosts itops selected. The ledger gets, per host, an `action.begin` before ansible starts and an
`action.finish` with the host's outcome at the end; in between, each of ansible's per-host task
results is streamed in as a `playbook.event` record (task, host, ok/changed/failed/unreachable/
skipped, duration, masked output).

Safety settings, whatever the machine's ansible.cfg says:
- Host keys are checked: ANSIBLE_HOST_KEY_CHECKING=True (ansible-runner turns it off otherwise),
  and ssh is told to trust exactly the workspace's known_hosts files (`-o UserKnownHostsFile=…
  -o StrictHostKeyChecking=yes` first in ANSIBLE_SSH_ARGS: ssh keeps the first value it is given,
  so an inventory's ansible_ssh_common_args / _extra_args cannot loosen it). Host variables
  outrank that environment, so a target host that sets ansible_ssh_args (which would replace
  it), turns ansible_host_key_checking off, or ignores WinRM certificates without
  `winrm_allow_insecure: true` is refused before anything runs.
- Extra vars reach ansible in a 0600 file, never on a command line `ps` shows.
- The controller's ansible is the one installed beside this interpreter (its bin/ first on PATH).
- ControlPersist sockets live in a directory of this run only, and their masters are told to exit
  when the run ends; the run's private data (unmasked ansible output) is deleted.
"""

from __future__ import annotations

import json
import os
import re
import shlex
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from toolkit.errors import NotFound, ToolkitError, ValidationError
from toolkit.inventory import Host
from toolkit.ledger import Entry
from toolkit.remediation.catalog import Task
from toolkit.run.runner import HostResult, Outcome, RunReport
from toolkit.secrets.credentials import MASK, is_reference, is_secret_key
from toolkit.workspace import Workspace

if TYPE_CHECKING:
    from toolkit.app import App

PLAYBOOK_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,99}")
RESULT_EVENTS = {
    "runner_on_ok": "ok",
    "runner_on_failed": "failed",
    "runner_on_unreachable": "unreachable",
    "runner_on_skipped": "skipped",
}
USER_KNOWN_HOSTS = Path("~/.ssh/known_hosts").expanduser()  # as the SSH transport trusts
INSTALL_HINT = "install the ansible extra: pip install 'itops-toolkit[ansible]'"


class PlaybookError(ToolkitError):
    """A playbook cannot be found or run."""


@dataclass(frozen=True)
class Playbook:
    name: str
    path: Path
    summary: str


@dataclass(frozen=True)
class TaskEvent:
    """One of ansible's per-host task results, as recorded."""

    host: str
    task: str
    action: str
    status: str  # ok | changed | failed | unreachable | skipped
    duration: float
    output: str


@dataclass
class _HostTally:
    statuses: list[str] = field(default_factory=list)
    last_problem: str = ""
    last_task: str = ""


def check_name(name: str) -> str:
    """A playbook is named, never given as a path: no separators, no '..'."""
    if "/" in name or "\\" in name or ".." in name or not PLAYBOOK_NAME.fullmatch(name):
        raise ValidationError(
            f"invalid playbook name {name!r}: playbooks are named, not given as paths",
            hint="use a name from `itops playbook list`, e.g. patch_linux",
        )
    return name


def folder(workspace: Workspace) -> Path:
    return workspace.folder("playbooks", "playbooks")


def _summary(path: Path) -> str:
    """The first play's name, else the first comment line."""
    comment = ""
    for line in path.read_text(errors="replace").splitlines():
        stripped = line.strip()
        if stripped.startswith("#") and not comment:
            comment = stripped.lstrip("# ").strip()
        m = re.match(r"-\s+name:\s*(.+)", stripped)
        if m:
            return m.group(1).strip().strip("'\"")
    return comment


def list_playbooks(workspace: Workspace) -> list[Playbook]:
    root = folder(workspace)
    if not root.is_dir():
        return []
    found = sorted([*root.glob("*.yml"), *root.glob("*.yaml")])
    return [Playbook(p.stem, p, _summary(p)) for p in found if PLAYBOOK_NAME.fullmatch(p.stem)]


def find_playbook(workspace: Workspace, name: str) -> Playbook:
    check_name(name)
    stem = re.sub(r"\.ya?ml$", "", name)
    known = list_playbooks(workspace)
    for playbook in known:
        if playbook.name == stem:
            return playbook
    raise NotFound.named("playbook", stem, [p.name for p in known], f"in {folder(workspace)}")


def parse_extra_vars(items: Sequence[str]) -> dict[str, str]:
    """`--extra-var k=v` pairs; secret-looking names must hold references (env:VAR, …)."""
    out: dict[str, str] = {}
    for item in items:
        name, sep, value = item.partition("=")
        if not sep or not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", name):
            raise ValidationError(f"extra var {item!r} is not NAME=VALUE (NAME a variable name)")
        if is_secret_key(name) and not is_reference(value):
            raise ValidationError(
                f"extra var {name} is a secret: give a reference, not the value",
                hint="env:VAR, file:/path, keyring:service/user or prompt",
            )
        out[name] = value
    return out


def refuse_site_hosts(name: str, hosts: Sequence[Host]) -> None:
    """Hosts with a site run on their site's worker (docs/scale.md), and a playbook runs from
    here only (one ansible-runner process over the whole play): refused, naming the sites,
    before anything is recorded — never reached from the controller behind the site's back."""
    from toolkit.workers import by_site

    sites = {site: group for site, group in by_site(hosts).items() if site is not None}
    if not sites:
        return
    listed = "; ".join(
        f"{', '.join(h.name for h in group[:5])}{' …' if len(group) > 5 else ''} in site {site}"
        for site, group in sorted(sites.items())
    )
    names = ", ".join(sorted(sites))
    raise PlaybookError(
        f"playbook {name}: {listed} — hosts with a site run on that site's worker, and "
        "playbooks run only from the controller: nothing was run or recorded",
        hint=f"leave the site's hosts out (TARGETS:!{sorted(sites)[0]}), or do the work with "
        f"itops tasks or a runbook, which run on the workers of {names}",
    )


def refuse_loosened_checks(hosts: Sequence[Host]) -> None:
    """Refuse inventory variables with which ansible would undo the checks set here: host
    variables outrank ansible's environment (ANSIBLE_SSH_ARGS, ANSIBLE_HOST_KEY_CHECKING)."""
    for host in hosts:
        if host.var("ansible_ssh_args") is not None:
            raise PlaybookError(
                f"{host.name} sets ansible_ssh_args, which would replace itops's host-key "
                "pinning for ansible",
                hint="use ansible_ssh_common_args / ansible_ssh_extra_args for extra options",
            )
        if host.var("jump"):
            raise PlaybookError(
                f"{host.name} names jump hosts with itops's `jump:`, which ansible does not read: "
                "it would try to connect directly",
                hint="for hosts that playbooks reach too, spell the jump host as ansible does: "
                "ansible_ssh_common_args: '-o ProxyJump=user@bastion:22'",
            )
        if str(host.var("ansible_host_key_checking", True)).lower() in ("false", "no", "0"):
            raise PlaybookError(f"{host.name} turns ansible_host_key_checking off")
        insecure_ok = host.var("winrm_allow_insecure") is True
        validation = str(host.var("ansible_winrm_server_cert_validation", "validate")).lower()
        if validation == "ignore" and not insecure_ok:
            raise PlaybookError(
                f"{host.name} sets ansible_winrm_server_cert_validation: ignore",
                hint="set winrm_ca_bundle, or winrm_allow_insecure: true for this host to "
                "accept it knowingly",
            )


def ansible_environment(
    workspace: Workspace, run_dir: Path, connect_timeout: float
) -> dict[str, str]:
    """The environment ansible runs with (see the module docstring for why each is set)."""
    known = [str(p) for p in workspace.known_hosts_files if p.is_file()]
    if USER_KNOWN_HOSTS.is_file():
        known.append(str(USER_KNOWN_HOSTS))
    if any(c.isspace() for c in "".join(known)):
        raise PlaybookError("known_hosts paths with spaces cannot be given to ssh here")
    ssh_args = [
        "-o",
        f"UserKnownHostsFile={' '.join(known) or '/dev/null'}",
        "-o",
        "GlobalKnownHostsFile=/dev/null",
        "-o",
        "StrictHostKeyChecking=yes",
        "-o",
        "ControlMaster=auto",
        "-o",
        "ControlPersist=60s",
    ]
    bindir = os.path.dirname(sys.executable)
    return {
        "PATH": os.pathsep.join([bindir, os.environ.get("PATH", "/usr/bin:/bin")]),
        "ANSIBLE_HOST_KEY_CHECKING": "True",
        "ANSIBLE_SSH_ARGS": shlex.join(ssh_args),
        "ANSIBLE_SSH_CONTROL_PATH_DIR": str(run_dir / "cp"),
        "ANSIBLE_LOCAL_TEMP": str(run_dir / "tmp"),
        "ANSIBLE_TIMEOUT": str(int(max(1, connect_timeout))),
        "ANSIBLE_RETRY_FILES_ENABLED": "False",
        "ANSIBLE_NOCOLOR": "True",
        "ANSIBLE_DEPRECATION_WARNINGS": "False",
        "ANSIBLE_PYTHON_INTERPRETER": "auto_silent",
    }


def _output(res: Mapping[str, Any]) -> str:
    parts = []
    for key in ("msg", "stdout", "stderr"):
        value = res.get(key)
        if value:
            parts.append(value if isinstance(value, str) else json.dumps(value, default=str))
    if isinstance(res.get("results"), list):
        for item in res["results"]:
            if isinstance(item, Mapping):
                label = item.get("item", "")
                status = (
                    "changed" if item.get("changed") else ("failed" if item.get("failed") else "ok")
                )
                parts.append(f"{label}: {status}" + (f" {item['msg']}" if item.get("msg") else ""))
    if isinstance(res.get("diff"), list | dict) and res.get("diff"):
        parts.append("diff: " + json.dumps(res["diff"], default=str)[:2000])
    return "\n".join(parts)


def _host_outcome(tally: _HostTally | None, check_only: bool) -> tuple[Outcome, str]:
    if tally is None or not tally.statuses:
        return Outcome.SKIPPED, "no play in the playbook matched this host"
    s = tally.statuses
    n_changed = s.count("changed")
    if "unreachable" in s:
        return Outcome.UNREACHABLE, tally.last_problem
    if "failed" in s:
        return Outcome.FAILED, f"{tally.last_task}: {tally.last_problem}"
    counts = f"{s.count('ok')} ok, {n_changed} changed, {s.count('skipped')} skipped"
    if n_changed:
        if check_only:
            return Outcome.WOULD_FIX, f"check mode: {n_changed} task(s) would change ({counts})"
        return Outcome.FIXED, f"{counts} (ansible reports changes; no separate verify step)"
    return Outcome.ALREADY_OK, counts


def run_playbook(
    app: App,
    name: str,
    hosts: Sequence[Host],
    *,
    ticket: str | None,
    check_only: bool,
    extra_vars: Mapping[str, str],
    on_event: Callable[[TaskEvent], None] | None = None,
    forks: int = 20,
    break_glass: str | None = None,
    approval_id: str | None = None,
    job_window: str | None = None,
    schedule: str | None = None,
) -> RunReport:
    """Run playbook NAME on `hosts`, streaming its events into the ledger; returns per-host outcomes.

    A run that changes hosts goes through the run policy of `itops fix` first, per host:
    maintenance windows (`[policy] disruptive = ["playbook:NAME"]`), approvals (`risky`),
    break-glass. A host the policy holds is recorded (skipped / needs-approval) and left out."""
    try:
        import ansible_runner
    except ImportError:
        raise PlaybookError("ansible-runner is not installed", hint=INSTALL_HINT) from None
    if not check_only and not ticket:
        from toolkit.errors import TicketRequired

        raise TicketRequired(
            f"playbook {name} changes hosts: a ticket is required",
            hint="add --ticket CHG-123, or --check to run it in check mode",
        )
    playbook = find_playbook(app.workspace, name)
    refuse_site_hosts(playbook.name, hosts)
    if shutil.which("ansible-playbook", path=os.path.dirname(sys.executable)) is None:
        raise PlaybookError(
            f"ansible-playbook is not installed beside {sys.executable}", hint=INSTALL_HINT
        )
    if not hosts:
        raise NotFound("no hosts to run the playbook on")
    refuse_loosened_checks(hosts)
    ledger = app.ledger
    mask = app.redactor.mask
    task = playbook_task(playbook, hosts)
    held: dict[str, Any] = {}  # host → the policy's decision that keeps it out of this run
    decisions: dict[str, Any] = {}
    if not check_only and ticket:
        from toolkit.run.policy import prepare

        policy = prepare(
            ledger,
            app.policy_settings,
            clock=app.clock,
            task=task,
            hosts=hosts,
            params=dict(extra_vars),
            ticket=ticket,
            break_glass=break_glass,
            approval_id=approval_id,
            job_window=job_window,
            schedule=schedule,
        )
        for host in hosts:
            decision = policy.decide(task, task.specs[0], host)
            decisions[host.name] = decision
            if decision.outcome is not None:
                held[host.name] = decision
    values: dict[str, Any] = {}
    shown: dict[str, Any] = {}
    for key, value in extra_vars.items():
        if is_secret_key(key):  # a reference (parse_extra_vars): resolved, then masked
            values[key] = app.credentials.resolve(value, f"extra var {key}").reveal()
            shown[key] = MASK
        else:
            values[key] = value
            shown[key] = value
    task_name = f"playbook:{playbook.name}"
    run_id = os.urandom(8).hex()
    values.update(
        itops_ticket=ticket or "",
        itops_run_id=run_id,
        itops_state_dir=str(app.workspace.state_dir.resolve()),
        itops_check=check_only,  # (the variable playbooks read: its name stays)
    )
    mode = "check" if check_only else "fix"
    begun: dict[str, str] = {}
    for host in hosts:
        begun[host.name] = ledger.begin(
            task=task_name,
            host=host.name,
            ticket=ticket,
            params=shown,
            data={
                "mode": mode,
                "playbook": playbook.name,
                "run_id": run_id,
                "address": f"{host.address}:{host.port}",
                **_policy_record(decisions.get(host.name)),
            },
        )
    started = time.monotonic()
    tallies: dict[str, _HostTally] = {}
    lock = threading.Lock()

    def handler(event: Mapping[str, Any]) -> bool:
        kind = event.get("event")
        if kind not in RESULT_EVENTS:
            return True
        data = event.get("event_data") or {}
        host = str(data.get("host") or "")
        res = data.get("res") or {}
        status = RESULT_EVENTS[str(kind)]
        if status == "ok" and res.get("changed"):
            status = "changed"
        if status == "failed" and data.get("ignore_errors"):
            status = "ok"
        duration = float(data.get("duration") or 0.0)
        task = str(data.get("task") or "")
        text = mask(_output(res))
        record = TaskEvent(host, task, str(data.get("task_action") or ""), status, duration, text)
        with lock:
            tally = tallies.setdefault(host, _HostTally())
            tally.statuses.append(status)
            if status in ("failed", "unreachable"):
                tally.last_problem = (text.strip().splitlines() or [status])[-1][:300]
                tally.last_task = task
        ledger.append(
            Entry(
                "playbook.event",
                ticket=ticket,
                host=host,
                task=task_name,
                outcome=status,
                duration_ms=round(duration * 1000),
                output=text,
                data={
                    "ansible_task": task,
                    "module": record.action,
                    "run_id": run_id,
                    "action": begun.get(host),
                    "changed": bool(res.get("changed")),
                },
            )
        )
        if on_event is not None:
            on_event(record)
        return True

    running = [h for h in hosts if h.name not in held]
    run_dir = Path(tempfile.mkdtemp(prefix="itops-ans-"))
    error: str | None = None
    try:
        if not running:  # every host held by the policy: ansible has nothing to do
            raise _NothingToRun
        for sub in ("cp", "tmp", "private"):
            (run_dir / sub).mkdir()
        connect_timeout = float(app.workspace.run_setting("connect_timeout", 10))
        # Extra vars go in a 0600 file in this run's 0700 folder: ansible-runner would put
        # them on ansible-playbook's command line, where any local user's `ps` shows secrets.
        extravars = run_dir / "extravars.json"
        with os.fdopen(os.open(extravars, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600), "w") as f:
            json.dump(values, f)
        result = ansible_runner.run(
            private_data_dir=str(run_dir / "private"),
            playbook=str(playbook.path.resolve()),
            inventory=[str(p.resolve()) for p in app.workspace.inventory_sources],
            limit=",".join(h.name for h in running),
            envvars=ansible_environment(app.workspace, run_dir, connect_timeout),
            cmdline=shlex.join(
                [*(["--check", "--diff"] if check_only else []), "-e", f"@{extravars}"]
            ),
            forks=max(1, min(forks, len(running))),
            event_handler=handler,
            quiet=True,
            suppress_env_files=True,
        )
        status, rc = str(result.status), result.rc
        if status not in ("successful", "failed"):
            error = f"ansible-runner ended {status} (rc {rc})"
        elif rc not in (0, 2, 4) and not tallies:
            error = f"ansible-playbook exited {rc} without running a task"
    except _NothingToRun:
        pass
    except Exception as exc:  # every begun host still gets its finish record
        error = f"ansible-runner failed: {type(exc).__name__}: {exc}"
    finally:
        _close_masters(run_dir / "cp")
        shutil.rmtree(run_dir, ignore_errors=True)
    results = []
    for host in hosts:
        outcome, message = _host_outcome(tallies.get(host.name), check_only)
        if error and outcome == Outcome.SKIPPED:
            outcome, message = Outcome.FAILED, error
        if host.name in held:  # the policy kept it out: what it said, nothing ran there
            outcome, message = held[host.name].outcome, held[host.name].message
        tally = tallies.get(host.name)
        ledger.finish(
            begun[host.name],
            task=task_name,
            host=host.name,
            ticket=ticket,
            outcome=outcome,
            duration=time.monotonic() - started,
            data={
                "message": mask(message),
                "playbook": playbook.name,
                "run_id": run_id,
                "tasks": dict(_count(tally.statuses)) if tally else {},
                **_policy_record(decisions.get(host.name)),
            },
        )
        results.append(
            HostResult(
                host.name,
                outcome,
                mask(message),
                time.monotonic() - started,
                action_id=begun[host.name],
            )
        )
    return RunReport(task_name, ticket, check_only, tuple(results), time.monotonic() - started)


class _NothingToRun(Exception):
    """Every host of the run was held by the policy."""


def playbook_task(playbook: Playbook, hosts: Sequence[Host]) -> Task:
    """A playbook as the run policy sees a task: named `playbook:NAME`, so `[policy]
    disruptive` / `risky` name it; a playbook whose vars say `itops_disruptive: true` or
    `itops_risky: true` is marked so itself."""
    from toolkit.remediation.catalog import Remediation, TaskSpec

    marks = playbook_marks(playbook.path)
    spec = TaskSpec(
        name=f"playbook:{playbook.name}",
        category="software",
        platforms=frozenset(h.platform for h in hosts),
        summary=playbook.summary,
        cls=Remediation,
        params={},
        disruptive=bool(marks.get("itops_disruptive")),
        risky=bool(marks.get("itops_risky")),
        source=str(playbook.path),
    )
    return Task(spec.name, (spec,))


def playbook_marks(path: Path) -> dict[str, Any]:
    """The itops_* variables of a playbook's plays (`vars:`), read without running anything."""
    import yaml

    try:
        plays = yaml.safe_load(path.read_text()) or []
    except (OSError, yaml.YAMLError):
        return {}
    marks: dict[str, Any] = {}
    for play in plays if isinstance(plays, list) else []:
        variables = play.get("vars") if isinstance(play, dict) else None
        if isinstance(variables, dict):
            marks |= {k: v for k, v in variables.items() if str(k).startswith("itops_")}
    return marks


def _policy_record(decision: Any) -> dict[str, Any]:
    return {"policy": dict(decision.record)} if decision is not None and decision.record else {}


def _count(statuses: Sequence[str]) -> dict[str, int]:
    out: dict[str, int] = {}
    for s in statuses:
        out[s] = out.get(s, 0) + 1
    return out


def _close_masters(directory: Path) -> None:
    """Tell every ControlPersist master of this run to exit (they would linger for 60 s)."""
    if not directory.is_dir():
        return
    for socket_path in directory.iterdir():
        subprocess.run(
            ["ssh", "-o", f"ControlPath={socket_path}", "-O", "exit", "itops-control"],
            capture_output=True,
            timeout=10,
            check=False,
        )
