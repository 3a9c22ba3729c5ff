"""Where the twin's replicas run: the fleet's deployments placed by the live center's admission.

The simulator does not place replicas itself: it snapshots the fleet (servers, cards, one
tenant per service whose quota covers its deployments, or the fleet file's ``tenants:``) and
calls :func:`npucenter.policy.admission.decide_admission`, the function the control plane runs,
so the twin obeys the same gang (one server) and tensor-parallel (one interconnect) rules.
Pure: no I/O. A fleet that does not fit raises with the policy's pending reasons.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING

from npucenter.errors import CapacityUnavailableError
from npucenter.policy.admission import (
    AdmissionDecision,
    AdmissionSnapshot,
    PriorityClass,
    Server,
    TenantQuota,
    Workload,
    WorkloadKind,
    decide_admission,
)

if TYPE_CHECKING:
    from npucenter.sim.fleet import Deployment, FleetSpec

__all__ = [
    "FleetPlacement",
    "PlacedReplica",
    "fleet_admission",
    "fleet_servers",
    "place_fleet",
    "tenant_of",
]


@dataclass(frozen=True, slots=True, kw_only=True)
class PlacedReplica:
    """One replica of a deployment on the cards admission gave it."""

    replica_id: str  # "<server_id>-r<first card>"
    workload_id: str  # its id in admission
    deployment_index: int  # index into FleetSpec.deployments
    tenant: str
    device_type: str
    server_id: str
    card_indices: tuple[int, ...]


@dataclass(frozen=True, slots=True, kw_only=True)
class FleetPlacement:
    """Every replica of a fleet, placed, and the cards left unused per device."""

    replicas: tuple[PlacedReplica, ...]  # by pool, server, first card
    unused_cards: Mapping[str, int]  # pool device (as the fleet spells it) -> free cards
    decision: AdmissionDecision


def tenant_of(dep: Deployment) -> str:
    """The tenant owning ``dep``: its ``tenant``, else one named after its service."""
    return dep.tenant if dep.tenant is not None else dep.service


def fleet_servers(fleet: FleetSpec) -> tuple[Server, ...]:
    """The fleet's servers as admission sees them: ``<device>-<n>``, one interconnect each."""
    servers: list[Server] = []
    for pool in fleet.servers:
        width = len(str(pool.num_servers - 1))
        for n in range(pool.num_servers):
            servers.append(
                Server(
                    server_id=f"{pool.device}-{n:0{width}d}",
                    device_type=pool.device.lower(),
                    num_cards=pool.cards_per_server,
                )
            )
    return tuple(servers)


def fleet_admission(
    fleet: FleetSpec,
) -> tuple[AdmissionSnapshot, tuple[Workload, ...], dict[str, int]]:
    """The snapshot, the pending replicas and ``workload id -> deployment index``.

    Each replica is a gang of ``tp`` cards in one tensor-parallel group, submitted in the
    fleet's deployment order. A tenant the fleet does not list gets a quota of exactly the cards
    its deployments and jobs need, with no cohort (so it neither borrows nor lends), in the
    production class if it serves, else its jobs' highest class (default research).
    """
    pending: list[Workload] = []
    owner: dict[str, int] = {}
    needs: dict[str, dict[str, int]] = {}
    for index, dep in enumerate(fleet.deployments):
        device_type = fleet.pool(dep.device).device.lower()
        tenant = tenant_of(dep)
        count = fleet.num_replicas(dep)
        per_type = needs.setdefault(tenant, {})
        per_type[device_type] = per_type.get(device_type, 0) + dep.tp * count
        for k in range(count):
            workload_id = f"d{index:03d}-{dep.service}-{dep.role}-{k:04d}"
            owner[workload_id] = index
            pending.append(
                Workload(
                    workload_id=workload_id,
                    tenant=tenant,
                    kind=WorkloadKind.REPLICA,
                    device_type=device_type,
                    num_cards=dep.tp,
                    tp_size=dep.tp,
                    submitted_s=float(len(pending)),
                )
            )
    serving = set(needs)
    job_class: dict[str, PriorityClass] = {}
    for job in fleet.jobs:  # the jobs' tenants: quota for all their jobs at once
        device_type = fleet.pool(job.device).device.lower()
        per_type = needs.setdefault(job.tenant, {})
        per_type[device_type] = per_type.get(device_type, 0) + job.num_cards
        wanted = PriorityClass.RESEARCH if job.priority_class is None else job.priority_class
        job_class[job.tenant] = max(job_class.get(job.tenant, wanted), wanted)
    quotas = list(fleet.tenants)
    named = {q.tenant for q in quotas}
    for tenant in sorted(set(needs) - named):
        quotas.append(
            TenantQuota(
                tenant=tenant,
                priority_class=PriorityClass.PRODUCTION if tenant in serving else job_class[tenant],
                nominal_cards=needs[tenant],
                borrowing_limit_cards=dict.fromkeys(needs[tenant], 0),
            )
        )
    snapshot = AdmissionSnapshot(fleet=fleet_servers(fleet), quotas=tuple(quotas))
    return snapshot, tuple(pending), owner


def place_fleet(fleet: FleetSpec) -> FleetPlacement:
    """Place every replica of ``fleet`` with one admission cycle.

    Raises:
        CapacityUnavailableError: some replicas stay pending (topology, quota or cohort);
            ``attempts`` lists each one's workload id, tenant, reason and message.
    """
    snapshot, pending, owner = fleet_admission(fleet)
    decision = decide_admission(snapshot, pending, 0.0)
    if decision.pending:
        waiting = [
            {
                "workload_id": p.workload_id,
                "tenant": p.tenant,
                "reason": p.reason.value,
                "message": p.message,
            }
            for p in decision.pending
        ]
        first = decision.pending[0]
        raise CapacityUnavailableError(
            f"{len(waiting)} of {len(pending)} replicas of fleet {fleet.name!r} cannot be "
            f"placed; first: {first.workload_id} ({first.reason.value}: {first.message})",
            hint="add servers, lower tp or replicas, or raise the tenants' quotas",
            attempts=waiting,
            fleet=fleet.name,
        )
    order = {s.server_id: i for i, s in enumerate(snapshot.fleet)}
    placed = sorted(decision.admitted, key=lambda a: (order[a.server_id], min(a.card_indices)))
    used: dict[str, int] = {}
    for a in placed:
        used[a.device_type] = used.get(a.device_type, 0) + a.num_cards
    return FleetPlacement(
        replicas=tuple(
            PlacedReplica(
                replica_id=f"{a.server_id}-r{min(a.card_indices)}",
                workload_id=a.workload_id,
                deployment_index=owner[a.workload_id],
                tenant=a.tenant,
                device_type=a.device_type,
                server_id=a.server_id,
                card_indices=a.card_indices,
            )
            for a in placed
        ),
        unused_cards={p.device: p.num_cards - used.get(p.device.lower(), 0) for p in fleet.servers},
        decision=decision,
    )
