"""Hostile values for the Linux catalog: names (users, queues, packages, services, interfaces) with
shell metacharacters, spaces, newlines, `..` or a leading `-` are refused before anything
connects; paths and free text that may hold such characters are passed literally, as one quoted
argument (the integration tests check that a canary file is never created on a real host)."""

from __future__ import annotations

import re
import shlex
from pathlib import Path

import pytest
from click.testing import CliRunner

from tests.fakes import Script
from tests.unit.linuxfakes import CATALOG, run_linux
from toolkit.cli import cli
from toolkit.errors import ValidationError
from toolkit.run.runner import Outcome
from toolkit.workspace import Workspace

HOSTILE_NAMES = [
    "jdoe; touch /tmp/pwned",
    "$(touch /tmp/pwned)",
    "j`id`",
    "j doe",
    "jdoe\nid",
    "-rf",
    "a|b",
    "a&b",
    "../../etc/passwd",
    "x>y",
    "",
]
NAME_PARAMS = [
    ("password.reset", "user", {}),
    ("printer.clear-queue", "queue", {}),
    ("printer.status", "queue", {}),
    ("printer.reinstall-queue", "queue", {}),
    ("printer.reinstall-queue", "driver", {"queue": "office"}),
    ("patch.apply", "include", {}),
    ("patch.apply", "exclude", {}),
    ("service.restart", "service", {}),
    ("network.renew-dhcp", "adapter", {}),
    ("network.diagnose", "name", {}),
    ("network.diagnose", "target", {}),
    ("backup.restore", "backup", {"path": "/etc/hosts"}),
]
HOSTILE_PATHS = ["relative/path", "/srv/../etc/shadow", "-rf", "/tmp/a\nb", "/tmp/a\rb", ""]
PATH_PARAMS = [
    ("av.scan", "path", {}),
    ("backup.files", "paths", {}),
    ("backup.restore", "path", {}),
    ("backup.restore", "to", {"path": "/etc/hosts"}),
    ("disk.cleanup", "path", {}),
    ("printer.reinstall-queue", "ppd", {"queue": "office"}),
]


def linux_spec(task: str):  # type: ignore[no-untyped-def]
    return CATALOG.get(task).implementation("linux")


@pytest.mark.parametrize(("task", "param", "others"), NAME_PARAMS)
@pytest.mark.parametrize("value", HOSTILE_NAMES, ids=repr)
def test_hostile_names_are_refused(
    task: str, param: str, others: dict[str, str], value: str
) -> None:
    required = {"user": "jdoe", "service": "nginx", "queue": "office", "path": "/etc/hosts"}
    raw = {
        k: v
        for k, v in required.items()
        if k in linux_spec(task).params and linux_spec(task).params[k].required
    }
    raw.update(others)
    raw[param] = value
    with pytest.raises(ValidationError) as refused:
        linux_spec(task).validate(raw)
    assert param in str(refused.value) or "parameter" in str(refused.value)


@pytest.mark.parametrize(("task", "param", "others"), PATH_PARAMS)
@pytest.mark.parametrize("value", HOSTILE_PATHS, ids=repr)
def test_hostile_paths_are_refused(
    task: str, param: str, others: dict[str, str], value: str
) -> None:
    raw = dict(others)
    raw[param] = value
    if task == "backup.restore" and param == "to":
        raw["path"] = "/etc/hosts"
    with pytest.raises(ValidationError):
        linux_spec(task).validate(raw)


@pytest.mark.parametrize("value", ["Sat 01:00-05:00\nreboot now", "Sat\x00"])
def test_free_text_with_control_characters_is_refused(value: str) -> None:
    with pytest.raises(ValidationError):
        linux_spec("patch.apply").validate({"reboot_window": value})


def test_free_text_reaches_the_host_as_one_literal_argument(tmp_path: Path) -> None:
    """printer descriptions are free text: quoted, never interpreted."""
    description = "Floor 4 $(touch /tmp/pwned); `id` 'quoted' \"double\" \\ & | >x"
    script = (
        Script()
        .on("lpoptions -p office", (0, "device-uri=file:/dev/null printer-info=old\n", ""))
        .on("lpstat -l -p office", (0, "printer office is idle.\n\tDescription: old\n", ""))
        .on("lpstat -d", (0, "no system default destination\n", ""))
        .on(
            re.compile(r"^lpstat -p office"),
            (
                0,
                "printer office is idle.  enabled since x\noffice accepting requests since x\nnow Sat Nov 21 10:00:00 2026\n",
                "",
            ),
        )
        .on(re.compile(r"lpadmin|cupsenable|cupsaccept"), (0, "", ""))
    )
    run = run_linux(
        tmp_path,
        "printer.reinstall-queue",
        {"queue": "office", "description": description},
        script,
    )
    added = next(c for c in run.sent if "lpadmin -p office" in c)
    inner = shlex.split(added)[-1]  # what the root shell runs (sudo -n … /bin/sh -c INNER)
    assert shlex.split(inner) == [
        "lpadmin",
        "-p",
        "office",
        "-E",
        "-v",
        "file:/dev/null",
        "-D",
        description,
    ]
    assert run.result.outcome == Outcome.FIXED


def test_a_path_with_metacharacters_is_one_argument(tmp_path: Path) -> None:
    path = "/srv/a b;$(touch /tmp/pwned)`id`"
    script = Script().on(re.compile(r"^sudo -n -u root -- /bin/sh -c 'test -e"), (1, "", ""))
    run = run_linux(tmp_path, "backup.files", {"paths": path}, script, check_only=True)
    assert run.result.outcome == Outcome.FAILED and "nothing to back up" in run.result.message
    (probe,) = run.sent
    assert shlex.split(shlex.split(probe)[-1]) == ["test", "-e", path]


@pytest.fixture
def linux_workspace(workspace: Workspace) -> Path:
    (workspace.root / "inventory" / "hosts.yml").write_text(
        "all:\n  hosts:\n    web-01: {address: 127.0.0.1, port: 1, platform: linux}\n"
    )
    return workspace.root


@pytest.mark.parametrize(
    ("command", "words"),
    [
        (["fix", "password.reset", "web-01", "-p", "user=jdoe; id"], "parameter user"),
        (["fix", "patch.apply", "web-01", "-p", "include=$(id)"], "parameter include"),
        (["fix", "printer.clear-queue", "web-01", "-p", "queue=a b"], "parameter queue"),
        (["fix", "backup.files", "web-01", "-p", "paths=/srv/../etc"], "'..'"),
        (["fix", "service.restart", "web-01", "-p", "service=-x"], "parameter service"),
        (["runbook", "run", "password-locked", "web-01", "-p", "user=j\nd"], "parameter user"),
        (["runbook", "run", "printer-not-printing", "web-01", "-p", "queue=-x"], "parameter queue"),
    ],
)
def test_the_cli_refuses_before_connecting_or_recording(
    linux_workspace: Path, command: list[str], words: str
) -> None:
    result = CliRunner().invoke(cli, ["-w", str(linux_workspace), *command, "--ticket", "INC-1"])
    assert result.exit_code != 0 and isinstance(result.exception, ValidationError)
    assert words in str(result.exception)
    assert not (linux_workspace / ".itops" / "ledger.db").exists(), "nothing was recorded or run"
