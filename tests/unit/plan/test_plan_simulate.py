"""Simulator-backed profiles and verification (the whole-center model) on small services."""

from __future__ import annotations

import copy
from dataclasses import replace
from typing import Any

import numpy as np
import pytest
from plan_factories import CAT, allocation, chat_spec, h100_rngd_unit, replica

from npucenter.plan.profile import AnalyticProfile
from npucenter.plan.simulate import (
    CenterVerifier,
    SimProfile,
    _labelled,
    poisson_like,
    service_stream,
)
from npucenter.plan.spec import PlanSpec, parse_plan_spec
from npucenter.plan.traffic import stats_from_spec
from npucenter.sim.center import Center

DATA = chat_spec(
    "sim",
    cap_w=1e6,
    rngd_cost=4.0,
    h100_cost=30.0,
    traffic={"rate_rps": 20, "mean_input_tokens": 300, "mean_output_tokens": 60},
    slo={"ttft_s": 1.0, "tpot_s": 0.05},
)
RNGD = replica("furiosa_rngd")
H100 = replica("nvidia_h100_sxm")
UNIT = h100_rngd_unit(2)
CODE = replica("nvidia_h100_sxm", service="code")


def _spec(**traffic: Any) -> PlanSpec:
    data = copy.deepcopy(DATA)
    data["services"][0]["traffic"].update(traffic)
    data["verification"] = {"max_requests": 3000}
    return parse_plan_spec(data)


def _labels(*cands: Any) -> dict[str, Any]:
    return {c.label: c for c in cands}


def test_more_replicas_meet_the_slo_that_one_misses() -> None:
    spec = _spec(rate_rps=200)  # about 3x what one RNGD replica sustains by the perf model
    verifier = CenterVerifier(CAT, spec)
    one = verifier.verify(spec, allocation({RNGD.label: 1}), _labels(RNGD))
    many = verifier.verify(spec, allocation({RNGD.label: 6}), _labels(RNGD))
    assert one.simulated_requests == many.simulated_requests == len(verifier.streams["chat"])
    assert one.slo_attainment["chat"] < 0.5 < 0.9 <= many.slo_attainment["chat"]
    assert many.energy_j_per_output_token is not None and many.energy_j_per_output_token > 0


def test_requests_that_fit_no_replica_are_missed() -> None:
    spec = _spec(mean_input_tokens=2_000_000)  # far beyond any KV cache
    check = CenterVerifier(CAT, spec, max_requests=20).verify(
        spec, allocation({H100.label: 1}), _labels(H100)
    )
    assert check.slo_attainment["chat"] == 0.0
    assert check.simulated_requests == 20


def test_a_service_without_replicas_misses_every_request() -> None:
    spec = _two_service_spec()
    verifier = CenterVerifier(CAT, spec)
    check = verifier.verify(spec, allocation({CODE.label: 2}), _labels(RNGD, CODE))
    assert check.slo_attainment["chat"] == 0.0 and check.slo_attainment["code"] > 0.5
    assert check.simulated_requests == len(verifier.streams["code"])  # chat's were not routed


def test_verification_is_deterministic_for_a_seed() -> None:
    spec = _spec()
    alloc = allocation({RNGD.label: 2, H100.label: 1})
    a = CenterVerifier(CAT, spec, max_requests=500, seed=3).verify(spec, alloc, _labels(RNGD, H100))
    b = CenterVerifier(CAT, spec, max_requests=500, seed=3).verify(spec, alloc, _labels(RNGD, H100))
    assert a == b


def test_disaggregated_unit_serves_every_request() -> None:
    svc = replace(_spec().services[0], slo=replace(_spec().services[0].slo, ttft_s=60, tpot_s=5))
    stream = service_stream(svc, max_requests=300)
    res = Center(SimProfile.fleet_for(svc, UNIT), CAT).run(_labelled(svc.name, stream))
    assert res.summary["completed"] == len(stream)
    assert res.summary["slo_attainment"] == 1.0


def test_sim_profile_agrees_with_the_analytic_model_within_a_factor_of_two() -> None:
    spec = _spec()
    svc = spec.services[0]
    traffic = {svc.name: stats_from_spec(svc.traffic)}
    sim = SimProfile(CAT, spec, traffic=traffic, max_requests=400, iterations=4)
    analytic = AnalyticProfile(CAT, traffic).max_rate_rps(svc, RNGD)
    rate = sim.max_rate_rps(svc, RNGD)
    assert analytic / 2 <= rate <= analytic * 2
    assert sim.num_simulations >= 4


def test_sim_profile_falls_with_a_tighter_slo() -> None:
    spec = _spec()
    svc = spec.services[0]
    traffic = {svc.name: stats_from_spec(svc.traffic)}
    sim = SimProfile(CAT, spec, traffic=traffic, max_requests=300, iterations=4)
    loose = sim.max_rate_rps(svc, H100)
    tight = sim.max_rate_rps(replace(svc, slo=replace(svc.slo, tpot_s=0.012)), H100)
    assert tight < loose


def test_poisson_like_keeps_the_rate_and_the_length_distribution() -> None:
    svc = _spec().services[0]
    base = service_stream(svc, max_requests=2000, seed=1)
    pois = poisson_like(base, 4000, seed=2)
    assert len(pois) == 4000
    assert pois.mean_rate_rps == pytest.approx(base.mean_rate_rps, rel=0.1)
    assert set(np.unique(pois.prompt_tokens)) <= set(np.unique(base.prompt_tokens))


# --- plans of several services ------------------------------------------------------------------


def _two_service_spec() -> PlanSpec:
    data = copy.deepcopy(DATA)
    data["services"].append(
        {
            "name": "code",
            "model": "llama-3.1-8b",
            "traffic": {"rate_rps": 10, "mean_input_tokens": 1000, "mean_output_tokens": 20},
            "slo": {"ttft_s": 1.0, "tpot_s": 0.05},
        }
    )
    data["disaggregation"] = [{"prefill": "h100", "decode": "rngd", "decode_per_prefill": [2]}]
    data["verification"] = {"max_requests": 400}
    return parse_plan_spec(data)


def test_plan_maps_to_a_center_fleet_with_exact_card_counts() -> None:
    spec = _two_service_spec()
    verifier = CenterVerifier(CAT, spec)
    fleet = verifier.fleet_for(
        spec, allocation({UNIT.label: 3, CODE.label: 2}), _labels(UNIT, CODE)
    )
    assert fleet is not None
    cards = {p.device: p.num_cards for p in fleet.servers}
    assert cards == {"furiosa_rngd": 6, "nvidia_h100_sxm": 5}  # 3 prefill + 2 code on H100
    roles = sorted((d.service, d.role) for d in fleet.deployments)
    assert roles == [("chat", "decode"), ("chat", "prefill"), ("code", "both")]


def test_a_service_mixing_serving_modes_runs_on_the_center() -> None:
    spec = _two_service_spec()
    verifier = CenterVerifier(CAT, spec)
    labels = _labels(UNIT, RNGD, CODE)
    alloc = allocation({UNIT.label: 1, RNGD.label: 2, CODE.label: 1})
    fleet = verifier.fleet_for(spec, alloc, labels)
    assert fleet is not None
    chat_roles = sorted(d.role for d in fleet.deployments if d.service == "chat")
    assert chat_roles == ["both", "decode", "prefill"]
    check = verifier.verify(spec, alloc, labels)
    assert verifier.num_simulations == 1
    assert set(check.slo_attainment) == {"chat", "code"}
    assert check.simulated_requests == sum(len(s) for s in verifier.streams.values())


def test_verifier_reuses_results_for_unchanged_replicas() -> None:
    spec = _two_service_spec()
    labels = _labels(RNGD, CODE)
    big = allocation({RNGD.label: 4, CODE.label: 3})
    center = CenterVerifier(CAT, spec)
    ok = center.verify(spec, big, labels)
    again = center.verify(spec, allocation({CODE.label: 3, RNGD.label: 4}), labels)
    assert again is ok and center.num_simulations == 1
    assert min(ok.slo_attainment.values()) >= 0.9
    small = center.verify(spec, allocation({RNGD.label: 1, CODE.label: 1}), labels)
    assert center.num_simulations == 2
    assert small.slo_attainment["code"] <= ok.slo_attainment["code"]
