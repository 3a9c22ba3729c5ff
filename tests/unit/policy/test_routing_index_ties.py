"""Indexed routing where estimates of different replicas round to the same float."""

from __future__ import annotations

from npucenter.policy.routing import (
    PerfEstimator,
    ReplicaIndex,
    ReplicaState,
    RouteRequest,
    RoutingContext,
    RoutingSnapshot,
    make_routing_policy,
)


class _HugePrefill:
    """Prefill dwarfs the queue: different queues give TTFT estimates that round alike."""

    def ttft_s(self, input_tokens: float, batch: float = 1) -> float:
        return 1e9

    def tpot_s(self, batch: float, context_tokens: float) -> float:
        return batch * 1e-9


def _state(rid: str, **kw: object) -> ReplicaState:
    return ReplicaState(replica_id=rid, model_id="m", device_id="d", device_kind="npu", **kw)  # type: ignore[arg-type]


def test_estimates_that_round_alike_break_ties_by_snapshot_order() -> None:
    model = _HugePrefill()
    estimator = PerfEstimator({"a": model, "b": model})
    # a comes first; b has the shorter wait, but both estimates round to 1e9 s
    index = ReplicaIndex([_state("a", num_running=2), _state("b", num_running=1)])
    a, b = index.states
    assert estimator.estimate_ttft_s(a, 10) == estimator.estimate_ttft_s(b, 10)
    request = RouteRequest(request_id="q", model_id="m", prompt_tokens=10, max_output_tokens=5)
    live = RoutingSnapshot(now_s=0.0, replicas=index.states, index=index)
    for name in ("npu-first", "slo-aware"):
        policy = make_routing_policy(name, RoutingContext(estimator=estimator))
        assert policy.route(live, request).replica_id == "a"
