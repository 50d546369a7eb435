"""`itops lab`: the local lab of real OpenSSH (and CUPS) hosts on loopback addresses."""

from __future__ import annotations

from typing import Any

import click

from toolkit.app import App
from toolkit.cli import render
from toolkit.cli.completion import complete_targets


@click.group()
def lab() -> None:
    """Start, inspect and stop the local lab (needs root; loopback addresses only).

    \b
    Examples:
      itops lab up --hosts 4
      itops lab break printer lab-01:lab-02
      itops lab status
      itops lab down
    """


@lab.command()
@click.option(
    "--hosts",
    "-n",
    "count",
    type=click.IntRange(0, 2000),
    default=4,
    show_default=True,
    help="Hosts on loopback (group lab); 0 with --sites for a lab of sites only.",
)
@click.option(
    "--sites",
    type=click.IntRange(0, 20),
    default=0,
    show_default=True,
    help="Sites behind bastions: each in its own network namespace (groups site1…, bastions).",
)
@click.option(
    "--site-hosts",
    type=click.IntRange(1, 254),
    default=2,
    show_default=True,
    help="Hosts per site.",
)
@click.option(
    "--site-devices",
    is_flag=True,
    help="Also a simulated Cisco switch per site, behind its bastion (group site_devices).",
)
@click.option("--port", type=click.IntRange(1024, 65535), help="SSH port for every lab address.")
@click.option(
    "--services",
    metavar="LIST",
    default=None,
    help="Comma-separated services to run behind the hosts, or 'none' "
    "[default: the standard set, see itops lab up --help].",
)
@click.pass_obj
def up(
    app: App,
    count: int,
    port: int | None,
    services: str | None,
    sites: int,
    site_hosts: int,
    site_devices: bool,
) -> None:
    """Start COUNT lab hosts (group `lab`) with generated keys, inventory and known_hosts.

    Services run behind the hosts so remediations act on real software: `cups` (a cupsd and a
    queue 'office' per host), `netdev` (simulated network devices, group `netlab`: FakeNOS
    devices of five platforms and two stateful fake-switches), `sudo` (a sudoers drop-in for the
    lab user), `disk` (a 16 MiB /var per host), `apt` (a loopback package repository, a private
    dpkg database per host), `clamav` (a loopback signature mirror, freshclam config per host),
    `accounts` (locked local accounts for password resets), `rt` (a real Request Tracker 5 on
    127.1.251.1, not started by default: it prints the [itsm] lines for itops.toml). Large labs
    use --services none. Not in the standard set either: `ad` (a real Samba AD domain controller
    on 127.1.250.1) and `ldap` (OpenLDAP slapd with ppolicy on 127.1.250.2), group
    `directories`, with seeded locked, expired, disabled and privileged accounts
    (docs/directory.md).

    With --sites N, each site's hosts (group siteN, in group sites) live in a network namespace
    of their own, reachable only through the site's bastion (group bastions), which the
    inventory names as their jump host: see docs/jump-hosts.md.

    \b
    Examples:
      itops lab up --hosts 4
      itops lab up --hosts 200 --services none
      itops lab up --sites 2
      itops lab up --hosts 0 --sites 1 --site-hosts 200 --services none
      itops lab up --hosts 2 --services cups,rt
      itops lab up --hosts 1 --services ad,ldap
    """
    from toolkit.lab import DEFAULT_SERVICES, Lab

    wanted: tuple[str, ...] = DEFAULT_SERVICES if count else ()
    if services is not None:
        wanted = () if services == "none" else tuple(s.strip() for s in services.split(",") if s)
    state = Lab(app.workspace).up(
        count,
        port=port,
        services=wanted,
        sites=sites,
        site_hosts=site_hosts,
        site_devices=site_devices,
    )
    if state.hosts:
        first, last = state.hosts[0], state.hosts[-1]
        click.echo(
            f"lab up: {len(state.hosts)} host(s) {first.name}..{last.name} on "
            f"{first.address}..{last.address} port {state.port}; "
            f"services: {', '.join(state.services) or 'none'}"
        )
    for site in state.data.get("sites", []):
        click.echo(
            f"site {site['site']}: {len(site['hosts'])} host(s) {site['hosts'][0]}.."
            f"{site['hosts'][-1]} (group site{site['site']}) in network namespace "
            f"{site['netns']}, only through {site['bastion']} on {site['address']}:{state.port}"
        )
    groups = "'lab'" + (", 'netlab'" if "netdev" in state.services else "")
    if {"ad", "ldap"} & set(state.services):
        groups += ", 'directories'"
    if state.data.get("sites"):
        groups += ", 'sites', 'bastions'"
    click.echo(f"inventory groups {groups}; try: itops inventory check lab")
    for line in created(app, state):
        click.echo(f"  created: {line}")


def created(app: App, state: Any) -> list[str]:
    """What `lab up` made on this machine beyond its own folder (all removed by `lab down`)."""
    from toolkit.lab.core import LAB_USER, RUNTIME_ROOT
    from toolkit.lab.sudo import drop_in

    lines = [
        f"login user {LAB_USER} (key only) and {len(state.hosts)} sshd host(s); "
        f"state in {app.workspace.state_dir / 'lab'} and {RUNTIME_ROOT / state.lab_id}"
    ]
    accounts = state.data.get("accounts") or {}
    if accounts:
        listed = ", ".join(f"{name} ({role})" for role, name in sorted(accounts.items()))
        lines.append(f"locked local accounts for password resets: {listed}")
    if "sudo" in state.services:
        lines.append(f"sudoers drop-in {drop_in(state.lab_id)}")
    for service in ("apt", "clamav"):
        port = (state.data.get(service) or {}).get("port")
        if port:
            lines.append(f"{service} mirror on 127.0.0.1:{port}")
    rt = state.data.get("rt") or {}
    if rt:
        lines.append(
            f"Request Tracker at {rt['url']} (user root, password password; started in "
            f"{rt['started_in']} s) with ticket {rt['ticket']}; add to itops.toml "
            f"(also in {app.workspace.lab_dir / 'itsm.toml'}):\n"
            + "".join(f"      {line}\n" for line in rt["itsm"].splitlines()).rstrip("\n")
        )
    return lines


@lab.command()
@click.option("--json", "as_json", is_flag=True)
@click.pass_obj
def status(app: App, as_json: bool) -> None:
    """Show the lab's hosts and whether their sshd and services are running.

    \b
    Example:
      itops lab status --json
    """
    from toolkit.lab import Lab

    info = Lab(app.workspace).status()
    if as_json:
        render.emit_json(info)
        return
    if not info["hosts"] and not info.get("sites"):
        click.echo("no lab in this workspace (itops lab up)")
        return
    for site in info.get("sites", []):
        click.echo(
            f"{site['site']}: {site['hosts']} host(s) in {site['netns']} behind "
            f"{site['bastion']}, sshd {site['sshd']}"
        )
    render.table(
        ["host", "address", "ssh", "services"],
        [
            (
                h["name"],
                h["address"],
                h["ssh"],
                ", ".join(f"{k} {v}" for k, v in h["services"].items()) or "-",
            )
            for h in info["hosts"]
        ],
    )
    click.echo(f"{info['processes']} of {info['expected']} lab processes running")


@lab.command()
@click.pass_obj
def down(app: App) -> None:
    """Stop exactly the processes `lab up` started and remove the lab inventory.

    \b
    Example:
      itops lab down
    """
    from toolkit.lab import Lab

    stopped = Lab(app.workspace).down()
    click.echo(f"lab down: stopped {stopped} process(es)")


@lab.command("break")
@click.argument("fault", type=click.Choice(["printer", "port"]))
@click.argument("targets", default="lab", shell_complete=complete_targets)
@click.option("--interface", metavar="PORT", help="port: the switch port (e.g. Fa0/3).")
@click.option(
    "--kind",
    type=click.Choice(["errdisable", "link-down", "clear"]),
    default="errdisable",
    show_default=True,
    help="port: err-disable it, take its link down, or clear the fault.",
)
@click.option(
    "--reason", default="psecure-violation", show_default=True, help="port: err-disable cause."
)
@click.pass_obj
def break_(
    app: App, fault: str, targets: str, interface: str | None, kind: str, reason: str
) -> None:
    """Inject a fault for practice: `printer` pauses the queue with stuck jobs; `port`
    err-disables a port of a stateful lab switch (sw-01, sw-02) or takes its link down.

    \b
    Examples:
      itops lab break printer lab-01:lab-02
      itops lab break port sw-01 --interface Fa0/3
      itops lab break port sw-02 --interface Fa0/4 --kind link-down
    """
    from toolkit.lab import Lab

    the_lab = Lab(app.workspace)
    if fault == "port":
        if not interface:
            raise click.UsageError("port faults need --interface")
        service = the_lab.service("netdev")
        for host in app.inventory.select(targets):
            service.break_port(the_lab.require(), host.name, interface, kind, reason)
            click.echo(
                f"{host.name} {interface}: {kind}"
                + (f" ({reason})" if kind == "errdisable" else "")
            )
        return
    lab_hosts = {h.name for h in app.inventory.select("lab")}
    names = [h.name for h in app.inventory.select(targets) if h.name in lab_hosts]
    broken = the_lab.service("cups").break_printer(the_lab.require(), names)
    click.echo(f"printer 'office' paused with stuck jobs on: {', '.join(broken)}")
