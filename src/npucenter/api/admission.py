"""The live admission cycle: snapshot the store, ask the shared policy, apply its decision.

NOTE(control): the policy (``npucenter.policy.admission.decide_admission``) is the same pure
function the simulator runs; this module only translates. Workload ids are ``job:<id>`` and
``replica:<id>``; server ids are server names. A decision is applied in one transaction:
preemptions first (jobs go preempted -> queued, replicas back to pending; each bills its
device-seconds to the ledger), then admissions (cards allocated; the last
``borrowed_cards`` cards of a gang are marked borrowed). Cycles are serialised by a process lock.
A replica draining (scaled down, its engine finishing its requests) is in the snapshot like a
running one: its cards are its tenant's until the reconciler reports its engine stopped, and
it may be preempted like its deployment's other replicas (then removed, not queued again).

The policy breaks ties (the same submitted time, the same priority) by comparing workload ids
as strings, so the snapshot writes each id zero-padded to a fixed width (``replica:000000000010``
after ``replica:000000000009``): work created at the same moment is served in id order, which for
one deployment's replicas is their index order (a scale-up inserts them by index). Reports and
messages show the ids unpadded (:func:`_shown`).
"""

from __future__ import annotations

import logging
import re
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import replace

from npucenter.api.context import ControlPlane
from npucenter.api.schemas import AdmissionReport, AllocationOut, PendingOut
from npucenter.errors import (
    CapacityUnavailableError,
    InvalidConfigError,
    NpuCenterError,
    QuotaExceededError,
)
from npucenter.policy.admission import (
    AdmissionDecision,
    AdmissionPolicy,
    AdmissionSnapshot,
    Admitted,
    Card,
    FairSharingBasis,
    Workload,
    WorkloadKind,
    decide_admission,
    servers_from_cards,
)
from npucenter.policy.admission.host import HOST_JOBS_PER_TENANT, HostJob, admit_host_jobs
from npucenter.policy.quota import PriorityClass, StopPolicy, TenantQuota
from npucenter.store.coordination import cycle_lock
from npucenter.store.models import Allocation, CardRow, ServerRow, Tenant
from npucenter.store.repository import QuotaView, Repository

__all__ = [
    "admit_after_change",
    "build_snapshot",
    "check_admissible",
    "check_admissible_any",
    "quota_cards",
    "run_admission",
    "usage_history",
]

log = logging.getLogger(__name__)

_ID_DIGITS = 12  # ids below 10**12 sort as numbers once padded to this width
_PADDED = re.compile(r"\b(job|replica):0*(\d)")


def _wid(kind: str, row_id: int) -> str:
    """The snapshot's workload id of a job or replica row: its id zero-padded, so the policy's
    string tie-break orders it numerically."""
    return f"{kind}:{row_id:0{_ID_DIGITS}d}"


def _shown(text: str) -> str:
    """``text`` with every padded workload id written as users know it (``replica:10``)."""
    return _PADDED.sub(r"\1:\2", text)


def run_admission(control: ControlPlane) -> AdmissionReport:
    """Run one admission cycle against the store and apply it; returns what changed."""
    policy = AdmissionPolicy.from_text(control.settings.admission_policy)
    with control.admission_lock, control.tx() as repo:
        cycle_lock(repo.session)  # one cycle at a time across processes (PostgreSQL)
        now_s = repo.now_s()
        snapshot, pending = build_snapshot(repo, now_s)
        if policy.fair_sharing_basis is FairSharingBasis.USAGE:
            history = usage_history(repo, now_s, policy.usage_half_life_s)
            snapshot = replace(snapshot, usage_history_card_s=history)
        decision = decide_admission(snapshot, pending, now_s, policy=policy)
        report = _admit_host_jobs(repo, _apply(repo, decision, len(pending)))
        repo.note_pending(
            {
                int(p.workload.partition(":")[2]): f"{p.reason}: {p.message}"
                for p in report.pending
                if p.workload.startswith("job:")
            }
        )
        return report


def _admit_host_jobs(repo: Repository, report: AdmissionReport) -> AdmissionReport:
    """Queued jobs that ask for no card (the twin's): admitted by count, holding no card."""
    names = {t.id: t.name for t in repo.list_tenants()}
    queued = [j for j in repo.list_jobs(state="queued") if j.num_cards == 0]
    if not queued:
        return report
    running: dict[str, int] = defaultdict(int)
    for state in ("admitted", "running"):
        for job in repo.list_jobs(state=state):
            if job.num_cards == 0:
                running[names[job.tenant_id]] += 1
    by_id = {_wid("job", j.id): j for j in queued}
    admitted, waiting = admit_host_jobs(
        [HostJob(wid, names[j.tenant_id], j.created_at_s) for wid, j in by_id.items()], running
    )
    for host in admitted:
        repo.admit_job(by_id[host.workload_id], [], reason="admitted on the host (no card)")
        report.admitted.append(AllocationOut(workload=_shown(host.workload_id), tenant=host.tenant))
    for host in waiting:
        report.pending.append(
            PendingOut(
                workload=_shown(host.workload_id),
                tenant=host.tenant,
                reason="host_job_limit",
                message=f"{host.tenant} runs {HOST_JOBS_PER_TENANT} host jobs already",
            )
        )
    report.num_pending += len(queued)
    report.num_still_pending += len(waiting)
    return report


def admit_after_change(control: ControlPlane) -> AdmissionReport | None:
    """Run a cycle after a committed change; a failing cycle is logged, never fails the change.

    The control plane's change listeners (the job runner) are told afterwards either way.
    """
    try:
        return run_admission(control)
    except NpuCenterError as exc:
        log.warning("admission cycle failed after a change: %s", exc)
        return None
    finally:
        control.notify_change()


def build_snapshot(repo: Repository, now_s: float) -> tuple[AdmissionSnapshot, list[Workload]]:
    """The policy's view of the store: fleet, quotas, running workloads, and the queue."""
    servers = repo.list_servers()
    names = {t.id: t.name for t in repo.list_tenants()}
    fleet = servers_from_cards(
        Card(
            server_id=s.name,
            card_index=c.index,
            device_type=s.device_type,
            healthy=s.health != "down" and c.health != "down",
        )
        for s in servers
        for c in s.cards
    )
    running = _running(repo, servers, names)
    pending = _pending(repo, names)
    quotas = _quotas(repo, names, {w.tenant for w in pending} | {a.tenant for a in running})
    snapshot = AdmissionSnapshot(
        fleet=fleet,
        quotas=quotas,
        running=tuple(running),
        now_s=now_s,
        cohorts=repo.cohort_quotas(),
    )
    return snapshot, pending


def _quotas(
    repo: Repository, names: dict[int, str], with_work: set[str]
) -> tuple[TenantQuota, ...]:
    rows: dict[str, list[QuotaView]] = defaultdict(list)
    for view in repo.all_quota_views():
        rows[view.tenant_name].append(view)
    return tuple(_tenant_quota(t, rows.get(t, [])) for t in sorted(set(rows) | with_work))


def _tenant_quota(tenant: str, views: list[QuotaView]) -> TenantQuota:
    if not views:  # work but no quota: nominal 0, no cohort (nothing is ever admitted)
        return TenantQuota(tenant=tenant, priority_class=PriorityClass.BEST_EFFORT)
    first = views[0]
    return TenantQuota(
        tenant=tenant,
        cohort=first.cohort,
        priority_class=PriorityClass.parse(first.priority_class),
        nominal_cards={v.device_type: v.nominal_cards for v in views},
        borrowing_limit_cards={
            v.device_type: v.borrowing_limit_cards
            for v in views
            if v.borrowing_limit_cards is not None
        },
        lending_limit_cards={
            v.device_type: v.lending_limit_cards for v in views if v.lending_limit_cards is not None
        },
        tokens_per_s=first.tokens_per_s,
        stop_policy=StopPolicy(first.stop_policy),
        borrow_unnamed_device_types=first.borrow_unnamed_device_types,
        fair_share_weight=first.fair_share_weight,
    )


# Ledger rows are summed per time bucket of this share of a half-life and decayed from the
# bucket's middle: a row's weight is off by at most 2 ** (1 / 64) - 1 = 1.1 % (the exact decay
# of each row would read every row: 100,000 rows a cycle on a busy center).
_HISTORY_BUCKETS_PER_HALF_LIFE = 32


def usage_history(repo: Repository, now_s: float, half_life_s: float) -> dict[str, float]:
    """Each tenant's decayed card-seconds from the usage ledger (fair sharing by usage).

    A ledger row's device-seconds count as used at its time and decay with ``half_life_s``;
    rows older than ten half-lives (under 0.1 % left) are not read. Summed by the database per
    tenant and time bucket (:meth:`summarize_usage`), so a cycle's cost does not grow with the
    ledger.
    """
    names = {t.id: t.name for t in repo.list_tenants()}
    bucket_s = half_life_s / _HISTORY_BUCKETS_PER_HALF_LIFE
    out: dict[str, float] = {}
    for group in repo.summarize_usage(
        by=("tenant",), since_s=now_s - 10 * half_life_s, bucket_s=bucket_s
    ):
        if group.device_seconds <= 0 or group.tenant_id not in names:
            continue
        start_s = group.bucket_start_s if group.bucket_start_s is not None else now_s
        age_s = max(0.0, now_s - min(now_s, start_s + bucket_s / 2))
        kept = group.device_seconds * 0.5 ** (age_s / half_life_s)
        name = names[group.tenant_id]
        out[name] = out.get(name, 0.0) + kept
    return out


def check_admissible_any(
    repo: Repository, tenant: Tenant, device_types: Sequence[str], num_cards: int
) -> None:
    """:func:`check_admissible` for a fungible workload: it passes when one of its types does.

    Raises:
        NpuCenterError: the first type's error, when no type passes.
    """
    first: NpuCenterError | None = None
    for device_type in device_types:
        try:
            check_admissible(repo, tenant, device_type, num_cards)
        except (CapacityUnavailableError, InvalidConfigError, QuotaExceededError) as exc:
            first = first or exc
        else:
            return
    if first is not None:
        raise first


def check_admissible(repo: Repository, tenant: Tenant, device_type: str, num_cards: int) -> None:
    """Refuse a gang that no cycle could ever admit, with what to do about it.

    Raises:
        CapacityUnavailableError: the fleet has no server of ``device_type``.
        InvalidConfigError: no server of that type has ``num_cards`` cards (a gang is one server).
        QuotaExceededError: ``num_cards`` exceeds the tenant's nominal + borrowing limit.
    """
    sizes = [len(s.cards) for s in repo.list_servers() if s.device_type == device_type]
    if not sizes:
        raise CapacityUnavailableError(
            f"the fleet has no {device_type} server",
            hint="register one (`npucenter fleet add`) or choose another device type",
            device_type=device_type,
        )
    if num_cards > max(sizes):
        raise InvalidConfigError(
            "num_cards",
            num_cards,
            f"the largest {device_type} server has {max(sizes)} cards and a gang runs on one server",
        )
    quota = _tenant_quota(tenant.name, repo.tenant_quotas(tenant.id))
    limit = quota.max_cards(device_type)
    if num_cards > limit:
        raise QuotaExceededError(
            tenant.name,
            f"{device_type} cards",
            num_cards,
            limit,
            hint=f"the quota allows at most {limit:g} {device_type} cards at once "
            "(nominal + borrowing limit); ask the operator for more",
        )


def quota_cards(repo: Repository, tenant: Tenant, device_type: str) -> float:
    """The most ``device_type`` cards ``tenant``'s quota lets it hold at once (nominal +
    borrowing limit; inf without a limit)."""
    return _tenant_quota(tenant.name, repo.tenant_quotas(tenant.id)).max_cards(device_type)


def _running(repo: Repository, servers: list[ServerRow], names: dict[int, str]) -> list[Admitted]:
    cards = {c.id: (s, c) for s in servers for c in s.cards}
    by_job: dict[int, list[Allocation]] = defaultdict(list)
    by_replica: dict[int, list[Allocation]] = defaultdict(list)
    for alloc in repo.allocations():
        if alloc.job_id is not None:
            by_job[alloc.job_id].append(alloc)
        elif alloc.replica_id is not None:
            by_replica[alloc.replica_id].append(alloc)
    # Load the holders in three queries.
    jobs = repo.jobs_by_id(by_job)
    reps = repo.replicas_by_id(by_replica)
    deps = repo.deployments_by_id({r.deployment_id for r in reps.values()})
    out: list[Admitted] = []
    for job_id, allocs in sorted(by_job.items()):
        job = jobs[job_id]
        out.append(
            _admitted(
                _wid("job", job_id),
                names[job.tenant_id],
                WorkloadKind(job.kind),
                job.device_type,
                1,
                job.priority_class,
                job.admitted_at_s,
                allocs,
                cards,
            )
        )
    for rep_id, allocs in sorted(by_replica.items()):
        rep = reps[rep_id]
        dep = deps[rep.deployment_id]
        out.append(
            _admitted(
                _wid("replica", rep_id),
                names[dep.tenant_id],
                WorkloadKind.REPLICA,
                rep.device_type or dep.device_type,
                dep.tp,
                dep.priority_class,
                rep.placed_at_s,
                allocs,
                cards,
            )
        )
    return out


def _admitted(
    workload_id: str,
    tenant: str,
    kind: WorkloadKind,
    device_type: str,
    tp: int,
    priority: str,
    since_s: float | None,
    allocs: list[Allocation],
    cards: dict[int, tuple[ServerRow, CardRow]],
) -> Admitted:
    server = cards[allocs[0].card_id][0]
    return Admitted(
        workload_id=workload_id,
        tenant=tenant,
        kind=kind,
        device_type=device_type,
        server_id=server.name,
        card_indices=tuple(sorted(cards[a.card_id][1].index for a in allocs)),
        tp_size=tp,
        priority_class=PriorityClass.parse(priority),
        admitted_s=since_s or 0.0,
        borrowed_cards=sum(1 for a in allocs if a.borrowed),
    )


def _pending(repo: Repository, names: dict[int, str]) -> list[Workload]:
    out: list[Workload] = []
    for job in repo.list_jobs(state="queued"):
        if job.num_cards == 0:  # a host job (policy.admission.host): no card to place
            continue
        accepts = list(job.device_types or ()) or [job.device_type]
        out.append(
            Workload(
                workload_id=_wid("job", job.id),
                tenant=names[job.tenant_id],
                kind=WorkloadKind(job.kind),
                device_type=accepts[0],
                fallback_device_types=tuple(accepts[1:]),
                num_cards=job.num_cards,
                tp_size=1,
                priority_class=PriorityClass.parse(job.priority_class),
                submitted_s=job.created_at_s,
            )
        )
    deployments = {d.id: d for d in repo.list_deployments()}
    for rep in repo.replicas_in_state("pending"):
        dep = deployments[rep.deployment_id]
        accepts = dep.accepted_device_types()
        out.append(
            Workload(
                workload_id=_wid("replica", rep.id),
                tenant=names[dep.tenant_id],
                kind=WorkloadKind.REPLICA,
                device_type=accepts[0],
                fallback_device_types=tuple(accepts[1:]),
                num_cards=dep.tp,
                tp_size=dep.tp,
                priority_class=PriorityClass.parse(dep.priority_class),
                submitted_s=rep.created_at_s,
            )
        )
    return out


def _apply(repo: Repository, decision: AdmissionDecision, num_pending: int) -> AdmissionReport:
    preempted: list[AllocationOut] = []
    for stop in decision.preempted:
        kind, _, raw_id = stop.workload_id.partition(":")
        reason = _shown(f"{stop.reason.value}: {stop.message}")[:500]
        if kind == "job":
            repo.preempt_job(repo.get_job(int(raw_id)), reason=reason)
        else:
            rep = repo.get_replica(int(raw_id))
            dep = repo.get_deployment(rep.deployment_id, deleted=True)  # deleted: it drains
            repo.release_replica(
                rep, dep, reason=f"preempted ({stop.reason.value})", kind="preemption"
            )
        preempted.append(
            AllocationOut(workload=_shown(stop.workload_id), tenant=stop.tenant, reason=reason)
        )
        log.info("preempted %s of %s: %s", preempted[-1].workload, stop.tenant, reason)
    servers = {s.name: s for s in repo.list_servers()}
    admitted: list[AllocationOut] = []
    for placed in decision.admitted:
        server = servers[placed.server_id]
        by_index = {c.index: c.id for c in server.cards}
        card_ids = [by_index[i] for i in placed.card_indices]
        kind, _, raw_id = placed.workload_id.partition(":")
        if kind == "job":
            job = repo.get_job(int(raw_id))
            job.device_type = placed.device_type  # a fungible job runs where admission put it
            repo.admit_job(
                job,
                card_ids,
                num_borrowed=placed.borrowed_cards,
                reason=f"admitted on {server.name}"
                + (f" borrowing {placed.borrowed_cards} cards" if placed.borrowed_cards else ""),
            )
        else:
            rep = repo.get_replica(int(raw_id))
            dep = repo.get_deployment(rep.deployment_id)
            repo.place_replica(  # a fungible replica runs where admission put it
                rep,
                dep,
                card_ids,
                num_borrowed=placed.borrowed_cards,
                device_type=placed.device_type,
            )
        admitted.append(
            AllocationOut(
                workload=_shown(placed.workload_id),
                tenant=placed.tenant,
                server=server.name,
                card_indexes=list(placed.card_indices),
                num_borrowed_cards=placed.borrowed_cards,
            )
        )
    return AdmissionReport(
        admitted=admitted,
        preempted=preempted,
        pending=[
            PendingOut(
                workload=_shown(p.workload_id),
                tenant=p.tenant,
                reason=p.reason.value,
                message=_shown(p.message),
            )
            for p in decision.pending
        ],
        num_pending=num_pending,
        num_still_pending=len(decision.pending),
    )
