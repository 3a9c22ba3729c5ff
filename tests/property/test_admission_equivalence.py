"""The faster admission cycle decides exactly as the reference cycle did (issue 17, item 1).

``admission_reference`` is a frozen copy of the cycle before the speed-ups (victim searches
skipped when an exact, cheap check shows they cannot succeed; queue heads found in O(1)). Random
centers run several cycles (work arrives, some ends, preempted work is requeued) and each cycle's
whole decision record, admitted placements, preemptions with their reasons and messages, pending
reasons and messages and per-tenant usage, must be equal. The scenarios are drawn from a seed so
that they may be larger than hypothesis' own structures allow (dozens of tenants and servers,
hundreds of workloads), and cover every policy knob, nested cohorts, lending and borrowing
limits, budgets, held and drained tenants, fungible and tensor-parallel workloads and unhealthy
cards.
"""

from __future__ import annotations

import importlib
import random
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest
from admission_reference import decide_admission_reference
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
    PriorityClass,
    Server,
    TenantQuota,
    Workload,
    decide_admission,
)

TYPES = ("rngd", "atom", "h100")
sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "benchmarks"))


@dataclass
class Center:
    fleet: tuple[Server, ...]
    quotas: tuple[TenantQuota, ...]
    cohorts: tuple[CohortQuota, ...]
    policy: AdmissionPolicy
    history: dict[str, float]


def _policy(rng: random.Random) -> AdmissionPolicy:
    return AdmissionPolicy(
        reclaim_within_cohort=rng.choice(list(PreemptionPolicy)),
        within_tenant=rng.choice([PreemptionPolicy.NEVER, PreemptionPolicy.LOWER_PRIORITY]),
        fair_sharing=rng.random() < 0.8,
        fair_sharing_basis=rng.choice(list(FairSharingBasis)),
        fair_sharing_preemption=rng.random() < 0.6,
        borrow_within_cohort=rng.choice([PreemptionPolicy.NEVER, PreemptionPolicy.LOWER_PRIORITY]),
        borrow_within_cohort_max_priority=rng.choice([None, None, *PriorityClass]),
    )


def center(rng: random.Random, *, size: int) -> Center:
    """A random center; ``size`` scales servers and tenants."""
    types = TYPES[: rng.randint(1, 3)]
    fleet = []
    for d in types:
        for i in range(rng.randint(2, 3 + 2 * size)):
            cards = rng.choice((1, 2, 4, 8, 8))
            groups = (0,) * (cards // 2) + (1,) * (cards - cards // 2) if cards > 2 else ()
            broken = frozenset({0}) if cards > 1 and rng.random() < 0.08 else frozenset()
            fleet.append(
                Server(
                    server_id=f"{d}-{i:02d}",
                    device_type=d,
                    num_cards=cards,
                    interconnect_groups=groups if rng.random() < 0.7 else (),
                    healthy=rng.random() > 0.03,
                    unhealthy_card_indices=broken,
                )
            )
    left = {d: sum(s.num_cards for s in fleet if s.device_type == d) for d in types}
    cohorts: list[CohortQuota] = []
    names: list[str] = []
    if rng.random() < 0.5:  # nested: root -> parents (some with cards of their own) -> leaves
        cohorts.append(CohortQuota(name="root"))
        for p in range(rng.randint(1, 3)):
            own = {d: rng.randint(0, left[d] // 6) for d in types if rng.random() < 0.5}
            for d, n in own.items():
                left[d] -= n
            cohorts.append(
                CohortQuota(
                    name=f"p{p}",
                    parent="root",
                    nominal_cards=own,
                    borrowing_limit_cards={d: rng.randint(0, 4) for d in own if rng.random() < 0.3},
                    lending_limit_cards={
                        d: rng.randint(0, n) for d, n in own.items() if rng.random() < 0.3
                    },
                    fair_share_weight=rng.choice((1.0, 1.0, 2.0)),
                )
            )
            for k in range(rng.randint(1, 2)):
                cohorts.append(CohortQuota(name=f"p{p}-c{k}", parent=f"p{p}"))
                names.append(f"p{p}-c{k}")
            names.append(f"p{p}")
    else:
        names += [f"c{k}" for k in range(rng.randint(1, 3))]
    quotas = []
    num_tenants = rng.randint(2, 3 + 2 * size)
    share = {d: 2 * left[d] // num_tenants for d in types}
    for t in range(num_tenants):
        nominal, borrowing, lending, budget = {}, {}, {}, {}
        for d in types:
            if rng.random() < 0.25:
                continue  # the quota does not name this type
            n = min(left[d], rng.randint(share[d] // 4, max(0, share[d])))
            left[d] -= n
            nominal[d] = n
            if rng.random() < 0.15:
                borrowing[d] = rng.randint(0, 12)
            if n and rng.random() < 0.3:
                lending[d] = rng.randint(0, n)
            if rng.random() < 0.1:
                budget[d] = float(rng.randint(0, 4000))
        quotas.append(
            TenantQuota(
                tenant=f"t{t:02d}",
                cohort=rng.choice(names) if rng.random() < 0.9 else None,
                priority_class=rng.choice(list(PriorityClass)),
                nominal_cards=nominal,
                borrowing_limit_cards=borrowing,
                lending_limit_cards=lending,
                device_seconds_budget=budget,
                fair_share_weight=rng.choice((0.0, 0.5, 1.0, 1.0, 2.0)),
                stop_policy=rng.choices(("none", "hold", "hold-and-drain"), (40, 1, 1))[0],
                borrow_unnamed_device_types=rng.random() < 0.2,
            )
        )
    history = {q.tenant: rng.uniform(0, 5e4) for q in quotas if rng.random() < 0.7}
    return Center(tuple(fleet), tuple(quotas), tuple(cohorts), _policy(rng), history)


def arrivals(
    rng: random.Random, c: Center, prefix: str, now_s: float, count: int
) -> list[Workload]:
    tenants = [q.tenant for q in c.quotas] + ["stranger"]
    # a few tenants submit in each cycle: the others' cards are lent, then reclaimed
    tenants = rng.sample(tenants, rng.randint(1, min(len(tenants), 6)))
    types = sorted({s.device_type for s in c.fleet} | {"rngd"})
    out = []
    for i in range(count):
        cards = rng.choice((1, 1, 1, 2, 2, 4, 8))
        first = rng.choice(types)
        others = [d for d in types if d != first]
        fallbacks = tuple(rng.sample(others, rng.randint(0, len(others))))
        out.append(
            Workload(
                workload_id=f"{prefix}{i:03d}",
                tenant=rng.choice(tenants),
                device_type=first,
                fallback_device_types=fallbacks if rng.random() < 0.4 else (),
                num_cards=cards,
                tp_size=rng.choice([tp for tp in (1, 2, 4) if cards % tp == 0]),
                priority_class=rng.choice([None, *PriorityClass]),
                submitted_s=now_s + rng.choice((0.0, 1.0, 2.0, i)),
                max_duration_s=rng.choice((None, None, 100.0, 900.0)),
            )
        )
    return out


def assert_same(new: AdmissionDecision, old: AdmissionDecision) -> None:
    assert new.admitted == old.admitted
    assert new.preempted == old.preempted
    assert new.pending == old.pending
    assert new.usage == old.usage
    assert new == old


def run_scenario(seed: int, *, size: int, cycles: int, per_cycle: int) -> int:
    """Run both cycles side by side; return how many preemptions were compared."""
    rng = random.Random(seed)
    c = center(rng, size=size)
    running: list[Admitted] = []
    queue: dict[str, Workload] = {}
    compared = 0
    for k in range(cycles):
        now_s = 100.0 * (k + 1)
        for w in arrivals(rng, c, f"c{k}-", now_s, rng.randint(1, per_cycle)):
            queue[w.workload_id] = w
        running = [a for a in running if rng.random() > 0.15]  # some work ends
        used: dict[str, dict[str, float]] = {}
        for a in running:
            per = used.setdefault(a.tenant, {})
            per[a.device_type] = per.get(a.device_type, 0.0) + 300.0 * a.num_cards
        snapshot = AdmissionSnapshot(
            fleet=c.fleet,
            quotas=c.quotas,
            cohorts=c.cohorts,
            running=tuple(running),
            now_s=now_s,
            device_seconds_used=used,
            usage_history_card_s=c.history,
        )
        pending = list(queue.values())
        rng.shuffle(pending)
        new = decide_admission(snapshot, pending, policy=c.policy)
        old = decide_admission_reference(snapshot, pending, policy=c.policy)
        assert_same(new, old)
        compared += len(new.preempted)
        stopped = new.preempted_ids()
        for a in running:
            if a.workload_id in stopped and rng.random() < 0.8:  # requeued
                queue[a.workload_id] = Workload(
                    workload_id=a.workload_id,
                    tenant=a.tenant,
                    device_type=a.device_type,
                    num_cards=a.num_cards,
                    tp_size=a.tp_size,
                    priority_class=a.priority_class,
                    submitted_s=now_s,
                )
        running = [a for a in running if a.workload_id not in stopped] + list(new.admitted)
        for a in new.admitted:
            del queue[a.workload_id]
    return compared


@settings(max_examples=300, deadline=None)
@given(seed=st.integers(0, 2**32 - 1))
def test_small_random_centers_decide_as_the_reference(seed: int) -> None:
    run_scenario(seed, size=1, cycles=5, per_cycle=14)


@settings(max_examples=60, deadline=None)
@given(seed=st.integers(0, 2**32 - 1))
def test_larger_random_centers_decide_as_the_reference(seed: int) -> None:
    run_scenario(seed, size=6, cycles=4, per_cycle=120)


def test_crowded_centers_with_many_preemptions_decide_as_the_reference() -> None:
    # many tenants over few servers, so that victim searches run, fail and succeed often
    compared = sum(
        run_scenario(seed, size=12, cycles=4, per_cycle=400) for seed in range(1000, 1010)
    )
    assert compared > 20  # the scenarios do exercise preemption


@pytest.mark.parametrize("features", [False, True], ids=["default", "every-feature"])
def test_the_benchmark_center_decides_as_the_reference(features: bool) -> None:
    # benchmarks/bench_admission.py's cycle: 10,000 pending over 1,000 cards, 100 tenants
    bench = importlib.import_module("bench_admission")
    snapshot, pending, policy = bench.build_snapshot(seed=11, features=features)
    new = decide_admission(snapshot, pending, policy=policy)
    assert_same(new, decide_admission_reference(snapshot, pending, policy=policy))
    assert new.preempted
