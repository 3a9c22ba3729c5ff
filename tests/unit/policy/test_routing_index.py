"""ReplicaIndex: states kept by position, per-model members, least views that match a scan."""

from __future__ import annotations

from dataclasses import replace

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
