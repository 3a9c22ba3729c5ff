"""The dashboard page: fleet, replicas, tenants' usage and live charts, rendered on the server.

Read-only, no script: the page reloads itself every few seconds (``?refresh=N``, 0 pauses), and
a Content-Security-Policy forbids scripts outright, so a tenant's name can never run as code.
Clients on loopback see it directly; others (a reverse proxy's ``X-Forwarded-For`` included)
must give the admin key as the HTTP Basic password (``curl -u :$KEY``), so a center listening
on a public address does not leak its tenants' usage. Rendering runs on the event loop, the
thread that changes the gateway's state, so it never reads a half-updated dict.
"""

from __future__ import annotations

import asyncio
import base64
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from importlib import resources
from typing import Any

import jinja2
from fastapi import FastAPI, Request
from fastapi.responses import HTMLResponse, Response

from npucenter.errors import NpuCenterError
from npucenter.fleet import Fleet
from npucenter.gateway.app import Gateway
from npucenter.metering.ledger import UsageTotals
from npucenter.render.svg import Series, bar_chart, line_chart
from npucenter.web.series import (
    LiveSeries,
    Sample,
    Window,
    curve_of,
    histogram_quantile,
    window_of,
)

__all__ = ["DEFAULT_REFRESH_S", "install_dashboard", "render_dashboard", "replica_rows"]

DEFAULT_REFRESH_S = 5
_MAX_REFRESH_S = 3600
_CHART_S = 600.0  # the charts show the last ten minutes
_CHART_POINTS = 150  # at most, per line (a chart is a few hundred pixels wide)
_LOOPBACK = ("127.0.0.1", "::1", "localhost")
_CSP = (
    "default-src 'none'; style-src 'unsafe-inline'; img-src 'self' data:; "
    "base-uri 'none'; form-action 'self'; frame-ancestors 'none'"
)
_env = jinja2.Environment(autoescape=True, undefined=jinja2.StrictUndefined)
_env.filters["num"] = lambda v: f"{v:,}"
_template = _env.from_string(
    resources.files("npucenter.web").joinpath("templates/dashboard.html").read_text()
)


@dataclass(frozen=True, slots=True, kw_only=True)
class _Headline:
    """The last minute in a few figures (None: nothing to say yet)."""

    requests_per_s: float | None
    output_tokens_per_s: float | None
    ttft_p95_ms: float | None
    tpot_p95_ms: float | None
    error_fraction: float | None


def render_dashboard(
    gateway: Gateway,
    fleet: Fleet,
    *,
    series: LiveSeries | None = None,
    refresh_s: int = DEFAULT_REFRESH_S,
    now_wall_s: float | None = None,
) -> str:
    """The HTML of the dashboard now.

    ``series`` holds the sampled counters the charts draw (``npucenter up`` samples every
    second); without it the charts fall back to the gateway's own request/token history.
    """
    return _render(
        _snapshot(gateway, fleet, series=series, refresh_s=refresh_s, now_wall_s=now_wall_s)
    )


def install_dashboard(
    app: FastAPI, gateway: Gateway, fleet: Fleet, *, series: LiveSeries | None = None
) -> None:
    """Add ``GET /`` (the dashboard) to a FastAPI app."""

    @app.get("/", include_in_schema=False)
    async def dashboard(request: Request) -> Response:
        if not _allowed(request, gateway):
            return Response(
                "the dashboard needs the admin key as the Basic-auth password "
                "(e.g. curl -u :$NPUCENTER_ADMIN_KEY), or a loopback client\n",
                status_code=401,
                headers={"www-authenticate": 'Basic realm="npucenter"'},
            )
        view = _snapshot(gateway, fleet, series=series, refresh_s=_refresh_s(request.query_params))
        html = await asyncio.to_thread(_render, view)  # a big page: keep the event loop free
        return HTMLResponse(
            html,
            headers={
                "content-security-policy": _CSP,
                "cache-control": "no-store",
                "x-content-type-options": "nosniff",
                "referrer-policy": "no-referrer",
            },
        )


def _snapshot(
    gateway: Gateway,
    fleet: Fleet,
    *,
    series: LiveSeries | None,
    refresh_s: int,
    now_wall_s: float | None = None,
) -> dict[str, Any]:
    """Copy what the page shows out of the live gateway (on its event loop; cheap)."""
    wall_s = time.time() if now_wall_s is None else now_wall_s
    series = series if series is not None else _series_from_history(gateway)
    replicas = replica_rows(gateway, fleet)
    tenants = _tenant_rows(gateway)
    return {
        "fleet": fleet,
        "refresh_s": refresh_s,
        "uptime": _duration(wall_s - gateway.started_wall_s),
        "updated": time.strftime("%H:%M:%S UTC", time.gmtime(wall_s)),
        "totals": _total(gateway.usage_totals.values()),
        "power_w": sum(r["power_w"] for r in replicas if r["state"] != "not running"),
        "inflight": sum(r["inflight"] for r in replicas),
        "queued": gateway.dispatcher.queued(),
        "num_up": sum(1 for r in replicas if r["state"] == "up"),
        "servers": _server_rows(fleet, replicas),
        "replicas": replicas,
        "tenants": tenants,
        "max_tenant_tokens": max((t["u"].total_tokens for t in tenants), default=0) or 1,
        "tokens_by_tenant": _tokens_by_tenant(gateway)[:12],
        "samples": series.samples(),
    }


def _render(view: dict[str, Any]) -> str:
    """The page of a snapshot (pure: any thread)."""
    samples: list[Sample] = view["samples"]
    return _template.render(
        **{k: v for k, v in view.items() if k not in ("samples", "tokens_by_tenant")},
        headline=_headline(window_of(samples, 60.0)),
        charts=_charts(samples),
        tenant_chart=bar_chart(view["tokens_by_tenant"], unit="tokens", title="Tokens by tenant"),
    )


def _allowed(request: Any, gateway: Gateway) -> bool:
    client = request.client.host if request.client else ""
    if client in _LOOPBACK:
        return True
    header = request.headers.get("authorization", "")
    if not header.lower().startswith("basic "):
        return False
    try:
        _, _, password = base64.b64decode(header[6:]).decode().partition(":")
        return gateway.keys.resolve(password).is_admin
    except (ValueError, NpuCenterError):
        return False


def _refresh_s(query: Any) -> int:
    try:
        value = int(query.get("refresh", DEFAULT_REFRESH_S))
    except ValueError:
        return DEFAULT_REFRESH_S
    return 0 if value <= 0 else min(value, _MAX_REFRESH_S)


def replica_rows(gateway: Gateway, fleet: Fleet) -> list[dict[str, Any]]:
    """One row per running replica, then the fleet's placed replicas no engine answers for."""
    now_s = gateway.pool.now_s()
    placed = {p.replica_id: p for p in fleet.replicas()}
    rows: list[dict[str, Any]] = []
    for r in sorted(gateway.pool.replicas(), key=lambda r: r.replica_id):
        up = r.is_up(now_s)
        draining = r.down_until_s == float("inf")  # scaled down, finishing its requests
        where = placed.get(r.replica_id)
        server = where.server_id if where else gateway.replica_servers.get(r.replica_id, "—")
        rows.append(
            {
                "id": r.replica_id,
                "server": server,
                "model": r.endpoint.model_id,
                "device": r.endpoint.device_id,
                "kind": r.endpoint.device_kind.upper(),
                "tp": r.endpoint.tp,
                "state": "up" if up else "draining" if draining else "cooling down",
                "detail": "" if up or draining else f"{r.down_until_s - now_s:.0f} s left",
                "inflight": r.inflight,
                "slots": r.endpoint.max_inflight,
                "waiting": gateway.dispatcher.queued(r.endpoint.model_id),
                "kv": r.kv_usage_fraction,
                "power_w": r.meter.power_w if r.inflight else r.idle_power_w,
                "served": r.num_served,
                "failures": r.num_failures,
            }
        )
    if gateway.expected_models:  # the fleet is launched: say which replicas are missing
        running = {row["id"] for row in rows}
        for p in fleet.replicas():
            if p.replica_id not in running:
                rows.append(
                    {
                        "id": p.replica_id,
                        "server": p.server_id,
                        "model": p.model_id,
                        "device": p.device_id,
                        "kind": "",
                        "tp": p.tp,
                        "state": "not running",
                        "detail": "starting, or failed to start (see the log)",
                        "inflight": 0,
                        "slots": p.max_num_seqs,
                        "waiting": gateway.dispatcher.queued(p.model_id),
                        "kv": 0.0,
                        "power_w": 0.0,
                        "served": 0,
                        "failures": 0,
                    }
                )
    return rows


def _server_rows(fleet: Fleet, replicas: list[dict[str, Any]]) -> list[dict[str, Any]]:
    by_server: dict[str, list[dict[str, Any]]] = {}
    for row in replicas:
        by_server.setdefault(row["server"], []).append(row)
    kinds = {row["device"].lower(): row["kind"] for row in replicas if row["kind"]}
    tariff = {k.lower(): v for k, v in fleet.tariff_usd_per_device_hour.items()}
    out = []
    for group in fleet.servers:
        for server_id in group.server_names():
            rows = by_server.get(server_id, [])
            num_up = sum(1 for r in rows if r["state"] == "up")
            if not rows:
                health = "idle (no replica placed)"
            elif num_up == len(rows):
                health = "healthy"
            else:
                health = f"degraded: {len(rows) - num_up} of {len(rows)} replicas not up"
            out.append(
                {
                    "id": server_id,
                    "device": group.device,
                    "kind": kinds.get(group.device.lower()) or _catalog_kind(group.device),
                    "cards": group.cards_per_server,
                    "cards_used": sum(r["tp"] for r in rows),
                    "replicas": len(rows),
                    "up": num_up,
                    "power_w": sum(r["power_w"] for r in rows),
                    "health": health,
                    "ok": bool(rows) and num_up == len(rows),
                    "tariff": f"{tariff[group.device.lower()]:g}"
                    if group.device.lower() in tariff
                    else "—",
                }
            )
    return out


def _catalog_kind(device_id: str) -> str:
    try:
        from npucenter.catalog import default_catalog

        return str(default_catalog().device(device_id).kind).upper()
    except NpuCenterError:
        return "—"


def _tenant_rows(gateway: Gateway) -> list[dict[str, Any]]:
    rows: list[dict[str, Any]] = []
    for (tenant, model), usage in gateway.usage_totals.items():
        view = gateway.budgets.view(tenant)
        limit = view.tokens_per_s if view is not None else None
        rows.append(
            {
                "tenant": tenant,
                "model": model,
                "u": usage,
                "limit": f"{limit:,.4g}" if limit else "—",
            }
        )
    rows.sort(key=lambda t: (-int(t["u"].total_tokens), str(t["tenant"]), str(t["model"])))
    return rows


def _tokens_by_tenant(gateway: Gateway) -> list[tuple[str, float]]:
    by_tenant: dict[str, int] = {}
    for (tenant, _model), usage in gateway.usage_totals.items():
        by_tenant[tenant] = by_tenant.get(tenant, 0) + usage.total_tokens
    return sorted(((t, float(n)) for t, n in by_tenant.items()), key=lambda kv: (-kv[1], kv[0]))


def _headline(window: Window | None) -> _Headline:
    if window is None:
        return _Headline(
            requests_per_s=None,
            output_tokens_per_s=None,
            ttft_p95_ms=None,
            tpot_p95_ms=None,
            error_fraction=None,
        )
    return _Headline(
        requests_per_s=window.requests_per_s,
        output_tokens_per_s=window.output_tokens_per_s,
        ttft_p95_ms=_ms(histogram_quantile(0.95, window.ttft)),
        tpot_p95_ms=_ms(histogram_quantile(0.95, window.tpot)),
        error_fraction=window.num_failed / window.num_requests if window.num_requests else None,
    )


def _charts(samples: list[Sample]) -> list[dict[str, str]]:
    span_s = min(_CHART_S, samples[-1].wall_s - samples[0].wall_s) if len(samples) > 1 else 0.0
    x_label = f"−{span_s:.0f} s" if span_s < 90 else f"−{span_s / 60:.0f} min"

    def latency(pick: str) -> list[Series]:
        return [
            Series(f"p{round(q * 100)}", _curve(samples, _quantile_ms(q, pick), trailing_s=10.0))
            for q in (0.5, 0.95)
        ]

    specs = [
        (
            "rate",
            "Request rate",
            "req/s",
            [Series("", _curve(samples, lambda w: w.requests_per_s, trailing_s=5.0))],
        ),
        (
            "throughput",
            "Output tokens per second",
            "tok/s",
            [Series("", _curve(samples, lambda w: w.output_tokens_per_s, trailing_s=5.0))],
        ),
        ("ttft", "Time to first token (streamed)", "ms", latency("ttft")),
        ("tpot", "Time per output token (streamed)", "ms", latency("tpot")),
    ]
    return [
        {
            "id": key,
            "title": title,
            "svg": line_chart(
                [Series(line.name, _last(line.points, _CHART_S)) for line in lines],
                unit=unit,
                title=title,
                x_label=x_label,
                width=460,
                height=150,
                x_ticks=False,
                x_end_label="now",
                min_distinct_x=2,
                empty_text="collecting samples…",
            ),
            "latest": _latest(lines[-1], unit),
        }
        for key, title, unit, lines in specs
    ]


def _curve(
    samples: list[Sample], value: Callable[[Window], float | None], *, trailing_s: float
) -> list[tuple[float, float | None]]:
    if not samples:
        return []
    recent = [s for s in samples if samples[-1].wall_s - s.wall_s <= _CHART_S + trailing_s]
    return curve_of(recent, value, trailing_s=trailing_s, max_points=_CHART_POINTS)


def _quantile_ms(q: float, pick: str) -> Callable[[Window], float | None]:
    def value(window: Window) -> float | None:
        return _ms(histogram_quantile(q, getattr(window, pick)))

    return value


def _series_from_history(gateway: Gateway) -> LiveSeries:
    series = LiveSeries()
    for wall_s, num_requests, output_tokens in gateway.history:
        series.add(Sample(wall_s=wall_s, num_requests=num_requests, output_tokens=output_tokens))
    return series


def _last(
    points: Sequence[tuple[float, float | None]], span_s: float
) -> list[tuple[float, float | None]]:
    if not points:
        return []
    end = points[-1][0]
    return [p for p in points if end - p[0] <= span_s]


def _latest(line: Series, unit: str) -> str:
    for _, y in reversed(line.points):
        if y is not None:
            figure = f"{y:,.3g}" if y < 1000 else f"{y:,.0f}"
            return f"{line.name} {figure} {unit}".strip()
    return "—"


def _ms(seconds: float | None) -> float | None:
    return None if seconds is None else seconds * 1000.0


def _total(usages: Any) -> UsageTotals:
    out = UsageTotals()
    for u in usages:
        out = UsageTotals(
            num_requests=out.num_requests + u.num_requests,
            num_failed=out.num_failed + u.num_failed,
            input_tokens=out.input_tokens + u.input_tokens,
            output_tokens=out.output_tokens + u.output_tokens,
            device_s=out.device_s + u.device_s,
            energy_j=out.energy_j + u.energy_j,
            cost_usd=out.cost_usd + u.cost_usd,
        )
    return out


def _duration(seconds: float) -> str:
    seconds = max(0, int(seconds))
    h, rem = divmod(seconds, 3600)
    m, s = divmod(rem, 60)
    return f"{h}h {m:02d}m" if h else f"{m}m {s:02d}s"
