"""Tiny inline-SVG charts (bars and time lines), escaped and self-contained: no scripts, no CDN.

Every chart is an ``<svg role="img">`` whose ``<title>`` says in words what it shows (its
latest and largest values), so a screen reader gets the figure without the picture.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from html import escape

__all__ = ["Line", "bar_chart", "line_chart", "time_chart"]

_PALETTE = ("#2f6fb0", "#d9730d", "#2e8540", "#8e44ad")
_DASHES = ("", "5 3", "2 2", "8 3 2 3")  # told apart without colour too


@dataclass(frozen=True, slots=True)
class Line:
    """One named line of a :func:`time_chart`; a None value leaves a gap."""

    name: str
    points: Sequence[tuple[float, float | None]]  # (x, y), x increasing


def bar_chart(
    items: Sequence[tuple[str, float]],
    *,
    unit: str = "",
    width: int = 420,
    bar_h: int = 18,
    title: str = "",
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
            f'<text class="value" x="{label_w + w + 6:.1f}" y="{y + bar_h - 5}">'
            f"{_fmt(value)} {escape(unit)}</text>"
        )
    height = len(items) * (bar_h + 6)
    words = "; ".join(f"{label}: {_fmt(value)} {unit}".strip() for label, value in items)
    return (
        f'<svg class="chart bars" width="{width}" height="{height}" role="img" '
        f'viewBox="0 0 {width} {height}"><title>{escape(title or "values")}: {escape(words)}'
        f"</title>{''.join(rows)}</svg>"
    )


def line_chart(
    points: Sequence[tuple[float, float]], *, unit: str = "", width: int = 420, height: int = 120
) -> str:
    """A single line through (x, y) points, x increasing; the y axis starts at 0."""
    return time_chart([Line("", points)], unit=unit, width=width, height=height)


def time_chart(
    lines: Sequence[Line],
    *,
    unit: str = "",
    title: str = "",
    width: int = 460,
    height: int = 150,
    x_label: str = "",
) -> str:
    """Lines over a shared x range (time), with a y scale, gridlines and a legend.

    The y axis starts at 0 and ends at a round number above the largest value. ``x_label`` is
    written under the left end of the x axis (e.g. "−10 min"; the right end says "now").
    """
    xs = [x for line in lines for x, _ in line.points]
    ys = [y for line in lines for _, y in line.points if y is not None]
    if len(set(xs)) < 2:
        return '<p class="muted">collecting samples…</p>'
    left, right, top_pad, bottom = 44, 8, 18, 18
    plot_w, plot_h = width - left - right, height - top_pad - bottom
    x0, x1 = min(xs), max(xs)
    y_top = _nice_ceiling(max(ys, default=0.0))

    def px(x: float) -> float:
        return left + (x - x0) / (x1 - x0) * plot_w

    def py(y: float) -> float:
        return top_pad + plot_h - y / y_top * plot_h

    parts = [_grid(y_top, py, left, width - right)]
    for k, line in enumerate(lines):
        colour, dash = _PALETTE[k % len(_PALETTE)], _DASHES[k % len(_DASHES)]
        style = f'stroke="{colour}"' + (f' stroke-dasharray="{dash}"' if dash else "")
        for segment in _segments(line.points):
            if len(segment) == 1:
                x, y = segment[0]
                parts.append(f'<circle cx="{px(x):.1f}" cy="{py(y):.1f}" r="2" fill="{colour}"/>')
                continue
            coords = " ".join(f"{px(x):.1f},{py(y):.1f}" for x, y in segment)
            parts.append(f'<polyline fill="none" {style} points="{coords}"></polyline>')
        if line.name:
            lx = left + 6 + k * 110
            parts.append(
                f'<line x1="{lx}" y1="9" x2="{lx + 16}" y2="9" {style}></line>'
                f'<text x="{lx + 20}" y="12">{escape(line.name)}</text>'
            )
    parts.append(
        f'<text class="axis" x="{left}" y="{height - 4}">{escape(x_label)}</text>'
        f'<text class="axis" x="{width - right}" y="{height - 4}" text-anchor="end">now</text>'
    )
    return (
        f'<svg class="chart line" width="{width}" height="{height}" role="img" '
        f'viewBox="0 0 {width} {height}"><title>{escape(_describe(title, lines, unit))}</title>'
        f"{''.join(parts)}</svg>"
    )


def _grid(y_top: float, py: Callable[[float], float], x_from: float, x_to: float) -> str:
    out = []
    for k in range(3):
        y = y_top * k / 2
        out.append(
            f'<line class="grid" x1="{x_from}" y1="{py(y):.1f}" x2="{x_to}" y2="{py(y):.1f}">'
            f'</line><text class="axis" x="{x_from - 4}" y="{py(y) + 4:.1f}" '
            f'text-anchor="end">{_fmt(y)}</text>'
        )
    return "".join(out)


def _segments(points: Sequence[tuple[float, float | None]]) -> list[list[tuple[float, float]]]:
    out: list[list[tuple[float, float]]] = [[]]
    for x, y in points:
        if y is None or not math.isfinite(y):
            if out[-1]:
                out.append([])
        else:
            out[-1].append((x, y))
    return [s for s in out if s]


def _describe(title: str, lines: Sequence[Line], unit: str) -> str:
    words = []
    for line in lines:
        values = [y for _, y in line.points if y is not None]
        name = f"{line.name} " if line.name else ""
        if values:
            latest = next(y for _, y in reversed(line.points) if y is not None)
            words.append(f"{name}latest {_fmt(latest)}, max {_fmt(max(values))} {unit}".strip())
        else:
            words.append(f"{name}no data".strip())
    return f"{title}: {'; '.join(words)}" if title else "; ".join(words)


def _nice_ceiling(value: float) -> float:
    """The smallest of 1, 2, 2.5, 5 × 10^k at or above ``value`` (1 for nothing)."""
    if value <= 0 or not math.isfinite(value):
        return 1.0
    base = 10.0 ** math.floor(math.log10(value))
    for step in (1.0, 2.0, 2.5, 5.0, 10.0):
        if value <= step * base * (1 + 1e-9):
            return step * base
    return 10.0 * base


def _fmt(value: float) -> str:
    if value == 0:
        return "0"
    if abs(value) >= 1000:
        return f"{value:,.0f}"
    return f"{value:.3g}"
