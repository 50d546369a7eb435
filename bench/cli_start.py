"""CLI cold start: `itops --help` and `itops tasks list` (target: median under 150 ms), beside
the interpreter's own start (`python -c pass`, the floor) and `ansible --help` (a peer CLI),
measured in the same invocation.

    .venv/bin/python bench/cli_start.py [--runs 30]
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
BIN = Path(sys.executable).parent
ROOT = HERE.parent


def median_ms(argv: list[str], runs: int) -> float:
    subprocess.run(argv, capture_output=True, cwd=ROOT)  # warm the page cache
    times = []
    for _ in range(runs):
        started = time.perf_counter()
        subprocess.run(argv, capture_output=True, cwd=ROOT, check=False)
        times.append((time.perf_counter() - started) * 1000)
    return statistics.median(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=30)
    args = parser.parse_args()
    cases = {
        "python -c pass (floor)": [sys.executable, "-c", "pass"],
        "itops --help": [str(BIN / "itops"), "--help"],
        "itops tasks list": [str(BIN / "itops"), "tasks", "list"],
    }
    if (BIN / "ansible").exists():
        cases["ansible --help (peer)"] = [str(BIN / "ansible"), "--help"]
    results = {name: median_ms(argv, args.runs) for name, argv in cases.items()}
    floor = results["python -c pass (floor)"]
    print(f"CLI cold start, median of {args.runs} runs (output piped)")
    for name, ms in results.items():
        print(f"  {name:<26} {ms:7.1f} ms   {ms / floor:5.1f}x the interpreter alone")
    (HERE / "results").mkdir(exist_ok=True)
    (HERE / "results" / "cli_start.json").write_text(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
