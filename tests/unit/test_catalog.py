"""The catalog: parameters validated up front, loading by path, one implementation per platform."""

from __future__ import annotations

import sys
import textwrap
from pathlib import Path

import pytest

from toolkit.errors import NotFound, ToolkitError, ValidationError
from toolkit.remediation.catalog import BUILTIN_TASKS, Catalog, Param


def task_file(folder: Path, name: str, body: str) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / name).write_text(textwrap.dedent(body))


LINUX = """\
    from toolkit.remediation.catalog import Finding, Param, Remediation, remediation

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
    from toolkit.remediation.catalog import Finding, Param, Remediation, remediation

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


def loaded(folder: Path) -> set[str]:
    """The task modules from `folder` imported so far in this process."""
    return {
        Path(m.__file__).name
        for m in list(sys.modules.values())
        if m.__name__.startswith("toolkit._loaded_tasks.")
        and m.__file__
        and Path(m.__file__).is_relative_to(folder)
    }


def spec_fields(catalog: Catalog, name: str) -> list[tuple[object, ...]]:
    return [
        (s.name, s.category, s.platforms, s.summary, s.cls, dict(s.params), s.doc, s.source)
        for s in catalog.get(name).specs
    ]


OTHER = LINUX.replace("net.fix", "disk.clean").replace("LinuxFix", "Clean")


def test_with_an_index_only_the_asked_tasks_modules_are_imported(tmp_path: Path) -> None:
    folder, index = tmp_path / "t", tmp_path / "cache" / "catalog.json"
    task_file(folder, "net_linux.py", LINUX)
    task_file(folder / "windows", "net.py", WINDOWS)
    task_file(folder, "disk.py", OTHER)
    full = Catalog.load([folder], index=index)  # no index yet: imports all, writes the index
    assert index.exists()
    for m in [m for m in sys.modules if m.startswith("toolkit._loaded_tasks.")]:
        del sys.modules[m]  # as in a new process

    lazy = Catalog.load([folder], index=index)
    assert loaded(folder) == set()
    assert lazy.infos() == full.infos()
    assert [(i.name, i.summary, sorted(i.platforms)) for i in lazy.infos()] == [
        ("disk.clean", "Linux way", ["linux"]),
        ("net.fix", "Linux way", ["linux", "windows"]),
    ]
    assert "disk.clean" in lazy and len(lazy) == 2
    assert loaded(folder) == set()
    entry = lazy.get("net.fix")
    assert loaded(folder) == {"net_linux.py", "net.py"}
    assert entry.implementation("windows").summary == "Windows way"  # type: ignore[union-attr]
    full_again = Catalog.load([folder])
    for name in ("net.fix", "disk.clean"):
        assert spec_fields(lazy, name) == spec_fields(full_again, name)
    with pytest.raises(NotFound) as info:
        lazy.get("net.fxi")
    assert "net.fix" in (info.value.hint or "")


def test_a_changed_or_new_task_file_refreshes_the_index(tmp_path: Path) -> None:
    folder, index = tmp_path / "t", tmp_path / "catalog.json"
    task_file(folder, "net.py", LINUX)
    Catalog.load([folder], index=index)
    task_file(folder, "net.py", LINUX.replace("Linux way", "Linux way, revised"))
    task_file(folder, "disk.py", OTHER)
    catalog = Catalog.load([folder], index=index)
    assert {i.name: i.summary for i in catalog.infos()} == {
        "disk.clean": "Linux way",
        "net.fix": "Linux way, revised",
    }
    (folder / "disk.py").unlink()
    assert [i.name for i in Catalog.load([folder], index=index).infos()] == ["net.fix"]


def test_the_index_keeps_the_workspace_override(tmp_path: Path) -> None:
    index = tmp_path / "catalog.json"
    task_file(tmp_path / "builtin", "a.py", LINUX)
    task_file(tmp_path / "ws", "b.py", LINUX.replace("Linux way", "Our way"))
    folders = [tmp_path / "builtin", tmp_path / "ws"]
    Catalog.load(folders, index=index)
    entry = Catalog.load(folders, index=index).get("net.fix")
    assert [s.summary for s in entry.specs] == ["Our way"]
    assert entry.specs[0].source.startswith(str((tmp_path / "ws").resolve()))


@pytest.mark.parametrize("damage", ["not json", '{"stamp": 1}', '{"stamp": [], "tasks": 5}'])
def test_a_damaged_index_is_rebuilt(tmp_path: Path, damage: str) -> None:
    index = tmp_path / "catalog.json"
    task_file(tmp_path / "t", "net.py", LINUX)
    index.write_text(damage)
    assert [i.name for i in Catalog.load([tmp_path / "t"], index=index).infos()] == ["net.fix"]
    assert '"net.fix"' in index.read_text()


def test_an_unwritable_index_location_only_costs_speed(tmp_path: Path) -> None:
    task_file(tmp_path / "t", "net.py", LINUX)
    blocker = tmp_path / "cache"
    blocker.write_text("a file where the cache folder would be")
    catalog = Catalog.load([tmp_path / "t"], index=blocker / "catalog.json")
    assert catalog.get("net.fix").summary == "Linux way"
    assert sorted(tmp_path.iterdir()) == [blocker, tmp_path / "t"]


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


def test_every_built_in_task_category_is_a_ticket_category() -> None:
    # `itops fix TASK … --ticket NEW` opens the ticket in the task's category: a category the
    # desk does not know (antivirus, disk, patch, service) refused the fix with "unknown category".
    from toolkit.desk.tickets import CATEGORIES
    from toolkit.remediation.catalog import BUILTIN_TASKS, Catalog

    catalog = Catalog.load([BUILTIN_TASKS])
    wrong = {t.name: s.category for t in catalog for s in t.specs if s.category not in CATEGORIES}
    assert wrong == {}


OVERRIDE = """from toolkit.remediation.catalog import Context, Finding, Param, Remediation, remediation
@remediation("password.reset", category="account", platforms={"linux"}, summary="ours")
class Ours(Remediation):
    user = Param(str, required=True)
    def check(self, ctx: Context) -> Finding:
        return Finding.problem("x")
    def apply(self, ctx: Context) -> None:
        pass
"""


def test_a_workspace_task_replacing_a_built_in_is_refused_unless_declared(tmp_path: Path) -> None:
    # Before: a workspace tasks/ file registering password.reset silently replaced the built-in,
    # and without `risky` its privileged resets needed no approval.
    from toolkit.errors import ConfigError

    ws = tmp_path / "tasks"
    task_file(ws, "ours.py", OVERRIDE)
    with pytest.raises(ConfigError, match="registers password.reset, a built-in task"):
        Catalog.load([BUILTIN_TASKS, ws])
    index = tmp_path / "catalog.json"
    for _ in range(2):  # imported, then from the index: the marks are kept either way
        entry = Catalog.load([BUILTIN_TASKS, ws], index=index, overrides=["password.reset"]).get(
            "password.reset"
        )
        linux = entry.implementation("linux")
        assert linux is not None and linux.summary == "ours"
        # the built-in is risky for allow_privileged, which ours lacks: ours is risky always
        assert linux.risky is True
