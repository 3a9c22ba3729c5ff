"""Per-app services (database, clock, admission lock) and the per-request caller context.

``ControlPlane`` is what the app holds in ``app.state.control``; ``RequestContext`` is what a
route receives: the caller (admin or one tenant) and ``tx()`` for one transaction. A tenant
caller's reads and writes are scoped to its own tenant id.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Awaitable, Callable, Iterator
from contextlib import AbstractContextManager, contextmanager
from dataclasses import dataclass, field
from typing import Any

from fastapi import Depends, Request

from npucenter.errors import AuthenticationError, InvalidConfigError, PermissionDeniedError
from npucenter.settings import Settings
from npucenter.store.db import Database
from npucenter.store.models import Tenant
from npucenter.store.rates import CardRates
from npucenter.store.repository import Principal, Repository

__all__ = ["ControlPlane", "RequestContext", "admin_context", "caller_context"]


@dataclass(kw_only=True)
class ControlPlane:
    """The services one app holds: settings, the database, the wall clock and the cycle lock.

    ``now_s`` returns epoch seconds; tests inject a fake. ``admission_lock`` serialises
    admission cycles within the process (one server process per database). ``rates`` prices
    held cards on the ledger (modelled power, the center's tariff). ``on_change`` callables
    run after every admission cycle that follows a change (the job runner wakes up on them);
    they must be quick and thread-safe.
    """

    settings: Settings
    db: Database
    now_s: Callable[[], float] = time.time
    admission_lock: threading.Lock = field(default_factory=threading.Lock)
    rates: CardRates = field(default_factory=CardRates)
    on_change: list[Callable[[], None]] = field(default_factory=list)
    # Awaited before the leader's loops (job runner) start: several processes on one
    # PostgreSQL elect one leader (live/leader.py); None: this process leads.
    until_leader: Callable[[], Awaitable[None]] | None = None
    # (tenant, deployment name, model) -> its SLO attainment over a recent window, set where a
    # gateway runs in this process (live/attainment.py); None: the API alone
    slo_attainment: Callable[[str, str, str], dict[str, Any] | None] | None = None
    # store replica id -> requests in flight on its engine, where the reconciler runs in this
    # process (live/fleet.py): a scale-down removes the replicas with the fewest; None: by index
    replica_inflight: Callable[[], dict[int, int]] | None = None

    @contextmanager
    def tx(self) -> Iterator[Repository]:
        """One transaction as a Repository."""
        with self.db.session() as session:
            yield Repository(session, self.now_s, self.rates)

    def notify_change(self) -> None:
        """Tell the ``on_change`` listeners that jobs or capacity changed."""
        for listener in list(self.on_change):
            listener()

    def authenticate(self, secret: str, route: str = "") -> Principal:
        """The principal of an API key secret, for ``route`` ("METHOD /path", when known).

        A job's own key (scope ``job``, given to it by the job runner for its run) calls /v1
        (the gateway resolves keys itself) and ``PUT /api/jobs/<its id>/result``, nothing else.
        """
        with self.tx() as repo:
            principal = repo.lookup_key(secret)
        if principal.job_id is not None and route != f"PUT /api/jobs/{principal.job_id}/result":
            raise PermissionDeniedError(
                f"a job's own key (job {principal.job_id}) calls /v1 and uploads its job's result "
                "only",
                hint="use a key of the tenant (`npucenter key create`) for the control plane",
            )
        return principal


@dataclass(frozen=True, slots=True, kw_only=True)
class RequestContext:
    """The caller of one request and its services."""

    control: ControlPlane
    principal: Principal

    @property
    def is_admin(self) -> bool:
        """Whether the caller is an admin."""
        return self.principal.is_admin

    @property
    def scope(self) -> int | None:
        """The tenant id reads and writes are limited to (None for admins)."""
        return None if self.principal.is_admin else self.principal.tenant_id

    def tx(self) -> AbstractContextManager[Repository]:
        """One transaction as a Repository."""
        return self.control.tx()

    def owner(self, repo: Repository, tenant_ref: str | None) -> Tenant:
        """The tenant a new object belongs to: the caller's own, or (admins) the one named."""
        if self.is_admin:
            if tenant_ref is None:
                raise InvalidConfigError(
                    "tenant", None, "an admin must name the tenant", hint="pass --tenant NAME"
                )
            return repo.get_tenant(tenant_ref)
        assert self.principal.tenant_id is not None
        if tenant_ref is not None:
            return repo.get_tenant(tenant_ref, tenant_id=self.principal.tenant_id)
        return repo.get_tenant(self.principal.tenant_id)


def _control(request: Request) -> ControlPlane:
    control: ControlPlane = request.app.state.control
    return control


def caller_context(request: Request, control: ControlPlane = Depends(_control)) -> RequestContext:
    """Dependency: authenticate ``Authorization: Bearer <key>`` (or ``X-API-Key``).

    The front door (:mod:`npucenter.api.guard`) has usually done it before the body was read.
    """
    checked = getattr(request.state, "principal", None)
    if checked is not None:
        return RequestContext(control=control, principal=checked)
    header = request.headers.get("authorization", "")
    secret = header[7:].strip() if header.lower().startswith("bearer ") else ""
    secret = secret or request.headers.get("x-api-key", "").strip()
    if not secret:
        raise AuthenticationError(
            "no API key given",
            hint="send 'Authorization: Bearer <key>' (the CLI reads NPUCENTER_API_KEY)",
        )
    return RequestContext(control=control, principal=control.authenticate(secret))


def admin_context(ctx: RequestContext = Depends(caller_context)) -> RequestContext:
    """Dependency: the caller must be an admin."""
    if not ctx.is_admin:
        raise PermissionDeniedError(
            "this needs an admin key",
            hint="ask the operator; tenants manage only their own objects",
        )
    return ctx
