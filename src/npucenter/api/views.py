"""Turn stored rows into API response models (names resolved, card holders shown)."""

from __future__ import annotations

from npucenter.api.schemas import (
    CardOut,
    DeploymentOut,
    JobOut,
    QuotaOut,
    ReplicaOut,
    ServerOut,
    UsageOut,
)
from npucenter.catalog import default_catalog
from npucenter.store.models import (
    Allocation,
    Deployment,
    Job,
    Quota,
    Replica,
    Server,
    UsageEntry,
)
from npucenter.store.repository import Repository

__all__ = [
    "deployment_out",
    "job_out",
    "placements",
    "quota_out",
    "server_out",
    "tenant_names",
    "usage_out",
]


def tenant_names(repo: Repository) -> dict[int, str]:
    """tenant id -> name."""
    return {t.id: t.name for t in repo.list_tenants()}


def _holder(alloc: Allocation, repo: Repository) -> str:
    if alloc.job_id is not None:
        return f"job:{alloc.job_id}"
    rep = repo.session.get_one(Replica, alloc.replica_id)
    return f"deployment:{rep.deployment_id}/replica:{rep.index}"


def server_out(
    repo: Repository,
    server: Server,
    allocs: dict[int, Allocation] | None = None,
    names: dict[int, str] | None = None,
) -> ServerOut:
    """A server with its cards and what holds each."""
    allocs = allocs if allocs is not None else {a.card_id: a for a in repo.allocations()}
    names = names if names is not None else tenant_names(repo)
    cards = []
    for card in server.cards:
        alloc = allocs.get(card.id)
        cards.append(
            CardOut(
                index=card.index,
                health=card.health,
                held_by=_holder(alloc, repo) if alloc else None,
                tenant=names.get(alloc.tenant_id) if alloc else None,
                borrowed=bool(alloc and alloc.borrowed),
            )
        )
    return ServerOut(
        id=server.id,
        name=server.name,
        device_type=server.device_type,
        device_kind=default_catalog().device(server.device_type).kind,
        health=server.health,
        labels=dict(server.labels or {}),
        num_cards=len(cards),
        num_free_cards=sum(1 for c in cards if c.held_by is None and c.health != "down"),
        cards=cards,
    )


def quota_out(
    repo: Repository,
    quota: Quota,
    names: dict[int, str],
    in_use: dict[tuple[int, str], tuple[int, int]] | None = None,
) -> QuotaOut:
    """A quota with the cards its tenant holds of that device type now."""
    in_use = in_use if in_use is not None else repo.cards_in_use()
    used, borrowed = in_use.get((quota.tenant_id, quota.device_type), (0, 0))
    return QuotaOut(
        id=quota.id,
        tenant_id=quota.tenant_id,
        tenant=names.get(quota.tenant_id, "?"),
        device_type=quota.device_type,
        nominal_cards=quota.nominal_cards,
        borrowing_limit_cards=quota.borrowing_limit_cards,
        lending_limit_cards=quota.lending_limit_cards,
        cohort=quota.cohort,
        priority_class=quota.priority_class,
        tokens_per_s=quota.tokens_per_s,
        used_cards=used,
        borrowed_cards=borrowed,
    )


def deployment_out(
    repo: Repository,
    dep: Deployment,
    names: dict[int, str],
    placement: tuple[dict[int, Server], dict[int, list[Allocation]]] | None = None,
) -> DeploymentOut:
    """A deployment with where each replica runs (``placement`` from :func:`placements`)."""
    servers, by_replica = placement or placements(repo)
    card_index = {c.id: c.index for s in servers.values() for c in s.cards}
    replicas = []
    for rep in repo.replicas_of(dep):
        allocs = by_replica.get(rep.id, [])
        server = servers.get(rep.server_id) if rep.server_id is not None else None
        replicas.append(
            ReplicaOut(
                index=rep.index,
                state=rep.state,
                server=server.name if server else None,
                card_indexes=sorted(card_index[a.card_id] for a in allocs),
                num_borrowed_cards=sum(1 for a in allocs if a.borrowed),
            )
        )
    return DeploymentOut(
        id=dep.id,
        tenant_id=dep.tenant_id,
        tenant=names.get(dep.tenant_id, "?"),
        name=dep.name,
        model=dep.model,
        device_type=dep.device_type,
        tp=dep.tp,
        precision=dep.precision,
        replicas=dep.replicas,
        num_placed_replicas=sum(1 for r in replicas if r.state == "placed"),
        priority_class=dep.priority_class,
        created_at_s=dep.created_at_s,
        replica_states=replicas,
    )


def placements(repo: Repository) -> tuple[dict[int, Server], dict[int, list[Allocation]]]:
    """Servers by id and replica allocations by replica id, loaded once for many deployments."""
    servers = {s.id: s for s in repo.list_servers()}
    by_replica: dict[int, list[Allocation]] = {}
    for alloc in repo.allocations():
        if alloc.replica_id is not None:
            by_replica.setdefault(alloc.replica_id, []).append(alloc)
    return servers, by_replica


def job_out(
    repo: Repository, job: Job, names: dict[int, str], with_results: set[int] | None = None
) -> JobOut:
    """A job with the name of its server (``with_results``: ids known to have a result)."""
    server = repo.session.get(Server, job.server_id) if job.server_id is not None else None
    if with_results is None:
        with_results = repo.jobs_with_results([job.id])
    return JobOut(
        id=job.id,
        tenant_id=job.tenant_id,
        tenant=names.get(job.tenant_id, "?"),
        name=job.name,
        kind=job.kind,
        image=job.image,
        command=list(job.command or []),
        device_type=job.device_type,
        num_cards=job.num_cards,
        priority_class=job.priority_class,
        state=job.state,
        server=server.name if server else None,
        borrowed_cards=job.borrowed_cards,
        num_preemptions=job.num_preemptions,
        created_at_s=job.created_at_s,
        updated_at_s=job.updated_at_s,
        started_at_s=job.started_at_s,
        finished_at_s=job.finished_at_s,
        exit_code=job.exit_code,
        log_tail=job.log_tail,
        failure_code=job.failure_code,
        failure_reason=job.failure_reason,
        has_result=job.id in with_results,
    )


def usage_out(entry: UsageEntry, names: dict[int, str]) -> UsageOut:
    """One ledger row."""
    return UsageOut(
        id=entry.id,
        tenant_id=entry.tenant_id,
        tenant=names.get(entry.tenant_id, "?"),
        kind=entry.kind,
        device_type=entry.device_type,
        device_seconds=entry.device_seconds,
        tokens_in=entry.tokens_in,
        tokens_out=entry.tokens_out,
        energy_j=entry.energy_j,
        cost_usd=entry.cost_usd,
        ref=entry.ref,
        at_s=entry.at_s,
    )
