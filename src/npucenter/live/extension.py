"""The ``gateway`` server extension: what `npucenter up` adds to the control-plane app.

The gateway at ``/v1`` (same port), its Prometheus ``/metrics``, the dashboard at ``/`` and the
engines of the store's deployments (the fleet's and tenants'; started and stopped with the server).
"""

from __future__ import annotations

from typing import Any

from fastapi import Depends, FastAPI
from fastapi.responses import Response

from npucenter.api.app import SERVER_EXTENSIONS, add_lifespan_hook
from npucenter.api.context import RequestContext, caller_context
from npucenter.executors import executor_for
from npucenter.gateway.fastpath import GatewayFastPath
from npucenter.gateway.metrics import CONTENT_TYPE
from npucenter.live.attainment import install_slo_attainment, sample_slo_forever
from npucenter.live.fleet import serve_fleet
from npucenter.live.gateway import build_gateway
from npucenter.live.leader import Leadership, share_replicas
from npucenter.settings import Settings
from npucenter.web.console import install_console
from npucenter.web.dashboard import install_dashboard
from npucenter.web.series import LiveSeries, sample_forever

__all__ = ["install_serving"]


def install_serving(app: FastAPI, settings: Settings) -> None:
    """Mount the gateway, ``/metrics`` and the dashboard on ``app``; run the fleet with it."""
    gateway, fleet = build_gateway(app.state.control, settings)
    app.state.gateway = gateway
    app.state.fleet = fleet
    app.mount("/v1", gateway)
    app.add_middleware(GatewayFastPath, gateway=gateway)  # completions skip the API's routing

    @app.get("/metrics", include_in_schema=False)
    def metrics() -> Response:
        return Response(gateway.metrics.render(), media_type=CONTENT_TYPE)

    @app.get("/api/deployments/{dep_id}/engines", tags=["deployments"])
    def deployment_engines(
        dep_id: int, ctx: RequestContext = Depends(caller_context)
    ) -> list[dict[str, Any]]:
        """The engines of a deployment's replicas: state, engine, failure and log tail."""
        with ctx.tx() as repo:  # 404 unless the caller may see it
            repo.get_deployment(dep_id, tenant_id=ctx.scope)
        reconciler = getattr(gateway, "reconciler", None)
        if reconciler is None:
            return []
        return [e for e in reconciler.engine_states() if e["deployment_id"] == dep_id]

    app.state.deployment_engines = deployment_engines  # the console's engine logs page calls it

    # deployments' SLO attainment over a recent window, in GET /api/deployments[/ID]
    window = install_slo_attainment(app.state.control, gateway, fleet)
    add_lifespan_hook(app, lambda _app: sample_slo_forever(window))

    series = LiveSeries()  # the dashboard's charts: the gateway's counters, sampled every second
    app.state.dashboard_series = series
    install_dashboard(app, gateway, fleet, series=series)
    install_console(app, public_results="results" in settings.open_endpoints)
    launch = settings.launch_fleet
    # Several processes on one PostgreSQL: one leads (engines, admission, jobs), the others serve
    leadership = Leadership(app.state.control.db)
    app.state.leadership = leadership
    if leadership.shared:
        app.state.control.until_leader = leadership.until_leader
    add_lifespan_hook(
        app,
        lambda app_: serve_fleet(
            gateway,
            fleet,
            launch=launch,
            control=app_.state.control,
            data_dir=settings.data_dir,
            executor=executor_for(settings),  # NPUCENTER_EXECUTOR: local (default) or ray
            leadership=leadership,
        ),
    )
    add_lifespan_hook(app, lambda _app: share_replicas(gateway, leadership))
    add_lifespan_hook(app, lambda _app: sample_forever(series, gateway))


if "gateway" not in SERVER_EXTENSIONS:
    SERVER_EXTENSIONS.add("gateway", install_serving)
