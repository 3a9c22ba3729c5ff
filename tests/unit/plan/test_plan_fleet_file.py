"""A chosen plan as a fleet file: it parses, places by admission and simulates as planned."""

from __future__ import annotations

import copy
from collections.abc import Mapping
from dataclasses import replace
from typing import Any

import numpy as np
import pytest
import yaml
from plan_factories import CAT, chat_spec

from npucenter.errors import CapacityUnavailableError, NotSupportedError
from npucenter.fleet.placement import place_fleet
from npucenter.fleet.spec import fleet_spec_from_mapping
from npucenter.plan.fleet_file import overrides_catalog, plan_fleet_mapping
from npucenter.plan.planner import PlanResult, plan_capacity
from npucenter.plan.profile import Candidate
from npucenter.plan.spec import ServiceSpec, parse_plan_spec
from npucenter.plan.traffic import stats_from_spec
from npucenter.sim.center import build_center
from npucenter.workload import FixedLength, PoissonArrivals, synthetic_trace

SPEC = chat_spec(
    "emit",
    cap_w=500_000,
    rngd_cost=4.0,
    h100_cost=30.0,
    traffic={"rate_rps": 10, "mean_input_tokens": 500, "mean_output_tokens": 100},
    slo={"ttft_s": 2.0, "tpot_s": 0.1, "attainment_fraction": 0.95},
    headroom_fraction=0.0,
    gpu_jobs=[{"name": "ft", "gpu_hours_per_day": 24}],
)


class _Table:
    """Fixed capacities per device (decode device for disaggregated units)."""

    def __init__(self, rates: Mapping[str, float], disaggregated: float = 0.0) -> None:
        self.rates = dict(rates)
        self.disaggregated = disaggregated

    def max_rate_rps(self, service: ServiceSpec, candidate: Candidate) -> float:
        if candidate.disaggregated:
            return self.disaggregated
        return self.rates[candidate.device_id]


def _plan(data: dict[str, Any], profile: Any) -> PlanResult:
    spec = parse_plan_spec(data)
    traffic = {s.name: stats_from_spec(s.traffic) for s in spec.services}
    return plan_capacity(spec, catalog=CAT, traffic=traffic, profile=profile)


def _round_trip(doc: dict[str, Any]) -> Any:
    return fleet_spec_from_mapping(yaml.safe_load(yaml.safe_dump(doc)))


def _cards(doc: dict[str, Any]) -> dict[str, int]:
    out: dict[str, int] = {}
    for dep in doc["services"]:
        out[dep["device"]] = out.get(dep["device"], 0) + dep["tp"] * dep["replicas"]
    return out


def test_colocated_plan_emits_its_servers_replicas_and_slo() -> None:
    result = _plan(SPEC, _Table({"furiosa_rngd": 1.0, "nvidia_h100_sxm": 4.0}))
    alloc = result.plan.allocation
    assert alloc is not None
    doc = plan_fleet_mapping(result)
    fleet = _round_trip(doc)
    assert {p.device: p.num_servers for p in fleet.servers} == {
        d: n for d, n in alloc.servers.items() if n
    }
    assert sum(fleet.num_replicas(d) for d in fleet.deployments) == sum(alloc.replicas.values())
    # the replicas' cards plus the cards held for GPU jobs are what the plan bought busy
    for device, cards in _cards(doc).items():
        assert cards + alloc.job_cards.get(device, 0) == alloc.cards_used[device]
    slo = fleet.service("chat").slo
    assert (slo.ttft_s, slo.tpot_s, slo.percentile) == (2.0, 0.1, 0.95)
    assert fleet.service("chat").routing == result.spec.verification.routing
    placement = place_fleet(fleet)
    assert len(placement.replicas) == sum(alloc.replicas.values())


def test_disaggregated_plan_emits_prefill_and_decode_pools_that_simulate() -> None:
    data = copy.deepcopy(SPEC)
    data["disaggregation"] = [
        {"prefill": "h100", "decode": "rngd", "decode_per_prefill": [2], "kv_link_gbps": 25}
    ]
    result = _plan(data, _Table({"furiosa_rngd": 0.1, "nvidia_h100_sxm": 0.1}, disaggregated=10))
    alloc = result.plan.allocation
    assert alloc is not None
    units = sum(n for label, n in alloc.replicas.items() if "prefill" in label)
    assert units >= 1
    doc = plan_fleet_mapping(result)
    roles = {d["role"]: d for d in doc["services"]}
    assert roles["prefill"]["device"] == "nvidia_h100_sxm"
    assert roles["prefill"]["replicas"] == units
    assert roles["decode"]["device"] == "furiosa_rngd"
    assert roles["decode"]["replicas"] == 2 * units
    assert doc["network_gb_per_s"] == 25
    fleet = _round_trip(doc)
    trace = synthetic_trace(
        num_requests=100,
        arrivals=PoissonArrivals(rate_rps=2.0),
        prompt=FixedLength(tokens=400),
        output=FixedLength(tokens=20),
        rng=np.random.default_rng(0),
    )
    res = build_center(fleet, CAT).run(trace)
    assert res.summary["completed"] == 100


def test_a_service_mixing_serving_modes_cannot_be_a_fleet_file() -> None:
    data = copy.deepcopy(SPEC)
    data["disaggregation"] = [{"prefill": "h100", "decode": "rngd", "decode_per_prefill": [2]}]
    result = _plan(data, _Table({"furiosa_rngd": 0.1, "nvidia_h100_sxm": 0.1}, disaggregated=10))
    labels = [p.candidate.label for p in result.profiles]
    unit = next(label for label in labels if "prefill" in label)
    plain = next(label for label in labels if "prefill" not in label)
    assert result.plan.allocation is not None
    mixed = replace(
        result.plan, allocation=replace(result.plan.allocation, replicas={unit: 1, plain: 1})
    )
    with pytest.raises(NotSupportedError):
        plan_fleet_mapping(result, outcome=mixed)


def test_an_infeasible_plan_has_no_fleet() -> None:
    data = copy.deepcopy(SPEC)
    data["power"]["cap_w"] = 10.0
    result = _plan(data, _Table({"furiosa_rngd": 1.0, "nvidia_h100_sxm": 4.0}))
    assert result.plan.allocation is None
    with pytest.raises(CapacityUnavailableError):
        plan_fleet_mapping(result)


def test_spec_overrides_become_a_user_catalog_the_fleet_names() -> None:
    data = copy.deepcopy(SPEC)
    data["devices"][0]["overrides"] = {"tdp_w": 180.0}
    data["devices"][0]["override_source"] = "assumption: product page"
    spec = parse_plan_spec(data)
    doc = overrides_catalog(spec)
    assert doc == {
        "devices": [{"id": "rngd", "tdp_w": 180.0, "source": "assumption: product page"}]
    }
    assert CAT.with_documents([doc]).device("rngd").tdp_w == 180.0
    assert overrides_catalog(parse_plan_spec(SPEC)) is None
    result = _plan(SPEC, _Table({"furiosa_rngd": 1.0, "nvidia_h100_sxm": 4.0}))
    assert plan_fleet_mapping(result, catalog_files=["x.catalog.yaml"])["catalog"] == [
        "x.catalog.yaml"
    ]
