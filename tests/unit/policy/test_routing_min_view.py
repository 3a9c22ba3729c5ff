"""MinView: per-group float columns whose argmin is the scan's choice (ties: first position)."""

from __future__ import annotations

import math
import random

from npucenter.policy.routing import (
    ReplicaIndex,
    ReplicaState,
    RouteRequest,
    RoutingSnapshot,
    make_routing_policy,
)
from npucenter.policy.routing.index import MinView


def _state(i: int, *, model: str = "m", healthy: bool = True, tokens: int = 0) -> ReplicaState:
    return ReplicaState(
        replica_id=f"r{i}",
        model_id=model,
        device_id="d",
        device_kind="npu",
        healthy=healthy,
        outstanding_tokens=tokens,
    )


def test_a_long_random_history_matches_brute_force() -> None:
    # few distinct keys (ties), +inf keys (kept aside), health flips and replicas that change
    # group (slots out of position order): every answer is the least (score, position)
    rng = random.Random(5)
    n = 40
    keys = [0.0] * n
    groups = ["a"] * n
    healthy = [True] * n

    def place(s: ReplicaState) -> tuple[str, float]:
        i = int(s.replica_id[1:])
        return groups[i], keys[i]

    view = MinView(place, [_state(i) for i in range(n)])
    choices = (0.0, 0.5, 1.0, 1e-17, 2.0, math.inf, -3.0)
    for step in range(6000):
        pos = rng.randrange(n)
        keys[pos] = rng.choice(choices) if step % 7 else math.inf if rng.random() < 0.3 else 0.0
        healthy[pos] = rng.random() > 0.1
        if rng.random() < 0.05:
            groups[pos] = rng.choice("ab")
        view.update(pos, _state(pos, healthy=healthy[pos]))
        for group in ("a", "b", "nobody"):
            live = [(keys[i], i) for i in range(n) if healthy[i] and groups[i] == group]
            assert view.least(group) == (min(live) if live else None)
            for shift in (0.0, 1.0):
                shifted = [(k + shift, i) for k, i in live]
                assert view.least_shifted(group, shift) == (min(shifted) if live else None)
            scored = [((k + 0.25) / 3.0, i) for k, i in live]
            got = view.least_scored(group, lambda k: (k + 0.25) / 3.0)
            assert got == (min(scored) if live else None)


def test_rounding_ties_after_a_shift_go_to_the_first_position() -> None:
    keys = {"r0": 1e-17, "r1": 0.0}
    view = MinView(lambda s: (s.model_id, keys[s.replica_id]), [_state(0), _state(1)])
    assert view.least("m") == (0.0, 1)
    assert view.least_shifted("m", 1.0) == (1.0, 0)  # 1.0 + 1e-17 == 1.0


def test_least_outstanding_tokens_beyond_exact_floats_falls_back_to_the_scan() -> None:
    # tokens * 2**21 + requests is exact below 2**53: a replica beyond it is ordered by the scan
    huge = 1 << 40
    states = [_state(0, tokens=huge + 1), _state(1, tokens=huge), _state(2, tokens=huge + 2)]
    index = ReplicaIndex(states)
    policy = make_routing_policy("least-outstanding-tokens")
    request = RouteRequest(request_id="q", model_id="m", prompt_tokens=10, max_output_tokens=10)
    decision = policy.route(RoutingSnapshot(now_s=0.0, replicas=index.states, index=index), request)
    assert decision.replica_id == "r1"
    index.update(1, _state(1, tokens=5))  # back in range for every replica but two
    index.update(0, _state(0, tokens=3))
    index.update(2, _state(2, tokens=4))
    decision = policy.route(RoutingSnapshot(now_s=0.0, replicas=index.states, index=index), request)
    assert decision.replica_id == "r0"


def test_memory_is_one_slot_per_replica_and_group() -> None:
    # many groups (say a perf model per replica) must not cost a pool-long column each
    n = 2000
    view = MinView(lambda s: (s.replica_id, 1.0), [_state(i) for i in range(n)])
    assert len(view.groups()) == n
    assert sum(len(g.column) for g in view._groups.values()) <= 8 * n
    assert view.least("r7") == (1.0, 7)
