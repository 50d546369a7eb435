"""`itops worker`: a site's worker for distributed runs (Celery), and `itops worker list`."""

from __future__ import annotations

import click

from toolkit.app import App
from toolkit.cli import render


@click.group(invoke_without_command=True)
@click.option("--site", metavar="NAME", help="The site whose jobs this worker runs.")
@click.option(
    "--forks",
    type=click.IntRange(1, 1000),
    metavar="N",
    help="Hosts one job works on at once (default: the run's --forks, else [run] forks).",
)
@click.option(
    "--jobs",
    type=click.IntRange(1, 64),
    metavar="N",
    help="Jobs run at once (default: [workers] jobs).",
)
@click.pass_context
def worker(ctx: click.Context, site: str | None, forks: int | None, jobs: int | None) -> None:
    """Run the worker of one site: it executes the site's host jobs of `itops fix` with the
    same run service, catalog, transports and policy, writing to the shared PostgreSQL ledger.

    A host's site is its inventory variable `site` (usually set on a group); hosts without one
    run on the controller. The broker is [workers] broker (RabbitMQ by default, Redis too).

    \b
    Examples:
      itops worker --site branch-12 --forks 50
      itops worker list
    """
    if ctx.invoked_subcommand is not None:
        return
    if not site:
        raise click.UsageError("give --site NAME (or: itops worker list)")
    from toolkit.workers.serve import serve

    app: App = ctx.obj
    ctx.exit(serve(app, site, forks=forks, jobs=jobs, say=render.echo))


@worker.command("list")
@click.option("--json", "as_json", is_flag=True, help="Print the workers as JSON.")
@click.pass_obj
def list_workers(app: App, as_json: bool) -> None:
    """Sites, their live workers, each one's heartbeat age, and the sites' queue depths.

    \b
    Examples:
      itops worker list
      itops worker list --json | jq '.[] | select(.worker == null) | .site'
    """
    from toolkit.workers.serve import listing

    rows = listing(app)
    if as_json:
        render.emit_json(
            [
                {
                    "site": r.site,
                    "worker": r.worker,
                    "heartbeat_age": None if r.heartbeat_age is None else round(r.heartbeat_age, 1),
                    "active_jobs": r.active,
                    "queue_depth": r.queue_depth,
                }
                for r in rows
            ]
        )
        return
    if not rows:
        render.echo("no site in the inventory and no live worker")
        return
    render.table(
        ["site", "worker", "heartbeat", "active jobs", "queued"],
        [
            (
                r.site,
                r.worker or "no worker",
                "" if r.heartbeat_age is None else f"{r.heartbeat_age:.1f}s ago",
                "" if r.active is None else str(r.active),
                "" if r.queue_depth is None else str(r.queue_depth),
            )
            for r in rows
        ],
    )
