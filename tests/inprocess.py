"""`itops …` in-process for tests: the real entry point (errors become messages and exit codes),
stdout and stderr interleaved."""

from __future__ import annotations

import sys
from pathlib import Path

from click.testing import CliRunner


def itops(ws: Path, *args: str, operator: str = "ana") -> tuple[int, str]:
    from toolkit.cli import main

    env = {"ITOPS_OPERATOR": operator, "ITOPS_WORKSPACE": None}
    with CliRunner().isolation(env=env) as (_out, _err, both):
        try:
            main(["-w", str(ws), *args])
            code = 0
        except SystemExit as exc:
            code = exc.code if isinstance(exc.code, int) else 1
        sys.stdout.flush()  # (a CSV writer writes to sys.stdout without click's flush)
    return code, both.getvalue().decode()
