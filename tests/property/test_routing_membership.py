"""Membership kept incrementally: health flips and model changes, interleaved with queries.

A replica's health flips often in the live gateway ("healthy" there means "has a free slot"),
so ``ReplicaIndex.members`` and the column views' member positions are kept current one replica
at a time. After every change (a flip, a model change, or an ordinary load change) they must
equal a brute-force rebuild from the states, in ascending position order, and the policies that
read them (round-robin, prefix affinity, slo-aware with a TPOT limit) must route exactly as
their scan of the same snapshot does.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

import numpy as np
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

MODEL_IDS = ("m1", "m2", "m3")


@dataclass(frozen=True)
class _Linear:
    """A step-latency model with round numbers, so that sums tie often."""

    prefill_s_per_token: float
    step_s: float

    def ttft_s(self, input_tokens: float, batch: float = 1) -> float:
        return self.step_s + input_tokens * self.prefill_s_per_token

    def tpot_s(self, batch: float, context_tokens: float) -> float:
        return self.step_s * (1 + batch / 8)


def _state(i: int, model: str, healthy: bool, load: int) -> ReplicaState:
    return ReplicaState(
        replica_id=f"r{i}",
        model_id=model,
        device_id="d",
        device_kind="gpu" if i % 3 == 2 else "npu",
        healthy=healthy,
        num_running=load % 5,
        num_waiting=load % 2,
        outstanding_tokens=100 * (load % 4),
        queued_prefill_tokens=100 * (load % 3),
        kv_used_fraction=(load % 10) / 10,
    )


def _brute(states: list[ReplicaState], model: str) -> list[int]:
    return [p for p, s in enumerate(states) if s.healthy and s.model_id == model]


def _column_row(state: ReplicaState) -> tuple[str, tuple[float, float, float]]:
    return state.model_id, (float(state.num_running), float(state.outstanding_tokens), 0.0)


change = st.one_of(
    st.tuples(st.just("flip"), st.integers(0, 63)),
    st.tuples(st.just("model"), st.integers(0, 63), st.sampled_from(MODEL_IDS)),
    st.tuples(st.just("load"), st.integers(0, 63), st.integers(0, 40)),
    st.tuples(st.just("query"), st.sampled_from(MODEL_IDS), st.sampled_from((1, 100, 900))),
)


@settings(max_examples=80, deadline=None)
@given(
    initial=st.lists(
        st.tuples(st.sampled_from(MODEL_IDS[:2]), st.booleans(), st.integers(0, 40)),
        min_size=1,
        max_size=40,
    ),
    steps=st.lists(change, max_size=80),
    query_first=st.booleans(),
)
def test_members_follow_flips_like_a_rebuild(initial, steps, query_first) -> None:
    states = [_state(i, m, h, load) for i, (m, h, load) in enumerate(initial)]
    index = ReplicaIndex(states)
    estimator = PerfEstimator(
        {
            s.replica_id: _Linear(1e-4 * (1 + i % 2), 0.01 * (1 + i % 3))
            for i, s in enumerate(states)
        }
    )
    contexts = {
        "round-robin": RoutingContext(),
        "prefix-affinity": RoutingContext(estimator=estimator),
        "slo-aware": RoutingContext(estimator=estimator, ttft_slo_s=0.05, tpot_slo_s=0.02),
    }
    # one policy object per path: round-robin's counter and prefix affinity's memory advance alike
    pairs = [
        (make_routing_policy(n, ctx), make_routing_policy(n, ctx)) for n, ctx in contexts.items()
    ]
    view = index.columns("membership-test", _column_row, 3)
    if query_first:  # the lists exist before the first change (kept from then on, not rebuilt)
        for model in MODEL_IDS:
            assert index.members(model) == _brute(index.states, model)
    for k, step in enumerate(steps):
        kind = step[0]
        if kind == "query":
            _, model, prompt = step
            request = RouteRequest(
                request_id=str(k),
                model_id=model,
                prompt_tokens=prompt,
                max_output_tokens=8,
                prefix_hashes=(k % 3, 7),
            )
            scan = RoutingSnapshot(now_s=0.0, replicas=tuple(index.states))
            indexed = RoutingSnapshot(now_s=0.0, replicas=index.states, index=index)
            for by_index, by_scan in pairs:
                assert by_index.route(indexed, request) == by_scan.route(scan, request)
        else:
            pos = step[1] % len(states)
            old = index.states[pos]
            if kind == "flip":
                new = replace(old, healthy=not old.healthy)
            elif kind == "model":
                new = replace(old, model_id=step[2])
            else:
                new = _state(pos, old.model_id, old.healthy, step[2])
            index.update(pos, new)
        for model in MODEL_IDS:
            expected = _brute(index.states, model)
            assert index.members(model) == expected
            members, rows = view.columns(model)
            assert members.tolist() == expected
            assert view.members(model).tolist() == expected
            want = (
                np.array(
                    [
                        [index.states[p].num_running, index.states[p].outstanding_tokens, 0.0]
                        for p in expected
                    ]
                )
                .reshape(-1, 3)
                .T
            )
            assert np.array_equal(rows, want)
