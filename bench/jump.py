"""Jump hosts: the same `itops fix` on N site hosts through one bastion vs directly.

    sudo .venv/bin/python bench/jump.py --hosts 200

A lab of one site (`itops lab up --hosts 0 --sites 1 --site-hosts N`): N sshd hosts in a network
namespace, one bastion sshd with a leg in it. "Through the bastion" runs the CLI in the main
namespace with the lab's inventory (`jump: [bastion-1]`); "direct" runs the same command line
inside the site's namespace (`ip netns exec`), with the same inventory less the jump, so the hosts
are reached on the namespace's loopback. Same hosts, same sshds, same task (bench.marker: five
commands per host); the difference is the tunnel. Runs alternate; the best of --repeat is kept.
Prints the ratio and writes bench/results/jump.json. Needs root.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import secrets
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
VENV_BIN = Path(sys.executable).parent
TARGET = 1.3


def itops(ws: Path, *args: str, netns: str | None = None) -> tuple[float, dict[str, Any]]:
    prefix = ["ip", "netns", "exec", netns] if netns else []
    started = time.perf_counter()
    result = subprocess.run(
        [*prefix, str(VENV_BIN / "itops"), "--workspace", str(ws), *args],
        capture_output=True,
        text=True,
    )
    wall = time.perf_counter() - started
    if result.returncode:
        raise SystemExit(f"itops {' '.join(args)} failed:\n{result.stdout}{result.stderr}")
    return wall, json.loads(result.stdout) if result.stdout.startswith("{") else {}


def init(ws: Path) -> None:
    subprocess.run([str(VENV_BIN / "itops"), "init", str(ws)], check=True, capture_output=True)
    shutil.copy(HERE / "tasks" / "bench.py", ws / "tasks" / "bench.py")
    (ws / "inventory" / "hosts.yml").write_text("all:\n  hosts: {}\n")


def direct_workspace(lab_ws: Path, root: Path) -> Path:
    """A workspace with the lab's site hosts and keys, without their jump host."""
    import yaml

    ws = root / "direct"
    init(ws)
    lab = lab_ws / ".itops" / "lab"
    inventory = yaml.safe_load((lab / "hosts.yml").read_text())
    sites = inventory["all"]["children"]["sites"]
    for group in sites["children"].values():
        group["vars"].pop("jump")
    (ws / "inventory" / "hosts.yml").write_text(
        yaml.safe_dump({"all": {"children": {"sites": sites}}})
    )
    shutil.copy(lab / "known_hosts", ws / "inventory" / "known_hosts")
    return ws


def logins(log: Path) -> int:
    return len(re.findall(r"^Accepted publickey for ", log.read_text(), re.M))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--hosts", type=int, default=200)
    parser.add_argument("--repeat", type=int, default=3, help="runs of each (the best is kept)")
    parser.add_argument("--forks", type=int, default=50)
    args = parser.parse_args()

    load = os.getloadavg()[0]
    root = Path(tempfile.mkdtemp(prefix="itops-bench-jump-"))
    ws = root / "lab"
    init(ws)
    itops(
        ws, "lab", "up", "--hosts", "0", "--sites", "1", "--site-hosts", str(args.hosts),
        "--services", "none",
    )  # fmt: skip
    runs: dict[str, list[float]] = {"direct": [], "through the bastion": []}
    bastion_logins: list[int] = []
    try:
        state = json.loads((ws / ".itops" / "lab" / "state.json").read_text())
        site = state["data"]["sites"][0]
        direct = direct_workspace(ws, root)
        log = Path(site["log"])
        for _ in range(args.repeat):
            for name in runs:
                run = secrets.token_hex(4)
                before = logins(log)
                wall, report = itops(
                    direct if name == "direct" else ws,
                    "fix", "bench.marker", "site1", "-p", f"run={run}", "--ticket", "BENCH-1",
                    "--forks", str(args.forks), "--json",
                    netns=site["netns"] if name == "direct" else None,
                )  # fmt: skip
                assert report["counts"] == {"fixed": args.hosts}, report["counts"]
                runs[name].append(wall)
                if name != "direct":
                    time.sleep(0.5)  # sshd logs the login as it happens; let it settle
                    bastion_logins.append(logins(log) - before)
                subprocess.run(["rm", "-rf", f"/tmp/itops-bench-{run}"], check=True)
    finally:
        itops(ws, "lab", "down")
        shutil.rmtree(root, ignore_errors=True)

    best = {name: min(walls) for name, walls in runs.items()}
    ratio = best["through the bastion"] / best["direct"]
    print(
        f"\njump hosts: {args.hosts} site hosts, itops fix (5 commands/host, --forks "
        f"{args.forks}), {os.cpu_count()} cores, load {load:.1f} before; best of {args.repeat}"
    )
    for name, wall in best.items():
        print(f"  {name:<22} {wall:6.2f}s")
    print(
        f"  ratio {ratio:.2f}x wall (target ≤ {TARGET}x); bastion logins per run: {bastion_logins}"
    )
    out = HERE / "results"
    out.mkdir(exist_ok=True)
    (out / "jump.json").write_text(
        json.dumps(
            {
                "hosts": args.hosts,
                "forks": args.forks,
                "cores": os.cpu_count(),
                "load": load,
                "runs": runs,
                "ratio": ratio,
                "bastion_logins_per_run": bastion_logins,
            },
            indent=2,
        )
    )


if __name__ == "__main__":
    main()
