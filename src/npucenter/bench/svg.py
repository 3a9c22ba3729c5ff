"""Tiny inline-SVG charts (line/scatter and bars) for self-contained HTML reports; no JS, no CDN."""

from __future__ import annotations

import math
from collections.abc import Sequence
from html import escape

__all__ = ["PALETTE", "bar_chart", "line_chart"]

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

_W, _H = 640, 360
_L, _R, _T, _B = 70, 20, 30, 50


def _ticks(lo: float, hi: float, n: int = 5) -> list[float]:
    if hi <= lo:
        hi = lo + 1.0
    raw = (hi - lo) / n
    mag = 10 ** math.floor(math.log10(raw))
    step = min((m * mag for m in (1, 2, 2.5, 5, 10) if m * mag >= raw), default=raw)
    start = math.floor(lo / step) * step
    out = []
    v = start
    while v <= hi + step * 1e-9:
        if v >= lo - step * 1e-9:
            out.append(round(v, 10))
        v += step
    return out


def _fmt(v: float) -> str:
    if v == 0:
        return "0"
    if abs(v) >= 1000:
        return f"{v:,.0f}"
    if abs(v) >= 10:
        return f"{v:.0f}"
    if abs(v) >= 1:
        return f"{v:.1f}"
    return f"{v:.3g}"


def line_chart(
    series: Sequence[tuple[str, Sequence[tuple[float, float]]]],
    *,
    title: str,
    x_label: str,
    y_label: str,
    markers: bool = True,
    step: bool = False,
) -> str:
    """One SVG with a line per ``(name, [(x, y), ...])`` series (points sorted by x)."""
    pts = [(x, y) for _, s in series for x, y in s if _finite(x) and _finite(y)]
    if not pts:
        return f'<p class="empty">{escape(title)}: no data</p>'
    x_lo, x_hi = min(0.0, min(p[0] for p in pts)), max(p[0] for p in pts)
    y_lo, y_hi = min(0.0, min(p[1] for p in pts)), max(p[1] for p in pts)
    x_hi = x_hi if x_hi > x_lo else x_lo + 1
    y_hi = (y_hi if y_hi > y_lo else y_lo + 1) * 1.05
    pw, ph = _W - _L - _R, _H - _T - _B

    def sx(x: float) -> float:
        return _L + (x - x_lo) / (x_hi - x_lo) * pw

    def sy(y: float) -> float:
        return _T + ph - (y - y_lo) / (y_hi - y_lo) * ph

    parts = [_open(title), *_axes(x_lo, x_hi, y_lo, y_hi, sx, sy, x_label, y_label)]
    for i, (name, s) in enumerate(series):
        color = PALETTE[i % len(PALETTE)]
        good = sorted((x, y) for x, y in s if _finite(x) and _finite(y))
        if not good:
            continue
        coords: list[str] = []
        prev_y = None
        for x, y in good:
            if step and prev_y is not None:
                coords.append(f"{sx(x):.1f},{sy(prev_y):.1f}")
            coords.append(f"{sx(x):.1f},{sy(y):.1f}")
            prev_y = y
        parts.append(
            f'<polyline fill="none" stroke="{color}" stroke-width="2" points="{" ".join(coords)}">'
            f"<title>{escape(name)}</title></polyline>"
        )
        if markers and len(good) <= 60:
            for x, y in good:
                parts.append(
                    f'<circle cx="{sx(x):.1f}" cy="{sy(y):.1f}" r="3" fill="{color}">'
                    f"<title>{escape(name)}: ({_fmt(x)}, {_fmt(y)})</title></circle>"
                )
        ly = _T + 14 + 16 * i
        parts.append(
            f'<rect x="{_W - _R - 190}" y="{ly - 9}" width="10" height="10" fill="{color}"/>'
            f'<text x="{_W - _R - 175}" y="{ly}" font-size="11">{escape(name[:30])}</text>'
        )
    parts.append("</svg>")
    return "".join(parts)


def bar_chart(items: Sequence[tuple[str, float | None]], *, title: str, unit: str) -> str:
    """Horizontal bars, one per ``(label, value)``; missing values are shown as 'n/a'."""
    if not items:
        return f'<p class="empty">{escape(title)}: no data</p>'
    vals = [v for _, v in items if v is not None and _finite(v)]
    hi = max(vals, default=1.0) or 1.0
    row_h = 24
    height = _T + row_h * len(items) + 20
    label_w = 220
    pw = _W - label_w - 90
    parts = [
        f'<svg viewBox="0 0 {_W} {height}" width="{_W}" '
        f'height="{height}" role="img"><title>{escape(title)}</title>'
        f'<text x="{_W / 2}" y="18" text-anchor="middle" font-size="14" font-weight="bold">'
        f"{escape(title)}</text>"
    ]
    for i, (label, v) in enumerate(items):
        y = _T + i * row_h
        parts.append(
            f'<text x="{label_w - 6}" y="{y + 15}" text-anchor="end" font-size="11">'
            f"{escape(label[:36])}</text>"
        )
        if v is None or not _finite(v):
            parts.append(f'<text x="{label_w + 4}" y="{y + 15}" font-size="11">n/a</text>')
            continue
        w = max(1.0, v / hi * pw)
        color = PALETTE[i % len(PALETTE)]
        parts.append(
            f'<rect x="{label_w}" y="{y + 3}" width="{w:.1f}" height="{row_h - 8}" fill="{color}">'
            f"<title>{escape(label)}: {_fmt(v)} {escape(unit)}</title></rect>"
            f'<text x="{label_w + w + 4:.1f}" y="{y + 15}" font-size="11">{_fmt(v)} '
            f"{escape(unit)}</text>"
        )
    parts.append("</svg>")
    return "".join(parts)


def _finite(v: float | None) -> bool:
    return v is not None and isinstance(v, int | float) and math.isfinite(v)


def _open(title: str) -> str:
    return (
        f'<svg viewBox="0 0 {_W} {_H}" width="{_W}" '
        f'height="{_H}" role="img"><title>{escape(title)}</title>'
        f'<text x="{_W / 2}" y="18" text-anchor="middle" font-size="14" font-weight="bold">'
        f"{escape(title)}</text>"
    )


def _axes(
    x_lo: float,
    x_hi: float,
    y_lo: float,
    y_hi: float,
    sx: object,
    sy: object,
    x_label: str,
    y_label: str,
) -> list[str]:
    assert callable(sx) and callable(sy)
    out = [
        f'<line x1="{_L}" y1="{_H - _B}" x2="{_W - _R}" y2="{_H - _B}" stroke="#333"/>',
        f'<line x1="{_L}" y1="{_T}" x2="{_L}" y2="{_H - _B}" stroke="#333"/>',
    ]
    for t in _ticks(x_lo, x_hi):
        x = sx(t)
        out.append(
            f'<line x1="{x:.1f}" y1="{_H - _B}" x2="{x:.1f}" y2="{_H - _B + 4}" stroke="#333"/>'
            f'<text x="{x:.1f}" y="{_H - _B + 16}" text-anchor="middle" font-size="10">'
            f"{_fmt(t)}</text>"
        )
    for t in _ticks(y_lo, y_hi):
        y = sy(t)
        out.append(
            f'<line x1="{_L}" y1="{y:.1f}" x2="{_W - _R}" y2="{y:.1f}" stroke="#eee"/>'
            f'<text x="{_L - 6}" y="{y + 3:.1f}" text-anchor="end" font-size="10">{_fmt(t)}</text>'
        )
    out.append(
        f'<text x="{_L + (_W - _L - _R) / 2}" y="{_H - 12}" text-anchor="middle" font-size="12">'
        f"{escape(x_label)}</text>"
        f'<text x="16" y="{_T + (_H - _T - _B) / 2}" text-anchor="middle" font-size="12" '
        f'transform="rotate(-90 16 {_T + (_H - _T - _B) / 2})">{escape(y_label)}</text>'
    )
    return out
