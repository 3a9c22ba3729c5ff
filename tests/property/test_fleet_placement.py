"""Hypothesis invariants of the twin's placement (admission on the fleet snapshot) and job timeline.

Placement: every replica holds exactly ``tp`` cards of one server of its device, no card twice,
unused cards are the rest; a fleet that does not fit raises with one reason per pending replica.
Jobs: no card is held twice at any instant, and a finished job ran for exactly its duration.
"""

from __future__ import annotations

from collections import Counter

from hypothesis import given, settings
from hypothesis import strategies as st

from npucenter.errors import CapacityUnavailableError, InvalidConfigError
from npucenter.fleet.placement import place_fleet
from npucenter.fleet.spec import fleet_spec_from_mapping
from npucenter.sim.jobs import simulate_jobs

DEVICES = ("rngd", "h100")


@st.composite
def fleets(draw: st.DrawFn) -> dict[str, object]:
    devices = draw(st.lists(st.sampled_from(DEVICES), min_size=1, max_size=2, unique=True))
    servers = [
        {
            "device": d,
            "count": draw(st.integers(1, 3)),
            "cards_per_server": draw(st.sampled_from((4, 6, 8))),
        }
        for d in devices
    ]
    services = []
    for k in range(draw(st.integers(1, 4))):
        device = draw(st.sampled_from(devices))
        tp = draw(st.sampled_from((1, 2, 4)))
        count = {"replicas": draw(st.integers(1, 6))}
        if draw(st.booleans()):
            count = {"replicas_per_server": draw(st.integers(1, 2))}
        services.append({"service": f"s{k % 3}", "model": f"m{k % 3}", "device": device, "tp": tp})
        services[-1].update(count)
    jobs = [
        {
            "name": f"j{k}",
            "tenant": draw(st.sampled_from(("s0", "lab", "uni"))),
            "device": draw(st.sampled_from(devices)),
            "cards": draw(st.integers(1, 4)),
            "arrival_s": float(draw(st.integers(0, 50))),
            "duration_s": float(draw(st.integers(1, 40))),
            "priority": draw(st.sampled_from(("best-effort", "research", "production"))),
        }
        for k in range(draw(st.integers(0, 5)))
    ]
    tenants = {}
    if draw(st.booleans()):  # a cohort whose members lend and borrow: reclaim preempts
        for name in draw(st.lists(st.sampled_from(("s0", "lab", "uni")), unique=True)):
            tenants[name] = {
                "cohort": "c",
                "priority": draw(st.sampled_from(("research", "production"))),
                "nominal_cards": {d: draw(st.integers(0, 12)) for d in devices},
            }
    return {"servers": servers, "services": services, "jobs": jobs, "tenants": tenants}


def _spec(data: dict[str, object]):  # type: ignore[no-untyped-def]
    try:
        return fleet_spec_from_mapping(data)
    except InvalidConfigError:
        return None  # more cards than the fleet has, or a gang larger than a server


@settings(max_examples=150, deadline=None)
@given(fleets())
def test_placement_gives_each_replica_its_gang_and_no_card_twice(data) -> None:  # type: ignore[no-untyped-def]
    spec = _spec(data)
    if spec is None:
        return
    wanted = sum(spec.num_replicas(d) for d in spec.deployments)
    try:
        placement = place_fleet(spec)
    except CapacityUnavailableError as exc:
        assert exc.attempts
        if not data["tenants"]:  # quotas cover every service: only the topology can fail
            assert all(a["reason"] == "no_capacity" for a in exc.attempts)
        assert len(exc.attempts) <= wanted
        return
    assert len(placement.replicas) == wanted
    held: Counter[tuple[str, int]] = Counter()
    used: Counter[str] = Counter()
    for rep in placement.replicas:
        dep = spec.deployments[rep.deployment_index]
        assert len(rep.card_indices) == dep.tp
        assert rep.server_id.startswith(spec.pool(dep.device).device + "-")
        held.update((rep.server_id, c) for c in rep.card_indices)
        used[rep.device_type] += dep.tp
    assert max(held.values()) == 1
    assert {p.device: p.num_cards - used[p.device] for p in spec.servers} == dict(
        placement.unused_cards
    )
    assert len({r.replica_id for r in placement.replicas}) == wanted


@settings(max_examples=100, deadline=None)
@given(fleets())
def test_job_timeline_never_overbooks_cards_and_jobs_run_their_duration(data) -> None:  # type: ignore[no-untyped-def]
    spec = _spec(data)
    if spec is None or not spec.jobs:
        return
    try:
        placement = place_fleet(spec)
    except CapacityUnavailableError:
        return
    timeline = simulate_jobs(spec, placement)
    end = timeline.end_s + 1.0
    capacity = {p.device: p.num_cards for p in spec.servers}
    instants = sorted({h[3] for h in timeline.holds})
    for t in instants:
        held: Counter[str] = Counter()
        for device, _, cards, start, stop in timeline.holds:
            if start <= t < (end if stop is None else stop):
                held[device] += cards
        for device, cards in held.items():
            assert cards <= capacity[device]
    for job in timeline.jobs:
        if job.finish_s is not None:
            assert job.start_s is not None
            assert job.finish_s - job.start_s == job.duration_s
            assert job.finish_s - job.arrival_s >= job.duration_s + job.wait_s - 1e-9
        else:
            assert job.pending_reason is not None


@settings(max_examples=150, deadline=None)
@given(
    st.integers(1, 3),
    st.sampled_from((4, 6, 8, 16)),
    st.lists(
        st.tuples(st.integers(0, 3), st.sampled_from((1, 2, 3, 4, 8)), st.integers(1, 4)),
        min_size=1,
        max_size=5,
    ),
)
def test_a_valid_per_server_layout_always_places_as_written(count, cards, entries) -> None:  # type: ignore[no-untyped-def]
    services = [
        {"service": f"s{s}", "model": "m", "device": "rngd", "tp": tp, "replicas_per_server": n}
        for s, tp, n in entries
    ]
    spec = _spec({"servers": [{"device": "rngd", "count": count, "cards_per_server": cards}],
                  "services": services})  # fmt: skip
    if spec is None:
        return
    placement = place_fleet(spec)
    per_server = sum(tp * n for _, tp, n in entries)
    assert placement.unused_cards == {"rngd": count * (cards - per_server)}
    for rep in placement.replicas:
        dep = spec.deployments[rep.deployment_index]
        assert rep.card_indices == tuple(range(rep.card_indices[0], rep.card_indices[0] + dep.tp))
