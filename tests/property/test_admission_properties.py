"""Hypothesis invariants of decide_admission, over random fleets, quotas, cohorts and queues.

Each scenario runs two cycles: the first fills the fleet (owners and borrowers), the second runs
on that state (with a server possibly gone unhealthy) and is the one checked.
"""

from __future__ import annotations

import random
from collections import Counter
from dataclasses import dataclass, replace

from hypothesis import given, settings
from hypothesis import strategies as st

from npucenter.policy.admission import (
    AdmissionDecision,
    AdmissionPolicy,
    AdmissionSnapshot,
    Admitted,
    PreemptionPolicy,
    PreemptionReason,
    PriorityClass,
    Server,
    TenantQuota,
    Workload,
    decide_admission,
)

TYPES = ("rngd", "h100")
COHORTS = (None, "x", "x", "y")


@dataclass
class Scenario:
    snapshot: AdmissionSnapshot  # the state the checked cycle reads
    pending: list[Workload]
    policy: AdmissionPolicy


@st.composite
def servers(draw: st.DrawFn, healthy_only: bool = False) -> tuple[Server, ...]:
    fleet = []
    for device_type in TYPES:
        for i in range(draw(st.integers(0, 3))):
            cards = draw(st.integers(1, 8))
            split = draw(st.booleans())
            groups = tuple(0 if j < cards // 2 else 1 for j in range(cards)) if split else ()
            bad = (
                frozenset()
                if healthy_only
                else draw(st.frozensets(st.integers(0, cards - 1), max_size=1))
            )
            fleet.append(
                Server(
                    server_id=f"{device_type}-{i}",
                    device_type=device_type,
                    num_cards=cards,
                    interconnect_groups=groups,
                    unhealthy_card_indices=bad,
                )
            )
    return tuple(fleet)


@st.composite
def quotas(
    draw: st.DrawFn,
    num_tenants: int,
    caps: dict[str, int] | None = None,
    cohorts: tuple[str | None, ...] = COHORTS,
) -> tuple[TenantQuota, ...]:
    out = []
    left = dict(caps) if caps is not None else None
    for t in range(num_tenants):
        nominal, borrowing, lending = {}, {}, {}
        for d in TYPES:
            top = 8 if left is None else left[d]
            n = draw(st.integers(0, max(0, top)))
            if left is not None:
                left[d] -= n
            nominal[d] = n
            if draw(st.booleans()):
                borrowing[d] = draw(st.integers(0, 6))
            if n and draw(st.booleans()):
                lending[d] = draw(st.integers(0, n))
        out.append(
            TenantQuota(
                tenant=f"t{t}",
                cohort=draw(st.sampled_from(cohorts)),
                priority_class=draw(st.sampled_from(list(PriorityClass))),
                nominal_cards=nominal,
                borrowing_limit_cards=borrowing,
                lending_limit_cards=lending,
                fair_share_weight=draw(st.sampled_from([0.5, 1.0, 2.0])),
            )
        )
    return tuple(out)


@st.composite
def workloads(
    draw: st.DrawFn, prefix: str, num_tenants: int, *, single_card: bool = False, max_size: int = 14
) -> list[Workload]:
    out = []
    for i in range(draw(st.integers(0, max_size))):
        cards = 1 if single_card else draw(st.sampled_from([1, 1, 2, 4, 8]))
        tp = draw(st.sampled_from([tp for tp in (1, 2, 4) if cards % tp == 0]))
        out.append(
            Workload(
                workload_id=f"{prefix}{i}",
                tenant=f"t{draw(st.integers(0, num_tenants - 1))}",
                kind=draw(st.sampled_from(["replica", "finetune", "preprocess", "benchmark"])),
                device_type=draw(st.sampled_from(TYPES)),
                num_cards=cards,
                tp_size=tp,
                priority_class=draw(st.none() | st.sampled_from(list(PriorityClass))),
                submitted_s=float(draw(st.integers(0, 5))),
            )
        )
    return out


@st.composite
def policies(draw: st.DrawFn) -> AdmissionPolicy:
    return AdmissionPolicy(
        reclaim_within_cohort=draw(st.sampled_from(list(PreemptionPolicy))),
        within_tenant=draw(
            st.sampled_from([PreemptionPolicy.NEVER, PreemptionPolicy.LOWER_PRIORITY])
        ),
        fair_sharing=draw(st.booleans()),
    )


@st.composite
def scenarios(draw: st.DrawFn) -> Scenario:
    fleet = draw(servers())
    num_tenants = draw(st.integers(1, 4))
    qs = draw(quotas(num_tenants))
    policy = draw(policies())
    first = decide_admission(
        AdmissionSnapshot(fleet=fleet, quotas=qs),
        draw(workloads("a", num_tenants, max_size=24)),
        policy=policy,
    )
    if fleet and draw(st.booleans()):  # a server fails between the cycles
        i = draw(st.integers(0, len(fleet) - 1))
        fleet = (*fleet[:i], replace(fleet[i], healthy=False), *fleet[i + 1 :])
    snapshot = AdmissionSnapshot(fleet=fleet, quotas=qs, running=first.admitted, now_s=10.0)
    pending = draw(workloads("b", num_tenants))
    held = usage_of(list(first.admitted))
    owner = qs[draw(st.integers(0, num_tenants - 1))]
    for d in TYPES:  # an owner coming back for its nominal cards, at its top priority
        room = max(0, owner.nominal(d) - held[(owner.tenant, d)])
        for i in range(draw(st.integers(0, room))):
            pending.append(Workload(workload_id=f"own-{d}-{i}", tenant=owner.tenant, device_type=d))
    return Scenario(snapshot=snapshot, pending=pending, policy=policy)


def after(snapshot: AdmissionSnapshot, decision: AdmissionDecision) -> list[Admitted]:
    stopped = decision.preempted_ids()
    kept = [a for a in snapshot.running if a.workload_id not in stopped]
    return kept + list(decision.admitted)


def usage_of(entries: list[Admitted]) -> Counter[tuple[str, str]]:
    used: Counter[tuple[str, str]] = Counter()
    for a in entries:
        used[(a.tenant, a.device_type)] += a.num_cards
    return used


@settings(max_examples=150, deadline=None)
@given(scenarios())
def test_never_admits_beyond_free_capacity(sc: Scenario) -> None:
    decision = decide_admission(sc.snapshot, sc.pending, policy=sc.policy)
    servers_by_id = {s.server_id: s for s in sc.snapshot.fleet}
    holders: dict[tuple[str, int], str] = {}
    for a in after(sc.snapshot, decision):
        server = servers_by_id[a.server_id]  # a gang lives on one known server
        assert server.device_type == a.device_type
        for card in a.card_indices:
            assert card in server.usable_card_indices(), (a, server)
            assert (a.server_id, card) not in holders, f"card given twice: {a.workload_id}"
            holders[(a.server_id, card)] = a.workload_id
    for a in decision.admitted:
        server = servers_by_id[a.server_id]
        for start in range(0, a.num_cards, a.tp_size):
            group = a.card_indices[start : start + a.tp_size]
            assert len({server.group_of(i) for i in group}) == 1, "TP group spans interconnects"


@settings(max_examples=150, deadline=None)
@given(scenarios())
def test_no_tenant_exceeds_nominal_plus_borrowing_and_no_cohort_overlends(sc: Scenario) -> None:
    decision = decide_admission(sc.snapshot, sc.pending, policy=sc.policy)
    used = usage_of(after(sc.snapshot, decision))
    pool_used: Counter[tuple[str, str]] = Counter()
    pool_cap: Counter[tuple[str, str]] = Counter()
    for q in sc.snapshot.quotas:
        for d in TYPES:
            u = used[(q.tenant, d)]
            assert u <= q.max_cards(d), (q.tenant, d, u)
            if q.cohort is None:
                assert u <= q.nominal(d)
            else:
                pool_used[(q.cohort, d)] += max(0, u - q.guaranteed(d))
                pool_cap[(q.cohort, d)] += q.lending_limit(d)
    for key, amount in pool_used.items():
        assert amount <= pool_cap[key], key
    for q in sc.snapshot.quotas:  # the reported usage is the true usage
        report = decision.usage[q.tenant]
        assert {d: n for d, n in report.used_cards.items()} == {
            d: used[(q.tenant, d)] for d in TYPES if used[(q.tenant, d)]
        }


@settings(max_examples=150, deadline=None)
@given(scenarios())
def test_every_pending_workload_is_admitted_or_explained_once(sc: Scenario) -> None:
    decision = decide_admission(sc.snapshot, sc.pending, policy=sc.policy)
    admitted = [a.workload_id for a in decision.admitted]
    waiting = [p.workload_id for p in decision.pending]
    assert sorted(admitted + waiting) == sorted(w.workload_id for w in sc.pending)
    assert all(p.message for p in decision.pending)
    running = {a.workload_id: a for a in sc.snapshot.running}
    assert decision.preempted_ids() <= set(running)
    assert len(decision.preempted) == len(decision.preempted_ids())


def check_preemptions(
    snapshot: AdmissionSnapshot, policy: AdmissionPolicy, decision: AdmissionDecision
) -> None:
    before = usage_of(list(snapshot.running))
    quotas = {q.tenant: q for q in snapshot.quotas}
    admitted = {a.workload_id: a for a in decision.admitted}
    running = {a.workload_id: a for a in snapshot.running}
    for stop in decision.preempted:
        victim = running[stop.workload_id]
        if stop.reason is PreemptionReason.UNHEALTHY:
            server = next((s for s in snapshot.fleet if s.server_id == victim.server_id), None)
            assert server is None or not set(victim.card_indices) <= set(
                server.usable_card_indices()
            )
            continue
        by = admitted[stop.by_workload_id]  # a preemption always makes room for an admission
        assert by.device_type == victim.device_type
        if stop.reason is PreemptionReason.PRIORITY:
            assert victim.tenant == by.tenant and victim.priority_class < by.priority_class
        else:
            assert stop.reason is PreemptionReason.RECLAIM
            assert policy.reclaim_within_cohort is not PreemptionPolicy.NEVER
            if policy.reclaim_within_cohort is PreemptionPolicy.LOWER_PRIORITY:
                assert victim.priority_class < by.priority_class
            owner, lender = quotas[by.tenant], quotas[victim.tenant]
            assert owner.cohort is not None and owner.cohort == lender.cohort
            assert before[(victim.tenant, victim.device_type)] > lender.nominal(victim.device_type)
            assert by.borrowed_cards == 0  # only an owner within its nominal reclaims


@settings(max_examples=150, deadline=None)
@given(scenarios())
def test_preemptions_follow_the_rules(sc: Scenario) -> None:
    decision = decide_admission(sc.snapshot, sc.pending, policy=sc.policy)
    check_preemptions(sc.snapshot, sc.policy, decision)


@settings(max_examples=100, deadline=None)
@given(scenarios(), st.randoms(use_true_random=False))
def test_same_input_gives_the_same_decision(sc: Scenario, rng: random.Random) -> None:
    decision = decide_admission(sc.snapshot, sc.pending, policy=sc.policy)
    assert decide_admission(sc.snapshot, sc.pending, policy=sc.policy) == decision
    pending, fleet, qs, running = (
        list(sc.pending),
        list(sc.snapshot.fleet),
        list(sc.snapshot.quotas),
        list(sc.snapshot.running),
    )
    for items in (pending, fleet, qs, running):
        rng.shuffle(items)
    shuffled = replace(sc.snapshot, fleet=tuple(fleet), quotas=tuple(qs), running=tuple(running))
    assert decide_admission(shuffled, pending, policy=sc.policy) == decision


@st.composite
def reclaim_scenarios(draw: st.DrawFn) -> tuple[AdmissionSnapshot, list[Workload], set[str]]:
    """Single-card work on a healthy fleet whose nominal quotas fit it; returns the owners."""
    fleet = draw(servers(healthy_only=True))
    caps = {d: sum(s.num_cards for s in fleet if s.device_type == d) for d in TYPES}
    num_tenants = draw(st.integers(2, 4))
    qs = draw(quotas(num_tenants, caps, cohorts=("x", "x", "x", None)))
    first = decide_admission(
        AdmissionSnapshot(fleet=fleet, quotas=qs),
        draw(workloads("a", num_tenants, single_card=True, max_size=30)),
    )
    snapshot = AdmissionSnapshot(fleet=fleet, quotas=qs, running=first.admitted, now_s=10.0)
    held = usage_of(list(first.admitted))
    pending: list[Workload] = []
    owners: set[str] = set()
    for q in qs:
        if draw(st.booleans()):  # an owner: asks for at most what its nominal leaves
            owners.add(q.tenant)
            for d in TYPES:
                room = max(0, q.nominal(d) - held[(q.tenant, d)])
                for i in range(draw(st.integers(0, room))):
                    pending.append(
                        Workload(
                            workload_id=f"own-{q.tenant}-{d}-{i}",
                            tenant=q.tenant,
                            device_type=d,
                            submitted_s=float(draw(st.integers(0, 9))),
                        )
                    )
        else:  # anyone else may ask for anything
            for w in draw(workloads(f"any-{q.tenant}-", num_tenants, single_card=True)):
                pending.append(replace(w, tenant=q.tenant))
    return snapshot, pending, owners


@settings(max_examples=250, deadline=None)
@given(reclaim_scenarios())
def test_reclaim_always_frees_the_owners_nominal_quota(
    case: tuple[AdmissionSnapshot, list[Workload], set[str]],
) -> None:
    snapshot, pending, owners = case
    decision = decide_admission(snapshot, pending)
    check_preemptions(snapshot, AdmissionPolicy(), decision)
    admitted = decision.admitted_ids()
    for w in pending:
        if w.tenant in owners:
            assert w.workload_id in admitted, decision.pending_reason(w.workload_id)
    used = usage_of(after(snapshot, decision))
    for q in snapshot.quotas:
        if q.tenant in owners:
            for d in TYPES:
                asked = sum(1 for w in pending if w.tenant == q.tenant and w.device_type == d)
                had = usage_of(list(snapshot.running))[(q.tenant, d)]
                assert used[(q.tenant, d)] >= min(q.nominal(d), had + asked)
