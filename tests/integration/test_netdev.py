"""Network devices no one here wrote, over real SSH through netmiko: FakeNOS (five platforms, canned
output) and fake-switches (stateful Cisco, with itops' labelled port layer), started by the lab."""

from __future__ import annotations

import json
import re
import secrets
import subprocess
import time
from pathlib import Path
from typing import Any

import pytest

from tests.integration.conftest import LabEnv
from toolkit.lab.core import ed25519_keypair

pytestmark = pytest.mark.integration


def fix(lab: LabEnv, *args: str, workspace: Path | None = None) -> tuple[int, dict[str, Any]]:
    done = lab.itops("fix", *args, "--json", workspace=workspace)
    assert done.stdout.startswith("{"), done.stdout + done.stderr
    return done.returncode, json.loads(done.stdout)


def one(report: dict[str, Any]) -> dict[str, Any]:
    assert len(report["hosts"]) == 1
    host: dict[str, Any] = report["hosts"][0]
    return host


def netdev_secrets(lab: LabEnv) -> list[str]:
    folder = lab.lab.dir / "netdev"
    return [(folder / "password").read_text(), (folder / "enable").read_text()]


def test_every_simulated_platform_answers_with_pinned_keys_login_and_enable(lab: LabEnv) -> None:
    done = lab.itops("inventory", "check", "netlab", "--json")
    assert done.returncode == 0, done.stdout + done.stderr
    status = {row["host"]: row["status"] for row in json.loads(done.stdout)}
    assert status == dict.fromkeys(
        ["sw-ios-01", "sw-eos-01", "sw-nxos-01", "rt-junos-01", "sw-vrp-01", "sw-01", "sw-02"], "ok"
    )


def test_device_facts_are_parsed_on_every_platform(lab: LabEnv) -> None:
    code, report = fix(lab, "network.device-facts", "netlab", "--check")
    assert code == 0
    for host in report["hosts"]:
        facts = host["check"]["facts"]
        assert host["outcome"] == "already-ok", host
        assert facts["model"] and facts["os_version"], (host["host"], facts)
        assert facts["parsed_by"]["version"] in ("textfsm", "fallback")
    by_host = {h["host"]: h["check"]["facts"] for h in report["hosts"]}
    assert by_host["sw-01"]["model"] == "WS-C3750G-24TS-1U"
    assert by_host["sw-01"]["parsed_by"] == {"version": "textfsm", "interfaces": "textfsm"}
    assert by_host["sw-eos-01"]["parsed_by"]["version"] == "fallback"  # the template fails on it
    assert "failed" in by_host["sw-eos-01"]["notes"][0]


def test_login_enable_and_host_key_refusals_are_typed_and_leak_nothing(
    lab: LabEnv, tmp_path: Path
) -> None:
    known = (lab.lab.dir / "known_hosts").read_text().splitlines()
    addresses = json.loads((lab.lab.dir / "state.json").read_text())["data"]["netdev"]
    ios, switch = "sw-ios-01", "sw-01"
    ports, hosts = addresses["ports"], addresses["devices"]
    wrong = tmp_path / "wrong"
    wrong.write_text("Wr0ng-Canary-Value")
    wrong.chmod(0o600)
    _, other_key = ed25519_keypair("not-the-device")
    mismatch = f"[{hosts['sw-nxos-01']}]:{ports['sw-nxos-01']}"
    unknown = f"[{hosts['sw-vrp-01']}]:{ports['sw-vrp-01']}"
    pins = [ln for ln in known if not ln.startswith((mismatch, unknown))]
    pins.append(f"{mismatch} {' '.join(other_key.split()[:2])}")

    def host(name: str, device: str, **more: str) -> str:
        extra = "".join(f", {k}: {v}" for k, v in more.items())
        return (
            f"        {name}: {{ansible_host: {hosts[device]}, ansible_port: {ports[device]}, "
            f"platform: cisco_ios{extra}}}\n"
        )

    folder = lab.lab.dir / "netdev"
    inventory = (
        "all:\n  children:\n    refused:\n"
        f"      vars: {{ansible_user: netops, password: 'file:{folder / 'password'}', "
        f"enable_secret: 'file:{folder / 'enable'}'}}\n"
        "      hosts:\n"
        + host("bad-password", ios, password=f"'file:{wrong}'")
        + host("bad-enable", switch, enable_secret=f"'file:{wrong}'")
        + host("bad-key", "sw-nxos-01")
        + host("no-key", "sw-vrp-01")
    )
    ws = lab.other_workspace(
        "refusals", known_hosts="\n".join(pins) + "\n", extra_inventory=inventory
    )
    code, report = fix(lab, "network.device-facts", "refused", "--check", workspace=ws)
    outcomes = {h["host"]: (h["outcome"], h["error"]) for h in report["hosts"]}
    assert outcomes == {
        "bad-password": ("unreachable", "auth-failed"),
        "bad-enable": ("unreachable", "auth-failed"),
        "bad-key": ("unreachable", "host-key-mismatch"),
        "no-key": ("unreachable", "host-key-unknown"),
    }, outcomes
    assert code == 3
    messages = {h["host"]: h["message"] for h in report["hosts"]}
    assert "enable mode refused" in messages["bad-enable"]
    assert "possible interception" in messages["bad-key"]
    written = b"".join(p.read_bytes() for p in (ws / ".itops").rglob("*") if p.is_file())
    assert b"Wr0ng-Canary-Value" not in written and "Wr0ng-Canary-Value" not in json.dumps(report)


def test_backup_history_diff_and_no_secret_anywhere(lab: LabEnv) -> None:
    first = lab.itops("backup", "run", "netlab", "--ticket", "CHG-4001")
    assert first.returncode == 0, first.stdout + first.stderr
    assert re.search(r"^sw-ios-01\s+(new|unchanged|changed)\b", first.stdout, re.M)
    # change a port on the stateful switch, then the nightly backup shows exactly that
    current = one(
        fix(
            lab, "network.port-vlan", "sw-02", "-p", "interface=Fa0/20", "-p", "vlan=20", "--check"
        )[1]
    )
    vlan = "30" if current["outcome"] == "already-ok" else "20"
    code, moved = fix(
        lab,
        "network.port-vlan",
        "sw-02",
        "-p",
        "interface=Fa0/20",
        "-p",
        f"vlan={vlan}",
        "--ticket",
        "INC-4002",
    )
    assert code == 0 and one(moved)["outcome"] == "fixed"
    second = lab.itops("backup", "run", "netlab", "--ticket", "CHG-4003")
    assert second.returncode == 0, second.stdout + second.stderr
    assert re.search(r"^sw-02\s+changed\s+changed since \w+: \+1 -[01] lines", second.stdout, re.M)
    assert re.search(r"^sw-ios-01\s+unchanged\b", second.stdout, re.M)
    assert f"+ switchport access vlan {vlan}" in second.stdout
    assert "backup: commit" in second.stdout
    history = lab.itops("backup", "history", "sw-02")
    assert history.returncode == 0 and "CHG-4003" in history.stdout
    diff = lab.itops("backup", "diff", "sw-02")
    assert f"+ switchport access vlan {vlan}" in diff.stdout
    assert lab.itops("backup", "diff", "sw-02", "--not-a-rev").returncode != 0

    repo = lab.root / ".itops" / "backups" / "network"
    assert repo.stat().st_mode & 0o777 == 0o700  # git's objects are 0444: the folder guards them
    stored = (repo / "sw-ios-01.cfg").read_text()
    assert "enable secret 0 <removed>" in stored and "snmp-server community <removed> RO" in stored
    assert "Last configuration change" not in stored and "Current configuration" not in stored
    objects = subprocess.run(
        ["git", "-C", str(repo), "cat-file", "--batch-all-objects", "--batch"],
        capture_output=True,
    ).stdout
    written = b"".join(
        p.read_bytes()
        for p in (lab.root / ".itops").rglob("*")
        if p.is_file() and "lab" not in p.relative_to(lab.root / ".itops").parts
    )
    sessions = list((lab.root / ".itops" / "sessions").glob("*.log"))
    assert sessions and any("Password: ********" in p.read_text() for p in sessions)
    log = lab.itops("log", "--json")
    for secret in netdev_secrets(lab):
        for result in (first, second, history, diff, log):
            assert secret not in result.stdout + result.stderr
        assert secret.encode() not in objects + written


def test_port_recover_bounces_an_err_disabled_port_and_escalates_a_dead_link(lab: LabEnv) -> None:
    assert lab.itops("lab", "break", "port", "sw-01", "--interface", "Fa0/11").returncode == 0
    code, report = fix(lab, "network.port-recover", "sw-01", "-p", "interface=Fa0/11", "--check")
    assert code == 4 and "err-disabled (psecure-violation)" in one(report)["message"]
    # the violation recurs while the sticky MAC stays: a bounce alone would not hold, so the fix
    # fails at once (no bounce, no wait) saying to clear the sticky MACs
    started = time.monotonic()
    code, report = fix(
        lab,
        "network.port-recover",
        "sw-01",
        "-p",
        "interface=Fa0/11",
        "-p",
        "wait=1",
        "--ticket",
        "INC-4010",
    )
    message = one(report)["message"]
    assert code == 1 and "-p clear_sticky=true" in message and "sticky MAC(s)" in message
    assert time.monotonic() - started < 15, "failed without waiting for the link"
    assert not any(c["command"].startswith("configure") for c in one(report)["commands"])
    code, report = fix(
        lab,
        "network.port-recover",
        "sw-01",
        "-p",
        "interface=Fa0/11",
        "-p",
        "clear_sticky=true",
        "-p",
        "wait=5",
        "--ticket",
        "INC-4010",
    )
    host = one(report)
    assert code == 0 and host["outcome"] == "fixed", host
    sent = [c["command"] for c in host["commands"]]
    assert "clear port-security sticky interface Fa0/11" in sent
    assert "configure: interface Fa0/11 ; shutdown ; no shutdown" in sent
    assert host["verify"]["summary"] == "Fa0/11 is up (connected)"

    assert (
        lab.itops(
            "lab", "break", "port", "sw-01", "--interface", "Fa0/12", "--kind", "link-down"
        ).returncode
        == 0
    )
    code, report = fix(
        lab,
        "network.port-recover",
        "sw-01",
        "-p",
        "interface=Fa0/12",
        "-p",
        "wait=1",
        "--ticket",
        "INC-4011",
    )
    assert code == 1 and "still notconnect" in one(report)["message"]
    lab.itops("lab", "break", "port", "sw-01", "--interface", "Fa0/12", "--kind", "clear")


def test_the_switch_port_down_runbook_clears_sticky_macs_before_escalating(lab: LabEnv) -> None:
    assert lab.itops("lab", "break", "port", "sw-01", "--interface", "Fa0/13").returncode == 0
    done = lab.itops(
        "runbook", "run", "switch-port-down", "sw-01", "-p", "interface=Fa0/13",
        "--ticket", "INC-4012", "--json",
    )  # fmt: skip
    report = json.loads(done.stdout)
    outcomes = {s["name"]: [h["outcome"] for h in s["hosts"]] for s in report["steps"]}
    assert outcomes["recover port"] == ["failed"], report
    assert outcomes["clear sticky and recover"] == ["fixed"], report
    assert done.returncode == 0 and report["escalated"] == {}, report


def test_port_vlan_moves_saves_only_after_verify_and_refuses_a_missing_vlan(lab: LabEnv) -> None:
    args = ["network.port-vlan", "sw-01", "-p", "interface=Fa0/13"]
    assert fix(lab, *args, "-p", "vlan=20", "--ticket", "INC-4020")[0] == 0  # a known start
    code, report = fix(lab, *args, "-p", "vlan=30", "--ticket", "INC-4020")
    host = one(report)
    assert code == 0 and host["outcome"] == "fixed", host
    steps = [(c["step"], c["command"]) for c in host["commands"]]
    push = steps.index(("apply", "configure: interface Fa0/13 ; switchport access vlan 30"))
    assert steps.index(("apply", "save running configuration")) > push
    assert (
        one(fix(lab, *args, "-p", "vlan=30", "--ticket", "INC-4020")[1])["outcome"] == "already-ok"
    )
    code, report = fix(lab, *args, "-p", "vlan=999", "--ticket", "INC-4021")
    host = one(report)
    assert code == 1 and "VLAN 999 does not exist" in host["message"]
    assert not [c for c in host["commands"] if c["command"].startswith("configure")]
    bad = lab.itops("fix", *args, "-p", "vlan=4095", "--ticket", "INC-4022")
    assert bad.returncode == 2 and "4094" in bad.stderr


def test_config_apply_diff_apply_verify_and_rollback_on_a_rejected_line(
    lab: LabEnv, tmp_path: Path
) -> None:
    template = tmp_path / "desc.j2"
    run = secrets.token_hex(3)  # a description the port cannot have yet, whatever ran before
    template.write_text(
        f"interface FastEthernet0/14\n description itops {run} {{{{ inventory_hostname }}}}\n"
    )
    args = ["network.config-apply", "sw-02", "-p", f"file={template}"]
    code, report = fix(lab, *args, "--check")
    host = one(report)
    assert host["outcome"] == "would-fix", host
    assert f"+ description itops {run} sw-02" in host["check"]["facts"]["diff"]
    code, report = fix(lab, *args, "--ticket", "CHG-4030")
    assert code == 0 and one(report)["outcome"] == "fixed"
    assert one(fix(lab, *args, "--ticket", "CHG-4030")[1])["outcome"] == "already-ok"

    rejected = tmp_path / "rejected.cfg"
    rejected.write_text(  # the shutdown after the rejected line must never reach the switch
        "interface FastEthernet0/15\n description half-done\n ip helper-address 10.0.0.1 10.0.0.2\n"
        " shutdown\n"
    )
    code, report = fix(
        lab, "network.config-apply", "sw-02", "-p", f"file={rejected}", "--ticket", "CHG-4031"
    )
    host = one(report)
    assert code == 1 and host["outcome"] == "failed"
    assert host["error"] == "device-rejected"  # named for what it is, not "toolkit-error"
    assert "rejected: % Invalid input" in host["message"]
    assert re.search(
        r"rolled back \d line\(s\): the running configuration matches", host["message"]
    )
    assert any(
        c["command"] == "configure: interface FastEthernet0/15 ; no description half-done"
        for c in host["commands"]
    )
    assert not any(c["command"] == "save running configuration" for c in host["commands"])
    # the rollback restored the running configuration exactly, and undid only the description:
    # had the shutdown been typed, it would have needed a `no shutdown` too
    push, *rollback = [c["command"] for c in host["commands"] if c["command"].startswith("conf")]
    assert push.endswith("ip helper-address 10.0.0.1 10.0.0.2 ; shutdown")  # what was asked
    assert rollback == ["configure: interface FastEthernet0/15 ; no description half-done"]

    before = lab.itops("log", "--json").stdout.count("\n")
    undefined = tmp_path / "undefined.j2"
    undefined.write_text("interface FastEthernet0/16\n description {{ room }}\n")
    refused = lab.itops(
        "fix", "network.config-apply", "sw-02", "-p", f"file={undefined}", "--ticket", "CHG-4032"
    )
    assert refused.returncode == 2 and "'room' is undefined" in refused.stderr
    assert lab.itops("log", "--json").stdout.count("\n") == before  # nothing ran, nothing recorded


def test_a_config_change_on_a_core_device_waits_for_a_second_operator(lab: LabEnv) -> None:
    """sw-02 is in the `core` group of this workspace: moving its port needs an approval, bound to
    that host and those parameters; sw-01 (an access switch) goes ahead in the same run."""
    known = (lab.lab.dir / "known_hosts").read_text()
    core = "all:\n  children:\n    core:\n      hosts:\n        sw-02: {}\n"
    ws = lab.other_workspace("core-policy", known_hosts=known, extra_inventory=core)
    args = ["network.port-vlan", "sw-01:sw-02", "-p", "interface=Fa0/14", "-p", "vlan=20"]
    shown = lab.itops("tasks", "show", "network.port-vlan", workspace=ws)
    assert "risky on core devices" in shown.stdout

    code, report = fix(lab, *args, "--ticket", "CHG-4030", workspace=ws)
    outcomes = {h["host"]: h for h in report["hosts"]}
    assert code == 5 and outcomes["sw-02"]["outcome"] == "needs-approval"
    assert outcomes["sw-01"]["outcome"] in ("fixed", "already-ok")
    assert not outcomes["sw-02"]["commands"], "nothing was sent to the core switch"
    request = re.search(r"APR-[0-9a-f]{8}", outcomes["sw-02"]["message"])
    assert request is not None

    self_grant = lab.itops("approve", request.group(), "--yes", workspace=ws)
    assert self_grant.returncode != 0 and "self-approval" in self_grant.stderr
    # the same key under another label is still the requester
    relabelled = lab.itops(
        "approve", request.group(), "--yes", workspace=ws, env={"ITOPS_OPERATOR": "net-lead"}
    )
    assert relabelled.returncode != 0 and "self-approval: l1-tech" in relabelled.stderr
    grant = lab.itops(
        "approve", request.group(), "--yes", workspace=ws, env=lab.as_operator("net-lead")
    )
    assert grant.returncode == 0, grant.stdout + grant.stderr

    other_vlan = [*args[:-1], "vlan=30"]
    code, report = fix(lab, *other_vlan, "--ticket", "CHG-4030", workspace=ws)
    outcomes = {h["host"]: h["outcome"] for h in report["hosts"]}
    assert code == 5, "the approval was for VLAN 20, not 30"
    assert outcomes == {"sw-01": "fixed", "sw-02": "needs-approval"}
    code, report = fix(lab, *args, "--ticket", "CHG-4030", workspace=ws)
    outcomes = {h["host"]: h["outcome"] for h in report["hosts"]}
    assert code == 0 and outcomes == {"sw-01": "fixed", "sw-02": "fixed"}
