"""The planner pipeline: candidates, baselines, the verification loop, the honest comparison."""

from __future__ import annotations

import copy
from collections.abc import Mapping
from dataclasses import replace
from typing import Any

import pytest
from plan_factories import CAT, chat_spec, h100_rngd_unit, replica

from npucenter.errors import InvalidConfigError, MissingFigureError
from npucenter.plan.milp import Allocation
from npucenter.plan.planner import (
    PlanResult,
    Verification,
    enumerate_candidates,
    plan_capacity,
    raised_headroom,
    spec_catalog,
)
from npucenter.plan.profile import AnalyticProfile, Candidate, TrafficStats
from npucenter.plan.report import render_html, result_to_dict
from npucenter.plan.spec import PlanSpec, ServiceSpec, parse_plan_spec
from npucenter.plan.traffic import stats_from_spec, stats_from_stream

SPEC = chat_spec(
    "unit",
    cap_w=500_000,
    rngd_cost=4.0,
    h100_cost=30.0,
    cards_per_server=2,
    traffic={"rate_rps": 10, "mean_input_tokens": 500, "mean_output_tokens": 100},
    slo={"ttft_s": 2.0, "tpot_s": 0.1},
    headroom_fraction=0.0,
    verification={"max_rounds": 4, "headroom_step_fraction": 0.25},
)


class TableProfile:
    """Fixed capacities per device (decode device for disaggregated units)."""

    def __init__(self, rates: Mapping[str, float], disaggregated: float = 0.0) -> None:
        self.rates = dict(rates)
        self.disaggregated = disaggregated

    def max_rate_rps(self, service: ServiceSpec, candidate: Candidate) -> float:
        if candidate.disaggregated:
            return self.disaggregated
        return self.rates[candidate.device_id]


class CapacityVerifier:
    """Meets the SLO only when the plan's capacity is at least ``factor`` x the traffic."""

    def __init__(self, factor: float) -> None:
        self.factor = factor
        self.calls = 0

    def verify(
        self, spec: PlanSpec, allocation: Allocation, candidates: Mapping[str, Candidate]
    ) -> Verification:
        self.calls += 1
        assert set(allocation.replicas) <= set(candidates)
        out = {}
        for svc in spec.services:
            need = svc.traffic.rate_rps * svc.traffic.rate_scale * self.factor  # type: ignore[operator]
            out[svc.name] = 1.0 if allocation.capacity_rps[svc.name] >= need - 1e-9 else 0.5
        return Verification(slo_attainment=out)


def _plan(data: dict[str, Any], profile: Any, verifier: Any = None) -> PlanResult:
    spec = parse_plan_spec(data)
    traffic = {s.name: stats_from_spec(s.traffic) for s in spec.services}
    return plan_capacity(spec, catalog=CAT, traffic=traffic, profile=profile, verifier=verifier)


def test_baselines_restrict_the_fleet_and_the_optimum_is_cheapest() -> None:
    result = _plan(SPEC, TableProfile({"furiosa_rngd": 1.0, "nvidia_h100_sxm": 4.0}))
    plan = result.plan.allocation
    assert plan is not None
    gpu = result.baselines["all-gpu"].allocation
    npu = result.baselines["all-npu"].allocation
    rule = result.baselines["80-20"].allocation
    assert gpu is not None and npu is not None and rule is not None
    assert gpu.servers["furiosa_rngd"] == 0
    assert all("h100" not in label for label in npu.replicas)
    assert 0.75 - 1e-9 <= rule.npu_share <= 0.85 + 1e-9
    for other in (gpu, npu, rule):
        assert plan.cost_usd_per_hour <= other.cost_usd_per_hour + 1e-9
    assert not result.plan.verified  # no verifier given


def test_rule_reported_not_cheapest_when_npus_dominate() -> None:
    # NPUs serve 1 req/s for 2 USD/h per card, GPUs 4 req/s for 15 USD/h: all-NPU wins.
    result = _plan(SPEC, TableProfile({"furiosa_rngd": 1.0, "nvidia_h100_sxm": 4.0}))
    assert result.plan.allocation is not None
    assert result.plan.allocation.npu_share == 1.0
    assert any("NOT the cheapest" in line for line in result.comparison)


def test_rule_reported_cheapest_when_it_is_the_optimum() -> None:
    # 4 NPU servers + 1 GPU server is exactly 80 %; make that mix the cheapest.
    data = copy.deepcopy(SPEC)
    data["services"][0]["traffic"]["rate_rps"] = 12
    data["devices"][0]["max_servers"] = 4
    # 8 NPU cards = 8 req/s (16 USD/h), 2 GPU cards = 4 req/s (30 USD/h): 12 req/s needs both.
    result = _plan(data, TableProfile({"furiosa_rngd": 1.0, "nvidia_h100_sxm": 2.0}))
    assert result.plan.allocation is not None
    assert result.plan.allocation.servers == {"furiosa_rngd": 4, "nvidia_h100_sxm": 1}
    assert any("IS the cheapest" in line for line in result.comparison)


def test_verification_raises_headroom_until_the_slo_holds() -> None:
    verifier = CapacityVerifier(factor=1.4)
    result = _plan(SPEC, TableProfile({"furiosa_rngd": 1.0, "nvidia_h100_sxm": 4.0}), verifier)
    outcome = result.plan
    assert outcome.verified
    # attainment 0.5 misses 0.9 by 8 steps of 5 points: capped at 4 steps of 25 % -> headroom 1.0
    assert outcome.rounds == 2
    assert outcome.headroom["chat"] == pytest.approx(1.0)
    assert outcome.allocation is not None
    assert outcome.allocation.capacity_rps["chat"] >= 14.0 - 1e-9


@pytest.mark.parametrize(
    ("attained", "steps"), [(0.89, 1), (0.85, 1), (0.84, 2), (0.75, 3), (0.1, 4)]
)
def test_headroom_rises_with_the_miss(attained: float, steps: int) -> None:
    assert raised_headroom(0.1, attained, 0.9, 0.1) == pytest.approx(1.1 * (1 + 0.1 * steps) - 1)


def test_a_cheaper_verified_fleet_of_another_variant_is_reused() -> None:
    # GPUs are the cheapest way to serve, so the free plan is all-GPU; the all-GPU baseline must
    # never end dearer than that verified fleet, whatever its own verification path did.
    verifier = CapacityVerifier(factor=1.2)
    result = _plan(SPEC, TableProfile({"furiosa_rngd": 0.2, "nvidia_h100_sxm": 8.0}), verifier)
    plan, gpu = result.plan.allocation, result.baselines["all-gpu"].allocation
    assert plan is not None and gpu is not None
    assert plan.npu_share == 0.0
    assert gpu.cost_usd_per_hour <= plan.cost_usd_per_hour + 1e-9
    for name in ("all-gpu", "all-npu", "80-20"):
        other = result.baselines[name]
        if other.verified and other.allocation is not None:
            assert plan.cost_usd_per_hour <= other.allocation.cost_usd_per_hour + 1e-9


def test_verification_gives_up_after_max_rounds() -> None:
    verifier = CapacityVerifier(factor=10.0)
    result = _plan(SPEC, TableProfile({"furiosa_rngd": 1.0, "nvidia_h100_sxm": 4.0}), verifier)
    assert not result.plan.verified
    assert result.plan.rounds == 4
    assert result.plan.allocation is not None  # the last (unverified) fleet is still reported
    assert "still missed" in result.plan.reason


def test_power_cap_below_any_fleet_reports_infeasible() -> None:
    data = copy.deepcopy(SPEC)
    data["power"]["cap_w"] = 100.0
    result = _plan(data, TableProfile({"furiosa_rngd": 1.0, "nvidia_h100_sxm": 4.0}))
    assert result.plan.allocation is None
    assert result.pareto == ()
    assert "no fleet" in result.comparison[0]
    assert result_to_dict(result)["verified"] is False


def test_service_without_any_capable_candidate_is_an_error() -> None:
    with pytest.raises(InvalidConfigError) as info:
        _plan(SPEC, TableProfile({"furiosa_rngd": 0.0, "nvidia_h100_sxm": 0.0}))
    assert info.value.field == "services[chat]"


def test_atom_needs_an_override_and_it_is_an_assumption() -> None:
    data = copy.deepcopy(SPEC)
    data["devices"].append(
        {"device": "atom", "server_cost_usd_per_hour": 2.0, "cards_per_server": 4}
    )
    data["services"][0]["precision"] = ["fp8", "int8"]
    with pytest.raises(MissingFigureError) as info:
        _plan(data, TableProfile({"furiosa_rngd": 1.0, "nvidia_h100_sxm": 4.0}))
    assert "tdp_w" in info.value.missing_fields
    data["devices"][-1]["overrides"] = {"tdp_w": 120.0, "memory_bandwidth_gbps": 250.0}
    data["devices"][-1]["override_source"] = "assumption: unit-test figures"
    rates = {"furiosa_rngd": 1.0, "nvidia_h100_sxm": 4.0, "rebellions_atom": 0.5}
    result = _plan(data, TableProfile(rates))
    labels = [p.candidate.label for p in result.profiles]
    assert any("rebellions_atom" in label and "int8" in label for label in labels)
    assert any("rebellions_atom.tdp_w=120" in a for a in result.assumptions)


def test_disaggregated_candidates_span_two_device_types() -> None:
    data = copy.deepcopy(SPEC)
    data["disaggregation"] = [{"prefill": "h100", "decode": "rngd", "decode_per_prefill": [2]}]
    spec = parse_plan_spec(data)
    cands, _ = enumerate_candidates(spec, spec_catalog(spec, CAT))
    dis = [c for c in cands if c.disaggregated]
    assert len(dis) == 1
    assert dis[0].cards == {"furiosa_rngd": 2, "nvidia_h100_sxm": 1}
    # When the unit is the cheapest way to serve, the plan uses it.
    result = _plan(
        data, TableProfile({"furiosa_rngd": 0.1, "nvidia_h100_sxm": 0.1}, disaggregated=10.0)
    )
    assert result.plan.allocation is not None
    assert any("prefill" in label for label in result.plan.allocation.replicas)


def test_gpu_jobs_force_gpus_even_in_all_npu() -> None:
    data = copy.deepcopy(SPEC)
    data["gpu_jobs"] = [{"name": "ft", "gpu_hours_per_day": 72}]  # 3 cards on average
    result = _plan(data, TableProfile({"furiosa_rngd": 1.0, "nvidia_h100_sxm": 4.0}))
    for outcome in (result.plan, result.baselines["all-npu"]):
        assert outcome.allocation is not None
        assert sum(outcome.allocation.job_cards.values()) >= 3
        assert outcome.allocation.servers["nvidia_h100_sxm"] >= 2


def test_json_has_the_contract_keys_and_html_is_self_contained() -> None:
    result = _plan(
        SPEC, TableProfile({"furiosa_rngd": 1.0, "nvidia_h100_sxm": 4.0}), CapacityVerifier(1.0)
    )
    doc = result_to_dict(result)
    for key in ("servers", "npu_share", "cost_per_hour", "power_w", "verified", "slo_attainment"):
        assert key in doc
        for name in ("all-gpu", "all-npu", "80-20"):
            assert key in doc["baselines"][name]
    assert doc["verified"] is True
    assert doc["slo_attainment"] == {"chat": 1.0}
    assert doc["assumptions"]
    page = render_html(result)
    assert "<script src" not in page and "<link" not in page and "http://" not in page
    assert "<svg" in page and "Pareto" in page


def test_sensitivity_doubling_traffic_never_costs_less() -> None:
    result = _plan(SPEC, TableProfile({"furiosa_rngd": 1.0, "nvidia_h100_sxm": 4.0}))
    cases = {c.name: c for c in result.sensitivity}
    base, double = cases["as planned"].allocation, cases["traffic x2"].allocation
    assert base is not None and double is not None
    assert double.cost_usd_per_hour >= base.cost_usd_per_hour
    assert double.capacity_rps["chat"] >= 20.0 - 1e-9  # headroom 0, traffic 10 req/s x 2


# --- the analytic profile -------------------------------------------------------------------


def _service(ttft_s: float = 2.0, tpot_s: float = 0.1) -> ServiceSpec:
    svc = parse_plan_spec(SPEC).services[0]
    return replace(svc, slo=replace(svc.slo, ttft_s=ttft_s, tpot_s=tpot_s))


STATS = {
    "chat": TrafficStats(
        rate_rps=10,
        mean_input_tokens=500,
        mean_output_tokens=100,
        p90_input_tokens=1200,
        p90_output_tokens=250,
    )
}


def test_analytic_rate_grows_with_a_looser_slo() -> None:
    prof = AnalyticProfile(CAT, STATS)
    cand = replica("furiosa_rngd")
    tight = prof.max_rate_rps(_service(tpot_s=0.03), cand)
    loose = prof.max_rate_rps(_service(tpot_s=0.2), cand)
    assert 0 < tight <= loose


def test_analytic_rate_is_zero_when_one_prefill_breaks_the_ttft() -> None:
    prof = AnalyticProfile(CAT, STATS)
    cand = replica("furiosa_rngd")
    assert prof.max_rate_rps(_service(ttft_s=1e-4), cand) == 0.0


def test_analytic_disaggregated_unit_is_limited_by_its_parts() -> None:
    prof = AnalyticProfile(CAT, STATS)
    svc = _service()
    unit, bigger = h100_rngd_unit(1), h100_rngd_unit(4)
    assert 0 < prof.max_rate_rps(svc, unit) <= prof.max_rate_rps(svc, bigger)


def test_stream_stats_scale_the_rate() -> None:
    arrivals = [0.0, 1.0, 2.0, 3.0, 4.0]
    one = stats_from_stream(arrivals, [10] * 5, [5] * 5)
    two = stats_from_stream(arrivals, [10] * 5, [5] * 5, rate_scale=2.0)
    assert two.rate_rps == pytest.approx(2 * one.rate_rps)
    assert one.mean_input_tokens == 10
    with pytest.raises(InvalidConfigError):
        stats_from_stream([0.0], [1], [1])


def test_progress_reports_each_phase() -> None:
    spec = parse_plan_spec(SPEC)
    traffic = {s.name: stats_from_spec(s.traffic) for s in spec.services}
    seen: list[str] = []
    plan_capacity(
        spec,
        catalog=CAT,
        traffic=traffic,
        profile=TableProfile({"furiosa_rngd": 1.0, "nvidia_h100_sxm": 4.0}),
        verifier=CapacityVerifier(1.0),
        progress=seen.append,
    )
    assert any(m.startswith("profiling candidate 1/") for m in seen)
    for variant in ("plan", "all-gpu", "all-npu", "80-20"):
        assert f"{variant}: solve and verify, round 1" in seen
    assert seen[-1] == "Pareto front and sensitivity"
