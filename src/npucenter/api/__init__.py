"""The FastAPI control-plane API and the composition root of the edges.

``create_app(settings)`` builds the app; routers live in :mod:`npucenter.api.routes`; errors
are rendered in one place, :mod:`npucenter.api.errors`.
"""

from npucenter.api.app import LifespanHook, add_lifespan_hook, create_app
from npucenter.api.context import ControlPlane, RequestContext

__all__ = ["ControlPlane", "LifespanHook", "RequestContext", "add_lifespan_hook", "create_app"]
