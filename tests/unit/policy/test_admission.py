"""Unit tests of decide_admission: one rule per test, on tiny fleets."""

from __future__ import annotations

import random
from dataclasses import replace

import pytest

from factories import make_quota, make_server, make_snapshot, make_workload
from npucenter.errors import InvalidConfigError
from npucenter.policy import admission as adm
from npucenter.policy.admission import (
    AdmissionPolicy,
    AdmissionSnapshot,
    Admitted,
    Card,
    PendingReason,
    PreemptionPolicy,
    PreemptionReason,
    PriorityClass,
    Server,
    TenantQuota,
    Workload,
    decide_admission,
    servers_from_cards,
)

P = PriorityClass


def server(sid: str, cards: int = 8, device: str = "rngd", **kw: object) -> Server:
    return make_server(sid, num_cards=cards, device_type=device, **kw)


def quota(tenant: str, nominal: int = 0, *, cohort: str | None = "c", **kw: object) -> TenantQuota:
    return make_quota(tenant, nominal, cohort=cohort, **kw)


def wl(wid: str, tenant: str, cards: int = 1, **kw: object) -> Workload:
    return make_workload(wid, tenant, cards, **kw)


def snap(fleet, quotas, running=(), now_s: float = 0.0, **kw) -> AdmissionSnapshot:
    return make_snapshot(fleet, quotas, running, now_s=now_s, **kw)


def run(snapshot: AdmissionSnapshot, pending, **kw):
    return decide_admission(snapshot, list(pending), **kw)


def then(snapshot: AdmissionSnapshot, decision, now_s: float) -> AdmissionSnapshot:
    """The snapshot after applying a decision (what the control plane does between cycles)."""
    stopped = decision.preempted_ids()
    running = [a for a in snapshot.running if a.workload_id not in stopped]
    return replace(snapshot, running=(*running, *decision.admitted), now_s=now_s)


def held(decision, tenant: str) -> int:
    return decision.usage[tenant].used_cards.get("rngd", 0)


# -- the public surface ---------------------------------------------------------------------


def test_all_matches_the_public_names() -> None:
    from npucenter.policy import quota
    from npucenter.policy.admission import types

    extra = {"decide_admission", "decayed_usage_card_s"}
    assert set(adm.__all__) == {*types.__all__, *quota.__all__, *extra}
    for module in (adm, types, quota):
        for name in module.__all__:
            assert getattr(module, name).__doc__, name


# -- placement and topology -----------------------------------------------------------------


def test_admits_within_nominal_on_distinct_cards_of_one_server() -> None:
    s = snap([server("s1")], [quota("a", 8)])
    d = run(s, [wl("w1", "a", 3), wl("w2", "a", 4)])
    assert d.admitted_ids() == {"w1", "w2"}
    cards = [c for a in d.admitted for c in a.card_indices]
    assert len(cards) == len(set(cards)) == 7
    assert all(a.server_id == "s1" and a.borrowed_cards == 0 for a in d.admitted)


def test_gang_is_never_split_across_servers() -> None:
    s = snap([server("s1", 4), server("s2", 4)], [quota("a", 8)])
    d = run(s, [wl("big", "a", 8)])
    assert d.pending_reason("big") is PendingReason.UNSCHEDULABLE
    d2 = run(s, [wl("four", "a", 4), wl("another", "a", 4)])
    assert {a.server_id for a in d2.admitted} == {"s1", "s2"}


def test_gang_waits_when_free_cards_are_fragmented() -> None:
    fleet = [server("s1", 4), server("s2", 4)]
    running = [
        Admitted(
            workload_id=f"r{i}",
            tenant="a",
            device_type="rngd",
            server_id=f"s{i}",
            card_indices=(0, 1),
            priority_class=P.PRODUCTION,
        )
        for i in (1, 2)
    ]
    d = run(snap(fleet, [quota("a", 8)], running), [wl("w", "a", 4)])
    assert d.pending_reason("w") is PendingReason.NO_CAPACITY
    assert not d.preempted  # same priority: nothing to preempt


def test_tp_group_stays_inside_one_interconnect_group() -> None:
    groups = (0, 0, 0, 0, 1, 1, 1, 1)
    fleet = [server("s1", 8, interconnect_groups=groups)]
    # two cards busy in each island: 2 + 2 free, so no 4-card TP group fits but two 2-card ones do
    running = [
        Admitted(
            workload_id="r",
            tenant="a",
            device_type="rngd",
            server_id="s1",
            card_indices=(0, 1, 4, 5),
            priority_class=P.PRODUCTION,
        )
    ]
    s = snap(fleet, [quota("a", 8)], running)
    d = run(s, [wl("tp4", "a", 4, tp_size=4)])
    assert d.pending_reason("tp4") is PendingReason.NO_CAPACITY
    d = run(s, [wl("tp2", "a", 4, tp_size=2)])
    (placed,) = d.admitted
    for start in range(0, 4, 2):
        pair = placed.card_indices[start : start + 2]
        assert len({groups[i] for i in pair}) == 1


def test_best_fit_keeps_a_whole_server_free_for_a_later_gang() -> None:
    fleet = [server("s1", 8), server("s2", 8)]
    running = [
        Admitted(
            workload_id="r",
            tenant="a",
            device_type="rngd",
            server_id="s2",
            card_indices=(0, 1, 2, 3, 4),
        )
    ]
    d = run(
        snap(fleet, [quota("a", 16)], running),
        [wl("small", "a", 2, submitted_s=0), wl("gang", "a", 8, submitted_s=1)],
    )
    placed = {a.workload_id: a.server_id for a in d.admitted}
    assert placed == {"small": "s2", "gang": "s1"}


def test_unhealthy_cards_and_servers_are_never_used() -> None:
    fleet = [
        server("s1", 4, unhealthy_card_indices=frozenset({0, 1})),
        server("s2", 4, healthy=False),
    ]
    d = run(snap(fleet, [quota("a", 8)]), [wl(f"w{i}", "a", 1) for i in range(4)])
    assert len(d.admitted) == 2
    assert {c for a in d.admitted for c in a.card_indices} == {2, 3}
    assert all(a.server_id == "s1" for a in d.admitted)


def test_running_work_on_unhealthy_hardware_is_evicted() -> None:
    fleet = [server("s1", 4, healthy=False), server("s2", 4, unhealthy_card_indices=frozenset({3}))]
    running = [
        Admitted(
            workload_id="on-bad-server",
            tenant="a",
            device_type="rngd",
            server_id="s1",
            card_indices=(0,),
        ),
        Admitted(
            workload_id="on-bad-card",
            tenant="a",
            device_type="rngd",
            server_id="s2",
            card_indices=(3,),
        ),
        Admitted(
            workload_id="gone", tenant="a", device_type="rngd", server_id="s9", card_indices=(0,)
        ),
        Admitted(
            workload_id="fine", tenant="a", device_type="rngd", server_id="s2", card_indices=(0,)
        ),
    ]
    d = run(snap(fleet, [quota("a", 8)], running), [])
    assert {p.workload_id for p in d.preempted} == {"on-bad-server", "on-bad-card", "gone"}
    assert all(p.reason is PreemptionReason.UNHEALTHY for p in d.preempted)
    assert held(d, "a") == 1


def test_unknown_device_type_is_unschedulable() -> None:
    d = run(snap([server("s1")], [quota("a", 8)]), [wl("w", "a", 1, device_type="atom")])
    assert d.pending_reason("w") is PendingReason.UNSCHEDULABLE
    assert "atom" in d.pending[0].message


# -- quotas, borrowing and lending ----------------------------------------------------------


def test_tenant_without_cohort_never_exceeds_nominal() -> None:
    s = snap([server("s1")], [quota("a", 2, cohort=None)])
    d = run(s, [wl("w1", "a", 2), wl("w2", "a", 1), wl("w3", "a", 3)])
    assert d.admitted_ids() == {"w1"}
    assert d.pending_reason("w2") is PendingReason.QUOTA_IN_USE
    assert d.pending_reason("w3") is PendingReason.QUOTA_LIMIT


def test_borrowing_is_capped_by_the_borrowing_limit() -> None:
    quotas = [quota("a", 2, borrowing_limit_cards={"rngd": 3}), quota("b", 6)]
    d = run(snap([server("s1")], quotas), [wl(f"w{i}", "a", 1, submitted_s=i) for i in range(8)])
    assert len(d.admitted) == 5
    assert held(d, "a") == 5
    assert d.usage["a"].borrowed_cards == {"rngd": 3}
    assert sum(a.borrowed_cards for a in d.admitted) == 3


def test_lending_limit_keeps_part_of_the_lenders_quota() -> None:
    quotas = [quota("a", 0), quota("b", 8, lending_limit_cards={"rngd": 3})]
    d = run(snap([server("s1")], quotas), [wl(f"w{i}", "a", 1, submitted_s=i) for i in range(8)])
    assert held(d, "a") == 3
    # the cohort can never lend a more than 3: the rest waits for a's own work to end
    assert {p.reason for p in d.pending} == {PendingReason.QUOTA_IN_USE}


def test_tenants_in_other_cohorts_do_not_lend() -> None:
    quotas = [quota("a", 0, cohort="x"), quota("b", 8, cohort="y")]
    d = run(snap([server("s1")], quotas), [wl("w", "a", 1)])
    # nobody in a's cohort could ever lend it a card: an operator must act
    assert d.pending_reason("w") is PendingReason.QUOTA_LIMIT
    assert not d.admitted


def test_priority_class_is_capped_by_the_tenant() -> None:
    quotas = [quota("uni", 4, priority_class=P.EDUCATION)]
    d = run(snap([server("s1")], quotas), [wl("w", "uni", 1, priority_class=P.PRODUCTION)])
    assert d.admitted[0].priority_class is P.EDUCATION


def test_device_seconds_budget_blocks_new_work() -> None:
    q = quota("a", 8, device_seconds_budget={"rngd": 100.0})
    fleet = [server("s1")]
    spent = snap(fleet, [q], device_seconds_used={"a": {"rngd": 100.0}})
    assert run(spent, [wl("w", "a", 1)]).pending_reason("w") is PendingReason.BUDGET_EXHAUSTED
    fresh = snap(fleet, [q], device_seconds_used={"a": {"rngd": 40.0}})
    d = run(
        fresh,
        [
            wl("fits", "a", 2, max_duration_s=30.0),
            wl("too-long", "a", 1, max_duration_s=1.0, submitted_s=1),
        ],
    )
    assert d.admitted_ids() == {"fits"}  # 40 + 2 x 30 = 100 spends the budget exactly
    assert d.pending_reason("too-long") is PendingReason.BUDGET_EXHAUSTED


def test_unknown_tenant_stays_pending_with_reason() -> None:
    d = run(snap([server("s1")], [quota("a", 8)]), [wl("w", "ghost", 1)])
    assert d.pending_reason("w") is PendingReason.UNKNOWN_TENANT
    assert d.pending[0].tenant == "ghost"


# -- ordering: owners first, priority, fair share -------------------------------------------


def test_owner_within_nominal_is_served_before_an_earlier_borrower() -> None:
    quotas = [quota("a", 4), quota("b", 4)]
    pending = [wl("borrow", "a", 8, submitted_s=0), wl("own", "b", 4, submitted_s=100)]
    d = run(snap([server("s1")], quotas), pending)
    assert "own" in d.admitted_ids()
    assert d.pending_reason("borrow") is not None


def test_higher_priority_class_is_admitted_first() -> None:
    quotas = [quota("a", 0, priority_class=P.BEST_EFFORT), quota("b", 0), quota("owner", 2)]
    pending = [wl("low", "a", 2, submitted_s=0), wl("high", "b", 2, submitted_s=50)]
    d = run(snap([server("s1", 2)], quotas), pending)
    assert d.admitted_ids() == {"high"}


def test_fair_sharing_splits_borrowed_cards_between_equal_tenants() -> None:
    quotas = [quota("a", 0), quota("b", 0), quota("lender", 8)]
    pending = [wl(f"a{i}", "a", 1, submitted_s=i) for i in range(8)]
    pending += [wl(f"b{i}", "b", 1, submitted_s=100 + i) for i in range(8)]
    fair = run(snap([server("s1")], quotas), pending)
    assert held(fair, "a") == held(fair, "b") == 4
    fifo = run(snap([server("s1")], quotas), pending, policy=AdmissionPolicy(fair_sharing=False))
    assert held(fifo, "a") == 8 and held(fifo, "b") == 0


def test_fair_share_weight_gives_proportionally_more() -> None:
    quotas = [quota("a", 0, fair_share_weight=3.0), quota("b", 0), quota("lender", 8)]
    pending = [wl(f"{t}{i}", t, 1, submitted_s=i) for t in "ab" for i in range(8)]
    d = run(snap([server("s1")], quotas), pending)
    assert held(d, "a") == 6 and held(d, "b") == 2


# -- preemption: reclaim and priority -------------------------------------------------------


def _borrowed_state():
    """Tenant uni borrows all 8 cards while company co (nominal 4) is idle."""
    quotas = [quota("co", 4), quota("uni", 4, priority_class=P.RESEARCH)]
    s0 = snap([server("s1")], quotas)
    jobs = [wl(f"job{i}", "uni", 2, submitted_s=i, kind="finetune") for i in range(4)]
    first = run(s0, jobs)
    assert held(first, "uni") == 8
    return then(s0, first, now_s=10.0), first


def test_reclaim_preempts_borrowers_so_the_owner_gets_its_nominal() -> None:
    s1, _ = _borrowed_state()
    d = run(s1, [wl("svc", "co", 4, submitted_s=20)])
    assert d.admitted_ids() == {"svc"}
    assert held(d, "co") == 4 and held(d, "uni") == 4
    assert len(d.preempted) == 2
    assert all(
        p.reason is PreemptionReason.RECLAIM and p.by_workload_id == "svc" for p in d.preempted
    )


def test_reclaim_takes_lowest_priority_then_most_recent_first() -> None:
    quotas = [quota("co", 4), quota("uni", 4, priority_class=P.PRODUCTION)]
    fleet = [server("s1")]
    running = [
        Admitted(
            workload_id="old-research",
            tenant="uni",
            device_type="rngd",
            server_id="s1",
            card_indices=(0, 1),
            priority_class=P.RESEARCH,
            admitted_s=1,
        ),
        Admitted(
            workload_id="new-research",
            tenant="uni",
            device_type="rngd",
            server_id="s1",
            card_indices=(2, 3),
            priority_class=P.RESEARCH,
            admitted_s=5,
        ),
        Admitted(
            workload_id="best-effort",
            tenant="uni",
            device_type="rngd",
            server_id="s1",
            card_indices=(4, 5),
            priority_class=P.BEST_EFFORT,
            admitted_s=0,
        ),
        Admitted(
            workload_id="prod",
            tenant="uni",
            device_type="rngd",
            server_id="s1",
            card_indices=(6, 7),
            priority_class=P.PRODUCTION,
            admitted_s=0,
        ),
    ]
    d = run(snap(fleet, quotas, running, now_s=10), [wl("svc", "co", 4)])
    assert [p.workload_id for p in d.preempted] == ["best-effort", "new-research"]


def test_reclaim_never_preempts_a_tenant_within_its_nominal() -> None:
    quotas = [quota("co", 4), quota("uni", 4), quota("lab", 0)]
    running = [
        Admitted(
            workload_id=f"u{i}", tenant="uni", device_type="rngd", server_id="s1", card_indices=(i,)
        )
        for i in range(4)
    ] + [
        Admitted(
            workload_id=f"l{i}", tenant="lab", device_type="rngd", server_id="s1", card_indices=(i,)
        )
        for i in range(4, 8)
    ]
    d = run(snap([server("s1")], quotas, running), [wl("svc", "co", 4)])
    assert {p.workload_id for p in d.preempted} == {"l4", "l5", "l6", "l7"}
    assert held(d, "uni") == 4


def test_reclaim_preempts_no_more_than_needed() -> None:
    s1, _ = _borrowed_state()
    d = run(s1, [wl("svc", "co", 1)])
    assert len(d.preempted) == 1  # one 2-card job frees enough
    assert held(d, "uni") == 6


def test_reclaim_policy_never_leaves_the_owner_waiting() -> None:
    s1, _ = _borrowed_state()
    policy = AdmissionPolicy(reclaim_within_cohort=PreemptionPolicy.NEVER)
    d = run(s1, [wl("svc", "co", 4)], policy=policy)
    assert not d.preempted and not d.admitted
    assert d.pending_reason("svc") in {PendingReason.NO_CAPACITY, PendingReason.COHORT_EXHAUSTED}


def test_reclaim_lower_priority_policy_spares_equal_priority_borrowers() -> None:
    s1, _ = _borrowed_state()  # uni's jobs are research; co's service is production
    research_co = replace(s1, quotas=(quota("co", 4, priority_class=P.RESEARCH), s1.quotas[1]))
    policy = AdmissionPolicy(reclaim_within_cohort=PreemptionPolicy.LOWER_PRIORITY)
    assert not run(research_co, [wl("svc", "co", 4)], policy=policy).preempted
    assert run(s1, [wl("svc", "co", 4)], policy=policy).admitted_ids() == {"svc"}


def test_borrower_cannot_reclaim() -> None:
    s1, _ = _borrowed_state()
    d = run(s1, [wl("more", "co", 6)])  # above co's nominal of 4: it would borrow
    assert not d.preempted
    assert d.pending_reason("more") is not None


def test_higher_priority_preempts_own_lower_priority_work() -> None:
    quotas = [quota("a", 4, cohort=None)]
    running = [
        Admitted(
            workload_id="be",
            tenant="a",
            device_type="rngd",
            server_id="s1",
            card_indices=(0, 1, 2, 3),
            priority_class=P.BEST_EFFORT,
        )
    ]
    s = snap([server("s1")], quotas, running)
    d = run(s, [wl("prod", "a", 2, priority_class=P.PRODUCTION)])
    assert d.admitted_ids() == {"prod"}
    assert [(p.workload_id, p.reason) for p in d.preempted] == [("be", PreemptionReason.PRIORITY)]
    same = run(s, [wl("be2", "a", 2, priority_class=P.BEST_EFFORT)])
    assert not same.preempted and not same.admitted
    never = run(
        s,
        [wl("prod", "a", 2, priority_class=P.PRODUCTION)],
        policy=AdmissionPolicy(within_tenant="never"),
    )
    assert not never.preempted


def test_a_tenants_queue_runs_in_priority_order() -> None:
    quotas = [quota("a", 2, cohort=None)]
    pending = [
        wl("low", "a", 2, priority_class=P.BEST_EFFORT, submitted_s=0),
        wl("high", "a", 2, priority_class=P.PRODUCTION, submitted_s=1),
    ]
    d = run(snap([server("s1")], quotas), pending)
    assert d.admitted_ids() == {"high"}  # priority order: high first, low then waits
    assert not d.preempted


# -- determinism and validation -------------------------------------------------------------


def test_same_input_in_any_order_gives_the_same_decision() -> None:
    s1, _ = _borrowed_state()
    pending = [
        wl(f"w{i}", "co" if i % 2 else "uni", 1 + i % 3, submitted_s=i % 5) for i in range(12)
    ]
    base = run(s1, pending)
    rng = random.Random(3)
    for _ in range(5):
        shuffled = pending[:]
        rng.shuffle(shuffled)
        fleet = list(s1.fleet)
        rng.shuffle(fleet)
        assert run(replace(s1, fleet=tuple(fleet)), shuffled) == base


def test_inputs_are_not_mutated_and_now_s_is_stamped() -> None:
    s = snap([server("s1")], [quota("a", 8)], now_s=5.0)
    pending = [wl("w", "a", 1)]
    d = decide_admission(s, pending, now_s=7.5)
    assert d.now_s == 7.5 and d.admitted[0].admitted_s == 7.5
    assert decide_admission(s, pending).admitted[0].admitted_s == 5.0
    assert pending == [wl("w", "a", 1)] and s.running == ()


def test_duplicate_or_running_pending_ids_are_rejected() -> None:
    s = snap([server("s1")], [quota("a", 8)])
    with pytest.raises(InvalidConfigError) as err:
        run(s, [wl("w", "a"), wl("w", "a")])
    assert err.value.field == "pending"
    first = run(s, [wl("w", "a")])
    with pytest.raises(InvalidConfigError):
        run(then(s, first, 1.0), [wl("w", "a")])


def test_double_booked_cards_in_a_snapshot_are_rejected() -> None:
    running = [
        Admitted(workload_id=w, tenant="a", device_type="rngd", server_id="s1", card_indices=(0,))
        for w in ("x", "y")
    ]
    with pytest.raises(InvalidConfigError) as err:
        run(snap([server("s1")], [quota("a", 8)], running), [])
    assert err.value.field == "running"


@pytest.mark.parametrize(
    ("kwargs", "field"),
    [
        ({"nominal_cards": {"rngd": -1}}, "nominal_cards[rngd]"),
        (
            {"nominal_cards": {"rngd": 2}, "lending_limit_cards": {"rngd": 3}},
            "lending_limit_cards[rngd]",
        ),
        ({"borrowing_limit_cards": {"rngd": 1.5}}, "borrowing_limit_cards[rngd]"),
        ({"priority_class": "vip"}, "priority_class"),
        ({"tokens_per_s": -5.0}, "tokens_per_s"),
        ({"fair_share_weight": -1.0}, "fair_share_weight"),
        ({"device_seconds_budget": {"rngd": float("nan")}}, "device_seconds_budget[rngd]"),
    ],
)
def test_bad_quota_values_raise_typed_errors(kwargs: dict, field: str) -> None:
    with pytest.raises(InvalidConfigError) as err:
        TenantQuota(tenant="t", cohort="c", **kwargs)
    assert err.value.field == field


@pytest.mark.parametrize(
    ("kwargs", "field"),
    [
        ({"num_cards": 0}, "num_cards"),
        ({"num_cards": 6, "tp_size": 4}, "tp_size"),
        ({"kind": "training"}, "kind"),
        ({"device_type": ""}, "device_type"),
        ({"max_duration_s": 0.0}, "max_duration_s"),
    ],
)
def test_bad_workloads_raise_typed_errors(kwargs: dict, field: str) -> None:
    base = {"workload_id": "w", "tenant": "a", "device_type": "rngd"}
    with pytest.raises(InvalidConfigError) as err:
        Workload(**{**base, **kwargs})
    assert err.value.field == field


def test_bad_inventory_raises_typed_errors() -> None:
    with pytest.raises(InvalidConfigError):
        Server(server_id="s", device_type="rngd", num_cards=4, interconnect_groups=(0, 1))
    with pytest.raises(InvalidConfigError):
        Server(
            server_id="s", device_type="rngd", num_cards=4, unhealthy_card_indices=frozenset({4})
        )
    with pytest.raises(InvalidConfigError):
        snap([server("s1"), server("s1")], [])
    with pytest.raises(InvalidConfigError):
        AdmissionPolicy(within_tenant="any")


def test_priority_class_parses_labels_and_orders() -> None:
    assert PriorityClass.parse("best-effort") is P.BEST_EFFORT
    assert PriorityClass.parse("Production") is P.PRODUCTION
    assert PriorityClass.parse(2) is P.RESEARCH
    assert P.PRODUCTION > P.RESEARCH > P.EDUCATION > P.BEST_EFFORT
    assert P.BEST_EFFORT.label == "best-effort"


def test_servers_from_cards_groups_rows() -> None:
    cards = [
        Card(
            server_id="s2",
            card_index=i,
            device_type="atom",
            interconnect_group=i // 2,
            healthy=i != 1,
        )
        for i in range(4)
    ] + [Card(server_id="s1", card_index=0, device_type="rngd")]
    s1, s2 = servers_from_cards(reversed(cards))
    assert (s1.server_id, s1.num_cards, s1.device_type) == ("s1", 1, "rngd")
    assert s2.interconnect_groups == (0, 0, 1, 1)
    assert s2.unhealthy_card_indices == frozenset({1}) and s2.healthy
    assert s2.usable_card_indices() == (0, 2, 3)
    (gap,) = servers_from_cards([Card(server_id="s", card_index=2, device_type="rngd")])
    assert gap.num_cards == 3 and gap.usable_card_indices() == (2,)  # removed cards: unusable
    with pytest.raises(InvalidConfigError):
        servers_from_cards([Card(server_id="s", card_index=0, device_type=d) for d in ("a", "b")])
    with pytest.raises(InvalidConfigError):
        servers_from_cards([Card(server_id="s", card_index=0, device_type="rngd")] * 2)


def test_running_work_ranks_no_higher_than_its_tenants_class() -> None:
    quotas = [
        quota("co", 4, priority_class=P.RESEARCH),
        quota("uni", 0, priority_class=P.EDUCATION),
    ]
    running = [
        Admitted(
            workload_id="claims-prod",
            tenant="uni",
            device_type="rngd",
            server_id="s1",
            card_indices=(0, 1, 2, 3),
            priority_class=P.PRODUCTION,
        )
    ]
    policy = AdmissionPolicy(reclaim_within_cohort=PreemptionPolicy.LOWER_PRIORITY)
    d = run(snap([server("s1", 4)], quotas, running), [wl("svc", "co", 4)], policy=policy)
    assert d.preempted_ids() == {"claims-prod"}


def test_reclaim_frees_one_server_for_a_gang() -> None:
    """Borrowed cards are spread over two servers; the owner's 4-card gang needs one of them."""
    quotas = [quota("co", 4), quota("uni", 4)]
    running = [
        Admitted(
            workload_id=f"j{server}{card}",
            tenant="uni",
            device_type="rngd",
            server_id=f"s{server}",
            card_indices=(card,),
            admitted_s=float(2 * card + (server == 2)),
        )  # most recent alternate servers
        for server in (1, 2)
        for card in range(4)
    ]
    d = run(
        snap([server("s1", 4), server("s2", 4)], quotas, running, now_s=10), [wl("gang", "co", 4)]
    )
    assert d.admitted_ids() == {"gang"}
    (placed,) = d.admitted
    stopped = {p.workload_id for p in d.preempted}
    assert len(stopped) == 4  # no more than the gang needs
    assert {running_id[1] for running_id in stopped} == {placed.server_id[1]}
    assert held(d, "uni") == 4


def test_lowering_a_quota_does_not_preempt_running_work() -> None:
    running = [
        Admitted(
            workload_id=f"r{i}",
            tenant="a",
            device_type="rngd",
            server_id="s1",
            card_indices=(i,),
            priority_class=P.PRODUCTION,
        )
        for i in range(4)
    ]
    d = run(snap([server("s1")], [quota("a", 1, cohort=None)], running), [wl("w", "a", 1)])
    assert not d.preempted
    assert held(d, "a") == 4
    assert d.pending_reason("w") is PendingReason.QUOTA_IN_USE
