"""Faults, each a test: host keys, credentials, unreachable and hung hosts, bad input, kill -9."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from tests.integration.conftest import LabEnv
from toolkit.lab import ed25519_keypair
from toolkit.ledger import Ledger

pytestmark = pytest.mark.integration

AUTH_LINE = ("publickey", "password", "keyboard-interactive", "Accepted", "Failed")


def lab_known_hosts(lab: LabEnv, skip: str = "") -> str:
    lines = (lab.lab.dir / "known_hosts").read_text().splitlines(keepends=True)
    return "".join(line for line in lines if not (skip and line.endswith(f":{skip}\n")))


def auth_lines(log: str) -> int:
    return sum(1 for line in log.splitlines() if any(word in line for word in AUTH_LINE))


def report(result: subprocess.CompletedProcess[str]) -> dict[str, dict[str, object]]:
    return {h["host"]: h for h in json.loads(result.stdout)["hosts"]}


def test_unknown_host_key_is_refused_before_any_credential_is_sent(lab: LabEnv) -> None:
    ws = lab.other_workspace("stranger", known_hosts=lab_known_hosts(lab, skip="lab-01"))
    log_before = lab.sshd_log()
    result = lab.itops("fix", "printer.clear-queue", "lab", "--check", "--json", workspace=ws)
    hosts = report(result)
    assert hosts["lab-01"]["outcome"] == "unreachable"
    assert hosts["lab-01"]["error"] == "host-key-unknown"
    assert all(hosts[h]["outcome"] != "unreachable" for h in ("lab-02", "lab-03", "lab-04"))
    assert result.returncode == 3
    new_log = lab.sshd_log_settled(log_before, closed=3)
    # the three trusted hosts authenticated; lab-01 was never even contacted
    assert "on 127.1.0.1 port" not in new_log


def test_a_revoked_host_key_is_not_trusted_even_where_another_file_pins_it(lab: LabEnv) -> None:
    # The workspace pins lab-01's key; a second known_hosts file (here the same one, as a user's
    # ~/.ssh/known_hosts would be read too) marks it @revoked: revocation wins, nothing is sent.
    pinned = next(
        line for line in lab_known_hosts(lab).splitlines() if line.startswith("[127.1.0.1]:")
    )
    ws = lab.other_workspace("revoked", known_hosts=lab_known_hosts(lab) + f"@revoked {pinned}\n")
    log_before = lab.sshd_log()
    result = lab.itops("fix", "printer.clear-queue", "lab", "--check", "--json", workspace=ws)
    hosts = report(result)
    assert hosts["lab-01"]["outcome"] == "unreachable"
    assert hosts["lab-01"]["error"] == "host-key-unknown"
    assert "revoked" in str(hosts["lab-01"]["message"])
    assert all(hosts[h]["outcome"] != "unreachable" for h in ("lab-02", "lab-03", "lab-04"))
    assert "on 127.1.0.1 port" not in lab.sshd_log_settled(log_before, closed=3)


def test_changed_host_key_is_refused_after_key_exchange_without_authenticating(lab: LabEnv) -> None:
    _, wrong = ed25519_keypair("impostor")
    port = lab.state.port
    known = (
        lab_known_hosts(lab, skip="lab-02") + f"[127.1.0.2]:{port} {' '.join(wrong.split()[:2])}\n"
    )
    ws = lab.other_workspace("mitm", known_hosts=known)
    before = lab.sshd_log()
    result = lab.itops("fix", "printer.clear-queue", "lab-02", "--check", "--json", workspace=ws)
    host = report(result)["lab-02"]
    assert host["outcome"] == "unreachable" and host["error"] == "host-key-mismatch"
    assert "interception" in str(host["message"])
    new = lab.sshd_log_settled(before, closed=1)
    assert "on 127.1.0.2 port" in new  # it did connect (key exchange) …
    assert auth_lines(new) == 0  # … and never offered a key or a password


def test_trust_pins_a_key_only_when_confirmed_and_records_it(lab: LabEnv) -> None:
    ws = lab.other_workspace("newcomer", known_hosts=lab_known_hosts(lab, skip="lab-03"))
    wrong = lab.itops(
        "inventory", "trust", "lab-03", "--fingerprint", "SHA256:not-it", workspace=ws
    )
    assert wrong.returncode == 2 and "presented SHA256:" in wrong.stderr
    unconfirmed = lab.itops("inventory", "trust", "lab-03", workspace=ws)
    assert unconfirmed.returncode == 2 and "--fingerprint SHA256:" in unconfirmed.stderr
    fingerprint = unconfirmed.stderr.split("--fingerprint ")[-1].split()[0]
    assert fingerprint in unconfirmed.stdout  # shown in the table first
    pinned = lab.itops("inventory", "trust", "lab-03", "--fingerprint", fingerprint, workspace=ws)
    assert pinned.returncode == 0, pinned.stderr
    assert lab.itops("inventory", "check", "lab-03", workspace=ws).returncode == 0
    records = [json.loads(x) for x in lab.itops("log", "--json", workspace=ws).stdout.splitlines()]
    trusted = [r for r in records if r["kind"] == "host.trusted"]
    assert len(trusted) == 1 and trusted[0]["data"]["fingerprint"] == fingerprint
    again = lab.itops("inventory", "trust", "lab-03", "--yes", "--json", workspace=ws)
    assert [r["status"] for r in json.loads(again.stdout)] == ["trusted"]


def test_trust_takes_a_pattern_shows_every_fingerprint_and_asks_once(lab: LabEnv) -> None:
    ws = lab.other_workspace("newcomers", known_hosts="")
    check = lab.itops("inventory", "check", "lab", workspace=ws)
    assert check.returncode == 3 and "itops inventory trust 'lab'" in check.stderr
    unconfirmed = lab.itops("inventory", "trust", "lab", workspace=ws)
    assert unconfirmed.returncode == 2 and "--yes" in unconfirmed.stderr
    assert unconfirmed.stdout.count("SHA256:") == 4 and unconfirmed.stdout.count(" new") == 4
    # one confirmation for all four (a TTY answers the prompt; here --yes stands for it)
    pinned = lab.itops("inventory", "trust", "lab", "--yes", workspace=ws)
    assert pinned.returncode == 0 and "pinned 4 key(s)" in pinned.stderr + pinned.stdout
    assert lab.itops("inventory", "check", "lab", workspace=ws).returncode == 0
    records = [json.loads(x) for x in lab.itops("log", "--json", workspace=ws).stdout.splitlines()]
    assert sorted(r["host"] for r in records if r["kind"] == "host.trusted") == [
        "lab-01", "lab-02", "lab-03", "lab-04",
    ]  # fmt: skip


def test_wrong_credentials_are_auth_failed(lab: LabEnv, tmp_path: Path) -> None:
    key, _ = ed25519_keypair("stranger")
    key_file = tmp_path / "stranger_key"
    key_file.write_bytes(key)
    key_file.chmod(0o600)
    extra = f"lab:\n  hosts:\n    lab-04:\n      ansible_ssh_private_key_file: {key_file}\n"
    ws = lab.other_workspace("badkey", known_hosts=lab_known_hosts(lab), extra_inventory=extra)
    result = lab.itops("fix", "printer.clear-queue", "lab", "--check", "--json", workspace=ws)
    hosts = report(result)
    assert hosts["lab-04"]["outcome"] == "unreachable" and hosts["lab-04"]["error"] == "auth-failed"
    assert hosts["lab-01"]["outcome"] in ("already-ok", "would-fix")


def test_a_closed_port_and_a_silent_server_are_unreachable_within_the_timeout(lab: LabEnv) -> None:
    silent = socket.socket()
    silent.bind(("127.1.0.200", 0))
    silent.listen(8)  # accepts TCP, never says a word of SSH
    port = silent.getsockname()[1]
    extra = (
        "lab:\n  hosts:\n"
        f"    closed: {{ansible_host: 127.1.0.201, ansible_port: {lab.state.port}}}\n"
        f"    silent: {{ansible_host: 127.1.0.200, ansible_port: {port}}}\n"
    )
    known = lab_known_hosts(lab) + "".join(
        f"[127.1.0.{n}]:{p} {(lab.lab.dir / 'known_hosts').read_text().split()[1]} "
        f"{(lab.lab.dir / 'known_hosts').read_text().split()[2]}\n"
        for n, p in ((200, port), (201, lab.state.port))
    )
    ws = lab.other_workspace("flaky", known_hosts=known, extra_inventory=extra)
    started = time.monotonic()
    result = lab.itops(
        "fix",
        "printer.clear-queue",
        "lab",
        "--check",
        "--json",
        "--connect-timeout",
        "2",
        workspace=ws,
    )
    elapsed = time.monotonic() - started
    silent.close()
    hosts = report(result)
    assert hosts["closed"]["outcome"] == "unreachable" and "refused" in str(
        hosts["closed"]["message"]
    )
    assert hosts["silent"]["outcome"] == "unreachable" and "timed out" in str(
        hosts["silent"]["message"]
    )
    assert all(hosts[f"lab-0{n}"]["outcome"] != "unreachable" for n in range(1, 5))
    assert elapsed < 15 and float(hosts["silent"]["duration"]) < 5  # type: ignore[arg-type]


def test_a_hung_command_times_out_on_its_host_while_the_others_finish(lab: LabEnv) -> None:
    started = time.monotonic()
    result = lab.itops(
        "fix",
        "test.sleep",
        "lab",
        "--check",
        "-p",
        "slow_host=lab-02",
        "-p",
        "seconds=60",
        "--timeout",
        "2",
        "--json",
    )
    elapsed = time.monotonic() - started
    hosts = report(result)
    assert hosts["lab-02"]["outcome"] == "failed" and hosts["lab-02"]["error"] == "command-timeout"
    assert "timed out after 2s" in str(hosts["lab-02"]["message"])
    assert {hosts[h]["outcome"] for h in ("lab-01", "lab-03", "lab-04")} == {"already-ok"}
    assert elapsed < 20 and result.returncode == 1


@pytest.mark.parametrize(
    "value", ["$(touch /tmp/itops-canary-q)", "office;reboot", "a\nb", "-E", "`id`", "a b"]
)
def test_bad_parameter_values_are_refused_before_any_connection(lab: LabEnv, value: str) -> None:
    before_log = lab.sshd_log()
    before = lab.itops("log", "--json").stdout
    result = lab.itops(
        "fix", "printer.clear-queue", "lab", "-p", f"queue={value}", "--ticket", "INC-3000"
    )
    assert result.returncode == 2 and "parameter queue" in result.stderr
    assert lab.itops("log", "--json").stdout == before  # nothing recorded, so nothing ran
    assert lab.sshd_log() == before_log  # and no host was contacted
    assert not Path("/tmp/itops-canary-q").exists()


def test_free_text_reaches_the_host_literally(lab: LabEnv, tmp_path: Path) -> None:
    canary = tmp_path / "canary-file"
    note = f"$(touch {canary}) `touch {canary}`; touch {canary} | x & y 'q' \"dq\""
    result = lab.itops("fix", "test.echo", "lab-01", "--check", "-p", f"note={note}", "--json")
    assert result.returncode == 0, result.stderr
    assert report(result)["lab-01"]["message"] == note
    assert not canary.exists()


def slow_apply_started(
    lab: LabEnv, ticket: str, *params: str, task: str = "test.slow-apply"
) -> tuple[subprocess.Popen[str], Ledger]:
    """`itops fix TASK lab` in the background, once every host is in its apply."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("ITOPS_")}
    command = [sys.executable, "-m", "toolkit", "--workspace", str(lab.root)]
    proc = subprocess.Popen(
        [*command, "fix", task, "lab", *params, "--ticket", ticket],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        # As from a terminal: a test run started in the background (`cmd &` in a script) has
        # SIGINT ignored, which children inherit and Python then leaves ignored.
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),
    )
    book = Ledger(f"sqlite:///{lab.root / '.itops' / 'ledger.db'}", operator="test")
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        if len(list(book.records(ticket=ticket, kind="action.begin"))) == 4:
            break
        assert proc.poll() is None, proc.communicate()
        time.sleep(0.1)
    time.sleep(1.0)  # let every host get into its apply
    return proc, book


def marks(mark: str, *, clear: bool = False) -> list[str]:
    """The lab hosts whose test.slow-mark apply ran to its end (it leaves /tmp/MARK-HOST)."""
    found = sorted(Path("/tmp").glob(f"{mark}-*"))
    for path in found if clear else ():
        path.unlink()
    return [p.name for p in found]


def test_kill_9_mid_run_leaves_open_actions_and_stops_the_commands_on_the_hosts(
    lab: LabEnv,
) -> None:
    # The controller dies mid-apply: each host's shell sees its input end and stops the
    # command's process group, so no apply completes behind a record that says "open".
    mark = "itops-k9"
    marks(mark, clear=True)
    proc, book = slow_apply_started(
        lab, "INC-4000", "-p", f"mark={mark}", "-p", "seconds=5", task="test.slow-mark"
    )
    os.kill(proc.pid, signal.SIGKILL)
    proc.communicate()
    begun = {r.action_id for r in book.records(ticket="INC-4000", kind="action.begin")}
    book.close()
    assert len(begun) == 4
    opened = lab.itops("log", "--ticket", "INC-4000", "--outcome", "open")
    assert opened.stdout.count("begun, never finished") == 4
    verify = lab.itops("audit", "verify", "--json")
    result = json.loads(verify.stdout)
    assert verify.returncode == 0 and result["ok"]
    assert begun <= set(result["open_actions"])  # every one of them, and the chain still holds
    time.sleep(5)  # past the moment each apply would have finished
    assert marks(mark) == []  # no host was changed after the controller died
    check = lab.itops("fix", "test.slow-mark", "lab", "-p", f"mark={mark}", "--check", "--json")
    assert {h["outcome"] for h in json.loads(check.stdout)["hosts"]} == {"would-fix"}


def test_ctrl_c_stops_the_running_commands_on_the_hosts_and_shows_the_table(
    lab: LabEnv,
) -> None:
    # An all-SSH run: the hosts run as greenlets on the SSH loop, and SIGINT reaches the main
    # thread while it waits for them.
    mark = "itops-int"
    marks(mark, clear=True)
    proc, book = slow_apply_started(
        lab, "INC-4001", "-p", f"mark={mark}", "-p", "seconds=6", task="test.slow-mark"
    )
    interrupted = time.monotonic()
    proc.send_signal(signal.SIGINT)
    out, err = proc.communicate(timeout=30)
    assert proc.returncode == 130, out + err
    assert time.monotonic() - interrupted < 4  # the commands were stopped, not waited for
    finished = list(book.records(ticket="INC-4001", kind="action.finish"))
    book.close()
    assert len(finished) == 4
    for record in finished:
        info = record.info
        assert info["error"] == "interrupted", info
        assert "stopped on the host" in info["message"], info
        assert "state unknown: apply stopped part-way, verify did not run" in info["message"]
        assert [c["step"] for c in json.loads(record.commands or "[]")] == ["check", "apply"]
    # The same table as a finished run, on stdout, and the summary line
    for n in range(1, 5):
        assert f"lab-0{n}" in out
    assert out.count("failed (interrupted)") == 4, out
    assert "test.slow-mark interrupted after" in out and "4 failed" in out
    verify = lab.itops("audit", "verify", "--json")
    assert verify.returncode == 0 and json.loads(verify.stdout)["ok"]
    time.sleep(6)
    assert marks(mark) == []  # stopped on the hosts: no apply ran to its end


def test_a_second_ctrl_c_ends_at_once_and_the_commands_still_stop_on_the_hosts(
    lab: LabEnv,
) -> None:
    mark = "itops-int2"
    marks(mark, clear=True)
    proc, book = slow_apply_started(
        lab, "INC-4002", "-p", f"mark={mark}", "-p", "seconds=6", task="test.slow-mark"
    )
    interrupted = time.monotonic()
    proc.send_signal(signal.SIGINT)
    proc.send_signal(signal.SIGINT)
    out, err = proc.communicate(timeout=30)
    assert proc.returncode == 130, out + err
    assert time.monotonic() - interrupted < 4
    assert "test.slow-mark interrupted after" in out, out + err
    book.close()
    assert lab.itops("audit", "verify").returncode == 0
    time.sleep(6)
    assert marks(mark) == []


@pytest.mark.parametrize("how", ["plain", "root", "stdin"])
def test_a_timed_out_apply_is_stopped_on_the_host_and_verify_says_what_is_there(
    lab: LabEnv, how: str
) -> None:
    # The host's record must not say "failed" while the apply finishes there a moment later:
    # a timeout stops the command's whole process group (under sudo too, and on an exec
    # channel with stdin), and verify then reads what is really on the host.
    mark = f"itops-to-{how}"
    marks(mark, clear=True)
    extra = {"plain": [], "root": ["-p", "root=true"], "stdin": ["-p", "stdin=true"]}[how]
    started = time.monotonic()
    result = lab.itops(
        "fix", "test.slow-mark", "lab-01", "-p", f"mark={mark}", "-p", "seconds=5",
        *extra, "--timeout", "2", "--ticket", f"INC-41{['plain', 'root', 'stdin'].index(how)}", "--json",
    )  # fmt: skip
    host = report(result)["lab-01"]
    assert result.returncode == 1 and host["outcome"] == "failed", result.stdout
    assert host["error"] == "command-timeout"
    message = str(host["message"])
    assert message.startswith("apply: command timed out after 2s; stopped on the host"), message
    assert "verify ran after it: not fixed: no mark" in message
    time.sleep(max(0.0, 6.5 - (time.monotonic() - started)))
    assert marks(mark) == []  # the apply never finished on the host
    again = lab.itops("fix", "test.slow-mark", "lab-01", "-p", f"mark={mark}", "--check", "--json")
    assert report(again)["lab-01"]["outcome"] == "would-fix"


def test_two_itops_processes_share_the_ledger(lab: LabEnv) -> None:
    lab.break_printer("lab-01", "lab-04")
    results: dict[str, subprocess.CompletedProcess[str]] = {}

    def run(host: str, ticket: str) -> None:
        results[host] = lab.itops("fix", "printer.clear-queue", host, "--ticket", ticket)

    threads = [
        threading.Thread(target=run, args=a)
        for a in (("lab-01", "INC-5001"), ("lab-04", "INC-5002"))
    ]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert all(r.returncode == 0 for r in results.values()), results
    verify = json.loads(lab.itops("audit", "verify", "--json").stdout)
    assert verify["ok"]
    for ticket in ("INC-5001", "INC-5002"):
        kinds = [
            json.loads(x)["kind"]
            for x in lab.itops("log", "--ticket", ticket, "--json").stdout.splitlines()
        ]
        assert kinds == ["ticket.opened", "action.begin", "action.finish"]


def test_a_tampered_ledger_fails_audit_verify(lab: LabEnv, tmp_path: Path) -> None:
    import shutil
    import sqlite3

    copy = tmp_path / "copy.db"
    src = sqlite3.connect(lab.root / ".itops" / "ledger.db")
    dst = sqlite3.connect(copy)
    src.backup(dst)
    src.close()
    dst.execute("DROP TRIGGER ledger_no_update")
    dst.execute(
        "UPDATE ledger SET operator = 'mallory' WHERE seq = (SELECT max(seq) - 1 FROM ledger)"
    )
    dst.commit()
    dst.close()
    result = lab.itops("audit", "verify", env={"ITOPS_LEDGER_URL": f"sqlite:///{copy}"})
    assert (
        result.returncode == 1 and "LEDGER BROKEN" in result.stderr and "altered" in result.stderr
    )
    shutil.rmtree(tmp_path, ignore_errors=True)
