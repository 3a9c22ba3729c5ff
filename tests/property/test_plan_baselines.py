"""Planner invariant: the free optimum is never dearer than a baseline (they are restrictions)."""

from __future__ import annotations

from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from npucenter.catalog import default_catalog
from npucenter.plan.planner import plan_capacity
from npucenter.plan.profile import Candidate
from npucenter.plan.spec import ServiceSpec, parse_plan_spec
from npucenter.plan.traffic import stats_from_spec

CAT = default_catalog()


class _Rates:
    def __init__(self, rates: dict[str, float]) -> None:
        self.rates = rates

    def max_rate_rps(self, service: ServiceSpec, candidate: Candidate) -> float:
        return self.rates[candidate.device_id]


@settings(max_examples=25, deadline=None)
@given(
    npu_rate=st.floats(0.5, 10),
    gpu_rate=st.floats(0.5, 30),
    npu_cost=st.floats(1, 40),
    gpu_cost=st.floats(5, 80),
    load=st.floats(1, 200),
    gpu_hours=st.sampled_from([0, 24, 100]),
)
def test_plan_is_never_dearer_than_any_baseline(
    npu_rate: float, gpu_rate: float, npu_cost: float, gpu_cost: float, load: float, gpu_hours: int
) -> None:
    data: dict[str, Any] = {
        "name": "prop",
        "power": {"cap_w": 2e6, "price_usd_per_kwh": 0.1},
        "devices": [
            {"device": "rngd", "server_cost_usd_per_hour": npu_cost},
            {"device": "h100", "server_cost_usd_per_hour": gpu_cost},
        ],
        "services": [
            {
                "name": "chat",
                "model": "llama-3.1-8b",
                "traffic": {"rate_rps": load, "mean_input_tokens": 500, "mean_output_tokens": 100},
                "slo": {"ttft_s": 2.0, "tpot_s": 0.1},
            }
        ],
        "gpu_jobs": [{"name": "ft", "gpu_hours_per_day": gpu_hours}] if gpu_hours else [],
    }
    spec = parse_plan_spec(data)
    traffic = {s.name: stats_from_spec(s.traffic) for s in spec.services}
    rates = _Rates({"furiosa_rngd": npu_rate, "nvidia_h100_sxm": gpu_rate})
    result = plan_capacity(spec, catalog=CAT, traffic=traffic, profile=rates, pareto_points=3)
    plan = result.plan.allocation
    assert plan is not None
    for outcome in result.baselines.values():
        if outcome.allocation is not None:
            assert plan.cost_usd_per_hour <= outcome.allocation.cost_usd_per_hour * (1 + 1e-6)
    assert plan.capacity_rps["chat"] >= load * (1 + spec.headroom_fraction) - 1e-6
