"""Prefix affinity and slo-aware with a TPOT limit decide from a ReplicaIndex's column views
exactly as from the plain scan, on random histories of large pools.

Beside tests/property/test_routing_every_policy_indexed.py (every policy, 12 replicas): here
60 replicas, two models and two performance models, prompts that share leading blocks (so the
prefix index's holders matter), KV use around the 0.95 cut-off, replicas leaving and coming
back. Each policy runs twice on one history, given the index and given the scan of its states;
every decision (replica and reason) must be the same, and the column view must be the one used.
"""

from __future__ import annotations

from dataclasses import replace
from functools import cache

from hypothesis import given, settings
from hypothesis import strategies as st

from npucenter.catalog import default_catalog
from npucenter.perf import build_perf_model
from npucenter.policy.routing import (
    PerfEstimator,
    ReplicaIndex,
    ReplicaState,
    RouteRequest,
    RoutingContext,
    RoutingSnapshot,
    make_routing_policy,
)

N = 60
MODELS = ("m", "m", "other")


@cache
def _perf_models() -> tuple[object, object]:
    catalog = default_catalog()
    return (
        build_perf_model(catalog, model="llama-3.1-8b", device="rngd"),
        build_perf_model(catalog, model="llama-3.1-8b", device="h100-sxm"),
    )


def _kind(i: int) -> str:
    return "npu" if i % 3 else "gpu"


state_st = st.fixed_dictionaries(
    {
        "model": st.sampled_from(MODELS),
        "healthy": st.sampled_from([True, True, True, True, False]),
        "num_running": st.sampled_from([0, 0, 1, 2, 3, 7, 30]),
        "num_waiting": st.sampled_from([0, 0, 1, 3]),
        "outstanding_tokens": st.sampled_from([0, 0, 10, 11, 500, 3000]),
        "queued_prefill_tokens": st.sampled_from([0, 0, 1, 64, 4000]),
        "kv_used_fraction": st.sampled_from([0.0, 0.25, 0.5, 0.95, 0.951]),
    }
)
request_st = st.fixed_dictionaries(
    {
        "model": st.sampled_from(MODELS),
        "prompt": st.sampled_from([1, 100, 2048]),
        "prefix": st.sampled_from([(), (1,), (1, 2), (1, 2, 3), (3,), (3, 4)]),
        "exclude": st.sampled_from([(), (), (), (0, 5)]),
    }
)
step_st = st.one_of(
    st.tuples(st.just("update"), st.integers(0, N - 1), state_st),
    st.tuples(st.just("remove"), st.integers(0, N - 1), st.none()),
    st.tuples(st.just("route"), st.just(0), request_st),
    st.tuples(st.just("route"), st.just(0), request_st),
)


def _state(i: int, spec: dict[str, object]) -> ReplicaState:
    fields = dict(spec)
    model = fields.pop("model")
    kind = _kind(i)
    return ReplicaState(
        replica_id=f"r{i:02d}",
        model_id=str(model),
        device_id="rngd" if kind == "npu" else "h100-sxm",
        device_kind=kind,
        **fields,  # type: ignore[arg-type]
    )


def _context(ttft_slo_s: float, tpot_slo_s: float, missing: bool) -> RoutingContext:
    npu_model, gpu_model = _perf_models()
    models = {
        f"r{i:02d}": npu_model if _kind(i) == "npu" else gpu_model
        for i in range(N)
        if not (missing and i % 7 == 3)
    }
    return RoutingContext(
        estimator=PerfEstimator(models),  # type: ignore[arg-type]
        ttft_slo_s=ttft_slo_s,
        tpot_slo_s=tpot_slo_s,
    )


@settings(max_examples=120, deadline=None)
@given(
    policy_name=st.sampled_from(["prefix-affinity", "slo-aware"]),
    ttft_slo_s=st.sampled_from([0.05, 0.3, 2.0]),
    tpot_slo_s=st.sampled_from([0.005, 0.02, 0.2]),
    missing=st.booleans(),
    initial=st.lists(state_st, min_size=N, max_size=N),
    steps=st.lists(step_st, min_size=1, max_size=60),
)
def test_column_decisions_equal_the_scan(
    policy_name: str,
    ttft_slo_s: float,
    tpot_slo_s: float,
    missing: bool,
    initial: list[dict[str, object]],
    steps: list[tuple[str, int, dict[str, object] | None]],
) -> None:
    context = _context(ttft_slo_s, tpot_slo_s, missing)
    indexed = make_routing_policy(policy_name, context)
    scanned = make_routing_policy(policy_name, context)
    index = ReplicaIndex([_state(i, s) for i, s in enumerate(initial)])
    routed = False
    for t, (kind, i, spec) in enumerate(steps):
        if kind == "update":
            assert spec is not None
            index.update(i, _state(i, spec))
        elif kind == "remove":
            index.update(i, replace(index.states[i], healthy=False))
        else:
            assert spec is not None
            request = RouteRequest(
                request_id=f"q{t}",
                model_id=str(spec["model"]),
                prompt_tokens=int(spec["prompt"]),  # type: ignore[call-overload]
                max_output_tokens=16,
                prefix_hashes=spec["prefix"],  # type: ignore[arg-type]
                exclude=frozenset(f"r{j:02d}" for j in spec["exclude"]),  # type: ignore[attr-defined]
            )
            plain = RoutingSnapshot(now_s=float(t), replicas=tuple(index.states))
            live = RoutingSnapshot(now_s=float(t), replicas=index.states, index=index)
            assert indexed.route(live, request) == scanned.route(plain, request)
            routed = routed or not request.exclude
    if routed:
        assert index._columns, "the column view answered"
