"""`itops backup`: configuration backups — run them, read their history, diff revisions.

The group is extensible: `SUBCOMMANDS` maps a name to the module and attribute of a click command,
imported only when invoked (like the top-level CLI), so another kind of backup (Linux files) adds
its commands with one line each.
"""

from __future__ import annotations

import click

from toolkit.app import App
from toolkit.cli import render
from toolkit.cli.completion import complete_host, complete_targets
from toolkit.cli.lazy import LazyGroup

SUBCOMMANDS = {
    "run": "toolkit.cli.backup:run",
    "history": "toolkit.cli.backup:history",
    "diff": "toolkit.cli.backup:diff",
    "remote": "toolkit.cli.backup:remote",
    "list": "toolkit.cli.backup_files:list_",
    "show": "toolkit.cli.backup_files:show",
    "verify": "toolkit.cli.backup_files:verify",
}


@click.group(cls=LazyGroup, lazy_subcommands=SUBCOMMANDS)
def backup() -> None:
    """Backups: network configurations kept in git inside the workspace (run, history, diff),
    and the file backups backup.files fetched from Linux hosts (list, show, verify).

    \b
    Examples:
      itops backup run netlab --ticket CHG-1001
      itops backup history sw-01
      itops backup diff sw-01
      itops backup diff sw-01 HEAD~2
      itops backup remote /srv/git/itops-configs.git
      itops backup list ws-042
      itops backup verify
    """


@click.command()
@click.argument("targets", shell_complete=complete_targets)
@click.option("--ticket", "-t", metavar="ID", help="Ticket or change id (required unless --check).")
@click.option("--check", "check_only", is_flag=True, help="Show what changed; store nothing.")
@click.option("--json", "as_json", is_flag=True, help="Print the run report as JSON.")
@click.pass_obj
def run(app: App, targets: str, ticket: str | None, check_only: bool, as_json: bool) -> None:
    """Back up the devices in TARGETS (the task backup.network-config), showing each diff.

    Per device: unchanged, changed (with its unified diff), new, or failed. One commit per run,
    with the ticket or change id in its message. Exit codes as for `itops fix`.

    \b
    Example:
      itops backup run netlab --ticket CHG-1001
    """
    from toolkit.run.runner import Outcome
    from toolkit.run.service import RunService, plan

    request = plan(
        app, "backup.network-config", targets, {}, ticket=ticket, check_only=check_only,
        source="itops backup run",
    )  # fmt: skip
    with (
        render.progress_bar(request.hosts, enabled=not as_json) as observers,
        RunService(app, observers=observers) as service,
    ):
        report = service.run(request).report
    if as_json:
        render.emit_json(app.redactor.mask_data(report.as_dict()))
        click.get_current_context().exit(report.exit_code)
    rows = []
    diffs = []
    for result in report.results:
        status = str((result.check.facts if result.check else {}).get("status") or "")
        if result.outcome in (Outcome.FAILED, Outcome.UNREACHABLE):
            status = str(result.outcome)
        # what the backup found (new, changed since …, unchanged): the check's summary; the
        # message of a failed host says why
        found = result.check.summary if result.check is not None else ""
        detail = found if result.outcome in (Outcome.FIXED, Outcome.ALREADY_OK) else result.message
        rows.append((result.host, status or str(result.outcome), detail or result.message))
        diff = (result.check.facts if result.check else {}).get("diff")
        if diff and result.outcome in (Outcome.FIXED, Outcome.WOULD_FIX):
            diffs.append(str(diff))
    render.table(["device", "backup", "detail"], rows)
    for diff in diffs:
        render.echo("\n" + diff.rstrip("\n"))
    for note in report.notes:
        render.echo(note)
    click.get_current_context().exit(report.exit_code)


@click.command()
@click.argument("device", shell_complete=complete_host)
@click.option("--json", "as_json", is_flag=True)
@click.pass_obj
def history(app: App, device: str, as_json: bool) -> None:
    """List the backups of DEVICE that changed something, newest first.

    \b
    Example:
      itops backup history sw-01
    """
    from toolkit.backups.network import FOLDER, ConfigRepository

    revisions = ConfigRepository(app.workspace.state_dir / FOLDER).history(device)
    if as_json:
        render.emit_json([r.__dict__ for r in revisions])
        return
    if not revisions:
        render.echo(f"no backup of {device} yet")
        return
    render.table(["commit", "date", "message"], [(r.commit, r.date, r.message) for r in revisions])


@click.command()
@click.argument("device", shell_complete=complete_host)
@click.argument("rev", required=False)
@click.pass_obj
def diff(app: App, device: str, rev: str | None) -> None:
    """Show DEVICE's last configuration change, or everything since REV (a commit, HEAD~3).

    \b
    Examples:
      itops backup diff sw-01
      itops backup diff sw-01 HEAD~2
    """
    from toolkit.backups.network import FOLDER, ConfigRepository

    text = ConfigRepository(app.workspace.state_dir / FOLDER).diff(device, rev)
    render.echo(text.rstrip("\n") if text else f"no change to {device} since {rev}")


@click.command()
@click.argument("url", required=False)
@click.option("--json", "as_json", is_flag=True)
@click.pass_obj
def remote(app: App, url: str | None, as_json: bool) -> None:
    """Show, or set to URL, the shared git remote of the network configuration backups.

    With sites, each site's worker backs its devices up into its own workspace: give the
    controller and every worker the same remote (a bare repository — a path, or ssh://, whose
    host key must already be known) and each backup is pushed there, each `history`/`diff` reads
    it, so every site's backups are one history wherever you look.

    \b
    Examples:
      itops backup remote                                  # show it
      itops backup remote /srv/git/itops-configs.git       # set it (then on every worker too)
      itops backup remote ssh://git@backups.example.org/itops/configs.git
    """
    from toolkit.backups.network import FOLDER, ConfigRepository

    repo = ConfigRepository(app.workspace.state_dir / FOLDER)
    problem = repo.set_remote(url) if url else None
    shown = repo.remote()
    if as_json:
        render.emit_json({"remote": shown, "in_sync": bool(url) and problem is None,
                          "problem": problem})  # fmt: skip
        return
    if not shown:
        render.echo("no shared remote: the backups stay in this workspace")
        return
    render.echo(f"shared remote: {shown}")
    if problem:
        render.echo(f"warning: {problem}", err=True, fg="yellow")
