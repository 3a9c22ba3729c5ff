"""`npucenter up`'s serving half: the gateway wired to the control plane, and the virtual fleet.

:mod:`npucenter.web.extension` mounts what this builds into the server app. It wires the
gateway to the control plane (API keys and tenants' token rates through the store, usage rows
into the store's ledger), launches the fleet's replicas as virtual engines with the local
process executor at start, keeps them healthy (restarting dead ones) and stops them at shutdown.

Environment (set by ``npucenter up`` flags or by hand): ``NPUCENTER_FLEET`` (a fleet YAML; default
:func:`npucenter.fleet.default_fleet`), ``NPUCENTER_ROUTING_POLICY`` (default
``prefix-affinity``), ``NPUCENTER_VIRTUAL_FLEET=0`` to launch no replicas.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
from collections.abc import AsyncIterator, Sequence
from contextlib import AbstractContextManager
from typing import Any, Protocol

from npucenter.clock import SystemClock
from npucenter.errors import NotFoundError, NpuCenterError
from npucenter.fleet import Fleet, PlacedReplica, default_fleet, load_fleet
from npucenter.gateway.app import Gateway, GatewayConfig
from npucenter.gateway.auth import CachingKeyResolver, Principal, TenantLimits
from npucenter.gateway.pool import ReplicaEndpoint
from npucenter.gateway.routing import make_router
from npucenter.metering.ledger import PriceBook, UsageRecord


class ControlPlane(Protocol):
    """The part of ``npucenter.api.context.ControlPlane`` the gateway uses: store transactions."""

    def tx(self) -> AbstractContextManager[Any]:
        """One transaction as a store Repository."""
        ...


__all__ = [
    "ENV_FLEET",
    "ENV_ROUTING_POLICY",
    "ENV_VIRTUAL_FLEET",
    "OPERATOR_TENANT",
    "ControlPlane",
    "StoreKeyResolver",
    "StoreLedger",
    "build_gateway",
    "launch_enabled",
    "replica_endpoints",
    "serve_fleet",
]

log = logging.getLogger(__name__)

ENV_FLEET = "NPUCENTER_FLEET"
ENV_ROUTING_POLICY = "NPUCENTER_ROUTING_POLICY"
ENV_VIRTUAL_FLEET = "NPUCENTER_VIRTUAL_FLEET"
#: Admin keys belong to no tenant; their usage is metered to this tenant of the center itself.
OPERATOR_TENANT = "operator"
_PRIORITY = {"production": 3, "research": 2, "education": 1, "best-effort": 0}


class StoreKeyResolver:
    """API keys and tenants' token rates from the control plane's store."""

    def __init__(self, control: ControlPlane) -> None:
        self._control = control

    def resolve(self, api_key: str) -> Principal:
        """The gateway principal of ``api_key`` (raises AuthenticationError)."""
        with self._control.tx() as repo:
            found = repo.lookup_key(api_key)
            quotas = repo.tenant_quotas(found.tenant_id) if found.tenant_id is not None else []
        rates = [q.tokens_per_s for q in quotas if q.tokens_per_s is not None]
        priority = max((_PRIORITY.get(q.priority_class, 0) for q in quotas), default=0)
        return Principal(
            key_id=f"key-{found.key_id}",
            tenant=found.tenant_name or OPERATOR_TENANT,
            scopes=frozenset({"inference", found.scope}),
            is_admin=found.is_admin,
            priority=priority,
            limits=TenantLimits(tokens_per_s=min(rates) if rates else None),
        )


class StoreLedger:
    """Usage rows into the store's append-only ledger (kind ``tokens``), one transaction a batch."""

    def __init__(self, control: ControlPlane) -> None:
        self._control = control
        self._tenant_ids: dict[str, int] = {}

    def append(self, records: Sequence[UsageRecord]) -> None:
        """Append ``records`` (admin usage goes to the ``operator`` tenant, made on first use)."""
        with self._control.tx() as repo:
            for r in records:
                repo.append_usage(
                    tenant_id=self._tenant_id(repo, r.tenant),
                    kind="tokens",
                    device_type=r.device_id or None,
                    device_seconds=r.device_s,
                    tokens_in=r.input_tokens,
                    tokens_out=r.output_tokens,
                    energy_j=r.energy_j,
                    cost_usd=r.cost_usd,
                    ref=f"{r.endpoint} {r.service} {r.status} {r.request_id} {r.key_id} {r.replica_id}",
                    at_s=r.started_at_s,
                )

    def _tenant_id(self, repo: Any, name: str) -> int:
        tenant_id = self._tenant_ids.get(name)
        if tenant_id is None:
            try:
                tenant_id = int(repo.get_tenant(name).id)
            except NotFoundError:
                if name != OPERATOR_TENANT:
                    raise
                tenant_id = int(repo.create_tenant(OPERATOR_TENANT, "company").id)
            self._tenant_ids[name] = tenant_id
        return tenant_id


def replica_endpoints(fleet: Fleet, urls: dict[str, str]) -> list[ReplicaEndpoint]:
    """Gateway endpoints of the fleet's replicas that have a URL (replica id -> base URL)."""
    out = []
    for placed in fleet.replicas():
        url = urls.get(placed.replica_id)
        if url is None:
            continue
        out.append(
            ReplicaEndpoint(
                replica_id=placed.replica_id,
                base_url=url,
                model_id=placed.model_id,
                device_id=placed.device_id,
                device_kind=_device_kind(placed.device_id),
                tp=placed.tp,
                max_inflight=placed.max_num_seqs,
                busy_power_w=_tdp_w(placed.device_id) * placed.tp,
            )
        )
    return out


def build_gateway(control: ControlPlane) -> tuple[Gateway, Fleet]:
    """The gateway of the embedded center, wired to ``control``'s store, and the fleet to run."""
    fleet = load_fleet(os.environ[ENV_FLEET]) if os.environ.get(ENV_FLEET) else default_fleet()
    clock = SystemClock()
    gateway = Gateway(
        keys=CachingKeyResolver(StoreKeyResolver(control), clock=clock),
        ledger=StoreLedger(control),
        router=make_router(os.environ.get(ENV_ROUTING_POLICY, "prefix-affinity"), clock),
        prices=PriceBook(usd_per_device_hour=dict(fleet.tariff_usd_per_device_hour)),
        config=GatewayConfig(),
        clock=clock,
    )
    return gateway, fleet


def launch_enabled() -> bool:
    """Whether ``npucenter up`` launches the virtual fleet (``NPUCENTER_VIRTUAL_FLEET`` != 0)."""
    return os.environ.get(ENV_VIRTUAL_FLEET, "1") != "0"


@contextlib.asynccontextmanager
async def serve_fleet(gateway: Gateway, fleet: Fleet, *, launch: bool) -> AsyncIterator[None]:
    """Start the gateway and (``launch``) the fleet's virtual replicas; stop both at exit."""
    await gateway.start()
    executor = None
    runner: asyncio.Task[None] | None = None
    try:
        if launch:
            from npucenter.executors.local import LocalProcessExecutor

            executor = LocalProcessExecutor()
            gateway.expected_models = set(fleet.models)
            # Replicas start in the background: the server answers at once (503 + Retry-After
            # for a model whose replicas are still starting).
            runner = asyncio.create_task(_run_fleet(executor, gateway, fleet), name="virtual-fleet")
        yield
    finally:
        if runner is not None:
            runner.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await runner
        await gateway.aclose()
        if executor is not None:
            await executor.shutdown()


async def _run_fleet(executor: Any, gateway: Gateway, fleet: Fleet) -> None:
    await _launch(executor, gateway, fleet)
    await _keep_healthy(executor, gateway, fleet)


async def _launch(executor: Any, gateway: Gateway, fleet: Fleet) -> None:
    from npucenter.engines import ReplicaSpec

    async def one(placed: PlacedReplica) -> tuple[str, str] | None:
        spec = ReplicaSpec(
            engine="virtual",
            model=placed.model_id,
            device=placed.device_id,
            tp=placed.tp,
            precision=placed.precision,
            device_indices=placed.card_ids,
            max_num_seqs=placed.max_num_seqs,
        )
        try:
            replica = await executor.start(spec, replica_id=placed.replica_id)
        except NpuCenterError as exc:
            log.error("replica %s did not start: %s", placed.replica_id, exc)
            return None
        return placed.replica_id, replica.base_url

    started = await asyncio.gather(*(one(p) for p in fleet.replicas()))
    urls = dict(s for s in started if s is not None)
    gateway.pool.set(replica_endpoints(fleet, urls))
    log.info("virtual fleet %s: %d of %d replicas ready", fleet.name, len(urls), len(started))


async def _keep_healthy(
    executor: Any, gateway: Gateway, fleet: Fleet, interval_s: float = 2.0
) -> None:
    while True:
        await asyncio.sleep(interval_s)
        try:
            restarted = await executor.restart_failed()
        except NpuCenterError as exc:
            log.warning("restarting failed replicas: %s", exc)
            continue
        if restarted:
            log.warning("restarted replicas %s", ", ".join(restarted))
            index = getattr(getattr(gateway.router, "policy", None), "index", None)
            for rid in restarted:  # a restarted engine's KV cache is empty
                if index is not None and hasattr(index, "forget"):
                    index.forget(rid)
            urls = {r.replica_id: r.base_url for r in executor.replicas()}
            gateway.pool.set(replica_endpoints(fleet, urls))


def _device_kind(device_id: str) -> str:
    try:
        from npucenter.catalog import default_catalog

        return str(default_catalog().device(device_id).kind)
    except NpuCenterError:
        return "gpu" if device_id.lower().startswith(("h1", "h2", "a1", "l4", "nvidia")) else "npu"


def _tdp_w(device_id: str) -> float:
    """The card's sourced TDP (busy-power bound until the engine reports power), else 0."""
    try:
        from npucenter.catalog import default_catalog

        return float(default_catalog().device(device_id).tdp_w or 0.0)
    except NpuCenterError:
        return 0.0
