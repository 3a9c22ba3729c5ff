"""The live center's view of a fleet file: servers, the replicas placed on them, the tariff.

There is one fleet format, parsed by :func:`npucenter.fleet.spec.fleet_spec_from_mapping`:
``npucenter simulate --fleet F`` and ``npucenter up --fleet F`` read the same file
(:mod:`npucenter.files.fleet` opens it). This module derives what ``npucenter up`` needs from
the parsed :class:`~npucenter.fleet.spec.FleetSpec`:
the server groups it registers in the store, the ``tenants:`` quotas, one deployment per fleet
service entry (owned by its ``tenant``, else the operator tenant), each replica's static place,
and the center's tariff
(``tariff_usd_per_device_hour``, the one field only the live center reads). Launching replicas
is the deployment reconciler's job (:mod:`npucenter.gateway.reconciler`). Pure: no I/O.

Example ``FLEET.yaml``::

    name: lab
    servers:
      - {device: rngd, count: 2, cards_per_server: 8}
      - {device: h100, count: 1, cards_per_server: 8}
    services:
      - {model: llama-3.1-8b, device: rngd, precision: fp8, tp: 1, replicas_per_server: 2}
      - {model: llama-3.1-8b, device: h100, precision: fp8, tp: 1, replicas_per_server: 2}
    tariff_usd_per_device_hour: {rngd: 1.0, h100: 2.0}   # the center's own price list
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from npucenter.errors import InvalidConfigError, NotFoundError
from npucenter.fleet.placement import pinned_cards
from npucenter.fleet.spec import FleetSpec, ServerPool, fleet_spec_from_mapping
from npucenter.policy.autoscaling import AutoscalePolicy
from npucenter.policy.quota import TenantQuota

__all__ = [
    "DEFAULT_MODEL",
    "Fleet",
    "PinnedReplica",
    "ServiceGroup",
    "default_fleet",
    "default_fleet_mapping",
    "fleet_from_dict",
    "fleet_from_spec",
]

DEFAULT_MODEL = "llama-3.1-8b"


@dataclass(frozen=True, slots=True, kw_only=True)
class ServiceGroup:
    """One ``services`` entry: replicas of one model on one server group (one deployment)."""

    model_id: str
    device_id: str
    precision: str | None = None  # None: the device's default (FP8 where supported)
    tp: int = 1  # cards per replica
    replicas_per_server: int = 1
    num_replicas: int | None = None  # total, placed by admission; None: replicas_per_server each
    max_num_seqs: int = 256  # sequences a replica runs at once; more wait in the gateway
    service: str = ""  # the service name ("" or the model id: none besides the model)
    role: str = "both"  # the simulator's disaggregation role; live replicas run both phases
    tenant: str | None = None  # the owning tenant; None: the operator
    engine: str = "virtual"  # the engine that serves it (npucenter.engines; the edge validates)
    engine_options: tuple[tuple[str, Any], ...] = ()  # the fleet entry's engine options, frozen
    autoscale: AutoscalePolicy | None = None  # None: a fixed replica count
    # tried in order after device_id (as their server groups spell them): admission places each
    # replica on the first with quota and room, the engine of its family serves it
    fallback_device_ids: tuple[str, ...] = ()

    @property
    def device_ids(self) -> tuple[str, ...]:
        """The device types its replicas accept, in order (``device_id`` first)."""
        return (self.device_id, *self.fallback_device_ids)

    @property
    def deployment_name(self) -> str:
        """The deployment this entry becomes: ``<service>-<device>[-<role>]`` (its first
        device type when it lists several)."""
        name = f"{self.service or self.model_id}-{self.device_id}"
        return name if self.role == "both" else f"{name}-{self.role}"

    @property
    def alias(self) -> str | None:
        """The model name tenants may also ask for (the service name, when not the model id)."""
        return self.service if self.service and self.service != self.model_id else None


@dataclass(frozen=True, slots=True, kw_only=True)
class PinnedReplica:
    """One engine replica: a model on ``tp`` cards of one server."""

    replica_id: str  # e.g. "rngd-0-r1": the server and its first card
    model_id: str
    device_id: str
    precision: str | None
    tp: int
    server_id: str  # e.g. "rngd-0"
    card_ids: tuple[int, ...]  # card indices on that server
    max_num_seqs: int = 256
    deployment: str = ""  # the deployment's name


@dataclass(frozen=True, slots=True, kw_only=True)
class Fleet:
    """The live center's view of a parsed fleet file (built by :func:`fleet_from_spec`).

    Servers, tenants and tariff are the spec's; ``services`` are its deployments as the live
    center names them (deployment names, aliases, the device as its server group spells it).
    """

    spec: FleetSpec
    services: tuple[ServiceGroup, ...]  # one per spec deployment, in the file's order

    @property
    def name(self) -> str:
        """The fleet's name."""
        return self.spec.name

    @property
    def servers(self) -> tuple[ServerPool, ...]:
        """The server groups, in the file's order."""
        return self.spec.servers

    @property
    def tariff_usd_per_device_hour(self) -> Mapping[str, float]:
        """The center's price list (by device as the file spells it); never a device figure."""
        return self.spec.tariff_usd_per_device_hour

    @property
    def tenants(self) -> tuple[TenantQuota, ...]:
        """The ``tenants:`` block: quotas registered at start."""
        return self.spec.tenants

    def server_group(self, device_id: str) -> ServerPool:
        """The server group of ``device_id`` (case-insensitive)."""
        for group in self.servers:
            if group.device.lower() == device_id.lower():
                return group
        raise NotFoundError("fleet device", device_id, valid=[g.device for g in self.servers])

    @property
    def models(self) -> tuple[str, ...]:
        """Model ids served, in first-listed order."""
        return tuple(dict.fromkeys(s.model_id for s in self.services))

    @property
    def num_cards(self) -> int:
        """Cards in the fleet."""
        return sum(g.num_cards for g in self.servers)

    def num_replicas(self, service: ServiceGroup) -> int:
        """Replicas of one services entry on its whole server group."""
        if service.num_replicas is not None:
            return service.num_replicas
        return service.replicas_per_server * self.server_group(service.device_id).num_servers

    def replicas(self) -> tuple[PinnedReplica, ...]:
        """Every per-server replica, where the file pins it (:func:`~npucenter.fleet.placement.
        pinned_cards`: consecutive cards of each server in services order).

        Entries with a total ``replicas`` count are left to admission and not listed here.
        """
        out: list[PinnedReplica] = []
        for server_id, index, cards in pinned_cards(self.spec):
            service = self.services[index]
            out.append(
                PinnedReplica(
                    replica_id=f"{server_id}-r{cards[0]}",
                    model_id=service.model_id,
                    device_id=service.device_id,
                    precision=service.precision,
                    tp=service.tp,
                    server_id=server_id,
                    card_ids=cards,
                    max_num_seqs=service.max_num_seqs,
                    deployment=service.deployment_name,
                )
            )
        return tuple(out)


def fleet_from_spec(spec: FleetSpec) -> Fleet:
    """The live center's view of a parsed fleet file."""
    services = tuple(
        ServiceGroup(
            model_id=d.model,
            device_id=spec.pool(d.device).device,
            precision=d.precision,
            tp=d.tp,
            replicas_per_server=d.replicas_per_server,
            num_replicas=d.num_replicas,
            max_num_seqs=d.max_num_seqs,
            service=d.service,
            role=d.role,
            tenant=d.tenant,
            engine=d.engine,
            engine_options=d.engine_options,
            autoscale=d.autoscale,
            fallback_device_ids=tuple(spec.pool(f).device for f in d.fallback_devices),
        )
        for d in spec.deployments
    )
    names = [s.deployment_name for s in services]
    if len(set(names)) != len(names):
        raise InvalidConfigError(
            "services",
            names,
            "two entries of one service on one device (and role) would be one deployment",
            hint="merge them (replicas_per_server) or give them different service names",
        )
    return Fleet(spec=spec, services=services)


def fleet_from_dict(data: Mapping[str, Any]) -> Fleet:
    """A fleet from its YAML/JSON mapping (the one format, see docs/simulator.md).

    Unlike a simulation, the live center accepts a fleet of servers only (no ``services``).
    """
    return fleet_from_spec(fleet_spec_from_mapping(data, require_services=False))


def default_fleet(model_id: str = DEFAULT_MODEL) -> Fleet:
    """Two RNGD servers of 8 cards and one H100 server of 8, two replicas of ``model_id`` each.

    Two single-card replicas per server keep a laptop's process count small; the other cards are
    free for jobs and deployments. The tariff is an example price list of the center (not a
    device figure).
    """
    return fleet_from_dict(default_fleet_mapping(model_id))


def default_fleet_mapping(model_id: str = DEFAULT_MODEL) -> dict[str, Any]:
    """The fleet file of :func:`default_fleet` (what `npucenter up` runs without ``--fleet``)."""
    return {
        "name": "default",
        "servers": [
            {"device": "rngd", "count": 2, "cards_per_server": 8},
            {"device": "h100", "count": 1, "cards_per_server": 8},
        ],
        "services": [
            {"model": model_id, "device": d, "precision": "fp8", "replicas_per_server": 2}
            for d in ("rngd", "h100")
        ],
        "tariff_usd_per_device_hour": {"rngd": 1.0, "h100": 2.0},
    }
