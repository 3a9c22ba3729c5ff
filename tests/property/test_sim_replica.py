"""Hypothesis invariants of the replica scheduler: fast path == one step at a time, KV bounded,
every request finishes exactly once with exactly its output tokens."""

from __future__ import annotations

import math

from hypothesis import given, settings
from hypothesis import strategies as st

from factories import make_seq_request
from npucenter.sim.fakes import LinearStepCost
from npucenter.sim.replica import ReplicaConfig, ReplicaCore

requests_st = st.lists(
    st.tuples(
        st.floats(min_value=0.0, max_value=0.5),  # gap to previous arrival (s)
        st.integers(min_value=1, max_value=300),  # prompt
        st.integers(min_value=1, max_value=60),  # output
    ),
    min_size=1,
    max_size=25,
)
config_st = st.builds(
    ReplicaConfig,
    max_num_seqs=st.integers(min_value=1, max_value=8),
    max_num_batched_tokens=st.integers(min_value=8, max_value=512),
    block_size_tokens=st.sampled_from([1, 4, 16]),
    kv_capacity_tokens=st.integers(min_value=400, max_value=3000),
    enable_chunked_prefill=st.booleans(),
)
cost = LinearStepCost(
    fixed_s=0.004, per_prefill_token_s=2e-5, per_decode_seq_s=1e-4, per_context_token_s=1e-6
)


def to_requests(raw):
    t, out = 0.0, []
    for i, (gap, p, o) in enumerate(raw):
        t += gap
        out.append(
            make_seq_request(
                request_id=str(i), prompt_tokens=p, max_output_tokens=o, arrival_s=t, index=i
            )
        )
    return out


@settings(max_examples=60, deadline=None)
@given(raw=requests_st, config=config_st)
def test_fast_path_equals_step_path_and_invariants_hold(raw, config):
    capacity = (config.kv_capacity_tokens // config.block_size_tokens) * config.block_size_tokens
    limit = config.max_num_batched_tokens + 1 if not config.enable_chunked_prefill else capacity
    reqs = [
        r for r in to_requests(raw) if r.prompt_tokens + r.max_output_tokens <= min(capacity, limit)
    ]
    # one step at a time, checking invariants after every iteration
    slow = ReplicaCore(cost, config, record_completions=True)
    emitted: dict[str, int] = {}
    i, now = 0, 0.0
    while i < len(reqs) or slow.has_work:
        if not slow.has_work:
            now = max(now, reqs[i].arrival_s)
        while i < len(reqs) and reqs[i].arrival_s <= now:
            slow.add(reqs[i])
            i += 1
        res = slow.step(now)
        assert res is not None  # a replica with work always runs an iteration
        assert 0 <= slow.kv_used_blocks <= slow.total_blocks
        for rid, n in res.emitted:
            emitted[rid] = emitted.get(rid, 0) + n
        now = res.start_s + res.duration_s
    fast = ReplicaCore(cost, config, record_completions=True)
    for r in reqs:
        fast.advance_until(r.arrival_s)
        fast.add(r)
    fast.advance_until(math.inf)
    ids = [c.request_id for c in slow.completions]
    assert sorted(ids) == sorted(r.request_id for r in reqs)  # exactly once
    assert emitted == {r.request_id: r.max_output_tokens for r in reqs}
    a = {c.request_id: c for c in slow.completions}
    b = {c.request_id: c for c in fast.completions}
    assert a.keys() == b.keys()
    for rid in a:
        assert math.isclose(a[rid].finish_s, b[rid].finish_s, rel_tol=1e-9, abs_tol=1e-9)
        assert math.isclose(a[rid].first_token_s, b[rid].first_token_s, rel_tol=1e-9, abs_tol=1e-9)
    assert fast.kv_used_blocks == 0 and slow.kv_used_blocks == 0
