"""One exit-code rule for every run: the first of EXIT_CODES that applies."""

from __future__ import annotations

import pytest

from toolkit.run.results import HostResult, Outcome, RunReport, exit_code

Out = Outcome


@pytest.mark.parametrize(
    ("outcomes", "failed", "code"),
    [
        ((), False, 0),
        ((Out.FIXED, Out.ALREADY_OK), False, 0),
        ((Out.FIXED, Out.ALREADY_OK, Out.SKIPPED), False, 6),  # held back: its own code
        ((Out.SKIPPED, Out.WOULD_FIX), False, 6),
        ((Out.SKIPPED, Out.NEEDS_APPROVAL), False, 5),
        ((Out.WOULD_FIX, Out.FIXED), False, 4),
        ((Out.WOULD_FIX, Out.NEEDS_APPROVAL), False, 5),
        ((Out.NEEDS_APPROVAL, Out.UNREACHABLE), False, 3),
        ((Out.UNREACHABLE, Out.FAILED), False, 1),
        ((Out.FIXED,), True, 1),  # the run failed beyond its hosts (finish_run, an escalation)
        ((Out.WOULD_FIX, Out.UNREACHABLE), True, 1),  # which counts as a failed host: first wins
    ],
)
def test_the_first_exit_code_that_applies_wins(
    outcomes: tuple[Outcome, ...], failed: bool, code: int
) -> None:
    assert exit_code(outcomes, failed=failed) == code


def test_a_reports_exit_code_is_that_rule() -> None:
    results = (HostResult("a", Out.FIXED, ""), HostResult("b", Out.UNREACHABLE, ""))
    assert RunReport("t", "T-1", False, results, 0.0).exit_code == 3
    assert RunReport("t", "T-1", False, results, 0.0, finish_failed=True).exit_code == 1


def test_the_runner_still_exports_the_result_types() -> None:
    from toolkit.run import runner

    assert runner.HostResult is HostResult and runner.Outcome is Outcome


def test_a_host_of_another_platform_is_skipped_but_leaves_no_work_undone() -> None:
    from toolkit.run.results import NOT_ITS_PLATFORM, HostResult, RunReport

    report = RunReport(
        "t", "T-1", False,
        (HostResult("a", Out.FIXED, "ok"),
         HostResult("w", Out.SKIPPED, "no implementation", error=NOT_ITS_PLATFORM)),
        0.1,
    )  # fmt: skip
    assert report.exit_code == 0
