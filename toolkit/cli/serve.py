"""`itops serve`: the read-only web view for auditors and leads (toolkit.web; docs/web.md)."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import click

from toolkit.app import App
from toolkit.cli import render
from toolkit.errors import ValidationError
from toolkit.web.accounts import MIN_PASSWORD, ROLES

if TYPE_CHECKING:
    from toolkit.web.accounts import Accounts


@click.group(invoke_without_command=True)
@click.option(
    "--host",
    "bind",
    metavar="ADDRESS",
    help="Listen on this address [default: [serve] host, 127.0.0.1].",
)
@click.option(
    "--port",
    type=click.IntRange(1, 65535),
    help="Listen on this port [default: [serve] port, 8470].",
)
@click.option(
    "--cert",
    type=click.Path(dir_okay=False, exists=True, path_type=Path),
    help="TLS certificate (PEM); with --key.",
)
@click.option(
    "--key",
    type=click.Path(dir_okay=False, exists=True, path_type=Path),
    help="TLS private key (PEM).",
)
@click.pass_context
def serve(
    ctx: click.Context, bind: str | None, port: int | None, cert: Path | None, key: Path | None
) -> None:
    """Serve the read-only web view of the ticket log: search, tickets, hosts, approvals,
    the chain's status and the KPIs, each exportable as CSV and JSON.

    It reads the ledger opened read-only and has no endpoint that changes anything; every page
    view is itself recorded in the ticket log (`audit.view`: who looked at what, when). Sign-in
    is by an account (`itops serve user add`) or, when [serve] proxy_header is set, by the name
    a trusted reverse proxy puts in that header. It listens on 127.0.0.1 unless told otherwise;
    give --cert and --key (or [serve] cert and key) to serve HTTPS.

    \b
    Examples:
      itops serve user add ana --role auditor
      itops serve                       # http://127.0.0.1:8470/
      itops serve --port 9000
      itops serve --host 0.0.0.0 --cert site.pem --key site.key
    """
    if ctx.invoked_subcommand is not None:
        return
    from toolkit.web.server import ServeSettings
    from toolkit.web.server import serve as run

    app: App = ctx.ensure_object(App)
    ws = app.workspace
    settings = ServeSettings.of(
        dict(ws.section("serve")), ws.root, host=bind, port=port, cert=cert, key=key
    )
    if settings.proxy_header is None and not _accounts(app).list():
        raise ValidationError(
            "nobody can sign in: there is no account",
            hint="itops serve user add NAME --role auditor (or set [serve] proxy_header)",
        )
    scheme = "https" if settings.tls else "http"
    render.echo(
        f"serving the ticket log read-only on {scheme}://{settings.host}:{settings.port}/ "
        "(every page view is recorded; Ctrl-C stops)"
    )
    run(ws.root, settings)


def _accounts(app: App) -> Accounts:
    from toolkit.web.accounts import Accounts

    return Accounts(app.workspace.state_dir)


@serve.group()
def user() -> None:
    """The web view's accounts (Argon2id hashes, 0600 in the state folder).

    \b
    Examples:
      itops serve user add ana --role auditor
      itops serve user list
      itops serve user remove ana
    """


@user.command("add")
@click.argument("name")
@click.option(
    "--role",
    type=click.Choice(ROLES),
    required=True,
    help="auditor: every page; lead: KPIs, tickets, approvals.",
)
@click.option(
    "--replace", is_flag=True, help="Set a new password and role for an existing account."
)
@click.pass_obj
def user_add(app: App, name: str, role: str, replace: bool) -> None:
    """Add an account; prompts for its password (twice, not echoed).

    \b
    Examples:
      itops serve user add ana --role auditor
      itops serve user add lee --role lead
      itops serve user add ana --role auditor --replace   # a new password
    """
    from toolkit.web.accounts import Accounts

    password = click.prompt(
        f"password for {name} (at least {MIN_PASSWORD} characters)",
        hide_input=True,
        confirmation_prompt=True,
        err=True,
    )
    account = Accounts(app.workspace.state_dir).add(name, role, str(password), replace=replace)
    render.echo(f"account {account.name} ({account.role}) saved")


@user.command("list")
@click.option("--json", "as_json", is_flag=True, help="Print the accounts as JSON.")
@click.pass_obj
def user_list(app: App, as_json: bool) -> None:
    """List the accounts and their roles (never their hashes).

    \b
    Example:
      itops serve user list --json
    """
    from toolkit.web.accounts import Accounts

    found = Accounts(app.workspace.state_dir).list()
    if as_json:
        render.emit_json([{"name": a.name, "role": a.role} for a in found])
        return
    render.table(["name", "role"], [(a.name, a.role) for a in found])


@user.command("remove")
@click.argument("name")
@click.pass_obj
def user_remove(app: App, name: str) -> None:
    """Remove an account (a signed-in session of it ends at its next page).

    \b
    Example:
      itops serve user remove ana
    """
    from toolkit.errors import NotFound
    from toolkit.web.accounts import Accounts

    if not Accounts(app.workspace.state_dir).remove(name):
        raise NotFound(f"no account {name!r}")
    render.echo(f"account {name} removed")
