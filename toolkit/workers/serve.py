"""`itops worker`: start a site's Celery worker; `itops worker list`: the live ones.

The worker is Celery's own (`celery.Worker`, thread pool): it consumes `itops.site.NAME`, runs up
to `[workers] jobs` jobs at once, each over up to --forks hosts, and answers the controller's
inspect/ping while jobs run (its consumer is not the jobs' threads).
"""

from __future__ import annotations

import contextlib
import os
import re
import socket
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from toolkit.workers import (
    QUEUE_PREFIX,
    WorkerSettings,
    by_site,
    check_site,
    queue_of,
    require_shared_ledger,
)

if TYPE_CHECKING:
    from toolkit.app import App


def worker_name(site: str) -> str:
    return f"itops-{site}-{os.getpid()}@{socket.gethostname()}"


def worker_pattern(sites: Sequence[str]) -> str:
    """A regular expression matching the names (`worker_name`) of these sites' workers only."""
    return "itops-(?:" + "|".join(re.escape(s) for s in sites) + r")-[0-9]+@"


def serve(
    app: App,
    site: str,
    *,
    forks: int | None = None,
    jobs: int | None = None,
    say: Any = print,
) -> int:
    """Run the site's worker in the foreground until it is stopped (SIGTERM, Ctrl-C)."""
    from toolkit.workers.celeryapp import make_celery
    from toolkit.workers.jobs import register

    check_site(site)
    require_shared_ledger(app.workspace)
    # how the DBA (pg_stat_activity) tells the site's worker's ledger connections from others
    # (libpq's own variable: an application_name in the ledger URL still wins)
    os.environ.setdefault("PGAPPNAME", f"itops-worker-{site}")
    settings = WorkerSettings.of(app.workspace)
    app.ledger.head()  # the shared ledger is reachable before the first job comes
    app.inventory.select("all")  # and the inventory and catalog load
    app.catalog.infos()
    celery = make_celery(settings)
    register(celery, app, default_forks=forks)
    name = worker_name(site)
    concurrency = jobs or settings.jobs
    say(
        f"worker {name}: site {site}, queue {queue_of(site)} on {settings.shown_broker}, "
        f"{concurrency} job(s) at once" + (f", {forks} host(s) each" if forks else "")
    )
    worker = celery.Worker(
        hostname=name,
        queues=[queue_of(site)],
        pool="threads",
        concurrency=concurrency,
        without_mingle=True,
        without_gossip=True,
        loglevel="WARNING",
        optimization="fair",
    )
    worker.start()
    return int(worker.exitcode or 0)


@dataclass(frozen=True)
class WorkerRow:
    site: str
    worker: str | None  # None: no live worker for that site
    heartbeat_age: float | None
    queue_depth: int | None
    active: int | None


def listing(app: App, *, listen: float = 2.5) -> list[WorkerRow]:
    """Every site of the inventory and of the live workers: its workers, the age of each one's
    last heartbeat (listened for `listen` seconds), active jobs, and the queue's depth."""
    from toolkit.workers.celeryapp import make_celery
    from toolkit.workers.dispatch import live_workers

    settings = WorkerSettings.of(app.workspace)
    celery = make_celery(settings)
    live = live_workers(celery, settings)
    sites = sorted(set(live) | {s for s in by_site(app.inventory.select("all")) if s})
    active = celery.control.inspect(timeout=settings.ping_timeout).active() or {}
    beats = heartbeats(celery, listen) if live else {}
    depths = queue_depths(celery, [queue_of(s) for s in sites])
    rows: list[WorkerRow] = []
    for site in sites:
        depth = depths.get(queue_of(site))
        workers = live.get(site, [])
        if not workers:
            rows.append(WorkerRow(site, None, None, depth, None))
        for worker in workers:
            rows.append(
                WorkerRow(site, worker, beats.get(worker), depth, len(active.get(worker) or ()))
            )
    return rows


def heartbeats(celery: Any, seconds: float) -> dict[str, float]:
    """Seconds since each worker's last heartbeat event (Celery's worker-heartbeat)."""
    seen: dict[str, float] = {}

    def beat(event: dict[str, Any]) -> None:
        seen[str(event.get("hostname"))] = float(event.get("timestamp") or time.time())

    with celery.connection_for_read() as conn:
        receiver = celery.events.Receiver(conn, handlers={"worker-heartbeat": beat})
        timer = threading.Timer(seconds, lambda: setattr(receiver, "should_stop", True))
        timer.start()
        try:
            receiver.capture(limit=None, timeout=seconds + 1.0, wakeup=False)
        except (TimeoutError, OSError):
            pass
        finally:
            timer.cancel()
    now = time.time()
    return {name: max(0.0, now - at) for name, at in seen.items()}


def queue_depths(celery: Any, queues: list[str]) -> dict[str, int | None]:
    """Messages waiting in each queue (None: the queue does not exist yet)."""
    depths: dict[str, int | None] = {}
    with celery.connection_for_read() as conn:
        for queue in queues:
            channel = conn.channel()
            try:
                depths[queue] = int(channel.queue_declare(queue=queue, passive=True).message_count)
            except Exception:  # not declared: no worker ever consumed it
                depths[queue] = None
            finally:
                with contextlib.suppress(Exception):
                    channel.close()
    return depths


__all__ = ["QUEUE_PREFIX", "WorkerRow", "listing", "serve"]
