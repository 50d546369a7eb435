"""Sites and distributed workers: host jobs run by Celery workers, one queue per site.

A host's site is its inventory variable `site` (usually set on a group). Hosts without one run on
the controller as always. `itops worker --site NAME` consumes the site's queue (`itops.site.NAME`)
and runs each job — a batch of hosts — with the same run service as `itops fix`
(toolkit.run.service); results go back through Celery's result backend, and every action is in
the shared PostgreSQL ledger. The queue and the scheduling are Celery's (RabbitMQ by default, Redis
supported): nothing here queues or schedules on its own.

    controller: plan → admit (ticket, policy: once) → per --serial batch: one job per site chunk
                → wait for results → --max-fail-percent across the batch → next batch
    worker:     job → hosts already done under this job (a redelivery)? their results from the
                ledger; begun but never finished? re-checked, never re-applied; the rest: execute

This module is light (no Celery import): settings, sites and the job's wire format. Celery is
imported only by `celeryapp`, `jobs` (in the worker) and `dispatch` (when a run has remote hosts).
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit, urlunsplit

from toolkit.errors import ConfigError, InventoryError

if TYPE_CHECKING:
    from toolkit.inventory import Host
    from toolkit.run.results import HostResult
    from toolkit.workspace import Workspace

DEFAULT_BROKER = "amqp://guest:guest@127.0.0.1:5672//"
TASK_NAME = "itops.run_hosts"
QUEUE_PREFIX = "itops.site."
CANCELLED = "run.jobs-cancelled"  # the ledger record of jobs the controller gave up on
_SITE = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,62}")


@dataclass(frozen=True)
class WorkerSettings:
    """`[workers]` in itops.toml (docs/configuration.md, docs/scale.md)."""

    broker: str = DEFAULT_BROKER
    result_backend: str | None = None  # default: rpc:// on RabbitMQ, the broker itself on Redis
    ping_timeout: float = 1.0
    job_hosts: int = 200
    jobs: int = 2
    lost_after: float = 60.0  # a site without a live worker this long mid-run: its jobs fail

    @classmethod
    def of(cls, workspace: Workspace) -> WorkerSettings:
        section = workspace.section("workers")
        return cls(
            broker=str(section.get("broker", DEFAULT_BROKER)),
            result_backend=section.get("result_backend"),
            ping_timeout=float(section.get("ping_timeout", 1.0)),
            job_hosts=int(section.get("job_hosts", 200)),
            jobs=int(section.get("jobs", 2)),
            lost_after=float(section.get("lost_after", 60.0)),
        )

    @property
    def backend(self) -> str:
        if self.result_backend:
            return self.result_backend
        return self.broker if self.broker.startswith(("redis://", "rediss://")) else "rpc://"

    @property
    def shown_broker(self) -> str:
        """The broker URL without its password (for messages and `itops worker list`)."""
        return without_password(self.broker)


def without_password(url: str) -> str:
    parts = urlsplit(url)
    if parts.password is None:
        return url
    user = parts.username or ""
    host = parts.hostname or ""
    netloc = f"{user}:***@{host}" + (f":{parts.port}" if parts.port else "")
    return urlunsplit(parts._replace(netloc=netloc))


def site_of(host: Host) -> str | None:
    """The host's site (inventory variable `site`), or None: it runs on the controller."""
    value = host.var("site")
    if value is None or value == "":
        return None
    site = str(value)
    if not _SITE.fullmatch(site):
        raise InventoryError(
            f"{host.source or 'inventory'}: host {host.name!r}: invalid site {site!r} "
            "(letters, digits, '_', '.', '-'; it names the site's queue)"
        )
    return site


def check_site(site: str) -> str:
    if not _SITE.fullmatch(site):
        raise ConfigError(f"invalid site name {site!r} (letters, digits, '_', '.', '-')")
    return site


def queue_of(site: str) -> str:
    return QUEUE_PREFIX + site


def by_site(hosts: Sequence[Host]) -> dict[str | None, list[Host]]:
    """Hosts grouped by site, inventory order kept (None: the controller's own)."""
    groups: dict[str | None, list[Host]] = {}
    for host in hosts:
        groups.setdefault(site_of(host), []).append(host)
    return groups


def has_sites(hosts: Sequence[Host]) -> bool:
    """Whether some of the hosts run on a site's worker (`RunService.run` asks: it routes them)."""
    return any(site_of(host) is not None for host in hosts)


def require_shared_ledger(workspace: Workspace) -> None:
    """Workers and the controller write one ledger: a SQLite file is one machine's, refused."""
    if workspace.ledger_url.startswith("sqlite"):
        raise ConfigError(
            "workers write to the shared PostgreSQL ledger, and this workspace's ledger is SQLite",
            hint='set [ledger] url = "postgresql+psycopg://USER@HOST/DB" (or ITOPS_LEDGER_URL) '
            "on the controller and on every worker",
        )


# ---- the job's wire format (JSON through the broker; never a secret: references only) ----


def result_from_dict(data: Mapping[str, Any]) -> HostResult:
    """A HostResult back from `HostResult.as_dict()` (what a worker sends)."""
    from toolkit.remediation.catalog import Finding
    from toolkit.run.results import CommandRecord, HostResult, Outcome

    def finding(value: Any) -> Finding | None:
        if not isinstance(value, Mapping):
            return None
        return Finding(bool(value["ok"]), str(value["summary"]), dict(value.get("facts") or {}))

    return HostResult(
        host=str(data["host"]),
        outcome=Outcome(str(data["outcome"])),
        message=str(data.get("message") or ""),
        duration=float(data.get("duration") or 0.0),
        check=finding(data.get("check")),
        verify=finding(data.get("verify")),
        commands=tuple(
            CommandRecord(
                str(c["step"]),
                str(c["command"]),
                c.get("exit_code"),
                float(c.get("duration_ms") or 0) / 1000,
                str(c.get("stdout") or ""),
                str(c.get("stderr") or ""),
            )
            for c in data.get("commands") or ()
        ),
        error=data.get("error"),
        action_id=data.get("action_id"),
        notes=tuple(str(n) for n in data.get("notes") or ()),
    )
