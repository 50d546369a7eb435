"""The HTML reports in a real headless Chromium (Debian's `chromium` package): they render, their
charts are there, and the numbers on the page are the ones `itops kpi --json` prints.

Screenshots are kept in tests/artifacts/ (gitignored) for people to look at.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import struct
import subprocess
import sys
import zlib
from pathlib import Path

import pytest

from tests import fixture_tickets as desk
from toolkit.workspace import Workspace

pytestmark = pytest.mark.integration
ITOPS = str(Path(sys.executable).with_name("itops"))
ARTIFACTS = Path(__file__).resolve().parents[1] / "artifacts"


@pytest.fixture(scope="module")
def chromium() -> str:
    found = shutil.which("chromium") or shutil.which("chromium-browser")
    if found is None:
        pytest.fail("headless Chromium is needed for the report tests: apt-get install -y chromium")
    return found


def browse(chromium: str, profile: Path, page: Path, *mode: str) -> str:
    argv = [
        chromium,
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        "--no-first-run",
        f"--user-data-dir={profile}",
        *mode,
        page.as_uri(),
    ]
    done = subprocess.run(argv, capture_output=True, text=True, timeout=180)
    assert done.returncode == 0, done.stderr[-2000:]
    return done.stdout


def png_pixels(path: Path) -> tuple[int, int, bytes]:
    """Width, height and the raw (filtered) scanlines of a PNG: enough to tell blank from drawn."""
    data = path.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    width, height = struct.unpack(">II", data[16:24])
    idat, pos = b"", 8
    while pos < len(data):
        length, kind = struct.unpack(">I4s", data[pos : pos + 8])
        if kind == b"IDAT":
            idat += data[pos + 8 : pos + 8 + length]
        pos += 12 + length
    return width, height, zlib.decompress(idat)


def itops(ws: Workspace, *args: str) -> str:
    env = {**os.environ, "ITOPS_WORKSPACE": str(ws.root), "ITOPS_OPERATOR": "ana"}
    done = subprocess.run([ITOPS, *args], env=env, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    return done.stdout


@pytest.fixture
def ws(workspace: Workspace, tmp_path: Path) -> Workspace:
    config = workspace.root / "itops.toml"
    config.write_text(config.read_text() + desk.CONFIG)
    itops(workspace, "ticket", "import", str(desk.write(tmp_path / "week.jsonl")))
    return workspace


def test_kpi_report_renders_with_charts_and_the_kpi_json_numbers(
    chromium: str, ws: Workspace, tmp_path: Path
) -> None:
    page = tmp_path / "kpi.html"
    period = ["--since", desk.SINCE, "--until", desk.UNTIL]
    itops(ws, "report", "kpi", "--html", str(page), *period)
    expected = json.loads(itops(ws, "kpi", "--json", *period))
    dom = browse(chromium, tmp_path / "profile", page, "--dump-dom")
    # what Chromium built from the page: every chart, with its marks
    charts = re.findall(r'<svg class="chart" data-chart="([^"]+)"', dom)
    assert {
        "weekly-compliance",
        "weekly-volume",
        "weekly-mttr",
        "resolution-by-category",
        "resolution-by-priority",
        "resolution-by-assignee",
        "recurring-hosts",
    } <= set(charts)
    assert dom.count('class="bar"') >= 5 and dom.count('class="point"') >= 4
    assert "<polyline" in dom
    tiles = dict(re.findall(r'data-kpi="([a-z0-9_]+)" data-value="([^"]*)"', dom))
    assert len(tiles) >= 18
    for key, raw in tiles.items():
        assert (None if raw == "null" else json.loads(raw)) == expected[key], key
    assert 'Period <time datetime="2026-11-01T23:00:00Z">Mon 2 Nov 2026 00:00 UTC+1</time>' in dom
    # and it draws: a real screenshot, not a blank page
    ARTIFACTS.mkdir(exist_ok=True)
    shot = ARTIFACTS / "kpi-report.png"
    shot.unlink(missing_ok=True)
    browse(
        chromium, tmp_path / "profile", page, "--screenshot=" + str(shot), "--window-size=1280,2200"
    )
    width, height, pixels = png_pixels(shot)
    assert (width, height) == (1280, 2200)
    assert len(set(pixels)) > 50


def test_audit_report_renders_with_the_verified_head(
    chromium: str, ws: Workspace, tmp_path: Path
) -> None:
    page = tmp_path / "audit.html"
    out = json.loads(itops(ws, "report", "audit", "--html", str(page), "--json"))
    dom = browse(chromium, tmp_path / "profile", page, "--dump-dom")
    assert 'id="verification" class="verdict ok" data-ok="true"' in dom
    assert f'<code id="head-hash">{out["head_hash"]}</code>' in dom
    assert dom.count('class="timeline"') == 5
    assert '<table id="summary-hosts"' in dom and '<table id="changes">' in dom
    assert '<details id="appendix">' in dom  # closed: the read-only checks, one click away
    ARTIFACTS.mkdir(exist_ok=True)
    shot = ARTIFACTS / "audit-report.png"
    shot.unlink(missing_ok=True)  # an earlier run's picture must not pass for this one
    browse(
        chromium, tmp_path / "profile", page, "--screenshot=" + str(shot), "--window-size=1280,1600"
    )
    width, height, pixels = png_pixels(shot)
    assert (width, height) == (1280, 1600)
    assert len(set(pixels)) > 20
