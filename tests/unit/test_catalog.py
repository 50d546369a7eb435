"""The catalog: parameters validated up front, loading by path, one implementation per platform."""

from __future__ import annotations

import sys
import textwrap
from pathlib import Path

import pytest

from toolkit.catalog import BUILTIN_TASKS, Catalog, Param
from toolkit.errors import NotFound, ToolkitError, ValidationError


def task_file(folder: Path, name: str, body: str) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / name).write_text(textwrap.dedent(body))


LINUX = """\
    from toolkit.catalog import Finding, Param, Remediation, remediation

    @remediation("net.fix", category="network", platforms={"linux"}, summary="Linux way")
    class LinuxFix(Remediation):
        '''Fix it.

        Example:
            itops fix net.fix ws-1 --ticket T-1
        '''
        iface = Param(str, help="interface")

        def check(self, ctx): return Finding.healthy("ok")
        def apply(self, ctx): pass
    """
WINDOWS = """\
    from toolkit.catalog import Finding, Param, Remediation, remediation

    @remediation("net.fix", category="network", platforms={"windows"}, summary="Windows way")
    class WindowsFix(Remediation):
        adapter = Param(str)

        def check(self, ctx): return Finding.healthy("ok")
        def apply(self, ctx): pass
    """


def test_the_builtin_catalog_loads_and_is_not_a_top_level_tasks_package() -> None:
    catalog = Catalog.load([BUILTIN_TASKS])
    assert "printer.clear-queue" in catalog
    assert "tasks" not in sys.modules


def test_implementations_per_platform_and_per_platform_parameters(tmp_path: Path) -> None:
    task_file(tmp_path / "t", "linux.py", LINUX)
    task_file(tmp_path / "t" / "windows", "net.py", WINDOWS)
    entry = Catalog.load([tmp_path / "t"]).get("net.fix")
    assert entry.platforms == {"linux", "windows"}
    assert entry.implementation("windows").summary == "Windows way"  # type: ignore[union-attr]
    assert entry.implementation("cisco_ios") is None
    assert entry.specs[0].examples == ("itops fix net.fix ws-1 --ticket T-1",)
    plans = entry.validate({"iface": "eth0"}, {"linux"})
    assert list(plans.values()) == [{"iface": "eth0"}]
    with pytest.raises(NotFound, match="on windows"):
        entry.validate({"iface": "eth0"}, {"linux", "windows"})


def test_the_workspace_overrides_a_builtin_for_its_platform(tmp_path: Path) -> None:
    task_file(tmp_path / "builtin", "a.py", LINUX)
    task_file(tmp_path / "ws", "b.py", LINUX.replace("Linux way", "Our way"))
    entry = Catalog.load([tmp_path / "builtin", tmp_path / "ws"]).get("net.fix")
    assert [s.summary for s in entry.specs] == ["Our way"]


def test_two_implementations_for_one_platform_in_one_folder_is_an_error(tmp_path: Path) -> None:
    task_file(tmp_path / "t", "a.py", LINUX)
    task_file(tmp_path / "t", "b.py", LINUX.replace("LinuxFix", "Other"))
    with pytest.raises(ToolkitError, match="implemented twice"):
        Catalog.load([tmp_path / "t"])


def test_a_broken_task_module_is_a_clear_error(tmp_path: Path) -> None:
    task_file(tmp_path / "t", "bad.py", "import nonexistent_module_xyz\n")
    with pytest.raises(ToolkitError, match="bad.py failed to load"):
        Catalog.load([tmp_path / "t"])


def test_unknown_and_invalid_task_names() -> None:
    catalog = Catalog.load([BUILTIN_TASKS])
    with pytest.raises(NotFound) as info:
        catalog.get("printer.clear-queu")
    assert "printer.clear-queue" in (info.value.hint or "")
    with pytest.raises(ValidationError):
        catalog.get("../../etc/passwd")


@pytest.mark.parametrize(
    ("param", "raw", "expected"),
    [
        (Param(int, minimum=1, maximum=10), "5", 5),
        (Param(bool), "yes", True),
        (Param(bool), "off", False),
        (Param(str, choices=["quick", "full"]), "full", "full"),
        (Param(str, kind="path"), "/var/log/My Logs", "/var/log/My Logs"),
        (Param(str, kind="text"), "paper jam; $(reboot)", "paper jam; $(reboot)"),
        (Param(str, secret=True), "env:PW", "env:PW"),
    ],
)
def test_param_parsing(param: Param, raw: str, expected: object) -> None:
    param.name = "p"
    assert param.parse(raw) == expected


@pytest.mark.parametrize(
    ("param", "raw", "words"),
    [
        (Param(int, minimum=1), "0", "≥ 1"),
        (Param(int), "five", "number"),
        (Param(bool), "maybe", "true or false"),
        (Param(str, choices=["a"]), "b", "one of"),
        (Param(str), "a;b", "';'"),
        (Param(str), "-x", "starts with '-'"),
        (Param(str, kind="path"), "../x", "'..'"),
        (Param(str, kind="text"), "a\nb", "newline"),
        (Param(str, pattern=r"\d+"), "12a", "does not match"),
        (Param(str, secret=True), "hunter2", "reference"),
    ],
)
def test_param_refusals(param: Param, raw: str, words: str) -> None:
    param.name = "p"
    with pytest.raises(ValidationError) as info:
        param.parse(raw)
    assert words in info.value.message
