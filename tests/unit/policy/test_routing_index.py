"""ReplicaIndex: states kept by position, per-model members, least views that match a scan."""

from __future__ import annotations

import random
from dataclasses import replace

import pytest

from npucenter.policy.routing import ReplicaIndex, ReplicaState
from npucenter.policy.routing.index import LeastView


def _state(i: int, *, tokens: int = 0, model: str = "m", healthy: bool = True) -> ReplicaState:
    return ReplicaState(
        replica_id=f"r{i}",
        model_id=model,
        device_id="d",
        device_kind="npu",
        healthy=healthy,
        outstanding_tokens=tokens,
    )


def _place(state: ReplicaState) -> tuple[str, int]:
    return state.model_id, state.outstanding_tokens


def test_least_follows_updates_and_breaks_ties_by_position() -> None:
    index = ReplicaIndex([_state(0, tokens=5), _state(1, tokens=3), _state(2, tokens=3)])
    view = index.view("tokens", _place)
    assert view.least("m") == (3, 1)
    index.update(1, _state(1, tokens=9))
    assert view.least("m") == (3, 2)
    index.update(0, _state(0, tokens=3))
    assert view.least("m") == (3, 0)
    assert index.view("tokens", _place) is view  # made once, kept current


def test_unhealthy_replicas_and_other_models_are_not_candidates() -> None:
    index = ReplicaIndex([_state(0), _state(1, model="other"), _state(2, tokens=7)])
    view = index.view("tokens", _place)
    assert index.members("m") == [0, 2]
    index.update(0, _state(0, healthy=False))
    assert index.members("m") == [2]
    assert view.least("m") == (7, 2)
    index.update(2, replace(index.states[2], healthy=False))
    assert view.least("m") is None and index.members("m") == []
    assert view.least("nobody") is None


def test_least_shifted_finds_keys_that_rounding_makes_equal() -> None:
    # 1.0 + 1e-17 == 1.0 in binary64: after the shift both keys tie, and a scan keeps the
    # first replica in order, whose unshifted key is the larger one
    states = [_state(0), _state(1)]
    keys = {"r0": 1e-17, "r1": 0.0}
    view = LeastView(lambda s: (s.model_id, keys[s.replica_id]), states)
    assert view.least("m") == (0.0, 1)
    assert 1.0 + 1e-17 == 1.0
    assert view.least_shifted("m", 1.0) == (1.0, 0)
    assert view.least_shifted("m", 0.0) == (0.0, 1)  # no tie without the shift


def test_a_long_random_history_matches_brute_force() -> None:
    # few distinct keys and many moves: stale entries pile up and the heaps are rebuilt
    rng = random.Random(7)
    n = 30
    keys = [rng.choice((0.0, 0.5, 1.0, 1e-17)) for _ in range(n)]
    healthy = [True] * n
    states = [_state(i) for i in range(n)]
    view = LeastView(lambda s: (s.model_id, keys[int(s.replica_id[1:])]), states)
    for _ in range(5000):
        pos = rng.randrange(n)
        keys[pos] = rng.choice((0.0, 0.5, 1.0, 1e-17, 2.0))
        healthy[pos] = rng.random() > 0.1
        view.update(pos, _state(pos, healthy=healthy[pos]))
        live = [(keys[i], i) for i in range(n) if healthy[i]]
        if not live:
            assert view.least("m") is None
            continue
        assert view.least("m") == min(live)
        for shift in (0.0, 1.0):
            shifted = min((k + shift, i) for k, i in live)
            assert view.least_shifted("m", shift) == shifted


def test_a_least_only_view_matches_brute_force_and_refuses_scores() -> None:
    rng = random.Random(11)
    n = 40
    keys = [(rng.randrange(3), rng.randrange(2)) for _ in range(n)]
    healthy = [True] * n
    view = LeastView(
        lambda s: (s.model_id, keys[int(s.replica_id[1:])]),
        [_state(i) for i in range(n)],
        scored=False,
    )
    for _ in range(5000):  # stale entries pile up and the heap is rebuilt
        pos = rng.randrange(n)
        keys[pos] = (rng.randrange(3), rng.randrange(2))
        healthy[pos] = rng.random() > 0.1
        view.update(pos, _state(pos, healthy=healthy[pos]))
        live = [(keys[i], i) for i in range(n) if healthy[i]]
        assert view.least("m") == (min(live) if live else None)
    with pytest.raises(TypeError):
        view.least_scored("m", float)
