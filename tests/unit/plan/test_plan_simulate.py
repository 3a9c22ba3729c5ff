"""Simulator-backed profiles and verification on small synthetic services."""

from __future__ import annotations

import copy
from dataclasses import replace
from typing import Any

import numpy as np
import pytest
from plan_factories import CAT, allocation, chat_spec, h100_rngd_unit, replica

from npucenter.perf import PerfModelCache
from npucenter.plan.profile import AnalyticProfile
from npucenter.plan.simulate import (
    CenterVerifier,
    SimProfile,
    SimVerifier,
    _labelled,
    poisson_like,
    service_stream,
    simulate_service,
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
    return parse_plan_spec(data)


def test_more_replicas_meet_the_slo_that_one_misses() -> None:
    spec = _spec(rate_rps=200)  # about 3x what one RNGD replica sustains by the perf model
    svc = spec.services[0]
    stream = service_stream(svc, max_requests=3000)
    perf = PerfModelCache(CAT)
    one = simulate_service(svc, stream, [(RNGD, 1, 1.0)], perf)
    many = simulate_service(svc, stream, [(RNGD, 6, 1.0)], perf)
    assert one.requests == many.requests == len(stream)
    assert one.slo_attainment < 0.5 < 0.9 <= many.slo_attainment
    assert many.output_tokens == int(stream.output_tokens.sum())
    assert many.energy_j > 0


def test_requests_that_fit_no_replica_are_dropped_and_missed() -> None:
    spec = _spec(mean_input_tokens=2_000_000)  # far beyond any KV cache
    svc = spec.services[0]
    res = simulate_service(
        svc, service_stream(svc, max_requests=20), [(H100, 1, 1.0)], PerfModelCache(CAT)
    )
    assert res.dropped == res.requests == 20
    assert res.slo_attainment == 0.0


def test_simulation_is_deterministic_for_a_seed() -> None:
    svc = _spec().services[0]
    stream = service_stream(svc, max_requests=500, seed=3)
    units = [(RNGD, 2, 1.0), (H100, 1, 2.0)]
    a = simulate_service(svc, stream, units, PerfModelCache(CAT), seed=7)
    b = simulate_service(svc, stream, units, PerfModelCache(CAT), seed=7)
    assert a == b


def test_disaggregated_unit_serves_every_request() -> None:
    svc = replace(_spec().services[0], slo=replace(_spec().services[0].slo, ttft_s=60, tpot_s=5))
    stream = service_stream(svc, max_requests=300)
    res = simulate_service(svc, stream, [(UNIT, 1, 1.0)], PerfModelCache(CAT))
    assert res.dropped == 0
    assert res.slo_attainment == 1.0
    assert res.output_tokens == int(stream.output_tokens.sum())


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


def test_verifier_reuses_results_for_unchanged_replicas() -> None:
    spec = _spec()
    traffic = {s.name: stats_from_spec(s.traffic) for s in spec.services}
    verifier = SimVerifier(CAT, spec, traffic=traffic, max_requests=400)
    labels = {RNGD.label: RNGD, H100.label: H100}
    first = verifier.verify(spec, allocation({RNGD.label: 2, H100.label: 1}), labels)
    again = verifier.verify(spec, allocation({H100.label: 1, RNGD.label: 2}), labels)
    assert verifier.num_simulations == 1
    assert first.slo_attainment == again.slo_attainment
    assert 0.0 <= first.slo_attainment["chat"] <= 1.0
    assert first.energy_j_per_output_token is not None and first.energy_j_per_output_token > 0


def test_poisson_like_keeps_the_rate_and_the_length_distribution() -> None:
    svc = _spec().services[0]
    base = service_stream(svc, max_requests=2000, seed=1)
    pois = poisson_like(base, 4000, seed=2)
    assert len(pois) == 4000
    assert pois.mean_rate_rps == pytest.approx(base.mean_rate_rps, rel=0.1)
    assert set(np.unique(pois.prompt_tokens)) <= set(np.unique(base.prompt_tokens))


# --- the whole-center verifier -----------------------------------------------------------------


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
    labels = {c.label: c for c in (UNIT, CODE)}
    fleet = verifier.fleet_for(spec, allocation({UNIT.label: 3, CODE.label: 2}), labels)
    assert fleet is not None
    cards = {p.device: p.num_cards for p in fleet.servers}
    assert cards == {"furiosa_rngd": 6, "nvidia_h100_sxm": 5}  # 3 prefill + 2 code on H100
    roles = sorted((d.service, d.role) for d in fleet.deployments)
    assert roles == [("chat", "decode"), ("chat", "prefill"), ("code", "both")]


def test_mixed_serving_modes_fall_back_to_the_replica_simulation() -> None:
    spec = _two_service_spec()
    verifier = CenterVerifier(CAT, spec)
    labels = {c.label: c for c in (UNIT, RNGD, CODE)}
    alloc = allocation({UNIT.label: 1, RNGD.label: 2, CODE.label: 1})
    assert verifier.fleet_for(spec, alloc, labels) is None
    check = verifier.verify(spec, alloc, labels)
    assert verifier.num_fallbacks == 1 and verifier.num_simulations == 0
    assert set(check.slo_attainment) == {"chat", "code"}


def test_center_and_replica_verifiers_agree_on_a_clear_case() -> None:
    spec = _two_service_spec()
    labels = {c.label: c for c in (RNGD, CODE)}
    big = allocation({RNGD.label: 4, CODE.label: 3})
    small = allocation({RNGD.label: 1, CODE.label: 1})
    center = CenterVerifier(CAT, spec)
    replica = SimVerifier(CAT, spec)
    for alloc in (big, small):
        a = center.verify(spec, alloc, labels).slo_attainment
        b = replica.verify(spec, alloc, labels).slo_attainment
        for name in ("chat", "code"):
            assert abs(a[name] - b[name]) < 0.15
    ok = center.verify(spec, big, labels)
    assert min(ok.slo_attainment.values()) >= 0.9
    assert center.num_simulations == 2  # the repeat came from the cache


# (candidate, load factor over its analytic capacity where some but not all requests miss)
@pytest.mark.parametrize(
    ("cand", "factor"), [(RNGD, 1.3), (H100, 3.0), (UNIT, 5.0)], ids=["rngd", "h100", "unit"]
)
def test_profile_trials_on_the_center_match_the_replica_loop_for_one_unit(cand, factor) -> None:
    # SimProfile runs sim.Center on a one-unit fleet; for one unit the replica loop the
    # SimVerifier uses is the same model, request for request
    spec = _spec()
    svc = spec.services[0]
    near = AnalyticProfile(CAT, {svc.name: stats_from_spec(svc.traffic)}).max_rate_rps(svc, cand)
    base = service_stream(svc, max_requests=600, seed=1)
    stream = base.scale_rate(factor * near / base.mean_rate_rps)
    loop = simulate_service(svc, stream, [(cand, 1, 1.0)], PerfModelCache(CAT))
    center = Center(SimProfile.fleet_for(svc, cand), CAT).run(_labelled(svc.name, stream))
    assert 0 < loop.met < loop.requests  # a rate where some requests miss: a real comparison
    assert int(center.met_slo.sum()) == loop.met
