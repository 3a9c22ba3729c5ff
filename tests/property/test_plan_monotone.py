"""Planner invariants: cost never falls as load grows; a looser power cap never costs more."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from npucenter.plan.milp import CapacityProblem, DeviceType, ReplicaOption, solve_capacity


@st.composite
def problems(draw: st.DrawFn) -> CapacityProblem:
    devices = (
        DeviceType(
            device_id="npu",
            kind="npu",
            cards_per_server=draw(st.sampled_from([1, 4, 8])),
            server_cost_usd_per_hour=draw(st.floats(0.5, 20)),
            active_power_w=150.0,
            idle_power_w=draw(st.floats(0, 150)),
            max_servers=draw(st.integers(1, 20)),
        ),
        DeviceType(
            device_id="gpu",
            kind="gpu",
            cards_per_server=draw(st.sampled_from([1, 8])),
            server_cost_usd_per_hour=draw(st.floats(0.5, 60)),
            active_power_w=700.0,
            idle_power_w=draw(st.floats(0, 700)),
            max_servers=draw(st.integers(1, 10)),
        ),
    )
    options = tuple(
        ReplicaOption(
            service=svc,
            label=f"{svc}@{dev}",
            cards={dev: draw(st.sampled_from([1, 2]))},
            rate_rps=draw(st.floats(0.1, 10)),
        )
        for svc in ("chat", "code")
        for dev in ("npu", "gpu")
    )
    return CapacityProblem(
        devices=devices,
        options=options,
        demand_rps={"chat": draw(st.floats(0, 40)), "code": draw(st.floats(0, 40))},
        power_cap_w=draw(st.floats(2_000, 200_000)),
        power_price_usd_per_kwh=draw(st.floats(0, 0.5)),
        gpu_job_cards=draw(st.sampled_from([0.0, 1.0, 3.5])),
        npu_share_bounds=draw(st.sampled_from([None, (0.75, 0.85)])),
    )


@settings(max_examples=40, deadline=None)
@given(problems(), st.floats(1.0, 3.0))
def test_cost_never_falls_as_load_grows(problem: CapacityProblem, factor: float) -> None:
    base = solve_capacity(problem)
    more = solve_capacity(problem.scaled(demand_factor=factor))
    if more is not None:
        # Whatever serves more load also serves the base load, so the base is feasible and cheaper.
        assert base is not None
        assert base.cost_usd_per_hour <= more.cost_usd_per_hour * (1 + 1e-6) + 1e-9


@settings(max_examples=40, deadline=None)
@given(problems(), st.floats(0.3, 1.0))
def test_tighter_power_cap_never_costs_less(problem: CapacityProblem, factor: float) -> None:
    loose = solve_capacity(problem)
    tight = solve_capacity(problem.scaled(power_cap_factor=factor))
    if tight is not None:
        assert loose is not None
        assert loose.cost_usd_per_hour <= tight.cost_usd_per_hour * (1 + 1e-6) + 1e-9
        assert tight.power_w <= problem.power_cap_w * factor + 1e-6
