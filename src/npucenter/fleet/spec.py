"""The fleet file's one format: servers, model deployments, services, SLOs and network.

Parsed from a mapping (:mod:`npucenter.files.fleet` reads the YAML file). The one fleet format: ``npucenter simulate
--fleet`` and ``npucenter up --fleet`` (through ``npucenter.files.fleet``) both read it with
:func:`fleet_spec_from_mapping`; what only the live center uses (``tariff_usd_per_device_hour``,
the center's own price list) is optional here and ignored by the simulator. See
docs/simulator.md for the format. Pure: no I/O.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from npucenter.errors import InvalidConfigError
from npucenter.fleet.adapters import AdapterMix, adapter_mix_from_mapping
from npucenter.fleet.devices import fallback_devices_from
from npucenter.fleet.jobs import JobSpec, jobs_from_list
from npucenter.fleet.tenants import tenant_quotas_from_mapping
from npucenter.policy.autoscaling import AutoscalePolicy
from npucenter.policy.quota import TenantQuota
from npucenter.workload.slo import Slo, slo_from_spec

__all__ = ["FleetDeployment", "FleetService", "FleetSpec", "ServerPool", "fleet_spec_from_mapping"]

_ROLES = ("both", "prefill", "decode")
_TOP_KEYS = {
    "adapters",
    "name",
    "description",
    "servers",
    "services",
    "slo",
    "slos",
    "routing",
    "traffic",
    "network_gb_per_s",
    "network_latency_s",
    "catalog",
    "tariff_usd_per_device_hour",
    "tenants",
    "jobs",
}
_DEPLOY_KEYS = {
    "model",
    "device",
    "precision",
    "tp",
    "replicas_per_server",
    "replicas",
    "tenant",
    "service",
    "role",
    "max_num_seqs",
    "max_num_batched_tokens",
    "block_size_tokens",
    "enable_chunked_prefill",
    "engine",
    "autoscale",
    "min_replicas",
    "max_replicas",
    "fallback_devices",
}


@dataclass(frozen=True, slots=True, kw_only=True)
class ServerPool:
    """``num_servers`` servers of ``cards_per_server`` cards of one device."""

    device: str
    num_servers: int
    cards_per_server: int

    def __post_init__(self) -> None:
        if self.num_servers < 1:
            raise InvalidConfigError("servers.count", self.num_servers, "must be >= 1")
        if self.cards_per_server < 1:
            raise InvalidConfigError("servers.cards_per_server", self.cards_per_server, "< 1")

    @property
    def num_cards(self) -> int:
        """Cards in the pool."""
        return self.num_servers * self.cards_per_server

    def server_names(self) -> tuple[str, ...]:
        """The servers' names, as the live center and admission call them: ``<device>-<n>``."""
        return tuple(f"{self.device}-{n}" for n in range(self.num_servers))


@dataclass(frozen=True, slots=True, kw_only=True)
class FleetDeployment:
    """Replicas of one model on one server pool, serving one service in one role."""

    service: str
    model: str
    device: str
    precision: str | None = None  # None: the device's default (FP8 where supported)
    tp: int = 1
    replicas_per_server: int = 1
    num_replicas: int | None = None  # total on the pool, placed by admission; None: per server
    tenant: str | None = None  # the owning tenant; None: a tenant named after the service
    role: str = "both"  # "both" | "prefill" | "decode" (disaggregated serving)
    max_num_seqs: int = 256
    max_num_batched_tokens: int = 8192
    block_size_tokens: int = 16
    enable_chunked_prefill: bool = True
    autoscale: AutoscalePolicy | None = None  # None: a fixed replica count
    # The live center's engine (name and its options, frozen to stay hashable); the simulator
    # models every replica itself and ignores it. npucenter.engines.engine_choice validates it.
    engine: str = "virtual"
    engine_options: tuple[tuple[str, Any], ...] = ()
    # Device-type fungibility: tried in order after ``device``; admission places each replica
    # on the first of them with quota and room (needs a total ``num_replicas``).
    fallback_devices: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        if self.fallback_devices:
            owner = f"service {self.service!r}"
            fallback_devices_from(
                self.device, list(self.fallback_devices), field="services.fallback_devices",
                owner=owner,
            )  # fmt: skip
            if self.num_replicas is None:
                raise InvalidConfigError(
                    "services.fallback_devices",
                    list(self.fallback_devices),
                    f"{owner}: a fungible service needs a total `replicas:` (admission places "
                    "each replica); `replicas_per_server` pins replicas to one device's servers",
                )
        if self.tp < 1:
            raise InvalidConfigError("services.tp", self.tp, "must be >= 1")
        if self.replicas_per_server < 1:
            raise InvalidConfigError("services.replicas_per_server", self.replicas_per_server, "<1")
        if self.num_replicas is not None and self.num_replicas < 1:
            raise InvalidConfigError("services.replicas", self.num_replicas, "must be >= 1")
        if self.role not in _ROLES:
            raise InvalidConfigError("services.role", self.role, f"must be one of {_ROLES}")

    @property
    def devices(self) -> tuple[str, ...]:
        """The device types it accepts, in order: ``device``, then the fallbacks."""
        return (self.device, *self.fallback_devices)


@dataclass(frozen=True, slots=True, kw_only=True)
class FleetService:
    """A named service: its model, SLO, routing policy (None: the run's) and traffic share."""

    name: str
    model: str
    slo: Slo
    routing: str | None = None
    traffic_share: float = 1.0
    adapters: AdapterMix | None = None  # the LoRA adapters its requests name (fleet/adapters.py)

    def __post_init__(self) -> None:
        if not self.traffic_share >= 0:
            raise InvalidConfigError("traffic", self.traffic_share, "shares must be >= 0")


@dataclass(frozen=True, slots=True, kw_only=True)
class FleetSpec:
    """Everything the simulator needs to build a center (see docs/simulator.md)."""

    name: str
    servers: tuple[ServerPool, ...]
    deployments: tuple[FleetDeployment, ...]
    services: tuple[FleetService, ...]
    network_gb_per_s: float = 12.5  # server-to-server KV transfer (GB/s); 100 GbE by default
    network_latency_s: float = 0.0005
    catalog_files: tuple[str, ...] = ()  # user catalog files, relative to the fleet file
    tenants: tuple[TenantQuota, ...] = ()  # explicit quotas; others: one per service, covering
    jobs: tuple[JobSpec, ...] = ()  # admitted over time beside the replicas (sim.jobs)
    # The live center's tariff (USD per device-hour, by device as the file spells it): the
    # operator's price list, never a device figure. The simulator does not read it.
    tariff_usd_per_device_hour: Mapping[str, float] = field(default_factory=dict)

    def __post_init__(self) -> None:
        for device, price in self.tariff_usd_per_device_hour.items():
            if not price >= 0:
                raise InvalidConfigError(
                    f"tariff_usd_per_device_hour.{device}", price, "must be >= 0"
                )
        if not self.servers:
            raise InvalidConfigError("servers", [], "a fleet needs at least one server group")
        if not self.network_gb_per_s > 0:
            raise InvalidConfigError("network_gb_per_s", self.network_gb_per_s, "must be > 0")
        if self.network_latency_s < 0:
            raise InvalidConfigError("network_latency_s", self.network_latency_s, "must be >= 0")
        devices = [p.device.lower() for p in self.servers]
        if len(set(devices)) != len(devices):
            raise InvalidConfigError("servers.device", devices, "list each device once")
        used: dict[str, int] = {}  # per server (replicas_per_server deployments)
        total: dict[str, int] = {}  # on the whole pool
        for dep in self.deployments:
            if dep.fallback_devices:
                self._check_fallbacks(
                    dep.devices, dep.tp, "services.fallback_devices", f"service {dep.service!r}"
                )
                continue  # its cards are checked below, over all its pools
            pool = self.pool(dep.device)
            if dep.num_replicas is None:
                used[pool.device] = used.get(pool.device, 0) + dep.tp * dep.replicas_per_server
            total[pool.device] = total.get(pool.device, 0) + dep.tp * self.num_replicas(dep)
            if used.get(pool.device, 0) > pool.cards_per_server or dep.tp > pool.cards_per_server:
                raise InvalidConfigError(
                    "services",
                    f"{dep.model} on {dep.device}",
                    f"deployments need {max(used.get(pool.device, 0), dep.tp)} cards per "
                    f"{pool.device} server but a server has {pool.cards_per_server}",
                    hint="lower tp or replicas_per_server",
                )
            if total[pool.device] > pool.num_cards:
                raise InvalidConfigError(
                    "services",
                    f"{dep.model} on {dep.device}",
                    f"deployments need {total[pool.device]} {pool.device} cards but the "
                    f"{pool.num_servers} servers have {pool.num_cards}",
                    hint="lower tp or replicas, or add servers",
                )
        for dep in self.deployments:
            if dep.fallback_devices:
                pools = [self.pool(d) for d in dep.devices]
                free = sum(max(0, p.num_cards - total.get(p.device, 0)) for p in pools)
                if dep.tp * self.num_replicas(dep) > free:
                    raise InvalidConfigError(
                        "services",
                        f"{dep.model} on {'/'.join(dep.devices)}",
                        f"service {dep.service!r} needs {dep.tp * self.num_replicas(dep)} cards "
                        f"but its device types have {free} left",
                        hint="lower tp or replicas, list more device types, or add servers",
                    )
        if len({q.tenant for q in self.tenants}) != len(self.tenants):
            raise InvalidConfigError("tenants", [q.tenant for q in self.tenants], "listed twice")
        named = {q.tenant for q in self.tenants}
        for job in self.jobs:
            if job.fallback_devices:
                self._check_fallbacks(
                    (job.device, *job.fallback_devices), None, "jobs.fallback_devices",
                    f"job {job.name!r}",
                )  # fmt: skip
            if self.pool(job.device).cards_per_server < job.num_cards:
                raise InvalidConfigError(
                    "jobs.cards", job.num_cards, f"job {job.name!r} is larger than a server"
                )
        for dep in self.deployments:
            if dep.tenant is not None and dep.tenant not in named:
                raise InvalidConfigError(
                    "services.tenant", dep.tenant, f"not in tenants {sorted(named)}"
                )
        names = [s.name for s in self.services]
        for dep in self.deployments:
            if dep.service not in names:
                raise InvalidConfigError("services.service", dep.service, "has no service entry")
        for svc in self.services:
            roles = {d.role for d in self.deployments if d.service == svc.name}
            if not roles:
                raise InvalidConfigError("service", svc.name, "has no deployment")
            if ("prefill" in roles) != ("decode" in roles):
                raise InvalidConfigError(
                    "services.role",
                    sorted(roles),
                    f"service {svc.name!r} has 'prefill' deployments only with 'decode' ones "
                    "(disaggregated; 'both' ones may serve beside them)",
                )

    def pool(self, device: str, *, field: str = "services.device") -> ServerPool:
        """The server pool of ``device`` (case-insensitive); ``field`` names it in the error."""
        for pool in self.servers:
            if pool.device.lower() == device.lower():
                return pool
        raise InvalidConfigError(
            field, device, f"no server group; have {[p.device for p in self.servers]}"
        )

    def _check_fallbacks(
        self, devices: Sequence[str], tp: int | None, field: str, owner: str
    ) -> None:
        """Each fallback device type of ``owner`` has a server group whose servers hold ``tp``."""
        have = [p.device for p in self.servers]
        for device in devices[1:]:
            if device.lower() not in {d.lower() for d in have}:
                raise InvalidConfigError(
                    field, device, f"{owner}: no server group of that device type; have {have}"
                )
            pool = self.pool(device, field=field)
            if tp is not None and tp > pool.cards_per_server:
                raise InvalidConfigError(
                    field,
                    device,
                    f"{owner}: tp={tp} is larger than a {pool.device} server "
                    f"({pool.cards_per_server} cards)",
                    hint="drop that device type from the list, or lower tp",
                )

    def num_replicas(self, dep: FleetDeployment) -> int:
        """How many replicas ``dep`` has on its whole pool."""
        if dep.num_replicas is not None:
            return dep.num_replicas
        return dep.replicas_per_server * self.pool(dep.device).num_servers

    def service(self, name: str) -> FleetService:
        """The service called ``name``."""
        for svc in self.services:
            if svc.name == name:
                return svc
        raise InvalidConfigError("service", name, f"not in {[s.name for s in self.services]}")


def fleet_spec_from_mapping(
    data: Mapping[str, Any], *, default_slo: str = "none", require_services: bool = True
) -> FleetSpec:
    """Parse a fleet mapping (see docs/simulator.md); errors name the offending key.

    ``require_services=False`` accepts a fleet of servers only (the live center runs jobs and
    tenants' deployments on it; a simulation needs services).
    """
    if not isinstance(data, Mapping):
        raise InvalidConfigError("fleet", type(data).__name__, "must be a mapping")
    unknown = set(data) - _TOP_KEYS
    if unknown:
        raise InvalidConfigError(
            "fleet", sorted(unknown), f"unknown keys; known: {sorted(_TOP_KEYS)}"
        )
    try:
        servers = tuple(_server(s) for s in _list(data, "servers"))
        deployments = tuple(_deployment(d) for d in _list(data, "services"))
        slos = _mapping(data, "slos")
        routing = _mapping(data, "routing")
        traffic = _mapping(data, "traffic")
        adapters = _mapping(data, "adapters")
        default = data.get("slo", default_slo)
        services = []
        for name in dict.fromkeys(d.service for d in deployments):
            models = {d.model for d in deployments if d.service == name}
            if len(models) != 1:
                raise InvalidConfigError("service", name, f"serves several models {sorted(models)}")
            services.append(
                FleetService(
                    name=name,
                    model=models.pop(),
                    slo=slo_from_spec(slos.get(name, default)),
                    routing=str(routing[name]) if name in routing else None,
                    traffic_share=float(traffic.get(name, 1.0)),
                    adapters=(
                        adapter_mix_from_mapping(name, adapters[name]) if name in adapters else None
                    ),
                )
            )
        named = ((slos, "slos"), (routing, "routing"), (traffic, "traffic"), (adapters, "adapters"))
        for key, where in named:
            for name in key:
                if name not in {s.name for s in services}:
                    raise InvalidConfigError(where, name, "no such service")
        catalog = data.get("catalog") or ()
        if isinstance(catalog, str):
            catalog = (catalog,)
        spec = FleetSpec(
            name=str(data.get("name", "fleet")),
            servers=servers,
            deployments=deployments,
            services=tuple(services),
            network_gb_per_s=float(data.get("network_gb_per_s", 12.5)),
            network_latency_s=float(data.get("network_latency_s", 0.0005)),
            catalog_files=tuple(str(c) for c in catalog),
            tenants=tenant_quotas_from_mapping(_mapping(data, "tenants")),
            jobs=jobs_from_list(_list(data, "jobs")),
            tariff_usd_per_device_hour={
                str(k): float(v) for k, v in _mapping(data, "tariff_usd_per_device_hour").items()
            },
        )
        if require_services and not spec.deployments:
            raise InvalidConfigError("services", [], "a fleet needs at least one deployment")
        return spec
    except KeyError as exc:
        raise InvalidConfigError("fleet", exc.args[0], "missing required key") from exc
    except (TypeError, ValueError, AttributeError) as exc:
        raise InvalidConfigError("fleet", str(exc), "malformed entry") from exc


def _list(data: Mapping[str, Any], key: str) -> Sequence[Mapping[str, Any]]:
    value = data.get(key) or []
    if not isinstance(value, list) or not all(isinstance(v, Mapping) for v in value):
        raise InvalidConfigError(key, type(value).__name__, "must be a list of mappings")
    return value


def _mapping(data: Mapping[str, Any], key: str) -> Mapping[str, Any]:
    value = data.get(key) or {}
    if not isinstance(value, Mapping):
        raise InvalidConfigError(key, type(value).__name__, "must be a mapping")
    return value


def _server(entry: Mapping[str, Any]) -> ServerPool:
    unknown = set(entry) - {"device", "count", "cards_per_server"}
    if unknown:
        raise InvalidConfigError("servers", sorted(unknown), "unknown keys")
    return ServerPool(
        device=str(entry["device"]),
        num_servers=int(entry.get("count", 1)),
        cards_per_server=int(entry.get("cards_per_server", 8)),
    )


def _deployment(entry: Mapping[str, Any]) -> FleetDeployment:
    unknown = set(entry) - _DEPLOY_KEYS
    if unknown:
        raise InvalidConfigError(
            "services", sorted(unknown), f"unknown keys; known: {sorted(_DEPLOY_KEYS)}"
        )
    model = str(entry["model"])
    precision = entry.get("precision")
    if isinstance(entry.get("device"), list | tuple):
        raise InvalidConfigError(
            "services.device",
            entry["device"],
            f"service {str(entry.get('service', model))!r}: one device type; list the types to "
            "try after it under `fallback_devices:`",
            hint="e.g. device: rngd, fallback_devices: [atom, h100]",
        )
    if "replicas" in entry and "replicas_per_server" in entry:
        raise InvalidConfigError(
            "services.replicas", entry["replicas"], "give replicas or replicas_per_server, not both"
        )
    return FleetDeployment(
        service=str(entry.get("service", model)),
        model=model,
        device=str(entry["device"]),
        precision=str(precision) if precision is not None else None,
        tp=int(entry.get("tp", 1)),
        replicas_per_server=int(entry.get("replicas_per_server", 1)),
        num_replicas=int(entry["replicas"]) if "replicas" in entry else None,
        tenant=str(entry["tenant"]) if entry.get("tenant") is not None else None,
        role=str(entry.get("role", "both")),
        max_num_seqs=int(entry.get("max_num_seqs", 256)),
        max_num_batched_tokens=int(entry.get("max_num_batched_tokens", 8192)),
        block_size_tokens=int(entry.get("block_size_tokens", 16)),
        enable_chunked_prefill=bool(entry.get("enable_chunked_prefill", True)),
        autoscale=_autoscale(entry),
        fallback_devices=fallback_devices_from(
            str(entry["device"]),
            entry.get("fallback_devices"),
            field="services.fallback_devices",
            owner=f"service {str(entry.get('service', model))!r}",
        ),
        **_engine(entry.get("engine")),
    )


def _autoscale(entry: Mapping[str, Any]) -> AutoscalePolicy | None:
    """``min_replicas``/``max_replicas`` and the ``autoscale:`` mapping (any AutoscalePolicy
    field) of a service; None when it names none (a fixed replica count)."""
    knobs = entry.get("autoscale") or {}
    if not isinstance(knobs, Mapping):
        raise InvalidConfigError("services.autoscale", knobs, "must be a mapping")
    fields = {f.name for f in dataclasses.fields(AutoscalePolicy)}
    unknown = sorted(set(knobs) - fields)
    if unknown:
        raise InvalidConfigError(
            "services.autoscale", unknown, f"unknown keys; valid: {sorted(fields)}"
        )
    given = dict(knobs)
    for key in ("min_replicas", "max_replicas"):
        if key in entry:
            given[key] = entry[key]
    if not given:
        return None
    try:
        return AutoscalePolicy(**given)
    except TypeError as exc:
        raise InvalidConfigError("services.autoscale", given, str(exc)) from None


def _engine(value: Any) -> dict[str, Any]:
    if value is None:
        return {}
    if isinstance(value, str):
        return {"engine": value}
    if not isinstance(value, Mapping) or "name" not in value:
        raise InvalidConfigError("services.engine", value, "an engine name or a mapping with name")
    options = tuple(sorted((str(k), _frozen(v)) for k, v in value.items() if k != "name"))
    return {"engine": str(value["name"]), "engine_options": options}


def _frozen(value: Any) -> Any:
    if isinstance(value, Mapping):
        return tuple(sorted((str(k), _frozen(v)) for k, v in value.items()))
    if isinstance(value, list | tuple):
        return tuple(_frozen(v) for v in value)
    return value
