"""Charts as small server-rendered SVG documents (no chart library in the browser). Pure.

Each chart is described for screen readers: the SVG has a role, a title and a description, and the
numbers are also in the page as text (the charts only repeat them).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from html import escape

PALETTE = {
    "used": "#d9822b",
    "available": "#3a9d5d",
    "over": "#c23030",
    "WAITING": "#8a9ba8",
    "RUNNING": "#2b6cb0",
    "SUCCEEDED": "#3a9d5d",
    "FAILED": "#c23030",
    "STOPPED": "#6b7280",
    "STOPPING": "#a0aec0",
}


@dataclass(frozen=True)
class Segment:
    label: str
    value: float
    color: str


def _num(value: float) -> str:
    return f"{value:g}"


def stacked_bar(title: str, segments: Sequence[Segment], total: float, width: int = 320) -> str:
    """One horizontal bar split into segments, scaled to ``total`` (the guaranteed quota, say)."""
    height = 22
    scale = width / total if total > 0 else 0.0
    parts = []
    x = 0.0
    for seg in segments:
        w = max(0.0, seg.value * scale)
        if w > 0:
            parts.append(
                f'<rect x="{x:.1f}" y="0" width="{w:.1f}" height="{height}" fill="{seg.color}">'
                f"<title>{escape(seg.label)}: {_num(seg.value)}</title></rect>"
            )
        x += w
    desc = ", ".join(f"{s.label} {_num(s.value)}" for s in segments) + f" of {_num(total)}"
    return (
        f'<svg class="chart" role="img" width="{width}" height="{height}" viewBox="0 0 {width} {height}"'
        f' xmlns="http://www.w3.org/2000/svg" aria-label="{escape(title)}: {escape(desc)}">'
        f"<title>{escape(title)}</title><desc>{escape(desc)}</desc>"
        f'<rect x="0" y="0" width="{width}" height="{height}" fill="#edf0f2"/>' + "".join(parts) + "</svg>"
    )


def bar_chart(title: str, bars: Sequence[Segment], width: int = 360) -> str:
    """Vertical bars with their values and labels underneath (job counts by state, say)."""
    top = max((b.value for b in bars), default=0) or 1
    bar_w, gap, chart_h, label_h = 44, 14, 100, 34
    width = max(width, len(bars) * (bar_w + gap) + gap)
    parts = []
    for i, bar in enumerate(bars):
        h = chart_h * bar.value / top
        x = gap + i * (bar_w + gap)
        y = chart_h - h + 14
        parts.append(
            f'<rect x="{x}" y="{y:.1f}" width="{bar_w}" height="{h:.1f}" fill="{bar.color}">'
            f"<title>{escape(bar.label)}: {_num(bar.value)}</title></rect>"
            f'<text x="{x + bar_w / 2}" y="{y - 3:.1f}" text-anchor="middle" font-size="11">'
            f"{_num(bar.value)}</text>"
            f'<text x="{x + bar_w / 2}" y="{chart_h + 28}" text-anchor="middle" font-size="10">'
            f"{escape(bar.label.title())}</text>"
        )
    total_h = chart_h + label_h
    desc = ", ".join(f"{b.label} {_num(b.value)}" for b in bars)
    return (
        f'<svg class="chart" role="img" width="{width}" height="{total_h}" viewBox="0 0 {width} {total_h}"'
        f' xmlns="http://www.w3.org/2000/svg" aria-label="{escape(title)}: {escape(desc)}">'
        f"<title>{escape(title)}</title><desc>{escape(desc)}</desc>" + "".join(parts) + "</svg>"
    )


def quota_bar(title: str, guaranteed: float, used: float) -> str:
    """Used against guaranteed: used (orange), what is left (green), use above the quota (red)."""
    within = min(used, guaranteed)
    segments = [
        Segment("used", within, PALETTE["used"]),
        Segment("available", max(0.0, guaranteed - used), PALETTE["available"]),
    ]
    if used > guaranteed:
        segments.append(Segment("above quota", used - guaranteed, PALETTE["over"]))
    return stacked_bar(title, segments, max(guaranteed, used))
