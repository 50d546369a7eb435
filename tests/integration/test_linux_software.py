"""Software requests against the lab's real apt and dpkg, through the real CLI over real SSH:
install (with a dependency), the second run already-ok, a pin that downgrades, remove, list,
an unlisted name refused with suggestions, an OS-needed package's removal refused, and an
install that fails recorded as failed (never as fixed). The catalog is the repository's example
`software/lab.yml`, copied into the lab workspace."""

from __future__ import annotations

import json
import re
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.integration.conftest import LabEnv

pytestmark = pytest.mark.integration

REPO = Path(__file__).resolve().parents[2]
HOST = "lab-01"
OURS = ("itops-lab-hello", "itops-lab-greet", "itops-lab-libgreet", "itops-lab-broken",
        "itops-lab-base", "itops-lab-rival")  # fmt: skip


@pytest.fixture
def catalog(lab: LabEnv) -> Iterator[Path]:
    """The example lab catalog in the lab workspace; lab-01 left without our packages after."""
    folder = lab.root / "software"
    folder.mkdir(exist_ok=True)
    shutil.copy(REPO / "software" / "lab.yml", folder / "lab.yml")
    try:
        yield folder / "lab.yml"
    finally:
        lab.service("apt").purge(lab.state, HOST, *OURS)
        shutil.rmtree(folder)


def outcome(result: Any, host: str = HOST) -> str:
    m = re.search(rf"^{host}\s+(\S+)", result.stdout, re.M)
    assert m, result.stdout + result.stderr
    return m.group(1)


def installed(lab: LabEnv) -> dict[str, str]:
    return {k: v for k, v in lab.service("apt").installed(lab.state, HOST).items() if k in OURS}


def test_install_again_pin_list_remove(lab: LabEnv, catalog: Path) -> None:
    check = lab.itops("fix", "software.install", HOST, "-p", "name=lab-hello", "--check")
    assert check.returncode == 4 and outcome(check) == "would-fix", check.stdout + check.stderr
    assert installed(lab) == {}  # --check installed nothing

    first = lab.itops("fix", "software.install", HOST, "-p", "name=lab-hello", "--ticket", "REQ-1")
    assert outcome(first) == "fixed", first.stdout + first.stderr
    assert installed(lab) == {"itops-lab-hello": "2.0"}  # no pin: the newest
    again = lab.itops(
        "fix", "software.install", HOST, "-p", "name=lab-hello", "--ticket", "REQ-1", "--json"
    )
    assert again.returncode == 0, again.stdout + again.stderr
    found = json.loads(again.stdout)["hosts"][0]
    assert found["outcome"] == "already-ok"
    assert found["check"]["facts"]["installed"] == "2.0"

    # The catalog pins 1.0: check sees the wrong version, the fix downgrades, verify runs it.
    catalog.write_text(
        catalog.read_text().replace(
            "    apt: itops-lab-hello\n", "    apt: {id: itops-lab-hello, version: '1.0'}\n"
        )
    )
    pinned = lab.itops(
        "fix", "software.install", HOST, "-p", "name=lab-hello", "--ticket", "REQ-2", "--json"
    )
    host = json.loads(pinned.stdout)["hosts"][0]
    assert host["outcome"] == "fixed", pinned.stdout + pinned.stderr
    assert "2.0 is installed, 1.0 is pinned" in host["check"]["summary"]
    assert host["verify"]["facts"]["answers"] == {
        "ok": True,
        "detail": "`itops-lab-hello --version` answered 'itops-lab-hello 1.0'",
    }
    assert installed(lab) == {"itops-lab-hello": "1.0"}

    listed = lab.itops("fix", "software.list", HOST, "-p", "match=itops-lab-*", "--check", "--json")
    assert listed.returncode == 0, listed.stdout + listed.stderr
    rows = json.loads(listed.stdout)["hosts"][0]["check"]["facts"]["packages"]
    by_name = {r["name"]: r for r in rows}
    assert by_name["itops-lab-hello"] == {
        "name": "itops-lab-hello", "version": "1.0", "state": "installed", "software": "lab-hello"
    }  # fmt: skip
    assert by_name["itops-lab-tool"]["version"] in ("1.0", "2.0")  # installed by the lab
    assert all(r["name"].startswith("itops-lab-") for r in rows)
    only = lab.itops("fix", "software.list", HOST, "-p", "listed=true", "--check", "--json")
    rows = json.loads(only.stdout)["hosts"][0]["check"]["facts"]["packages"]
    assert [r["name"] for r in rows] == ["itops-lab-hello"]

    removed = lab.itops("fix", "software.remove", HOST, "-p", "name=lab-hello", "--ticket", "REQ-3")
    assert outcome(removed) == "fixed", removed.stdout + removed.stderr
    assert installed(lab) == {}
    assert not (lab.host_root(HOST) / "usr/bin/itops-lab-hello").exists()
    gone = lab.itops("fix", "software.remove", HOST, "-p", "name=lab-hello", "--ticket", "REQ-3")
    assert outcome(gone) == "already-ok"


def test_an_approved_install_brings_its_dependency(lab: LabEnv, catalog: Path) -> None:
    ran = lab.approved("fix", "software.install", HOST, "-p", "name=lab-greet", "--ticket", "REQ-4")
    assert outcome(ran) == "fixed", ran.stdout + ran.stderr
    assert installed(lab) == {"itops-lab-greet": "1.0", "itops-lab-libgreet": "1.0"}
    log = lab.itops("log", "--ticket", "REQ-4", "--json")
    assert "itops-lab-greet 1.0 (libgreet 1.0)" in log.stdout  # verify ran the program
    # Removing the library would take greet with it: refused, nothing removed.
    catalog.write_text(
        catalog.read_text()
        + "\nlab-libgreet:\n  licence: lab\n  packages:\n    apt: itops-lab-libgreet\n"
    )
    lib = lab.itops("fix", "software.remove", HOST, "-p", "name=lab-libgreet", "--ticket", "REQ-5")
    assert lib.returncode == 1 and outcome(lib) == "failed", lib.stdout + lib.stderr
    assert "would also remove itops-lab-greet" in lib.stdout
    assert installed(lab) == {"itops-lab-greet": "1.0", "itops-lab-libgreet": "1.0"}


def test_unlisted_name_is_refused_with_the_closest_listed(lab: LabEnv, catalog: Path) -> None:
    before = lab.dpkg_state(HOST)
    ran = lab.itops("fix", "software.install", HOST, "-p", "name=lab-helo", "--ticket", "REQ-6")
    assert ran.returncode == 2, ran.stdout + ran.stderr
    assert "'lab-helo' is not in the software catalog" in ran.stderr
    assert "did you mean: lab-hello" in ran.stderr
    assert lab.dpkg_state(HOST) == before
    assert "REQ-6" not in lab.itops("ticket", "list", "--json").stdout  # nothing was opened


def test_removing_what_the_os_needs_is_refused(lab: LabEnv, catalog: Path) -> None:
    lab.service("apt").apt(lab.state, HOST, "-y", "-q", "install", "itops-lab-base")
    before = lab.dpkg_state(HOST)
    ran = lab.itops(
        "fix", "software.remove", HOST, "-p", "name=lab-base", "--ticket", "REQ-7", "--json"
    )
    host = json.loads(ran.stdout)["hosts"][0]
    assert ran.returncode == 1 and host["outcome"] == "failed", ran.stdout + ran.stderr
    assert host["error"] == "change-refused"
    assert "the OS needs it (it is Essential (dpkg))" in host["message"]
    assert lab.dpkg_state(HOST) == before


def test_a_failing_install_is_a_clear_failure_never_fixed(lab: LabEnv, catalog: Path) -> None:
    before = lab.dpkg_state(HOST)
    ran = lab.itops(
        "fix", "software.install", HOST, "-p", "name=lab-broken", "--ticket", "REQ-8", "--json"
    )
    host = json.loads(ran.stdout)["hosts"][0]
    assert ran.returncode == 1 and host["outcome"] == "failed", ran.stdout + ran.stderr
    assert "apt-get install itops-lab-broken exited 100" in host["message"]
    assert "Depends: itops-lab-missing but it is not installable" in host["message"]
    assert lab.dpkg_state(HOST)[0] == before[0]
    log = lab.itops("log", "--ticket", "REQ-8", "--json").stdout
    records = [json.loads(line) for line in log.splitlines()]
    finished = [r for r in records if r["kind"] == "action.finish"]
    assert [r["outcome"] for r in finished] == ["failed"], log
    assert '"fixed"' not in log


def test_an_install_that_would_remove_another_package_stops(lab: LabEnv, catalog: Path) -> None:
    before = lab.dpkg_state(HOST)
    assert "itops-lab-tool" in before[0]
    ran = lab.itops(
        "fix", "software.install", HOST, "-p", "name=lab-rival", "--ticket", "REQ-10", "--json"
    )
    host = json.loads(ran.stdout)["hosts"][0]
    assert ran.returncode == 1 and host["outcome"] == "failed", ran.stdout + ran.stderr
    assert "Packages need to be removed but remove is disabled" in host["message"]
    assert lab.dpkg_state(HOST)[0] == before[0]  # itops-lab-tool is still there


def test_a_held_dpkg_lock_is_waited_for_then_named(lab: LabEnv, catalog: Path) -> None:
    apt = lab.service("apt")
    with apt.hold_lock(lab.state, HOST):
        ran = lab.itops(
            "fix", "software.install", HOST, "-p", "name=lab-hello", "-p", "lock_timeout=2",
            "--ticket", "REQ-11",
        )  # fmt: skip
    assert ran.returncode == 1 and outcome(ran) == "failed", ran.stdout + ran.stderr
    assert "the package manager is busy" in ran.stdout and "nothing was installed" in ran.stdout
    assert installed(lab) == {}
