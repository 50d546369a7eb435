"""The software catalog loader (file:line errors, suggestions, approval), the package parsers,
and the software tasks on hosts the lab cannot hold: dnf (RHEL family) and Windows (winget,
Chocolatey, MSI), run through the real runner against scripted replies (the test kit)."""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from toolkit import software
from toolkit.errors import ConfigError, ToolkitError, ValidationError
from toolkit.remediation.catalog import BUILTIN_TASKS, Catalog
from toolkit.remediation.packages import (
    DnfProtected,
    parse_dpkg_query,
    parse_rpm_query,
    rpm_version_matches,
)
from toolkit.remediation.testing import Script, mock_host, run_task

CATALOG = """\
firefox:
  summary: Mozilla Firefox
  licence: MPL-2.0
  packages:
    apt: firefox-esr
    dnf: {id: firefox, version: 128.5.0-1.el9}
    winget: Mozilla.Firefox
    choco: firefox
  verify:
    command: [firefox, --version]
    expect: 'Mozilla Firefox 128'
visio:
  licence: commercial, one seat per user
  approval: true
  packages:
    winget: Microsoft.Office.Visio
7zip:
  licence: LGPL
  packages:
    choco: {id: 7zip, version: "24.8.0"}
    msi:
      source: '\\\\files\\pkgs\\7z.msi'
      product_code: '{23170f69-40c1-2702-2408-000001000000}'
      version: 24.08.00.0
core:
  licence: GPL
  packages:
    dnf: systemd
    winget: Microsoft.VCRedist.2015+.x64
"""


@pytest.fixture
def catalog(tmp_path: Path) -> Iterator[Path]:
    folder = tmp_path / "software"
    folder.mkdir()
    (folder / "apps.yml").write_text(CATALOG)
    software.activate(folder)
    try:
        yield folder
    finally:
        software.activate(None)


def write(folder: Path, text: str, name: str = "bad.yml") -> Path:
    (folder / name).write_text(text)
    return folder / name


# --------------------------------------------------------------------------- the catalog


def test_the_catalog_loads_every_platform_and_pin(catalog: Path) -> None:
    loaded = software.active()
    firefox = loaded.get("firefox")
    assert firefox.packages["apt"] == software.Package("apt", "firefox-esr")
    assert firefox.packages["dnf"].version == "128.5.0-1.el9"
    assert firefox.verify.command == ("firefox", "--version")
    assert firefox.source == f"{catalog / 'apps.yml'}:1"
    msi = loaded.get("7zip").packages["msi"]
    assert msi.id == "{23170F69-40C1-2702-2408-000001000000}" and msi.version == "24.08.00.0"
    assert software.needs_approval({"name": "visio"}) is True
    assert software.needs_approval({"name": "firefox"}) is False
    assert software.needs_approval({"name": "nope"}) is True  # unknown: the safe side


def test_an_unlisted_name_is_refused_with_the_closest_listed(catalog: Path) -> None:
    with pytest.raises(ValidationError) as err:
        software.check_listed("firefx")
    assert "'firefx' is not in the software catalog" in err.value.message
    assert err.value.hint == "did you mean: firefox?"
    spec = Catalog.load([BUILTIN_TASKS]).get("software.install").implementation("linux")
    assert spec is not None
    with pytest.raises(ValidationError, match="parameter name: 'vizio' is not in"):
        spec.validate({"name": "vizio"})
    assert spec.risky_for({"name": "visio"}) and not spec.risky_for({"name": "firefox"})


def test_an_edited_catalog_is_read_again(catalog: Path) -> None:
    assert "vlc" not in software.active()
    write(catalog, "vlc:\n  licence: GPL\n  packages:\n    apt: vlc\n", "more.yml")
    assert software.active().get("vlc").packages["apt"].id == "vlc"


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("x:\n  licence: a\n  packages:\n    apt: x\n  aproval: true\n",
         r"bad\.yml:5: unknown key of software 'x' 'aproval'"),
        ("x:\n  licence: a\n  packages:\n    yum: x\n", r"bad\.yml:4: unknown package manager 'yum'"),
        ("x:\n  packages:\n    apt: x\n", r"bad\.yml:1: software 'x' has no licence note"),
        ("x:\n  licence: a\n  packages:\n    apt: 'x; rm -rf /'\n",
         r"bad\.yml:4: x: packages\.apt 'x; rm -rf /' is not valid"),
        ("x:\n  licence: a\n  packages:\n    apt: {id: x, version: '1.0 -y'}\n",
         r"bad\.yml:4: x: packages\.apt\.version '1\.0 -y' is not valid"),
        ("x:\n  licence: a\n  packages:\n    msi: {source: 'a.exe', product_code: '{00000000-0000-0000-0000-000000000000}'}\n",
         r"bad\.yml:4: x: packages\.msi\.source 'a\.exe' must be a path to an \.msi file"),
        ("x:\n  licence: a\n  packages:\n    apt: x\n  verify: {expect: '1'}\n",
         r"bad\.yml:5: x: verify\.expect needs a command"),
        ("x:\n  licence: a\n  approval: maybe\n  packages:\n    apt: x\n",
         r"bad\.yml:3: x: approval must be true or false"),
        ("Firefox!:\n  licence: a\n", r"bad\.yml:1: software name 'Firefox!' is not valid"),
        ("firefox:\n  licence: a\n  packages:\n    apt: y\n",
         r"bad\.yml:1: 'firefox' is already listed at .*apps\.yml:1"),
        ("x: [\n", r"bad\.yml:2: not valid YAML"),
    ],
)  # fmt: skip
def test_a_bad_catalog_is_refused_with_file_and_line(
    catalog: Path, text: str, message: str
) -> None:
    write(catalog, text)
    with pytest.raises(ConfigError, match=message):
        software.active()


def test_a_workspace_without_a_catalog_refuses_every_name(tmp_path: Path) -> None:
    software.activate(tmp_path / "software")
    try:
        with pytest.raises(ValidationError, match="the workspace lists no software"):
            software.check_listed("firefox")
    finally:
        software.activate(None)


def test_the_example_catalog_of_the_repository_loads() -> None:
    loaded = software.SoftwareCatalog.load(Path(__file__).resolve().parents[2] / "software")
    assert {"firefox", "lab-hello", "lab-greet", "lab-base"} <= set(loaded.entries)


# --------------------------------------------------------------------------- parsers


def test_dpkg_query_rows_carry_state_essential_and_priority() -> None:
    text = (
        "bash\t5.2.15-2+b7\tii \tyes\trequired\tamd64\n"
        "vlc\t3.0.20-1\trc \tno\toptional\tamd64\n"
        "broken\t1.0\tiF \tno\toptional\tall\n"
        "gone\t\tun \t\t\t\n"
    )
    rows = {p.name: p for p in parse_dpkg_query(text)}
    assert rows["bash"].installed and rows["bash"].essential and rows["bash"].priority == "required"
    assert rows["vlc"].state == "config-files" and not rows["vlc"].installed
    assert rows["broken"].state == "half-configured"
    assert "gone" not in rows


def test_rpm_rows_and_pins() -> None:
    rows = parse_rpm_query(
        "firefox\t128.5.0-1.el9\tx86_64\nperl-libs\t4:5.32.1-481.el9\tx86_64\n"
        "package vlc is not installed\n"
    )
    assert [(p.name, p.version) for p in rows] == [
        ("firefox", "128.5.0-1.el9"), ("perl-libs", "4:5.32.1-481.el9")
    ]  # fmt: skip
    assert rpm_version_matches("128.5.0-1.el9", "128.5.0")
    assert rpm_version_matches("4:5.32.1-481.el9", "5.32.1-481.el9")
    assert not rpm_version_matches("128.6.0-1.el9", "128.5.0")


def test_dnf_protected_adds_the_hosts_list_to_the_builtin_set() -> None:
    found = DnfProtected().parse("# dnf\ndnf\nmy-agent  # ours\n\n", "", 0)
    assert "my-agent" in found.names and "systemd" in found.names


# --------------------------------------------------------------------------- dnf (no dnf host here)

DNF_FACTS = "id=rocky\nlike=rhel centos fedora\nversion=9.4\ntool=dnf\ntool=yum\n"
RPM_Q = re.compile(r"^rpm -q --qf .* -- firefox$")


def test_dnf_install_at_the_pin_then_verify_runs_the_program(catalog: Path) -> None:
    script = Script().on(re.compile(r"^\. /etc/os-release"), (0, DNF_FACTS, ""))
    script.on(RPM_Q, (1, "package firefox is not installed\n", ""),
              (0, "firefox\t128.5.0-1.el9\tx86_64\n", ""))  # fmt: skip
    script.on(re.compile(r"dnf -y -q install firefox-128\.5\.0-1\.el9'$"), (0, "", ""))
    script.on("firefox --version", (0, "Mozilla Firefox 128.5.0esr\n", ""))
    run = run_task("software.install", {"name": "firefox"}, script)
    assert run.outcome == "fixed", run.message
    assert "128.5.0-1.el9 is installed; `firefox --version` answered" in run.result.verify.summary
    assert any("sudo -n" in c and "dnf -y -q install" in c for c in run.sent)


def test_dnf_install_of_another_version_replaces_it_and_a_failure_is_named(
    catalog: Path,
) -> None:
    script = Script().on(re.compile(r"^\. /etc/os-release"), (0, DNF_FACTS, ""))
    script.on(RPM_Q, (0, "firefox\t115.0-1.el9\tx86_64\n", ""))
    script.on(
        re.compile(r"dnf -y -q install firefox-128"), (1, "", "Error: Unable to find a match\n")
    )
    run = run_task("software.install", {"name": "firefox"}, script)
    assert run.outcome == "failed"
    assert "dnf install exited 1: Error: Unable to find a match" in run.message
    check = run.result.check
    assert check.facts["installed"] == "115.0-1.el9" and "128.5.0-1.el9 is pinned" in check.summary


def test_dnf_removal_of_a_protected_package_is_refused_before_any_change(catalog: Path) -> None:
    script = Script().on(re.compile(r"^\. /etc/os-release"), (0, DNF_FACTS, ""))
    script.on(re.compile(r"^rpm -q .* -- systemd$"), (0, "systemd\t252-32.el9\tx86_64\n", ""))
    script.on(re.compile(r"protected\.d"), (0, "systemd\n", ""))
    run = run_task("software.remove", {"name": "core"}, script)
    assert run.outcome == "failed" and run.result.error == "change-refused"
    assert "the OS needs it (dnf protects it" in run.message
    assert not any("remove" in c for c in run.sent)


# --------------------------------------------------------------------------- Windows (no host here)

TOOLS_BOTH = json.dumps({"winget": r"C:\Users\x\AppData\Local\Microsoft\WindowsApps\winget.exe",
                         "choco": r"C:\ProgramData\chocolatey\bin\choco.exe"})  # fmt: skip
TOOLS_NONE = json.dumps({"winget": "", "choco": ""})
WINGET_LIST = (
    "\r   - \r   \\ \rName            Id              Version   Available Source\n"
    "---------------------------------------------------------------\n"
    "Mozilla Firefox Mozilla.Firefox 128.5.0   129.0     winget\n"
)
NOT_FOUND = json.dumps(
    {"exit": -1978335212, "out": "No installed package found matching input criteria.\n"}
)


def win(**params: str) -> dict[str, str]:
    return dict(params)


def test_winget_install_then_already_ok(catalog: Path) -> None:
    host = mock_host("ws-042", "windows")
    script = Script().on(re.compile(r"Get-Command winget\.exe"), (0, TOOLS_BOTH, ""))
    listed = json.dumps({"exit": 0, "out": WINGET_LIST})
    script.on(
        re.compile(r"@\('list','--id','Mozilla\.Firefox'"), (0, NOT_FOUND, ""), (0, listed, "")
    )
    script.on(re.compile(r"@\('install','--id','Mozilla\.Firefox'.*'--accept-package-agreements'\)"),
              (0, json.dumps({"exit": 0, "out": "Successfully installed\n"}), ""))  # fmt: skip
    script.on(re.compile(r"\$argv = @\('firefox','--version'\)"),
              (0, json.dumps({"exit": 0, "out": "Mozilla Firefox 128.5.0\n"}), ""))  # fmt: skip
    run = run_task("software.install", {"name": "firefox"}, script, host=host)
    assert run.outcome == "fixed", run.message
    assert "firefox (winget Mozilla.Firefox): 128.5.0 is installed" in run.result.verify.summary

    again = Script().on(re.compile(r"Get-Command winget\.exe"), (0, TOOLS_BOTH, ""))
    again.on(re.compile(r"'list'"), (0, listed, ""))
    assert (
        run_task("software.install", {"name": "firefox"}, again, host=host).outcome == "already-ok"
    )


def test_chocolatey_where_winget_is_absent_with_its_pin(catalog: Path) -> None:
    host = mock_host("ws-043", "windows")
    tools = json.dumps({"winget": "", "choco": r"C:\ProgramData\chocolatey\bin\choco.exe"})
    script = Script().on(re.compile(r"Get-Command winget\.exe"), (0, tools, ""))
    script.on(re.compile(r"\$id = '7zip'"), (0, json.dumps({"version": "23.1.0"}), ""),
              (0, json.dumps({"version": "24.8.0"}), ""))  # fmt: skip
    script.on(
        re.compile(r"@\('install','7zip','-y','--no-progress','--limit-output'\).*"
                   r"if \('24\.8\.0'\) \{ \$a \+= @\('--version', '24\.8\.0', '--allow-downgrade'\)",
                   re.S),
        (0, json.dumps({"exit": 3010, "out": "7zip v24.8.0 installed\n"}), ""),
    )  # fmt: skip
    run = run_task("software.install", {"name": "7zip"}, script, host=host)
    assert run.outcome == "fixed", run.message
    assert "choco install: a restart is required" in run.result.notes


def test_msi_where_neither_tool_is_there_and_a_fatal_msi_error(catalog: Path) -> None:
    host = mock_host("ws-044", "windows")
    script = Script().on(re.compile(r"Get-Command winget\.exe"), (0, TOOLS_NONE, ""))
    script.on(re.compile(r"\$code = '\{23170F69-40C1-2702-2408-000001000000\}'"),
              (0, json.dumps({"version": None}), ""))  # fmt: skip
    script.on(
        re.compile(r"\$target = '\\\\files\\pkgs\\7z\.msi'\n\$verb = '/i'"),
        (0, json.dumps({"exit": 1603, "out": "MainEngineThread is returning 1603\n"}), ""),
    )
    run = run_task("software.install", {"name": "7zip"}, script, host=host)
    assert run.outcome == "failed"
    assert "msi install {23170F69-40C1-2702-2408-000001000000} exited 1603" in run.message


def test_windows_removal_of_what_windows_needs_is_refused(catalog: Path) -> None:
    script = Script().on(re.compile(r"Get-Command winget\.exe"), (0, TOOLS_BOTH, ""))
    run = run_task("software.remove", {"name": "core"}, script, host=mock_host("ws-1", "windows"))
    assert run.outcome == "failed" and run.result.error == "change-refused"
    assert len(run.sent) == 1  # only the tool probe: nothing read or changed after


def test_a_host_without_any_listed_windows_tool_is_unsupported(catalog: Path) -> None:
    script = Script().on(re.compile(r"Get-Command winget\.exe"), (0, TOOLS_NONE, ""))
    run = run_task("software.install", {"name": "visio"}, script, host=mock_host("w", "windows"))
    assert run.result.error == "unsupported"
    assert "the catalog lists winget, which the host lacks" in run.message


def test_windows_list_reads_the_uninstall_keys(catalog: Path) -> None:
    programs = {"packages": [
        {"key": "{23170F69-40C1-2702-2408-000001000000}", "name": "7-Zip 24.08 (x64 edition)",
         "version": "24.08.00.0", "publisher": "Igor Pavlov"},
        {"key": "Mozilla Firefox 128.5.0 (x64 en-US)", "name": "Mozilla Firefox (x64 en-US)",
         "version": "128.5.0", "publisher": "Mozilla"},
    ]}  # fmt: skip
    script = Script().on(re.compile(r"CurrentVersion\\Uninstall"), (0, json.dumps(programs), ""))
    run = run_task("software.list", {"listed": "true"}, script, host=mock_host("w", "windows"),
                   check_only=True)  # fmt: skip
    assert run.outcome == "already-ok"
    assert run.result.check.facts["packages"] == [
        {"name": "7-Zip 24.08 (x64 edition)", "version": "24.08.00.0",
         "publisher": "Igor Pavlov", "software": "7zip"}
    ]  # fmt: skip


def windows_module() -> Any:
    import sys

    spec = Catalog.load([BUILTIN_TASKS]).get("software.list").implementation("windows")
    assert spec is not None
    return sys.modules[spec.cls.__module__]


def test_winget_list_parser_copes_with_the_spinner_and_absent_rows() -> None:
    parse = windows_module().parse_winget_list
    assert parse(WINGET_LIST, "Mozilla.Firefox") == "128.5.0"
    assert parse(WINGET_LIST, "mozilla.firefox") == "128.5.0"
    assert parse(WINGET_LIST, "Mozilla.Thunderbird") is None
    assert parse("No installed package found matching input criteria.\n", "X") is None


def test_windows_facts_parse_alone() -> None:
    module = windows_module()
    winget = module.WingetVersion("winget.exe", "Mozilla.Firefox")
    assert winget.parse(json.dumps({"exit": 0, "out": WINGET_LIST}), "", 0).version == "128.5.0"
    assert winget.parse(NOT_FOUND, "", 0).version is None
    with pytest.raises(ToolkitError, match="winget list exited -1978335216"):
        winget.parse(json.dumps({"exit": -1978335216, "out": "No package found\n"}), "", 0)
    assert module.MsiVersion("{X}").parse('{"version":null}', "", 0).version is None
    assert module.ChocoVersion("7zip").parse('{"version":"24.8.0"}', "", 0).version == "24.8.0"
    # PowerShell 5.1 gives one program as a bare object, not a list of one
    one = {"packages": {"key": "K", "name": "7-Zip", "version": "24.08", "publisher": "Igor"}}
    found = module.InstalledPrograms().parse(json.dumps(one), "", 0).programs
    assert [(p.name, p.version, p.key) for p in found] == [("7-Zip", "24.08", "K")]
    tools = module.PackageTools().parse('{"winget":"","choco":"C:\\\\choco.exe"}', "", 0)
    assert tools.winget == "" and tools.choco == "C:\\choco.exe"


def test_a_catalog_others_may_write_is_refused(
    catalog: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("ITOPS_SAFE_WORKSPACES", raising=False)
    software.activate(catalog, catalog.parent)
    (catalog / "apps.yml").chmod(0o666)
    with pytest.raises(ConfigError, match=r"writable by group and others .* it decides what is "
                                          r"installed as root on hosts"):  # fmt: skip
        software.active()
    (catalog / "apps.yml").chmod(0o644)
    assert "firefox" in software.active()


def test_a_new_workspace_has_an_empty_commented_catalog(tmp_path: Path) -> None:
    from toolkit.workspace import Workspace

    Workspace.init(tmp_path / "ws")
    ws = Workspace.load(tmp_path / "ws")
    assert (ws.software_folder / "apps.yml").read_text().startswith("# The software catalog")
    assert len(software.SoftwareCatalog.load(ws.software_folder, workspace=ws.root)) == 0


def test_a_hostile_name_is_refused_before_the_catalog_is_asked(catalog: Path) -> None:
    spec = Catalog.load([BUILTIN_TASKS]).get("software.install").implementation("linux")
    assert spec is not None
    for hostile in ("firefox;reboot", "$(id)", "-y", "fire fox"):
        with pytest.raises(ValidationError, match="parameter name"):
            spec.validate({"name": hostile})


def test_an_approval_is_bound_to_the_catalog_entry_as_it_was(catalog: Path) -> None:
    from toolkit.run.policy import binding_params

    task = Catalog.load([BUILTIN_TASKS]).get("software.install")
    hosts = [mock_host("ws-042", "windows")]
    before, plans = binding_params(task, {"name": "visio"}, hosts, ["ws-042"])
    assert json.loads(plans["ws-042"])["packages"] == {"winget": {"id": "Microsoft.Office.Visio"}}
    text = (catalog / "apps.yml").read_text()
    (catalog / "apps.yml").write_text(text.replace("winget: Microsoft.Office.Visio",
                                                   "winget: {id: Microsoft.Office.Visio, version: '16.0'}"))  # fmt: skip
    after, _ = binding_params(task, {"name": "visio"}, hosts, ["ws-042"])
    assert after["params"] == before["params"] and after["plan_sha256"] != before["plan_sha256"]


def test_dnf_removal_that_would_take_dependants_is_refused(catalog: Path) -> None:
    (catalog / "more.yml").write_text("libx:\n  licence: a\n  packages:\n    dnf: libx\n")
    script = Script().on(re.compile(r"^\. /etc/os-release"), (0, DNF_FACTS, ""))
    script.on(re.compile(r"^rpm -q --qf .* -- libx$"), (0, "libx\t1.0-1.el9\tx86_64\n", ""))
    script.on(re.compile(r"protected\.d"), (0, "", ""))
    script.on("rpm -q --whatrequires libx --qf '%{NAME}\\n'", (0, "app-a\napp-b\napp-a\n", ""))
    run = run_task("software.remove", {"name": "libx"}, script)
    assert run.result.error == "change-refused"
    assert "removing libx would also remove app-a, app-b: refused" in run.message

    alone = Script().on(re.compile(r"^\. /etc/os-release"), (0, DNF_FACTS, ""))
    alone.on(re.compile(r"^rpm -q --qf .* -- libx$"), (0, "libx\t1.0-1.el9\tx86_64\n", ""),
             (1, "package libx is not installed\n", ""))  # fmt: skip
    alone.on(re.compile(r"protected\.d"), (0, "", ""))
    alone.on(re.compile(r"--whatrequires"), (1, "no package requires libx\n", ""))
    alone.on(re.compile(r"dnf -y -q remove libx'$"), (0, "", ""))
    removed = run_task("software.remove", {"name": "libx"}, alone)
    assert (
        removed.outcome == "fixed" and removed.result.verify.summary == "libx (dnf libx): removed"
    )


def test_software_runs_open_request_tickets_on_every_platform() -> None:
    """A software install is a standard request (KPI.md): measured as fulfilment, not MTTR."""
    tasks = Catalog.load([BUILTIN_TASKS])
    for name in ("software.install", "software.remove", "software.list"):
        task = tasks.get(name)
        assert task.kind == "request"
        assert {s.kind for s in task.specs} == {"request"}, name
        assert {"linux", "windows"} <= task.platforms
