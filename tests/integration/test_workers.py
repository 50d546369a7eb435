"""Sites and distributed workers end to end: real RabbitMQ (a virtual host of this module's own),
the real PostgreSQL ledger (a schema of its own), lab hosts over SSH, and `itops worker` started
as separate processes that the tests own by pid (and one of them killed -9 mid-batch)."""

from __future__ import annotations

import contextlib
import json
import os
import re
import secrets
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import PG_URL, _pg_schema_url
from tests.integration.conftest import HERE, OPERATORS
from tests.signers import make_operators
from toolkit.lab import Lab
from toolkit.workspace import Workspace

pytestmark = pytest.mark.integration

TASK = """
from __future__ import annotations

import shlex

from toolkit.remediation.catalog import Context, Finding, Param, Remediation, remediation
from toolkit.remediation.quoting import cmd, script


@remediation("test.mark", category="other", platforms={"linux"}, summary="Leaves a mark per host")
class Mark(Remediation):
    folder = Param(str, required=True)
    seconds = Param(int, default=0)
    fail_host = Param(str, default="")

    def _mark(self, ctx: Context) -> str:
        return f"{self.folder}/{ctx.host.name}"

    def check(self, ctx: Context) -> Finding:
        found = ctx.read(cmd("test", "-e", self._mark(ctx)))
        if found.exit_code == 0:
            return Finding.healthy("marked")
        return Finding.problem("no mark")

    def apply(self, ctx: Context) -> None:
        mark = shlex.quote(self._mark(ctx))
        fail = "exit 3" if ctx.host.name == self.fail_host else "true"
        ctx.change(script(f"sleep {self.seconds}; {fail}; echo x >> {mark}.count; touch {mark}"))
"""


RUNBOOK = """\
summary: Look for the mark, then leave it
category: other
params:
  folder: {help: "where the marks go", required: true}
steps:
  - name: look
    task: test.mark
    check_only: true
    params: {folder: $folder}
  - name: mark
    task: test.mark
    params: {folder: $folder}
"""
SITE_SWITCH = "sw-01"  # a lab switch (fake-switches) put in site branch-a
OTHER_SWITCH = "sw-02"  # … and one in branch-b
HQ_SWITCH = "sw-ios-01"  # a lab device without a site: backed up by the controller


@dataclass
class Estate:
    root: Path
    hosts: list[str]
    vhost: str
    ledger_url: str
    env: dict[str, str]
    workers: dict[str, list[subprocess.Popen[bytes]]] = field(default_factory=dict)
    logs: Path | None = None

    def itops(self, *args: str, timeout: float = 120) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "toolkit", "--workspace", str(self.root), *args],
            capture_output=True,
            text=True,
            timeout=timeout,
            env=self.env,
            stdin=subprocess.DEVNULL,
        )

    def start_worker(self, site: str, env: dict[str, str] | None = None) -> subprocess.Popen[bytes]:
        assert self.logs is not None
        log = open(self.logs / f"worker-{site}-{len(self.workers.get(site, []))}.log", "ab")  # noqa: SIM115
        proc = subprocess.Popen(
            [sys.executable, "-m", "toolkit", "--workspace", str(self.root), "worker", "--site",
             site, "--forks", "10"],
            stdout=log, stderr=subprocess.STDOUT, env=env or self.env, stdin=subprocess.DEVNULL,
        )  # fmt: skip
        self.workers.setdefault(site, []).append(proc)
        return proc

    def wait_live(self, site: str, count: int = 1, timeout: float = 30) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            listed = self.itops("worker", "list", "--json")
            if listed.returncode == 0:
                live = [r for r in json.loads(listed.stdout) if r["site"] == site and r["worker"]]
                if len(live) >= count:
                    return
            time.sleep(0.5)
        raise AssertionError(f"no live worker for {site}: {self.worker_logs()}")

    def stop(self, proc: subprocess.Popen[bytes], sig: int = signal.SIGTERM) -> None:
        if proc.poll() is None:
            proc.send_signal(sig)
            try:
                proc.wait(20)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(5)
        for procs in self.workers.values():
            if proc in procs:
                procs.remove(proc)

    def on_broker(self, name: str, broker: str) -> Estate:
        """A second workspace beside this one: the same lab hosts, sites, task and ledger, its
        workers on `broker`."""
        root = self.root.parent / name
        Workspace.init(root)
        (root / "tasks" / "marks.py").write_text(TASK)
        shutil.copy(self.root / "inventory" / "sites.yml", root / "inventory" / "sites.yml")
        lab = self.root / ".itops" / "lab"
        shutil.copy(lab / "known_hosts", root / "inventory" / "known_hosts")
        config = (
            (root / "itops.toml")
            .read_text()
            .replace(
                'sources = ["inventory/hosts.yml"]',
                f'sources = ["{lab / "hosts.yml"}", "inventory/sites.yml"]',
            )
        )
        (root / "itops.toml").write_text(config + f'\n[workers]\nbroker = "{broker}"\n')
        return Estate(root, self.hosts, self.vhost, self.ledger_url, self.env, logs=self.logs)

    def worker_logs(self) -> str:
        assert self.logs is not None
        return "".join(p.read_text(errors="replace")[-3000:] for p in self.logs.glob("*.log"))


@contextlib.contextmanager
def on_redis(estate: Estate, *names: str) -> Iterator[tuple[Any, ...]]:
    """The number of a Redis database of their own, then workspaces beside `estate` (one per
    name) whose workers use it; afterwards their workers are stopped and the database emptied
    (kombu prefixes its broadcast channels with the database number: other tests never meet)."""
    db = 1 + secrets.randbelow(15)
    spaces = tuple(estate.on_broker(f"{n}-{db}", f"redis://127.0.0.1:6379/{db}") for n in names)
    try:
        yield (db, *spaces)
    finally:
        for space in spaces:
            for procs in list(space.workers.values()):
                for proc in list(procs):
                    space.stop(proc)
        subprocess.run(["redis-cli", "-h", "127.0.0.1", "-n", str(db), "flushdb"],
                       capture_output=True)  # fmt: skip


@pytest.fixture(scope="module")
def estate(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Estate]:
    if os.geteuid() != 0:
        if os.environ.get("CI"):
            pytest.fail("integration tests need root (they start sshd and a RabbitMQ vhost)")
        pytest.skip("integration tests need root")
    if not PG_URL:
        if os.environ.get("CI"):
            pytest.fail("CI must set ITOPS_TEST_PG_URL: workers write to the PostgreSQL ledger")
        pytest.skip("ITOPS_TEST_PG_URL not set")
    vhost = f"itops-test-{secrets.token_hex(4)}"
    subprocess.run(["rabbitmqctl", "-q", "add_vhost", vhost], check=True, capture_output=True)
    subprocess.run(
        ["rabbitmqctl", "-q", "set_permissions", "-p", vhost, "guest", ".*", ".*", ".*"],
        check=True, capture_output=True,
    )  # fmt: skip
    schema = _pg_schema_url(PG_URL)
    url = next(schema)
    root = tmp_path_factory.mktemp("itops-workers") / "ws"
    Workspace.init(root)
    keys = make_operators(tmp_path_factory.mktemp("keys"), OPERATORS)
    keys.write(root / "allowed_signers", OPERATORS)
    shutil.copy(HERE / "tasks" / "faults.py", root / "tasks" / "faults.py")
    (root / "tasks" / "marks.py").write_text(TASK)
    config = (root / "itops.toml").read_text()
    config = config.replace(
        'sources = ["inventory/hosts.yml"]',
        'sources = ["inventory/hosts.yml", "inventory/sites.yml"]',
    )
    config += f'\n[workers]\nbroker = "amqp://guest:guest@127.0.0.1:5672/{vhost}"\njobs = 2\n'
    (root / "itops.toml").write_text(config)
    (root / "runbooks" / "marks.yml").write_text(RUNBOOK)
    lab = Lab(Workspace.load(root))
    state = lab.up(6, services=("sudo", "netdev"))  # password.reset, `backup run` on site hosts
    hosts = [h.name for h in state.hosts]
    (root / "inventory" / "sites.yml").write_text(
        "all:\n  children:\n"
        f"    branch-a:\n      vars: {{site: branch-a}}\n      hosts: {{{hosts[0]}: {{}}, "
        f"{hosts[1]}: {{}}, {hosts[2]}: {{}}}}\n"
        f"    branch-b:\n      vars: {{site: branch-b}}\n      hosts: {{{hosts[3]}: {{}}, "
        f"{hosts[4]}: {{}}}}\n"
        # the switches: in the sites, not in the groups the other tests target
        f"    branch-a-net:\n      vars: {{site: branch-a}}\n      hosts: {{{SITE_SWITCH}: {{}}}}\n"
        f"    branch-b-net:\n      vars: {{site: branch-b}}\n      hosts: {{{OTHER_SWITCH}: {{}}}}\n"
    )
    env = {k: v for k, v in os.environ.items() if not k.startswith("ITOPS_")}
    env.update(ITOPS_LEDGER_URL=url, ITOPS_SIGNING_KEY=str(keys.key("l1-tech")))
    logs = tmp_path_factory.mktemp("worker-logs")
    found = Estate(root, hosts, vhost, url, env, logs=logs)
    try:
        for site in ("branch-a", "branch-b"):
            found.start_worker(site)
        for site in ("branch-a", "branch-b"):
            found.wait_live(site)
        yield found
    finally:
        for procs in list(found.workers.values()):
            for proc in list(procs):
                found.stop(proc)
        lab.down()
        subprocess.run(["rabbitmqctl", "-q", "delete_vhost", vhost], capture_output=True)
        with contextlib.suppress(StopIteration):
            next(schema)


def marks_dir(tmp_path: Path) -> Path:
    """A folder the lab's login user can write (pytest's own tmp folders are 0700 root)."""
    import tempfile

    folder = Path(tempfile.mkdtemp(prefix="itops-marks-"))
    folder.chmod(0o777)
    return folder


def by_host(result: subprocess.CompletedProcess[str]) -> dict[str, dict[str, object]]:
    assert result.stdout.strip(), result.stderr
    return {h["host"]: h for h in json.loads(result.stdout)["hosts"]}


def test_a_run_over_two_sites_and_the_controller_is_one_run(estate: Estate, tmp_path: Path) -> None:
    folder = marks_dir(tmp_path)
    run = estate.itops("fix", "test.mark", "lab", "-p", f"folder={folder}", "--ticket",
                       "INC-7001", "--json")  # fmt: skip
    assert run.returncode == 0, run.stdout + run.stderr + estate.worker_logs()
    hosts = by_host(run)
    assert list(hosts) == estate.hosts  # inventory order, every host once
    assert {h["outcome"] for h in hosts.values()} == {"fixed"}
    for name in estate.hosts:
        assert (folder / f"{name}.count").read_text() == "x\n"
    # the actions are in the one shared ledger, each with the site that ran it
    log = estate.itops("log", "--ticket", "INC-7001", "--json")
    assert log.returncode == 0, log.stderr
    records = [json.loads(line) for line in log.stdout.splitlines() if line.strip()]
    sites = {
        r["host"]: (r["data"] or {}).get("site") for r in records if r["kind"] == "action.finish"
    }
    assert sites == {
        **{name: "branch-a" for name in estate.hosts[:3]},
        **{name: "branch-b" for name in estate.hosts[3:5]},
        estate.hosts[5]: None,  # no site: run by the controller itself
    }
    verify = estate.itops("audit", "verify")
    assert verify.returncode == 0, verify.stdout + verify.stderr
    # the same per-host table as a local run
    table = estate.itops("fix", "test.mark", "lab", "-p", f"folder={folder}", "--check")
    assert table.returncode == 0, table.stdout + table.stderr
    for name in estate.hosts:
        assert re.search(rf"{name}\s.*already-ok", table.stdout), table.stdout


def test_exit_code_and_max_fail_percent_span_the_sites(estate: Estate, tmp_path: Path) -> None:
    folder = marks_dir(tmp_path)
    first = estate.hosts[0]  # branch-a
    run = estate.itops("fix", "test.mark", "lab", "-p", f"folder={folder}", "-p",
                       f"fail_host={first}", "--ticket", "INC-7002", "--serial", "2",
                       "--max-fail-percent", "0", "--json")  # fmt: skip
    assert run.returncode == 1, run.stdout + run.stderr
    hosts = by_host(run)
    assert hosts[first]["outcome"] == "failed"
    assert hosts[estate.hosts[1]]["outcome"] == "fixed"
    for name in estate.hosts[2:]:  # later batches: recorded, never run
        assert hosts[name]["outcome"] == "skipped", hosts[name]
        assert "max-fail-percent" in str(hosts[name]["message"])
        assert not (folder / name).exists()
    check = estate.itops("fix", "test.mark", "lab", "-p", f"folder={folder}", "--check")
    assert check.returncode == 4, check.stdout + check.stderr


def test_worker_list_shows_sites_workers_heartbeats_and_queues(estate: Estate) -> None:
    listed = estate.itops("worker", "list", "--json")
    assert listed.returncode == 0, listed.stderr
    rows = {r["site"]: r for r in json.loads(listed.stdout)}
    assert set(rows) == {"branch-a", "branch-b"}
    for row in rows.values():
        assert str(row["worker"]).startswith(f"itops-{row['site']}-")
        assert row["heartbeat_age"] is not None and 0 <= row["heartbeat_age"] < 10
        assert row["queue_depth"] == 0
    table = estate.itops("worker", "list")
    assert "branch-a" in table.stdout and "HEARTBEAT" in table.stdout


def test_a_site_without_a_live_worker_fails_fast(estate: Estate, tmp_path: Path) -> None:
    folder = marks_dir(tmp_path)
    [proc] = estate.workers["branch-b"]
    estate.stop(proc)
    try:
        started = time.monotonic()
        run = estate.itops("fix", "test.mark", "lab", "-p", f"folder={folder}", "--ticket",
                           "INC-7003")  # fmt: skip
        took = time.monotonic() - started
        assert run.returncode == 3, run.stdout + run.stderr
        assert "no worker for site branch-b" in run.stderr
        assert took < 15
        assert not list(folder.iterdir())  # nothing ran, on any site
        listed = estate.itops("worker", "list", "--json")
        rows = [r for r in json.loads(listed.stdout) if r["site"] == "branch-b"]
        assert rows and rows[0]["worker"] is None
    finally:
        estate.start_worker("branch-b")
        estate.wait_live("branch-b")


def test_a_site_is_live_when_another_sites_worker_answers_first(estate: Estate) -> None:
    """Only branch-a wanted, both sites' workers live: branch-b's worker answers the inspect
    first (branch-a's is stopped for 0.3 s, well within the ping timeout). branch-a must still
    be seen (it was reported as having no worker: the inspect stopped at the first reply of
    any worker, its limit being the wanted sites' consumer count). A worker stopped for the
    whole ping is not live, whatever RabbitMQ still counts as its consumer."""
    import threading

    from toolkit.workers import WorkerSettings
    from toolkit.workers.celeryapp import make_celery
    from toolkit.workers.dispatch import live_workers

    settings = WorkerSettings.of(Workspace.load(estate.root))
    celery = make_celery(settings)
    [worker] = estate.workers["branch-a"]
    try:
        for _ in range(3):
            os.kill(worker.pid, signal.SIGSTOP)
            resume = threading.Timer(0.3, os.kill, (worker.pid, signal.SIGCONT))
            resume.start()
            try:
                live = live_workers(celery, settings, ["branch-a"])
            finally:
                resume.join()
            assert live.get("branch-a"), live
            assert "branch-b" not in live, live  # not asked for
        os.kill(worker.pid, signal.SIGSTOP)  # stopped past the ping: no worker for branch-a
        try:
            started = time.monotonic()
            live = live_workers(celery, settings, ["branch-a", "branch-b"])
            took = time.monotonic() - started
        finally:
            os.kill(worker.pid, signal.SIGCONT)
        assert not live.get("branch-a") and live.get("branch-b"), live
        assert took < 10 * settings.ping_timeout, took
    finally:
        os.kill(worker.pid, signal.SIGCONT)
        celery.close()
    # and end to end, many runs in a row on branch-a's hosts only: each finds its worker
    for i in range(5):
        run = estate.itops("fix", "test.mark", "branch-a", "-p", "folder=/nonexistent",
                           "--check", "--ticket", f"INC-7010{i}")  # fmt: skip
        assert "no worker" not in run.stderr, run.stderr
        assert run.returncode == 4, run.stdout + run.stderr


def test_a_worker_killed_mid_batch_never_applies_twice(estate: Estate, tmp_path: Path) -> None:
    folder = marks_dir(tmp_path)
    [first] = estate.workers["branch-a"]
    a_hosts = estate.hosts[:3]
    run = subprocess.Popen(
        [sys.executable, "-m", "toolkit", "--workspace", str(estate.root), "fix", "test.mark",
         "branch-a", "-p", f"folder={folder}", "-p", "seconds=3", "--ticket", "INC-7004",
         "--json"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=estate.env,
        stdin=subprocess.DEVNULL,
    )  # fmt: skip
    try:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:  # every host's apply under way on the first worker
            log = estate.itops("log", "--ticket", "INC-7004", "--json").stdout
            if log.count('"action.begin"') >= 3:
                break
            time.sleep(0.2)
        time.sleep(1.0)
        estate.stop(first, signal.SIGKILL)
        estate.start_worker("branch-a")  # the job is delivered again, to this one
        out, err = run.communicate(timeout=120)
        estate.wait_live("branch-a")  # (the next tests need the site's worker)
    finally:
        if run.poll() is None:
            run.kill()
    result = subprocess.CompletedProcess(run.args, run.returncode, out, err)
    hosts = by_host(result)
    assert set(hosts) == set(a_hosts), out + err
    for name in a_hosts:
        host = hosts[name]
        # a true outcome: what the re-check found; never re-applied
        assert host["outcome"] in ("fixed", "failed"), host
        assert "re-checked, not re-applied" in str(host["message"]), host
        if host["outcome"] == "failed":
            assert host["error"] == "worker-lost"
        count = folder / f"{name}.count"
        time.sleep(0)  # (the killed worker's remote command may still finish: once)
        assert not count.exists() or count.read_text() == "x\n"
    time.sleep(3.5)
    for name in a_hosts:
        count = folder / f"{name}.count"
        assert not count.exists() or count.read_text() == "x\n"
    assert result.returncode in (0, 1)
    verify = estate.itops("audit", "verify")
    assert verify.returncode == 0, verify.stdout + verify.stderr
    # no action left open: each begin of the lost job was finished by the redelivery
    opened = estate.itops("log", "--ticket", "INC-7004", "--outcome", "open", "--json")
    assert a_hosts[0] not in opened.stdout, opened.stdout


class LedgerLink:
    """A TCP relay between one worker and the real PostgreSQL server, cut at will: `cut()`
    refuses new connections and ends the worker's sessions on the server (pg_terminate_backend,
    by the application_name the worker connects with); `mend()` lets connections through again."""

    def __init__(self, ledger_url: str, app_name: str) -> None:
        import socket
        import threading
        from urllib.parse import urlsplit

        parts = urlsplit(ledger_url)
        self.target = (parts.hostname or "127.0.0.1", parts.port or 5432)
        self.app_name = app_name
        self.server = socket.create_server(("127.0.0.1", 0))
        port = self.server.getsockname()[1]
        self.url = ledger_url.replace(parts.netloc, f"{parts.username}@127.0.0.1:{port}", 1)
        self.broken = threading.Event()
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        import socket
        import threading

        while True:
            try:
                client, _ = self.server.accept()
            except OSError:
                return
            if self.broken.is_set():
                client.close()
                continue
            try:
                upstream = socket.create_connection(self.target, timeout=5)
            except OSError:
                client.close()
                continue
            upstream.settimeout(None)
            for a, b in ((client, upstream), (upstream, client)):
                threading.Thread(target=self._pipe, args=(a, b), daemon=True).start()

    @staticmethod
    def _pipe(src: object, dst: object) -> None:
        import socket

        assert isinstance(src, socket.socket) and isinstance(dst, socket.socket)
        try:
            while data := src.recv(65536):
                dst.sendall(data)
        except OSError:
            pass
        finally:
            for end in (src, dst):
                with contextlib.suppress(OSError):
                    end.shutdown(socket.SHUT_RDWR)
                end.close()

    def cut(self) -> int:
        import psycopg

        self.broken.set()
        with psycopg.connect(PG_URL.replace("+psycopg", ""), autocommit=True) as conn:
            ended = conn.execute(
                "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity "
                "WHERE application_name = %s",
                (self.app_name,),
            ).fetchone()
        return int(ended[0]) if ended else 0

    def mend(self) -> None:
        self.broken.clear()

    def close(self) -> None:
        self.broken.set()
        self.server.close()


def test_a_worker_whose_ledger_connection_is_cut_never_disagrees_with_its_hosts(
    estate: Estate,
) -> None:
    """Issue #18's chaos: branch-a's worker reaches the ledger through a link the test cuts.
    One host at a time (--forks 1), the first applying for 4 s: the cut comes mid-apply and
    lasts until the second host's begin record could not be written. The first host's finish
    could not be written either: it is never reported fixed without a record — once the
    ledger is back, the job re-checks it read-only and finishes its open action with what it
    finds. The second host, without a begin record, is never contacted. The third runs once
    the link is mended. The table and exit code say so; nothing is left open; the chain
    verifies."""
    folder = marks_dir(Path("/tmp"))
    a_hosts = estate.hosts[:3]
    app_name = f"itops-chaos-{secrets.token_hex(3)}"
    link = LedgerLink(estate.ledger_url, app_name)
    [usual] = estate.workers["branch-a"]
    estate.stop(usual)
    worker = estate.start_worker(
        "branch-a", env={**estate.env, "ITOPS_LEDGER_URL": link.url, "PGAPPNAME": app_name}
    )
    itops_log = estate.root / ".itops" / "itops.log"
    run: subprocess.Popen[str] | None = None
    try:
        estate.wait_live("branch-a")
        seen_log = itops_log.stat().st_size if itops_log.exists() else 0
        run = subprocess.Popen(
            [sys.executable, "-m", "toolkit", "--workspace", str(estate.root), "fix",
             "test.mark", "branch-a", "-p", f"folder={folder}", "-p", "seconds=4",
             "--forks", "1", "--ticket", "INC-7011", "--json"],
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=estate.env,
            stdin=subprocess.DEVNULL,
        )  # fmt: skip
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:  # the first host begun (and applying)
            if '"action.begin"' in estate.itops("log", "--ticket", "INC-7011", "--json").stdout:
                break
            time.sleep(0.2)
        time.sleep(1.0)
        assert link.cut() >= 1  # the worker's writer connection, at least
        refused = f"{a_hosts[1]}: the ledger could not record the action"
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            if refused in itops_log.read_bytes()[seen_log:].decode(errors="replace"):
                break
            time.sleep(0.1)
        else:
            raise AssertionError(f"the second host's begin never failed: {estate.worker_logs()}")
        link.mend()
        out, err = run.communicate(timeout=180)
    finally:
        if run is not None and run.poll() is None:
            run.kill()
        link.mend()
        estate.stop(worker)
        link.close()
        estate.start_worker("branch-a")
        estate.wait_live("branch-a")
    result = subprocess.CompletedProcess(run.args, run.returncode, out, err)
    hosts = by_host(result)
    first, second, third = (hosts[name] for name in a_hosts)
    # the first: fixed on the host, and so in the ledger (its action finished by the re-check)
    assert first["outcome"] == "fixed", first
    assert "re-checked, not re-applied" in str(first["message"]), first
    assert first["action_id"], first
    assert (folder / f"{a_hosts[0]}.count").read_text() == "x\n"
    # the second: no begin record, never contacted
    assert second["outcome"] == "failed" and second["error"] == "ledger-unavailable", second
    assert "not run" in str(second["message"]), second
    assert not (folder / a_hosts[1]).exists() and not (folder / f"{a_hosts[1]}.count").exists()
    # the third: run once the ledger was back
    assert third["outcome"] == "fixed", third
    assert (folder / f"{a_hosts[2]}.count").read_text() == "x\n"
    assert result.returncode == 1, out + err
    records = [
        json.loads(line)
        for line in estate.itops("log", "--ticket", "INC-7011", "--json").stdout.splitlines()
        if line.strip()
    ]
    begun = {r["host"] for r in records if r["kind"] == "action.begin"}
    assert a_hosts[1] not in begun and {a_hosts[0], a_hosts[2]} <= begun
    finished = {
        r["action_id"]: r["outcome"]
        for r in records
        if r["kind"] == "action.finish" and not (r["data"] or {}).get("recheck")
    }
    assert finished.get(first["action_id"]) == "fixed", records
    opened = estate.itops("log", "--ticket", "INC-7011", "--outcome", "open", "--json")
    assert opened.returncode == 0, opened.stderr
    assert not any(name in opened.stdout for name in a_hosts), opened.stdout
    verify = estate.itops("audit", "verify")
    assert verify.returncode == 0, verify.stdout + verify.stderr


def test_ctrl_c_revokes_queued_jobs_and_stops_running_ones(estate: Estate) -> None:
    folder = marks_dir(Path("/tmp"))
    config = estate.root / "itops.toml"
    before = config.read_text()
    # one host per job: branch-a's worker runs two jobs at once, its third waits in the queue
    config.write_text(before.replace("jobs = 2\n", "jobs = 2\njob_hosts = 1\n"))
    remote = estate.hosts[:5]
    try:
        run = subprocess.Popen(
            [sys.executable, "-m", "toolkit", "--workspace", str(estate.root), "fix",
             "test.mark", "branch-a:branch-b", "-p", f"folder={folder}", "-p", "seconds=20",
             "--ticket", "INC-7005", "--json"],
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=estate.env,
            stdin=subprocess.DEVNULL,
        )  # fmt: skip
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:  # four hosts applying, one job still queued
            log = estate.itops("log", "--ticket", "INC-7005", "--json").stdout
            if log.count('"action.begin"') >= 4:
                break
            time.sleep(0.2)
        time.sleep(1.0)
        interrupted = time.monotonic()
        run.send_signal(signal.SIGINT)
        out, err = run.communicate(timeout=60)
        took = time.monotonic() - interrupted
    finally:
        config.write_text(before)
        if run.poll() is None:
            run.kill()
    assert run.returncode == 130, out + err
    assert took < 15, took
    report = json.loads(out)
    assert report["interrupted"] is True
    outcomes = {h["host"]: h for h in report["hosts"]}
    running = [h for h in remote if h in outcomes]
    assert len(running) == 4, report  # the four that had started, each with its result
    for name in running:
        assert outcomes[name]["outcome"] == "failed", outcomes[name]
        assert "interrupted" in str(outcomes[name]["message"]), outcomes[name]
    [queued] = [h for h in remote if h not in outcomes]
    assert queued in report["never_started"]
    time.sleep(21)  # the remote commands were stopped: no apply ever completed
    assert not list(folder.iterdir())
    log = estate.itops("log", "--ticket", "INC-7005", "--json").stdout
    assert queued not in log  # the revoked job never ran: nothing recorded for its host


def test_redis_as_the_broker_runs_the_same_jobs(estate: Estate) -> None:
    """A second workspace on the same lab hosts, its workers on Redis (a database of its own,
    emptied after; kombu prefixes its broadcast channels with the database number)."""
    folder = marks_dir(Path("/tmp"))
    with on_redis(estate, "redis") as (_, other):
        for site in ("branch-a", "branch-b"):
            other.start_worker(site)
        for site in ("branch-a", "branch-b"):
            other.wait_live(site)
        run = other.itops("fix", "test.mark", "lab", "-p", f"folder={folder}", "--ticket",
                          "INC-7006", "--json")  # fmt: skip
        assert run.returncode == 0, run.stdout + run.stderr + other.worker_logs()
        hosts = by_host(run)
        assert list(hosts) == estate.hosts
        assert {h["outcome"] for h in hosts.values()} == {"fixed"}
        log = other.itops("log", "--ticket", "INC-7006", "--json").stdout
        finishes = [json.loads(line) for line in log.splitlines() if '"action.finish"' in line]
        assert {(r["data"] or {}).get("site") for r in finishes} == {"branch-a", "branch-b", None}


def test_a_site_whose_last_worker_dies_mid_run_fails_instead_of_hanging(
    estate: Estate,
) -> None:
    folder = marks_dir(Path("/tmp"))
    config = estate.root / "itops.toml"
    before = config.read_text()
    config.write_text(before.replace("jobs = 2\n", "jobs = 2\nlost_after = 3\n"))
    [worker] = estate.workers["branch-b"]
    b_hosts = estate.hosts[3:5]
    try:
        run = subprocess.Popen(
            [sys.executable, "-m", "toolkit", "--workspace", str(estate.root), "fix",
             "test.mark", "branch-b", "-p", f"folder={folder}", "-p", "seconds=15",
             "--ticket", "INC-7007", "--json"],
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=estate.env,
            stdin=subprocess.DEVNULL,
        )  # fmt: skip
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            log = estate.itops("log", "--ticket", "INC-7007", "--json").stdout
            if log.count('"action.begin"') >= 2:
                break
            time.sleep(0.2)
        estate.stop(worker, signal.SIGKILL)
        killed = time.monotonic()
        out, err = run.communicate(timeout=60)
        took = time.monotonic() - killed
    finally:
        config.write_text(before)
        if run.poll() is None:
            run.kill()
    assert run.returncode == 1, out + err
    assert took < 20, took
    hosts = by_host(subprocess.CompletedProcess(run.args, run.returncode, out, err))
    for name in b_hosts:
        assert hosts[name]["outcome"] == "failed" and hosts[name]["error"] == "no-worker"
        assert "no worker for site branch-b" in str(hosts[name]["message"])
    # a worker that comes up later takes the job again: it re-checks the actions left open
    # (never re-applies) and starts nothing new, since the controller recorded it cancelled
    estate.start_worker("branch-b")
    estate.wait_live("branch-b")
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        log = estate.itops("log", "--ticket", "INC-7007", "--json").stdout
        if log.count('"action.finish"') >= 4:  # the two re-checks and the two settled actions
            break
        time.sleep(0.5)
    records = [json.loads(line) for line in log.splitlines() if line.strip()]
    assert any(r["kind"] == "run.jobs-cancelled" for r in records)
    settled = [r for r in records if r["kind"] == "action.finish" and not r["data"].get("recheck")]
    assert {r["host"] for r in settled} == set(b_hosts), log
    for r in settled:
        assert "re-checked, not re-applied" in r["data"]["message"]
    time.sleep(16)  # whatever the killed worker's commands did, each host was applied once at most
    for name in b_hosts:
        count = folder / f"{name}.count"
        assert not count.exists() or count.read_text() == "x\n"


def test_the_broker_stopped_mid_run_stops_the_cli_cleanly(estate: Estate) -> None:
    """A private redis-server as broker, killed mid-run: the CLI says so and exits; nothing was
    applied without a begin record, and the chain verifies."""
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    broker = subprocess.Popen(
        ["redis-server", "--bind", "127.0.0.1", "--port", str(port), "--save", "",
         "--appendonly", "no"],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip
    other = estate.on_broker(f"broker-{port}", f"redis://127.0.0.1:{port}/0")
    folder = marks_dir(Path("/tmp"))
    try:
        time.sleep(0.5)
        other.start_worker("branch-a")
        other.wait_live("branch-a")
        run = subprocess.Popen(
            [sys.executable, "-m", "toolkit", "--workspace", str(other.root), "fix", "test.mark",
             "branch-a", "-p", f"folder={folder}", "-p", "seconds=5", "--ticket", "INC-7008"],
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=estate.env,
            stdin=subprocess.DEVNULL,
        )  # fmt: skip
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            log = other.itops("log", "--ticket", "INC-7008", "--json").stdout
            if log.count('"action.begin"') >= 3:
                break
            time.sleep(0.2)
        broker.kill()
        broker.wait(10)
        stopped = time.monotonic()
        out, err = run.communicate(timeout=120)
        took = time.monotonic() - stopped
        assert run.returncode == 3, out + err
        assert "lost the broker" in err and "branch-a" in err, err
        assert "Traceback" not in err
        assert took < 60, took
        time.sleep(6)  # the worker finishes its hosts into the ledger even without its broker
        records = [
            json.loads(line)
            for line in other.itops("log", "--ticket", "INC-7008", "--json").stdout.splitlines()
        ]
        begun = {r["host"] for r in records if r["kind"] == "action.begin"}
        for name in estate.hosts[:3]:  # nothing applied without a begin record
            assert (folder / name).exists() <= (name in begun)
        verify = other.itops("audit", "verify")
        assert verify.returncode == 0, verify.stdout + verify.stderr
    finally:
        if run.poll() is None:
            run.kill()
        for procs in list(other.workers.values()):
            for proc in list(procs):
                other.stop(proc)
        if broker.poll() is None:
            broker.kill()


def test_remote_hosts_reach_the_run_observers_as_local_ones_do(
    estate: Estate, monkeypatch: pytest.MonkeyPatch
) -> None:
    """What the progress bar sees: every host once, those of the sites too (their workers send
    progress through the result backend)."""
    from toolkit.app import App
    from toolkit.run.events import HostRun, RunObserver
    from toolkit.run.results import HostResult
    from toolkit.run.service import RunService, plan
    from toolkit.workers.dispatch import run_distributed

    seen: list[tuple[str, str]] = []

    class Seen(RunObserver):
        def host_done(self, run: HostRun, result: HostResult) -> None:
            seen.append((run.host.name, str(result.outcome)))

    monkeypatch.setenv("ITOPS_LEDGER_URL", estate.ledger_url)
    app = App(estate.root)
    try:
        folder = marks_dir(Path("/tmp"))
        request = plan(app, "test.mark", "lab", {"folder": str(folder)}, check_only=True)
        with RunService(app, observers=[Seen()]) as service:
            ran = run_distributed(service, request)
    finally:
        app.close()
    assert ran.report.exit_code == 4
    assert sorted(seen) == sorted((h, "would-fix") for h in estate.hosts)


def test_a_scheduled_task_runs_on_the_sites_workers_too(estate: Estate) -> None:
    folder = marks_dir(Path("/tmp"))
    added = estate.itops("schedule", "add", "marks-nightly", "--task", "test.mark", "--targets",
                         "lab", "--cron", "0 3 * * *", "-p", f"folder={folder}")  # fmt: skip
    assert added.returncode == 0, added.stdout + added.stderr
    run = estate.itops("schedule", "run", "marks-nightly")
    assert run.returncode == 0, run.stdout + run.stderr + estate.worker_logs()
    for name in estate.hosts:
        assert (folder / f"{name}.count").read_text() == "x\n"
    log = estate.itops("log", "--json", "--task", "test.mark").stdout
    records = [json.loads(line) for line in log.splitlines() if line.strip()]
    ran = {
        r["host"]: (r["data"] or {}).get("site")
        for r in records
        if r["kind"] == "action.finish" and str(r["ticket"]).startswith("CHG-")
    }
    assert ran[estate.hosts[0]] == "branch-a" and ran[estate.hosts[3]] == "branch-b"
    assert ran[estate.hosts[5]] is None


def test_a_secret_made_on_a_worker_reaches_the_engineer_sealed(estate: Estate) -> None:
    """password.reset on a site host, its password generated on the worker: the engineer gets
    it once at the controller, while the broker and the result backend (Redis here, which keeps
    results where they can be read) only ever hold it sealed to the run's key; nor is it in the
    ledger or the worker's log."""
    user = f"itw-{secrets.token_hex(3)}"
    subprocess.run(["useradd", "-M", "-s", "/usr/sbin/nologin", user], check=True)
    site_host = estate.hosts[3]  # branch-b
    try:
        with on_redis(estate, "redis-secret") as (db, other):
            other.start_worker("branch-b")
            other.wait_live("branch-b")
            run = other.itops("fix", "password.reset", site_host, "-p", f"user={user}",
                              "--ticket", "INC-7020", "--json")  # fmt: skip
            assert run.returncode == 0, run.stdout + run.stderr + other.worker_logs()
            assert by_host(run)[site_host]["outcome"] == "fixed"
            said = rf"{site_host}: new password for {user} \(shown once, not recorded\): (\S+)"
            shown = re.search(said, run.stderr)
            assert shown, run.stderr
            password = shown.group(1)
            # it is the account's password now: the hash in /etc/shadow checks out
            from tests.integration.test_linux_password import password_is

            assert password_is(user, password)
            # nowhere in clear: the result backend and broker keys, the ledger, the worker's log
            redis = ["redis-cli", "-h", "127.0.0.1", "-n", str(db)]
            keys = subprocess.run([*redis, "--scan"], capture_output=True, text=True,
                                  check=True).stdout.split()  # fmt: skip
            assert any(k.startswith("celery-task-meta-") for k in keys), keys
            for key in keys:
                dump = subprocess.run([*redis, "--no-raw", "DUMP", key], capture_output=True,
                                      check=True).stdout  # fmt: skip
                assert password.encode() not in dump, key
            meta = [k for k in keys if k.startswith("celery-task-meta-")]
            stored = subprocess.run([*redis, "GET", meta[-1]], capture_output=True, text=True,
                                    check=True).stdout  # fmt: skip
            assert '"sealed"' in stored and user not in stored.split('"handovers"')[1], stored
            log = other.itops("log", "--ticket", "INC-7020", "--json")
            assert log.returncode == 0 and password not in log.stdout
            assert password not in other.worker_logs()
    finally:
        subprocess.run(["userdel", user], capture_output=True)


def records(estate: Estate, *args: str) -> list[dict[str, Any]]:
    log = estate.itops("log", "--json", *args)
    assert log.returncode == 0, log.stderr
    return [json.loads(line) for line in log.stdout.splitlines() if line.strip()]


def test_every_runbook_step_of_a_site_host_runs_on_the_sites_worker(estate: Estate) -> None:
    folder = marks_dir(Path("/tmp"))
    site_host, other, hq_host = estate.hosts[0], estate.hosts[3], estate.hosts[5]  # a, b, none
    run = estate.itops("runbook", "run", "marks", f"{site_host}:{other}:{hq_host}", "-p",
                       f"folder={folder}", "--ticket", "INC-7101", "--json")  # fmt: skip
    assert run.returncode == 0, run.stdout + run.stderr + estate.worker_logs()
    report = json.loads(run.stdout)
    assert [s["name"] for s in report["steps"]] == ["look", "mark"]
    assert {h["host"]: h["outcome"] for h in report["steps"][1]["hosts"]} == {
        site_host: "fixed", other: "fixed", hq_host: "fixed"}  # fmt: skip
    assert (folder / f"{site_host}.count").read_text() == "x\n"
    # the ledger: each step's action on the site host was run by a job of branch-a's worker,
    # tagged with the runbook's run; the host without a site by the controller
    ran = {
        (r["host"], r["data"]["step"]): (r["data"].get("site"), r["data"].get("job"))
        for r in records(estate, "--ticket", "INC-7101")
        if r["kind"] == "action.finish"
    }
    assert set(ran) == {(h, s) for h in (site_host, other, hq_host) for s in ("look", "mark")}
    for step in ("look", "mark"):
        site, job = ran[(site_host, step)]
        assert site == "branch-a" and job, ran
        assert ran[(other, step)][0] == "branch-b" and ran[(other, step)][1] != job
        assert ran[(hq_host, step)] == (None, None)
    assert ran[(site_host, "look")][1] != ran[(site_host, "mark")][1]  # one job per step
    begins = [r for r in records(estate, "--ticket", "INC-7101") if r["kind"] == "action.begin"]
    assert {r["data"]["run_id"] for r in begins} == {report["run_id"]}
    verify = estate.itops("audit", "verify")
    assert verify.returncode == 0, verify.stdout + verify.stderr


def test_a_scheduled_runbook_runs_its_site_hosts_on_their_workers(estate: Estate) -> None:
    folder = marks_dir(Path("/tmp"))
    hosts = {estate.hosts[1]: "branch-a", estate.hosts[4]: "branch-b"}
    added = estate.itops("schedule", "add", "marks-runbook", "--runbook", "marks", "--targets",
                         ":".join(hosts), "--cron", "0 4 * * *", "-p",
                         f"folder={folder}")  # fmt: skip
    assert added.returncode == 0, added.stdout + added.stderr
    run = estate.itops("schedule", "run", "marks-runbook")
    assert run.returncode == 0, run.stdout + run.stderr + estate.worker_logs()
    for name, site in hosts.items():
        assert (folder / f"{name}.count").read_text() == "x\n"
        finished = [
            r for r in records(estate, "--host", name)
            if r["kind"] == "action.finish" and (r["data"] or {}).get("runbook") == "marks"
            and str(r["ticket"]).startswith("CHG-")
        ]  # fmt: skip
        assert {r["data"]["step"] for r in finished} == {"look", "mark"}
        assert {r["data"]["site"] for r in finished} == {site}


def test_backup_run_backs_up_a_site_device_on_its_worker(estate: Estate) -> None:
    run = estate.itops("backup", "run", f"{SITE_SWITCH}:{OTHER_SWITCH}:{HQ_SWITCH}", "--ticket",
                       "CHG-7102", "--json", timeout=240)  # fmt: skip
    assert run.returncode == 0, run.stdout + run.stderr + estate.worker_logs()
    report = json.loads(run.stdout)
    outcomes = {h["host"]: h["outcome"] for h in report["hosts"]}
    assert outcomes == dict.fromkeys((SITE_SWITCH, OTHER_SWITCH, HQ_SWITCH), "fixed"), report
    finished = {
        r["host"]: r["data"]
        for r in records(estate, "--ticket", "CHG-7102")
        if r["kind"] == "action.finish"
    }
    assert finished[SITE_SWITCH]["site"] == "branch-a" and finished[SITE_SWITCH]["job"]
    assert finished[OTHER_SWITCH]["site"] == "branch-b"
    assert "site" not in finished[HQ_SWITCH]
    # each side commits what it backed up (the worker: in its workspace's repository — here
    # the same folder), and says so in the run's notes
    commits = [n for n in report["notes"] if n.startswith("backup: commit")]
    assert len(commits) == 3 and any(SITE_SWITCH in n for n in commits), report["notes"]
    history = estate.itops("backup", "history", SITE_SWITCH)
    assert "CHG-7102" in history.stdout, history.stdout + history.stderr


def test_a_playbook_on_site_hosts_is_refused_naming_the_sites(estate: Estate) -> None:
    run = estate.itops("playbook", "run", "sample", "lab", "--ticket", "CHG-7103")
    assert run.returncode != 0, run.stdout + run.stderr
    assert "in site branch-a" in run.stderr and "in site branch-b" in run.stderr, run.stderr
    assert "playbooks run only from the controller" in run.stderr
    assert not [r for r in records(estate) if r["ticket"] == "CHG-7103"]  # no ticket opened
    # the hosts without a site still run it (refused or not for ansible's own reasons, never
    # for a site)
    local = estate.itops("playbook", "run", "sample", estate.hosts[5], "--check")
    assert "site" not in local.stderr, local.stderr
    scheduled = estate.itops("schedule", "add", "sample-nightly", "--playbook", "sample",
                             "--targets", "lab", "--cron", "0 5 * * *")  # fmt: skip
    assert scheduled.returncode != 0 and "in site branch-a" in scheduled.stderr, scheduled.stderr


def test_one_desk_note_per_run_names_the_hosts_its_workers_ran(
    estate: Estate, tmp_path: Path
) -> None:
    """A run under a desk's ticket writes ONE note, on the controller, from the whole report:
    the hosts the sites' workers ran are in it (the workers write none)."""
    from tests.fake_servicenow import FakeServiceNow
    from tests.fakedesk import tls_for

    password = "desk-pw-Canary-18"
    tls = tls_for(tmp_path / "tls")
    fake = FakeServiceNow(user="itops", password=password, tls=tls).start()
    try:
        desk = estate.on_broker("ws-desk", f"amqp://guest:guest@127.0.0.1:5672/{estate.vhost}")
        with open(desk.root / "itops.toml", "a") as f:
            f.write(
                f'\n[itsm]\nsystem = "servicenow"\nurl = "{fake.url}"\nuser = "itops"\n'
                f'password = "env:DESK_PASSWORD"\nca_bundle = "{tls.ca}"\ntimeout = 5\n'
            )
        desk.env = {**estate.env, "DESK_PASSWORD": password, "ITOPS_ITSM_DELIVER": "wait"}
        ticket = fake.new_incident("marks missing", priority="3", category="hardware")
        folder = marks_dir(tmp_path)
        run = desk.itops("fix", "test.mark", "lab", "-p", f"folder={folder}", "--ticket", ticket)
        assert run.returncode == 0, run.stdout + run.stderr + estate.worker_logs()
        assert f"{ticket}: note delivered" in run.stderr, run.stderr
        [note] = fake.work_notes(ticket)
        assert f"{len(estate.hosts)} host(s): {len(estate.hosts)} fixed" in note, note
        for name in estate.hosts:
            assert f"- {name}: fixed" in note, note
        assert password not in run.stdout + run.stderr + note
    finally:
        fake.stop()


def test_a_sites_backups_reach_the_controller_through_the_shared_remote(
    estate: Estate, tmp_path: Path
) -> None:
    """The worker of branch-a runs from a workspace of its own (as at a real site): its backup
    of the site's switch is committed there and pushed to the shared remote, and the controller's
    `backup history` shows it although its own repository never ran that backup."""
    url = tmp_path / "configs.git"
    subprocess.run(["git", "init", "-q", "--bare", str(url)], check=True)
    with on_redis(estate, "ctl", "site") as (_, controller, site):
        for ws in (controller, site):
            shared = ws.itops("backup", "remote", str(url))
            assert shared.returncode == 0 and str(url) in shared.stdout, shared.stderr
        site.start_worker("branch-a")
        controller.wait_live("branch-a")
        run = controller.itops("backup", "run", SITE_SWITCH, "--ticket", "CHG-7110", "--json",
                               timeout=240)  # fmt: skip
        assert run.returncode == 0, run.stdout + run.stderr + site.worker_logs()
        notes = json.loads(run.stdout)["notes"]
        assert any(n.startswith("backup: pushed to") for n in notes), notes
        assert any(str(site.root) in n for n in notes if n.startswith("backup: commit")), notes
        history = controller.itops("backup", "history", SITE_SWITCH)
        assert "CHG-7110" in history.stdout, history.stdout + history.stderr
        diff = controller.itops("backup", "diff", SITE_SWITCH)
        assert diff.returncode == 0 and "hostname" in diff.stdout, diff.stdout + diff.stderr
