"""Fan-out: itops's full check → apply → verify (5 commands/host) on N lab hosts, beside peers
run in the same invocation on the same hosts: asyncssh running ONE command per host, and
`ansible all -m command -f 50`.

    sudo .venv/bin/python bench/fanout.py --hosts 200          # needs the [ansible] extra

Prints a table and writes bench/results/fanout.json. Needs root (it starts its own lab).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import resource
import secrets
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
VENV_BIN = Path(sys.executable).parent


def itops(ws: Path, *args: str) -> tuple[float, subprocess.CompletedProcess[str]]:
    started = time.perf_counter()
    result = subprocess.run(
        [str(VENV_BIN / "itops"), "--workspace", str(ws), *args], capture_output=True, text=True
    )
    return time.perf_counter() - started, result


def sshd_cpu(pids: list[int]) -> float:
    """CPU seconds of the lab's sshd listeners' reaped children (one per connection)."""
    tick = os.sysconf("SC_CLK_TCK")
    total = 0
    for pid in pids:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        total += int(fields[13]) + int(fields[14])  # cutime + cstime
    return total / tick


def own_children_cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


class Meter:
    """Wall time, and CPU time on both sides (client processes + sshd), of one measured run."""

    def __init__(self, pids: list[int]) -> None:
        self.pids = pids

    def __enter__(self) -> Meter:
        self.wall = time.perf_counter()
        self.server = sshd_cpu(self.pids)
        self.client = own_children_cpu() + sum(os.times()[:2])
        return self

    def __exit__(self, *exc: object) -> None:
        self.wall = time.perf_counter() - self.wall
        time.sleep(0.5)  # let the listeners reap their last children before reading their CPU
        self.server = sshd_cpu(self.pids) - self.server
        self.client = own_children_cpu() + sum(os.times()[:2]) - self.client


def asyncssh_one_command(ws: Path, hosts: list[dict[str, object]], key: Path) -> float:
    import asyncssh

    known = str(ws / ".itops" / "lab" / "known_hosts")

    async def one(host: dict[str, object]) -> None:
        async with asyncssh.connect(
            str(host["address"]),
            int(str(host["port"])),
            username="itops-lab",
            client_keys=[str(key)],
            known_hosts=known,
            config=[],
        ) as conn:
            result = await conn.run("true", check=False)
            assert result.exit_status == 0

    async def main() -> float:
        started = time.perf_counter()
        await asyncio.gather(*(one(h) for h in hosts))
        return time.perf_counter() - started

    return asyncio.run(main())


ASYNCSSH_SCRIPT = """
import asyncio, json, sys
import asyncssh

async def one(host, key, known):
    async with asyncssh.connect(host["address"], host["port"], username="itops-lab",
                                client_keys=[key], known_hosts=known, config=[]) as conn:
        assert (await conn.run("true", check=False)).exit_status == 0

async def main():
    hosts, key, known = json.load(open(sys.argv[1]))
    await asyncio.gather(*(one(h, key, known) for h in hosts))

asyncio.run(main())
"""


def asyncssh_script(ws: Path, hosts: list[dict[str, object]], key: Path) -> None:
    """The same run as a whole process, as itops is timed: interpreter start and imports count."""
    args = ws / "asyncssh-peer.json"
    args.write_text(json.dumps([hosts, str(key), str(ws / ".itops" / "lab" / "known_hosts")]))
    subprocess.run([sys.executable, "-c", ASYNCSSH_SCRIPT, str(args)], check=True)


def ansible_command(ws: Path, forks: int) -> float | None:
    ansible = VENV_BIN / "ansible"
    if not ansible.exists():
        return None
    env = {
        **os.environ,
        "ANSIBLE_HOST_KEY_CHECKING": "True",
        "ANSIBLE_SSH_CONTROL_PATH_DIR": tempfile.mkdtemp(prefix="itops-ansible-cp-"),
        "PATH": f"{VENV_BIN}:{os.environ['PATH']}",
        "ANSIBLE_STDOUT_CALLBACK": "minimal",
    }
    started = time.perf_counter()
    result = subprocess.run(
        [
            str(ansible),
            "all",
            "-i",
            str(ws / ".itops" / "lab" / "hosts.yml"),
            "-m",
            "command",
            "-a",
            "true",
            "-f",
            str(forks),
        ],
        capture_output=True,
        text=True,
        env=env,
    )
    elapsed = time.perf_counter() - started
    ok = result.stdout.count("| CHANGED") + result.stdout.count("| SUCCESS")
    if result.returncode != 0 or ok == 0:
        print(result.stdout[-2000:], result.stderr[-2000:], file=sys.stderr)
        raise SystemExit("ansible run failed")
    return elapsed


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--hosts", type=int, default=200)
    parser.add_argument("--repeat", type=int, default=3, help="runs of each (the best is kept)")
    parser.add_argument("--no-ansible", action="store_true")
    args = parser.parse_args()

    load = os.getloadavg()[0]  # before the lab starts: how quiet the machine was
    ws = Path(tempfile.mkdtemp(prefix="itops-bench-"))
    subprocess.run([str(VENV_BIN / "itops"), "init", str(ws)], check=True, capture_output=True)
    shutil.copy(HERE / "tasks" / "bench.py", ws / "tasks" / "bench.py")
    _, up = itops(ws, "lab", "up", "--hosts", str(args.hosts), "--services", "none")
    if up.returncode:
        raise SystemExit(up.stderr)
    runs: dict[str, list[dict[str, float]]] = {}

    def record(name: str, meter: Meter) -> None:
        runs.setdefault(name, []).append(
            {"wall": meter.wall, "client_cpu": meter.client, "server_cpu": meter.server}
        )

    try:
        state = json.loads((ws / ".itops" / "lab" / "state.json").read_text())
        pids = [p["pid"] for p in state["processes"] if p["role"] == "sshd"]
        hosts = [{"address": h["address"], "port": h["port"]} for h in state["hosts"]]
        key = ws / ".itops" / "lab" / "client_ed25519"
        for _ in range(args.repeat):
            with Meter(pids) as m:
                asyncssh_one_command(ws, hosts, key)
            record("asyncssh, 1 command/host", m)
            with Meter(pids) as m:
                asyncssh_script(ws, hosts, key)
            record("asyncssh, 1 command/host, as a process", m)
            for forks in (50, 200):
                run = secrets.token_hex(4)
                with Meter(pids) as m:
                    _, result = itops(
                        ws,
                        "fix",
                        "bench.marker",
                        "lab",
                        "-p",
                        f"run={run}",
                        "--ticket",
                        "BENCH-1",
                        "--forks",
                        str(forks),
                        "--json",
                    )
                report = json.loads(result.stdout)
                assert report["counts"] == {"fixed": args.hosts}, report["counts"]
                record(f"itops fix, 5 commands/host, --forks {forks}", m)
                subprocess.run(["rm", "-rf", f"/tmp/itops-bench-{run}"], check=True)
        if not args.no_ansible:
            with Meter(pids) as m:
                ansible_command(ws, 50)
            record("ansible all -m command -f 50", m)
    finally:
        itops(ws, "lab", "down")
        shutil.rmtree(ws, ignore_errors=True)

    best = {name: min(r, key=lambda x: x["wall"]) for name, r in runs.items()}
    cpu_best = {name: min(x["client_cpu"] + x["server_cpu"] for x in r) for name, r in runs.items()}
    base = best["asyncssh, 1 command/host"]["wall"]
    cpu_base = cpu_best["asyncssh, 1 command/host"]
    print(
        f"\nfan-out over {args.hosts} loopback sshd hosts, {os.cpu_count()} cores, "
        f"load {load:.1f} before; "
        f"best of {args.repeat} (itops timed as a whole CLI run: start-up and ledger included)"
    )
    print(f"  {'':<42} {'wall':>7} {'ratio':>6}   {'CPU (client+sshd)':>18} {'ratio':>6}")
    for name, r in best.items():
        print(
            f"  {name:<42} {r['wall']:6.2f}s {r['wall'] / base:5.2f}x   "
            f"{cpu_best[name]:17.2f}s {cpu_best[name] / cpu_base:5.2f}x"
        )
    process = best["asyncssh, 1 command/host, as a process"]["wall"]
    for forks in (50, 200):
        name = f"itops fix, 5 commands/host, --forks {forks}"
        print(f"  {name} vs asyncssh as a process: {best[name]['wall'] / process:.2f}x wall")
    out = HERE / "results"
    out.mkdir(exist_ok=True)
    (out / "fanout.json").write_text(
        json.dumps(
            {"hosts": args.hosts, "cores": os.cpu_count(), "load": load, "runs": runs}, indent=2
        )
    )


if __name__ == "__main__":
    main()
