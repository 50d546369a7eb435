"""The integration lab: real OpenSSH sshd hosts on loopback with real services behind them —
cupsd, simulated network devices (FakeNOS, fake-switches), sudo, a disk per host, an apt
repository, a ClamAV mirror, test accounts — one per test session.

Needs root (the lab creates its login user and runs sshd/cupsd). CI runs as root; outside CI a
non-root run skips these tests with that reason, under CI it fails.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

# The WinRM contract tests' fixtures (pki, replay, tarpit, …) live in their own module.
from winrm_fixtures import *  # noqa: F403

from tests.signers import Operators, make_operators
from toolkit.lab import Lab, LabState
from toolkit.workspace import Workspace

HERE = Path(__file__).parent


OPERATORS = ("l1-tech", "l2-lead", "net-lead")  # each with an ed25519 key in allowed_signers


@dataclass
class LabEnv:
    root: Path
    lab: Lab
    state: LabState
    keys: Operators  # the operators' signing keys (a run signs as l1-tech unless told)

    def as_operator(self, name: str) -> dict[str, str]:
        """The environment of operator `name`: their label and their own signing key."""
        return {"ITOPS_OPERATOR": name, "ITOPS_SIGNING_KEY": str(self.keys.key(name))}

    def itops(
        self,
        *args: str,
        workspace: Path | None = None,
        env: dict[str, str] | None = None,
        timeout: float = 120,
        input: str | None = None,
    ) -> subprocess.CompletedProcess[str]:
        """Run the real CLI in a subprocess, as a user would."""
        full_env = {k: v for k, v in os.environ.items() if not k.startswith("ITOPS_")}
        full_env["ITOPS_SIGNING_KEY"] = str(self.keys.key("l1-tech"))
        full_env.update(env or {})
        return subprocess.run(
            [sys.executable, "-m", "toolkit", "--workspace", str(workspace or self.root), *args],
            capture_output=True,
            text=True,
            timeout=timeout,
            env=full_env,
            input=input,
            stdin=None if input is not None else subprocess.DEVNULL,
        )

    def approved(
        self, *args: str, env: dict[str, str] | None = None, input: str | None = None
    ) -> subprocess.CompletedProcess[str]:
        """Run a risky change the way the policy wants it: the first run records an approval
        request (exit 5, signed with l1-tech's key), l2-lead grants it with theirs, the same
        command then goes ahead."""
        import re

        first = self.itops(*args, env=env, input=input)
        request = re.search(r"APR-[0-9a-f]{8}", first.stdout)
        assert first.returncode == 5 and request, first.stdout + first.stderr
        grant = self.itops("approve", request.group(), "--yes", env=self.as_operator("l2-lead"))
        assert grant.returncode == 0, grant.stdout + grant.stderr
        return self.itops(*args, env=env, input=input)

    def sshd_log(self) -> str:
        return "".join(p.read_text() for p in sorted(self.lab.dir.glob("sshd_*.log")))

    def sshd_log_settled(self, before: str, closed: int, timeout: float = 15) -> str:
        """What sshd logged since `before`, once `closed` connections have ended in it (sshd
        writes a connection's lines as it goes: reading at once may miss the last ones)."""
        import re
        import time

        ends = re.compile(
            r"^(?:Disconnected from|Connection closed by|Connection reset by) .*127\.0\.0\.1 port",
            re.M,
        )
        deadline = time.monotonic() + timeout
        while True:
            new = self.sshd_log()[len(before) :]
            if len(ends.findall(new)) >= closed or time.monotonic() > deadline:
                return new
            time.sleep(0.05)

    def service(self, name: str) -> Any:
        return self.lab.service(name)

    def host_root(self, host: str) -> Path:
        """The folder that stands for `/` of one lab host (its own var/, etc/, home/)."""
        from toolkit.lab.disk import host_root

        return host_root(self.state, self.state.host(host))

    def dpkg_state(self, host: str) -> tuple[dict[str, str], str]:
        """A lab host's installed packages and the SHA-256 of its own dpkg status file."""
        import hashlib

        status = self.host_root(host) / "var/lib/dpkg/status"
        installed = self.lab.service("apt").installed(self.state, host)
        return installed, hashlib.sha256(status.read_bytes()).hexdigest()

    def lpstat(self, host: str) -> str:
        from toolkit.lab.cups import run

        return run(self.state.host(host), ["lpstat", "-p", "-a", "-o"])

    def break_printer(self, *hosts: str) -> None:
        self.lab.service("cups").break_printer(self.state, hosts)

    def heal_printers(self) -> None:
        """Every lab host's printer healthy, whatever an earlier test left."""
        self.lab.service("cups").heal_printer(self.state, [h.name for h in self.state.hosts])

    def other_workspace(self, name: str, *, known_hosts: str, extra_inventory: str = "") -> Path:
        """A second workspace that reaches the same lab hosts with its own known_hosts."""
        root = self.root.parent / name
        if root.exists():
            shutil.rmtree(root)
        Workspace.init(root)
        sources = [str(self.lab.dir / "hosts.yml")]
        if extra_inventory:
            (root / "inventory" / "extra.yml").write_text(extra_inventory)
            sources.append("inventory/extra.yml")
        config = (
            (root / "itops.toml")
            .read_text()
            .replace(
                'sources = ["inventory/hosts.yml"]', f"sources = {sources!r}".replace("'", '"')
            )
        )
        (root / "itops.toml").write_text(config)
        (root / "inventory" / "known_hosts").write_text(known_hosts)
        self.keys.write(root / "allowed_signers", OPERATORS)
        return root


@pytest.fixture(scope="session")
def lab(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LabEnv]:
    if os.geteuid() != 0:
        if os.environ.get("CI"):
            pytest.fail("integration tests need root (they start sshd and cupsd)")
        pytest.skip("integration tests need root: run them as root or under sudo")
    root = tmp_path_factory.mktemp("itops") / "ws"
    Workspace.init(root)
    keys = make_operators(tmp_path_factory.mktemp("keys"), OPERATORS)
    keys.write(root / "allowed_signers", OPERATORS)
    shutil.copy(HERE / "tasks" / "faults.py", root / "tasks" / "faults.py")
    lab = Lab(Workspace.load(root))
    state = lab.up(4)  # every default service (cups, netdev, sudo, disk, apt, clamav, …)
    try:
        yield LabEnv(root, lab, state, keys)
    finally:
        lab.down()
