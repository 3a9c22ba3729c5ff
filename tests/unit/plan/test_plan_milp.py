"""The capacity MILP against brute-force enumeration on small instances."""

from __future__ import annotations

import itertools
import math
import random
from dataclasses import replace

import pytest

from npucenter.errors import InvalidConfigError
from npucenter.plan.milp import (
    Allocation,
    CapacityProblem,
    DeviceType,
    ReplicaOption,
    pareto_front,
    solve_capacity,
)

# kind -> (server cost USD/h, active W, idle W) of the toy devices
_TOY: dict[str, tuple[float, float, float]] = {
    "npu": (3.0, 150.0, 40.0),
    "gpu": (10.0, 700.0, 100.0),
}


def _device(kind: str, **kw: object) -> DeviceType:
    cost, active, idle = _TOY[kind]
    base: dict[str, object] = dict(
        device_id=kind,
        kind=kind,
        cards_per_server=2,
        server_cost_usd_per_hour=cost,
        active_power_w=active,
        idle_power_w=idle,
    )
    base.update(kw)
    return DeviceType(**base)  # type: ignore[arg-type]


def _npu(**kw: object) -> DeviceType:
    return _device("npu", **kw)


def _gpu(**kw: object) -> DeviceType:
    return _device("gpu", **kw)


def _brute_force(p: CapacityProblem, max_replicas: int = 8) -> tuple[float, float] | None:
    """(min objective, its cost) by enumerating servers, replicas and job cards."""
    devs = p.devices
    best: tuple[float, float] | None = None
    server_ranges = [range(d.min_servers, d.max_servers + 1) for d in devs]
    job_ranges = [
        range(d.max_servers * d.cards_per_server + 1)
        if d.kind == "gpu" and p.gpu_job_cards > 0
        else range(1)
        for d in devs
    ]
    for servers in itertools.product(*server_ranges):
        cards = {d.device_id: n * d.cards_per_server for d, n in zip(devs, servers, strict=True)}
        total = sum(cards.values())
        npu_cards = sum(cards[d.device_id] for d in devs if d.kind == "npu")
        if p.npu_share_bounds is not None:
            lo, hi = p.npu_share_bounds
            if not (lo * total - 1e-9 <= npu_cards <= hi * total + 1e-9):
                continue
        rep_ranges = [
            range(min(max_replicas, *(cards[d] // c for d, c in opt.cards.items())) + 1)
            for opt in p.options
        ]
        for reps in itertools.product(*rep_ranges):
            used = dict.fromkeys(cards, 0)
            cap = dict.fromkeys(p.demand_rps, 0.0)
            ok = True
            for opt, r in zip(p.options, reps, strict=True):
                if r and any(
                    d.kind not in p.allowed_inference_kinds
                    for d in devs
                    if d.device_id in opt.cards
                ):
                    ok = False
                for dev, c in opt.cards.items():
                    used[dev] += c * r
                cap[opt.service] = cap.get(opt.service, 0.0) + opt.rate_rps * r
            if not ok or any(used[k] > cards[k] for k in cards):
                continue
            if any(cap[s] < rate - 1e-9 for s, rate in p.demand_rps.items()):
                continue
            for jobs in itertools.product(*job_ranges):
                if sum(jobs) < p.gpu_job_cards - 1e-9:
                    continue
                busy = {d.device_id: used[d.device_id] + j for d, j in zip(devs, jobs, strict=True)}
                if any(busy[k] > cards[k] for k in cards):
                    continue
                power = p.pue * sum(
                    n * d.server_base_power_w
                    + busy[d.device_id] * (d.active_power_w - d.idle_power_w)
                    for d, n in zip(devs, servers, strict=True)
                )
                if power > p.power_cap_w + 1e-9:
                    continue
                cost = (
                    sum(n * d.server_cost_usd_per_hour for d, n in zip(devs, servers, strict=True))
                    + power * p.power_price_usd_per_kwh / 1000
                )
                objective = power if p.objective == "power" else cost
                if best is None or objective < best[0] - 1e-9:
                    best = (objective, cost)
                break  # more job cards never help once the demand is met
    return best


def _objective(p: CapacityProblem, alloc: Allocation) -> float:
    return alloc.power_w if p.objective == "power" else alloc.cost_usd_per_hour


def _check_feasible(p: CapacityProblem, alloc: Allocation) -> None:
    for dev in p.devices:
        assert (
            alloc.cards_used[dev.device_id] <= alloc.servers[dev.device_id] * dev.cards_per_server
        )
        assert dev.min_servers <= alloc.servers[dev.device_id] <= dev.max_servers
    for svc, rate in p.demand_rps.items():
        assert alloc.capacity_rps[svc] >= rate - 1e-9
    assert alloc.power_w <= p.power_cap_w + 1e-6
    assert sum(alloc.job_cards.values()) >= p.gpu_job_cards - 1e-9


def _two_service_problem(**kw: object) -> CapacityProblem:
    options = (
        ReplicaOption(service="chat", label="chat@npu", cards={"npu": 1}, rate_rps=2.0),
        ReplicaOption(service="chat", label="chat@gpu", cards={"gpu": 1}, rate_rps=5.0),
        ReplicaOption(service="code", label="code@gpu", cards={"gpu": 1}, rate_rps=3.0),
        ReplicaOption(service="code", label="code@npu", cards={"npu": 2}, rate_rps=1.5),
    )
    base: dict[str, object] = dict(
        devices=(_npu(max_servers=4), _gpu(max_servers=3)),
        options=options,
        demand_rps={"chat": 7.0, "code": 2.5},
        power_cap_w=10_000.0,
        power_price_usd_per_kwh=0.1,
    )
    base.update(kw)
    return CapacityProblem(**base)  # type: ignore[arg-type]


def test_single_device_needs_exactly_enough_servers() -> None:
    p = CapacityProblem(
        devices=(_npu(cards_per_server=8),),
        options=(ReplicaOption(service="s", label="s@npu", cards={"npu": 1}, rate_rps=2.0),),
        demand_rps={"s": 20.0},
        power_cap_w=1e6,
    )
    alloc = solve_capacity(p)
    assert alloc is not None
    assert alloc.replicas["s@npu"] == 10  # ceil(20 / 2)
    assert alloc.servers["npu"] == 2  # ceil(10 / 8)
    assert alloc.cost_usd_per_hour == pytest.approx(6.0)
    assert alloc.npu_share == 1.0


def test_matches_enumeration_on_hand_built_instance() -> None:
    p = _two_service_problem()
    alloc = solve_capacity(p)
    best = _brute_force(p)
    assert alloc is not None and best is not None
    _check_feasible(p, alloc)
    assert alloc.cost_usd_per_hour == pytest.approx(best[1], rel=1e-6)


@pytest.mark.parametrize("seed", range(12))
def test_matches_enumeration_on_random_instances(seed: int) -> None:
    rng = random.Random(seed)
    devices = (
        _npu(
            cards_per_server=rng.choice([1, 2]),
            server_cost_usd_per_hour=rng.uniform(1, 10),
            max_servers=rng.randint(2, 4),
            min_servers=rng.choice([0, 0, 1]),
        ),
        _gpu(
            cards_per_server=rng.choice([1, 2]),
            server_cost_usd_per_hour=rng.uniform(1, 20),
            max_servers=rng.randint(1, 3),
        ),
    )
    options = tuple(
        ReplicaOption(
            service=svc,
            label=f"{svc}@{dev}",
            cards={dev: rng.choice([1, 1, 2])},
            rate_rps=round(rng.uniform(0.5, 4.0), 2),
        )
        for svc in ("a", "b")
        for dev in ("npu", "gpu")
    )
    p = CapacityProblem(
        devices=devices,
        options=options,
        demand_rps={"a": round(rng.uniform(0.5, 4), 2), "b": round(rng.uniform(0.0, 3), 2)},
        power_cap_w=rng.uniform(1500, 6000),
        power_price_usd_per_kwh=rng.uniform(0, 0.3),
        gpu_job_cards=rng.choice([0.0, 0.5, 1.0]),
        objective=rng.choice(["cost", "power"]),
        npu_share_bounds=rng.choice([None, (0.5, 0.8)]),
    )
    alloc = solve_capacity(p)
    best = _brute_force(p)
    if best is None:
        assert alloc is None
        return
    assert alloc is not None
    _check_feasible(p, alloc)
    assert _objective(p, alloc) == pytest.approx(best[0], rel=1e-5, abs=1e-6)


def test_power_cap_too_low_is_infeasible() -> None:
    p = _two_service_problem(power_cap_w=300.0)
    assert solve_capacity(p) is None
    assert _brute_force(p) is None


def _npu_or_gpu_chat(**kw: object) -> CapacityProblem:
    """One service, 16 req/s: NPU replicas do 2 req/s on dearer servers, GPU ones 8 req/s."""
    p = CapacityProblem(
        devices=(_npu(server_cost_usd_per_hour=8.0, max_servers=10), _gpu(max_servers=10)),
        options=(
            ReplicaOption(service="chat", label="chat@npu", cards={"npu": 1}, rate_rps=2.0),
            ReplicaOption(service="chat", label="chat@gpu", cards={"gpu": 1}, rate_rps=8.0),
        ),
        demand_rps={"chat": 16.0},
        power_cap_w=1e6,
    )
    return replace(p, **kw)  # type: ignore[arg-type]


def test_cap_forces_the_low_power_device() -> None:
    # Uncapped, GPUs are cheapest for chat; a tight cap moves chat onto NPUs.
    p = _npu_or_gpu_chat()
    free = solve_capacity(p)
    assert free is not None and free.servers["gpu"] >= 1
    capped = solve_capacity(replace(p, power_cap_w=free.power_w - 1.0))
    assert capped is not None
    assert capped.power_w < free.power_w
    assert capped.cost_usd_per_hour >= free.cost_usd_per_hour
    assert capped.servers["npu"] > free.servers["npu"]


def test_fixed_inventory_is_a_lower_bound() -> None:
    p = _two_service_problem(devices=(_npu(max_servers=4, min_servers=3), _gpu(max_servers=3)))
    alloc = solve_capacity(p)
    assert alloc is not None
    assert alloc.servers["npu"] >= 3


def test_npu_share_bounds_hold() -> None:
    p = _two_service_problem(npu_share_bounds=(0.75, 0.85))
    alloc = solve_capacity(p)
    best = _brute_force(p)
    assert (alloc is None) == (best is None)
    if alloc is not None:
        assert 0.75 - 1e-9 <= alloc.npu_share <= 0.85 + 1e-9


def test_allowed_kinds_restrict_replicas() -> None:
    p = _two_service_problem(allowed_inference_kinds=("npu",), demand_rps={"chat": 4.0})
    alloc = solve_capacity(p)
    assert alloc is not None
    assert set(alloc.replicas) <= {"chat@npu", "code@npu"}


def test_gpu_jobs_reserve_gpu_cards() -> None:
    p = _two_service_problem(gpu_job_cards=2.5, allowed_inference_kinds=("npu",))
    p = replace(p, demand_rps={"chat": 2.0})
    alloc = solve_capacity(p)
    assert alloc is not None
    assert sum(alloc.job_cards.values()) == 3  # whole cards
    assert alloc.servers["gpu"] * 2 >= 3


def test_pareto_front_trades_power_for_cost() -> None:
    p = _npu_or_gpu_chat()
    front = pareto_front(p, num_points=6)
    assert len(front) >= 2
    powers = [a.power_w for a in front]
    costs = [a.cost_usd_per_hour for a in front]
    assert powers == sorted(powers)
    assert all(c1 > c2 for c1, c2 in itertools.pairwise(costs))


def test_option_on_unknown_device_is_rejected() -> None:
    with pytest.raises(InvalidConfigError) as info:
        CapacityProblem(
            devices=(_npu(),),
            options=(ReplicaOption(service="s", label="x", cards={"tpu": 1}, rate_rps=1.0),),
            demand_rps={"s": 1.0},
            power_cap_w=1.0,
        )
    assert info.value.field == "option.cards"


def test_zero_demand_costs_only_inventory() -> None:
    p = _two_service_problem(
        demand_rps={"chat": 0.0, "code": 0.0},
        devices=(_npu(min_servers=1), _gpu()),
    )
    alloc = solve_capacity(p)
    assert alloc is not None
    assert alloc.servers == {"npu": 1, "gpu": 0}
    assert math.isclose(alloc.cost_usd_per_hour, 3.0 + 2 * 40 / 1000 * 0.1)


def test_power_and_weighted_objectives_trade_cost_for_power() -> None:
    p = _npu_or_gpu_chat(power_price_usd_per_kwh=0.1)
    cheapest = solve_capacity(p)
    frugal = solve_capacity(replace(p, objective="power"))
    heavy = solve_capacity(replace(p, objective="weighted", power_weight_usd_per_kw=1000.0))
    none = solve_capacity(replace(p, objective="weighted", power_weight_usd_per_kw=0.0))
    assert cheapest and frugal and heavy and none
    assert frugal.power_w < cheapest.power_w
    assert frugal.cost_usd_per_hour >= cheapest.cost_usd_per_hour
    assert heavy.power_w == pytest.approx(frugal.power_w)  # a huge weight behaves like "power"
    assert none.cost_usd_per_hour == pytest.approx(cheapest.cost_usd_per_hour)
