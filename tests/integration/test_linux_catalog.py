"""The Linux catalog against real software on lab hosts, through the real CLI over real SSH:
apt and dpkg, ClamAV, cupsd and its init script, tar/zstd and SFTP, a real filesystem to fill.
Each remediation: --check changes nothing (host state compared before and after), the fix fixes,
and a second run is already-ok."""

from __future__ import annotations

import hashlib
import json
import os
import re
import secrets
import shutil
import time
from pathlib import Path
from typing import Any

import pytest

from tests.integration.conftest import LabEnv

pytestmark = pytest.mark.integration


def outcome(result: Any, host: str) -> str:
    m = re.search(rf"^{host}\s+(\S+)", result.stdout, re.M)
    assert m, result.stdout + result.stderr
    return m.group(1)


def tree(folder: Path) -> dict[str, tuple[int, str]]:
    """Every file under a folder: (mtime, sha256) — what --check must leave alone."""
    return {
        str(p.relative_to(folder)): (
            p.stat().st_mtime_ns,
            hashlib.sha256(p.read_bytes()).hexdigest(),
        )
        for p in sorted(folder.rglob("*"))
        if p.is_file() and not p.is_symlink()
    }


# --------------------------------------------------------------------------- patch.apply


def test_patch_security_only_then_everything(lab: LabEnv) -> None:
    before = lab.dpkg_state("lab-02")
    assert before[0] == {"itops-lab-libsafe": "1.0", "itops-lab-tool": "1.0"}
    check = lab.itops("fix", "patch.apply", "lab-02", "--check", "--json")
    assert check.returncode == 4
    facts = json.loads(check.stdout)["hosts"][0]["check"]["facts"]
    assert facts["manager"] == "apt" and facts["pending"] == 2 and facts["pending_security"] == 1
    assert lab.dpkg_state("lab-02") == before  # --check installed nothing

    security = lab.itops(
        "fix", "patch.apply", "lab-02", "-p", "security_only=true", "--ticket", "LNXC-300"
    )
    assert outcome(security, "lab-02") == "fixed", security.stdout + security.stderr
    assert lab.service("apt").installed(lab.state, "lab-02") == {
        "itops-lab-libsafe": "2.0",  # from the lab-security suite
        "itops-lab-tool": "1.0",  # not a security update: left alone
    }
    again = lab.itops(
        "fix", "patch.apply", "lab-02", "-p", "security_only=true", "--ticket", "LNXC-300"
    )
    assert outcome(again, "lab-02") == "already-ok"

    everything = lab.itops("fix", "patch.apply", "lab-02", "--ticket", "LNXC-301")
    assert outcome(everything, "lab-02") == "fixed"
    assert set(lab.service("apt").installed(lab.state, "lab-02").values()) == {"2.0"}
    assert (lab.host_root("lab-02") / "usr/share/itops-lab-tool/VERSION").read_text() == "2.0\n"
    assert (
        outcome(lab.itops("fix", "patch.apply", "lab-02", "--ticket", "LNXC-301"), "lab-02")
        == "already-ok"
    )


def test_patch_waits_for_a_held_dpkg_lock_then_fails_clearly(lab: LabEnv) -> None:
    apt = lab.service("apt")
    before = apt.installed(lab.state, "lab-03")
    started = time.monotonic()
    with apt.hold_lock(lab.state, "lab-03"):
        held = lab.itops(
            "fix", "patch.apply", "lab-03", "-p", "lock_timeout=2", "--ticket", "LNXC-302"
        )
    assert held.returncode == 1 and "package-manager-busy" in held.stdout
    assert f"held by process {os.getpid()} (" in held.stdout and "more than 2s" in held.stdout
    assert time.monotonic() - started < 30  # bounded: it waited ~2 s, not forever
    assert apt.installed(lab.state, "lab-03") == before
    freed = lab.itops("fix", "patch.apply", "lab-03", "--ticket", "LNXC-302")
    assert outcome(freed, "lab-03") == "fixed"


# --------------------------------------------------------------------------- antivirus


def test_av_update_fetches_a_new_signature_that_then_detects_a_new_sample(lab: LabEnv) -> None:
    av = lab.service("clamav")
    marker = f"itops-lab-sample-{secrets.token_hex(4)}".encode()
    av.age(lab.state, "lab-04", days=5)  # freshclam has not run for days
    av.publish(lab.state, f"ItopsLab.Sample.{marker[-8:].decode()}", marker)
    drop = lab.host_root("lab-04") / "home" / "shared" / f"av-{secrets.token_hex(3)}"
    drop.mkdir(parents=True)
    (drop / "invoice.pdf").write_bytes(b"%PDF " + marker + b" trailer")
    (drop / "notes.txt").write_text("nothing to see\n")

    databases = av.database_dir(lab.state, "lab-04")
    before = tree(databases)
    check = lab.itops("fix", "av.update", "lab-04", "--check")
    assert outcome(check, "lab-04") == "would-fix" and "5.0 day(s) old" in check.stdout
    assert tree(databases) == before
    scan_before = lab.itops("fix", "av.scan", "lab-04", "-p", f"path={drop}", "--check")
    assert outcome(scan_before, "lab-04") == "already-ok"  # the old signatures miss it

    update = lab.itops("fix", "av.update", "lab-04", "--ticket", "LNX-3001", "--json")
    host = json.loads(update.stdout)["hosts"][0]
    assert host["outcome"] == "fixed", host["message"]
    assert host["verify"]["facts"]["detection_test"] == "detected"  # EICAR in a temp file
    assert any("freshclam updated: itops-lab" in n for n in host["notes"])
    assert tree(databases) != before
    assert (
        outcome(lab.itops("fix", "av.update", "lab-04", "--ticket", "LNX-3001"), "lab-04")
        == "already-ok"
    )

    files = tree(drop)
    look = lab.itops("fix", "av.scan", "lab-04", "-p", f"path={drop}", "--check")
    assert outcome(look, "lab-04") == "would-fix" and "invoice.pdf" in look.stdout
    assert tree(drop) == files  # --check quarantined nothing
    scan = lab.itops(
        "fix", "av.scan", "lab-04", "-p", f"path={drop}", "--ticket", "LNX-3001", "--json"
    )
    host = json.loads(scan.stdout)["hosts"][0]
    assert host["outcome"] == "fixed"
    assert host["check"]["facts"]["detections"] == [
        f"{drop}/invoice.pdf: ItopsLab.Sample.{marker[-8:].decode()}.UNOFFICIAL"
    ]
    assert not (drop / "invoice.pdf").exists() and (drop / "notes.txt").exists()
    quarantine = Path(lab.state.host("lab-04").vars["av_quarantine_dir"])
    assert (quarantine / "invoice.pdf").read_bytes().startswith(b"%PDF ")
    assert (quarantine.stat().st_mode & 0o777) == 0o700
    log = lab.itops("log", "--ticket", "LNX-3001", "--json")
    assert "detection: " + str(drop) + "/invoice.pdf" in log.stdout
    again = lab.itops("fix", "av.scan", "lab-04", "-p", f"path={drop}", "--ticket", "LNX-3001")
    assert outcome(again, "lab-04") == "already-ok"


# --------------------------------------------------------------------------- printer, services


def _printer_module() -> Any:
    """The built-in tasks/printer.py as the catalog loaded it (task modules load by path)."""
    import sys

    from toolkit.remediation.catalog import BUILTIN_TASKS, Catalog

    spec = Catalog.load([BUILTIN_TASKS]).get("printer.status").implementation("linux")
    assert spec is not None
    return sys.modules[spec.cls.__module__]


def cupsd_pid(lab: LabEnv, host: str) -> str:
    return (Path(lab.state.runtime) / f"{host}.cupsd.pid").read_text().strip()


def test_restart_spooler_and_service_restart_restart_the_real_cupsd(lab: LabEnv) -> None:
    first = cupsd_pid(lab, "lab-04")
    check = lab.itops("fix", "printer.restart-spooler", "lab-04", "--check")
    assert outcome(check, "lab-04") == "would-fix" and cupsd_pid(lab, "lab-04") == first
    fixed = lab.itops("fix", "printer.restart-spooler", "lab-04", "--ticket", "LNX-3002")
    assert outcome(fixed, "lab-04") == "fixed", fixed.stdout + fixed.stderr
    second = cupsd_pid(lab, "lab-04")
    assert second != first and Path(f"/proc/{second}").exists()
    again = lab.itops("fix", "printer.restart-spooler", "lab-04", "--ticket", "LNX-3002")
    assert outcome(again, "lab-04") == "already-ok" and cupsd_pid(lab, "lab-04") == second

    service = lab.state.host("lab-04").vars["cups_service"]
    args = ["fix", "service.restart", "lab-04", "-p", f"service={service}"]
    assert outcome(lab.itops(*args, "--check"), "lab-04") == "would-fix"
    assert cupsd_pid(lab, "lab-04") == second  # --check restarted nothing
    restart = lab.itops(*args, "--ticket", "LNX-3003")
    assert outcome(restart, "lab-04") == "fixed"
    third = cupsd_pid(lab, "lab-04")
    assert third not in (first, second)
    assert outcome(lab.itops(*args, "--ticket", "LNX-3003"), "lab-04") == "already-ok"
    assert cupsd_pid(lab, "lab-04") == third
    assert "office accepting requests" in lab.lpstat("lab-04")  # the spooler works after it
    ssh = lab.itops("fix", "service.restart", "lab-04", "-p", "service=ssh", "--ticket", "LNX-3003")
    assert ssh.returncode == 1 and "itops depends on it" in ssh.stdout


def test_printer_status_and_reinstall_queue(lab: LabEnv, tmp_path: Path) -> None:
    lab.break_printer("lab-03")
    status = lab.itops("fix", "printer.status", "lab-03", "--check", "--json")
    assert status.returncode == 4
    facts = json.loads(status.stdout)["hosts"][0]["check"]["facts"]
    office = facts["queues"]["office"]
    assert (
        office["enabled"] is False and office["reason"] == "paper jam" and len(office["jobs"]) == 3
    )
    assert office["device"] == "/dev/null"  # as lpstat -v shows file:/dev/null

    canary = tmp_path / "reinstall-canary"
    description = f"Floor 3 $(touch {canary}); `touch {canary}` 'quoted'"
    before = lab.lpstat("lab-03")
    check = lab.itops("fix", "printer.reinstall-queue", "lab-03", "-p", "queue=office", "--check")
    assert outcome(check, "lab-03") == "would-fix" and lab.lpstat("lab-03") == before
    fixed = lab.itops(
        "fix",
        "printer.reinstall-queue",
        "lab-03",
        "-p",
        "queue=office",
        "-p",
        f"description={description}",
        "--ticket",
        "LNX-3004",
    )
    assert outcome(fixed, "lab-03") == "fixed", fixed.stdout + fixed.stderr
    assert not canary.exists()  # free text reached lpadmin as one literal argument
    from toolkit.lab.cups import run

    details = run(lab.state.host("lab-03"), ["lpstat", "-l", "-p", "office"])
    assert f"\tDescription: {description}\n" in details  # stored literally
    options = _printer_module().parse_lpoptions(
        run(lab.state.host("lab-03"), ["lpoptions", "-p", "office"])
    )
    assert (
        options["device-uri"] == "file:/dev/null" and options["printer-is-accepting-jobs"] == "true"
    )
    state = lab.lpstat("lab-03")
    assert (
        "office accepting requests" in state and "disabled" not in state and "office-" not in state
    )
    again = lab.itops(
        "fix", "printer.reinstall-queue", "lab-03", "-p", "queue=office", "--ticket", "LNX-3004"
    )
    assert outcome(again, "lab-03") == "already-ok"


# --------------------------------------------------------------------------- backups


def test_backup_restore_and_list_with_hostile_file_names(lab: LabEnv, tmp_path: Path) -> None:
    docs = lab.host_root("lab-01") / "home" / f"docs-{secrets.token_hex(3)}"
    (docs / "sub dir").mkdir(parents=True)
    (docs / "report.txt").write_text("quarterly numbers\n")
    (docs / "sub dir" / "we'ird $(name) ;x.txt").write_text("odd\n")
    (docs / "line\nbreak.txt").write_bytes(os.urandom(2048))
    os.chmod(docs / "report.txt", 0o640)
    files_before = tree(docs)

    check = lab.itops("fix", "backup.files", "lab-01", "-p", f"paths={docs}", "--check")
    assert outcome(check, "lab-01") == "would-fix"
    assert (
        not (lab.root / ".itops" / "backups" / "files" / "lab-01").exists()
        and tree(docs) == files_before
    )
    made = lab.itops(
        "fix", "backup.files", "lab-01", "-p", f"paths={docs}", "--ticket", "LNX-3005", "--json"
    )
    host = json.loads(made.stdout)["hosts"][0]
    assert host["outcome"] == "fixed", host["message"]
    backup_id = host["verify"]["facts"]["backup"]
    assert host["verify"]["summary"] == f"backup {backup_id}: 3 file(s) verified by SHA-256"
    store = Path(host["verify"]["facts"]["store"])
    assert store == lab.root / ".itops" / "backups" / "files" / "lab-01" / backup_id
    manifest = json.loads((store / "manifest.json").read_text())
    hashes = {m["path"]: m["sha256"] for m in manifest["members"] if m["type"] == "file"}
    assert hashes == {
        str(docs / name): hashlib.sha256((docs / name).read_bytes()).hexdigest()
        for name in ("report.txt", "sub dir/we'ird $(name) ;x.txt", "line\nbreak.txt")
    }
    assert (
        manifest["compression"] == "zstd"
        and (store / "archive.tar.zst").stat().st_mode & 0o077 == 0
    )
    remote = next(c["stdout"].strip() for c in host["commands"] if "mktemp" in c["command"])
    assert remote.startswith("/tmp/itops-backup.") and not Path(remote).exists()  # cleaned up
    assert (
        outcome(
            lab.itops(
                "fix", "backup.files", "lab-01", "-p", f"paths={docs}", "--ticket", "LNX-3005"
            ),
            "lab-01",
        )
        == "already-ok"
    )
    listed = lab.itops("backup", "list", "lab-01", "--json")
    assert backup_id in [b["id"] for b in json.loads(listed.stdout)]
    assert lab.itops("backup", "verify", "lab-01").returncode == 0
    assert outcome(lab.itops("fix", "backup.list", "lab-01", "--check"), "lab-01") == "already-ok"

    (docs / "report.txt").write_text("overwritten by mistake\n")
    (docs / "sub dir" / "we'ird $(name) ;x.txt").unlink()
    changed = tree(docs)
    no_ticket = lab.itops("fix", "backup.restore", "lab-01", "-p", f"path={docs}")
    assert no_ticket.returncode == 2 and "ticket is required" in no_ticket.stderr
    check = lab.itops("fix", "backup.restore", "lab-01", "-p", f"path={docs}", "--check")
    assert outcome(check, "lab-01") == "would-fix" and tree(docs) == changed
    restored = lab.itops(
        "fix", "backup.restore", "lab-01", "-p", f"path={docs}", "--ticket", "LNX-3006"
    )
    assert outcome(restored, "lab-01") == "fixed", restored.stdout + restored.stderr
    assert (docs / "report.txt").read_text() == "quarterly numbers\n"
    assert (docs / "report.txt").stat().st_mode & 0o777 == 0o640
    assert (docs / "sub dir" / "we'ird $(name) ;x.txt").read_text() == "odd\n"
    assert (docs / f"report.txt.itops-before-{backup_id}").read_text() == "overwritten by mistake\n"
    again = lab.itops(
        "fix", "backup.restore", "lab-01", "-p", f"path={docs}", "--ticket", "LNX-3006"
    )
    assert outcome(again, "lab-01") == "already-ok"


def test_paths_with_shell_metacharacters_are_passed_literally(lab: LabEnv, tmp_path: Path) -> None:
    canary = tmp_path / "path-canary"
    for task, param in (("backup.files", "paths"), ("av.scan", "path"), ("disk.cleanup", "path")):
        result = lab.itops(
            "fix",
            task,
            "lab-02",
            "-p",
            f"{param}=/tmp/x;touch {canary};$(touch {canary})",
            "--check",
        )
        assert result.returncode in (1, 4), (task, result.stdout, result.stderr)
        assert not canary.exists(), task


# --------------------------------------------------------------------------- disk


def test_disk_cleanup_frees_space_in_order_and_keeps_live_logs(lab: LabEnv) -> None:
    root = lab.host_root("lab-03")
    archives = root / "var/cache/apt/archives"
    for i in range(2):
        (archives / f"old{i}_1.0_all.deb").write_bytes(os.urandom(1 << 20))
    lab.service("disk").fill(lab.state, "lab-03", free_percent=15)
    (root / "var/log/app.log").write_text("live log line\n")
    before = tree(root / "var/log"), tree(archives)
    check = lab.itops("fix", "disk.cleanup", "lab-03", "-p", "min_free_percent=75", "--check")
    assert (
        outcome(check, "lab-03") == "would-fix"
        and "cleanable: package cache 2.0 MB" in check.stdout
    )
    assert (tree(root / "var/log"), tree(archives)) == before

    fixed = lab.itops(
        "fix",
        "disk.cleanup",
        "lab-03",
        "-p",
        "min_free_percent=75",
        "--ticket",
        "LNX-3007",
        "--json",
    )
    host = json.loads(fixed.stdout)["hosts"][0]
    assert host["outcome"] == "fixed", host["message"]
    notes = " ".join(host["notes"])
    assert "package cache:" in notes and "rotated logs older than 7 days:" in notes
    assert not list(archives.glob("*.deb")) and not list((root / "var/log").glob("app.log.*.gz"))
    assert (root / "var/log/app.log").read_text() == "live log line\n"  # live logs are kept
    assert host["verify"]["facts"]["free_percent"] >= 75
    again = lab.itops(
        "fix", "disk.cleanup", "lab-03", "-p", "min_free_percent=75", "--ticket", "LNX-3007"
    )
    assert outcome(again, "lab-03") == "already-ok"


# --------------------------------------------------------------------------- network


def test_network_diagnose_with_real_read_only_commands(lab: LabEnv) -> None:
    target = f"{lab.state.hosts[1].address}:{lab.state.port}"
    ok = lab.itops(
        "fix",
        "network.diagnose",
        "lab-01",
        "-p",
        "name=localhost",
        "-p",
        f"target={target}",
        "--check",
        "--json",
    )
    host = json.loads(ok.stdout)["hosts"][0]
    assert host["outcome"] == "already-ok", host["message"]
    facts = host["check"]["facts"]
    assert facts["resolved"][0] in ("127.0.0.1", "::1") and facts["tcp"] == {
        "target": target,
        "open": True,
    }
    assert facts["interfaces"] and isinstance(facts["dns_servers"], list)
    broken = lab.itops(
        "fix",
        "network.diagnose",
        "lab-01",
        "-p",
        "name=nothing.invalid",
        "-p",
        "target=127.0.0.1:1",
        "--check",
    )
    assert broken.returncode == 4
    assert (
        "nothing.invalid does not resolve" in broken.stdout
        and "TCP 127.0.0.1:1 unreachable" in broken.stdout
    )


def test_network_fixes_on_a_host_without_those_services(lab: LabEnv) -> None:
    """The lab runs no resolved/nscd/NetworkManager: flush-dns has nothing to do, the others
    say why they cannot act (tests/unit/test_linux_tasks.py covers those services)."""
    flush = lab.itops("fix", "network.flush-dns", "lab-02", "--ticket", "LNX-3008")
    assert outcome(flush, "lab-02") == "already-ok" and "no local DNS cache" in flush.stdout
    renew = lab.itops("fix", "network.renew-dhcp", "lab-02", "--check")
    assert renew.returncode == 1 and "no DHCP client itops knows" in renew.stdout


def test_a_restore_never_follows_a_symlink_a_user_planted(lab: LabEnv, tmp_path: Path) -> None:
    # A user's ~/Documents is backed up; the user then replaces the folder with a symlink to a
    # root-owned folder (a stand-in for /etc/profile.d). The restore (root, through sudo) must not
    # write there. A user's files are restored as that user.
    nobody = 65534
    home = lab.host_root("lab-01") / "home" / f"victim-{secrets.token_hex(3)}"
    docs = home / "Documents"
    docs.mkdir(parents=True)
    (docs / "login.sh").write_text("echo owned\n")
    for path in (home, docs, docs / "login.sh"):
        os.chown(path, nobody, nobody)
    made = lab.itops(
        "fix", "backup.files", "lab-01", "-p", f"paths={docs}", "--ticket", "LNX-3100", "--json"
    )
    assert json.loads(made.stdout)["hosts"][0]["outcome"] == "fixed", made.stdout
    profile_d = tmp_path / "profile.d"
    profile_d.mkdir()
    shutil.rmtree(docs)
    docs.symlink_to(profile_d)
    attack = lab.itops(
        "fix", "backup.restore", "lab-01", "-p", f"path={docs}", "--ticket", "LNX-3100", "--json"
    )
    host = json.loads(attack.stdout)["hosts"][0]
    assert host["outcome"] == "failed" and "resolves to" in host["message"], host["message"]
    assert list(profile_d.iterdir()) == []  # nothing written through the link
    # the folder back as it was: the file is restored, as its owner
    docs.unlink()
    docs.mkdir()
    os.chown(docs, nobody, nobody)
    restored = lab.itops(
        "fix", "backup.restore", "lab-01", "-p", f"path={docs}", "--ticket", "LNX-3100"
    )
    assert outcome(restored, "lab-01") == "fixed", restored.stdout + restored.stderr
    assert (docs / "login.sh").stat().st_uid == nobody
    assert (docs / "login.sh").read_text() == "echo owned\n"
