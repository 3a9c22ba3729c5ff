"""Tiny inline-SVG charts (bars and a line), escaped and self-contained: no scripts, no CDN."""

from __future__ import annotations

from collections.abc import Sequence
from html import escape

__all__ = ["bar_chart", "line_chart"]


def bar_chart(
    items: Sequence[tuple[str, float]], *, unit: str = "", width: int = 420, bar_h: int = 18
) -> str:
    """Horizontal bars, one per (label, value), scaled to the largest value."""
    if not items:
        return '<p class="muted">no data yet</p>'
    top = max(v for _, v in items) or 1.0
    label_w = 140
    rows = []
    for i, (label, value) in enumerate(items):
        y = i * (bar_h + 6)
        w = max(1.0, (width - label_w - 90) * value / top)
        rows.append(
            f'<text x="0" y="{y + bar_h - 5}">{escape(label[:22])}</text>'
            f'<rect x="{label_w}" y="{y}" width="{w:.1f}" height="{bar_h}" rx="3"></rect>'
            f'<text x="{label_w + w + 6:.1f}" y="{y + bar_h - 5}">{value:,.4g} {escape(unit)}</text>'
        )
    height = len(items) * (bar_h + 6)
    return (
        f'<svg class="chart bars" width="{width}" height="{height}" role="img" '
        f'viewBox="0 0 {width} {height}">{"".join(rows)}</svg>'
    )


def line_chart(
    points: Sequence[tuple[float, float]], *, unit: str = "", width: int = 420, height: int = 120
) -> str:
    """A line through (x, y) points, x increasing; the y axis starts at 0."""
    if len(points) < 2:
        return '<p class="muted">collecting samples…</p>'
    x0, x1 = points[0][0], points[-1][0]
    top = max(y for _, y in points) or 1.0
    span = (x1 - x0) or 1.0
    coords = " ".join(
        f"{(x - x0) / span * (width - 10) + 5:.1f},{height - 15 - y / top * (height - 30):.1f}"
        for x, y in points
    )
    return (
        f'<svg class="chart line" width="{width}" height="{height}" role="img" '
        f'viewBox="0 0 {width} {height}"><polyline fill="none" points="{coords}"></polyline>'
        f'<text x="5" y="12">max {top:,.4g} {escape(unit)}</text></svg>'
    )
