"""`itops inventory`: hosts and groups, connectivity checks, host-key trust."""

from __future__ import annotations

import sys

import click

from toolkit.app import App
from toolkit.cli import render
from toolkit.cli.options import Checked
from toolkit.errors import HostKeyMismatch, ToolkitError, ValidationError
from toolkit.ledger import Entry


@click.group()
def inventory() -> None:
    """List, show, check and trust inventory hosts.

    \b
    Examples:
      itops inventory list lab
      itops inventory show lab-01
      itops inventory check lab
      itops inventory trust ws-042 --fingerprint SHA256:…
    """


@inventory.command("list")
@click.argument("pattern", default="all")
@click.option("--json", "as_json", is_flag=True, help="Print hosts as JSON.")
@click.pass_obj
def list_(app: App, pattern: str, as_json: bool) -> None:
    """List hosts matching PATTERN (default: all) and their groups."""
    inv = app.inventory
    hosts = inv.select(pattern) if inv.hosts else []
    if as_json:
        render.emit_json(
            [
                {
                    "name": h.name,
                    "address": h.address,
                    "port": h.port,
                    "platform": h.platform,
                    "transport": h.transport,
                    "user": h.user,
                    "groups": list(h.groups),
                }
                for h in hosts
            ]
        )
        return
    render.table(
        ["host", "address", "platform", "transport", "groups"],
        [
            (
                h.name,
                f"{h.address}:{h.port}",
                h.platform,
                h.transport,
                ",".join(g for g in h.groups if g != "all"),
            )
            for h in hosts
        ],
    )


@inventory.command("show")
@click.argument("host")
@click.option("--json", "as_json", is_flag=True, help="Print the host as JSON.")
@click.pass_obj
def show(app: App, host: str, as_json: bool) -> None:
    """Show one host with its merged variables and where it is defined."""
    h = app.inventory.get(host)
    data = {
        "name": h.name,
        "address": h.address,
        "port": h.port,
        "platform": h.platform,
        "transport": h.transport,
        "user": h.user,
        "groups": list(h.groups),
        "source": h.source,
        "vars": dict(h.vars),
    }
    if as_json:
        render.emit_json(data)
        return
    for key in ("name", "address", "port", "platform", "transport", "user", "groups", "source"):
        value = data[key]
        render.echo(f"{key:<10} {', '.join(value) if isinstance(value, list) else value}")
    render.echo("vars:")
    for key, value in sorted(h.vars.items()):
        render.echo(f"  {key}: {value}")


@inventory.command("check")
@click.argument("pattern", default="all")
@click.option("--forks", "-f", type=Checked("run.forks"), default=50, show_default=True)
@click.option("--connect-timeout", type=Checked("run.connect_timeout"), metavar="S")
@click.option("--json", "as_json", is_flag=True, help="Print results as JSON.")
@click.pass_obj
def check(app: App, pattern: str, forks: int, connect_timeout: float | None, as_json: bool) -> None:
    """Validate the inventory and connect to each host (host key, login, one read-only command).

    Exit code 0 if every host answered, 3 if any did not.
    """
    from toolkit.run.runner import probe
    from toolkit.transports import Connector

    hosts = app.inventory.select(pattern)
    connector = Connector(app.connect_options(connect_timeout), app.credentials)
    try:
        results = probe(connector, hosts, forks=forks)
    finally:
        connector.close()
    app.ledger.append(
        Entry(
            "inventory.checked",
            data={"pattern": pattern, "hosts": {r["host"]: r["status"] for r in results}},
        )
    )
    if as_json:
        render.emit_json(results)
    else:
        render.table(
            ["host", "status", "detail"],
            [(r["host"], r["status"], r["detail"]) for r in results],
            style_column="status",
        )
    failed = [r for r in results if r["status"] != "ok"]
    render.echo(f"{len(results) - len(failed)} of {len(results)} host(s) answered", err=True)
    click.get_current_context().exit(3 if failed else 0)


@inventory.command("trust")
@click.argument("host")
@click.option(
    "--fingerprint", metavar="SHA256:…", help="Accept only this fingerprint (checked out of band)."
)
@click.option("--yes", "-y", is_flag=True, help="Accept the presented key without asking.")
@click.option(
    "--replace", is_flag=True, help="Replace a different key already pinned for this host."
)
@click.pass_obj
def trust(app: App, host: str, fingerprint: str | None, yes: bool, replace: bool) -> None:
    """Fetch HOST's SSH key, show its fingerprint and pin it in the workspace known_hosts.

    Nothing is sent to the host but the key exchange. The pinning is recorded in the ledger.

    \b
    Example:
      itops inventory trust ws-042 --fingerprint SHA256:2Qm1x…
    """
    from toolkit.transports.ssh import SSHFactory, pin
    from toolkit.transports.ssh import fingerprint as fp

    h = app.inventory.get(host)
    if h.transport not in ("ssh", "netdev"):
        raise ValidationError(f"{h.name} uses {h.transport}; only SSH host keys are pinned here")
    factory = SSHFactory(app.connect_options(), app.credentials)
    try:
        key = factory.host_key(h)
        pinned = factory.known_hosts.trusted(h)
    finally:
        factory.close()
    shown = fp(key)
    render.echo(f"{h.name} ({h.address}:{h.port}) presents {key.get_algorithm()} key {shown}")
    if any(fp(k) == shown for k in pinned):
        render.echo("already trusted")
        return
    if pinned and not replace:
        raise HostKeyMismatch(
            h.name,
            f"a different key is pinned ({', '.join(fp(k) for k in pinned)})",
            hint="if the host was rebuilt and you verified the new fingerprint, add --replace",
        )
    if fingerprint is not None:
        if fingerprint != shown:
            raise HostKeyMismatch(h.name, f"presented {shown}, expected {fingerprint}; not pinned")
    elif not yes:
        if not sys.stdin.isatty():
            raise ToolkitError(
                "not confirmed: nothing pinned",
                hint=f"check the fingerprint out of band, then add --fingerprint {shown}",
            )
        click.confirm("Trust this key?", abort=True)
    pin(app.workspace.known_hosts, h, key, replace=replace)
    app.ledger.append(
        Entry(
            "host.trusted",
            host=h.name,
            data={
                "address": f"{h.address}:{h.port}",
                "algorithm": key.get_algorithm(),
                "fingerprint": shown,
                "replaced": [fp(k) for k in pinned],
                "file": str(app.workspace.known_hosts),
            },
        )
    )
    render.echo(f"pinned in {app.workspace.known_hosts}")
