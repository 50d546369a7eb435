"""The network remediations with strict scripted devices: bad input refused before connecting,
the NAPALM flow (capture → push → confirm → save, or roll back), the one commit per backup run."""

from __future__ import annotations

import re
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.fakes import FakeConnector, Script, commands
from toolkit.errors import ValidationError
from toolkit.inventory import Host, make_host
from toolkit.ledger import Ledger
from toolkit.remediation.catalog import BUILTIN_TASKS, Catalog, Task
from toolkit.run.runner import Outcome, Runner, RunOptions

CATALOG = Catalog.load([BUILTIN_TASKS])
IOS_RUN = "Building configuration...\n!\nhostname sw\n!\ninterface FastEthernet0/5\n!\nend\n"


def device(name: str = "sw", platform: str = "cisco_ios", **variables: Any) -> Host:
    return make_host(name, {"address": "127.0.0.1", "platform": platform, **variables}, (), "t")


@pytest.fixture
def ledger(tmp_path: Path) -> Iterator[Ledger]:
    book = Ledger(f"sqlite:///{tmp_path / 'l.db'}", operator="tester")
    yield book
    book.close()


def run(
    ledger: Ledger,
    task: str,
    targets: list[Host],
    params: dict[str, Any],
    scripts: dict[str, Script],
    *,
    state_dir: Path | None = None,
    check_only: bool = False,
) -> tuple[Any, FakeConnector]:
    connector = FakeConnector(scripts)
    runner = Runner(
        ledger=ledger,
        connector=connector,  # type: ignore[arg-type]
        credentials=connector.credentials,
        state_dir=state_dir,
    )
    entry: Task = CATALOG.get(task)
    report = runner.run(
        entry, targets, params, ticket="CHG-1", options=RunOptions(check_only=check_only)
    )
    return report, connector


# --------------------------------------------------------------------------- bad input


@pytest.mark.parametrize("vlan", ["0", "4095", "-3", "99999", "ten"])
def test_a_vlan_outside_1_to_4094_is_refused_before_connecting(ledger: Ledger, vlan: str) -> None:
    with pytest.raises(ValidationError, match="vlan|VLAN"):
        run(ledger, "network.port-vlan", [device()], {"interface": "Fa0/5", "vlan": vlan}, {})
    assert list(ledger.records()) == []


@pytest.mark.parametrize(
    ("platform", "interface"),
    [
        ("cisco_ios", "ge-0/0/1"),
        ("arista_eos", "GigabitEthernet1/0/1"),
        ("cisco_nxos", "Fa0/5"),
        ("cisco_ios", "Fa0/5 ; reload"),
    ],
)
@pytest.mark.parametrize("task", ["network.port-vlan", "network.port-recover"])
def test_an_interface_not_named_like_the_platform_names_it_is_refused_before_connecting(
    ledger: Ledger, platform: str, interface: str, task: str
) -> None:
    params = (
        {"interface": interface, "vlan": "20"}
        if task.endswith("vlan")
        else {"interface": interface}
    )
    with pytest.raises(ValidationError, match=f"{platform}|contains|single"):
        run(ledger, task, [device(platform=platform)], params, {})
    assert list(ledger.records()) == []


@pytest.mark.parametrize(
    ("content", "variables", "message"),
    [
        ("interface Fa0/5\r\n description x\r\n", {}, "carriage return"),
        ("interface Fa0/5\n description {{ where }}\n", {"where": "a\nreload"}, "line break"),
        ("interface Fa0/5\n description {{ where }}\n", {"where": "a\rb"}, "line break"),
        ("interface Fa0/5\n description {{ nowhere }}\n", {}, "'nowhere' is undefined"),
        ("interface Fa0/5\n description why?\n", {}, "'\\?'"),
        ("username x secret 0 pw\n", {}, "carry a secret"),
    ],
)
def test_a_bad_config_line_or_undefined_template_variable_is_refused_before_connecting(
    ledger: Ledger, tmp_path: Path, content: str, variables: dict[str, str], message: str
) -> None:
    path = tmp_path / ("change.cfg.j2" if "{{" in content else "change.cfg")
    path.write_bytes(content.encode())
    with pytest.raises(ValidationError, match=message):
        run(ledger, "network.config-apply", [device(**variables)], {"file": str(path)}, {})
    assert list(ledger.records()) == []


def test_a_template_is_rendered_per_device_with_its_inventory_variables(
    ledger: Ledger, tmp_path: Path
) -> None:
    path = tmp_path / "loc.j2"
    path.write_text("snmp-server location {{ site }} {{ inventory_hostname }}\n")
    running = "hostname sw\nsnmp-server location hq sw\n"
    script = Script().on("show running-config", (0, running, ""))
    report, connector = run(
        ledger,
        "network.config-apply",
        [device(site="hq", password="env:NOPE")],
        {"file": str(path)},
        {"sw": script},
        check_only=True,
    )
    assert report.results[0].outcome == Outcome.ALREADY_OK
    assert commands(connector.log, "sw") == ["show running-config"]


# --------------------------------------------------------------------------- the NAPALM flow


class Device:
    """A scripted switch whose running configuration changes when lines are pushed."""

    def __init__(self, running: str, reject: str | None = None) -> None:
        self.running = running
        self.reject = reject

    def script(self) -> Script:
        return (
            Script()
            .on("show running-config", lambda c, s: (0, self.running, ""))
            .on("save", (0, "Building configuration...\n[OK]\n", ""))
            .on(re.compile(r"^configure: "), self.configure)
        )

    def configure(self, command: Any, stdin: Any) -> tuple[int, str, str]:
        lines = command.text.removeprefix("configure: ").split(" ; ")
        for number, line in enumerate(lines, 1):
            if line == self.reject:
                return 1, "", f"line {number} `{line}` rejected: % Invalid input detected"
            self.apply(line)
        return 0, "", ""

    def apply(self, line: str) -> None:
        if line.startswith("interface "):
            return
        body = self.running.split("interface FastEthernet0/5\n", 1)
        if line.startswith("no "):
            body[1] = body[1].replace(f" {line[3:]}\n", "", 1)
        else:
            body[1] = f" {line}\n" + body[1]
        self.running = "interface FastEthernet0/5\n".join(body)


def test_config_apply_pushes_confirms_then_saves(ledger: Ledger, tmp_path: Path) -> None:
    path = tmp_path / "c.cfg"
    path.write_text("interface FastEthernet0/5\n description printer\n")
    switch = Device(IOS_RUN)
    report, connector = run(
        ledger, "network.config-apply", [device()], {"file": str(path)}, {"sw": switch.script()}
    )
    assert report.results[0].outcome == Outcome.FIXED
    sent = commands(connector.log, "sw")
    assert sent.index("configure: interface FastEthernet0/5 ; description printer") < sent.index(
        "save"
    )
    assert " description printer" in switch.running


def test_a_device_rejecting_a_line_midway_fails_and_is_rolled_back_on_record(
    ledger: Ledger, tmp_path: Path
) -> None:
    path = tmp_path / "c.cfg"
    path.write_text("interface FastEthernet0/5\n description printer\n ip helper-address 1 2\n")
    switch = Device(IOS_RUN, reject="ip helper-address 1 2")
    report, connector = run(
        ledger, "network.config-apply", [device()], {"file": str(path)}, {"sw": switch.script()}
    )
    result = report.results[0]
    assert result.outcome == Outcome.FAILED
    assert "rejected: % Invalid input" in result.message and "rolled back" in result.message
    sent = commands(connector.log, "sw")
    assert "configure: interface FastEthernet0/5 ; no description printer" in sent  # the rollback
    assert "save" not in sent
    assert switch.running == IOS_RUN
    assert any("matches the one captured before apply" in n for n in result.notes)
    finish = next(ledger.records(kind="action.finish"))
    assert "no description printer" in (finish.commands or "") and "rolled back" in str(finish.data)


def test_port_vlan_never_creates_a_missing_vlan_or_touches_a_trunk(ledger: Ledger) -> None:
    vlans = "VLAN Name   Status    Ports\n1    default active    Fa0/1\n20   users   active\n"
    for section, expect in [
        ("interface FastEthernet0/5\n!\n", "does not exist"),
        ("interface FastEthernet0/5\n switchport mode trunk\n!\n", "trunk port: refused"),
    ]:
        script = (
            Script()
            .on("show running-config interface Fa0/5", (0, section, ""))
            .on("show vlan brief", (0, vlans, ""))
        )
        vlan = "30" if expect == "does not exist" else "20"
        report, connector = run(
            ledger,
            "network.port-vlan",
            [device()],
            {"interface": "Fa0/5", "vlan": vlan},
            {"sw": script},
        )
        assert report.results[0].outcome == Outcome.FAILED and expect in report.results[0].message
        assert not any(c.startswith("configure") for c in commands(connector.log, "sw"))


def err_disabled_port(state: dict[str, str], reason: str, *sticky: str) -> Script:
    """Fa0/5 err-disabled for `reason`; with sticky MACs, a bounce trips it again until they
    are cleared (as IOS port security does while the same unknown device is plugged in)."""
    header = "Port      Name               Status       Vlan       Duplex  Speed Type\n"

    def status(command: Any, stdin: Any) -> tuple[int, str, str]:
        row = f"Fa0/5                        {state['status']:<12} 1          a-full  a-100 10/100BaseTX\n"
        return 0, header + row, ""

    def bounce(command: Any, stdin: Any) -> tuple[int, str, str]:
        held = not sticky or state.get("cleared")
        state["status"] = "connected" if held else "err-disabled"
        return 0, "", ""

    def clear(command: Any, stdin: Any) -> tuple[int, str, str]:
        state["cleared"] = "yes"
        return 0, "", ""

    errdisabled = (
        "Port      Name               Status       Reason               Err-disabled Vlans\n"
        f"Fa0/5                        err-disabled {reason}\n"
    )
    section = "interface FastEthernet0/5\n" + "".join(
        f" switchport port-security mac-address sticky {mac}\n" for mac in sticky
    )
    return (
        Script()
        .on("show interfaces Fa0/5 status", status)
        .on("show interfaces status err-disabled", (0, errdisabled, ""))
        .on("show running-config interface Fa0/5", (0, section, ""))
        .on("show running-config", (0, IOS_RUN, ""))
        .on("clear port-security sticky interface Fa0/5", clear)
        .on("configure: interface Fa0/5 ; shutdown ; no shutdown", bounce)
    )


def psecure_port(state: dict[str, str]) -> Script:
    return err_disabled_port(state, "psecure-violation", "0050.56aa.0001")


def recover_psecure_port(ledger: Ledger, **params: str) -> tuple[Any, list[str]]:
    """network.port-recover on psecure_port: the host's result and the commands sent."""
    report, connector = run(
        ledger,
        "network.port-recover",
        [device()],
        {"interface": "Fa0/5", **params},
        {"sw": psecure_port({"status": "err-disabled"})},
    )
    return report.results[0], commands(connector.log, "sw")


def test_port_recover_records_the_err_disable_reason_and_waits_for_the_link(
    ledger: Ledger,
) -> None:
    script = err_disabled_port({"status": "err-disabled"}, "bpduguard")
    report, connector = run(
        ledger,
        "network.port-recover",
        [device()],
        {"interface": "Fa0/5", "wait": "0"},
        {"sw": script},
    )
    result = report.results[0]
    assert result.outcome == Outcome.FIXED and "err-disabled (bpduguard)" in result.message
    assert result.check is not None and result.check.facts["reason"] == "bpduguard"
    assert "save" not in commands(connector.log, "sw")  # a bounce changes no configuration


def test_a_port_security_err_disable_fails_at_once_saying_to_clear_sticky_macs(
    ledger: Ledger,
) -> None:
    # It bounced, waited ~33 s for a link that could not hold and failed "still err-disabled".
    result, sent = recover_psecure_port(ledger, wait="30")
    assert result.outcome == Outcome.FAILED, result.message
    assert "sticky MAC(s) 0050.56aa.0001" in result.message
    assert "-p clear_sticky=true" in result.message
    assert result.duration < 5  # no bounce, no wait for the link
    assert not any(c.startswith(("configure", "clear")) for c in sent), sent


def test_with_clear_sticky_the_sticky_macs_are_cleared_before_the_bounce(
    ledger: Ledger,
) -> None:
    result, sent = recover_psecure_port(ledger, wait="0", clear_sticky="true")
    assert result.outcome == Outcome.FIXED, result.message
    assert result.message.startswith("cleared sticky MAC(s) 0050.56aa.0001 on Fa0/5 (was: ")
    clear = sent.index("clear port-security sticky interface Fa0/5")
    assert clear < sent.index("configure: interface Fa0/5 ; shutdown ; no shutdown")


def test_the_switch_port_down_runbook_clears_sticky_macs_before_escalating(
    ledger: Ledger,
) -> None:
    from toolkit.automation.runbooks import BUILTIN_RUNBOOKS, load_runbook, run_runbook

    book = load_runbook(BUILTIN_RUNBOOKS / "switch-port-down.yml", CATALOG)
    connector = FakeConnector({"sw": psecure_port({"status": "err-disabled"})})
    runner = Runner(ledger=ledger, connector=connector, credentials=connector.credentials)  # type: ignore[arg-type]

    def run_step(task: Task, hosts: Any, params: Any, options: RunOptions) -> Any:
        return runner.run(task, hosts, params, ticket="INC-7", options=options)

    report = run_runbook(
        book,
        [device()],
        {"interface": "Fa0/5"},
        catalog=CATALOG,
        run_step=run_step,
        ledger=ledger,
        ticket="INC-7",
        options=RunOptions(),
    )
    outcome = {
        s.step.name: [str(r.outcome) for r in s.report.results] for s in report.steps if s.report
    }
    assert outcome == {
        "diagnose": ["would-fix"],
        "recover port": ["failed"],  # at once: port security keeps a sticky MAC
        "clear sticky and recover": ["fixed"],
        "verify": ["already-ok"],
    }
    assert dict(report.escalated) == {} and report.exit_code == 0


# --------------------------------------------------------------------------- backups


def test_one_backup_run_is_one_commit_with_the_ticket_and_only_changed_devices(
    ledger: Ledger, tmp_path: Path
) -> None:
    configs = {"a": "hostname a\nenable secret 0 Plain-Text-Pw\n", "b": "hostname b\n"}

    def script(name: str) -> Script:
        return (
            Script()
            .on("show running-config", lambda c, s: (0, configs[name], ""))
            .on("show startup-config", lambda c, s: (0, configs[name], ""))
        )

    targets = [device("a"), device("b")]
    state = tmp_path / "state"
    first, _ = run(
        ledger,
        "backup.network-config",
        targets,
        {},
        {"a": script("a"), "b": script("b")},
        state_dir=state,
    )
    assert [r.outcome for r in first.results] == [Outcome.FIXED, Outcome.FIXED]
    configs["b"] = "hostname b\ninterface Gi1\n"
    second, _ = run(
        ledger,
        "backup.network-config",
        targets,
        {},
        {"a": script("a"), "b": script("b")},
        state_dir=state,
    )
    assert [r.outcome for r in second.results] == [Outcome.ALREADY_OK, Outcome.FIXED]
    assert second.results[1].check is not None
    assert "+interface Gi1" in second.results[1].check.facts["diff"]
    repo = state / "backups" / "network"
    log = subprocess.run(
        ["git", "-C", str(repo), "log", "--format=%s", "--name-only"],
        capture_output=True,
        text=True,
    ).stdout
    assert log.count("CHG-1") == 2  # two runs, two commits
    assert log.startswith(
        "backup.network-config: 1 device(s) changed or new under CHG-1\n\nb.cfg\n"
    )
    every = subprocess.run(
        ["git", "-C", str(repo), "log", "-p", "--all"], capture_output=True, text=True
    ).stdout
    assert "Plain-Text-Pw" not in every and "enable secret 0 <removed>" in every


def test_the_runbook_names_only_existing_remediations_and_the_documented_keys() -> None:
    path = Path(__file__).resolve().parents[2] / "runbooks" / "switch-port-down.yml"
    book = yaml.safe_load(path.read_text())
    assert set(book) <= {"summary", "category", "params", "steps", "escalate"}
    assert {"summary", "category", "steps", "escalate"} <= set(book)
    names = [step["name"] for step in book["steps"]]
    assert len(names) == len(set(names))
    for step in book["steps"]:
        assert set(step) <= {"name", "task", "check_only", "params", "if_failed"}
        task = CATALOG.get(step["task"])
        spec = task.implementation("cisco_ios")
        assert spec is not None
        for value in (step.get("params") or {}).values():
            if str(value).startswith("$"):
                assert str(value).removeprefix("$") in book["params"]
        assert set(step.get("params") or {}) <= set(spec.params)
        if "if_failed" in step:
            assert step["if_failed"] in names
    assert set(book["escalate"]) == {"to", "note"}


@pytest.mark.parametrize(
    "name", ["network.port-recover", "network.port-vlan", "network.config-apply"]
)
def test_one_class_per_behaviour_is_registered_once_per_switch_family(
    name: str, tmp_path: Path
) -> None:
    index = tmp_path / "index.json"
    Catalog.load([BUILTIN_TASKS], index=index)
    task = Catalog.load([BUILTIN_TASKS], index=index).get(name)  # from the index, by source
    assert [sorted(s.platforms) for s in task.specs] == [
        ["cisco_ios", "cisco_xe"],
        ["arista_eos"],
        ["cisco_nxos"],
    ]
    assert len({s.source for s in task.specs}) == 3 and not any(
        s.source.endswith(":0") for s in task.specs
    )
    assert len({s.cls.__mro__[1] for s in task.specs}) == 1  # one behaviour
    assert all(s.examples for s in task.specs)
