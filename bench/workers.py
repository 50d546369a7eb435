"""Distributed workers vs one process: the same `itops fix bench.marker` (check → apply → verify,
five commands per host) on N lab hosts, run by the controller alone, then by two local workers
(two sites of N/2 hosts, `itops worker --site …`), alternating, the best of --repeat kept.

    flock /work/lab.lock sudo .venv/bin/python bench/workers.py --hosts 1000

Needs root (it starts its own lab), RabbitMQ on 127.0.0.1:5672 (a virtual host of its own, made
and deleted with rabbitmqctl) and PostgreSQL (ITOPS_TEST_PG_URL, default
postgresql+psycopg://postgres@127.0.0.1:5432/test; a schema of its own). Both runs write that
PostgreSQL ledger, with the same total concurrency (--forks F on each of two workers, 2F alone).
Measures wall time, the controller's CPU (its own rusage, from wait4), the workers' CPU and peak
memory (/proc), and writes bench/results/workers.json.
"""

from __future__ import annotations

import argparse
import json
import os
import secrets
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
VENV_BIN = Path(sys.executable).parent
PG_URL = os.environ.get("ITOPS_TEST_PG_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/test")


def cpu_of(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")  # utime + stime


def memory_of(pid: int) -> dict[str, float]:
    found = {}
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        key, _, value = line.partition(":")
        if key in ("VmHWM", "VmRSS"):
            found[key] = int(value.split()[0]) / 1024  # MB
    return found


def timed(env: dict[str, str], ws: Path, *args: str) -> dict[str, float]:
    """One `itops` run's wall time (its CPU: see `children_cpu`)."""
    started = time.perf_counter()
    proc = subprocess.Popen(
        [str(VENV_BIN / "itops"), "--workspace", str(ws), *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        env=env,
    )
    out, err = proc.communicate()
    wall = time.perf_counter() - started
    # (reaped by communicate: its CPU is the caller's RUSAGE_CHILDREN delta)
    if proc.returncode != 0:
        sys.stderr.write(out.decode()[-3000:] + err.decode()[-3000:])
        raise SystemExit(f"itops {' '.join(args[:3])} exited {proc.returncode}")
    return {"wall": wall}


def children_cpu() -> float:
    import resource

    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--hosts", type=int, default=1000)
    parser.add_argument("--forks", type=int, default=50, help="per worker (alone: twice this)")
    parser.add_argument("--repeat", type=int, default=2)
    args = parser.parse_args()

    from sqlalchemy import create_engine, text

    schema = f"itops_bench_{secrets.token_hex(4)}"
    engine = create_engine(PG_URL)
    with engine.begin() as conn:
        conn.execute(text(f"CREATE SCHEMA {schema}"))
    ledger = f"{PG_URL}{'&' if '?' in PG_URL else '?'}options=-csearch_path%3D{schema}"
    vhost = f"itops-bench-{secrets.token_hex(4)}"
    subprocess.run(["rabbitmqctl", "-q", "add_vhost", vhost], check=True, capture_output=True)
    subprocess.run(["rabbitmqctl", "-q", "set_permissions", "-p", vhost, "guest", ".*", ".*",
                    ".*"], check=True, capture_output=True)  # fmt: skip
    env = {k: v for k, v in os.environ.items() if not k.startswith("ITOPS_")}
    env["ITOPS_LEDGER_URL"] = ledger
    base = Path(tempfile.mkdtemp(prefix="itops-bench-workers-"))
    alone, spread = base / "alone", base / "sites"
    workers: list[subprocess.Popen[bytes]] = []
    try:
        for ws in (alone, spread):
            subprocess.run([str(VENV_BIN / "itops"), "init", str(ws)], check=True,
                           capture_output=True)  # fmt: skip
            shutil.copy(HERE / "tasks" / "bench.py", ws / "tasks" / "bench.py")
        started = time.perf_counter()
        subprocess.run([str(VENV_BIN / "itops"), "--workspace", str(alone), "lab", "up",
                        "--hosts", str(args.hosts), "--services", "none"], check=True,
                       capture_output=True, env=env)  # fmt: skip
        print(f"lab of {args.hosts} hosts up in {time.perf_counter() - started:.1f}s")
        lab = alone / ".itops" / "lab"
        hosts = [h["name"] for h in json.loads((lab / "state.json").read_text())["hosts"]]
        half = len(hosts) // 2
        sites = {"site-1": hosts[:half], "site-2": hosts[half:]}
        (spread / "inventory" / "sites.yml").write_text(
            "all:\n  children:\n"
            + "".join(
                f"    {site}:\n      vars: {{site: {site}}}\n      hosts:\n"
                + "".join(f"        {h}: {{}}\n" for h in names)
                for site, names in sites.items()
            )
        )
        shutil.copy(lab / "known_hosts", spread / "inventory" / "known_hosts")
        config = (
            (spread / "itops.toml")
            .read_text()
            .replace(
                'sources = ["inventory/hosts.yml"]',
                f'sources = ["{lab / "hosts.yml"}", "inventory/sites.yml"]',
            )
        )
        config += (
            f'\n[workers]\nbroker = "amqp://guest:guest@127.0.0.1:5672/{vhost}"\n'
            f"jobs = 1\njob_hosts = {max(half, len(hosts) - half)}\n"
        )
        (spread / "itops.toml").write_text(config)
        for site in sites:
            workers.append(subprocess.Popen(
                [str(VENV_BIN / "itops"), "--workspace", str(spread), "worker", "--site", site,
                 "--forks", str(args.forks)],
                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=env,
            ))  # fmt: skip
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            listed = subprocess.run([str(VENV_BIN / "itops"), "--workspace", str(spread),
                                     "worker", "list", "--json"], capture_output=True, env=env)  # fmt: skip
            if listed.returncode == 0 and all(r["worker"] for r in json.loads(listed.stdout)):
                break
            time.sleep(0.5)
        runs: dict[str, list[dict[str, float]]] = {"alone": [], "workers": []}
        for i in range(args.repeat):
            for name, ws, forks in (("alone", alone, 2 * args.forks),
                                    ("workers", spread, args.forks)):  # fmt: skip
                before_cpu = children_cpu()
                before_workers = sum(cpu_of(w.pid) for w in workers)
                got = timed(env, ws, "fix", "bench.marker", "lab", "-p",
                            f"run={name}-{i}-{secrets.token_hex(3)}", "--ticket",
                            f"CHG-{i}{len(name)}", "--forks", str(forks))  # fmt: skip
                got["controller_cpu"] = children_cpu() - before_cpu
                got["workers_cpu"] = sum(cpu_of(w.pid) for w in workers) - before_workers
                runs[name].append(got)
                print(f"{name:8} run {i + 1}: {got['wall']:.2f}s wall, controller "
                      f"{got['controller_cpu']:.2f}s CPU, workers {got['workers_cpu']:.2f}s CPU")  # fmt: skip
        best = {name: min(r, key=lambda x: x["wall"]) for name, r in runs.items()}
        memory = [memory_of(w.pid) for w in workers]
        summary = {
            "hosts": len(hosts),
            "forks_total": 2 * args.forks,
            "best": best,
            "wall_ratio": best["workers"]["wall"] / best["alone"]["wall"],
            "controller_cpu_ratio": best["workers"]["controller_cpu"]
            / best["alone"]["controller_cpu"],
            "worker_memory_mb": memory,
            "runs": runs,
            "load_before": os.getloadavg()[0],
        }
        print(
            f"\n{len(hosts)} hosts: 2 workers vs alone — wall {summary['wall_ratio']:.2f}x, "
            f"controller CPU {summary['controller_cpu_ratio']:.2f}x; worker peak RSS "
            + ", ".join(f"{m.get('VmHWM', 0):.0f} MB" for m in memory)
        )
        (HERE / "results").mkdir(exist_ok=True)
        (HERE / "results" / "workers.json").write_text(json.dumps(summary, indent=2) + "\n")
    finally:
        for worker in workers:
            worker.send_signal(signal.SIGTERM)
        for worker in workers:
            try:
                worker.wait(20)
            except subprocess.TimeoutExpired:
                worker.kill()
        subprocess.run([str(VENV_BIN / "itops"), "--workspace", str(alone), "lab", "down"],
                       capture_output=True, env=env)  # fmt: skip
        subprocess.run(["rabbitmqctl", "-q", "delete_vhost", vhost], capture_output=True)
        with engine.begin() as conn:
            conn.execute(text(f"DROP SCHEMA {schema} CASCADE"))
        shutil.rmtree(base, ignore_errors=True)


if __name__ == "__main__":
    main()
