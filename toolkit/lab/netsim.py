"""Stateful lab switches: fake-switches (a third-party Cisco simulator) plus a thin itops layer.

RUN BY THE LAB, NOT IMPORTED: `<netsim venv>/bin/python netsim.py CONFIG.json` runs in the
simulators' own virtual environment (Twisted, fake-switches), never in itops' process.

What is theirs and what is ours, so nobody mistakes one for the other:
- fake-switches (PyPI `fake-switches`, Internap, Apache-2.0; unmaintained since 2022) provides the
  stateful Cisco 2960 simulation: the SSH server, the prompts, enable, configuration mode, VLANs,
  interfaces, `shutdown`, `switchport access vlan`, `show running-config`, `show vlan`, `write
  memory` — every change persists across sessions, and its own error messages.
- ITOPS' OWN FAKE LAYER (this file, ~150 lines) adds what fake-switches lacks and the port
  remediations read: `show interfaces [PORT] status`, `show interfaces status err-disabled`,
  port faults injected by the lab (err-disabled with a reason, link down) that `shutdown` clears
  like on IOS, port-security sticky MACs shown in the running configuration and
  `clear port-security sticky interface PORT`, a distinct enable secret, and the lab's own host key.
  These are modelled on IOS behaviour; they are our fake, not a device's behaviour.

Faults: the lab writes FAULTS.json (a list of {"switch", "port", "fault": "errdisable"|"link-down"|
"clear", "reason", "sticky": [mac…]}) and sends SIGUSR1; the file is applied and removed.
"""

from __future__ import annotations

import json
import logging
import signal
import sys
from pathlib import Path
from typing import Any

from fake_switches import switch_factory
from fake_switches.cisco import cisco_core
from fake_switches.cisco.command_processor import enabled
from fake_switches.cisco.command_processor.config import ConfigCommandProcessor
from fake_switches.cisco.command_processor.config_interface import ConfigInterfaceCommandProcessor
from fake_switches.cisco.command_processor.config_vlan import ConfigVlanCommandProcessor
from fake_switches.cisco.command_processor.config_vrf import ConfigVRFCommandProcessor
from fake_switches.transports import ssh_service
from twisted.internet import reactor

FAULTS: dict[tuple[str, str], dict[str, Any]] = {}  # (switch, port) → fault
STICKY: dict[tuple[str, str], list[str]] = {}  # (switch, port) → sticky MACs


def _key(processor: Any, port: Any) -> tuple[str, str]:
    return processor.switch_configuration.name, port.name


def status(switch: str, port: Any) -> str:
    if port.shutdown:
        return "disabled"
    fault = FAULTS.get((switch, port.name), {})
    if fault.get("fault") == "errdisable":
        return "err-disabled"
    if fault.get("fault") == "link-down":
        return "notconnect"
    return "connected"


class ItopsEnabled(enabled.EnabledCommandProcessor):  # type: ignore[misc]
    """itops layer: interface status tables and clearing sticky MACs (IOS formats)."""

    def do_show(self, *args: str) -> None:
        if len(args) >= 2 and "interfaces".startswith(args[0]) and len(args[0]) >= 3:
            rest = list(args[1:])
            if rest[-1:] == ["err-disabled"] and rest[:-1] == ["status"]:
                return self._errdisabled()
            if rest and "status".startswith(rest[-1]):
                return self._status("".join(rest[:-1]))
        return super().do_show(*args)  # type: ignore[no-any-return]

    def do_clear(self, *args: str) -> None:
        if args[:3] == ("port-security", "sticky", "interface") and len(args) > 3:
            port = self.switch_configuration.get_port_by_partial_name("".join(args[3:]))
            if port is None:
                return self._invalid()
            STICKY.pop(_key(self, port), None)
            return None
        return self._invalid()

    def _invalid(self) -> None:
        self.write_line("% Invalid input detected at '^' marker.")
        self.write_line("")

    def _physical(self, name: str) -> list[Any]:
        ports = self.switch_configuration.get_physical_ports()
        if not name:
            return list(ports)
        port = self.switch_configuration.get_port_by_partial_name(name)
        return [port] if port is not None and port in ports else []

    def _status(self, name: str) -> None:
        ports = self._physical(name)
        if name and not ports:
            return self._invalid()
        switch = self.switch_configuration.name
        self.write_line("")
        self.write_line("Port      Name               Status       Vlan       Duplex  Speed Type")
        for port in ports:
            vlan = "trunk" if port.mode == "trunk" else str(port.access_vlan or 1)
            self.write_line(
                f"{port.get_subname(length=2):<9} {(port.description or '')[:18]:<18} "
                f"{status(switch, port):<12} {vlan:<10} {'a-full':>6} {'a-100':>6} 10/100BaseTX"
            )
        self.write_line("")
        return None

    def _errdisabled(self) -> None:
        switch = self.switch_configuration.name
        self.write_line("")
        self.write_line(
            "Port      Name               Status       Reason               Err-disabled Vlans"
        )
        for port in self._physical(""):
            if status(switch, port) == "err-disabled":
                reason = FAULTS[(switch, port.name)].get("reason", "unknown")
                self.write_line(
                    f"{port.get_subname(length=2):<9} {(port.description or '')[:18]:<18} "
                    f"{'err-disabled':<12} {reason:<20}"
                )
        self.write_line("")


class ItopsConfigInterface(ConfigInterfaceCommandProcessor):  # type: ignore[misc]
    """itops layer: `shutdown` clears an err-disable; `no shutdown` re-trips a port-security
    violation while sticky MACs remain (as on IOS when the same unknown device is plugged in)."""

    def do_shutdown(self, *args: str) -> None:
        super().do_shutdown(*args)
        key = _key(self, self.port)
        if FAULTS.get(key, {}).get("fault") == "errdisable":
            FAULTS[key] = {**FAULTS[key], "fault": "cleared"}

    def do_no_shutdown(self, *args: str) -> None:
        super().do_no_shutdown(*args)
        key = _key(self, self.port)
        fault = FAULTS.get(key, {})
        if fault.get("reason") == "psecure-violation" and STICKY.get(key):
            FAULTS[key] = {**fault, "fault": "errdisable"}


class ItopsSwitchCore(cisco_core.Cisco2960_24TT_L_SwitchCore):  # type: ignore[misc]
    def new_command_processor(self) -> Any:
        return ItopsEnabled(
            config=ConfigCommandProcessor(
                config_vlan=ConfigVlanCommandProcessor(),
                config_vrf=ConfigVRFCommandProcessor(),
                config_interface=ItopsConfigInterface(),
            )
        )


_build_running_interface = enabled.build_running_interface


def build_running_interface(port: Any) -> list[str]:
    """fake-switches' interface section, plus the sticky MACs our layer tracks."""
    data: list[str] = _build_running_interface(port)
    switch = port.switch_configuration.name if port.switch_configuration else ""
    macs = STICKY.get((switch, port.name), [])
    if macs:
        data += [" switchport port-security", " switchport port-security mac-address sticky"]
        data += [f" switchport port-security mac-address sticky {mac}" for mac in macs]
    return data


def load_faults(path: Path) -> None:
    if not path.exists():
        return
    for fault in json.loads(path.read_text()):
        key = (fault["switch"], fault["port"])
        if fault["fault"] == "clear":
            FAULTS.pop(key, None)
            STICKY.pop(key, None)
            continue
        FAULTS[key] = fault
        if fault.get("sticky"):
            STICKY[key] = list(fault["sticky"])
    path.unlink()


def main(config_path: str) -> None:
    logging.basicConfig(level=logging.WARNING)  # fake-switches logs typed input at DEBUG
    config = json.loads(Path(config_path).read_text())
    private = Path(config["host_key"]).read_text()
    public = Path(config["host_key"] + ".pub").read_text()
    ssh_service.getRSAKeys = lambda: (public, private)  # the lab's own key, pinned by the lab
    enabled.build_running_interface = build_running_interface
    users = {config["user"]: config["password"].encode()}
    factory = switch_factory.SwitchFactory(mapping={"itops_cisco": ItopsSwitchCore})
    for device in config["devices"]:
        core = factory.get("itops_cisco", device["name"], config["enable"])
        for number, name in config.get("vlans", {}).items():
            core.switch_configuration.add_vlan(
                core.switch_configuration.new("Vlan", int(number), name)
            )
        ssh_service.SwitchSshService(
            ip=device["address"], port=device["port"], switch_core=core, users=users
        ).hook_to_reactor(reactor)
    faults = Path(config["faults"])
    signal.signal(signal.SIGUSR1, lambda *_: reactor.callFromThread(load_faults, faults))
    reactor.run()


if __name__ == "__main__":
    main(sys.argv[1])
