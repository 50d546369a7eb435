"""Typed reads: each fact's command and its parser alone, on recorded outputs (no transport)."""

from __future__ import annotations

import re
import sys
from typing import Any

import pytest

from tests.unit.test_linux_tasks import (
    DB_BEFORE,
    DNF_FACTS,
    DNF_PENDING,
    DNF_SECURITY,
    FRESH_INDEX,
    SIM_BOTH,
)
from toolkit.errors import CommandFailed, ToolkitError
from toolkit.remediation import linux
from toolkit.remediation.catalog import BUILTIN_TASKS, Catalog
from toolkit.remediation.facts import Fact, read
from toolkit.transports.base import CommandResult


def task_module(task: str, platform: str = "linux") -> Any:
    """A built-in task's module as the catalog loaded it (task modules load by path)."""
    spec = Catalog.load([BUILTIN_TASKS]).get(task).implementation(platform)
    assert spec is not None
    return sys.modules[spec.cls.__module__]


printer = task_module("printer.status")

# `lpstat -p -a -o` of CUPS 2.4 (C locale) with one queue stopped on a paper jam, then `now`.
LPSTAT = (
    "printer office is idle.  enabled since Sat Nov 21 09:00:00 2026\n"
    "printer hp4 disabled since Sat Nov 21 09:10:00 2026 -\n"
    "\tpaper jam\n"
    "office accepting requests since Sat Nov 21 09:00:00 2026\n"
    "hp4 not accepting requests since Sat Nov 21 09:10:00 2026 -\n"
    "\tpaper jam\n"
    "office-12               jdoe              1024   Sat Nov 21 09:40:00 2026\n"
    "hp4-13                  jdoe              2048   Sat Nov 21 09:58:00 2026\n"
    "now Sat Nov 21 10:00:00 2026\n"
)


def test_print_queues_parses_state_reasons_and_job_ages() -> None:
    queues = printer.PrintQueues().parse(LPSTAT, "", 0).by_name
    assert queues["office"] == printer.Queue("office", True, True, "", (("office-12", 1200),))
    assert queues["hp4"] == printer.Queue("hp4", False, False, "paper jam", (("hp4-13", 120),))


def test_print_queues_for_one_queue_keeps_only_that_queue_and_quotes_it() -> None:
    fact = printer.PrintQueues("office")
    assert set(fact.parse(LPSTAT, "", 0).by_name) == {"office"}
    assert fact.command().text.startswith("lpstat -p office -a office -o office; printf 'now %s")


def test_print_queues_drops_names_cups_would_not_give() -> None:
    text = "printer bad;name is idle.  enabled since x\nprinter ok is idle.  enabled since x\n"
    assert set(printer.PrintQueues().parse(text, "", 0).by_name) == {"ok"}


def test_print_queues_without_a_clock_counts_jobs_as_fresh() -> None:
    text = LPSTAT.replace("now Sat Nov 21 10:00:00 2026\n", "")
    assert printer.PrintQueues().parse(text, "", 0).by_name["office"].jobs == (("office-12", 0),)


@pytest.mark.parametrize(
    ("stdout", "running"),
    [("scheduler is running\n", True), ("scheduler is not running\n", False), ("", False)],
)
def test_scheduler_status(stdout: str, running: bool) -> None:
    assert printer.SchedulerStatus().parse(stdout, "", 0 if running else 1).running is running


def test_queue_devices() -> None:
    text = "device for office: file:/dev/null\ndevice for hp4: ipp://10.1.4.20/ipp/print\n"
    devices = printer.QueueDevices().parse(text, "", 0)
    assert devices.uris == {"office": "file:/dev/null", "hp4": "ipp://10.1.4.20/ipp/print"}


@pytest.mark.parametrize(
    ("stdout", "name"),
    [("system default destination: office\n", "office"), ("no system default destination\n", "")],
)
def test_default_queue(stdout: str, name: str) -> None:
    assert printer.DefaultQueue().parse(stdout, "", 0).name == name


def test_queue_settings_parse_lpoptions_and_a_missing_queue() -> None:
    fact = printer.QueueSettings("office")
    assert fact.command().text == "lpoptions -p office"
    text = "device-uri=file:/dev/null printer-info='Floor 4' printer-is-shared=false\n"
    found = fact.parse(text, "", 0)
    assert found.exists and found.values == {
        "device-uri": "file:/dev/null",
        "printer-info": "Floor 4",
        "printer-is-shared": "false",
    }
    missing = fact.parse("", "lpoptions: The printer or class does not exist.\n", 1)
    assert not missing.exists and missing.values == {}


def test_queue_details_reads_free_text_literally() -> None:
    text = 'printer office is idle.\n\tDescription: it\'s "Floor 4"\n\tLocation: \n'
    found = printer.QueueDetails("office").parse(text, "", 0)
    assert found == printer.QueueText('it\'s "Floor 4"', "")
    assert printer.QueueDetails("office").parse("printer office is idle.\n", "", 0) == (
        printer.QueueText(None, None)
    )


class _Replies:
    """A context that answers `read` from a table and records what it was asked (and how)."""

    def __init__(self, replies: dict[str, tuple[int, str, str]]) -> None:
        self.replies = replies
        self.asked: list[tuple[str, bool]] = []

    def read(self, command: Any, *, become: bool = False, timeout: float | None = None) -> Any:
        text = command.text
        self.asked.append((text, become))
        code, out, err = self.replies[text]
        return CommandResult(text, code, out, err, 0.0)


def test_read_runs_the_command_and_parses_its_output() -> None:
    ctx = _Replies({"lpstat -r": (0, "scheduler is running\n", "")})
    assert read(ctx, printer.SchedulerStatus()) == printer.Scheduler(True)  # type: ignore[arg-type]
    assert ctx.asked == [("lpstat -r", False)]


def test_a_fact_is_a_frozen_value() -> None:
    fact = printer.PrintQueues("office")
    assert isinstance(fact, Fact) and fact == printer.PrintQueues("office")
    with pytest.raises(AttributeError):
        fact.queue = "other"
    assert re.search(r"PrintQueues\(queue='office'\)", repr(fact))


# --------------------------------------------------------------------------- Linux services

SYSTEMCTL_SHOW = (
    "Id=nginx.service\nLoadState=loaded\nActiveState=active\nSubState=running\nMainPID=4242\n"
    "UnitFileState=enabled\nExecMainStartTimestampMonotonic=1000\n"
)
# systemd answers an unknown unit with exit 0 and LoadState=not-found.
SYSTEMCTL_SHOW_UNKNOWN = (
    "Id=nosuch.service\nLoadState=not-found\nActiveState=inactive\nSubState=dead\nMainPID=0\n"
    "UnitFileState=\nExecMainStartTimestampMonotonic=0\n"
)


def test_systemd_service_parses_systemctl_show() -> None:
    fact = linux.SystemdService("nginx")
    assert fact.command().text == f"systemctl show nginx --property={linux.SYSTEMD_PROPERTIES}"
    assert fact.parse(SYSTEMCTL_SHOW, "", 0) == linux.ServiceState(
        "nginx.service", "systemd", True, "active/running", 4242, "1000", "enabled"
    )


def test_systemd_service_unknown_unit_does_not_exist() -> None:
    state = linux.SystemdService("nosuch").parse(SYSTEMCTL_SHOW_UNKNOWN, "", 0)
    assert not state.exists and not state.running


def test_systemd_service_failed_read_is_command_failed() -> None:
    with pytest.raises(CommandFailed):
        linux.SystemdService("nginx").parse("", "Failed to connect to bus", 1)


@pytest.mark.parametrize(
    ("exit_code", "running", "state"),
    [(0, True, "running"), (3, False, "stopped"), (4, False, "unknown (status 4)")],
)
def test_init_service_status_follows_the_lsb_exit_codes(
    exit_code: int, running: bool, state: str
) -> None:
    fact = linux.InitServiceStatus("postfix", "sysv")
    assert fact.become and fact.command().text == "service postfix status"
    assert fact.parse("", "", exit_code) == linux.ServiceState("postfix", "sysv", running, state)
    assert linux.InitServiceStatus("sshd", "openrc").command().text == "rc-service sshd status"


def test_init_script_presence() -> None:
    assert linux.InitScript("postfix", "sysv").command().text == "test -x /etc/init.d/postfix"
    assert linux.InitScript("sshd", "openrc").command().text == "rc-service --exists sshd"
    assert linux.InitScript("postfix", "sysv").parse("", "", 0).found
    assert not linux.InitScript("postfix", "sysv").parse("", "", 1).found


def test_service_manager_and_host_clock() -> None:
    assert linux.ServiceManager().parse("systemd\n", "", 0).name == "systemd"
    with pytest.raises(CommandFailed):
        linux.ServiceManager().parse("", "sh: 1: syntax error", 2)
    assert linux.HostClock().parse("6 09 05 Sat 09:05 CET\n", "", 0) == linux.Clock(
        6, 545, "Sat 09:05 CET"
    )


# --------------------------------------------------------------------------- disk space

system = task_module("disk.cleanup")

DISK_PROBE_OUTPUT = (
    "total=10737418240\navail=805306368\nmount=/\ncache=157286400\njournal=96.0M\n"
    "old_logs=52428800\nrotated_logs=73400320\n"
)


def test_disk_space_parses_the_probe() -> None:
    fact = system.DiskSpace("/", "/var/log", 7)
    assert fact.become and fact.command().text.startswith("df -P -B1 -- / | awk")
    assert fact.parse(DISK_PROBE_OUTPUT, "", 0) == system.DiskState(
        "/", 10737418240, 805306368, 7.5, 157286400, "96.0M", 52428800, 73400320
    )


def test_disk_space_without_a_size_is_refused() -> None:
    with pytest.raises(ToolkitError, match="df reported no size for /srv"):
        system.DiskSpace("/srv", "/var/log", 7).parse("mount=/srv\n", "", 0)
    with pytest.raises(CommandFailed):
        system.DiskSpace("/srv", "/var/log", 7).parse("", "sudo: a password is required", 1)


# --------------------------------------------------------------------------- packages (patch.apply)

patch = task_module("patch.apply")


def test_package_tools_reads_os_release_and_the_tools() -> None:
    found = patch.PackageTools().parse(DNF_FACTS, "", 0)
    assert found == patch.Packaging("rocky 9.4", ("dnf", "yum"))
    assert patch.PackageTools().parse("id=alpine\nversion=3.20\n", "", 0).tools == ()


def test_apt_simulation_parses_updates_security_and_kept_back() -> None:
    text = SIM_BOTH + ("The following packages have been kept back:\n  linux-image-amd64 systemd\n")
    pending = patch.AptSimulation().parse(text, "", 0)
    assert [u.label for u in pending.updates] == [
        "openssl 3.0.11-1~deb12u1 → 3.0.15-1~deb12u1 [security]",
        "tzdata 2024a-0+deb12u1 → 2024b-0+deb12u1",
    ]
    assert pending.kept == ("linux-image-amd64", "systemd")
    with pytest.raises(CommandFailed):
        patch.AptSimulation().parse("", "E: Could not open lock file", 100)


def test_dnf_check_update_marks_security_advisories() -> None:
    security = patch.DnfSecurity("dnf").parse(DNF_SECURITY, "", 0).security
    assert security == {"openssl"}
    assert patch.DnfSecurity("dnf").parse("", "Error: no updateinfo", 1).security == frozenset()
    fact = patch.DnfCheckUpdate("dnf", security)
    assert fact.command().text == "dnf -q -C check-update"
    pending = fact.parse(DNF_PENDING, "", 100)
    assert [(u.name, u.candidate, u.security) for u in pending.updates] == [
        ("openssl", "1:3.0.7-27.el9", True),
        ("kernel", "5.14.0-427.el9", False),
        ("vim-minimal", "2:8.2.2637-21.el9", False),
    ]
    assert fact.parse("", "", 0).updates == ()
    with pytest.raises(ToolkitError, match="dnf check-update exited 1: Error: Cache-only") as e:
        fact.parse("", "Error: Cache-only enabled but no cache for 'baseos'", 1)
    assert "run `dnf makecache` there" in (e.value.hint or "")


def test_apt_index_age_and_reboot_required() -> None:
    assert patch.AptIndexAge().parse(FRESH_INDEX, "", 0).hours == pytest.approx(0.99986, 1e-4)
    assert patch.AptIndexAge().parse("1795253600\n", "", 0).hours is None  # no lists yet
    assert patch.RebootRequired().parse("yes\n", "", 0).required
    assert not patch.RebootRequired().parse("unknown\n", "", 0).required


# --------------------------------------------------------------------------- ClamAV

antivirus = task_module("av.update")


def test_signature_databases_parses_versions_build_times_and_age() -> None:
    fact = antivirus.SignatureDatabases("/etc/clamav/freshclam.conf")
    assert fact.command().text.startswith("conf=/etc/clamav/freshclam.conf;")
    state = fact.parse(DB_BEFORE, "", 0)
    assert state.directory == "/var/lib/clamav" and state.now == 1795260000
    assert [d.name for d in state.databases] == ["daily.cld", "main.cvd"]
    assert state.version == "daily.cld:27400 main.cvd:62"
    assert round(state.age_days, 2) == 5.87  # daily.cld built 15 Nov 2026 09:30 -0500
    with pytest.raises(CommandFailed):
        fact.parse("", "sha256sum: not found", 127)


def test_signature_databases_without_databases_is_infinitely_old() -> None:
    state = antivirus.SignatureDatabases("/etc/clamav/freshclam.conf").parse(
        "dir|\nnow|1795260000\n", "", 0
    )
    assert state.directory == "/var/lib/clamav" and state.age_days == float("inf")


def test_clam_scan_detections_moves_and_errors() -> None:
    fact = antivirus.ClamScan(("clamscan", "-r", "--", "/home/jdoe/Downloads"))
    assert fact.become and fact.command().text == "clamscan -r -- /home/jdoe/Downloads"
    text = (
        "/home/jdoe/Downloads/eicar.com: Win.Test.EICAR_HDB-1 FOUND\n"
        "/home/jdoe/Downloads/eicar.com: moved to '/var/lib/itops/quarantine/eicar.com'\n"
    )
    assert fact.parse(text, "", 1) == antivirus.Detections(
        (("/home/jdoe/Downloads/eicar.com", "Win.Test.EICAR_HDB-1"),),
        {"/home/jdoe/Downloads/eicar.com": "/var/lib/itops/quarantine/eicar.com"},
    )
    assert fact.parse("", "", 0) == antivirus.Detections((), {})
    with pytest.raises(ToolkitError, match="clamscan exited 2: LibClamAV Error: no database"):
        fact.parse("", "LibClamAV Error: no database\n", 2)


def test_password_account_reads() -> None:
    """The local account reads of password.reset, parsed alone on recorded output."""
    password = task_module("password.reset")

    entry = password.PasswdEntry("jdoe")
    assert entry.command().text == "getent passwd jdoe" and not entry.become
    assert entry.parse("jdoe:x:1001:1001:J Doe,,,:/home/jdoe:/bin/bash\n", "", 0) == 1001
    assert entry.parse("", "", 2) is None  # getent: no such key
    assert password.Groups("jdoe").parse("jdoe sudo users\n", "", 0) == ("jdoe", "sudo", "users")
    with pytest.raises(CommandFailed, match="id -nG jdoe"):
        password.Groups("jdoe").parse("", "id: 'jdoe': no such user", 1)
    shadow = password.ShadowState("jdoe", "0123abcd")
    assert shadow.become and "0123abcd" in shadow.command().text
    state = shadow.parse(
        "status=locked\nlastchg=0\nexpire=\nhash=9f86d081884c7d65\nfailures=3\ntoday=20426\n",
        "",
        0,
    )
    assert state == {
        "status": "locked",
        "lastchg": "0",
        "expire": "",
        "hash": "9f86d081884c7d65",
        "failures": "3",
        "today": "20426",
    }
    with pytest.raises(CommandFailed, match="shadow entry of jdoe"):
        shadow.parse("", "sudo: a password is required", 1)
    rules = password.SudoRules("jdoe")
    assert rules.become and rules.command().text == "sudo -n -l -U jdoe"
    listed = "User jdoe may run the following commands on lab-01:\n    (ALL : ALL) ALL\n"
    assert rules.parse(listed, "", 0) is True
    assert rules.parse("User jdoe is not allowed to run sudo on lab-01.\n", "", 0) is False


# --------------------------------------------------------------------------- declared state

# Modules whose remediations follow the rule (the rest are listed in docs/architecture.md).
DECLARED = ("printer.status", "service.restart", "disk.cleanup", "patch.apply", "av.update")
DECLARED += ("password.reset", "backup.files", "network.diagnose", "software.install")


def _assigned(cls: type) -> set[str]:
    """Attributes a class's own methods assign on `self`."""
    import ast
    import inspect
    import textwrap

    if not any(inspect.isfunction(v) for v in vars(cls).values()):
        return set()  # no methods of its own (a per-family class made with type())
    from tests.syntax import parse

    tree = parse(textwrap.dedent(inspect.getsource(cls)))
    return {
        node.attr
        for node in ast.walk(tree)
        if isinstance(node, ast.Attribute)
        and isinstance(node.ctx, ast.Store)
        and isinstance(node.value, ast.Name)
        and node.value.id == "self"
    }


def _undeclared(platform: str, modules: set[str]) -> tuple[int, list[str]]:
    """How many remediation classes of `modules` were checked, and their undeclared state."""
    from toolkit.remediation.catalog import Remediation

    checked, undeclared = 0, []
    for task in Catalog.load([BUILTIN_TASKS]):
        spec = task.implementation(platform)
        if spec is None or spec.cls.__module__ not in modules:
            continue
        for cls in spec.cls.__mro__:
            if not issubclass(cls, Remediation) or cls.__module__ not in modules:
                continue
            declared = {a for c in spec.cls.__mro__ for a in vars(c).get("__annotations__", {})}
            checked += 1
            undeclared += [f"{cls.__name__}.{a}" for a in sorted(_assigned(cls) - declared)]
    return checked, undeclared


def test_state_between_steps_is_declared_on_the_class() -> None:
    """Whatever check hands to apply or verify through `self` is a declared, typed attribute
    (annotated on the class with its docstring), never an undeclared one."""
    modules = {task_module(task).__name__ for task in DECLARED} | {linux.__name__}
    checked, undeclared = _undeclared("linux", modules)
    assert checked >= 10 and undeclared == []


def test_windows_state_between_steps_is_declared_on_the_class() -> None:
    from toolkit.remediation import windows

    catalog = Catalog.load([BUILTIN_TASKS])
    modules = {windows.__name__}
    for task in catalog:
        spec = task.implementation("windows")
        if spec is not None:
            modules.add(spec.cls.__module__)
    checked, undeclared = _undeclared("windows", modules)
    assert checked >= 13 and undeclared == []


def test_network_device_state_between_steps_is_declared_on_the_class() -> None:
    catalog = Catalog.load([BUILTIN_TASKS])
    modules = set()
    for task in ("network.device-facts", "backup.network-config"):
        spec = catalog.get(task).implementation("cisco_ios")
        assert spec is not None
        modules.add(spec.cls.__module__)
    checked, undeclared = _undeclared("cisco_ios", modules)
    assert checked >= 5 and undeclared == []


def test_the_readmes_fact_runs_as_written() -> None:
    from pathlib import Path

    readme = (Path(__file__).resolve().parents[2] / "README.md").read_text()
    block = readme.split("**Typed reads.**", 1)[1].split("```python", 1)[1].split("```", 1)[0]
    namespace: dict[str, Any] = {}
    exec(block, namespace)  # its own assert checks the parser
    assert namespace["HostUptime"]().command().text == "cat /proc/uptime"
