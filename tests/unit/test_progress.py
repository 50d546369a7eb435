"""The progress bar says what a fan-out is doing while it runs: how many hosts are in which step
and how long the slowest has been in its step, so a clamscan that runs for minutes is visibly
running (it showed nothing for 390 s). Driven through the observer, no terminal needed."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

from tests.fakes import Script
from tests.unit.linuxfakes import linux_host, run_linux
from toolkit.cli.render import HostProgress
from toolkit.run.events import HostRun
from toolkit.run.results import HostResult
from toolkit.run.runner import Outcome

DB = (
    "dir|/var/lib/clamav\nnow|1795260000\n"
    "db|daily.cld|1000|1794800000|aaaa|27400|15 Nov 2026 09-30 -0500\n"
)


def host_run(name: str) -> HostRun:
    return HostRun("av.scan", linux_host(name=name), "INC-1", False, {}, None, {})


def test_the_bar_says_which_hosts_are_in_which_step_and_for_how_long() -> None:
    now = [1000.0]
    progress = HostProgress(clock=lambda: now[0])
    runs = {name: host_run(name) for name in ("ws-1", "ws-2", "ws-3", "ws-4")}
    assert progress.text() == ""
    for run in runs.values():
        progress.host_started(run)
    assert progress.text() == "4 in connect · ws-1 in connect 0s"
    for name in ("ws-1", "ws-2", "ws-3"):
        progress.step(runs[name], "check")
    now[0] += 5
    progress.step(runs["ws-2"], "apply")
    progress.host_done(runs["ws-4"], HostResult("ws-4", Outcome.UNREACHABLE, "refused"))
    now[0] += 250  # a long scan: the time in the step keeps counting
    assert progress.text() == "unreachable:1 · 2 in check, 1 in apply · ws-1 in check 4m15s"
    progress.host_done(runs["ws-1"], HostResult("ws-1", Outcome.ALREADY_OK, "clean"))
    progress.host_done(runs["ws-3"], HostResult("ws-3", Outcome.ALREADY_OK, "clean"))
    assert progress.text() == "already-ok:2 unreachable:1 · 1 in apply · ws-2 in apply 4m10s"


def test_a_real_run_reports_each_step_while_the_scan_runs(tmp_path: Path) -> None:
    progress = HostProgress()
    seen: list[str] = []

    def scan(command: Any, stdin: Any) -> tuple[int, str, str]:
        seen.append(progress.text())  # what the bar shows while clamscan runs
        if "--move=" in command.text:
            return 1, "/tmp/e.com: Eicar FOUND\n/tmp/e.com: moved to '/q/e.com'\n", ""
        return (1, "/tmp/e.com: Eicar FOUND\n", "") if len(seen) == 1 else (0, "", "")

    script = (
        Script()
        .on(re.compile(r"^conf=/etc/clamav/freshclam.conf;"), (0, DB, ""))
        .on(re.compile(r"clamscan -r -i"), scan)
        .on(re.compile(r"install -d -m 0700"), (0, "", ""))
    )
    run = run_linux(tmp_path, "av.scan", {}, script, observers=(progress,))
    assert run.result.outcome == Outcome.FIXED, run.result.message
    assert [re.sub(r" \d+s$", "", s) for s in seen] == [
        "1 in check · web-01 in check",
        "1 in apply · web-01 in apply",
        "1 in verify · web-01 in verify",
    ]
    assert progress.text() == "fixed:1"
