"""The shipped test kit (toolkit.remediation.testing), as a task author uses it."""

from __future__ import annotations

from pathlib import Path

import pytest

from toolkit.remediation.testing import Script, UnscriptedCommand, run_task

README = (Path(__file__).resolve().parents[2] / "README.md").read_text()


def readme_block(after: str) -> str:
    return README.split(after, 1)[1].split("```python", 1)[1].split("```", 1)[0]


def test_the_readmes_remediation_and_its_unit_test_run_as_written(tmp_path: Path) -> None:
    (tmp_path / "tasks").mkdir()
    task = readme_block("Drop a module in the workspace's `tasks/` folder")
    (tmp_path / "tasks" / "flag.py").write_text(task)
    namespace: dict[str, object] = {}
    exec(readme_block("A unit test for it, with the shipped test kit"), namespace)
    namespace["test_the_flag_is_created"](tmp_path)  # type: ignore[operator]


def flag_task(tmp_path: Path) -> object:
    from toolkit.remediation.catalog import Catalog

    (tmp_path / "tasks").mkdir(exist_ok=True)
    code = readme_block("Drop a module in the workspace's `tasks/` folder")
    (tmp_path / "tasks" / "flag.py").write_text(code)
    return Catalog.load([tmp_path / "tasks"]).get("demo.flag")


def test_an_unscripted_command_fails_the_test(tmp_path: Path) -> None:
    script = Script().on("test -e /tmp/flag", (1, "", ""))  # check only: apply is unscripted
    with pytest.raises(UnscriptedCommand, match="unscripted command: touch /tmp/flag"):
        run_task(flag_task(tmp_path), {}, script)


def test_a_change_outside_apply_is_refused_as_in_a_real_run(tmp_path: Path) -> None:
    from toolkit.remediation.catalog import Context, Finding, Remediation, remediation
    from toolkit.remediation.quoting import cmd

    @remediation("kit.sneaky", category="other", platforms={"linux"}, summary="changes in check")
    class Sneaky(Remediation):
        def check(self, ctx: Context) -> Finding:
            ctx.change(cmd("touch", "/tmp/x"))
            return Finding.healthy("never")

        def apply(self, ctx: Context) -> None:
            pass

    run = run_task(Sneaky, {}, Script().on("touch /tmp/x", (0, "", "")))
    assert run.outcome == "failed" and "check may only read" in run.message
    assert run.sent == []  # refused before it reached the transport
