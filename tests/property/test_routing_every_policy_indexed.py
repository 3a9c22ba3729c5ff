"""Every registered policy decides from a ReplicaIndex exactly as from the plain snapshot.

Beside tests/property/test_routing_index_properties.py (the indexed policies, linear step
models): every registered policy, the catalog's performance models with some replicas
missing from the estimator, replicas' own TTFT predictions, TTFT and TPOT limits, replicas
leaving (unhealthy) and coming back, and retries that exclude replicas. Each policy runs twice
on one random history, once given the index and once the scan of its states; every decision
(replica and reason) must be the same.
"""

from __future__ import annotations

from dataclasses import replace
from functools import cache

from hypothesis import given, settings
from hypothesis import strategies as st

from npucenter.catalog import default_catalog
from npucenter.perf import build_perf_model
from npucenter.policy.routing import (
    ROUTING_POLICIES,
    PerfEstimator,
    ReplicaIndex,
    ReplicaState,
    RouteRequest,
    RoutingContext,
    RoutingSnapshot,
    make_routing_policy,
)

NUM_REPLICAS = 12
MODELS = ("m", "other")


@cache
def _perf_models() -> tuple[object, object]:
    catalog = default_catalog()
    return (
        build_perf_model(catalog, model="llama-3.1-8b", device="rngd"),
        build_perf_model(catalog, model="llama-3.1-8b", device="h100-sxm"),
    )


def _replica(i: int) -> tuple[str, str]:
    """(replica id, device kind) of replica ``i``: a fixed identity, states vary."""
    return f"r{i:02d}", ("npu" if i % 3 else "gpu")


# small value sets make ties (equal keys, estimates rounding alike) common
state_st = st.fixed_dictionaries(
    {
        "model": st.sampled_from(MODELS),
        "healthy": st.sampled_from([True, True, True, False]),
        "num_running": st.sampled_from([0, 0, 1, 2, 7]),
        "num_waiting": st.sampled_from([0, 0, 1, 3]),
        "outstanding_tokens": st.sampled_from([0, 0, 10, 11, 500]),
        "queued_prefill_tokens": st.sampled_from([0, 0, 1, 2, 64, 4000]),
        "kv_used_fraction": st.sampled_from([0.0, 0.5, 0.97]),
        "predicted_ttft_s": st.sampled_from([None, None, 0.1, 0.5, 3.0]),
    }
)
step_st = st.one_of(
    st.tuples(st.just("update"), st.integers(0, NUM_REPLICAS - 1), state_st),
    st.tuples(st.just("remove"), st.integers(0, NUM_REPLICAS - 1), st.none()),
    st.tuples(
        st.just("route"),
        st.integers(0, NUM_REPLICAS - 1),
        st.fixed_dictionaries(
            {
                "model": st.sampled_from(MODELS),
                "prompt": st.sampled_from([1, 100, 2048]),
                "exclude": st.sets(st.integers(0, NUM_REPLICAS - 1), max_size=4),
                "prefix": st.sampled_from([(), (1,), (1, 2), (3,)]),
            }
        ),
    ),
)
context_st = st.fixed_dictionaries(
    {
        "estimator": st.sampled_from(["none", "perf", "perf-some-missing"]),
        "ttft_slo_s": st.sampled_from([None, 0.05, 0.3, 5.0]),
        "tpot_slo_s": st.sampled_from([None, 0.01, 0.2]),
    }
)


def _context(spec: dict[str, object]) -> RoutingContext:
    estimator = None
    if spec["estimator"] != "none":
        npu_model, gpu_model = _perf_models()
        skip = 4 if spec["estimator"] == "perf-some-missing" else NUM_REPLICAS + 1
        models = {}
        for i in range(NUM_REPLICAS):
            rid, kind = _replica(i)
            if i % skip != 3:
                models[rid] = npu_model if kind == "npu" else gpu_model
        estimator = PerfEstimator(models)  # type: ignore[arg-type]
    return RoutingContext(
        estimator=estimator,
        ttft_slo_s=spec["ttft_slo_s"],  # type: ignore[arg-type]
        tpot_slo_s=spec["tpot_slo_s"],  # type: ignore[arg-type]
    )


def _state(i: int, spec: dict[str, object]) -> ReplicaState:
    rid, kind = _replica(i)
    fields = dict(spec)
    model = fields.pop("model")
    return ReplicaState(
        replica_id=rid,
        model_id=str(model),
        device_id="rngd" if kind == "npu" else "h100-sxm",
        device_kind=kind,
        **fields,  # type: ignore[arg-type]
    )


@settings(max_examples=150, deadline=None)
@given(
    policy_name=st.sampled_from(ROUTING_POLICIES.names()),
    context_spec=context_st,
    initial=st.lists(state_st, min_size=NUM_REPLICAS, max_size=NUM_REPLICAS),
    steps=st.lists(step_st, min_size=1, max_size=40),
)
def test_indexed_decisions_equal_the_scan(
    policy_name: str,
    context_spec: dict[str, object],
    initial: list[dict[str, object]],
    steps: list[tuple[str, int, dict[str, object] | None]],
) -> None:
    context = _context(context_spec)
    indexed = make_routing_policy(policy_name, context)
    scanned = make_routing_policy(policy_name, context)
    index = ReplicaIndex([_state(i, s) for i, s in enumerate(initial)])
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
                exclude=frozenset(_replica(j)[0] for j in spec["exclude"]),  # type: ignore[attr-defined]
            )
            plain = RoutingSnapshot(now_s=float(t), replicas=tuple(index.states))
            live = RoutingSnapshot(now_s=float(t), replicas=index.states, index=index)
            assert indexed.route(live, request) == scanned.route(plain, request)
