"""`npucenter up`'s serving half: the gateway wired to the control plane, and the fleet it serves.

:mod:`npucenter.live.extension` mounts what this builds into the server app. It wires the
gateway to the control plane (API keys and tenants' token rates through the store, usage rows
into the store's ledger) and picks the fleet (the fleet file, else the default virtual fleet);
:mod:`npucenter.live.fleet` registers that fleet in the store at start and serves its
deployments.

Settings (:mod:`npucenter.settings`; ``npucenter up`` flags or the environment): ``fleet_path``
(``NPUCENTER_FLEET``, a fleet YAML; default :func:`npucenter.fleet.default_fleet`),
``routing_policy`` (``NPUCENTER_ROUTING_POLICY``, default ``prefix-affinity``), ``launch_fleet``
(``NPUCENTER_VIRTUAL_FLEET=0`` registers nothing and launches no replicas: an external executor
serves the deployments).
"""

from __future__ import annotations

import logging
from dataclasses import replace

from npucenter.api.context import ControlPlane
from npucenter.artifacts import artifact_store
from npucenter.clock import SystemClock
from npucenter.files.fleet import load_fleet
from npucenter.fleet import Fleet, default_fleet
from npucenter.gateway.adapters import (
    AdapterLoader,
    AdapterTarget,
    engine_served_name,
    split_model_name,
)
from npucenter.gateway.app import Gateway, GatewayConfig
from npucenter.gateway.auth import CachingKeyResolver, Principal, TenantLimits
from npucenter.gateway.lease import LeaseBook
from npucenter.gateway.routing import make_router
from npucenter.gateway.usage import OPERATOR_TENANT, StoreLedger
from npucenter.live.leader import DatabaseBuckets, WallClock
from npucenter.metering.ledger import PriceBook
from npucenter.settings import ENV_FLEET, ENV_ROUTING_POLICY, ENV_VIRTUAL_FLEET, Settings
from npucenter.store.coordination import is_postgres

__all__ = [
    "ENV_FLEET",
    "ENV_ROUTING_POLICY",
    "ENV_VIRTUAL_FLEET",
    "OPERATOR_TENANT",
    "StoreAdapterResolver",
    "StoreKeyResolver",
    "StoreLedger",
    "build_gateway",
    "serve_adapters",
]

log = logging.getLogger(__name__)

_PRIORITY = {"production": 3, "research": 2, "education": 1, "best-effort": 0}


class StoreKeyResolver:
    """API keys and tenants' token rates from the control plane's store."""

    def __init__(self, control: ControlPlane) -> None:
        self._control = control

    def resolve(self, api_key: str) -> Principal:
        """The gateway principal of ``api_key`` (raises AuthenticationError)."""
        with self._control.tx() as repo:
            found: Principal = repo.lookup_key(api_key)
            quotas = repo.tenant_quotas(found.tenant_id) if found.tenant_id is not None else []
        rates = [q.tokens_per_s for q in quotas if q.tokens_per_s is not None]
        priority = max((_PRIORITY.get(q.priority_class, 0) for q in quotas), default=0)
        return replace(
            found,
            tenant=found.tenant or OPERATOR_TENANT,
            scopes=found.scopes | {"inference"},
            priority=priority,
            limits=TenantLimits(tokens_per_s=min(rates) if rates else None),
        )


def build_gateway(control: ControlPlane, settings: Settings | None = None) -> tuple[Gateway, Fleet]:
    """The gateway of the embedded center, wired to ``control``'s store, and the fleet to run.

    ``settings`` (default: from the environment) name the fleet file and the routing policy.
    """
    settings = Settings.from_env() if settings is None else settings
    fleet = load_fleet(settings.fleet_path) if settings.fleet_path else default_fleet()
    clock = SystemClock()
    # Usage journaled before answers go out, replayed here if a killed process left some.
    ledger = StoreLedger(control, journal_dir=settings.data_dir / "usage-journal")
    ledger.recover()
    gateway = Gateway(
        keys=CachingKeyResolver(StoreKeyResolver(control), clock=clock),
        ledger=ledger,
        router=make_router(settings.routing_policy, clock),
        prices=PriceBook(usd_per_device_hour=dict(fleet.tariff_usd_per_device_hour)),
        config=GatewayConfig(cors_origins=settings.cors_origins),
        clock=clock,
    )
    if is_postgres(control.db.url):  # several gateways may share it: lease slices of buckets
        gateway.budgets.leases = LeaseBook(DatabaseBuckets(control.db), WallClock())
    serve_adapters(gateway, control, fleet)
    return gateway, fleet


class StoreAdapterResolver:
    """The caller's adapters from the store; their weights from the artifact store."""

    def __init__(self, control: ControlPlane) -> None:
        self._control = control
        self._store = artifact_store(control.settings)

    def resolve(self, principal: Principal, requested: str) -> AdapterTarget | None:
        if principal.tenant_id is None:
            return None
        base, name = split_model_name(requested)
        with self._control.tx() as repo:
            adapter = repo.find_adapter(name, tenant_id=principal.tenant_id)
            if adapter is None or (base is not None and base != adapter.base_model):
                return None
            location = repo.adapter_artifact(adapter).location
            target = AdapterTarget(
                tenant_id=adapter.tenant_id,
                name=adapter.name,
                base_model=adapter.base_model,
                path=str(self._store.materialize(location)),
            )
        return target

    def names(self, principal: Principal) -> list[tuple[str, str]]:
        if principal.tenant_id is None:
            return []
        with self._control.tx() as repo:
            return [
                (a.name, a.base_model) for a in repo.list_adapters(tenant_id=principal.tenant_id)
            ]


def serve_adapters(gateway: Gateway, control: ControlPlane, fleet: Fleet) -> None:
    """Serve tenants' LoRA adapters on their base models' replicas (gateway/adapters.py)."""
    from npucenter.api.routes.artifacts import ADAPTER_LISTENERS
    from npucenter.engines import engine_choice

    engines: dict[str, tuple[str, bool]] = {}
    for group in fleet.services:
        choice = engine_choice({"name": group.engine, **dict(group.engine_options)})
        lora = choice.name == "virtual" or bool(getattr(choice, "enable_lora", False))
        for name in (group.model_id, group.alias):
            if name:
                engines.setdefault(name, (choice.name, lora))
    gateway.adapters = StoreAdapterResolver(control)
    gateway.adapter_loader = AdapterLoader(lambda model: engines.get(model, ("virtual", True)))

    def unload(tenant_id: int, name: str) -> None:
        gateway.adapter_loader.unload_soon(
            gateway.control_client(), engine_served_name(tenant_id, name)
        )

    ADAPTER_LISTENERS.append(unload)
