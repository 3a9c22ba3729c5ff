"""The composition root: ``create_app(settings)`` wires the store, the routers and the handlers.

Composable: other faces add their routers (the gateway at ``/v1``, the dashboard at ``/``) and
lifespan hooks (the virtual fleet, executors) through the arguments, or later through
:func:`add_lifespan_hook`, and reach the control plane through ``app.state.control``.
"""

from __future__ import annotations

import importlib
import logging
from collections.abc import AsyncIterator, Callable, Sequence
from contextlib import AbstractAsyncContextManager, AsyncExitStack, asynccontextmanager

from fastapi import APIRouter, FastAPI

from npucenter import __version__
from npucenter.api.context import ControlPlane
from npucenter.api.errors import install_error_handlers
from npucenter.api.guard import ApiGuard
from npucenter.api.routes import ROUTERS
from npucenter.registry import Registry
from npucenter.settings import Settings
from npucenter.store import Database, upgrade
from npucenter.store.rates import CardRates

__all__ = [
    "ADMIN_KEY_RECOVERY",
    "SERVER_EXTENSIONS",
    "SERVER_EXTENSION_MODULES",
    "LifespanHook",
    "ServerExtension",
    "add_lifespan_hook",
    "build_server_app",
    "center_rates",
    "create_app",
]

log = logging.getLogger(__name__)

#: ``hook(app)`` returns an async context manager entered at start and exited at shutdown.
LifespanHook = Callable[[FastAPI], AbstractAsyncContextManager[None]]
#: ``extension(app, settings)`` adds routers, mounts and lifespan hooks to the server app.
ServerExtension = Callable[[FastAPI, Settings], None]

#: What `npucenter up` adds to the control plane (gateway at /v1, dashboard, virtual fleet).
SERVER_EXTENSIONS = Registry[ServerExtension]("server extension")
#: Modules imported by :func:`build_server_app` so that they register their extensions.
SERVER_EXTENSION_MODULES: tuple[str, ...] = ("npucenter.live.extension", "npucenter.api.runner")


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
    caller to show once; ``app.state.admin_key_notice`` says why NPUCENTER_ADMIN_KEY was not
    used (else None). A revoked NPUCENTER_ADMIN_KEY does not stop the start. ``now_s`` (epoch seconds) is injected in tests.

    Example::

        app = create_app(Settings.from_env(), routers=[gateway_router])
        uvicorn.run(app, host="127.0.0.1", port=8000)
    """
    if settings.is_sqlite:
        settings.ensure_data_dir()
    if migrate:
        upgrade(settings.database_url)
    db = Database(settings.database_url)
    control = ControlPlane(settings=settings, db=db, rates=center_rates(settings))
    if now_s is not None:
        control.now_s = now_s
    with control.tx() as repo:
        admin = repo.ensure_admin_key(settings.admin_key)
    notice = _admin_key_notice(admin.state, admin.revoked_at_s)
    if notice:
        log.warning("%s", notice)
    generated = admin.secret

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
    app.add_middleware(
        ApiGuard, authenticate=control.authenticate, open_endpoints=settings.open_endpoints
    )
    app.state.lifespan_hooks = hooks
    app.state.generated_admin_key = generated
    app.state.admin_key_notice = notice
    install_error_handlers(app)

    @app.get("/healthz", tags=["health"])
    @app.get("/health", include_in_schema=False)  # the path load balancers and GuideLLM probe
    def healthz() -> dict[str, str | None]:
        """Liveness and the schema revision (no key needed)."""
        return {"status": "ok", "version": __version__, "schema": db.revision()}

    for router in (*ROUTERS, *routers):
        app.include_router(router)
    return app


def build_server_app(settings: Settings, *, now_s: Callable[[], float] | None = None) -> FastAPI:
    """The app `npucenter up` serves: the control plane plus every registered extension."""
    for module in SERVER_EXTENSION_MODULES:
        try:
            importlib.import_module(module)
        except ImportError as exc:
            log.warning("server extension module %s not loaded: %s", module, exc)
    app = create_app(settings, now_s=now_s)
    for name, extension in SERVER_EXTENSIONS.items():
        log.info("adding server extension %s", name)
        extension(app, settings)
    return app


def center_rates(settings: Settings) -> CardRates:
    """The ledger's rates: the center's tariff from settings, else from the fleet file.

    Prices are the operator's (``NPUCENTER_TARIFF`` or the fleet file's
    ``tariff_usd_per_device_hour``), never package data; with neither, rows carry no cost.
    """
    tariff = dict(settings.tariff_usd_per_device_hour)
    if not tariff and settings.fleet_path is not None:
        from npucenter.files.fleet import load_fleet

        tariff = dict(load_fleet(settings.fleet_path).tariff_usd_per_device_hour)
    return CardRates.from_tariff(tariff)


#: How to get an admin key back without one: run where the database is (no server needed).
ADMIN_KEY_RECOVERY = "npucenter db admin-key"


def _admin_key_notice(state: str, revoked_at_s: float | None) -> str | None:
    if state == "revoked":
        return (
            f"NPUCENTER_ADMIN_KEY was revoked (at {revoked_at_s:.0f} epoch s) and does not "
            "authenticate; the center starts anyway. Create a new admin key on this machine with "
            f"`{ADMIN_KEY_RECOVERY}` (it prints the key once), then set NPUCENTER_ADMIN_KEY to it "
            "or unset it"
        )
    if state == "ignored":
        return (
            "NPUCENTER_ADMIN_KEY is ignored: this database has another admin key (the variable "
            "is only stored at first start; create more with `npucenter key create --admin`, or "
            f"locally with `{ADMIN_KEY_RECOVERY}`)"
        )
    return None


def add_lifespan_hook(app: FastAPI, hook: LifespanHook) -> None:
    """Add a start/stop hook to an app made by :func:`create_app` (before it starts)."""
    app.state.lifespan_hooks.append(hook)
