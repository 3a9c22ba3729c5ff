"""The composition root: ``create_app(settings)`` wires the store, the routers and the handlers.

Composable: other faces add their routers (the gateway at ``/v1``, the dashboard at ``/``) and
lifespan hooks (the virtual fleet, executors) through the arguments, or later through
:func:`add_lifespan_hook`, and reach the control plane through ``app.state.control``.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator, Callable, Sequence
from contextlib import AbstractAsyncContextManager, AsyncExitStack, asynccontextmanager

from fastapi import APIRouter, FastAPI

from npucenter import __version__
from npucenter.api.context import ControlPlane
from npucenter.api.errors import install_error_handlers
from npucenter.api.routes import ROUTERS
from npucenter.settings import Settings
from npucenter.store import Database, current_revision, upgrade

__all__ = ["LifespanHook", "add_lifespan_hook", "create_app"]

log = logging.getLogger(__name__)

#: ``hook(app)`` returns an async context manager entered at start and exited at shutdown.
LifespanHook = Callable[[FastAPI], AbstractAsyncContextManager[None]]


def create_app(
    settings: Settings,
    *,
    routers: Sequence[APIRouter] = (),
    lifespan_hooks: Sequence[LifespanHook] = (),
    now_s: Callable[[], float] | None = None,
    migrate: bool = True,
) -> FastAPI:
    """The control-plane app for ``settings``.

    Applies migrations (``migrate``) and creates the admin key at first start, before returning.
    A generated admin key is left in ``app.state.generated_admin_key`` (else None) for the
    caller to show once. ``now_s`` (epoch seconds) is injected in tests.

    Example::

        app = create_app(Settings.from_env(), routers=[gateway_router])
        uvicorn.run(app, host="127.0.0.1", port=8000)
    """
    if settings.is_sqlite:
        settings.ensure_data_dir()
    if migrate:
        upgrade(settings.database_url)
    db = Database(settings.database_url)
    control = ControlPlane(settings=settings, db=db)
    if now_s is not None:
        control.now_s = now_s
    with control.tx() as repo:
        generated = repo.ensure_admin_key(settings.admin_key)

    hooks: list[LifespanHook] = list(lifespan_hooks)

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        async with AsyncExitStack() as stack:
            for hook in app.state.lifespan_hooks:
                await stack.enter_async_context(hook(app))
            try:
                yield
            finally:
                log.info("control plane stopping")
        db.dispose()

    app = FastAPI(
        title="npucenter control plane",
        version=__version__,
        description="Fleet, tenants, quotas, deployments, jobs and usage of an NPU/GPU center.",
        lifespan=lifespan,
    )
    app.state.control = control
    app.state.lifespan_hooks = hooks
    app.state.generated_admin_key = generated
    install_error_handlers(app)

    @app.get("/healthz", tags=["health"])
    def healthz() -> dict[str, str | None]:
        """Liveness and the schema revision (no key needed)."""
        return {"status": "ok", "version": __version__, "schema": current_revision(db.url)}

    for router in (*ROUTERS, *routers):
        app.include_router(router)
    return app


def add_lifespan_hook(app: FastAPI, hook: LifespanHook) -> None:
    """Add a start/stop hook to an app made by :func:`create_app` (before it starts)."""
    app.state.lifespan_hooks.append(hook)
