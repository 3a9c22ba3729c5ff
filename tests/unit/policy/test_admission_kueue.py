"""decide_admission against Kueue's semantics: the four disagreements of issue 17, and the quota
features after Kueue (nested cohorts, flavor fungibility, stopPolicy, borrowWithinCohort, fair
sharing by borrowed cards, by usage and as a preemption rule).

The scenarios are built from Kueue's documentation (concepts/preemption, cluster_queue, cohort,
fair_sharing, admission_fair_sharing) and the cases of its preemption unit tests, scaled to cards.
"""

from __future__ import annotations

import math
from dataclasses import replace

import pytest

from npucenter.errors import InvalidConfigError
from npucenter.policy.admission import (
    AdmissionPolicy,
    AdmissionSnapshot,
    Admitted,
    CohortQuota,
    FairSharingBasis,
    PendingReason,
    PreemptionPolicy,
    PreemptionReason,
    PriorityClass,
    Server,
    StopPolicy,
    TenantQuota,
    Workload,
    decayed_usage_card_s,
    decide_admission,
)

P = PriorityClass


def servers(n: int, cards: int = 1, device: str = "rngd") -> list[Server]:
    return [
        Server(server_id=f"{device}-{i}", device_type=device, num_cards=cards) for i in range(n)
    ]


def quota(tenant: str, nominal: int = 0, *, cohort: str | None = "c", **kw: object) -> TenantQuota:
    kw.setdefault("priority_class", P.PRODUCTION)
    kw.setdefault("nominal_cards", {"rngd": nominal})
    return TenantQuota(tenant=tenant, cohort=cohort, **kw)  # type: ignore[arg-type]


def wl(wid: str, tenant: str, cards: int = 1, **kw: object) -> Workload:
    kw.setdefault("device_type", "rngd")
    return Workload(workload_id=wid, tenant=tenant, num_cards=cards, **kw)  # type: ignore[arg-type]


def ran(wid: str, tenant: str, server: str, cards: tuple[int, ...], **kw: object) -> Admitted:
    kw.setdefault("device_type", "rngd")
    kw.setdefault("priority_class", P.PRODUCTION)
    return Admitted(workload_id=wid, tenant=tenant, server_id=server, card_indices=cards, **kw)  # type: ignore[arg-type]


def fill(tenant: str, first: int, count: int, **kw: object) -> list[Admitted]:
    """``count`` single-card workloads of ``tenant`` on single-card servers rngd-<first>..."""
    return [ran(f"{tenant}-r{i}", tenant, f"rngd-{first + i}", (0,), **kw) for i in range(count)]


def snap(fleet, quotas, running=(), **kw: object) -> AdmissionSnapshot:
    return AdmissionSnapshot(
        fleet=tuple(fleet), quotas=tuple(quotas), running=tuple(running), now_s=100.0, **kw
    )  # type: ignore[arg-type]


def held(decision, tenant: str, device: str = "rngd") -> int:
    return decision.usage[tenant].used_cards.get(device, 0)


def then(snapshot: AdmissionSnapshot, decision, now_s: float) -> AdmissionSnapshot:
    stopped = decision.preempted_ids()
    running = [a for a in snapshot.running if a.workload_id not in stopped]
    return replace(snapshot, running=(*running, *decision.admitted), now_s=now_s)


# -- the four disagreements -------------------------------------------------------------------


def test_no_two_tenants_preempt_each_other_in_one_cycle() -> None:
    """Issue 17 (1). a borrows with a low-priority 4-card gang; b reclaims and a falls below its
    nominal. a's deferred job must then be served as an owner, from the cards b's reclaim left
    free, before b's higher-priority borrower takes them; it must never reclaim b's old work."""
    fleet = [Server(server_id="s", device_type="rngd", num_cards=8)]
    quotas = [quota("a", 4), quota("b", 4)]
    running = [
        ran("a-old", "a", "s", (0,)),
        ran("a-big", "a", "s", (1, 2, 3, 4), priority_class=P.EDUCATION),
        *(ran(f"b-old{i}", "b", "s", (5 + i,)) for i in range(3)),
    ]
    pending = [
        wl("b-own", "b", 1),
        wl("b-borrow", "b", 3),
        wl("a-job", "a", 3, priority_class=P.RESEARCH),
    ]
    d = decide_admission(snap(fleet, quotas, running), pending)
    assert d.preempted_ids() == {"a-big"}
    assert d.admitted_ids() == {"b-own", "a-job"}
    preempting = {p.tenant for p in d.preempted}
    preempted_for = {
        w.tenant for w in pending if w.workload_id in {p.by_workload_id for p in d.preempted}
    }
    assert not preempting & preempted_for
    assert d.pending_reason("b-borrow") is PendingReason.COHORT_EXHAUSTED


@pytest.mark.parametrize("fallback", [True, False], ids=["fungible", "h100-only"])
def test_two_owners_reclaim_their_nominal_of_different_types_from_each_other(
    fallback: bool,
) -> None:
    """The property test's counterexample (last of five cycles), not a back-and-forth.

    t1 borrows t2's RNGD card; t2 borrows one of t1's H100 cards. Both come back for their own
    nominal in the same cycle: t2 reclaims its RNGD card from t1, and t1's 2-card gang (RNGD
    first, H100 accepted, or H100 only) reclaims H100 cards from t2. Each reclaim takes back the
    owner's nominal of one type from a tenant borrowing that type, so neither kills work within
    the other's nominal and no cards go back and forth; Kueue's scheduler also issues both in
    one cycle (it skips a second preemptor in a cohort only when their flavors overlap). Holding
    t1 back a cycle would only leave t2 borrowing t1's cards one cycle longer.
    """
    fleet = [
        Server(server_id="rngd-0", device_type="rngd", num_cards=1),
        Server(server_id="h100-0", device_type="h100", num_cards=1),
        Server(server_id="h100-1", device_type="h100", num_cards=1),
        Server(server_id="h100-2", device_type="h100", num_cards=2),
    ]
    be = {"priority_class": P.BEST_EFFORT, "cohort": "x"}
    quotas = [
        quota("t0", nominal_cards={}, **be),
        quota("t1", nominal_cards={"h100": 2, "rngd": 0}, borrowing_limit_cards={"h100": 0}, **be),
        quota("t2", nominal_cards={"h100": 1, "rngd": 1}, lending_limit_cards={"h100": 0}, **be),
        quota("t3", nominal_cards={}, **be),
    ]
    cohorts = (
        CohortQuota(name="root"),
        CohortQuota(name="x", parent="root", nominal_cards={"h100": 0, "rngd": 0}),
        CohortQuota(name="y", parent="root"),
    )
    low = {"priority_class": P.BEST_EFFORT}
    running = [
        ran("t1-rngd", "t1", "rngd-0", (0,), admitted_s=100.0, **low),  # borrowed from t2
        ran("t2-h100-a", "t2", "h100-2", (0,), device_type="h100", admitted_s=300.0, **low),
        ran("t2-h100-b", "t2", "h100-0", (0,), device_type="h100", admitted_s=400.0, **low),
    ]
    gang = {"device_type": "rngd", "fallback_device_types": ("h100",)} if fallback else {}
    pending = [
        *(wl(f"t0-{i}", "t0", submitted_s=200.0 + i) for i in range(3)),  # no quota: waits
        wl("t2-own", "t2", submitted_s=500.0),
        wl("t1-gang", "t1", 2, submitted_s=501.0, **(gang or {"device_type": "h100"})),
    ]
    policy = AdmissionPolicy(
        reclaim_within_cohort=PreemptionPolicy.ANY, within_tenant=PreemptionPolicy.NEVER
    )
    snapshot = snap(fleet, quotas, running, cohorts=cohorts)
    d = decide_admission(snapshot, pending, policy=policy)
    assert {(p.workload_id, p.by_workload_id, p.reason) for p in d.preempted} == {
        ("t1-rngd", "t2-own", PreemptionReason.RECLAIM),
        ("t2-h100-a", "t1-gang", PreemptionReason.RECLAIM),  # frees h100-2 for the gang
    }
    assert d.admitted_ids() == {"t2-own", "t1-gang"}
    assert (held(d, "t1", "h100"), held(d, "t1", "rngd")) == (2, 0)  # t1's nominal
    assert (held(d, "t2", "h100"), held(d, "t2", "rngd")) == (1, 1)  # t2's nominal
    taken = {
        (w.tenant, p.tenant, next(a.device_type for a in running if a.workload_id == p.workload_id))
        for p in d.preempted
        for w in pending
        if w.workload_id == p.by_workload_id
    }
    assert taken == {("t2", "t1", "rngd"), ("t1", "t2", "h100")}  # one type each way
    assert {p.reason for p in d.pending} == {PendingReason.NO_QUOTA_FOR_DEVICE}


def test_two_borrowers_do_not_take_each_others_lower_priority_cards_in_one_cycle() -> None:
    """A counterexample hypothesis found: with borrow_within_cohort, t0's and t1's education
    jobs (both borrowing H100) each took the other's best-effort borrowed card in one cycle. A
    tenant never takes back cards of a type from a tenant that took them in the same cycle
    (Kueue skips a second preemptor in a cohort when their flavors overlap); t1's job may take
    its card in the next cycle."""
    fleet = [Server(server_id=f"h100-{i}", device_type="h100", num_cards=1) for i in range(3)]
    edu = {"priority_class": P.EDUCATION}
    quotas = [
        quota("t0", nominal_cards={"h100": 1}, **edu),
        quota("t1", nominal_cards={"h100": 0}, **edu),
        quota("t2", nominal_cards={"h100": 2}, priority_class=P.BEST_EFFORT),
    ]
    h100 = {"device_type": "h100", "admitted_s": 100.0}
    running = [
        ran("t0-own", "t0", "h100-0", (0,), priority_class=P.EDUCATION, **h100),
        ran("t0-low", "t0", "h100-1", (0,), priority_class=P.BEST_EFFORT, **h100),  # borrowed
        ran("t1-low", "t1", "h100-2", (0,), priority_class=P.BEST_EFFORT, **h100),  # borrowed
    ]
    fungible = {"device_type": "rngd", "fallback_device_types": ("h100",)}
    pending = [
        wl("t0-job", "t0", submitted_s=207.0, **fungible),
        wl("t1-job", "t1", submitted_s=208.0, **fungible),
    ]
    policy = AdmissionPolicy(
        reclaim_within_cohort=PreemptionPolicy.LOWER_PRIORITY,
        within_tenant=PreemptionPolicy.NEVER,
        borrow_within_cohort=PreemptionPolicy.LOWER_PRIORITY,
    )
    snapshot = snap(fleet, quotas, running)
    d = decide_admission(snapshot, pending, policy=policy)
    assert [(p.workload_id, p.by_workload_id) for p in d.preempted] == [("t1-low", "t0-job")]
    assert d.preempted[0].reason is PreemptionReason.RECLAIM_WHILE_BORROWING
    assert d.admitted_ids() == {"t0-job"}
    assert "t1-job" in {p.workload_id for p in d.pending}
    # next cycle (t1-low requeued, still best effort): t1's job takes t0's borrowed card
    d2 = decide_admission(then(snapshot, d, 300.0), [pending[1]], policy=policy)
    assert [(p.workload_id, p.by_workload_id) for p in d2.preempted] == [("t0-low", "t1-job")]


def test_owner_within_nominal_preempts_its_own_lower_priority_work_and_the_borrower() -> None:
    """Issue 17 (2), after Kueue's 'preempting locally and borrowing same resource in cohort':
    a holds 2 of its 4 nominal cards with best-effort work, b borrows the other 2. a's
    production gang of 4 takes both, as Kueue does."""
    fleet = [Server(server_id="s", device_type="rngd", num_cards=4)]
    quotas = [quota("a", 4), quota("b", 0)]
    running = [
        ran("a-low", "a", "s", (0, 1), priority_class=P.BEST_EFFORT),
        ran("b-borrowed", "b", "s", (2, 3)),
    ]
    d = decide_admission(snap(fleet, quotas, running), [wl("a-prod", "a", 4)])
    assert d.admitted_ids() == {"a-prod"}
    reasons = {p.workload_id: p.reason for p in d.preempted}
    assert reasons == {"a-low": PreemptionReason.PRIORITY, "b-borrowed": PreemptionReason.RECLAIM}


def test_owner_at_its_nominal_does_not_reclaim_to_borrow() -> None:
    """The other side of (2): a is at its nominal with equal-priority work; a further job would
    borrow, so it never reclaims from b (reclaim is for getting the nominal back)."""
    fleet = servers(4)
    quotas = [quota("a", 2), quota("b", 2)]
    running = [*fill("a", 0, 2), *fill("b", 2, 2)]
    d = decide_admission(snap(fleet, quotas, running), [wl("a-more", "a", 1)])
    assert not d.preempted
    assert d.pending_reason("a-more") is PendingReason.COHORT_EXHAUSTED


def test_a_device_type_the_quota_does_not_name_is_not_borrowed() -> None:
    """Issue 17 (3): a has only RNGD quota; b's idle H100s are not lent to it (Kueue lets a
    ClusterQueue use only the flavors it lists)."""
    fleet = [*servers(2), *servers(2, device="h100")]
    a = quota("a", nominal_cards={"rngd": 2})
    b = quota("b", nominal_cards={"h100": 2})
    d = decide_admission(snap(fleet, [a, b]), [wl("a-h100", "a", 1, device_type="h100")])
    assert d.pending_reason("a-h100") is PendingReason.NO_QUOTA_FOR_DEVICE
    assert "names no h100" in d.pending[0].message
    assert a.borrowing_limit("h100") == 0 and a.max_cards("h100") == 0


@pytest.mark.parametrize(
    "a",
    [
        quota("a", nominal_cards={"rngd": 2}, borrow_unnamed_device_types=True),
        quota("a", nominal_cards={"rngd": 2, "h100": 0}),  # naming h100 with 0 is an opt-in too
    ],
)
def test_borrowing_an_unnamed_device_type_is_an_explicit_opt_in(a: TenantQuota) -> None:
    fleet = [*servers(2), *servers(2, device="h100")]
    b = quota("b", nominal_cards={"h100": 2})
    d = decide_admission(snap(fleet, [a, b]), [wl("a-h100", "a", 1, device_type="h100")])
    assert d.admitted_ids() == {"a-h100"}
    assert d.admitted[0].borrowed_cards == 1


def test_fair_sharing_splits_idle_cards_by_cards_borrowed_not_held() -> None:
    """Issue 17 (4): 4 idle cards (c lends them), a of nominal 2 and b of nominal 6 both at
    their nominal ask for 4 more each. Kueue's dominant resource share (borrowed / lendable)
    splits them 2/2; ranking by cards held gave a all 4."""
    fleet = servers(12)
    quotas = [quota("a", 2), quota("b", 6), quota("c", 4)]
    running = [*fill("a", 0, 2), *fill("b", 2, 6)]
    pending = [wl(f"{t}{i}", t, 1, submitted_s=i) for t in "ab" for i in range(4)]
    d = decide_admission(snap(fleet, quotas, running), pending)
    assert held(d, "a") - 2 == 2 and held(d, "b") - 6 == 2
    # borrowed 2 over the 12 cards the cohort lends (every member lends all of its nominal)
    assert d.usage["a"].dominant_share == pytest.approx(2 / 12)


def test_fair_share_weight_scales_the_borrowed_share() -> None:
    fleet = servers(12)
    quotas = [quota("a", 2), quota("b", 6, fair_share_weight=3.0), quota("c", 4)]
    running = [*fill("a", 0, 2), *fill("b", 2, 6)]
    pending = [wl(f"{t}{i}", t, 1, submitted_s=i) for t in "ab" for i in range(4)]
    d = decide_admission(snap(fleet, quotas, running), pending)
    assert (held(d, "a") - 2, held(d, "b") - 6) == (1, 3)


# -- nested cohorts ---------------------------------------------------------------------------

CENTER = (
    CohortQuota(name="center"),
    CohortQuota(name="acme", parent="center"),
    CohortQuota(
        name="univ",
        parent="center",
        nominal_cards={"rngd": 2},  # the university's own cards, shared by its departments
        borrowing_limit_cards={"rngd": 2},
    ),
)


def center_quotas() -> list[TenantQuota]:
    return [
        quota("acme-ml", 4, cohort="acme"),
        quota("cs", 2, cohort="univ"),
        quota("physics", 2, cohort="univ"),
    ]


def test_a_department_borrows_its_universitys_cards_then_the_center_within_the_limit() -> None:
    fleet = servers(10)
    pending = [wl(f"cs{i}", "cs", 1, submitted_s=i) for i in range(10)]
    d = decide_admission(snap(fleet, center_quotas(), cohorts=CENTER), pending)
    # 2 nominal + physics' 2 + the university's 2 + 2 borrowed from the center (its limit)
    assert held(d, "cs") == 8
    assert d.pending_reason("cs9") is PendingReason.QUOTA_IN_USE


def test_a_company_reclaims_from_a_department_across_the_tree() -> None:
    fleet = servers(10)
    first = decide_admission(
        snap(fleet, center_quotas(), cohorts=CENTER),
        [wl(f"cs{i}", "cs", 1, submitted_s=i) for i in range(10)],
    )
    after = then(snap(fleet, center_quotas(), cohorts=CENTER), first, 200.0)
    d = decide_admission(after, [wl(f"ml{i}", "acme-ml", 1, submitted_s=i) for i in range(4)])
    assert held(d, "acme-ml") == 4
    assert len(d.preempted) == 2  # the center only lent cs 2 of acme's 4 (2 were free)
    assert {p.reason for p in d.preempted} == {PreemptionReason.RECLAIM}
    assert held(d, "cs") == 6


def test_a_department_within_its_universitys_quota_reclaims_across_the_center() -> None:
    """Kueue's hierarchical advantage: physics is at its nominal, but its university's subtree
    has room that acme borrowed through the center; physics takes it back even though physics
    itself then borrows (within its university)."""
    fleet = servers(8)
    quotas = [
        quota("acme-ml", 2, cohort="acme"),
        quota("cs", 2, cohort="univ"),
        quota("physics", 2, cohort="univ"),
    ]
    cohorts = (
        CohortQuota(name="center"),
        CohortQuota(name="acme", parent="center"),
        CohortQuota(name="univ", parent="center", nominal_cards={"rngd": 2}),
    )
    running = [*fill("acme-ml", 0, 4), *fill("cs", 4, 2), *fill("physics", 6, 2)]
    d = decide_admission(snap(fleet, quotas, running, cohorts=cohorts), [wl("phys", "physics", 1)])
    assert d.admitted_ids() == {"phys"}
    assert [(p.tenant, p.reason) for p in d.preempted] == [("acme-ml", PreemptionReason.RECLAIM)]
    # in one flat cohort physics would only borrow: no reclaim at all
    flat = [replace(q, cohort="c") for q in quotas]
    assert not decide_admission(snap(fleet, flat, running), [wl("phys", "physics", 1)]).preempted


def test_cohort_tree_errors_are_typed() -> None:
    with pytest.raises(InvalidConfigError) as err:
        AdmissionSnapshot(
            fleet=(),
            quotas=(),
            cohorts=(CohortQuota(name="a", parent="b"), CohortQuota(name="b", parent="a")),
        )
    assert err.value.field == "cohorts"
    with pytest.raises(InvalidConfigError):
        CohortQuota(name="a", parent="a")


# -- fungibility ------------------------------------------------------------------------------


def test_a_fungible_workload_takes_the_first_device_type_with_quota_and_room() -> None:
    fleet = [*servers(1), *servers(2, device="atom"), *servers(2, device="h100")]
    a = quota("a", nominal_cards={"rngd": 1, "atom": 0, "h100": 2})
    running = [ran("a-r", "a", "rngd-0", (0,))]
    job = wl("j", "a", 1, fallback_device_types=("atom", "h100"))
    d = decide_admission(snap(fleet, [a], running), [job])
    # rngd is full; atom has room but no quota (a names it with 0 and has no cohort); h100 has both
    assert d.admitted[0].device_type == "h100"
    first = decide_admission(snap(fleet, [a]), [job])
    assert first.admitted[0].device_type == "rngd"


def test_a_fungible_workload_prefers_room_elsewhere_to_preemption() -> None:
    """Kueue's whenCanPreempt: TryNextFlavor — preempt only when no type fits as is."""
    fleet = [*servers(1), *servers(1, device="h100")]
    a = quota("a", nominal_cards={"rngd": 1, "h100": 1})
    low = [ran("a-low", "a", "rngd-0", (0,), priority_class=P.BEST_EFFORT)]
    job = wl("j", "a", 1, fallback_device_types=("h100",))
    d = decide_admission(snap(fleet, [a], low), [job])
    assert d.admitted[0].device_type == "h100" and not d.preempted
    full = [*low, ran("a-h", "a", "h100-0", (0,), device_type="h100")]
    d = decide_admission(snap(fleet, [a], full), [job])
    assert d.admitted[0].device_type == "rngd" and d.preempted_ids() == {"a-low"}


def test_fallback_device_types_are_validated() -> None:
    with pytest.raises(InvalidConfigError):
        wl("j", "a", fallback_device_types=("rngd",))


# -- stop policy ------------------------------------------------------------------------------


def test_a_held_tenant_admits_nothing_new_and_keeps_what_runs() -> None:
    fleet = servers(4)
    a = quota("a", 4, stop_policy=StopPolicy.HOLD)
    d = decide_admission(snap(fleet, [a], fill("a", 0, 1)), [wl("j", "a")])
    assert d.pending_reason("j") is PendingReason.HELD and not d.preempted
    assert "held" in d.pending[0].message


def test_hold_and_drain_preempts_what_runs() -> None:
    fleet = servers(4)
    a = quota("a", 4, stop_policy="hold-and-drain")
    d = decide_admission(snap(fleet, [a], fill("a", 0, 2)), [wl("j", "a")])
    assert {p.reason for p in d.preempted} == {PreemptionReason.DRAIN}
    assert len(d.preempted) == 2 and not d.admitted


# -- borrowWithinCohort and fair-sharing preemption ----------------------------------------


def borrowers() -> tuple[list[Server], list[TenantQuota], list[Admitted]]:
    """c lends 4 cards; b borrowed all 4 with best-effort work; a is at its nominal of 2."""
    fleet = servers(8)
    quotas = [quota("a", 2), quota("b", 2), quota("c", 4)]
    running = [*fill("a", 0, 2), *fill("b", 2, 6, priority_class=P.BEST_EFFORT)]
    return fleet, quotas, running


def test_by_default_a_borrower_never_preempts_another_tenant() -> None:
    fleet, quotas, running = borrowers()
    d = decide_admission(snap(fleet, quotas, running), [wl("a-b", "a", 1)])
    assert not d.preempted and d.pending_reason("a-b") is PendingReason.COHORT_EXHAUSTED


def test_borrow_within_cohort_preempts_lower_priority_borrowed_work() -> None:
    fleet, quotas, running = borrowers()
    policy = AdmissionPolicy(borrow_within_cohort=PreemptionPolicy.LOWER_PRIORITY)
    d = decide_admission(snap(fleet, quotas, running), [wl("a-b", "a", 1)], policy=policy)
    assert d.admitted_ids() == {"a-b"}
    assert [p.reason for p in d.preempted] == [PreemptionReason.RECLAIM_WHILE_BORROWING]
    capped = replace(policy, borrow_within_cohort_max_priority=P.BEST_EFFORT)
    assert decide_admission(
        snap(fleet, quotas, running), [wl("a-b", "a", 1)], policy=capped
    ).admitted
    # b's borrowed work at a's own class is never taken by a borrower
    equal = [*running[:2], *fill("b", 2, 6)]
    d = decide_admission(snap(fleet, quotas, equal), [wl("a-b", "a", 1)], policy=policy)
    assert not d.preempted


def test_fair_sharing_preemption_evens_out_borrowing_and_stops() -> None:
    fleet, quotas, running = borrowers()
    running = [*running[:2], *fill("b", 2, 6)]  # same class: only fair sharing can preempt
    policy = AdmissionPolicy(fair_sharing_preemption=True)
    s = snap(fleet, quotas, running)
    pending = [wl(f"a{i}", "a", 1, submitted_s=i) for i in range(4)]
    d = decide_admission(s, pending, policy=policy)
    assert {p.reason for p in d.preempted} == {PreemptionReason.FAIR_SHARING}
    # shares end even (2 borrowed each); b cannot take them back (its share would exceed a's)
    assert (held(d, "a"), held(d, "b")) == (4, 4)
    nxt = then(s, d, 200.0)
    back = decide_admission(nxt, [wl("b-more", "b", 1)], policy=policy)
    assert not back.preempted
    assert not decide_admission(s, pending).preempted  # off by default


# -- fair sharing by usage -------------------------------------------------------------------


def test_fair_sharing_by_usage_serves_the_tenant_with_less_recent_use_first() -> None:
    fleet = servers(12)
    quotas = [quota("a", 2), quota("b", 2), quota("c", 8)]
    running = [*fill("a", 0, 2), *fill("b", 2, 2)]
    pending = [wl(f"{t}{i}", t, 1, submitted_s=i) for t in "ab" for i in range(8)]
    history = {"a": 50_000.0, "b": 0.0}
    policy = AdmissionPolicy(fair_sharing_basis=FairSharingBasis.USAGE, usage_half_life_s=600.0)
    s = snap(fleet, quotas, running, usage_history_card_s=history)
    d = decide_admission(s, pending, policy=policy)
    assert held(d, "b") > held(d, "a")
    even = decide_admission(s, pending)  # by borrowed cards: history does not count
    assert held(even, "a") == held(even, "b")


def test_decayed_usage_halves_per_half_life_and_converges() -> None:
    assert decayed_usage_card_s(1000.0, 0, 600.0, 600.0) == pytest.approx(500.0)
    steady = 4 * 600.0 / math.log(2)
    assert decayed_usage_card_s(0.0, 4, 1e6, 600.0) == pytest.approx(steady)
    assert decayed_usage_card_s(steady, 4, 123.0, 600.0) == pytest.approx(steady)
    with pytest.raises(InvalidConfigError):
        decayed_usage_card_s(0.0, 1, 1.0, 0.0)


# -- pending reasons ----------------------------------------------------------------------------


def test_every_waiting_workload_has_a_reason_and_a_line_saying_what_to_do() -> None:
    fleet = [*servers(2), *servers(1, cards=2, device="h100")]
    quotas = [
        quota("a", 1, device_seconds_budget={"rngd": 10.0}),
        quota("b", 1, stop_policy="hold"),
        quota("c", 0),
    ]
    pending = [
        wl("big", "a", 4),
        wl("unnamed", "a", 1, device_type="h100"),
        wl("budget", "a", 1, max_duration_s=100.0),
        wl("held", "b", 1),
        wl("who", "nobody", 1),
        wl("gone", "c", 1, device_type="tpu"),
    ]
    d = decide_admission(snap(fleet, quotas), pending)
    reasons = {p.workload_id: p.reason for p in d.pending}
    assert reasons == {
        "big": PendingReason.UNSCHEDULABLE,
        "unnamed": PendingReason.NO_QUOTA_FOR_DEVICE,
        "budget": PendingReason.BUDGET_EXHAUSTED,
        "held": PendingReason.HELD,
        "who": PendingReason.UNKNOWN_TENANT,
        "gone": PendingReason.UNSCHEDULABLE,
    }
    assert all(p.message and p.message != p.reason.value for p in d.pending)
