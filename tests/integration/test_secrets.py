"""Planted canary secrets never reach stdout, stderr, logs, the ledger or stored outputs."""

from __future__ import annotations

import json
import secrets
from pathlib import Path

import pytest

from tests.integration.conftest import LabEnv

pytestmark = pytest.mark.integration


def every_byte_written(root: Path) -> bytes:
    """The ledger database, its WAL, the log and every stored output of a workspace."""
    state = root / ".itops"
    files = [p for p in state.rglob("*") if p.is_file() and "lab" not in p.relative_to(state).parts]
    assert any(p.name == "ledger.db" for p in files) and any(p.name == "itops.log" for p in files)
    return b"".join(p.read_bytes() for p in files)


@pytest.mark.parametrize("fail", [False, True], ids=["success-path", "failure-path"])
def test_a_secret_passed_to_hosts_is_masked_everywhere(lab: LabEnv, fail: bool) -> None:
    canary = f"Canary-{secrets.token_hex(6)}$'\"x"
    env = {"ITOPS_TEST_CANARY": canary}
    args = [
        "fix",
        "test.secret",
        "lab",
        "-p",
        "password=env:ITOPS_TEST_CANARY",
        "-p",
        f"fail={str(fail).lower()}",
        "--ticket",
        f"INC-{6000 + fail}",
    ]
    table = lab.itops(*args, env=env)
    as_json = lab.itops("--verbose", *args, "--json", env=env)
    assert table.returncode == (1 if fail else 0), table.stdout + table.stderr
    report = json.loads(as_json.stdout)
    outputs = [c["stdout"] + c["stderr"] for h in report["hosts"] for c in h["commands"]]
    assert any("********" in o for o in outputs)  # the hosts did echo it back: masking was needed
    if fail:
        assert all(h["outcome"] == "failed" and "exited 3" in h["message"] for h in report["hosts"])
    log = lab.itops("--verbose", "log", "--ticket", f"INC-{6000 + fail}", "--json", env=env)
    shown = lab.itops("ticket", "show", f"INC-{6000 + fail}", env=env)
    for result in (table, as_json, log, shown):
        assert canary not in result.stdout and canary not in result.stderr
    for variant in (canary, json.dumps(canary)[1:-1]):
        assert variant.encode() not in every_byte_written(lab.root)


def test_a_literal_secret_parameter_is_refused_not_recorded(lab: LabEnv) -> None:
    canary = f"Canary-{secrets.token_hex(6)}"
    result = lab.itops(
        "fix", "test.secret", "lab-01", "-p", f"password={canary}", "--ticket", "INC-6100"
    )
    assert result.returncode == 2 and "give a reference" in result.stderr
    assert canary not in result.stdout + result.stderr
    assert canary.encode() not in every_byte_written(lab.root)
