"""A self-contained HTML report of a simulation: summary, latency CDFs, power and utilisation.

Inline SVG only (no scripts, no CDN), so the file opens anywhere offline. Pure: returns text.
"""

from __future__ import annotations

import html
import math
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from npucenter.render.svg import Series, line_chart
from npucenter.sim.results import SimResult

__all__ = ["render_html_report", "report_charts"]


def _cdf(name: str, values: np.ndarray, points: int = 200) -> Series:
    arr = np.sort(values[np.isfinite(values)])
    if not arr.size:
        return Series(name, [])
    q = np.linspace(0, 1, min(points, arr.size))
    xs = np.quantile(arr, q)
    return Series(name, list(zip(xs.tolist(), q.tolist(), strict=True)))


def _timeline(name: str, t_s: Sequence[float], values: Sequence[float]) -> Series:
    return Series(name, list(zip(t_s, values, strict=False)))


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
        (  # where each service's replicas landed (a fungible one's: per device type)
            "replicas by device type",
            "; ".join(
                f"{name}: " + ", ".join(f"{dev} {n}" for dev, n in per.items())
                for name, per in (s.get("placement") or {}).items()
            ),
        ),
        ("simulated (s)", f"{s['simulated_s']:.1f}"),
        ("wall (s)", "" if s.get("wall_s") is None else f"{s['wall_s']:.2f}"),
    ]
    table = "".join(
        f"<tr><th>{html.escape(str(k))}</th><td>{html.escape(str(v))}</td></tr>" for k, v in rows
    )
    charts = report_charts(s, result.ttft_s, result.tpot_s, result.e2e_s)
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


def report_charts(
    s: Mapping[str, Any], ttft_s: np.ndarray, tpot_s: np.ndarray, e2e_s: np.ndarray
) -> list[str]:
    """The report's SVG charts from a summary and the per-request latencies (or quantiles of
    them: the console draws a simulation job's result with it)."""
    charts = [
        line_chart(
            [_cdf("TTFT", ttft_s), _cdf("end-to-end", e2e_s)],
            title="Latency CDF",
            x_label="seconds (log)",
            y_label="fraction of requests",
            log_x=True,
        ),
        line_chart(
            [_cdf("TPOT", tpot_s)],
            title="Time per output token CDF",
            x_label="seconds",
            y_label="fraction of requests",
        ),
    ]
    tl: dict[str, Any] = s["timeline"]
    charts.append(
        line_chart(
            [
                _timeline("fleet", tl["t_s"], tl["fleet_power_w"]),
                _timeline("NPU replicas", tl["t_s"], tl["npu_power_w"]),
                _timeline("GPU replicas", tl["t_s"], tl["gpu_power_w"]),
            ],
            title="Power over time",
            x_label="simulated time (s)",
            y_label="W",
        )
    )
    util = [
        _timeline(k.split("_")[0].upper(), tl["t_s"], tl[k])
        for k in tl
        if k.endswith("_utilisation")
    ]
    charts.append(
        line_chart(
            util, title="Busy fraction over time", x_label="simulated time (s)", y_label="busy"
        )
    )
    return charts


def _pcts(d: dict[str, float]) -> str:
    return " / ".join("n/a" if math.isnan(d[k]) else f"{d[k]:.3f}" for k in ("p50", "p90", "p99"))
