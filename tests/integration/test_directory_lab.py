"""`itops lab up --services ad,ldap` in a fresh workspace: a real Samba AD DC on 127.1.250.1 and a
real slapd on 127.1.250.2 behind the inventory group `directories`, the seeded accounts as the
runbooks expect them, and `itops lab down` stopping both. It starts lab sshd hosts (127.1.0.x),
so it runs with the `lab` fixture, under the lab lock."""

from __future__ import annotations

import socket
from pathlib import Path

import pytest

from tests.integration.conftest import LabEnv
from toolkit.workspace import Workspace

pytestmark = pytest.mark.integration
pytest.importorskip("ldap")


def listening(address: str, port: int) -> bool:
    with socket.socket() as sock:
        sock.settimeout(1)
        return sock.connect_ex((address, port)) == 0


def test_lab_up_with_ad_and_ldap_then_down(lab: LabEnv, tmp_path: Path) -> None:
    ws = tmp_path / "dirlab"
    Workspace.init(ws)
    up = lab.itops("lab", "up", "--hosts", "1", "--services", "ad,ldap", workspace=ws, timeout=300)
    try:
        assert up.returncode == 0, up.stdout + up.stderr
        listed = lab.itops("inventory", "list", "directories", workspace=ws)
        assert "dc-lab" in listed.stdout and "ldap-lab" in listed.stdout, listed.stdout
        status = lab.itops(
            "fix", "account.status", "directories", "-p", "user=locked.user", "--check",
            workspace=ws,
        )  # fmt: skip
        assert status.returncode == 4 and status.stdout.count("locked.user: locked") == 2, (
            status.stdout + status.stderr
        )
        fixed = lab.itops(
            "fix", "account.unlock", "directories", "-p", "user=locked.user",
            "--ticket", "INC-9100", workspace=ws,
        )  # fmt: skip
        assert fixed.returncode == 0 and fixed.stdout.count("fixed") >= 2, fixed.stdout
    finally:
        down = lab.itops("lab", "down", workspace=ws)
    assert down.returncode == 0, down.stdout + down.stderr
    for address in ("127.1.250.1", "127.1.250.2"):
        assert not listening(address, 636) and not listening(address, 389)
    assert not (ws / ".itops" / "lab" / "directories").exists()
