"""The KPI report people read: a target on every tile that has one, the period in readable
dates, trends that say "not enough data" rather than drawing a lone dot, tickets without an
assignee shown as unassigned, and a hostile assignee shown as text."""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests import fixture_tickets as desk
from tests.htmltree import Element, parse
from toolkit.desk.projection import Projection
from toolkit.desk.sla import load_policy
from toolkit.desk.ticketio import import_file
from toolkit.ledger import Ledger, open_ledger

POLICY = load_policy({"calendar": {"timezone": "Europe/Berlin"}})
SINCE, UNTIL = desk.epoch(desk.SINCE), desk.epoch(desk.UNTIL)
WEEK = 7 * 86400
HOSTILE = "<script>alert(1)</script>\x1b[2Jeve"


@pytest.fixture
def ledger(ledger_url: str) -> Iterator[Ledger]:
    lg = open_ledger(ledger_url, operator="ana")
    yield lg
    lg.close()


def page(ledger: Ledger, tmp_path: Path, since: float = SINCE, until: float = UNTIL) -> Element:
    from toolkit.reports import kpi as pages

    lines = [
        *desk.LINES,
        desk.ev("INC-7", "opened", desk.t(4, 9), priority="P3", category="software",
                hosts=["ws-7"], assignee=HOSTILE),
        desk.ev("INC-7", "responded", desk.t(4, 9, 10)),
    ]  # fmt: skip
    import_file(ledger, desk.write(tmp_path / "week.jsonl", lines))
    projection = Projection(ledger.url, POLICY)
    try:
        projection.refresh()
        data = pages.build(projection, POLICY, since=since, until=until, now=UNTIL)
    finally:
        projection.close()
    text = pages.html(data)
    assert "<script>alert" not in text and "\x1b" not in text
    return parse(text)


def tile(doc: Element, key: str) -> Element:
    return doc.find("div", **{"class_": "tile", "data-kpi": key})


def target(doc: Element, key: str) -> str:
    found = tile(doc, key).find_all("div", class_="target")
    return found[0].words() if found else ""


def test_every_tile_with_a_target_shows_it(ledger: Ledger, tmp_path: Path) -> None:
    doc = page(ledger, tmp_path)
    # the per-priority SLA targets (KPI.md's defaults) beside the figures measured against them
    respond = target(doc, "time_to_respond_median")
    assert "P1 30 min" in respond and "P2 1 h" in respond and "P4 4 h" in respond, respond
    resolve = target(doc, "time_to_resolve_mean")
    assert "P1 4 h" in resolve and "P3 2 business days" in resolve, resolve
    assert "P3 2 business days" in target(doc, "time_to_resolve_p90")
    assert "P2 1 h" in target(doc, "response_sla_compliance")
    for key in ("resolution_sla_compliance", "incident_resolution_sla_compliance"):
        text = target(doc, key)
        assert "P2 8 h" in text and "hardware ≥ 95" in text and "network ≥ 96" in text, text
    assert "P4 5 business days" in target(doc, "request_fulfilment_sla_compliance")
    assert "P4 5 business days" in target(doc, "time_to_fulfil_mean")
    assert target(doc, "csat_mean").startswith("target 4.5") and "missed" in target(
        doc, "csat_mean"
    )
    for key in ("complaints", "tickets_opened", "csat_share_4_plus"):  # no target: none shown
        assert target(doc, key) == "", key


def test_the_period_and_the_weeks_read_as_dates(ledger: Ledger, tmp_path: Path) -> None:
    doc = page(ledger, tmp_path)
    meta = doc.find("div", class_="meta")
    times = meta.find_all("time")
    shown = [t.words() for t in times]
    assert shown[:2] == ["Mon 2 Nov 2026 00:00 UTC+1", "Tue 10 Nov 2026 00:00 UTC+1"], shown
    assert times[0].attrs["datetime"] == "2026-11-01T23:00:00Z"
    assert "T23:00:00" not in meta.words()
    chart = doc.find("svg", **{"data-chart": "weekly-volume"})
    labels = [t.words() for t in chart.find_all("text", class_="muted")]
    assert "2 Nov" in labels and "9 Nov" in labels, labels


def test_a_trend_of_one_week_says_not_enough_data(ledger: Ledger, tmp_path: Path) -> None:
    doc = page(ledger, tmp_path, SINCE, SINCE + WEEK)
    for name in ("weekly-compliance", "weekly-volume", "weekly-mttr"):
        chart = doc.find("svg", **{"data-chart": name})
        assert chart.find_all("circle") == [], name  # no lone dot
        assert "not enough data" in chart.words(), name


def test_a_series_with_one_point_says_so_beside_the_others(ledger: Ledger, tmp_path: Path) -> None:
    """Two weeks: opened and resolved have two points each; requests none (the desk week has
    only incidents), MTTR one (nothing resolved in the second week)."""
    doc = page(ledger, tmp_path)
    volume = doc.find("svg", **{"data-chart": "weekly-volume"})
    assert len(volume.find_all("circle", class_="point")) == 4
    mttr = doc.find("svg", **{"data-chart": "weekly-mttr"})
    assert mttr.find_all("circle") == [] and "not enough data" in mttr.words()


def test_tickets_without_an_assignee_are_shown_unassigned(ledger: Ledger, tmp_path: Path) -> None:
    doc = page(ledger, tmp_path)
    table = doc.find("table", **{"data-by": "assignee"})
    names = [tr.find("td").words() for tr in table.find_all("tr") if "data-group" in tr.attrs]
    assert "unassigned" in names and "(none)" not in names, names
    assert "<script>alert(1)</script>␛[2Jeve" in names, names
    chart = doc.find("svg", **{"data-chart": "resolution-by-assignee"})
    labels = [t.words() for t in chart.find_all("text", class_="label")]
    assert "unassigned" in labels, labels
    assert not any(re.search("[\x00-\x1f]", t.text().replace("\n", "")) for t in chart.iter())
