"""The virtual engine's replica core (the simulator's ReplicaCore): batching, chunking, preemption."""

from __future__ import annotations

from dataclasses import replace
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from factories import make_seq_request
from npucenter.engines.virtual.core import (
    ReplicaConfig,
    ReplicaCore,
    make_replica_core,
)
from npucenter.errors import InvalidConfigError


def _drain(core: ReplicaCore, limit: int = 10_000) -> list[Any]:
    steps = []
    now = 0.0
    for _ in range(limit):
        result = core.step(now)
        if result is None:
            return steps
        steps.append(result)
        now += result.duration_s
    raise AssertionError("core never went idle")


def test_idle_core_returns_none(perf: Any) -> None:
    assert make_replica_core(perf, ReplicaConfig())[0].step(0.0) is None


def test_one_request_prefill_then_decode(perf: Any) -> None:
    core, _ = make_replica_core(perf, ReplicaConfig())
    core.add(make_seq_request(request_id="a", prompt_tokens=100, max_output_tokens=4))
    steps = _drain(core)
    assert len(steps) == 4  # prefill step emits token 1, then 3 decode steps
    assert steps[0].first_token_ids == ("a",)
    assert steps[0].duration_s == pytest.approx(perf.fixed_s + 100 * perf.per_prefill_token_s)
    assert steps[1].duration_s == pytest.approx(perf.fixed_s + perf.per_decode_seq_s)
    assert sum(n for s in steps for _, n in s.emitted) == 4
    assert steps[-1].finished_ids == ("a",)
    assert all(s.energy_j == pytest.approx(s.duration_s * perf.busy_power_w) for s in steps)


def test_long_prompt_is_chunked(perf: Any) -> None:
    core, _ = make_replica_core(perf, ReplicaConfig(max_num_seqs=8, max_num_batched_tokens=64))
    core.add(make_seq_request(request_id="a", prompt_tokens=200, max_output_tokens=1))
    steps = _drain(core)
    assert len(steps) == 4  # 64 + 64 + 64 + 8
    assert steps[-1].first_token_ids == ("a",)


def test_max_num_seqs_limits_the_batch(perf: Any) -> None:
    core, _ = make_replica_core(perf, ReplicaConfig(max_num_seqs=2))
    for i in range(3):
        core.add(make_seq_request(request_id=f"r{i}", prompt_tokens=10, max_output_tokens=5))
    first = core.step(0.0)
    assert set(first.first_token_ids) == {"r0", "r1"}
    assert core.num_waiting == 1


def test_abort_frees_the_request(perf: Any) -> None:
    core, _ = make_replica_core(perf, ReplicaConfig())
    core.add(make_seq_request(request_id="a", prompt_tokens=10, max_output_tokens=100))
    core.add(make_seq_request(request_id="b", prompt_tokens=10, max_output_tokens=3))
    core.step(0.0)
    core.abort("a")
    core.abort("missing")  # ignored
    steps = _drain(core)
    assert all(rid == "b" for s in steps for rid, _ in s.emitted)


def test_kv_pressure_preempts_the_newest(perf: Any) -> None:
    # 8 blocks of 16 tokens: both prompts (2 blocks each) are admitted, then their growth to
    # 90 tokens (6 blocks each) exhausts the cache and the newest is preempted (recomputed later).
    perf = replace(perf, kv_capacity_tokens=128)
    core, _ = make_replica_core(perf, ReplicaConfig(block_size_tokens=16))
    core.add(make_seq_request(request_id="old", prompt_tokens=30, max_output_tokens=60))
    core.add(make_seq_request(request_id="new", prompt_tokens=30, max_output_tokens=60))
    steps = _drain(core)
    preempted = [rid for s in steps for rid in s.preempted_ids]
    assert preempted and set(preempted) == {"new"}
    totals: dict[str, int] = {}
    for s in steps:
        for rid, n in s.emitted:
            totals[rid] = totals.get(rid, 0) + n
    assert totals == {"old": 60, "new": 60}


@settings(max_examples=40, deadline=None)
@given(
    st.lists(st.tuples(st.integers(1, 300), st.integers(1, 30)), min_size=1, max_size=12),
    st.integers(1, 8),
    st.integers(16, 512),
)
def test_every_request_gets_exactly_its_tokens_and_finishes_once(
    reqs: list[tuple[int, int]], max_seqs: int, budget: int
) -> None:
    from factories import make_linear_step_cost as LinearPerf

    perf = LinearPerf(kv_capacity_tokens=2_000)
    core, _ = make_replica_core(
        perf, ReplicaConfig(max_num_seqs=max_seqs, max_num_batched_tokens=budget)
    )
    for i, (p, o) in enumerate(reqs):
        core.add(make_seq_request(request_id=f"r{i}", prompt_tokens=p, max_output_tokens=o))
    steps = _drain(core)
    emitted: dict[str, int] = {}
    finished: list[str] = []
    for s in steps:
        for rid, n in s.emitted:
            emitted[rid] = emitted.get(rid, 0) + n
        finished.extend(s.finished_ids)
    assert emitted == {f"r{i}": o for i, (_, o) in enumerate(reqs)}
    assert sorted(finished) == sorted(emitted)


def test_config_validation() -> None:
    with pytest.raises(InvalidConfigError):
        ReplicaConfig(max_num_seqs=0)
    with pytest.raises(InvalidConfigError):
        ReplicaConfig(max_num_batched_tokens=0)


def test_make_replica_core_returns_a_working_core(perf: Any) -> None:
    core, request_cls = make_replica_core(perf, ReplicaConfig())
    core.add(request_cls(request_id="a", prompt_tokens=10, max_output_tokens=2, arrival_s=0.0))
    assert core.step(0.0) is not None
