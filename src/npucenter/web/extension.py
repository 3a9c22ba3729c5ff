"""The ``gateway`` server extension: what `npucenter up` adds to the control-plane app.

The gateway at ``/v1`` (same port), its Prometheus ``/metrics``, the dashboard at ``/`` and the
engines of the store's deployments (the fleet's and tenants'; started and stopped with the server).
"""

from __future__ import annotations

from fastapi import FastAPI
from fastapi.responses import Response

from npucenter.api.app import SERVER_EXTENSIONS, add_lifespan_hook
from npucenter.gateway.metrics import CONTENT_TYPE
from npucenter.gateway.server import build_gateway
from npucenter.live.fleet import serve_fleet
from npucenter.settings import Settings
from npucenter.web.dashboard import install_dashboard
from npucenter.web.series import LiveSeries, sample_forever

__all__ = ["install_serving"]


def install_serving(app: FastAPI, settings: Settings) -> None:
    """Mount the gateway, ``/metrics`` and the dashboard on ``app``; run the fleet with it."""
    gateway, fleet = build_gateway(app.state.control, settings)
    app.state.gateway = gateway
    app.state.fleet = fleet
    app.mount("/v1", gateway)

    @app.get("/metrics", include_in_schema=False)
    def metrics() -> Response:
        return Response(gateway.metrics.render(), media_type=CONTENT_TYPE)

    series = LiveSeries()  # the dashboard's charts: the gateway's counters, sampled every second
    app.state.dashboard_series = series
    install_dashboard(app, gateway, fleet, series=series)
    launch = settings.launch_fleet
    add_lifespan_hook(
        app, lambda app_: serve_fleet(gateway, fleet, launch=launch, control=app_.state.control)
    )
    add_lifespan_hook(app, lambda _app: sample_forever(series, gateway))


if "gateway" not in SERVER_EXTENSIONS:
    SERVER_EXTENSIONS.add("gateway", install_serving)
