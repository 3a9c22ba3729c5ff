"""Inline-SVG charts (lines and bars) for every page npucenter writes: pure functions -> text.

The dashboard, the benchmark report and the simulation report all draw with these. Charts are
self-contained (no scripts, no CDN, no xmlns URL, every label escaped) and accessible: each
``<svg role="img">`` has a ``<title>`` saying in words what it shows (latest and largest values).
Pure: no I/O, no clock; the caller decides sizes, labels and what "no data" says.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from html import escape

__all__ = ["PALETTE", "Series", "bar_chart", "fmt_number", "line_chart", "nice_ceiling", "ticks"]

PALETTE = (
    "#1f77b4",
    "#d62728",
    "#2ca02c",
    "#ff7f0e",
    "#9467bd",
    "#8c564b",
    "#e377c2",
    "#17becf",
    "#7f7f7f",
    "#bcbd22",
)
_DASHES = ("", "5 3", "2 2", "8 3 2 3")  # lines told apart without colour too
_MAX_MARKERS = 60  # more points than this and the markers are left off


@dataclass(frozen=True, slots=True)
class Series:
    """One named line: (x, y) points; a None or non-finite y leaves a gap."""

    name: str
    points: Sequence[tuple[float, float | None]]


def line_chart(
    series: Sequence[Series],
    *,
    title: str = "",
    unit: str = "",
    x_label: str = "",
    y_label: str = "",
    width: int = 640,
    height: int = 360,
    log_x: bool = False,
    step: bool = False,
    markers: bool = False,
    x_ticks: bool = True,
    x_end_label: str = "",
    min_distinct_x: int = 1,
    empty_text: str = "no data",
    css_class: str = "line",
) -> str:
    """Lines over a shared x range, with a y scale from 0 (or below) to a round number.

    Args:
        log_x: a log10 x axis (non-positive x are left out).
        step: draw each line as a step function (for CDFs).
        markers: a dot at each point when a line has at most 60 points.
        x_ticks: numbered x ticks; without them ``x_label`` sits under the left end of the
            axis and ``x_end_label`` under the right end (the dashboard's "−10 min" … "now").
        min_distinct_x: fewer distinct x values than this draws ``empty_text`` instead.

    Returns:
        An ``<svg>`` element, or a ``<p class="muted">`` saying there is nothing to draw.
    """
    keep: Callable[[float], bool] = (
        (lambda x: x > 0 and math.isfinite(x)) if log_x else math.isfinite
    )
    xs = [x for s in series for x, _ in s.points if keep(x)]
    ys = [y for s in series for x, y in s.points if keep(x) and y is not None and _finite(y)]
    if len(set(xs)) < max(1, min_distinct_x) or not ys:
        text = f"{title}: {empty_text}" if title and empty_text == "no data" else empty_text
        return f'<p class="muted">{escape(text)}</p>'
    compact = height < 200
    left, right = (44, 8) if compact else (70, 20)
    top_pad, bottom = (18, 18) if compact else (30, 50)
    plot_w, plot_h = width - left - right, height - top_pad - bottom
    fx: Callable[[float], float] = math.log10 if log_x else float
    x0, x1 = fx(min(xs)), fx(max(xs))
    if not log_x and x_ticks:
        x0 = min(0.0, x0)
    x1 = x1 if x1 > x0 else x0 + 1.0
    y_top = nice_ceiling(max(ys))
    y_lo = -nice_ceiling(-min(ys)) if min(ys) < 0 else 0.0

    def px(x: float) -> float:
        return left + (fx(x) - x0) / (x1 - x0) * plot_w

    def py(y: float) -> float:
        return top_pad + plot_h - (y - y_lo) / (y_top - y_lo) * plot_h

    parts = [_y_grid(y_lo, y_top, py, left, width - right, 2 if compact else 0)]
    parts.append(
        f'<line x1="{left}" y1="{top_pad + plot_h}" x2="{width - right}" '
        f'y2="{top_pad + plot_h}" stroke="#333"></line>'
    )
    if x_ticks:
        parts.append(_x_axis(x0, x1, log_x, px, top_pad + plot_h))
    for k, s in enumerate(series):
        parts.extend(_line(k, s, px, py, keep, step=step, markers=markers))
        if s.name:
            parts.append(_legend(k, s.name, left, compact))
    parts.append(_labels(x_label, y_label, x_end_label, left, right, width, height, x_ticks))
    return (
        f'<svg class="chart {escape(css_class)}" width="{width}" height="{height}" role="img" '
        f'viewBox="0 0 {width} {height}"><title>{escape(_describe(title, series, unit))}</title>'
        + (_heading(title, width) if title and not compact else "")
        + f"{''.join(parts)}</svg>"
    )


def bar_chart(
    items: Sequence[tuple[str, float | None]],
    *,
    title: str = "",
    unit: str = "",
    width: int = 420,
    bar_h: int = 18,
    label_w: int = 140,
    empty_text: str = "no data yet",
) -> str:
    """Horizontal bars, one per (label, value), scaled to the largest; None draws "n/a"."""
    if not items:
        return f'<p class="muted">{escape(empty_text)}</p>'
    top = max((v for _, v in items if v is not None and _finite(v)), default=1.0) or 1.0
    max_chars = max(8, label_w // 6)
    rows = []
    for i, (label, value) in enumerate(items):
        y = i * (bar_h + 6)
        text_y = y + bar_h - 5
        rows.append(f'<text x="0" y="{text_y}">{escape(label[:max_chars])}</text>')
        if value is None or not _finite(value):
            rows.append(f'<text class="value" x="{label_w + 4}" y="{text_y}">n/a</text>')
            continue
        w = max(1.0, (width - label_w - 90) * value / top)
        rows.append(
            f'<rect x="{label_w}" y="{y}" width="{w:.1f}" height="{bar_h}" rx="3" '
            f'fill="{PALETTE[0]}"></rect>'
            f'<text class="value" x="{label_w + w + 6:.1f}" y="{text_y}">'
            f"{fmt_number(value)} {escape(unit)}</text>"
        )
    height = len(items) * (bar_h + 6)
    words = "; ".join(
        f"{label}: {'n/a' if v is None or not _finite(v) else fmt_number(v)} {unit}".strip()
        for label, v in items
    )
    return (
        f'<svg class="chart bars" width="{width}" height="{height}" role="img" '
        f'viewBox="0 0 {width} {height}"><title>{escape(title or "values")}: {escape(words)}'
        f"</title>{''.join(rows)}</svg>"
    )


def ticks(lo: float, hi: float, n: int = 5) -> list[float]:
    """Round tick values (1, 2, 2.5, 5 × 10^k apart) covering [lo, hi] in about ``n`` steps."""
    if hi <= lo:
        hi = lo + 1.0
    raw = (hi - lo) / n
    mag = 10 ** math.floor(math.log10(raw))
    size = min((m * mag for m in (1, 2, 2.5, 5, 10) if m * mag >= raw), default=raw)
    out = []
    v = math.floor(lo / size) * size
    while v <= hi + size * 1e-9:
        if v >= lo - size * 1e-9:
            out.append(round(v, 10))
        v += size
    return out


def nice_ceiling(value: float) -> float:
    """The smallest of 1, 2, 2.5, 5 × 10^k at or above ``value`` (1 for nothing)."""
    if value <= 0 or not math.isfinite(value):
        return 1.0
    base = 10.0 ** math.floor(math.log10(value))
    for mantissa in (1.0, 2.0, 2.5, 5.0, 10.0):
        if value <= mantissa * base * (1 + 1e-9):
            return mantissa * base
    return 10.0 * base


def fmt_number(value: float) -> str:
    """A value as a chart writes it: thousands separated, else three significant digits."""
    if value == 0:
        return "0"
    if abs(value) >= 1000:
        return f"{value:,.0f}"
    return f"{value:.3g}"


def _finite(value: float | None) -> bool:
    return isinstance(value, int | float) and math.isfinite(value)


def _line(
    k: int,
    s: Series,
    px: Callable[[float], float],
    py: Callable[[float], float],
    keep: Callable[[float], bool],
    *,
    step: bool,
    markers: bool,
) -> list[str]:
    colour, dash = PALETTE[k % len(PALETTE)], _DASHES[k % len(_DASHES)]
    style = f'stroke="{colour}"' + (f' stroke-dasharray="{dash}"' if dash else "")
    out = []
    segments = _segments(sorted((x, y) for x, y in s.points if keep(x)))
    for segment in segments:
        if len(segment) == 1 and not markers:
            x, y = segment[0]
            out.append(f'<circle cx="{px(x):.1f}" cy="{py(y):.1f}" r="2" fill="{colour}"></circle>')
            continue
        coords: list[str] = []
        for i, (x, y) in enumerate(segment):
            if step and i:
                coords.append(f"{px(x):.1f},{py(segment[i - 1][1]):.1f}")
            coords.append(f"{px(x):.1f},{py(y):.1f}")
        label = f"<title>{escape(s.name)}</title>" if s.name else ""  # no empty titles
        out.append(
            f'<polyline fill="none" stroke-width="2" {style} points="{" ".join(coords)}">'
            f"{label}</polyline>"
        )
    if markers and sum(len(seg) for seg in segments) <= _MAX_MARKERS:
        out.extend(
            f'<circle cx="{px(x):.1f}" cy="{py(y):.1f}" r="3" fill="{colour}"><title>'
            f"{escape(s.name)}: ({fmt_number(x)}, {fmt_number(y)})</title></circle>"
            for seg in segments
            for x, y in seg
        )
    return out


def _segments(points: Sequence[tuple[float, float | None]]) -> list[list[tuple[float, float]]]:
    out: list[list[tuple[float, float]]] = [[]]
    for x, y in points:
        if y is None or not math.isfinite(y):
            if out[-1]:
                out.append([])
        else:
            out[-1].append((x, y))
    return [s for s in out if s]


def _y_grid(
    y_lo: float,
    y_top: float,
    py: Callable[[float], float],
    x_from: float,
    x_to: float,
    divisions: int,
) -> str:
    values = (
        [y_lo + (y_top - y_lo) * k / divisions for k in range(divisions + 1)]
        if divisions
        else ticks(y_lo, y_top)
    )
    return "".join(
        f'<line class="grid" x1="{x_from}" y1="{py(y):.1f}" x2="{x_to}" y2="{py(y):.1f}" '
        f'stroke="#eee"></line><text class="axis" x="{x_from - 4}" y="{py(y) + 4:.1f}" '
        f'text-anchor="end" font-size="10">{fmt_number(y)}</text>'
        for y in values
    )


def _x_axis(x0: float, x1: float, log_x: bool, px: Callable[[float], float], axis_y: float) -> str:
    values = (
        [10.0**e for e in range(math.ceil(x0 - 1e-9), math.floor(x1 + 1e-9) + 1)]
        if log_x
        else ticks(x0, x1)
    )
    if log_x and len(values) < 2:
        values = [10.0**x0, 10.0**x1]
    return "".join(
        f'<line x1="{px(x):.1f}" y1="{axis_y}" x2="{px(x):.1f}" y2="{axis_y + 4}" '
        f'stroke="#333"></line><text class="axis" x="{px(x):.1f}" y="{axis_y + 16}" '
        f'text-anchor="middle" font-size="10">{fmt_number(x)}</text>'
        for x in values
    )


def _legend(k: int, name: str, left: int, compact: bool) -> str:
    colour, dash = PALETTE[k % len(PALETTE)], _DASHES[k % len(_DASHES)]
    style = f'stroke="{colour}"' + (f' stroke-dasharray="{dash}"' if dash else "")
    if compact:  # one row above the plot
        lx, ly = left + 6 + k * 110, 9
    else:  # a column at the top left of the plot
        lx, ly = left + 10, 44 + 16 * k
    return (
        f'<line x1="{lx}" y1="{ly}" x2="{lx + 16}" y2="{ly}" stroke-width="2" {style}></line>'
        f'<text x="{lx + 20}" y="{ly + 3}" font-size="11">{escape(name[:30])}</text>'
    )


def _labels(
    x_label: str,
    y_label: str,
    x_end_label: str,
    left: int,
    right: int,
    width: int,
    height: int,
    x_ticks: bool,
) -> str:
    out = []
    if x_ticks:
        out.append(
            f'<text x="{left + (width - left - right) / 2}" y="{height - 12}" '
            f'text-anchor="middle" font-size="12">{escape(x_label)}</text>'
        )
    else:
        out.append(f'<text class="axis" x="{left}" y="{height - 4}">{escape(x_label)}</text>')
        out.append(
            f'<text class="axis" x="{width - right}" y="{height - 4}" text-anchor="end">'
            f"{escape(x_end_label)}</text>"
        )
    if y_label:
        mid = height / 2
        out.append(
            f'<text x="16" y="{mid}" text-anchor="middle" font-size="12" '
            f'transform="rotate(-90 16 {mid})">{escape(y_label)}</text>'
        )
    return "".join(out)


def _heading(title: str, width: int) -> str:
    return (
        f'<text x="{width / 2}" y="18" text-anchor="middle" font-size="14" font-weight="bold">'
        f"{escape(title)}</text>"
    )


def _describe(title: str, series: Sequence[Series], unit: str) -> str:
    words = []
    for s in series:
        values = [y for _, y in s.points if y is not None and _finite(y)]
        name = f"{s.name} " if s.name else ""
        if values:
            latest = next(y for _, y in reversed(s.points) if y is not None and _finite(y))
            words.append(
                f"{name}latest {fmt_number(latest)}, max {fmt_number(max(values))} {unit}".strip()
            )
        else:
            words.append(f"{name}no data".strip())
    return f"{title}: {'; '.join(words)}" if title else "; ".join(words)
