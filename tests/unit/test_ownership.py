"""Like git's safe.directory: a workspace, tasks folder or task file that another user owns, or
that group/others may write, is refused before its Python runs as you."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from tests.inprocess import itops
from toolkit.workspace import Workspace

TASK = """from toolkit.remediation.catalog import Context, Finding, Remediation, remediation
open({canary!r}, "w").write("ran")
@remediation("evil.task", category="other", platforms={{"linux"}}, summary="x")
class Evil(Remediation):
    def check(self, ctx: Context) -> Finding:
        return Finding.healthy("x")
    def apply(self, ctx: Context) -> None:
        pass
"""


@pytest.fixture
def planted(workspace: Workspace, tmp_path: Path) -> tuple[Path, Path]:
    canary = tmp_path / "canary"
    (workspace.root / "tasks" / "evil.py").write_text(TASK.format(canary=str(canary)))
    return workspace.root, canary


@pytest.mark.skipif(os.geteuid() != 0, reason="chown to another user needs root (CI is root)")
def test_a_workspace_another_user_owns_is_refused_before_its_python_runs(
    planted: tuple[Path, Path],
) -> None:
    root, canary = planted
    nobody = 65534
    os.chown(root / "itops.toml", nobody, nobody)
    code, out = itops(root, "tasks", "list")
    assert code == 2 and "refusing the workspace config" in out and "owned by uid 65534" in out
    assert "ITOPS_SAFE_WORKSPACES" in out
    assert not canary.exists()
    os.chown(root / "itops.toml", 0, 0)
    os.chown(root / "tasks" / "evil.py", nobody, nobody)
    code, out = itops(root, "tasks", "show", "evil.task")
    assert code == 2 and "refusing the task file" in out and not canary.exists()


def test_a_group_writable_task_file_is_refused_unless_the_workspace_is_declared_safe(
    planted: tuple[Path, Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    root, canary = planted
    (root / "tasks" / "evil.py").chmod(0o664)
    code, out = itops(root, "tasks", "show", "evil.task")
    assert code == 2 and "writable by group (mode 0664)" in out and not canary.exists()
    monkeypatch.setenv("ITOPS_SAFE_WORKSPACES", str(root))
    code, out = itops(root, "tasks", "show", "evil.task")
    assert code == 0 and canary.exists()  # declared safe by the one who runs it
