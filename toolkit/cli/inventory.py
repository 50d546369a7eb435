"""`itops inventory`: hosts and groups, connectivity checks, host-key trust."""

from __future__ import annotations

import sys
from typing import Any

import click

from toolkit.app import App
from toolkit.cli import render
from toolkit.cli.completion import complete_host, complete_targets
from toolkit.cli.options import Checked
from toolkit.errors import HostKeyMismatch, ToolkitError, ValidationError
from toolkit.inventory import Host
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


def _host_json(h: Host) -> dict[str, Any]:
    """A host as `inventory list --json` prints it (`inventory show` adds its source and vars)."""
    return {
        "name": h.name,
        "address": h.address,
        "port": h.port,
        "platform": h.platform,
        "transport": h.transport,
        "user": h.user,
        "groups": list(h.groups),
    }


@inventory.command("list")
@click.argument("pattern", default="all", shell_complete=complete_targets)
@click.option("--json", "as_json", is_flag=True, help="Print hosts as JSON.")
@click.pass_obj
def list_(app: App, pattern: str, as_json: bool) -> None:
    """List hosts matching PATTERN (default: all) and their groups.

    \b
    Examples:
      itops inventory list
      itops inventory list 'office:!ws-013' --json
    """
    inv = app.inventory
    hosts = inv.select(pattern) if inv.hosts else []
    if as_json:
        render.emit_json([_host_json(h) for h in hosts])
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
@click.argument("host", shell_complete=complete_host)
@click.option("--json", "as_json", is_flag=True, help="Print the host as JSON.")
@click.pass_obj
def show(app: App, host: str, as_json: bool) -> None:
    """Show one host with its merged variables and where it is defined.

    \b
    Example:
      itops inventory show ws-042
    """
    h = app.inventory.get(host)
    data = {**_host_json(h), "source": h.source, "vars": dict(h.vars)}
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
@click.argument("pattern", default="all", shell_complete=complete_targets)
@click.option("--forks", "-f", type=Checked("run.forks"), default=50, show_default=True)
@click.option("--connect-timeout", type=Checked("run.connect_timeout"), metavar="S")
@click.option("--json", "as_json", is_flag=True, help="Print results as JSON.")
@click.pass_obj
def check(app: App, pattern: str, forks: int, connect_timeout: float | None, as_json: bool) -> None:
    """Validate the inventory and connect to each host (host key, login, one read-only command).

    Exit code 0 if every host answered, 3 if any did not.

    \b
    Examples:
      itops inventory check lab
      itops inventory check 'branch-12' --connect-timeout 5 --json
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
    unknown = [r["host"] for r in results if r["status"] == "host-key-unknown"]
    if unknown:
        target = unknown[0] if len(unknown) == 1 else pattern
        render.echo(
            f"{len(unknown)} host key(s) not pinned yet: check the fingerprints with the hosts' "
            f"owner, then: itops inventory trust '{target}'",
            err=True,
        )
    click.get_current_context().exit(3 if failed else 0)


@inventory.command("trust")
@click.argument("pattern", shell_complete=complete_targets)
@click.option(
    "--fingerprint",
    metavar="SHA256:…",
    help="Accept only this fingerprint (checked out of band; one host only).",
)
@click.option("--yes", "-y", is_flag=True, help="Accept the presented keys without asking.")
@click.option(
    "--replace", is_flag=True, help="Replace a different key already pinned for these hosts."
)
@click.option("--json", "as_json", is_flag=True, help="Print what each host presents as JSON.")
@click.pass_obj
def trust(
    app: App, pattern: str, fingerprint: str | None, yes: bool, replace: bool, as_json: bool
) -> None:
    """Fetch the SSH keys of the hosts in PATTERN, show every fingerprint, and pin the new ones
    in the workspace known_hosts after one confirmation.

    Nothing is sent to the hosts but the key exchange. Each pinning is recorded in the ledger.
    A host that already has a different key pinned is left alone unless --replace.

    \b
    Examples:
      itops inventory trust ws-042 --fingerprint SHA256:2Qm1x…
      itops inventory trust 'lab'                    # every fingerprint, one confirmation
      itops inventory trust 'branch-12:!printers' --yes
    """
    from concurrent.futures import ThreadPoolExecutor

    from toolkit.transports.ssh import SSHFactory, pin
    from toolkit.transports.ssh import fingerprint as fp

    hosts = [h for h in app.inventory.select(pattern) if h.transport in ("ssh", "netdev")]
    if not hosts:
        raise ValidationError(f"no SSH host in {pattern!r}: only SSH host keys are pinned here")
    if fingerprint is not None and len(hosts) != 1:
        raise ValidationError(f"--fingerprint checks one host; {pattern!r} selects {len(hosts)}")
    factory = SSHFactory(app.connect_options(), app.credentials)

    def look(h: Any) -> dict[str, Any]:
        try:
            key = factory.host_key(h)
        except ToolkitError as exc:
            return {"host": h, "key": None, "status": "unreachable", "detail": exc.message}
        pinned = factory.known_hosts.trusted(h)
        shown = fp(key)
        if any(fp(k) == shown for k in pinned):
            status = "trusted"
        elif pinned:
            status = "replace" if replace else "differs"
        elif fingerprint is not None and fingerprint != shown:
            status = "mismatch"
        else:
            status = "new"
        return {"host": h, "key": key, "pinned": pinned, "status": status, "detail": shown}

    try:
        with ThreadPoolExecutor(max(1, min(16, len(hosts)))) as pool:
            found = list(pool.map(look, hosts))
    finally:
        factory.close()
    rows = [
        {
            "host": f["host"].name,
            "address": f"{f['host'].address}:{f['host'].port}",
            "algorithm": f["key"].get_algorithm() if f["key"] is not None else "",
            "fingerprint": f["detail"] if f["key"] is not None else "",
            "status": f["status"],
            "detail": f["detail"] if f["key"] is None else "",
        }
        for f in found
    ]
    if as_json:
        render.emit_json(rows)
    else:
        render.table(
            ["host", "address", "key", "fingerprint", "status"],
            [
                (
                    r["host"],
                    r["address"],
                    r["algorithm"],
                    r["fingerprint"] or r["detail"],
                    r["status"],
                )
                for r in rows
            ],
        )
    for f in found:
        if f["status"] == "differs":
            render.echo(
                f"{f['host'].name}: a different key is pinned "
                f"({', '.join(fp(k) for k in f['pinned'])}); if the host was rebuilt and you "
                "verified the new fingerprint, add --replace",
                err=True,
            )
    if fingerprint is not None and found[0]["status"] == "mismatch":
        raise HostKeyMismatch(
            found[0]["host"].name, f"presented {found[0]['detail']}, expected {fingerprint}"
        )
    to_pin = [f for f in found if f["status"] in ("new", "replace")]
    if to_pin and fingerprint is None and not yes:
        if not sys.stdin.isatty():
            one = f"--fingerprint {to_pin[0]['detail']}" if len(to_pin) == 1 else "--yes"
            raise ToolkitError(
                f"not confirmed: nothing pinned ({len(to_pin)} new key(s))",
                hint=f"check the fingerprints out of band, then add {one}",
            )
        click.confirm(f"Trust these {len(to_pin)} key(s)?", abort=True)
    for f in to_pin:
        h, key = f["host"], f["key"]
        pin(app.workspace.known_hosts, h, key, replace=f["status"] == "replace")
        app.ledger.append(
            Entry(
                "host.trusted",
                host=h.name,
                data={
                    "address": f"{h.address}:{h.port}",
                    "algorithm": key.get_algorithm(),
                    "fingerprint": fp(key),
                    "replaced": [fp(k) for k in f["pinned"]],
                    "file": str(app.workspace.known_hosts),
                },
            )
        )
    if to_pin:
        render.echo(f"pinned {len(to_pin)} key(s) in {app.workspace.known_hosts}", err=as_json)
    problems = [f for f in found if f["status"] in ("differs", "unreachable")]
    click.get_current_context().exit(3 if problems else 0)
