"""Docs are executable: the README's demo commands, its sample remediation, and every `Example:`
in the catalog are run or parsed here, so they cannot drift from what itops does."""

from __future__ import annotations

import re
import shlex
from pathlib import Path

import click
import pytest

from tests.integration.conftest import LabEnv
from toolkit import software
from toolkit.remediation.catalog import BUILTIN_TASKS, Catalog
from toolkit.workspace import Workspace

pytestmark = pytest.mark.integration
ROOT = Path(__file__).resolve().parents[2]
README = (ROOT / "README.md").read_text()


def readme_demo_commands() -> list[str]:
    block = README.split("`scripts/demo` installs", 1)[1].split("```sh", 1)[1].split("```", 1)[0]
    return [line.split("#")[0].strip() for line in block.splitlines() if line.startswith("itops ")]


def test_the_demo_script_runs_the_readme_commands() -> None:
    demo = (ROOT / "scripts" / "demo").read_text()
    for command in readme_demo_commands():
        assert f"step {command.removeprefix('itops ')}" in demo, command


def test_the_readme_demo_works_in_a_fresh_workspace(lab: LabEnv, tmp_path: Path) -> None:
    Workspace.init(tmp_path / "fresh")
    ws = tmp_path / "fresh"
    try:
        for command in readme_demo_commands():
            args = shlex.split(command)[1:]
            result = lab.itops(*args, workspace=ws)
            expected = 4 if "--check" in args else 0
            assert result.returncode == expected, (command, result.stdout, result.stderr)
            if args[:2] == ["fix", "printer.clear-queue"] and "--category" in args:
                assert len(re.findall(r"^lab-\d+\s+fixed\b", result.stdout, re.M)) == 3
            if args[:2] == ["audit", "verify"]:
                assert "ledger intact" in result.stdout
            if args[:2] == ["backup", "run"] and "CHG-1002" in args:
                assert re.search(r"^sw-01\s+changed\b", result.stdout, re.M), result.stdout
                assert "+ switchport access vlan 20" in result.stdout
                assert len(re.findall(r"^\S+\s+unchanged\b", result.stdout, re.M)) == 6
    finally:
        lab.itops("lab", "down", workspace=ws)


def test_the_readme_sample_remediation_loads_and_runs(lab: LabEnv, tmp_path: Path) -> None:
    code = README.split("Drop a module in the workspace's `tasks/` folder", 1)[1]
    code = code.split("```python", 1)[1].split("```", 1)[0]
    tasks = lab.root / "tasks" / "readme_sample.py"
    tasks.write_text(code)
    flag = f"itops-readme-{tmp_path.name}"
    try:
        check = lab.itops("fix", "demo.flag", "lab-01", "-p", f"name={flag}", "--check")
        assert check.returncode == 4, check.stdout + check.stderr
        fix = lab.itops("fix", "demo.flag", "lab-01", "-p", f"name={flag}", "--ticket", "INC-8000")
        assert fix.returncode == 0 and " fixed " in fix.stdout
        assert Path(f"/tmp/{flag}").exists()
    finally:
        tasks.unlink()
        Path(f"/tmp/{flag}").unlink(missing_ok=True)


def catalog_examples() -> list[tuple[str, str, frozenset[str]]]:
    catalog = Catalog.load([BUILTIN_TASKS])
    return [(t.name, ex, s.platforms) for t in catalog for s in t.specs for ex in s.examples]


@pytest.mark.parametrize(("task", "example", "platforms"), catalog_examples())
def test_every_catalog_example_parses_and_validates(
    task: str, example: str, platforms: frozenset[str]
) -> None:
    from toolkit.cli import cli
    from toolkit.cli.fix import parse_params

    args = shlex.split(example)[1:]
    command = cli.get_command(click.Context(cli), args[0])
    assert command is not None
    with click.Context(cli) as parent:
        ctx = command.make_context(args[0], args[1:], parent=parent)  # raises on bad options
    assert ctx.params["task"] == task
    entry = Catalog.load([BUILTIN_TASKS]).get(task)
    software.activate(ROOT / "software")  # the sample workspace's catalog: software.* names
    try:
        entry.validate(parse_params(ctx.params["params"]), platforms)  # as `itops fix` does
    finally:
        software.activate(None)
    if not ctx.params["check_only"]:
        assert ctx.params["ticket"], f"{example}: a change example must show --ticket"


def test_docs_mention_no_command_that_does_not_exist() -> None:
    from toolkit.cli import COMMANDS

    blocks = re.findall(r"```(?:sh|text)?\n(.*?)```", README, re.S)
    used = {m.group(1) for b in blocks for m in re.finditer(r"^itops ([a-z]+)", b, re.M)}
    assert used and used <= set(COMMANDS), used - set(COMMANDS)
