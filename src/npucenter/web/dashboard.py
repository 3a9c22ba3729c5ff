"""The dashboard page: fleet, replicas, tenants' usage and two charts, rendered on the server.

Read-only. Clients on loopback see it directly; others must give the admin key as the HTTP
Basic password (``curl -u :$KEY``), so a center listening on a public address does not leak
its tenants' usage.
"""

from __future__ import annotations

import base64
import itertools
import time
from importlib import resources
from typing import Any

import jinja2
from fastapi import FastAPI, Request
from fastapi.responses import HTMLResponse, Response

from npucenter.errors import NpuCenterError
from npucenter.fleet import Fleet
from npucenter.gateway.app import Gateway
from npucenter.metering.ledger import UsageTotals
from npucenter.web.charts import bar_chart, line_chart

__all__ = ["install_dashboard", "render_dashboard"]

_LOOPBACK = ("127.0.0.1", "::1", "localhost")
_env = jinja2.Environment(autoescape=True, undefined=jinja2.StrictUndefined)
_template = _env.from_string(
    resources.files("npucenter.web").joinpath("templates/dashboard.html").read_text()
)


def render_dashboard(gateway: Gateway, fleet: Fleet, *, refresh_s: int = 5) -> str:
    """The HTML of the dashboard now."""
    now_s = gateway.pool.now_s()
    replicas: list[dict[str, Any]] = [
        {
            "id": r.replica_id,
            "model": r.endpoint.model_id,
            "device": r.endpoint.device_id,
            "tp": r.endpoint.tp,
            "up": r.is_up(now_s),
            "inflight": r.inflight,
            "slots": r.endpoint.max_inflight,
            "kv": r.kv_usage_fraction,
            "power_w": r.meter.power_w if r.inflight else r.idle_power_w,
            "served": r.num_served,
            "failures": r.num_failures,
        }
        for r in sorted(gateway.pool.replicas(), key=lambda r: r.replica_id)
    ]
    totals = UsageTotals()
    by_tenant: dict[str, int] = {}
    tenants = []
    for (tenant, model), usage in sorted(gateway.usage_totals.items()):
        totals = _add(totals, usage)
        by_tenant[tenant] = by_tenant.get(tenant, 0) + usage.total_tokens
        view = gateway.budgets.view(tenant)
        limit = view.tokens_per_s if view is not None else None
        tenants.append(
            {
                "tenant": tenant,
                "model": model,
                "u": usage,
                "limit": f"{limit:,.4g}" if limit else "—",
            }
        )
    history = list(gateway.history)
    rate = [
        (b[0], max(0, b[2] - a[2]) / max(1e-9, b[0] - a[0])) for a, b in itertools.pairwise(history)
    ]
    tariff = fleet.tariff_usd_per_device_hour
    servers = [
        {
            "device_id": g.device_id,
            "kind": _kind(fleet, g.device_id, gateway),
            "num_servers": g.num_servers,
            "cards_per_server": g.cards_per_server,
            "tariff": f"{tariff[g.device_id]:g}" if g.device_id in tariff else "—",
        }
        for g in fleet.servers
    ]
    return _template.render(
        fleet=fleet,
        refresh_s=refresh_s,
        uptime=_duration(time.time() - gateway.started_wall_s),
        totals=totals,
        queued=gateway.dispatcher.queued(),
        servers=servers,
        replicas=replicas,
        tenants=tenants,
        tenant_chart=bar_chart(sorted(by_tenant.items(), key=lambda kv: -kv[1])[:12], unit="tok"),
        throughput_chart=line_chart(rate[-300:], unit="tok/s"),
        power_chart=bar_chart([(r["id"], float(r["power_w"])) for r in replicas], unit="W"),
    )


def install_dashboard(app: FastAPI, gateway: Gateway, fleet: Fleet) -> None:
    """Add ``GET /`` (the dashboard) to a FastAPI app."""

    @app.get("/", include_in_schema=False)
    def dashboard(request: Request) -> Response:
        if not _allowed(request, gateway):
            return Response(
                "the dashboard needs the admin key as the Basic-auth password\n",
                status_code=401,
                headers={"www-authenticate": 'Basic realm="npucenter"'},
            )
        return HTMLResponse(render_dashboard(gateway, fleet))


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


def _kind(fleet: Fleet, device_id: str, gateway: Gateway) -> str:
    for r in gateway.pool.replicas():
        if r.endpoint.device_id == device_id:
            return r.endpoint.device_kind
    return "—"


def _add(a: UsageTotals, b: UsageTotals) -> UsageTotals:
    return UsageTotals(
        num_requests=a.num_requests + b.num_requests,
        num_failed=a.num_failed + b.num_failed,
        input_tokens=a.input_tokens + b.input_tokens,
        output_tokens=a.output_tokens + b.output_tokens,
        device_s=a.device_s + b.device_s,
        energy_j=a.energy_j + b.energy_j,
        cost_usd=a.cost_usd + b.cost_usd,
    )


def _duration(seconds: float) -> str:
    seconds = int(seconds)
    h, rem = divmod(seconds, 3600)
    m, s = divmod(rem, 60)
    return f"{h}h {m:02d}m" if h else f"{m}m {s:02d}s"
