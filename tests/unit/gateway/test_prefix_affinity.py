"""Prefix-affinity routing: shared prefixes stick, load and KV pressure pull away."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from npucenter.clock import FakeClock
from npucenter.errors import InvalidConfigError
from npucenter.gateway.pool import ReplicaEndpoint, UpstreamPool
from npucenter.gateway.routing import make_router
from npucenter.policy.routing import (
    ROUTING_POLICIES,
    PrefixAffinity,
    PrefixAffinityWeights,
    PrefixIndex,
    ReplicaState,
    RouteRequest,
    RoutingPolicy,
    RoutingSnapshot,
    make_routing_policy,
    prefix_block_hashes,
)


def _state(rid: str, **kw: object) -> ReplicaState:
    return ReplicaState(replica_id=rid, model_id="m", device_id="rngd", device_kind="npu", **kw)  # type: ignore[arg-type]


def _req(i: int, hashes: tuple[int, ...]) -> RouteRequest:
    return RouteRequest(
        request_id=f"q{i}",
        model_id="m",
        prompt_tokens=100,
        max_output_tokens=10,
        prefix_hashes=hashes,
    )


SYSTEM = "You are the npucenter assistant. " * 40


def test_registered_and_satisfies_the_protocol() -> None:
    assert "prefix-affinity" in ROUTING_POLICIES
    assert isinstance(make_routing_policy("prefix"), RoutingPolicy)


def test_block_hashes_share_leading_blocks_only() -> None:
    a = prefix_block_hashes(SYSTEM + "question one", block_chars=64)
    b = prefix_block_hashes(SYSTEM + "a different question", block_chars=64)
    c = prefix_block_hashes("other" + SYSTEM, block_chars=64)
    assert a[:5] == b[:5]
    assert not set(a) & set(c)
    assert prefix_block_hashes("short", block_chars=64) == ()
    with pytest.raises(InvalidConfigError):
        prefix_block_hashes("x", block_chars=0)


def test_same_prefix_sticks_to_one_replica_when_load_is_equal() -> None:
    policy = PrefixAffinity()
    snap = RoutingSnapshot(now_s=0, replicas=(_state("a"), _state("b"), _state("c")))
    hashes = prefix_block_hashes(SYSTEM, block_chars=64)
    first = policy.route(snap, _req(0, hashes)).replica_id
    for i in range(1, 5):
        assert policy.route(snap, _req(i, hashes)).replica_id == first


def test_load_outweighs_affinity_when_the_cached_replica_is_swamped() -> None:
    policy = PrefixAffinity(weights=PrefixAffinityWeights(prefix=1.0, queue=2.0, kv=0.0))
    hashes = prefix_block_hashes(SYSTEM, block_chars=64)
    idle = RoutingSnapshot(now_s=0, replicas=(_state("a"), _state("b")))
    home = policy.route(idle, _req(0, hashes)).replica_id
    other = "b" if home == "a" else "a"
    busy = RoutingSnapshot(
        now_s=1,
        replicas=(_state(home, outstanding_tokens=10_000), _state(other, outstanding_tokens=10)),
    )
    assert policy.route(busy, _req(1, hashes)).replica_id == other


def test_kv_pressure_voids_affinity() -> None:
    policy = PrefixAffinity()
    hashes = prefix_block_hashes(SYSTEM, block_chars=64)
    home = policy.route(
        RoutingSnapshot(now_s=0, replicas=(_state("a"), _state("b"))), _req(0, hashes)
    ).replica_id
    other = "b" if home == "a" else "a"
    snap = RoutingSnapshot(now_s=1, replicas=(_state(home, kv_used_fraction=0.99), _state(other)))
    assert policy.route(snap, _req(1, hashes)).replica_id == other


def test_no_healthy_replica() -> None:
    snap = RoutingSnapshot(now_s=0, replicas=(_state("a", healthy=False),))
    assert PrefixAffinity().route(snap, _req(0, ())).replica_id is None


def test_index_is_bounded_lru() -> None:
    index = PrefixIndex(max_blocks_per_replica=3)
    index.record("a", (1, 2, 3))
    index.record("a", (4,))
    assert index.matched_blocks("a", (1,)) == 0
    assert index.matched_blocks("a", (2, 3, 4)) == 3
    index.forget("a")
    assert index.matched_blocks("a", (2,)) == 0


@given(st.lists(st.tuples(st.integers(0, 3), st.integers(0, 50)), min_size=1, max_size=30))
def test_same_calls_same_decisions(calls: list[tuple[int, int]]) -> None:
    """The policy is deterministic in its call sequence (live and simulated runs agree)."""

    def run() -> list[str | None]:
        policy = PrefixAffinity()
        out = []
        for i, (prefix, load) in enumerate(calls):
            snap = RoutingSnapshot(
                now_s=float(i),
                replicas=(_state("a", outstanding_tokens=load), _state("b"), _state("c")),
            )
            out.append(policy.route(snap, _req(i, (prefix, prefix * 7 + 1))).replica_id)
        return out

    assert run() == run()


def test_gateway_router_adapts_replicas_to_the_policy() -> None:
    clock = FakeClock()
    pool = UpstreamPool(
        clock,
        [
            ReplicaEndpoint(
                replica_id=f"r{i}", base_url=f"http://127.0.0.1:{9000 + i}", model_id="m"
            )
            for i in range(3)
        ],
    )
    router = make_router("prefix-affinity", clock)
    assert router.uses_prefixes
    hashes = prefix_block_hashes(SYSTEM, block_chars=64)
    ticket = RouteRequest(
        request_id="q",
        tenant="t",
        model_id="m",
        priority=0,
        prompt_tokens=10,
        max_output_tokens=5,
        prefix_hashes=hashes,
    )
    chosen = {router.choose(pool.replicas("m"), ticket).replica_id for _ in range(4)}
    assert len(chosen) == 1
    lot = make_router("least-outstanding-tokens", clock)
    replicas = pool.replicas("m")
    replicas[0].outstanding_tokens = 50
    assert lot.choose(replicas, ticket).replica_id == "r1"


def test_the_simulator_runs_it_too() -> None:
    import numpy as np

    from npucenter.catalog import default_catalog
    from npucenter.fleet.spec import fleet_spec_from_mapping
    from npucenter.sim.center import build_center
    from npucenter.workload.trace import Trace

    fleet = fleet_spec_from_mapping(
        {
            "servers": [{"device": "rngd", "count": 1, "cards_per_server": 8}],
            "services": [{"model": "llama-3.1-8b", "device": "rngd", "replicas_per_server": 3}],
        }
    )
    trace = Trace(
        name="t",
        arrival_s=np.arange(20) * 0.05,
        prompt_tokens=np.full(20, 500),
        output_tokens=np.full(20, 20),
    )
    result = build_center(fleet, default_catalog(), policy="prefix-affinity").run(trace)
    assert bool(result.completed.all())
    assert len(set(result.replica_index.tolist())) > 1  # load spreads without prefix hashes
