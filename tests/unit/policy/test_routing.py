"""Routing policies: registry contract and each policy's choice on hand-made snapshots."""

from __future__ import annotations

import pytest

from npucenter.catalog import default_catalog
from npucenter.errors import InvalidConfigError, UnknownPluginError
from npucenter.perf import build_perf_model
from npucenter.policy import routing as rt
from npucenter.policy.routing import (
    ROUTING_POLICIES,
    PerfEstimator,
    ReplicaState,
    RouteRequest,
    RoutingContext,
    RoutingPolicy,
    RoutingSnapshot,
    make_routing_policy,
)


def state(rid: str, kind: str = "npu", **kw) -> ReplicaState:
    return ReplicaState(replica_id=rid, model_id="m", device_id="d-" + kind, device_kind=kind, **kw)


def req(prompt: int = 100, out: int = 10, model: str = "m") -> RouteRequest:
    return RouteRequest(request_id="r", model_id=model, prompt_tokens=prompt, max_output_tokens=out)


def snap(*states: ReplicaState) -> RoutingSnapshot:
    return RoutingSnapshot(now_s=0.0, replicas=states)


def test_all_exports_exist():
    for name in rt.__all__:
        assert hasattr(rt, name)


@pytest.mark.parametrize("name", ROUTING_POLICIES.names())
def test_every_registered_policy_satisfies_the_protocol(name):
    policy = make_routing_policy(name)
    assert isinstance(policy, RoutingPolicy)
    decision = policy.route(snap(state("a"), state("b", "gpu")), req())
    assert decision.replica_id in {"a", "b"} and decision.reason
    none = policy.route(snap(state("a", healthy=False)), req())
    assert none.replica_id is None
    other_model = policy.route(snap(state("a")), req(model="other"))
    assert other_model.replica_id is None


def test_unknown_policy_lists_valid_names():
    with pytest.raises(UnknownPluginError) as err:
        make_routing_policy("nope")
    assert "npu-first" in err.value.valid


def test_round_robin_cycles_over_healthy_replicas():
    policy = make_routing_policy("round-robin")
    s = snap(state("a"), state("b", healthy=False), state("c"))
    picks = [policy.route(s, req()).replica_id for _ in range(4)]
    assert picks == ["a", "c", "a", "c"]


def test_least_outstanding_tokens_picks_least_work():
    policy = make_routing_policy("least-outstanding-tokens")
    s = snap(
        state("a", outstanding_tokens=500),
        state("b", outstanding_tokens=20),
        state("c", outstanding_tokens=300),
    )
    assert policy.route(s, req()).replica_id == "b"


def test_least_requests_breaks_ties_by_order():
    policy = make_routing_policy("least-requests")
    s = snap(
        state("a", num_running=2),
        state("b", num_running=1, num_waiting=1),
        state("c", num_running=1),
    )
    assert policy.route(s, req()).replica_id == "c"


class FixedEstimator:
    """TTFT = predicted_ttft_s of the state; TPOT = 0.05 on NPUs, 0.02 on GPUs."""

    def estimate_ttft_s(self, state, prompt_tokens):
        return state.predicted_ttft_s

    def estimate_tpot_s(self, state):
        return 0.05 if state.device_kind == "npu" else 0.02


def test_npu_first_stays_on_npu_within_slo_and_spills_beyond():
    ctx = RoutingContext(estimator=FixedEstimator(), ttft_slo_s=1.0)
    policy = make_routing_policy("npu-first", ctx)
    ok = snap(
        state("n1", predicted_ttft_s=0.9),
        state("n2", predicted_ttft_s=0.5),
        state("g", "gpu", predicted_ttft_s=0.1),
    )
    assert policy.route(ok, req()).replica_id == "n2"
    busy = snap(
        state("n1", predicted_ttft_s=1.5),
        state("n2", predicted_ttft_s=1.2),
        state("g", "gpu", predicted_ttft_s=0.1),
    )
    decision = policy.route(busy, req())
    assert decision.replica_id == "g" and "spill" in decision.reason
    gpu_worse = snap(state("n1", predicted_ttft_s=1.5), state("g", "gpu", predicted_ttft_s=3.0))
    assert policy.route(gpu_worse, req()).replica_id == "n1"


def test_npu_first_rejects_nonpositive_slo():
    with pytest.raises(InvalidConfigError):
        make_routing_policy("npu-first", RoutingContext(ttft_slo_s=0.0))


def test_slo_aware_picks_lowest_pressure():
    ctx = RoutingContext(estimator=FixedEstimator(), ttft_slo_s=1.0, tpot_slo_s=0.1)
    policy = make_routing_policy("slo-aware", ctx)
    # NPU: max(0.2/1, 0.05/0.1) = 0.5; GPU: max(0.4/1, 0.02/0.1) = 0.4
    s = snap(state("n", predicted_ttft_s=0.2), state("g", "gpu", predicted_ttft_s=0.4))
    assert policy.route(s, req()).replica_id == "g"
    s2 = snap(state("n", predicted_ttft_s=0.2), state("g", "gpu", predicted_ttft_s=0.7))
    assert policy.route(s2, req()).replica_id == "n"


def test_perf_estimator_orders_by_queue_and_prompt():
    pm = build_perf_model(default_catalog(), model="llama-3.1-8b", device="rngd")
    est = PerfEstimator({"a": pm, "b": pm})
    idle = state("a")
    queued = state("b", queued_prefill_tokens=8000, num_running=10)
    assert est.estimate_ttft_s(idle, 1000) == pytest.approx(pm.ttft_s(1000))
    assert est.estimate_ttft_s(queued, 1000) > est.estimate_ttft_s(idle, 1000)
    assert est.estimate_ttft_s(idle, 4000) > est.estimate_ttft_s(idle, 100)
    assert est.estimate_tpot_s(queued) > est.estimate_tpot_s(idle)


def test_replica_state_validates_kind():
    with pytest.raises(InvalidConfigError):
        ReplicaState(replica_id="x", model_id="m", device_id="d", device_kind="tpu")
