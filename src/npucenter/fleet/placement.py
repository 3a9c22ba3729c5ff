"""Where the twin's replicas run: the fleet's deployments placed as the live center places them.

The simulator does not lay replicas out itself: as ``npucenter up`` does, ``replicas_per_server``
entries take the cards the file gives them, and ``replicas`` (total) entries are placed by
:func:`npucenter.policy.admission.decide_admission`, the function the control plane runs, on a
snapshot of the fleet (servers, cards, what runs, one tenant per service whose quota covers its
deployments, or the fleet file's ``tenants:``); so the twin obeys the same gang (one server) and
tensor-parallel (one interconnect) rules. Pure: no I/O. A fleet that does not fit raises with
the policy's pending reasons.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING

from npucenter.errors import CapacityUnavailableError
from npucenter.policy.admission import (
    AdmissionDecision,
    AdmissionSnapshot,
    Admitted,
    PriorityClass,
    Server,
    TenantQuota,
    Workload,
    WorkloadKind,
    decide_admission,
)

if TYPE_CHECKING:
    from npucenter.fleet.spec import FleetDeployment, FleetSpec

__all__ = [
    "FleetAdmission",
    "FleetPlacement",
    "PlacedReplica",
    "fleet_admission",
    "fleet_servers",
    "pinned_cards",
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
    running: tuple[Admitted, ...]  # the same, as admission's running entries
    unused_cards: Mapping[str, int]  # pool device (as the fleet spells it) -> free cards
    decision: AdmissionDecision  # the cycle that placed the ``replicas:`` (total) entries

    def devices_by_service(self, fleet: FleetSpec) -> dict[str, dict[str, int]]:
        """Service -> device type (as the fleet spells it) -> replicas placed there, device
        types in the order the service's entries list them (where a fungible one landed)."""
        out: dict[str, dict[str, int]] = {}
        for dep in fleet.deployments:
            per = out.setdefault(dep.service, {})
            for device in dep.devices:
                per.setdefault(fleet.pool(device).device, 0)
        names = {p.device.lower(): p.device for p in fleet.servers}
        for rep in self.replicas:
            service = fleet.deployments[rep.deployment_index].service
            out[service][names[rep.device_type]] += 1
        return out


def tenant_of(dep: FleetDeployment) -> str:
    """The tenant owning ``dep``: its ``tenant``, else one named after its service."""
    return dep.tenant if dep.tenant is not None else dep.service


def fleet_servers(fleet: FleetSpec) -> tuple[Server, ...]:
    """The fleet's servers as admission sees them: ``<device>-<n>`` (the live center's names),
    one interconnect each."""
    return tuple(
        Server(server_id=name, device_type=pool.device.lower(), num_cards=pool.cards_per_server)
        for pool in fleet.servers
        for name in pool.server_names()
    )


def pinned_cards(fleet: FleetSpec) -> tuple[tuple[str, int, tuple[int, ...]], ...]:
    """Where the file pins each ``replicas_per_server`` replica: ``(server_id, deployment index,
    card indices)``, consecutive cards of every server in the file's order (as ``npucenter up``
    places them). Entries with a total ``replicas`` count are left to admission."""
    out: list[tuple[str, int, tuple[int, ...]]] = []
    for pool in fleet.servers:
        for server_id in pool.server_names():
            next_card = 0
            for index, dep in enumerate(fleet.deployments):
                if dep.num_replicas is not None or fleet.pool(dep.device) is not pool:
                    continue
                for _ in range(dep.replicas_per_server):
                    out.append((server_id, index, tuple(range(next_card, next_card + dep.tp))))
                    next_card += dep.tp
    return tuple(out)


@dataclass(frozen=True, slots=True, kw_only=True)
class FleetAdmission:
    """The fleet as one admission cycle sees it (see :func:`fleet_admission`)."""

    snapshot: AdmissionSnapshot  # servers, quotas, and the per-server replicas as running
    pending: tuple[Workload, ...]  # the replicas of ``replicas:`` (total) entries
    workloads: Mapping[str, Workload]  # every replica, by workload id (to requeue it)
    owner: Mapping[str, int]  # workload id -> deployment index


def fleet_admission(fleet: FleetSpec) -> FleetAdmission:
    """The snapshot and queue of the fleet's replicas, as the live center sets them up.

    Like ``npucenter up``, ``replicas_per_server`` entries take the cards the file gives them
    (consecutive cards of every server, in the file's order) and are running in the snapshot;
    ``replicas`` (total) entries are pending, one gang of ``tp`` cards in one tensor-parallel
    group each, submitted in the file's order; a fungible entry's (``fallback_devices``) accept
    its device types in order, so admission puts each on the first with quota and room. A
    tenant the fleet does not list gets a quota of exactly the cards its deployments and jobs
    need on each device type they accept, with no cohort (so it neither borrows nor lends), in
    the production class if it serves, else its jobs' highest class (research unless a job says
    more).
    """
    quotas = _quotas(fleet)
    classes = {q.tenant: q.priority_class for q in quotas}
    servers = fleet_servers(fleet)
    running: list[Admitted] = []
    pending: list[Workload] = []
    workloads: dict[str, Workload] = {}
    owner: dict[str, int] = {}
    for index, dep in enumerate(fleet.deployments):
        device_type = fleet.pool(dep.device).device.lower()
        fallbacks = tuple(fleet.pool(d).device.lower() for d in dep.fallback_devices)
        for k in range(fleet.num_replicas(dep)):
            workload_id = f"d{index:03d}-{dep.service}-{dep.role}-{k:04d}"
            owner[workload_id] = index
            workloads[workload_id] = Workload(
                workload_id=workload_id,
                tenant=tenant_of(dep),
                kind=WorkloadKind.REPLICA,
                device_type=device_type,
                fallback_device_types=fallbacks,
                num_cards=dep.tp,
                tp_size=dep.tp,
                submitted_s=float(len(workloads)),
            )
            if dep.num_replicas is not None:
                pending.append(workloads[workload_id])
    num_pinned = dict.fromkeys(range(len(fleet.deployments)), 0)
    for server_id, index, cards in pinned_cards(fleet):
        dep = fleet.deployments[index]
        k = num_pinned[index]
        num_pinned[index] += 1
        workload = workloads[f"d{index:03d}-{dep.service}-{dep.role}-{k:04d}"]
        running.append(
            Admitted(
                workload_id=workload.workload_id,
                tenant=workload.tenant,
                device_type=workload.device_type,
                server_id=server_id,
                card_indices=cards,
                tp_size=dep.tp,
                priority_class=classes[workload.tenant],
            )
        )
    snapshot = AdmissionSnapshot(fleet=servers, quotas=quotas, running=tuple(running))
    return FleetAdmission(
        snapshot=snapshot, pending=tuple(pending), workloads=workloads, owner=owner
    )


def place_fleet(fleet: FleetSpec) -> FleetPlacement:
    """Place every replica of ``fleet``: per-server ones as in the file, the rest by admission.

    Raises:
        CapacityUnavailableError: some replicas stay pending (topology, quota or cohort);
            ``attempts`` lists each one's workload id, tenant, reason and message.
    """
    setup = fleet_admission(fleet)
    decision = decide_admission(setup.snapshot, setup.pending, 0.0)
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
            f"{len(waiting)} of {len(setup.workloads)} replicas of fleet {fleet.name!r} cannot "
            f"be placed; first: {first.workload_id} ({first.reason.value}: {first.message})",
            hint="add servers, lower tp or replicas, or raise the tenants' quotas",
            attempts=waiting,
            fleet=fleet.name,
        )
    order = {s.server_id: i for i, s in enumerate(setup.snapshot.fleet)}
    running = sorted(
        (*setup.snapshot.running, *decision.admitted),
        key=lambda a: (order[a.server_id], min(a.card_indices)),
    )
    used: dict[str, int] = {}
    for a in running:
        used[a.device_type] = used.get(a.device_type, 0) + a.num_cards
    return FleetPlacement(
        replicas=tuple(
            PlacedReplica(
                replica_id=f"{a.server_id}-r{min(a.card_indices)}",
                workload_id=a.workload_id,
                deployment_index=setup.owner[a.workload_id],
                tenant=a.tenant,
                device_type=a.device_type,
                server_id=a.server_id,
                card_indices=a.card_indices,
            )
            for a in running
        ),
        running=tuple(running),
        unused_cards={p.device: p.num_cards - used.get(p.device.lower(), 0) for p in fleet.servers},
        decision=decision,
    )


def _quotas(fleet: FleetSpec) -> tuple[TenantQuota, ...]:
    needs: dict[str, dict[str, int]] = {}
    for dep in fleet.deployments:  # a fungible one may land anywhere it lists: each is covered
        per_type = needs.setdefault(tenant_of(dep), {})
        for device in dep.devices:
            device_type = fleet.pool(device).device.lower()
            per_type[device_type] = per_type.get(device_type, 0) + dep.tp * fleet.num_replicas(dep)
    serving = set(needs)
    job_class: dict[str, PriorityClass] = {}
    for job in fleet.jobs:  # the jobs' tenants: quota for all their jobs at once
        per_type = needs.setdefault(job.tenant, {})
        for device in (job.device, *job.fallback_devices):
            device_type = fleet.pool(device).device.lower()
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
    return tuple(quotas)
