"""The gateway routes from its pool's routing index exactly as a scan of the free replicas did.

Random histories of requests taken and released, failures with cool-downs, time passing and
scraped KV use: after each change :meth:`PolicyRouter.pick` (the pool's index) and
:meth:`PolicyRouter.choose` over the replicas that are up with a free slot (the excluded ones
only when no other is free) must pick the same replica.
"""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from npucenter.clock import FakeClock
from npucenter.gateway.pool import Replica, ReplicaEndpoint, UpstreamPool
from npucenter.gateway.routing import make_router
from npucenter.policy.routing import RouteRequest

NUM = 6
POLICIES = (
    "least-outstanding-tokens",
    "least-requests",
    "round-robin",
    "npu-first",
    "slo-aware",
    "prefix-affinity",
)


def _pool(clock: FakeClock) -> UpstreamPool:
    return UpstreamPool(
        clock,
        [
            ReplicaEndpoint(
                replica_id=f"r{i}",
                base_url=f"http://127.0.0.1:{9000 + i}",
                model_id="m" if i != 5 else "other",
                device_kind="gpu" if i % 3 == 2 else "npu",
                max_inflight=2,
            )
            for i in range(NUM)
        ],
    )


def _scan(pool: UpstreamPool, clock: FakeClock, request: RouteRequest) -> list[Replica]:
    now_s = clock.now_s()
    free = [r for r in pool.replicas(request.model_id) if r.has_slot() and r.is_up(now_s)]
    return [r for r in free if r.replica_id not in request.exclude] or free


op_st = st.one_of(
    st.tuples(st.just("route"), st.integers(0, NUM - 1), st.integers(1, 3000)),
    st.tuples(st.just("release"), st.integers(0, NUM - 1), st.integers(0, 0)),
    st.tuples(st.just("fail"), st.integers(0, NUM - 1), st.integers(1, 5)),
    st.tuples(st.just("wait"), st.integers(0, 0), st.integers(1, 4)),
    st.tuples(st.just("kv"), st.integers(0, NUM - 1), st.integers(0, 10)),
)


@settings(max_examples=80, deadline=None)
@given(name=st.sampled_from(POLICIES), ops=st.lists(op_st, min_size=1, max_size=40))
def test_indexed_pick_equals_the_scan(name: str, ops: list[tuple[str, int, int]]) -> None:
    clock = FakeClock()
    pool = _pool(clock)
    indexed, scanned = make_router(name, clock), make_router(name, clock)
    held: list[tuple[Replica, int]] = []
    for step, (op, i, value) in enumerate(ops):
        replica = pool.replicas()[i]
        if op == "route":
            request = RouteRequest(
                request_id=str(step),
                model_id="m" if i != 5 else "other",
                prompt_tokens=value,
                max_output_tokens=64,
                exclude=frozenset({f"r{i}"}) if step % 3 == 0 else frozenset(),
                prefix_hashes=(value % 3,),
            )
            free = _scan(pool, clock, request)
            got = indexed.pick(pool, request)
            want = scanned.choose(free, request) if free else None
            assert got is want
            if got is not None:
                got.inflight += 1
                got.outstanding_tokens += value + 64
                held.append((got, value + 64))
        elif op == "release" and held:
            done, tokens = held.pop(i % len(held))
            done.inflight -= 1
            done.outstanding_tokens -= tokens
        elif op == "fail":
            pool.mark_failed(replica, float(value))
        elif op == "wait":
            clock.advance(float(value))
        elif op == "kv":
            replica.kv_usage_fraction = value / 10


def test_a_cooled_down_replica_comes_back_without_being_touched() -> None:
    clock = FakeClock()
    pool = _pool(clock)
    router = make_router("least-outstanding-tokens", clock)
    for r in pool.replicas("m")[1:]:
        r.inflight = 2  # full
    first = pool.replicas("m")[0]
    pool.mark_failed(first, 3.0)
    request = RouteRequest(request_id="q", model_id="m", prompt_tokens=1, max_output_tokens=1)
    assert pool.num_free("m") == 0 and router.pick(pool, request) is None
    clock.advance(3.0)
    assert pool.num_free("m") == 1 and router.pick(pool, request) is first
