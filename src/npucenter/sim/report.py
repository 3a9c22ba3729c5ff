"""A self-contained HTML report of a simulation: summary, latency CDFs, power and utilisation.

Inline SVG only (no scripts, no CDN), so the file opens anywhere offline. Pure: returns text.
"""

from __future__ import annotations

import html
import math
from collections.abc import Sequence
from typing import Any

import numpy as np

from npucenter.sim.results import SimResult

__all__ = ["render_html_report", "svg_line_chart"]

_COLORS = ("#1f77b4", "#d62728", "#2ca02c", "#ff7f0e", "#9467bd")


def svg_line_chart(
    series: Sequence[tuple[str, Sequence[float], Sequence[float]]],
    *,
    title: str,
    x_label: str,
    y_label: str,
    width: int = 640,
    height: int = 300,
    log_x: bool = False,
) -> str:
    """One SVG chart of named (x, y) polylines with axes and a legend."""
    pad_l, pad_r, pad_t, pad_b = 60, 20, 30, 45
    xs_all = [x for _, xs, _ in series for x in xs if _finite(x, log_x)]
    ys_all = [y for _, _, ys in series for y in ys if math.isfinite(y)]
    if not xs_all or not ys_all:
        return f"<p>{html.escape(title)}: no data</p>"
    fx = (lambda v: math.log10(v)) if log_x else (lambda v: v)
    x0, x1 = fx(min(xs_all)), fx(max(xs_all))
    y0, y1 = min(0.0, min(ys_all)), max(ys_all)
    x1 = x1 if x1 > x0 else x0 + 1
    y1 = y1 if y1 > y0 else y0 + 1
    iw, ih = width - pad_l - pad_r, height - pad_t - pad_b

    def px(v: float) -> float:
        return pad_l + (fx(v) - x0) / (x1 - x0) * iw

    def py(v: float) -> float:
        return pad_t + ih - (v - y0) / (y1 - y0) * ih

    parts = [
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" '
        f'role="img" aria-label="{html.escape(title)}">',
        f'<text x="{width / 2}" y="18" text-anchor="middle" font-size="14">'
        f"{html.escape(title)}</text>",
        f'<line x1="{pad_l}" y1="{pad_t + ih}" x2="{pad_l + iw}" y2="{pad_t + ih}" stroke="#333"/>',
        f'<line x1="{pad_l}" y1="{pad_t}" x2="{pad_l}" y2="{pad_t + ih}" stroke="#333"/>',
    ]
    for k in range(5):
        yv = y0 + (y1 - y0) * k / 4
        xv_lin = x0 + (x1 - x0) * k / 4
        xv = 10**xv_lin if log_x else xv_lin
        parts.append(
            f'<text x="{pad_l - 5}" y="{py(yv) + 4:.1f}" text-anchor="end" font-size="10">'
            f"{yv:.3g}</text>"
        )
        parts.append(
            f'<text x="{px(xv):.1f}" y="{pad_t + ih + 14}" text-anchor="middle" font-size="10">'
            f"{xv:.3g}</text>"
        )
    parts.append(
        f'<text x="{pad_l + iw / 2}" y="{height - 8}" text-anchor="middle" font-size="11">'
        f"{html.escape(x_label)}</text>"
    )
    parts.append(
        f'<text x="14" y="{pad_t + ih / 2}" text-anchor="middle" font-size="11" '
        f'transform="rotate(-90 14 {pad_t + ih / 2})">{html.escape(y_label)}</text>'
    )
    for n, (name, xs, ys) in enumerate(series):
        pts = " ".join(
            f"{px(x):.1f},{py(y):.1f}"
            for x, y in zip(xs, ys, strict=False)
            if _finite(x, log_x) and math.isfinite(y)
        )
        color = _COLORS[n % len(_COLORS)]
        parts.append(f'<polyline fill="none" stroke="{color}" stroke-width="1.5" points="{pts}"/>')
        parts.append(
            f'<text x="{pad_l + 10}" y="{pad_t + 14 + 14 * n}" font-size="11" fill="{color}">'
            f"{html.escape(name)}</text>"
        )
    parts.append("</svg>")
    return "".join(parts)


def _finite(x: float, log_x: bool) -> bool:
    return math.isfinite(x) and (x > 0 or not log_x)


def _cdf(values: np.ndarray, points: int = 200) -> tuple[list[float], list[float]]:
    arr = np.sort(values[np.isfinite(values)])
    if not arr.size:
        return [], []
    q = np.linspace(0, 1, min(points, arr.size))
    xs = np.quantile(arr, q)
    return xs.tolist(), q.tolist()


def render_html_report(result: SimResult, *, title: str = "npucenter simulation") -> str:
    """The report as one HTML document."""
    s = result.summary
    rows = [
        ("fleet", s.get("fleet")),
        ("policy", s.get("policy")),
        ("trace", s.get("trace")),
        (
            "requests / completed / rejected",
            f"{s['requests']} / {s['completed']} / {s['rejected']}",
        ),
        ("TTFT p50 / p90 / p99 (s)", _pcts(s["ttft_s"])),
        ("TPOT p50 / p90 / p99 (s)", _pcts(s["tpot_s"])),
        ("end-to-end p50 / p90 / p99 (s)", _pcts(s["e2e_s"])),
        ("goodput (req/s meeting SLO)", f"{s['goodput_rps']:.3f}"),
        ("SLO attainment", f"{s['slo_attainment']:.2%}"),
        ("energy per output token (J)", f"{s['energy_j_per_output_token']:.3f}"),
        ("mean fleet power (W)", f"{s['mean_power_w']:.0f}"),
        ("utilisation", ", ".join(f"{k} {v:.1%}" for k, v in s["utilisation"].items())),
        ("simulated (s)", f"{s['simulated_s']:.1f}"),
        ("wall (s)", "" if s.get("wall_s") is None else f"{s['wall_s']:.2f}"),
    ]
    table = "".join(
        f"<tr><th>{html.escape(str(k))}</th><td>{html.escape(str(v))}</td></tr>" for k, v in rows
    )
    charts = [
        svg_line_chart(
            [("TTFT", *_cdf(result.ttft_s)), ("end-to-end", *_cdf(result.e2e_s))],
            title="Latency CDF",
            x_label="seconds (log)",
            y_label="fraction of requests",
            log_x=True,
        ),
        svg_line_chart(
            [("TPOT", *_cdf(result.tpot_s))],
            title="Time per output token CDF",
            x_label="seconds",
            y_label="fraction of requests",
        ),
    ]
    tl: dict[str, Any] = s["timeline"]
    charts.append(
        svg_line_chart(
            [
                ("fleet", tl["t_s"], tl["fleet_power_w"]),
                ("NPU replicas", tl["t_s"], tl["npu_power_w"]),
                ("GPU replicas", tl["t_s"], tl["gpu_power_w"]),
            ],
            title="Power over time",
            x_label="simulated time (s)",
            y_label="W",
        )
    )
    util = [(k.split("_")[0].upper(), tl["t_s"], tl[k]) for k in tl if k.endswith("_utilisation")]
    charts.append(
        svg_line_chart(
            util, title="Busy fraction over time", x_label="simulated time (s)", y_label="busy"
        )
    )
    notes = "".join(f"<li>{html.escape(a)}</li>" for a in s.get("assumptions", []))
    return (
        "<!doctype html><html><head><meta charset='utf-8'>"
        f"<title>{html.escape(title)}</title>"
        "<style>body{font-family:sans-serif;margin:2em;max-width:1400px}"
        "th{text-align:left;padding-right:1em}svg{margin:0.5em;border:1px solid #ddd}</style>"
        f"</head><body><h1>{html.escape(title)}</h1><table>{table}</table>"
        f"<div>{''.join(charts)}</div><h2>Assumptions</h2><ul>{notes}</ul>"
        f"<p>Trace: {html.escape(result.trace.source)}</p></body></html>"
    )


def _pcts(d: dict[str, float]) -> str:
    return " / ".join("n/a" if math.isnan(d[k]) else f"{d[k]:.3f}" for k in ("p50", "p90", "p99"))
