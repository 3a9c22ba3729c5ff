"""Side-by-side comparison of benchmark results: a self-contained HTML page and a Markdown summary.

The report compares every run inside the given files (a suite contributes one run per entry):
a table of the headline metrics, throughput-latency curves (sweep steps), latency CDFs, goodput
at the SLO, tokens per joule, cost per million output tokens from a price per hour, and, for
results naming a catalog device, the twin's prediction and its error.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Mapping, Sequence
from html import escape
from typing import Any

from npucenter.bench.result import HARNESS_VERSION, iter_runs
from npucenter.bench.twin import compare_with_twin
from npucenter.render.svg import Series, bar_chart, line_chart

__all__ = ["build_report", "cost_per_million_tokens", "render_html", "render_markdown"]

_CDF_POINTS = 200


def cost_per_million_tokens(
    usd_per_hour: float | None, output_tokens_per_s: float | None
) -> float | None:
    """USD per million output tokens at ``output_tokens_per_s`` for a device costing ``usd_per_hour``."""
    if not usd_per_hour or not output_tokens_per_s:
        return None
    return usd_per_hour / (output_tokens_per_s * 3600.0) * 1e6


def build_report(
    docs: Sequence[Mapping[str, Any]],
    *,
    names: Sequence[str] | None = None,
    prices: Mapping[str, float] | None = None,
    twin: bool = True,
) -> dict[str, Any]:
    """The report's data: one row per run found in ``docs``."""
    prices = dict(prices or {})
    names = list(names or [f"result {i + 1}" for i in range(len(docs))])
    rows: list[dict[str, Any]] = []
    for doc, fname in zip(docs, names, strict=True):
        for run in iter_runs(doc):
            rows.append(_row(run, fname, prices, twin))
    return {
        "title": "npucenter proving ground: comparison",
        "generated_at": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        "harness_version": HARNESS_VERSION,
        "files": names,
        "rows": rows,
    }


def _row(
    run: Mapping[str, Any], fname: str, prices: Mapping[str, float], twin: bool
) -> dict[str, Any]:
    s = dict(run.get("summary") or {})
    label = str(run.get("label") or fname)
    scenario = str(run.get("suite_entry") or (run.get("scenario") or {}).get("name") or "run")
    target = run.get("target") or {}
    price = (
        prices.get(label)
        or prices.get(fname)
        or prices.get(str(run.get("device") or ""))
        or target.get("price_usd_per_hour")
        or prices.get("*")
    )
    out_tps = s.get("output_tokens_per_s")
    sat = run.get("saturation") or {}
    row: dict[str, Any] = {
        "label": label,
        "file": fname,
        "scenario": scenario,
        "kind": run.get("kind"),
        "device": run.get("device"),
        "model": run.get("model_id"),
        "harness_version": run.get("harness_version"),
        "summary": s,
        "price_usd_per_hour": price,
        "cost_usd_per_million_output_tokens": cost_per_million_tokens(price, out_tps),
        "saturation": sat,
        "mlperf": run.get("mlperf"),
        "curve": _curve(run),
        "cdf_e2e_s": _cdf([r.get("e2e_s") for r in run.get("requests", []) if r.get("ok")]),
        "cdf_ttft_s": _cdf([r.get("ttft_s") for r in run.get("requests", []) if r.get("ok")]),
        "twin": compare_with_twin(run) if twin else None,
    }
    return row


def _curve(run: Mapping[str, Any]) -> list[dict[str, Any]]:
    """(throughput, latency) points: each sweep step, or the run itself."""
    steps = [r.get("summary") or {} for r in run.get("runs", [])] or [run.get("summary") or {}]
    pts = []
    for s in steps:
        if not s.get("completed"):
            continue
        pts.append(
            {
                "request_throughput_rps": s.get("steady_request_throughput_rps")
                or s.get("request_throughput_rps"),
                "output_tokens_per_s": s.get("output_tokens_per_s"),
                "p50_ttft_s": (s.get("ttft_s") or {}).get("p50"),
                "p99_ttft_s": (s.get("ttft_s") or {}).get("p99"),
                "p50_tpot_s": (s.get("tpot_s") or {}).get("p50"),
                "p99_e2e_s": (s.get("e2e_s") or {}).get("p99"),
            }
        )
    return pts


def _cdf(values: Sequence[float | None]) -> list[tuple[float, float]]:
    vals = sorted(v for v in values if v is not None)
    if not vals:
        return []
    n = len(vals)
    stride = max(1, n // _CDF_POINTS)
    pts = [(vals[i], (i + 1) / n) for i in range(0, n, stride)]
    if pts[-1][0] != vals[-1]:
        pts.append((vals[-1], 1.0))
    return pts


def _name(row: Mapping[str, Any]) -> str:
    return f"{row['label']} · {row['scenario']}"


def _g(v: Any, fmt: str = "{:,.2f}", scale: float = 1.0) -> str:
    if v is None:
        return "-"
    try:
        return fmt.format(v * scale)
    except (TypeError, ValueError):
        return str(v)


_COLUMNS: tuple[tuple[str, str], ...] = (
    ("completed / errors", "ce"),
    ("req/s", "request_throughput_rps"),
    ("out tok/s", "output_tokens_per_s"),
    ("goodput req/s", "goodput_rps"),
    ("SLO met", "slo"),
    ("TTFT p50 / p99 ms", "ttft"),
    ("TPOT p50 / p99 ms", "tpot"),
    ("E2E p99 s", "e2e"),
    ("tok/J", "output_tokens_per_j"),
    ("$/M out tok", "cost"),
    ("saturation req/s", "sat"),
)


def _cells(row: Mapping[str, Any]) -> list[str]:
    s = row["summary"]
    ttft, tpot, e2e = s.get("ttft_s") or {}, s.get("tpot_s") or {}, s.get("e2e_s") or {}
    cells = []
    for _, key in _COLUMNS:
        if key == "ce":
            cells.append(f"{s.get('completed', '-')} / {s.get('errors', '-')}")
        elif key == "slo":
            cells.append(_g(s.get("slo_attainment_fraction"), "{:.1f} %", 100))
        elif key == "ttft":
            cells.append(
                f"{_g(ttft.get('p50'), '{:.0f}', 1000)} / {_g(ttft.get('p99'), '{:.0f}', 1000)}"
            )
        elif key == "tpot":
            cells.append(
                f"{_g(tpot.get('p50'), '{:.1f}', 1000)} / {_g(tpot.get('p99'), '{:.1f}', 1000)}"
            )
        elif key == "e2e":
            cells.append(_g(e2e.get("p99"), "{:.2f}"))
        elif key == "cost":
            cells.append(_g(row.get("cost_usd_per_million_output_tokens"), "{:.3f}"))
        elif key == "sat":
            cells.append(_g((row.get("saturation") or {}).get("saturation_rps")))
        elif key == "output_tokens_per_j":
            cells.append(_g(s.get(key), "{:.3f}"))
        else:
            cells.append(_g(s.get(key)))
    return cells


def _twin_rows(report: Mapping[str, Any]) -> list[list[str]]:
    out = []
    for row in report["rows"]:
        tw = row.get("twin")
        if not tw:
            continue
        if "error" in tw:
            out.append([_name(row), "twin cannot predict", tw["error"], "", ""])
            continue
        pred, meas, err = tw["prediction"], tw["measured"], tw["error_fraction"]
        for key in (
            "saturation_rps",
            "ttft_s_at_load",
            "tpot_s_at_load",
            "tokens_per_j_at_saturation",
        ):
            if meas.get(key) is None:
                continue
            out.append(
                [
                    _name(row),
                    key,
                    _g(pred.get(key), "{:.4g}"),
                    _g(meas.get(key), "{:.4g}"),
                    _g(err.get(key), "{:+.1f} %", 100),
                ]
            )
    return out


def render_markdown(report: Mapping[str, Any]) -> str:
    """A Markdown summary: the comparison table and the twin comparison."""
    lines = [f"# {report['title']}", "", f"Files: {', '.join(report['files'])}  ", ""]
    header = ["run", *[c for c, _ in _COLUMNS]]
    lines.append("| " + " | ".join(header) + " |")
    lines.append("|" + "---|" * len(header))
    for row in sorted(report["rows"], key=lambda r: (r["scenario"], r["label"])):
        name = _name(row)
        if row.get("mlperf"):
            name += f" [{row['mlperf']['result']} @ {row['mlperf']['server_rate_rps']:.2f} req/s]"
        lines.append("| " + " | ".join([name, *_cells(row)]) + " |")
    twin = _twin_rows(report)
    if twin:
        lines += ["", "## Twin prediction vs measurement", ""]
        lines.append("| run | figure | predicted | measured | error |")
        lines.append("|---|---|---|---|---|")
        lines += ["| " + " | ".join(r) + " |" for r in twin]
    lines += ["", f"_{report['harness_version']}, generated {report['generated_at']}_", ""]
    return "\n".join(lines)


def render_html(report: Mapping[str, Any]) -> str:
    """One self-contained HTML page (inline CSS and SVG; no scripts, no external resources)."""
    rows = sorted(report["rows"], key=lambda r: (r["scenario"], r["label"]))
    head = "".join(f"<th>{escape(c)}</th>" for c, _ in _COLUMNS)
    body = []
    for row in rows:
        name = escape(_name(row))
        if row.get("mlperf"):
            m = row["mlperf"]
            name += f" <b>[{escape(m['result'])} @ {m['server_rate_rps']:.2f} req/s]</b>"
        body.append(
            f"<tr><td>{name}</td>" + "".join(f"<td>{escape(c)}</td>" for c in _cells(row)) + "</tr>"
        )
    charts = _charts(rows)
    twin = _twin_rows(report)
    twin_html = ""
    if twin:
        trs = "".join("<tr>" + "".join(f"<td>{escape(c)}</td>" for c in r) + "</tr>" for r in twin)
        twin_html = (
            "<h2>Twin prediction vs measurement</h2><table><tr><th>run</th><th>figure</th>"
            f"<th>predicted</th><th>measured</th><th>error</th></tr>{trs}</table>"
            "<p class='note'>Prediction: npucenter's perf model for the same device, model and "
            "mean request lengths: saturation from steady-state continuous batching; TTFT/TPOT "
            "at the measured mean concurrency of the run (lowest-load step of a sweep), without "
            "queueing. See docs/proving-ground.md.</p>"
        )
    return (
        "<!DOCTYPE html><html lang='en'><head><meta charset='utf-8'>"
        f"<title>{escape(report['title'])}</title><style>{_CSS}</style></head><body>"
        f"<h1>{escape(report['title'])}</h1>"
        f"<p class='note'>Files: {escape(', '.join(report['files']))}. "
        f"{escape(report['harness_version'])}, generated {escape(report['generated_at'])}.</p>"
        f"<h2>Side by side</h2><table><tr><th>run</th>{head}</tr>{''.join(body)}</table>"
        f"{charts}{twin_html}</body></html>\n"
    )


def _charts(rows: Sequence[Mapping[str, Any]]) -> str:
    curves_ttft: list[Series] = []
    curves_tpot: list[Series] = []
    cdf_e2e: list[Series] = []
    cdf_ttft: list[Series] = []
    for row in rows:
        name = _name(row)
        pts = row["curve"]
        if pts:
            curves_ttft.append(
                Series(name, [(p["request_throughput_rps"], _ms(p["p99_ttft_s"])) for p in pts])
            )
            curves_tpot.append(
                Series(name, [(p["output_tokens_per_s"], _ms(p["p50_tpot_s"])) for p in pts])
            )
        if row["cdf_e2e_s"]:
            cdf_e2e.append(Series(name, row["cdf_e2e_s"]))
        if row["cdf_ttft_s"]:
            cdf_ttft.append(Series(name, [(x * 1000, y) for x, y in row["cdf_ttft_s"]]))
    parts = ["<h2>Throughput and latency</h2><div class='grid'>"]
    parts.append(
        line_chart(
            curves_ttft,
            title="p99 TTFT vs throughput",
            x_label="req/s",
            y_label="p99 TTFT (ms)",
            markers=True,
        )
    )
    parts.append(
        line_chart(
            curves_tpot,
            title="p50 TPOT vs output throughput",
            x_label="output tokens/s",
            y_label="p50 TPOT (ms)",
            markers=True,
        )
    )
    parts.append("</div><h2>Latency CDFs</h2><div class='grid'>")
    parts.append(
        line_chart(
            cdf_ttft,
            title="TTFT CDF",
            x_label="TTFT (ms)",
            y_label="fraction of requests",
            step=True,
        )
    )
    parts.append(
        line_chart(
            cdf_e2e,
            title="End-to-end latency CDF",
            x_label="e2e (s)",
            y_label="fraction of requests",
            step=True,
        )
    )
    parts.append("</div><h2>Goodput, energy and cost</h2><div class='grid'>")
    names = [_name(r) for r in rows]
    parts.append(
        bar_chart(
            list(zip(names, [r["summary"].get("goodput_rps") for r in rows], strict=True)),
            title="Goodput at the SLO",
            unit="req/s",
            width=640,
            label_w=220,
        )
    )
    parts.append(
        bar_chart(
            list(zip(names, [r["summary"].get("output_tokens_per_j") for r in rows], strict=True)),
            title="Output tokens per joule",
            unit="tok/J",
            width=640,
            label_w=220,
        )
    )
    parts.append(
        bar_chart(
            list(zip(names, [r["cost_usd_per_million_output_tokens"] for r in rows], strict=True)),
            title="Cost per million output tokens",
            unit="USD",
            width=640,
            label_w=220,
        )
    )
    parts.append("</div>")
    return "".join(parts)


def _ms(v: float | None) -> float:
    return float("nan") if v is None else v * 1000.0


_CSS = """
body{font-family:system-ui,sans-serif;margin:2em;color:#222}
table{border-collapse:collapse;margin:1em 0;font-size:13px}
th,td{border:1px solid #ccc;padding:4px 8px;text-align:right}
th:first-child,td:first-child{text-align:left}
th{background:#f3f3f3}
.grid{display:flex;flex-wrap:wrap;gap:16px}
.note{color:#666;font-size:12px}
.empty{color:#999}
"""
