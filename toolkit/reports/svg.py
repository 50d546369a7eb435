"""Inline SVG charts for self-contained HTML reports: no scripts, no fonts, no network.

Every chart is an `<svg class="chart" data-chart=NAME>` whose marks carry `data-label`/`data-value`
(tests and people can read the numbers behind a bar or point). Text is escaped here.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from html import escape as _escape

from toolkit.textsafe import visible


def escape(text: str) -> str:
    """Text for SVG: markup escaped, control characters as visible stand-ins."""
    return _escape(visible(text))


PALETTE = ("#2563eb", "#16a34a", "#dc2626", "#9333ea", "#ea580c", "#0891b2")


def _fmt_default(value: float) -> str:
    return f"{value:g}"


def bar_chart(
    name: str,
    items: Sequence[tuple[str, float | None]],
    *,
    title: str,
    fmt: Callable[[float], str] = _fmt_default,
    width: int = 560,
    target: float | None = None,
) -> str:
    """Horizontal bars, one per (label, value); None draws no bar and says so."""
    bar_h, gap, left, right = 18, 6, 170, 70
    height = 28 + max(len(items), 1) * (bar_h + gap) + 8
    values = [v for _, v in items if v is not None]
    top = max([*values, target or 0.0, 1e-9])
    scale = (width - left - right) / top
    parts = [
        f'<svg class="chart" data-chart="{escape(name)}" xmlns="http://www.w3.org/2000/svg" '
        f'width="{width}" height="{height}" viewBox="0 0 {width} {height}" role="img" '
        f'aria-label="{escape(title)}">',
        f'<text x="0" y="16" class="chart-title">{escape(title)}</text>',
    ]
    if not items:
        parts.append(f'<text x="{left}" y="41" class="muted">none in this period</text>')
    for i, (label, value) in enumerate(items):
        y = 28 + i * (bar_h + gap)
        short = label if len(label) <= 24 else label[:23] + "…"
        parts.append(
            f'<text x="{left - 6}" y="{y + 13}" text-anchor="end" class="label">{escape(short)}</text>'
        )
        if value is None:
            parts.append(f'<text x="{left + 4}" y="{y + 13}" class="muted">no data</text>')
            continue
        w = max(value * scale, 1.0)
        parts.append(
            f'<rect class="bar" x="{left}" y="{y}" width="{w:.1f}" height="{bar_h}" '
            f'fill="{PALETTE[0]}" data-label="{escape(label)}" data-value="{value}"/>'
        )
        parts.append(
            f'<text x="{left + w + 4:.1f}" y="{y + 13}" class="value">{escape(fmt(value))}</text>'
        )
    if target is not None:
        x = left + target * scale
        parts.append(
            f'<line class="target" x1="{x:.1f}" x2="{x:.1f}" y1="22" y2="{height - 4}" '
            f'stroke="#dc2626" stroke-dasharray="4 3"/>'
        )
    parts.append("</svg>")
    return "".join(parts)


def line_chart(
    name: str,
    labels: Sequence[str],
    series: Mapping[str, Sequence[float | None]],
    *,
    title: str,
    fmt: Callable[[float], str] = _fmt_default,
    width: int = 560,
    height: int = 220,
    floor_zero: bool = True,
) -> str:
    """One polyline per series over the labels (weeks); gaps where a value is None. A series
    with fewer than two values is no trend: its legend says "not enough data" and no lone dot
    is drawn; when no series has two, the chart says so instead of drawing axes."""
    left, right, top_pad, bottom = 48, 30, 40, 34
    counts = {name: sum(v is not None for v in vs) for name, vs in series.items()}
    drawn = {name: vs for name, vs in series.items() if counts[name] >= 2}

    def opening(h: int) -> list[str]:
        return [
            f'<svg class="chart" data-chart="{escape(name)}" xmlns="http://www.w3.org/2000/svg" '
            f'width="{width}" height="{h}" viewBox="0 0 {width} {h}" role="img" '
            f'aria-label="{escape(title)}">',
            f'<text x="0" y="16" class="chart-title">{escape(title)}</text>',
        ]

    if not drawn:
        weeks = f"{len(labels)} week{'s' if len(labels) != 1 else ''}"
        lines = ["not enough data for a trend"] + [
            f"{sname}: values in {count} of {weeks}" for sname, count in counts.items()
        ]
        texts = [
            f'<text x="{12 if i else 0}" y="{40 + 16 * i}" class="muted no-trend">'
            f"{escape(line)}</text>"
            for i, line in enumerate(lines)
        ]
        return "".join([*opening(48 + 16 * len(lines)), *texts, "</svg>"])
    values = [v for vs in drawn.values() for v in vs if v is not None]
    hi = max(values)
    lo = 0.0 if floor_zero else min(values)
    span = (hi - lo) or 1.0
    n = max(len(labels), 1)
    step = (width - left - right) / max(n - 1, 1)

    def xy(i: int, v: float) -> tuple[float, float]:
        return left + i * step, top_pad + (1 - (v - lo) / span) * (height - top_pad - bottom)

    parts = [
        *opening(height),
        f'<line x1="{left}" x2="{width - right}" y1="{height - bottom}" '
        f'y2="{height - bottom}" stroke="#999"/>',
        f'<text x="{left - 4}" y="{top_pad + 4}" text-anchor="end" class="muted">'
        f"{escape(fmt(hi))}</text>",
        f'<text x="{left - 4}" y="{height - bottom}" text-anchor="end" class="muted">'
        f"{escape(fmt(lo))}</text>",
    ]
    every = max(1, n // 8)
    for i, label in enumerate(labels):
        if i % every == 0:
            x, _ = xy(i, lo)
            parts.append(
                f'<text x="{x:.1f}" y="{height - bottom + 16}" text-anchor="middle" class="muted">'
                f"{escape(label)}</text>"
            )
    key_x = left
    for k, (sname, vs) in enumerate(series.items()):
        color = PALETTE[k % len(PALETTE)]
        missing = "" if sname in drawn else ": not enough data"
        parts.append(
            f'<rect x="{key_x}" y="24" width="10" height="10" fill="{color}"/>'
            f'<text x="{key_x + 14}" y="33" class="label">{escape(sname)}'
            + (f'<tspan class="muted no-trend">{missing}</tspan>' if missing else "")
            + "</text>"
        )
        key_x += 14 + 7 * len(sname + missing) + 20  # (about 7 px a character at 11 px)
        if missing:
            continue
        runs: list[list[str]] = [[]]
        for i, v in enumerate(vs):
            if v is None:
                runs.append([])
                continue
            x, y = xy(i, v)
            runs[-1].append(f"{x:.1f},{y:.1f}")
            parts.append(
                f'<circle class="point" cx="{x:.1f}" cy="{y:.1f}" r="3" fill="{color}" '
                f'data-series="{escape(sname)}" data-label="{escape(labels[i])}" data-value="{v}"/>'
            )
        for run in runs:
            if len(run) > 1:
                parts.append(
                    f'<polyline fill="none" stroke="{color}" stroke-width="2" points="{" ".join(run)}"/>'
                )
    parts.append("</svg>")
    return "".join(parts)
