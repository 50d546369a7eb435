"""Strict fakes for unit tests, on the shipped test kit (toolkit.remediation.testing): a
transport that refuses any command it was not scripted for, and a connector that counts.

Integration tests use real peers (the lab's sshd and cupsd); these fakes pin down command
building, parsing and outcome logic, and fail loudly on anything unexpected (like Invoke's
MockContext)."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from pathlib import Path

from toolkit.errors import TransportError
from toolkit.inventory import Host, make_host
from toolkit.remediation.quoting import Command
from toolkit.remediation.testing import MockNetTransport, MockSSHTransport, MockTransport, Script
from toolkit.secrets.credentials import CredentialStore, Secret
from toolkit.transports.base import CommandResult, ConnectOptions


class StrictTransport(MockTransport):
    """The kit's MockTransport (commands only, as WinRM), also logging (host, command) into
    the connector's shared log."""

    def __init__(self, host: Host, script: Script, log: list[tuple[str, str]]) -> None:
        super().__init__(host, script)
        self.log = log

    def run(
        self, command: Command, *, stdin: bytes | Secret | None = None, timeout: float | None = None
    ) -> CommandResult:
        assert not self.closed, "command on a closed transport"
        self.log.append((self.host.name, command.text))
        return super().run(command, stdin=stdin, timeout=timeout)


class StrictSSHTransport(StrictTransport, MockSSHTransport):
    """An SSH host: file transfers are logged too, as "put LOCAL REMOTE" / "get REMOTE LOCAL"."""

    def put(self, local: Path, remote: str) -> None:
        self.log.append((self.host.name, f"put {local} {remote}"))

    def get(self, remote: str, local: Path) -> None:
        self.log.append((self.host.name, f"get {remote} {local}"))


class StrictNetTransport(StrictTransport, MockNetTransport):
    """A network device: `configure` and `save` are logged as "configure: l1 ; l2" and "save",
    and answered by the script like commands (so a test scripts rejections and checks order)."""


STRICT: dict[str, type[StrictTransport]] = {
    "ssh": StrictSSHTransport,
    "winrm": StrictTransport,
    "netdev": StrictNetTransport,
}


class FakeConnector:
    """Stands in for transports.Connector; counts connections per host."""

    def __init__(
        self,
        scripts: Mapping[str, Script],
        credentials: CredentialStore | None = None,
        errors: Mapping[str, TransportError] | None = None,
    ) -> None:
        from toolkit.secrets.credentials import Redactor

        self.scripts = scripts
        self.errors = errors or {}
        self.credentials = credentials or CredentialStore(Redactor())
        self.options = ConnectOptions()
        self.opened: list[str] = []
        self.log: list[tuple[str, str]] = []
        self.transports: list[StrictTransport] = []

    def open(self, host: Host) -> StrictTransport:
        self.opened.append(host.name)
        if host.name in self.errors:
            raise self.errors[host.name]
        transport = STRICT[host.transport](host, self.scripts[host.name], self.log)
        self.transports.append(transport)
        return transport

    def close(self) -> None:
        pass


def hosts(*names: str, platform: str = "linux") -> list[Host]:
    return [make_host(n, {"address": "127.0.0.1", "platform": platform}, (), "test") for n in names]


def commands(log: Iterable[tuple[str, str]], host: str) -> list[str]:
    return [c for h, c in log if h == host]
