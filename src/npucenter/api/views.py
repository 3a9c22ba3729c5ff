"""Turn stored rows into API response models (names resolved, card holders shown)."""

from __future__ import annotations

from typing import Any, TypeVar

from pydantic import BaseModel

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
    ServerRow,
    UsageEntry,
)
from npucenter.store.repository import Repository

_Out = TypeVar("_Out", bound=BaseModel)

__all__ = [
    "deployment_out",
    "deployment_view",
    "job_out",
    "job_view",
    "placements",
    "quota_out",
    "server_out",
    "slo_attainment_text",
    "tenant_names",
    "usage_out",
]


def tenant_names(repo: Repository) -> dict[int, str]:
    """tenant id -> name."""
    return {t.id: t.name for t in repo.list_tenants()}


def _holder(alloc: Allocation, repo: Repository) -> tuple[str, str | None]:
    """What holds a card, and its engine's run state (replicas only; ``draining``: scaled down,
    its engine finishing its requests)."""
    if alloc.job_id is not None:
        return f"job:{alloc.job_id}", None
    rep = repo.get_replica(alloc.replica_id)
    run_state = "draining" if rep.state == "draining" else rep.run_state
    return f"deployment:{rep.deployment_id}/replica:{rep.index}", run_state


def server_out(
    repo: Repository,
    server: ServerRow,
    allocs: dict[int, Allocation] | None = None,
    names: dict[int, str] | None = None,
) -> ServerOut:
    """A server with its cards and what holds each."""
    allocs = allocs if allocs is not None else {a.card_id: a for a in repo.allocations()}
    names = names if names is not None else tenant_names(repo)
    cards = []
    for card in server.cards:
        alloc = allocs.get(card.id)
        held_by, run_state = _holder(alloc, repo) if alloc else (None, None)
        cards.append(
            CardOut(
                index=card.index,
                health=card.health,
                held_by=held_by,
                tenant=names.get(alloc.tenant_id) if alloc else None,
                borrowed=bool(alloc and alloc.borrowed),
                run_state=run_state,
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
        num_idle_held_cards=sum(1 for c in cards if c.run_state in ("pending", "failed")),
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
    return _owned(QuotaOut, quota, names, used_cards=used, borrowed_cards=borrowed)


def deployment_out(
    repo: Repository,
    dep: Deployment,
    names: dict[int, str],
    placement: tuple[dict[int, ServerRow], dict[int, list[Allocation]]] | None = None,
) -> DeploymentOut:
    """A deployment with where each replica runs (``placement`` from :func:`placements`)."""
    servers, by_replica = placement or placements(repo)
    replicas = []
    for rep in repo.replicas_of(dep, draining=True):  # draining ones shown, not counted
        allocs = by_replica.get(rep.id, [])
        server = servers.get(rep.server_id) if rep.server_id is not None else None
        # card ids -> indexes: the replica's server's cards (all servers' only if one is elsewhere)
        card_index = {c.id: c.index for c in server.cards} if server else {}
        if any(a.card_id not in card_index for a in allocs):
            card_index = {c.id: c.index for s in servers.values() for c in s.cards}
        on_cards = rep.state in ("placed", "draining")
        replicas.append(
            ReplicaOut(
                index=rep.index,
                state=rep.state,
                server=server.name if server else None,
                card_indexes=sorted(card_index[a.card_id] for a in allocs),
                num_borrowed_cards=sum(1 for a in allocs if a.borrowed),
                run_state=rep.run_state if on_cards else None,
                run_reason=rep.run_reason if on_cards else None,
                device_type=(rep.device_type or dep.device_type) if on_cards else None,
            )
        )
    placed = [r for r in replicas if r.state == "placed"]
    return _owned(
        DeploymentOut,
        dep,
        names,
        num_placed_replicas=len(placed),
        num_running_replicas=sum(1 for r in placed if r.run_state in (None, "running")),
        replica_states=replicas,
        device_types=dep.accepted_device_types(),
    )


def deployment_view(repo: Repository, dep_id: int, tenant_id: int | None = None) -> DeploymentOut:
    """One deployment by id (``tenant_id``: only if it is that tenant's)."""
    return deployment_out(
        repo, repo.get_deployment(dep_id, tenant_id=tenant_id), tenant_names(repo)
    )


def placements(repo: Repository) -> tuple[dict[int, ServerRow], dict[int, list[Allocation]]]:
    """Servers by id and replica allocations by replica id, loaded once for many deployments."""
    servers = {s.id: s for s in repo.list_servers()}
    by_replica: dict[int, list[Allocation]] = {}
    for alloc in repo.allocations():
        if alloc.replica_id is not None:
            by_replica.setdefault(alloc.replica_id, []).append(alloc)
    return servers, by_replica


def job_out(
    repo: Repository,
    job: Job,
    names: dict[int, str],
    with_results: set[int] | None = None,
    reasons: dict[int, str] | None = None,
) -> JobOut:
    """A job with the name of its server (``with_results``: ids known to have a result;
    ``reasons``: latest reasons by job id, loaded once for many jobs)."""
    server = repo.get_server(job.server_id) if job.server_id is not None else None
    if with_results is None:
        with_results = repo.jobs_with_results([job.id])
    if reasons is None:
        reasons = repo.latest_reasons([job.id])
    return _owned(
        JobOut,
        job,
        names,
        command=list(job.command or []),
        server=server.name if server else None,
        has_result=job.id in with_results,
        latest_reason=reasons.get(job.id, ""),
    )


def job_view(repo: Repository, job_id: int, tenant_id: int | None = None) -> JobOut:
    """One job by id (``tenant_id``: only if it is that tenant's)."""
    return job_out(repo, repo.get_job(job_id, tenant_id=tenant_id), tenant_names(repo))


def usage_out(entry: UsageEntry, names: dict[int, str]) -> UsageOut:
    """One ledger row."""
    return _owned(UsageOut, entry, names)


def _owned(
    model: type[_Out],
    row: Deployment | Job | Quota | UsageEntry,
    names: dict[int, str],
    **extra: Any,
) -> _Out:
    """``model`` from the row's columns of the same names, its tenant's name and ``extra``."""
    values = {f: getattr(row, f) for f in model.model_fields if f not in extra and hasattr(row, f)}
    values["tenant"] = names.get(row.tenant_id, "?")
    return model(**values, **extra)


def slo_attainment_text(att: dict[str, Any] | None) -> str:
    """A deployment's ``slo_attainment`` in words (the CLI's and the console's)."""
    if att is None:
        return "— (no SLO for it in the fleet file, or no gateway in the center's process)"
    limits = ", ".join(
        f"{k.split('_')[0].upper()} ≤ {att[k] * 1000:g} ms" for k in ("ttft_s", "tpot_s") if att[k]
    )
    head = f"{att['slo']} ({limits}), last {att['window_s']:.0f} s: "
    if att["fraction"] is None:
        return head + "no request"
    parts = [
        f"{name} {att[key]:.1%}"
        for name, key in (("TTFT", "ttft_met_fraction"), ("TPOT", "tpot_met_fraction"))
        if att[key] is not None
    ]
    return head + f"{att['fraction']:.1%} of {att['num_requests']} requests ({', '.join(parts)})"
