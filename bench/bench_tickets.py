"""Benchmark: ticket import, projection refresh, KPIs and the KPI report over N ticket events.

    .venv/bin/python bench/bench_tickets.py --events 1000000 [--pg postgresql+psycopg://…]

Targets (issue 5): import of 1,000,000 events < 60 s; KPI computation < 2 s; `itops report kpi`
< 5 s. Prints one line per phase and writes bench/results/tickets-<N>.json.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))
sys.path.insert(0, str(HERE))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--events", type=int, default=1_000_000)
    parser.add_argument("--ledger-url", help="default: SQLite in a temporary workspace")
    parser.add_argument("--keep", action="store_true", help="keep the temporary workspace")
    args = parser.parse_args()

    from gen_tickets import generate

    from toolkit.app import App
    from toolkit.desk.kpi import kpis
    from toolkit.desk.kpi_sql import kpis_fast
    from toolkit.desk.service import kpi_report, policy_for, projection_for
    from toolkit.desk.ticketio import import_file
    from toolkit.reports import kpi as kpi_pages
    from toolkit.workspace import Workspace

    results: dict[str, float | int | str] = {"events": args.events}
    tmp = Path(tempfile.mkdtemp(prefix="itops-bench-"))
    Workspace.init(tmp / "ws")
    if args.ledger_url:
        os.environ["ITOPS_LEDGER_URL"] = args.ledger_url
    data = tmp / "tickets.jsonl"
    t = time.perf_counter()
    with data.open("w") as out:
        for line in generate(args.events):
            out.write(json.dumps(line, separators=(",", ":")) + "\n")
    results["generate_s"] = round(time.perf_counter() - t, 2)

    def phase(name: str, seconds: float, target: float | None = None) -> None:
        results[name] = round(seconds, 3)
        verdict = "" if target is None else (" ok" if seconds < target else f" OVER {target} s")
        print(f"{name:<28} {seconds:8.2f} s{verdict}", flush=True)

    app = App(tmp / "ws")
    # exactly what `itops ticket import` does: check, append while a second process summarises
    t = time.perf_counter()
    cpu = time.process_time()
    projection = projection_for(app)
    result = import_file(app.ledger, data, on_checked=projection.prime)
    projection.refresh()
    projection.close()
    phase("ticket_import_total", time.perf_counter() - t, 60)
    phase("ticket_import_cpu_parent", time.process_time() - cpu)
    results["tickets"] = result.tickets
    t = time.perf_counter()
    projection = projection_for(app)
    projection.rebuild()
    projection.close()
    phase("projection_rebuild_cold", time.perf_counter() - t)

    policy = policy_for(app.workspace)
    since, until = 1761955200.0, 1795000000.0  # 2025-11-01 … 2026-11-19
    t = time.perf_counter()
    cpu = time.process_time()
    out = kpi_report(app, since=since, until=until, now=until)
    phase("kpi_compute", time.perf_counter() - t, 2)
    phase("kpi_compute_cpu", time.process_time() - cpu)
    results["response_sla_compliance"] = out["response_sla_compliance"]
    projection = projection_for(app, policy)
    t = time.perf_counter()
    kpis_fast(projection, policy, since=since, until=until, now=until, by="category")
    phase("kpi_by_category", time.perf_counter() - t)
    t = time.perf_counter()
    kpi_pages.html(kpi_pages.build(projection, policy, since=since, until=until, now=until))
    phase("report_build_in_process", time.perf_counter() - t)
    load = os.getloadavg()[0]
    results["load_average_1min"] = load
    print(f"(load average now {load:.2f} on {os.cpu_count()} cores: other work slows every phase)")
    t = time.perf_counter()
    tickets, actions = projection.tickets(), projection.actions()
    kpis(tickets, actions, policy, since=since, until=until, now=until)
    phase("reference_python_kpis", time.perf_counter() - t)
    projection.close()
    app.close()

    env = {**os.environ, "ITOPS_WORKSPACE": str(tmp / "ws")}
    itops = str(Path(sys.executable).with_name("itops"))
    for name, argv, target in (
        (
            "cli_kpi_json",
            [itops, "kpi", "--json", "--since", "2025-11-01", "--until", "2026-11-19"],
            2.0,
        ),
        (
            "cli_report_kpi",
            [
                itops,
                "report",
                "kpi",
                "--html",
                str(tmp / "kpi.html"),
                "--csv",
                str(tmp / "kpi.csv"),
                "--since",
                "2025-11-01",
                "--until",
                "2026-11-19",
            ],
            5.0,
        ),
    ):
        import resource

        before = resource.getrusage(resource.RUSAGE_CHILDREN)
        t = time.perf_counter()
        subprocess.run(argv, env=env, check=True, stdout=subprocess.DEVNULL)
        phase(name, time.perf_counter() - t, target)
        after = resource.getrusage(resource.RUSAGE_CHILDREN)
        cpu = (after.ru_utime + after.ru_stime) - (before.ru_utime + before.ru_stime)
        phase(name + "_cpu", cpu)

    (HERE / "results").mkdir(exist_ok=True)
    (HERE / "results" / f"tickets-{args.events}.json").write_text(json.dumps(results, indent=2))
    if not args.keep:
        import shutil

        shutil.rmtree(tmp, ignore_errors=True)
    else:
        print(f"kept {tmp}")


if __name__ == "__main__":
    main()
