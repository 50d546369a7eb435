"""Strict fakes for unit tests: a transport that refuses any command it was not scripted for.

Integration tests use real peers (the lab's sshd and cupsd); these fakes pin down command
building, parsing and outcome logic, and fail loudly on anything unexpected (like Invoke's
MockContext)."""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from toolkit.credentials import CredentialStore, Secret
from toolkit.errors import TransportError
from toolkit.inventory import Host, make_host
from toolkit.quoting import Command
from toolkit.transports.base import CommandResult, ConnectOptions

Reply = tuple[int, str, str] | Callable[[Command, "bytes | Secret | None"], tuple[int, str, str]]


class UnscriptedCommand(AssertionError):
    pass


@dataclass
class Script:
    """Replies by exact command text or by regular expression (first match wins)."""

    replies: list[tuple[str | re.Pattern[str], Reply]] = field(default_factory=list)

    def on(self, match: str | re.Pattern[str], reply: Reply) -> Script:
        self.replies.append((match, reply))
        return self

    def reply(self, command: Command, stdin: bytes | Secret | None) -> tuple[int, str, str]:
        for match, reply in self.replies:
            hit = command.text == match if isinstance(match, str) else match.search(command.text)
            if hit:
                return reply(command, stdin) if callable(reply) else reply
        raise UnscriptedCommand(f"unscripted command: {command.text}")


class StrictTransport:
    def __init__(self, host: Host, script: Script, log: list[tuple[str, str]]) -> None:
        self.host = host
        self.script = script
        self.log = log
        self.closed = False

    def run(
        self, command: Command, *, stdin: bytes | Secret | None = None, timeout: float | None = None
    ) -> CommandResult:
        assert not self.closed, "command on a closed transport"
        self.log.append((self.host.name, command.text))
        rc, out, err = self.script.reply(command, stdin)
        return CommandResult(command.display, rc, out, err, 0.001)

    def put(self, local: Path, remote: str) -> None:
        self.log.append((self.host.name, f"put {local} {remote}"))

    def get(self, remote: str, local: Path) -> None:
        self.log.append((self.host.name, f"get {remote} {local}"))

    def interrupt(self) -> None:
        self.interrupted = True

    def close(self) -> None:
        self.closed = True


class StrictNetTransport(StrictTransport):
    """A network device: `configure` and `save` are logged as "configure: l1 ; l2" and "save",
    and answered by the script like commands (so a test scripts rejections and checks order)."""

    def configure(self, lines: Sequence[str], *, timeout: float | None = None) -> CommandResult:
        text = "configure: " + " ; ".join(line.strip() for line in lines)
        return self.run(Command(text, text, "netcli"))

    def save(self) -> CommandResult:
        return self.run(Command("save", "save", "netcli"))


class FakeConnector:
    """Stands in for transports.Connector; counts connections per host."""

    def __init__(
        self,
        scripts: Mapping[str, Script],
        credentials: CredentialStore | None = None,
        errors: Mapping[str, TransportError] | None = None,
    ) -> None:
        from toolkit.credentials import Redactor

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
        kind = StrictNetTransport if host.transport == "netdev" else StrictTransport
        transport = kind(host, self.scripts[host.name], self.log)
        self.transports.append(transport)
        return transport

    def close(self) -> None:
        pass


def hosts(*names: str, platform: str = "linux") -> list[Host]:
    return [make_host(n, {"address": "127.0.0.1", "platform": platform}, (), "test") for n in names]


def commands(log: Iterable[tuple[str, str]], host: str) -> list[str]:
    return [c for h, c in log if h == host]
