"""Plan reports: the JSON document and a self-contained HTML page (inline CSS and SVG, no CDN).

Pure: returns a dict or a string; the CLI writes them.
"""

from __future__ import annotations

import html
from collections.abc import Mapping, Sequence
from typing import Any

from npucenter.plan.milp import Allocation
from npucenter.plan.planner import BASELINES, PlanOutcome, PlanResult

__all__ = ["outcome_to_dict", "render_html", "result_to_dict"]


def outcome_to_dict(outcome: PlanOutcome, services: Sequence[str]) -> dict[str, Any]:
    """The fields every plan and baseline share in the JSON."""
    alloc = outcome.allocation
    ver = outcome.verification
    return {
        "feasible": alloc is not None,
        "servers": dict(alloc.servers) if alloc else {},
        "cards": _cards(alloc) if alloc else {},
        "npu_share": alloc.npu_share if alloc else None,
        "replicas": _replicas(alloc, services) if alloc else {},
        "capacity_rps": dict(alloc.capacity_rps) if alloc else {},
        "required_rps": dict(outcome.required_rps),
        "power_w": alloc.power_w if alloc else None,
        "cost_per_hour": alloc.cost_usd_per_hour if alloc else None,
        "cost_per_million_output_tokens": outcome.cost_per_million_output_tokens,
        "energy_j_per_output_token": outcome.energy_j_per_output_token,
        "simulated_energy_j_per_output_token": ver.energy_j_per_output_token if ver else None,
        "simulated_mean_power_w": ver.mean_power_w if ver else None,
        "verified": outcome.verified,
        "slo_attainment": {
            s: (ver.slo_attainment.get(s) if ver is not None else None) for s in services
        },
        "rounds": outcome.rounds,
        "headroom": dict(outcome.headroom),
        "reason": outcome.reason,
        "found_by": outcome.found_by or None,
        "verification_notes": list(ver.notes) if ver else [],
    }


def result_to_dict(result: PlanResult) -> dict[str, Any]:
    """The ``--json`` document: the plan's fields at top level, then baselines and analyses."""
    services = [s.name for s in result.spec.services]
    doc: dict[str, Any] = {"name": result.spec.name, "objective": result.spec.objective}
    doc.update(outcome_to_dict(result.plan, services))
    doc["baselines"] = {
        name: outcome_to_dict(result.baselines[name], services)
        for name in BASELINES
        if name in result.baselines
    }
    doc["comparison"] = list(result.comparison)
    doc["pareto"] = [_alloc_summary(a) for a in result.pareto]
    doc["sensitivity"] = [
        {
            "name": case.name,
            "demand_factor": case.demand_factor,
            "power_cap_factor": case.power_cap_factor,
            "power_cap_w": result.spec.power_cap_w * case.power_cap_factor,
            **(
                _alloc_summary(case.allocation)
                if case.allocation
                else {"feasible": False, "servers": {}}
            ),
        }
        for case in result.sensitivity
    ]
    doc["candidates"] = [
        {
            "label": p.candidate.label,
            "service": p.candidate.service,
            "cards": p.candidate.cards,
            "disaggregated": p.candidate.disaggregated,
            "max_rate_rps": p.max_rate_rps,
        }
        for p in result.profiles
    ]
    doc["skipped_candidates"] = list(result.skipped)
    doc["traffic"] = {
        name: {
            "rate_rps": t.rate_rps,
            "mean_input_tokens": t.mean_input_tokens,
            "mean_output_tokens": t.mean_output_tokens,
            "p90_input_tokens": t.p90_input_tokens,
            "num_requests": t.num_requests,
        }
        for name, t in result.traffic.items()
    }
    doc["device_types"] = {
        d.device_id: {
            "kind": d.kind,
            "cards_per_server": d.cards_per_server,
            "server_cost_usd_per_hour": d.server_cost_usd_per_hour,
            "active_power_w": d.active_power_w,
            "idle_power_w": d.idle_power_w,
            "server_overhead_w": d.server_overhead_w,
        }
        for d in result.device_types
    }
    doc["profile_source"] = result.profile_source
    doc["verifier"] = result.verifier_source
    doc["assumptions"] = list(result.assumptions)
    return doc


def render_html(result: PlanResult) -> str:
    """A self-contained HTML report (inline CSS and SVG)."""
    doc = result_to_dict(result)
    services = [s.name for s in result.spec.services]
    rows = [("plan (optimum)", result.plan)] + [
        (name, result.baselines[name]) for name in BASELINES if name in result.baselines
    ]
    parts = [
        f"<h1>Capacity plan: {_e(result.spec.name)}</h1>",
        "<h2>Verdict</h2><ul>" + "".join(f"<li>{_e(s)}</li>" for s in result.comparison) + "</ul>",
        "<h2>Plan and baselines</h2>",
        _comparison_table(rows, services),
        "<h2>Cost per hour</h2>",
        _cost_bars(rows),
        "<h2>Predicted vs required (plan)</h2>",
        _predicted_table(result),
        "<h2>Replicas per service (plan)</h2>",
        _replica_table(doc["replicas"]),
        "<h2>Cost–power Pareto front</h2>",
        _pareto_svg(result.pareto, result.spec.power_cap_w),
        _pareto_table(result.pareto),
        "<h2>Sensitivity</h2>",
        _sensitivity_table(doc["sensitivity"]),
        "<h2>Candidates and profiled capacity</h2>",
        _candidate_table(doc["candidates"], result.profile_source),
        f"<p>verification: {_e(result.verifier_source or 'none')}</p>",
        "<h2>Traffic</h2>",
        _traffic_table(doc["traffic"]),
        "<h2>Assumptions</h2><ul>"
        + "".join(f"<li>{_e(a)}</li>" for a in result.assumptions)
        + "</ul>",
    ]
    if result.skipped:
        parts.append(
            "<h2>Candidates left out</h2><ul>"
            + "".join(f"<li>{_e(s)}</li>" for s in result.skipped)
            + "</ul>"
        )
    body = "\n".join(parts)
    return (
        "<!doctype html><html lang='en'><head><meta charset='utf-8'>"
        f"<title>npucenter plan: {_e(result.spec.name)}</title><style>{_CSS}</style></head>"
        f"<body>{body}<footer>npucenter capacity planner · traces: Azure LLM inference traces "
        "2023 (CC-BY 4.0), Patel et al., Splitwise, ISCA 2024</footer></body></html>"
    )


# --- pieces ---------------------------------------------------------------------------------

_CSS = """
body{font-family:system-ui,sans-serif;margin:2rem auto;max-width:72rem;color:#222}
table{border-collapse:collapse;margin:.5rem 0 1.5rem}td,th{border:1px solid #ccc;
padding:.25rem .6rem;text-align:right}th{background:#f3f3f3}td:first-child,th:first-child
{text-align:left}.ok{color:#087f23}.bad{color:#b00020}footer{margin-top:2rem;color:#777;
font-size:.85rem}svg text{font-size:11px}
"""


def _e(value: object) -> str:
    return html.escape(str(value))


def _num(value: float | None, fmt: str = ".2f") -> str:
    return "—" if value is None else format(value, fmt)


def _cards(alloc: Allocation) -> dict[str, dict[str, int]]:
    return {
        dev: {
            "used": alloc.cards_used[dev],
            "spare": alloc.spare_cards.get(dev, 0),
            "jobs": alloc.job_cards.get(dev, 0),
        }
        for dev in alloc.servers
    }


def _replicas(alloc: Allocation, services: Sequence[str]) -> dict[str, dict[str, int]]:
    out: dict[str, dict[str, int]] = {s: {} for s in services}
    for label, count in alloc.replicas.items():
        service = label.split("@", 1)[0]
        out.setdefault(service, {})[label] = count
    return out


def _alloc_summary(alloc: Allocation) -> dict[str, Any]:
    return {
        "feasible": True,
        "servers": dict(alloc.servers),
        "npu_share": alloc.npu_share,
        "power_w": alloc.power_w,
        "cost_per_hour": alloc.cost_usd_per_hour,
    }


def _comparison_table(rows: Sequence[tuple[str, PlanOutcome]], services: Sequence[str]) -> str:
    head = (
        "<tr><th>fleet</th><th>servers</th><th>NPU share</th><th>power (kW)</th>"
        "<th>USD/h</th><th>USD / M out tok</th><th>J / out tok</th><th>verified</th>"
        + "".join(f"<th>SLO met: {_e(s)}</th>" for s in services)
        + "</tr>"
    )
    body = []
    for name, out in rows:
        alloc = out.allocation
        if alloc is None:
            body.append(
                f"<tr><td>{_e(name)}</td><td colspan='{7 + len(services)}' class='bad'>"
                f"infeasible: {_e(out.reason)}</td></tr>"
            )
            continue
        servers = ", ".join(f"{n}× {_e(d)}" for d, n in alloc.servers.items() if n)
        ver = out.verification
        cells = "".join(
            f"<td>{_num(ver.slo_attainment.get(s) if ver else None, '.1%')}</td>" for s in services
        )
        mark = "<span class='ok'>yes</span>" if out.verified else "<span class='bad'>no</span>"
        shown = f"{name} (fleet found via {out.found_by})" if out.found_by else name
        body.append(
            f"<tr><td>{_e(shown)}</td><td>{servers}</td><td>{alloc.npu_share:.0%}</td>"
            f"<td>{alloc.power_w / 1e3:.1f}</td><td>{alloc.cost_usd_per_hour:.2f}</td>"
            f"<td>{_num(out.cost_per_million_output_tokens, '.3f')}</td>"
            f"<td>{_num(out.energy_j_per_output_token, '.3f')}</td><td>{mark}</td>{cells}</tr>"
        )
    return f"<table>{head}{''.join(body)}</table>"


def _cost_bars(rows: Sequence[tuple[str, PlanOutcome]]) -> str:
    costs = [(n, o.allocation.cost_usd_per_hour) for n, o in rows if o.allocation is not None]
    if not costs:
        return "<p>no feasible fleet</p>"
    top = max(c for _, c in costs) or 1.0
    bar_h, width = 22, 520
    parts = []
    for i, (name, cost) in enumerate(costs):
        y = i * (bar_h + 6)
        w = max(1.0, cost / top * (width - 180))
        parts.append(
            f"<text x='0' y='{y + 15}'>{_e(name)}</text>"
            f"<rect x='120' y='{y}' width='{w:.1f}' height='{bar_h}' fill='#4a78b5'/>"
            f"<text x='{126 + w:.1f}' y='{y + 15}'>{cost:.2f} USD/h</text>"
        )
    height = len(costs) * (bar_h + 6)
    return f"<svg width='{width}' height='{height}' role='img'>{''.join(parts)}</svg>"


def _pareto_svg(front: Sequence[Allocation], cap_w: float) -> str:
    if not front:
        return "<p>no feasible fleet, so no front</p>"
    w, h, pad = 520, 300, 50
    xs = [a.power_w / 1e3 for a in front]
    ys = [a.cost_usd_per_hour for a in front]
    x0, x1 = min(xs), max(max(xs), min(xs) + 1e-9)
    y0, y1 = min(ys), max(max(ys), min(ys) + 1e-9)

    def px(x: float) -> float:
        return pad + (x - x0) / (x1 - x0 or 1) * (w - 2 * pad)

    def py(y: float) -> float:
        return h - pad - (y - y0) / (y1 - y0 or 1) * (h - 2 * pad)

    points = " ".join(f"{px(x):.1f},{py(y):.1f}" for x, y in zip(xs, ys, strict=True))
    dots = "".join(
        f"<circle cx='{px(x):.1f}' cy='{py(y):.1f}' r='4' fill='#b5544a'>"
        f"<title>{x:.1f} kW, {y:.2f} USD/h, NPU {a.npu_share:.0%}</title></circle>"
        for x, y, a in zip(xs, ys, front, strict=True)
    )
    axes = (
        f"<line x1='{pad}' y1='{h - pad}' x2='{w - pad}' y2='{h - pad}' stroke='#444'/>"
        f"<line x1='{pad}' y1='{pad}' x2='{pad}' y2='{h - pad}' stroke='#444'/>"
        f"<text x='{w / 2 - 40}' y='{h - 10}'>power (kW)</text>"
        f"<text x='5' y='{pad - 10}'>cost (USD/h)</text>"
        f"<text x='{pad}' y='{h - pad + 15}'>{x0:.1f}</text>"
        f"<text x='{w - pad - 20}' y='{h - pad + 15}'>{x1:.1f}</text>"
        f"<text x='5' y='{h - pad}'>{y0:.1f}</text><text x='5' y='{pad + 10}'>{y1:.1f}</text>"
    )
    line = f"<polyline points='{points}' fill='none' stroke='#b5544a'/>"
    note = f"<text x='{pad + 10}' y='{pad}'>building cap {cap_w / 1e3:.0f} kW</text>"
    return f"<svg width='{w}' height='{h}' role='img'>{axes}{line}{dots}{note}</svg>"


def _pareto_table(front: Sequence[Allocation]) -> str:
    rows = "".join(
        f"<tr><td>{a.power_w / 1e3:.1f}</td><td>{a.cost_usd_per_hour:.2f}</td>"
        f"<td>{a.npu_share:.0%}</td><td>"
        + ", ".join(f"{n}× {_e(d)}" for d, n in a.servers.items() if n)
        + "</td></tr>"
        for a in front
    )
    return (
        "<table><tr><th>power (kW)</th><th>USD/h</th><th>NPU share</th><th>servers</th></tr>"
        f"{rows}</table>"
    )


def _sensitivity_table(cases: Sequence[Mapping[str, Any]]) -> str:
    rows = []
    for c in cases:
        if not c["feasible"]:
            rows.append(
                f"<tr><td>{_e(c['name'])}</td><td>{c['power_cap_w'] / 1e3:.1f}</td>"
                "<td colspan='4' class='bad'>infeasible</td></tr>"
            )
            continue
        servers = ", ".join(f"{n}× {_e(d)}" for d, n in c["servers"].items() if n)
        rows.append(
            f"<tr><td>{_e(c['name'])}</td><td>{c['power_cap_w'] / 1e3:.1f}</td>"
            f"<td>{servers}</td><td>{c['npu_share']:.0%}</td><td>{c['power_w'] / 1e3:.1f}</td>"
            f"<td>{c['cost_per_hour']:.2f}</td></tr>"
        )
    return (
        "<table><tr><th>case</th><th>cap (kW)</th><th>servers</th><th>NPU share</th>"
        f"<th>power (kW)</th><th>USD/h</th></tr>{''.join(rows)}</table>"
    )


def _replica_table(replicas: Mapping[str, Mapping[str, int]]) -> str:
    rows = "".join(
        f"<tr><td>{_e(svc)}</td><td>{_e(label)}</td><td>{n}</td></tr>"
        for svc, by_label in replicas.items()
        for label, n in by_label.items()
    )
    return f"<table><tr><th>service</th><th>candidate</th><th>replicas</th></tr>{rows}</table>"


def _candidate_table(cands: Sequence[Mapping[str, Any]], source: str) -> str:
    rows = "".join(
        f"<tr><td>{_e(c['label'])}</td><td>{_e(c['cards'])}</td>"
        f"<td>{c['max_rate_rps']:.2f}</td></tr>"
        for c in cands
    )
    return (
        f"<p>profile source: {_e(source or 'unspecified')}</p>"
        "<table><tr><th>candidate</th><th>cards</th><th>max rate within SLO (req/s)</th></tr>"
        f"{rows}</table>"
    )


def _traffic_table(traffic: Mapping[str, Mapping[str, Any]]) -> str:
    rows = "".join(
        f"<tr><td>{_e(name)}</td><td>{t['rate_rps']:.2f}</td><td>{t['mean_input_tokens']:.0f}</td>"
        f"<td>{t['mean_output_tokens']:.0f}</td><td>{t['p90_input_tokens']:.0f}</td>"
        f"<td>{t['num_requests']}</td></tr>"
        for name, t in traffic.items()
    )
    return (
        "<table><tr><th>service</th><th>rate (req/s)</th><th>mean in</th><th>mean out</th>"
        f"<th>p90 in</th><th>requests</th></tr>{rows}</table>"
    )


def _predicted_table(result: PlanResult) -> str:
    out = result.plan
    alloc = out.allocation
    if alloc is None:
        return "<p>no fleet</p>"
    ver = out.verification
    rows = []
    for svc in result.spec.services:
        got = ver.slo_attainment.get(svc.name) if ver else None
        ok = got is not None and got >= svc.slo.attainment_fraction
        rows.append(
            f"<tr><td>{_e(svc.name)}</td><td>{out.required_rps[svc.name]:.1f}</td>"
            f"<td>{out.headroom[svc.name]:.0%}</td><td>{alloc.capacity_rps[svc.name]:.1f}</td>"
            f"<td>{svc.slo.attainment_fraction:.0%}</td>"
            f"<td class='{'ok' if ok else 'bad'}'>{_num(got, '.1%')}</td></tr>"
        )
    notes = "".join(f"<li>{_e(n)}</li>" for n in (ver.notes if ver else ()))
    return (
        "<table><tr><th>service</th><th>required req/s</th><th>headroom</th>"
        "<th>planned capacity req/s</th><th>SLO target</th><th>simulated attainment</th></tr>"
        f"{''.join(rows)}</table><ul>{notes}</ul>"
    )
