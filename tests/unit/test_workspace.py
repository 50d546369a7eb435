"""Finding the workspace like git finds a repository, and reading its settings."""

from __future__ import annotations

from pathlib import Path

import pytest

from toolkit.errors import ConfigError
from toolkit.workspace import Workspace


def test_found_by_walking_up(tmp_path: Path) -> None:
    Workspace.init(tmp_path / "ws")
    deep = tmp_path / "ws" / "inventory" / "a" / "b"
    deep.mkdir(parents=True)
    assert Workspace.find(cwd=deep).root == (tmp_path / "ws").resolve()


def test_explicit_and_env_take_precedence(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    Workspace.init(tmp_path / "a")
    Workspace.init(tmp_path / "b")
    monkeypatch.setenv("ITOPS_WORKSPACE", str(tmp_path / "b"))
    assert Workspace.find(cwd=tmp_path / "a").root.name == "b"
    assert Workspace.find(tmp_path / "a").root.name == "a"


def test_missing_workspace_says_how_to_make_one(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("ITOPS_WORKSPACE", raising=False)
    with pytest.raises(ConfigError) as info:
        Workspace.find(cwd=tmp_path)
    assert "itops init" in (info.value.hint or "")


def test_relative_sqlite_url_is_relative_to_the_workspace(
    workspace: Workspace, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("ITOPS_LEDGER_URL", raising=False)
    assert workspace.ledger_url == f"sqlite:///{workspace.root / '.itops' / 'ledger.db'}"


def test_bad_toml_is_a_config_error(tmp_path: Path) -> None:
    (tmp_path / "itops.toml").write_text("[inventory\n")
    with pytest.raises(ConfigError, match="itops.toml"):
        Workspace.load(tmp_path)


def test_missing_inventory_file_is_named(workspace: Workspace) -> None:
    (workspace.root / "inventory" / "hosts.yml").unlink()
    with pytest.raises(ConfigError, match="hosts.yml"):
        _ = workspace.inventory_sources


def test_init_makes_a_workspace_whose_commented_sections_are_valid_when_uncommented(
    tmp_path: Path,
) -> None:
    # `itops init` shows the sections a team needs next (policy, windows, SLA, KPIs, scheduler)
    # as comments; uncommented as they stand, they must load (a template that teaches a wrong
    # key would be refused at load, exit 2).
    import re

    from toolkit.workspace import Workspace

    config = Workspace.init(tmp_path / "ws")
    text = config.read_text()
    assert "# [policy]" in text and "# [maintenance_windows." in text and "# [sla." in text
    assert (tmp_path / "ws" / "playbooks" / "sample.yml").exists()
    uncommented = re.sub(r"(?m)^# (?=\[|[a-z_]+ = )", "", text)
    assert uncommented.count("\n[") >= 9
    config.write_text(uncommented)
    ws = Workspace.load(tmp_path / "ws")
    assert ws.section("policy")["risky"] == ["network.config-apply"]
