"""Routers of the control-plane API, one module per object family, all under ``/api``."""

from npucenter.api.routes import (
    admission,
    artifacts,
    deployments,
    fleet,
    jobs,
    quotas,
    tenants,
    usage,
)

__all__ = ["ROUTERS"]

ROUTERS = (
    tenants.router,
    fleet.router,
    quotas.router,
    deployments.router,
    jobs.router,
    usage.router,
    admission.router,
    artifacts.router,
)
