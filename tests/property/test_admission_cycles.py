"""Hypothesis invariants of decide_admission over random multi-cycle scenarios (issue 17).

A random center (flat or nested cohorts, lending and borrowing limits, weights, random policy
features) runs several cycles: work arrives, some finishes, preempted work is requeued. Every
cycle is checked against Kueue's invariants, computed here independently of the policy code:
never beyond capacity or any limit of the quota tree; a reclaim victim's tenant was above its
nominal with the work it ran before the cycle; no two tenants take cards of one device type from
each other in one cycle (two owners may each reclaim their nominal of a different type from the
other in one cycle, as Kueue's scheduler does: see test_admission_kueue.py).
A last scenario checks that an owner's nominal comes back within a bounded number of cycles.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, replace

from hypothesis import given, settings
from hypothesis import strategies as st

from npucenter.policy.admission import (
    AdmissionDecision,
    AdmissionPolicy,
    AdmissionSnapshot,
    Admitted,
    CohortQuota,
    FairSharingBasis,
    PreemptionPolicy,
    PreemptionReason,
    PriorityClass,
    Server,
    TenantQuota,
    Workload,
    decide_admission,
)

TYPES = ("rngd", "h100")
CYCLES = 5
OWNER_BOUND = 2  # cycles an owner waits at most for its nominal cards


@dataclass
class Center:
    fleet: tuple[Server, ...]
    quotas: tuple[TenantQuota, ...]
    cohorts: tuple[CohortQuota, ...]
    policy: AdmissionPolicy


@st.composite
def centers(draw: st.DrawFn, *, reclaim_any: bool = False) -> Center:
    fleet = []
    for d in TYPES:
        for i in range(draw(st.integers(1, 3))):
            fleet.append(
                Server(server_id=f"{d}-{i}", device_type=d, num_cards=draw(st.integers(1, 6)))
            )
    caps = {d: sum(s.num_cards for s in fleet if s.device_type == d) for d in TYPES}
    left = dict(caps)
    nested = draw(st.booleans())
    cohorts: list[CohortQuota] = []
    if nested:  # center -> x (with cards of its own), y
        own = {d: draw(st.integers(0, max(0, left[d] // 3))) for d in TYPES}
        for d in TYPES:
            left[d] -= own[d]
        cohorts = [
            CohortQuota(name="root"),
            CohortQuota(
                name="x",
                parent="root",
                nominal_cards=own,
                borrowing_limit_cards=draw(
                    st.sampled_from([{}, {"rngd": 1}, {"rngd": 0, "h100": 2}])
                ),
            ),
            CohortQuota(
                name="y", parent="root", fair_share_weight=draw(st.sampled_from([1.0, 2.0]))
            ),
        ]
    quotas = []
    for t in range(draw(st.integers(2, 4))):
        nominal, borrowing, lending = {}, {}, {}
        for d in TYPES:
            if draw(st.integers(0, 3)) == 0:
                continue  # the quota does not name this type
            n = draw(st.integers(0, left[d]))
            left[d] -= n
            nominal[d] = n
            if draw(st.booleans()):
                borrowing[d] = draw(st.integers(0, 4))
            if n and draw(st.booleans()):
                lending[d] = draw(st.integers(0, n))
        quotas.append(
            TenantQuota(
                tenant=f"t{t}",
                cohort=draw(st.sampled_from(["x", "x", "y", None])),
                priority_class=draw(st.sampled_from(list(PriorityClass))),
                nominal_cards=nominal,
                borrowing_limit_cards=borrowing,
                lending_limit_cards=lending,
                fair_share_weight=draw(st.sampled_from([0.5, 1.0, 2.0])),
                borrow_unnamed_device_types=draw(st.booleans()),
            )
        )
    policy = AdmissionPolicy(
        reclaim_within_cohort=PreemptionPolicy.ANY
        if reclaim_any
        else draw(st.sampled_from(list(PreemptionPolicy))),
        within_tenant=draw(
            st.sampled_from([PreemptionPolicy.NEVER, PreemptionPolicy.LOWER_PRIORITY])
        ),
        fair_sharing=draw(st.booleans()),
        fair_sharing_basis=draw(st.sampled_from(list(FairSharingBasis))),
        fair_sharing_preemption=draw(st.booleans()),
        borrow_within_cohort=draw(
            st.sampled_from([PreemptionPolicy.NEVER, PreemptionPolicy.LOWER_PRIORITY])
        ),
    )
    return Center(fleet=tuple(fleet), quotas=tuple(quotas), cohorts=tuple(cohorts), policy=policy)


@st.composite
def arrivals(draw: st.DrawFn, prefix: str, tenants: list[str], now_s: float) -> list[Workload]:
    out = []
    for i in range(draw(st.integers(2, 14))):
        cards = draw(st.sampled_from([1, 1, 1, 2, 4]))
        first = draw(st.sampled_from(TYPES))
        out.append(
            Workload(
                workload_id=f"{prefix}{i}",
                tenant=draw(st.sampled_from(tenants)),
                device_type=first,
                fallback_device_types=draw(
                    st.sampled_from([(), tuple(d for d in TYPES if d != first)])
                ),
                num_cards=cards,
                priority_class=draw(st.none() | st.sampled_from(list(PriorityClass))),
                submitted_s=now_s + i,
            )
        )
    return out


# -- an independent model of Kueue's quota tree ------------------------------------------------


def _parents(c: Center) -> dict[str, str | None]:
    parent: dict[str, str | None] = {q.tenant: q.cohort for q in c.quotas}
    for name in {q.cohort for q in c.quotas if q.cohort}:
        parent.setdefault(name, None)
    for k in c.cohorts:
        parent[k.name] = k.parent
    return parent


def tree_check(c: Center, running: list[Admitted]) -> None:
    """Kueue's invariants: every node within its quota plus what it may borrow."""
    parent = _parents(c)
    specs = {k.name: k for k in c.cohorts}
    quotas = {q.tenant: q for q in c.quotas}
    nodes = sorted(parent, key=lambda n: -_depth(parent, n))
    for d in TYPES:
        sq: Counter[str] = Counter()
        lq: dict[str, int] = {}
        use: Counter[str] = Counter()
        for a in running:
            if a.device_type == d:
                use[a.tenant] += a.num_cards
        for n in nodes:
            if n in quotas:
                sq[n] += quotas[n].nominal(d)
                lending = quotas[n].lending_limit_cards.get(d)
            else:
                spec = specs.get(n)
                sq[n] += spec.nominal_cards.get(d, 0) if spec else 0
                lending = spec.lending_limit_cards.get(d) if spec else None
            lq[n] = 0 if lending is None else max(0, sq[n] - lending)
            if parent[n] is not None:
                sq[parent[n]] += sq[n] - lq[n]
                use[parent[n]] += max(0, use[n] - lq[n])
        for n in nodes:
            if parent[n] is None:
                assert use[n] <= sq[n], (n, d, use[n], sq[n])
                continue
            limit = (
                quotas[n].borrowing_limit(d)
                if n in quotas
                else (specs[n].borrowing_limit_cards.get(d) if n in specs else None)
            )
            if limit is not None:
                assert use[n] <= sq[n] + limit, (n, d, use[n], sq[n], limit)


def _depth(parent: dict[str, str | None], n: str) -> int:
    depth, at = 0, parent[n]
    while at is not None:
        depth, at = depth + 1, parent[at]
    return depth


def capacity_check(c: Center, running: list[Admitted]) -> None:
    servers = {s.server_id: s for s in c.fleet}
    taken: set[tuple[str, int]] = set()
    for a in running:
        assert servers[a.server_id].device_type == a.device_type
        for card in a.card_indices:
            assert card < servers[a.server_id].num_cards
            assert (a.server_id, card) not in taken, f"card given twice: {a.workload_id}"
            taken.add((a.server_id, card))


def preemption_check(
    c: Center, before: list[Admitted], decision: AdmissionDecision, pending: dict[str, Workload]
) -> None:
    """Victims of other tenants were borrowing with their old work; no A<->B on one type."""
    quotas = {q.tenant: q for q in c.quotas}
    old: Counter[tuple[str, str]] = Counter()
    by_id = {a.workload_id: a for a in before}
    for a in before:
        old[(a.tenant, a.device_type)] += a.num_cards
    pairs = set()
    for p in decision.preempted:
        victim = by_id[p.workload_id]
        key = (victim.tenant, victim.device_type)
        if p.reason in (
            PreemptionReason.RECLAIM,
            PreemptionReason.RECLAIM_WHILE_BORROWING,
            PreemptionReason.FAIR_SHARING,
        ):
            assert old[key] > quotas[victim.tenant].nominal(victim.device_type), (
                "preempted work of a tenant within its nominal quota",
                p,
            )
            by = pending[p.by_workload_id]  # type: ignore[index]
            assert by.tenant != victim.tenant
            pairs.add((by.tenant, victim.tenant, victim.device_type))
        elif p.reason is PreemptionReason.PRIORITY:
            assert pending[p.by_workload_id].tenant == victim.tenant  # type: ignore[index]
        old[key] -= victim.num_cards
    for a, b, d in pairs:
        assert (b, a, d) not in pairs, f"{a} and {b} preempted each other's {d} in one cycle"


@settings(max_examples=120, deadline=None)
@given(st.data())
def test_random_multi_cycle_scenarios_keep_kueues_invariants(data: st.DataObject) -> None:
    c = data.draw(centers())
    tenants = [q.tenant for q in c.quotas] + ["stranger"]
    running: list[Admitted] = []
    queue: dict[str, Workload] = {}
    for k in range(CYCLES):
        now_s = 100.0 * (k + 1)
        for w in data.draw(arrivals(f"c{k}-", tenants, now_s)):
            queue[w.workload_id] = w
        owner = data.draw(st.sampled_from(c.quotas))  # an owner comes back for its nominal
        d = data.draw(st.sampled_from(TYPES))
        had = sum(a.num_cards for a in running if a.tenant == owner.tenant and a.device_type == d)
        for i in range(max(0, owner.nominal(d) - had)):
            w = Workload(
                workload_id=f"c{k}-own{i}", tenant=owner.tenant, device_type=d, submitted_s=now_s
            )
            queue[w.workload_id] = w
        done = data.draw(
            st.sets(st.sampled_from([a.workload_id for a in running]), max_size=2)
            if running
            else st.just(set())
        )
        running = [a for a in running if a.workload_id not in done]
        snapshot = AdmissionSnapshot(
            fleet=c.fleet, quotas=c.quotas, cohorts=c.cohorts, running=tuple(running), now_s=now_s
        )
        decision = decide_admission(snapshot, list(queue.values()), policy=c.policy)
        preemption_check(c, running, decision, queue)
        stopped = decision.preempted_ids()
        requeued = {a.workload_id: a for a in running if a.workload_id in stopped}
        running = [a for a in running if a.workload_id not in stopped] + list(decision.admitted)
        capacity_check(c, running)
        tree_check(c, running)
        for a in decision.admitted:
            del queue[a.workload_id]
        for wid, a in requeued.items():
            queue[wid] = Workload(
                workload_id=wid, tenant=a.tenant, device_type=a.device_type, num_cards=a.num_cards,
                priority_class=a.priority_class, submitted_s=now_s,
            )  # fmt: skip
        assert {p.workload_id for p in decision.pending} <= set(queue)
        assert all(p.message for p in decision.pending)


@settings(max_examples=120, deadline=None)
@given(st.data())
def test_an_owners_nominal_comes_back_within_a_bounded_number_of_cycles(
    data: st.DataObject,
) -> None:
    c = data.draw(centers(reclaim_any=True))
    tenants = [q.tenant for q in c.quotas]
    running: list[Admitted] = []
    queue: dict[str, Workload] = {}
    for k in range(3):  # the center fills up: owners and borrowers
        for w in data.draw(arrivals(f"c{k}-", tenants, 100.0 * k)):
            queue[w.workload_id] = replace(w, num_cards=1)
        snapshot = AdmissionSnapshot(
            fleet=c.fleet,
            quotas=c.quotas,
            cohorts=c.cohorts,
            running=tuple(running),
            now_s=100.0 * k,
        )
        decision = decide_admission(snapshot, list(queue.values()), policy=c.policy)
        stopped = decision.preempted_ids()
        running = [a for a in running if a.workload_id not in stopped] + list(decision.admitted)
        for a in decision.admitted:
            del queue[a.workload_id]
    owner = data.draw(st.sampled_from(c.quotas))
    d = data.draw(st.sampled_from(TYPES))
    had = sum(a.num_cards for a in running if a.tenant == owner.tenant and a.device_type == d)
    asked = max(0, owner.nominal(d) - had)
    for i in range(asked):  # the owner comes back for its nominal, at its top class
        queue[f"own{i}"] = Workload(
            workload_id=f"own{i}", tenant=owner.tenant, device_type=d, submitted_s=1e3
        )
    for k in range(OWNER_BOUND):  # nothing finishes; preempted work is requeued
        snapshot = AdmissionSnapshot(
            fleet=c.fleet, quotas=c.quotas, cohorts=c.cohorts, running=tuple(running), now_s=1e3 + k
        )
        decision = decide_admission(snapshot, list(queue.values()), policy=c.policy)
        stopped = decision.preempted_ids()
        for a in running:
            if a.workload_id in stopped:
                queue[a.workload_id] = Workload(
                    workload_id=a.workload_id, tenant=a.tenant, device_type=a.device_type,
                    priority_class=a.priority_class, submitted_s=1e3 + k,
                )  # fmt: skip
        running = [a for a in running if a.workload_id not in stopped] + list(decision.admitted)
        for a in decision.admitted:
            del queue[a.workload_id]
    holds = sum(a.num_cards for a in running if a.tenant == owner.tenant and a.device_type == d)
    assert holds >= min(owner.nominal(d), had + asked), (owner, d, had, holds)
