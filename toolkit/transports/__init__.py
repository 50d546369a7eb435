"""Transports: the only code that talks to remote hosts. One module per protocol, loaded lazily.

`Connector.open(host)` picks the protocol from `host.transport`, so paramiko/asyncssh, netmiko and
pywinrm (and python-ldap) are imported only when a run actually reaches such a host.
"""

from __future__ import annotations

import importlib
import threading
from collections.abc import Callable, Sequence
from concurrent.futures import Future
from typing import Any, Protocol, TypeVar

from toolkit.errors import ToolkitError
from toolkit.inventory import Host
from toolkit.secrets.credentials import CredentialStore
from toolkit.transports.base import CommandResult, ConnectOptions, Transport

__all__ = ["CommandResult", "ConnectOptions", "Connector", "Transport"]

T = TypeVar("T")

FACTORIES = {
    "ssh": ("toolkit.transports.ssh", "SSHFactory", None),
    "netdev": ("toolkit.transports.netdev", "NetdevFactory", "netdev"),
    "winrm": ("toolkit.transports.winrm", "WinRMFactory", "winrm"),
    "ldap": ("toolkit.transports.ldap", "LdapFactory", "directory"),
}


class Factory(Protocol):
    def open(self, host: Host) -> Transport: ...

    def close(self) -> None: ...


class Connector:
    """Opens one Transport per host for a run; owns the protocol factories and closes them."""

    def __init__(self, options: ConnectOptions, credentials: CredentialStore) -> None:
        self.options = options
        self.credentials = credentials
        self._factories: dict[str, Factory] = {}
        self._lock = threading.Lock()

    def factory(self, kind: str) -> Factory:
        with self._lock:
            if kind not in self._factories:
                module_name, class_name, extra = FACTORIES[kind]
                try:
                    module = importlib.import_module(module_name)
                except ImportError as exc:
                    raise ToolkitError(
                        f"the {kind} transport is not installed ({exc.name} is missing)",
                        hint=f"pip install 'itops-toolkit[{extra}]'" if extra else None,
                    ) from exc
                self._factories[kind] = getattr(module, class_name)(self.options, self.credentials)
            return self._factories[kind]

    def open(self, host: Host) -> Transport:
        return self.factory(host.transport).open(host)

    def route(self, host: Host) -> list[dict[str, Any]]:
        """The jump hosts `host` is reached through, first hop first (names, addresses, pinned
        host-key fingerprints: `ssh.jump_route`); empty for a host reached directly (and then
        nothing is imported)."""
        if not host.jump:
            return []
        factory: Any = self.factory("ssh")  # every hop is an SSH server, checked by its keys
        return factory.route(host)  # type: ignore[no-any-return]

    def start_green(
        self, hosts: Sequence[Host], jobs: Sequence[Callable[[], T]], limit: int
    ) -> Future[list[T]] | None:
        """For hosts that all use SSH: start per-host jobs as greenlets on the SSH event loop,
        at most `limit` at once, with no thread per host (see transports.ssh.LoopThread).
        None for any other mix of hosts: the caller runs them in threads."""
        if not hosts or any(h.transport != "ssh" for h in hosts):
            return None
        factory: Any = self.factory("ssh")
        return factory.start_green(jobs, limit)  # type: ignore[no-any-return]

    def close(self) -> None:
        with self._lock:
            for factory in self._factories.values():
                factory.close()
            self._factories.clear()
