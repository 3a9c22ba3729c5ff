"""Policies answer from a ReplicaIndex exactly what their scan of the same snapshot answers.

Random replica states (two models, NPUs and GPUs of two performance models, unhealthy ones,
many ties) change one replica at a time; after each change every indexed policy routes a random
request both ways and must pick the same replica with the same reason.
"""

from __future__ import annotations

from dataclasses import dataclass

from hypothesis import given, settings
from hypothesis import strategies as st

from npucenter.policy.routing import (
    PerfEstimator,
    ReplicaIndex,
    ReplicaState,
    RouteRequest,
    RoutingContext,
    RoutingSnapshot,
    make_routing_policy,
)


@dataclass(frozen=True)
class _Linear:
    """A step-latency model with round numbers, so that sums tie often."""

    prefill_s_per_token: float
    step_s: float

    def ttft_s(self, input_tokens: float, batch: float = 1) -> float:
        return self.step_s + input_tokens * self.prefill_s_per_token

    def tpot_s(self, batch: float, context_tokens: float) -> float:
        return self.step_s * (1 + batch / 8)


MODELS = (_Linear(1e-4, 0.02), _Linear(2.5e-4, 0.01))
KINDS = ("npu", "npu", "gpu")

state_fields = st.fixed_dictionaries(
    {
        "healthy": st.sampled_from((True, True, True, False)),
        "model": st.sampled_from(("m1", "m1", "m2")),
        "num_running": st.integers(0, 4),
        "num_waiting": st.integers(0, 2),
        "outstanding_tokens": st.sampled_from((0, 0, 100, 200, 300)),
        "queued_prefill_tokens": st.sampled_from((0, 0, 100, 200)),
    }
)


def _state(i: int, f: dict[str, object]) -> ReplicaState:
    return ReplicaState(
        replica_id=f"r{i}",
        model_id=str(f["model"]),
        device_id="d",
        device_kind=KINDS[i % 3],
        healthy=bool(f["healthy"]),
        num_running=int(f["num_running"]),  # type: ignore[call-overload]
        num_waiting=int(f["num_waiting"]),  # type: ignore[call-overload]
        outstanding_tokens=int(f["outstanding_tokens"]),  # type: ignore[call-overload]
        queued_prefill_tokens=int(f["queued_prefill_tokens"]),  # type: ignore[call-overload]
    )


@settings(max_examples=60, deadline=None)
@given(
    initial=st.lists(state_fields, min_size=1, max_size=24),
    changes=st.lists(
        st.tuples(
            st.integers(0, 23),
            state_fields,
            st.sampled_from(("m1", "m2", "m3")),
            st.sampled_from((1, 100, 250, 1000)),
        ),
        max_size=40,
    ),
    slo_s=st.sampled_from((0.01, 0.05, 2.0)),
)
def test_indexed_policies_route_like_their_scan(initial, changes, slo_s) -> None:
    states = [_state(i, f) for i, f in enumerate(initial)]
    estimator = PerfEstimator({s.replica_id: MODELS[i % 2] for i, s in enumerate(states)})
    names = ("least-outstanding-tokens", "least-requests", "round-robin", "npu-first")
    contexts = (
        RoutingContext(estimator=estimator, ttft_slo_s=slo_s),
        RoutingContext(ttft_slo_s=slo_s),
    )
    # one policy object per path: round-robin's counter must advance alike in both
    pairs = [
        (make_routing_policy(n, ctx), make_routing_policy(n, ctx), ctx)
        for n in names
        for ctx in contexts
    ]
    index = ReplicaIndex(states)
    for step, (pos, fields, model, prompt) in enumerate(changes):
        pos %= len(states)
        index.update(pos, _state(pos, fields))
        request = RouteRequest(
            request_id=str(step), model_id=model, prompt_tokens=prompt, max_output_tokens=8
        )
        scan = RoutingSnapshot(now_s=0.0, replicas=tuple(index.states))
        indexed = RoutingSnapshot(now_s=0.0, replicas=index.states, index=index)
        for by_index, by_scan, _ in pairs:
            assert by_index.route(indexed, request) == by_scan.route(scan, request)
