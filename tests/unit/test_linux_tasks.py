"""The Linux remediations where the lab cannot hold the real service (systemd, NetworkManager,
systemd-resolved, nscd, dnf, a freshclam daemon): exact commands sent and findings parsed from
recorded outputs, through the real Runner with a strict scripted transport."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import pytest

from tests.fakes import Script
from tests.unit.linuxfakes import CATALOG, run_linux
from toolkit.clock import WeeklyWindow
from toolkit.errors import ValidationError
from toolkit.run.runner import Outcome

# --------------------------------------------------------------------------- patch.apply

APT_FACTS = "id=debian\nlike=\nversion=12\ntool=apt-get\n"
SIM_BOTH = """NOTE: This is only a simulation!
Reading package lists...
Inst openssl [3.0.11-1~deb12u1] (3.0.15-1~deb12u1 Debian-Security:12/stable-security [amd64])
Inst tzdata [2024a-0+deb12u1] (2024b-0+deb12u1 Debian:12.8/stable [all])
Conf openssl (3.0.15-1~deb12u1 Debian-Security:12/stable-security [amd64])
"""
SIM_TZ = "Inst tzdata [2024a-0+deb12u1] (2024b-0+deb12u1 Debian:12.8/stable [all])\n"
FRESH_INDEX = "1795250000.5\n1795253600\n"  # lists refreshed an hour before `date +%s`


def apt_script(state: dict[str, Any], *, upgrade: tuple[int, str, str] | None = None) -> Script:
    def sim(command: Any, stdin: Any) -> tuple[int, str, str]:
        return 0, {0: SIM_BOTH, 1: SIM_TZ, 2: ""}[state["installed"]], ""

    def install(command: Any, stdin: Any) -> tuple[int, str, str]:
        if upgrade is not None:
            return upgrade
        state["installed"] = 2 if " upgrade --with-new-pkgs" in command.text else 1
        return 0, "Setting up openssl ...\n", ""

    return (
        Script()
        .on(re.compile(r"^\. /etc/os-release"), (0, APT_FACTS, ""))
        .on(re.compile(r"^apt-get -s "), sim)
        .on(re.compile(r"apt-config shell LISTS"), (0, FRESH_INDEX, ""))
        .on(re.compile(r"reboot-required"), lambda c, s: (0, state.get("reboot", "no") + "\n", ""))
        .on(re.compile(r"apt-get -o DPkg::Lock::Timeout=120 -q update"), (0, "Hit:1 …\n", ""))
        .on(re.compile(r"apt-get -o DPkg::Lock::Timeout=120 -y -q .*(install|upgrade)"), install)
        .on(re.compile(r"^date "), lambda c, s: (0, state["clock"], ""))
        .on(re.compile(r"shutdown -r"), (0, "", ""))
    )


def test_apt_security_only_installs_only_the_security_update(tmp_path: Path) -> None:
    state: dict[str, Any] = {"installed": 0}
    run = run_linux(tmp_path, "patch.apply", {"security_only": "true"}, apt_script(state))
    assert run.result.outcome == Outcome.FIXED, run.result.message
    check = run.result.check
    assert check is not None and check.facts["pending"] == 2
    assert check.facts["pending_security"] == 1
    assert check.facts["selected"] == ["openssl 3.0.11-1~deb12u1 → 3.0.15-1~deb12u1 [security]"]
    installs = [c for c in run.sent if "--only-upgrade" in c]
    assert len(installs) == 1
    assert installs[0].startswith(
        "sudo -n -u root -- /bin/sh -c 'env DEBIAN_FRONTEND=noninteractive"
    )
    assert installs[0].endswith("install --only-upgrade openssl'") and "tzdata" not in installs[0]
    assert "Dpkg::Options::=--force-confold" in installs[0]
    assert run.steps.count("check") == 4 and "apply" in run.steps and run.steps[-1] == "verify"
    # check only reads, without sudo
    assert all("sudo" not in c.command for c in run.result.commands if c.step == "check")


def test_apt_everything_is_one_upgrade_and_verify_finds_nothing_left(tmp_path: Path) -> None:
    state: dict[str, Any] = {"installed": 0}
    run = run_linux(tmp_path, "patch.apply", {}, apt_script(state))
    assert run.result.outcome == Outcome.FIXED
    assert any(
        c.endswith(
            "-y -q -o Dpkg::Options::=--force-confdef -o Dpkg::Options::=--force-confold upgrade --with-new-pkgs'"
        )
        for c in run.sent
    )
    assert run.result.verify is not None and run.result.verify.facts["still_selected"] == []


def test_apt_held_lock_fails_clearly_after_the_bounded_wait(tmp_path: Path) -> None:
    state: dict[str, Any] = {"installed": 0}
    busy = (
        100,
        "Waiting for cache lock: Could not get lock /var/lib/dpkg/lock-frontend. It is held by "
        "process 4242 (unattended-upgr)...\n",
        "E: Unable to acquire the dpkg frontend lock (/var/lib/dpkg/lock-frontend), is another "
        "process using it?\n",
    )
    run = run_linux(tmp_path, "patch.apply", {}, apt_script(state, upgrade=busy))
    assert run.result.outcome == Outcome.FAILED and run.result.error == "package-manager-busy"
    assert "/var/lib/dpkg/lock-frontend was held by process 4242 (unattended-upgr)" in (
        run.result.message
    )
    assert "more than 120s" in run.result.message and "verify" not in run.steps


@pytest.mark.parametrize(
    ("clock", "scheduled"),
    [("6 02 30 Sat 02:30 UTC", True), ("3 14 00 Wed 14:00 UTC", False)],
    ids=["inside-window", "outside-window"],
)
def test_a_reboot_happens_only_inside_the_window(
    tmp_path: Path, clock: str, scheduled: bool
) -> None:
    state: dict[str, Any] = {"installed": 0, "reboot": "yes", "clock": clock}
    run = run_linux(
        tmp_path,
        "patch.apply",
        {"reboot": "true", "reboot_window": "Sat 01:00-05:00"},
        apt_script(state),
    )
    assert run.result.outcome == Outcome.FIXED
    shutdowns = [c for c in run.sent if "shutdown -r +5" in c]
    assert bool(shutdowns) is scheduled
    verify = run.result.verify
    assert verify is not None and verify.facts["reboot_scheduled"] is scheduled
    if scheduled:
        assert "reboot scheduled" in verify.summary
    else:
        assert "REBOOT REQUIRED" in verify.summary
        assert any("outside 'Sat 01:00-05:00'" in n for n in run.result.notes)


def test_without_a_window_a_reboot_is_never_scheduled(tmp_path: Path) -> None:
    state: dict[str, Any] = {"installed": 0, "reboot": "yes", "clock": "6 02 30 Sat 02:30 UTC"}
    run = run_linux(tmp_path, "patch.apply", {"reboot": "true"}, apt_script(state))
    assert not [c for c in run.sent if "shutdown" in c]
    assert any("no reboot_window" in n for n in run.result.notes)


def test_a_stale_package_index_is_a_finding_even_with_nothing_pending(tmp_path: Path) -> None:
    script = (
        Script()
        .on(re.compile(r"^\. /etc/os-release"), (0, APT_FACTS, ""))
        .on(re.compile(r"^apt-get -s "), (0, "", ""))
        .on(re.compile(r"apt-config shell LISTS"), (0, "1795000000\n1795253600\n", ""))
        .on(re.compile(r"reboot-required"), (0, "no\n", ""))
    )
    run = run_linux(tmp_path, "patch.apply", {}, script, check_only=True)
    assert run.result.outcome == Outcome.WOULD_FIX
    assert "the package index is 70 h old" in run.result.message


DNF_FACTS = "id=rocky\nlike=rhel centos fedora\nversion=9.4\ntool=dnf\ntool=yum\n"
DNF_SECURITY = "RLSA-2024:1234 Important/Sec. openssl-1:3.0.7-27.el9.x86_64\n"
DNF_PENDING = """
openssl.x86_64                 1:3.0.7-27.el9           baseos
kernel.x86_64                  5.14.0-427.el9           baseos
vim-minimal.x86_64             2:8.2.2637-21.el9        baseos
"""


def test_dnf_security_only_with_an_exclusion(tmp_path: Path) -> None:
    state = {"done": False}

    def check_update(command: Any, stdin: Any) -> tuple[int, str, str]:
        return (0, "", "") if state["done"] else (100, DNF_PENDING, "")

    def upgrade(command: Any, stdin: Any) -> tuple[int, str, str]:
        state["done"] = True
        return 0, "Complete!\n", ""

    script = (
        Script()
        .on(re.compile(r"^\. /etc/os-release"), (0, DNF_FACTS, ""))
        .on("dnf -q -C updateinfo list --security --available", (0, DNF_SECURITY, ""))
        .on("dnf -q -C check-update", check_update)
        .on(re.compile(r"reboot-required"), (0, "no\n", ""))
        .on(re.compile(r"dnf -y -q makecache"), (0, "", ""))
        .on(re.compile(r"dnf -y -q upgrade"), upgrade)
    )
    run = run_linux(tmp_path, "patch.apply", {"security_only": "true", "exclude": "kernel"}, script)
    assert run.result.outcome == Outcome.FIXED, run.result.message
    assert run.result.check is not None
    assert run.result.check.facts["selected"] == ["openssl (new) → 1:3.0.7-27.el9 [security]"]
    upgrade_cmd = next(c for c in run.sent if "upgrade" in c)
    assert (
        upgrade_cmd
        == "sudo -n -u root -- /bin/sh -c 'dnf -y -q upgrade --security --exclude=kernel'"
    )


def test_a_host_without_apt_or_dnf_fails_with_the_reason(tmp_path: Path) -> None:
    script = Script().on(re.compile(r"^\. /etc/os-release"), (0, "id=alpine\nversion=3.20\n", ""))
    run = run_linux(tmp_path, "patch.apply", {}, script, check_only=True)
    assert run.result.outcome == Outcome.FAILED
    assert "has neither apt nor dnf/yum" in run.result.message and "alpine" in run.result.message


@pytest.mark.parametrize(
    ("spec", "day", "minute", "inside"),
    [
        ("Sat 01:00-05:00", 6, 90, True),
        ("Sat 01:00-05:00", 6, 300, False),
        ("Mon-Fri 22:00-06:00", 3, 23 * 60, True),
        ("Mon-Fri 22:00-06:00", 6, 60, True),  # Friday night runs into Saturday
        ("Mon-Fri 22:00-06:00", 1, 60, False),  # Sunday night is not in Mon-Fri
        ("Sat,Sun 00:00-23:59", 7, 600, True),
        ("daily 02:00-04:00", 2, 150, True),
        ("Fri-Mon 01:00-02:00", 7, 70, True),  # a range across the week's end
        # the maintenance windows' forms, one syntax for both
        ("Sat 22:00-Mon 06:00", 7, 720, True),
        ("Sat 22:00-Mon 06:00", 1, 360, False),
        ("Sun 01:00-01:00", 7, 1439, True),  # an end not after the start: 24 hours
        ("Sun 22:00-24:00", 7, 1439, True),
        ("Sun 22:00-24:00", 1, 0, False),
        ("Mon - Fri 22:00 - 06:00", 2, 30, True),
    ],
)
def test_reboot_windows_are_weekly_windows(spec: str, day: int, minute: int, inside: bool) -> None:
    assert WeeklyWindow.parse(spec, "reboot window").contains(day, minute) is inside


def test_the_old_name_of_a_reboot_window_still_imports() -> None:
    from toolkit.remediation.linux import TimeWindow

    assert TimeWindow is WeeklyWindow


@pytest.mark.parametrize(
    "bad", ["Sat", "Funday 01:00-02:00", "Sat 25:00-26:00", "Sat 1-2", "Mon-Fri 22:00-Sat 01:00"]
)
def test_bad_time_windows_are_refused(bad: str) -> None:
    with pytest.raises(ValidationError, match="reboot window"):
        WeeklyWindow.parse(bad, "reboot window")


# --------------------------------------------------------------------------- network

RESOLVED_STATS = """DNSSEC supported by current servers: no

Transactions
Current Transactions: 0
  Total Transactions: 123

Cache
  Current Cache Size: {n}
          Cache Hits: 17
        Cache Misses: 106
"""
NSCD_STATS = """nscd configuration:

              0  server debug level
hosts cache:

            yes  cache is enabled
            yes  cache is persistent
            211  suggested size
             {n}  current number of cached values
"""


@pytest.mark.parametrize("cache", ["resolved", "nscd"])
def test_flush_dns_uses_the_cache_the_host_runs(tmp_path: Path, cache: str) -> None:
    state = {"n": 42}
    stats = RESOLVED_STATS if cache == "resolved" else NSCD_STATS

    def flush(command: Any, stdin: Any) -> tuple[int, str, str]:
        state["n"] = 0
        return 0, "", ""

    script = (
        Script()
        .on(
            re.compile(
                r"^if \[ -d /run/systemd/system \]; then systemctl is-active --quiet NetworkManager"
            ),
            (0, f"cache={cache}\n", ""),
        )
        .on(
            re.compile(r"resolvectl statistics|nscd -g"),
            lambda c, s: (0, stats.format(n=state["n"]), ""),
        )
        .on(re.compile(r"resolvectl flush-caches|nscd -i hosts"), flush)
    )
    run = run_linux(tmp_path, "network.flush-dns", {}, script)
    assert run.result.outcome == Outcome.FIXED
    wanted = "resolvectl flush-caches" if cache == "resolved" else "nscd -i hosts"
    assert f"sudo -n -u root -- /bin/sh -c '{wanted}'" in run.sent
    assert run.result.check is not None and run.result.check.facts["caches"] == {cache: 42}
    again = run_linux(tmp_path, "network.flush-dns", {}, script, ledger=run.ledger)
    assert again.result.outcome == Outcome.ALREADY_OK  # one flush per ticket
    assert "flushed under INC-1042" in again.result.message


def test_flush_dns_on_a_host_without_a_local_cache_is_already_ok(tmp_path: Path) -> None:
    script = Script().on(re.compile(r"systemctl is-active --quiet NetworkManager"), (0, "\n", ""))
    run = run_linux(tmp_path, "network.flush-dns", {}, script)
    assert run.result.outcome == Outcome.ALREADY_OK and len(run.sent) == 1


def addr(ifname: str, *addresses: str) -> str:
    return json.dumps(
        [
            {
                "ifname": ifname,
                "flags": ["BROADCAST", "UP"],
                "addr_info": [{"family": "inet", "local": a, "prefixlen": 24} for a in addresses],
            }
        ]
    )


ROUTE = json.dumps([{"dst": "default", "gateway": "192.168.1.1", "dev": "enp3s0"}])


@pytest.mark.parametrize(
    ("facts", "release", "command"),
    [
        ("manager=nm", "true", "nmcli device disconnect enp3s0 && nmcli device connect enp3s0"),
        ("manager=nm", "false", "nmcli device reapply enp3s0"),
        ("manager=networkd", "true", "networkctl renew enp3s0"),
        ("dhclient=yes", "true", "dhclient -r enp3s0; dhclient -1 enp3s0"),
    ],
)
def test_renew_dhcp_with_the_hosts_client(
    tmp_path: Path, facts: str, release: str, command: str
) -> None:
    script = (
        Script()
        .on(re.compile(r"systemctl is-active --quiet NetworkManager"), (0, facts + "\n", ""))
        .on("ip -j -4 route show default", (0, ROUTE, ""))
        .on("ip -j -4 addr show dev enp3s0", (0, addr("enp3s0", "192.168.1.23"), ""))
        .on(re.compile(r"nmcli|networkctl|dhclient"), (0, "", ""))
    )
    run = run_linux(tmp_path, "network.renew-dhcp", {"release": release}, script)
    assert run.result.outcome == Outcome.FIXED
    changes = [c.command for c in run.result.commands if c.step == "apply"]
    assert changes == ["sudo -n -u root -- /bin/sh -c '" + command + "'"]


def test_renew_dhcp_reports_an_apipa_address_as_the_problem(tmp_path: Path) -> None:
    script = (
        Script()
        .on(
            re.compile(r"systemctl is-active --quiet NetworkManager"), (0, "manager=networkd\n", "")
        )
        .on("ip -j -4 addr show dev eth1", (0, addr("eth1", "169.254.7.9"), ""))
    )
    run = run_linux(tmp_path, "network.renew-dhcp", {"adapter": "eth1"}, script, check_only=True)
    assert run.result.outcome == Outcome.WOULD_FIX
    assert run.result.message == "no usable DHCP address on eth1 169.254.7.9 (networkd)"


def test_network_restart_waits_until_networkmanager_is_connected(tmp_path: Path) -> None:
    state = {"restarted": False, "polls": 0}

    def nm_state(command: Any, stdin: Any) -> tuple[int, str, str]:
        if state["restarted"]:
            state["polls"] += 1
            return 0, ("connecting\n" if state["polls"] < 2 else "connected\n"), ""
        return 0, "disconnected\n", ""

    def restart(command: Any, stdin: Any) -> tuple[int, str, str]:
        state["restarted"] = True
        return 0, "", ""

    script = (
        Script()
        .on(re.compile(r"systemctl is-active --quiet NetworkManager"), (0, "manager=nm\n", ""))
        .on(
            "ip -j -4 route show default",
            lambda c, s: (0, ROUTE if state["polls"] >= 2 else "[]", ""),
        )
        .on("nmcli -t -f STATE general", nm_state)
        .on(re.compile(r"systemctl restart NetworkManager"), restart)
        .on("sleep 1", (0, "", ""))
    )
    run = run_linux(tmp_path, "network.restart", {}, script)
    assert run.result.outcome == Outcome.FIXED
    assert run.result.message == "was: NetworkManager: disconnected, no default route"
    assert run.result.verify is not None
    assert run.result.verify.summary == "online again: connected, a default route"
    assert CATALOG.get("network.restart").disruptive


def test_network_diagnose_reports_findings(tmp_path: Path) -> None:
    script = (
        Script()
        .on("ip -j -4 addr show", (0, addr("enp3s0", "192.168.1.23"), ""))
        .on("ip -j -4 route show default", (0, ROUTE, ""))
        .on(re.compile(r"^sed -n .*resolv.conf"), (0, "192.168.1.1\n", ""))
        .on(re.compile(r"ping -c 1 -W 2 192.168.1.1"), (0, "ok\n", ""))
        .on("getent ahosts intranet.example.com", (2, "", ""))
        .on(re.compile(r"/dev/tcp/.* mail.example.com 443"), (0, "", ""))
    )
    run = run_linux(
        tmp_path,
        "network.diagnose",
        {"name": "intranet.example.com", "target": "mail.example.com:443"},
        script,
        check_only=True,
    )
    assert run.result.outcome == Outcome.WOULD_FIX
    assert run.result.message.startswith("intranet.example.com does not resolve (getent exit 2); ")
    facts = run.result.check.facts if run.result.check else {}
    assert facts["interfaces"] == {"enp3s0": ["192.168.1.23"]}
    assert facts["gateway_reachable"] is True and facts["tcp"]["open"] is True
    assert facts["dns_servers"] == ["192.168.1.1"]


# --------------------------------------------------------------------------- service.restart


def systemd_script(state: dict[str, Any], unit: str = "nginx.service", extra: str = "") -> Script:
    def show(command: Any, stdin: Any) -> tuple[int, str, str]:
        started = "1000" if not state.get("restarted") else "2000"
        pid = "4242" if not state.get("restarted") else "4343"
        return (
            0,
            f"Id={unit}\nLoadState=loaded\nActiveState=active\nSubState=running\nMainPID={pid}\n"
            f"UnitFileState=enabled\nExecMainStartTimestampMonotonic={started}\n{extra}",
            "",
        )

    def restart(command: Any, stdin: Any) -> tuple[int, str, str]:
        state["restarted"] = True
        return 0, "", ""

    return (
        Script()
        .on(
            re.compile(r"^if \[ -d /run/systemd/system \]; then echo systemd"), (0, "systemd\n", "")
        )
        .on(re.compile(r"^systemctl show "), show)
        .on(re.compile(r"systemctl restart "), restart)
    )


def test_service_restart_under_systemd(tmp_path: Path) -> None:
    state: dict[str, Any] = {}
    run = run_linux(tmp_path, "service.restart", {"service": "nginx"}, systemd_script(state))
    assert run.result.outcome == Outcome.FIXED
    assert "sudo -n -u root -- /bin/sh -c 'systemctl restart nginx.service'" in run.sent
    assert run.result.verify is not None and run.result.verify.facts["pid"] == 4343
    again = run_linux(
        tmp_path, "service.restart", {"service": "nginx"}, systemd_script(state), ledger=run.ledger
    )
    assert again.result.outcome == Outcome.ALREADY_OK and "already restarted under INC-1042" in (
        again.result.message
    )
    other = run_linux(
        tmp_path,
        "service.restart",
        {"service": "php-fpm"},
        systemd_script({}, "php-fpm.service"),
        ledger=run.ledger,
    )
    assert other.result.outcome == Outcome.FIXED  # the one-shot rule is per service


@pytest.mark.parametrize("unit", ["ssh", "sshd.service", "dbus"])
def test_services_itops_depends_on_are_refused(tmp_path: Path, unit: str) -> None:
    run = run_linux(tmp_path, "service.restart", {"service": unit}, Script())
    assert run.result.outcome == Outcome.FAILED and "itops depends on it" in run.result.message
    assert run.sent == []


def test_an_alias_of_a_protected_service_is_refused_too(tmp_path: Path) -> None:
    # `openssh-server` is not on the list, but systemd resolves it to ssh.service
    script = systemd_script({}, unit="ssh.service")
    run = run_linux(tmp_path, "service.restart", {"service": "openssh-server"}, script)
    assert run.result.outcome == Outcome.FAILED
    assert "openssh-server (ssh.service)" in run.result.message
    assert not [c for c in run.sent if "restart" in c]


def test_a_masked_service_is_left_alone(tmp_path: Path) -> None:
    script = systemd_script({}, extra="UnitFileState=masked\n")
    run = run_linux(tmp_path, "service.restart", {"service": "nginx"}, script)
    assert run.result.outcome == Outcome.FAILED and "masked" in run.result.message
    assert not [c for c in run.sent if "restart" in c]


def test_service_restart_with_init_scripts(tmp_path: Path) -> None:
    state = {"running": False}

    def status(command: Any, stdin: Any) -> tuple[int, str, str]:
        return (0 if state["running"] else 3), "", ""

    def restart(command: Any, stdin: Any) -> tuple[int, str, str]:
        state["running"] = True
        return 0, "", ""

    script = (
        Script()
        .on(re.compile(r"^if \[ -d /run/systemd/system \]; then echo systemd"), (0, "sysv\n", ""))
        .on("test -x /etc/init.d/postfix", (0, "", ""))
        .on(re.compile(r"service postfix status"), status)
        .on(re.compile(r"service postfix restart"), restart)
    )
    run = run_linux(tmp_path, "service.restart", {"service": "postfix"}, script)
    assert run.result.outcome == Outcome.FIXED
    assert run.result.message == "restarted postfix (sysv) (was: postfix is stopped (sysv))"


# --------------------------------------------------------------------------- av.update

DB_BEFORE = (
    "dir|/var/lib/clamav\nnow|1795260000\n"
    "db|daily.cld|1000|1794800000|aaaa|27400|15 Nov 2026 09-30 -0500\n"
    "db|main.cvd|9000|1790000000|bbbb|62|16 Sep 2021 14-32 -0400\n"
)
DB_AFTER = DB_BEFORE.replace("27400|15 Nov 2026", "27405|21 Nov 2026")


def test_av_update_pauses_the_freshclam_daemon_and_reloads_clamd(tmp_path: Path) -> None:
    state = {"updated": False}

    def freshclam(command: Any, stdin: Any) -> tuple[int, str, str]:
        state["updated"] = True
        return 0, "daily.cld updated (version: 27405, sigs: 2070000)\n", ""

    script = (
        Script()
        .on(
            re.compile(r"^conf=/etc/clamav/freshclam.conf;"),
            lambda c, s: (0, DB_AFTER if state["updated"] else DB_BEFORE, ""),
        )
        .on(
            re.compile(r"systemctl is-active --quiet clamav-freshclam"),
            (0, "freshclam=systemd\nclamd=up\n", ""),
        )
        .on(re.compile(r"systemctl (stop|start) clamav-freshclam"), (0, "", ""))
        .on(re.compile(r"freshclam --config-file=/etc/clamav/freshclam.conf --stdout"), freshclam)
        .on(re.compile(r"clamdscan --reload"), (0, "RELOADING\n", ""))
        .on(
            re.compile(r"^t=\$\(mktemp\) && printf %s 'X5O!P%@AP"),
            (1, "/tmp/tmp.x: Eicar-Signature FOUND\n", ""),
        )
    )
    run = run_linux(tmp_path, "av.update", {}, script)
    assert run.result.outcome == Outcome.FIXED, run.result.message
    applied = [c.command for c in run.result.commands if c.step == "apply"]
    assert [a.split(" -c ")[-1] for a in applied[1:]] == [
        "'systemctl stop clamav-freshclam'",
        "'freshclam --config-file=/etc/clamav/freshclam.conf --stdout'",
        "'systemctl start clamav-freshclam'",
        "'clamdscan --reload'",
    ]
    check = run.result.check
    assert check is not None and check.facts["version"] == "daily.cld:27400 main.cvd:62"
    assert check.facts["age_days"] > 1
    verify = run.result.verify
    assert verify is not None and verify.facts["detection_test"] == "detected"
    assert "daily.cld:27405" in verify.summary


def test_a_failed_freshclam_still_restarts_the_daemon(tmp_path: Path) -> None:
    script = (
        Script()
        .on(re.compile(r"^conf=/etc/clamav/freshclam.conf;"), (0, DB_BEFORE, ""))
        .on(
            re.compile(r"systemctl is-active --quiet clamav-freshclam"),
            (0, "freshclam=systemd\n", ""),
        )
        .on(re.compile(r"systemctl (stop|start) clamav-freshclam"), (0, "", ""))
        .on(
            re.compile(r"freshclam --config-file"),
            (62, "ERROR: Can't connect to port 80 of host 10.0.0.9\n", ""),
        )
    )
    run = run_linux(tmp_path, "av.update", {}, script)
    assert run.result.outcome == Outcome.FAILED
    assert "freshclam exited 62: ERROR: Can't connect" in run.result.message
    assert run.sent[-1].endswith("'systemctl start clamav-freshclam'")


def test_av_update_with_max_age_0_is_fixed_when_the_mirror_has_nothing_newer(
    tmp_path: Path,
) -> None:
    # max_age_days=0 means "update now": freshclam finds nothing newer, detection works — the
    # signatures are as current as they can be, so the outcome is fixed, not failed.
    script = (
        Script()
        .on(re.compile(r"^conf=/etc/clamav/freshclam.conf;"), (0, DB_BEFORE, ""))
        .on(re.compile(r"systemctl is-active --quiet clamav-freshclam"), (0, "", ""))
        .on(
            re.compile(r"freshclam --config-file"),
            (0, "daily.cld database is up-to-date (version: 27400)\n", ""),
        )
        .on(
            re.compile(r"^t=\$\(mktemp\) && printf %s 'X5O!P%@AP"),
            (1, "/tmp/tmp.x: Eicar-Signature FOUND\n", ""),
        )
    )
    run = run_linux(tmp_path, "av.update", {"max_age_days": "0"}, script)
    assert run.result.outcome == Outcome.FIXED, run.result.message
    assert "the newest the mirror has" in str(run.result.verify.summary)  # type: ignore[union-attr]


def test_a_quick_scan_is_bounded_and_skips_the_excluded_folders(tmp_path: Path) -> None:
    script = (
        Script()
        .on(re.compile(r"^conf=/etc/clamav/freshclam.conf;"), (0, DB_BEFORE, ""))
        .on(re.compile(r"clamscan -r -i"), (0, "", ""))
    )
    run = run_linux(
        tmp_path, "av.scan", {}, script, check_only=True,
        host_vars={"av_exclude_dirs": ["/srv/itops", "/opt/itops/.venv"]},
    )  # fmt: skip
    assert run.result.outcome == Outcome.ALREADY_OK, run.result.message
    scan = next(c for c in run.sent if "clamscan" in c)
    for part in ("--max-filesize=25M", "--max-scansize=100M", "--exclude-dir=^/srv/itops",
                 "--exclude-dir=^/opt/itops/\\.venv", "/home /root /tmp"):  # fmt: skip
        assert part in scan, scan
    bad = run_linux(
        tmp_path, "av.scan", {}, script, check_only=True, host_vars={"av_exclude_dirs": "rel/x"}
    )
    assert bad.result.outcome == Outcome.FAILED and "not an absolute path" in bad.result.message


def test_itops_bytecode_carries_no_eicar_signature(tmp_path: Path) -> None:
    # av.scan found itops' own __pycache__ as EICAR: two literals joined by `+` compile to one.
    import py_compile

    from toolkit.remediation.catalog import BUILTIN_TASKS

    compiled = py_compile.compile(
        str(BUILTIN_TASKS / "antivirus.py"), cfile=str(tmp_path / "av.pyc"), doraise=True
    )
    assert b"X5O!P%@AP[4\\PZX54(P^)7CC)7}$EICAR" not in Path(compiled).read_bytes()


def test_linux_and_windows_read_numbers_with_one_helper() -> None:
    from toolkit.remediation import linux, windows

    assert linux.as_int is windows.as_int is windows.number
    assert [linux.as_int(v) for v in (" 42 ", 42, 42.0, None, "", "n/a")] == [42, 42, 42, 0, 0, 0]
    assert linux.as_int("x", -1) == -1


# --------------------------------------------------------------------------- disk.cleanup


def test_disk_cleanup_frees_space_step_by_step_until_enough(tmp_path: Path) -> None:
    """The measured state passes from check to apply as a declared DiskState; apply stops
    once the filesystem has enough free space, verify reports what was freed."""
    avail = {"bytes": 512 * 2**20}

    def probe(command: Any, stdin: Any) -> tuple[int, str, str]:
        return (
            0,
            f"total={10 * 2**30}\navail={avail['bytes']}\nmount=/\ncache=2147483648\n"
            "journal=96.0M\nold_logs=0\nrotated_logs=0\n",
            "",
        )

    def clean(command: Any, stdin: Any) -> tuple[int, str, str]:
        avail["bytes"] += 2 * 2**30
        return 0, "", ""

    script = (
        Script().on(re.compile(r"df -P -B1 -- /"), probe).on(re.compile(r"apt-get clean"), clean)
    )
    run = run_linux(tmp_path, "disk.cleanup", {}, script)
    assert run.result.outcome == Outcome.FIXED
    assert run.result.check is not None and run.result.check.facts["free_percent"] == 5.0
    assert run.result.verify is not None
    assert run.result.verify.summary.endswith("after freeing 2.0 GB")
    assert not any("journalctl --vacuum" in c for c in run.sent)  # enough after the first step


# --------------------------------------------------------------------------- the result says what was done

PAUSED = (
    "printer office disabled since Sat Nov 21 09:00:00 2026 -\n\tpaper jam\n"
    "office accepting requests since Sat Nov 21 09:00:00 2026\n"
    "office-7  jdoe  1024  Sat Nov 21 09:10:00 2026\n"
    "office-8  jdoe  1024  Sat Nov 21 09:11:00 2026\n"
    "office-9  jdoe  1024  Sat Nov 21 09:12:00 2026\n"
    "now Sat Nov 21 10:00:00 2026\n"
)
RESUMED = (
    "printer office is idle.  enabled since Sat Nov 21 10:00:01 2026\n"
    "office accepting requests since Sat Nov 21 09:00:00 2026\n"
    "now Sat Nov 21 10:00:02 2026\n"
)


def test_a_fixed_host_says_what_was_done_then_what_was_found(tmp_path: Path) -> None:
    # It used to repeat the problem: "fixed  office: disabled (paper jam), 3 stuck job(s)".
    script = (
        Script()
        .on(re.compile(r"^lpstat -p -a -o"), (0, PAUSED, ""), (0, PAUSED, ""), (0, RESUMED, ""))
        .on("cancel office-7 office-8 office-9", (0, "", ""))
        .on("/usr/sbin/cupsenable office", (0, "", ""))
    )
    run = run_linux(tmp_path, "printer.clear-queue", {}, script)
    assert run.result.outcome == Outcome.FIXED, run.result.message
    assert run.result.message == (
        "resumed office, cancelled 3 stuck job(s) (was: office: disabled (paper jam), 3 stuck job(s))"
    )
    # --json keeps both findings and the notes apart
    data = run.result.as_dict()
    assert data["check"]["summary"] == "office: disabled (paper jam), 3 stuck job(s)"
    assert data["notes"] == ["resumed office, cancelled 3 stuck job(s)"]


def test_the_quarantine_path_of_av_scan_is_in_the_result(tmp_path: Path) -> None:
    found = "/home/jdoe/eicar.com: Win.Test.EICAR_HDB-1 FOUND\n"
    moved = found + "/home/jdoe/eicar.com: moved to '/var/lib/itops/quarantine/eicar.com'\n"
    script = (
        Script()
        .on(re.compile(r"^conf=/etc/clamav/freshclam.conf;"), (0, DB_BEFORE, ""))
        .on(re.compile(r"clamscan -r -i .*--move="), (1, moved, ""))
        .on(re.compile(r"clamscan -r -i"), (1, found, ""), (0, "", ""))
        .on(re.compile(r"install -d -m 0700"), (0, "", ""))
    )
    run = run_linux(tmp_path, "av.scan", {}, script)
    assert run.result.outcome == Outcome.FIXED, run.result.message
    assert "quarantined /home/jdoe/eicar.com → /var/lib/itops/quarantine/eicar.com" in (
        run.result.message
    )
    assert run.result.message.endswith(
        "(was: 1 detection(s): /home/jdoe/eicar.com (Win.Test.EICAR_HDB-1))"
    )
