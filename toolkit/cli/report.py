"""`itops report`: self-contained HTML (and CSV) reports for support leads and auditors."""

from __future__ import annotations

from pathlib import Path

import click

from toolkit.app import App
from toolkit.cli import render
from toolkit.cli.kpi import period
from toolkit.cli.options import reads_only
from toolkit.errors import ValidationError

_FILE = click.Path(dir_okay=False, writable=True, path_type=Path)


@click.group()
def report() -> None:
    """Reports: KPIs against targets for leads; the verified action record for auditors.

    \b
    Examples:
      itops report kpi --html kpi.html --since 2026-11-01 --until 2026-12-01
      itops report audit --html audit.html --ticket INC-1042
    """


@report.command("kpi")
@click.option("--html", "html_file", type=_FILE, help="Write the HTML page here.")
@click.option(
    "--csv", "csv_file", type=_FILE, help="Write the KPIs as CSV here (for spreadsheets)."
)
@click.option("--since", metavar="WHEN", help="Period start (default: 30 days before --until).")
@click.option("--until", metavar="WHEN", help="Period end (exclusive; default: now).")
@click.option("--json", "as_json", is_flag=True, help="Print what was written as JSON.")
@click.pass_obj
@reads_only
def kpi_report(
    app: App,
    html_file: Path | None,
    csv_file: Path | None,
    since: str | None,
    until: str | None,
    as_json: bool,
) -> None:
    """KPI tiles against targets, weekly trends, breakdowns and recurrence, as one HTML page.

    The page needs no network to view: CSS and SVG charts are inline. Its numbers are the
    ones `itops kpi --json` prints for the same period.

    \b
    Example:
      itops report kpi --html kpi.html --csv kpi.csv --since 2026-11-01
    """
    from toolkit.desk.service import policy_for, projection_for
    from toolkit.reports import kpi as kpi_pages

    if html_file is None and csv_file is None:
        raise ValidationError("nothing to write", hint="give --html FILE and/or --csv FILE")
    now = app.clock.now()
    start, stop = period(app, since, until, now)
    policy = policy_for(app.workspace)
    projection = projection_for(app, policy)
    try:
        data = kpi_pages.build(projection, policy, since=start, until=stop, now=now.timestamp())
        render.warn_anomalies(projection.anomalies())
    finally:
        projection.close()
    written = []
    if html_file is not None:
        html_file.write_text(kpi_pages.html(data), encoding="utf-8")
        written.append(str(html_file))
    if csv_file is not None:
        csv_file.write_text(kpi_pages.csv_text(data), encoding="utf-8")
        written.append(str(csv_file))
    if as_json:
        render.emit_json({"written": written, "kpis": data["overall"]})
    else:
        render.echo(
            f"wrote {', '.join(written)} for {data['overall']['since']} → {data['overall']['until']}"
        )


@report.command("audit")
@click.option("--html", "html_file", type=_FILE, required=True, help="Write the HTML report here.")
@click.option("--ticket", help="Only this ticket.")
@click.option("--host", help="Only this host.")
@click.option("--operator", help="Only this operator.")
@click.option(
    "--since", metavar="WHEN", help="From this ledger time (the calendar's zone unless an offset)."
)
@click.option("--until", metavar="WHEN", help="Before this time.")
@click.option("--json", "as_json", is_flag=True, help="Print the result as JSON.")
@click.pass_obj
def audit_report(
    app: App,
    html_file: Path,
    ticket: str | None,
    host: str | None,
    operator: str | None,
    since: str | None,
    until: str | None,
    as_json: bool,
) -> None:
    """For auditors: the verified chain, a summary per host and ticket, each change's approval.

    The changes come with their parameters, verify result, approval (who asked, who approved,
    when, what it binds) and policy decision (window, break-glass); read-only checks are in an
    appendix; --host includes the approvals and break-glass that concern the host. Commands are
    shown as recorded (secrets masked), dates in this machine's local time. Exporting the report
    is itself recorded in the ticket log, with its scope and the SHA-256 of the file.

    \b
    Example:
      itops report audit --html audit.html --host ws-042 --since 2026-11-01
    """
    from toolkit.cli.log import ledger_time
    from toolkit.reports.audit import build, record_export

    filters = {
        "ticket": ticket,
        "host": host,
        "operator": operator,
        "since": ledger_time(app, since),
        "until": ledger_time(app, until),
    }
    result = build(app.ledger, app.redactor, filters)
    html_file.write_text(result.html, encoding="utf-8")
    rec = record_export(app.ledger, result, filters, str(html_file))
    if as_json:
        render.emit_json(
            {
                "file": str(html_file),
                "sha256": result.sha256,
                "chain_ok": result.chain_ok,
                "head_seq": result.head_seq,
                "head_hash": result.head_hash,
                "actions": result.actions,
                "tickets": result.tickets,
                "recorded_as": rec.seq,
            }
        )
        return
    verdict = "chain intact" if result.chain_ok else "CHAIN BROKEN"
    render.echo(
        f"wrote {html_file}: {result.actions} action(s), {result.tickets} ticket(s); {verdict}, "
        f"head #{result.head_seq}; export recorded as #{rec.seq}"
    )
    if not result.chain_ok:
        click.get_current_context().exit(1)
