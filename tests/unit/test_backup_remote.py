"""Network configuration backups shared through one git remote (sites: each worker backs its own
devices up; the controller and every worker read one history). Real git, a bare repository."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest

from tests.inprocess import itops
from toolkit.backups import network
from toolkit.backups.network import ConfigRepository
from toolkit.errors import ValidationError


@pytest.fixture(autouse=True)
def _no_fetch_cache() -> None:
    network._fetched.clear()


def bare(tmp_path: Path) -> str:
    path = tmp_path / "configs.git"
    subprocess.run(["git", "init", "-q", "--bare", str(path)], check=True)
    return str(path)


def backed_up(repo: ConfigRepository, device: str, text: str) -> str | None:
    repo.write(device, text)
    return repo.commit([device], f"backup.network-config: {device}")


def test_two_sites_and_the_controller_read_one_history(tmp_path: Path) -> None:
    url = bare(tmp_path)
    site_a, site_b, controller = (ConfigRepository(tmp_path / n) for n in ("a", "b", "c"))
    for repo in (site_a, site_b, controller):
        assert repo.set_remote(url) is None
    assert backed_up(site_a, "sw-01", "hostname sw-01\n") and site_a.unpushed is None
    assert backed_up(site_b, "sw-02", "hostname sw-02\n") and site_b.unpushed is None
    assert backed_up(site_a, "sw-01", "hostname sw-01\nntp server 10.0.0.1\n")
    network._fetched.clear()
    assert [r.message for r in controller.history("sw-01")] == [
        "backup.network-config: sw-01",
        "backup.network-config: sw-01",
    ]
    assert len(controller.history("sw-02")) == 1
    assert "+ntp server 10.0.0.1" in controller.diff("sw-01")
    assert controller.committed("sw-02") is not None
    text, _ = controller.committed("sw-01") or ("", "")
    assert text.endswith("ntp server 10.0.0.1\n")
    # site b sees site a's latest too: its own check compares against the shared history
    network._fetched.clear()
    assert (site_b.committed("sw-01") or ("", ""))[0] == text


def test_an_unreachable_remote_keeps_the_backup_and_pushes_it_later(tmp_path: Path) -> None:
    url = bare(tmp_path)
    site, controller = ConfigRepository(tmp_path / "site"), ConfigRepository(tmp_path / "ctl")
    site.set_remote(url)
    controller.set_remote(url)
    moved = Path(url).with_name("gone.git")
    Path(url).rename(moved)
    commit = backed_up(site, "sw-09", "hostname sw-09\n")
    assert commit and site.unpushed and "cannot reach" in site.unpushed
    assert site.history("sw-09")[0].commit == commit  # kept here, readable here
    moved.rename(url)
    assert backed_up(site, "sw-10", "hostname sw-10\n") and site.unpushed is None
    network._fetched.clear()
    assert len(controller.history("sw-09")) == 1 and len(controller.history("sw-10")) == 1


def test_a_remote_that_looks_like_an_option_is_refused(tmp_path: Path) -> None:
    with pytest.raises(ValidationError, match="invalid git remote"):
        ConfigRepository(tmp_path / "r").set_remote("--upload-pack=touch /tmp/x")


def test_backup_remote_cli_shows_and_sets_it(tmp_path: Path) -> None:
    from toolkit.workspace import Workspace

    root = tmp_path / "ws"
    Workspace.init(root)
    code, out = itops(root, "backup", "remote")
    assert code == 0 and "no shared remote" in out
    url = bare(tmp_path)
    code, out = itops(root, "backup", "remote", url, "--json")
    assert code == 0, out
    assert json.loads(out) == {"remote": url, "in_sync": True, "problem": None}
    code, out = itops(root, "backup", "remote")
    assert code == 0 and f"shared remote: {url}" in out
