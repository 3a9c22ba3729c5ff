"""ReplicaCore: one-step and fast paths agree; KV bounded; exactly-once; light load = perf model."""

from __future__ import annotations

import math
import random

import pytest

from factories import make_seq_request
from npucenter.catalog import default_catalog
from npucenter.errors import InvalidConfigError, InvalidRequestError
from npucenter.perf import build_perf_model
from npucenter.sim.fakes import LinearStepCost
from npucenter.sim.replica import ReplicaConfig, ReplicaCore


@pytest.fixture(scope="module")
def rngd_8b():
    return build_perf_model(default_catalog(), model="llama-3.1-8b", device="rngd")


def make_requests(seed: int, n: int, rate_rps: float, max_prompt: int = 3000, max_out: int = 400):
    rng = random.Random(seed)
    t = 0.0
    out = []
    for i in range(n):
        t += rng.expovariate(rate_rps)
        out.append(
            make_seq_request(
                request_id=f"r{i}",
                prompt_tokens=rng.randint(1, max_prompt),
                max_output_tokens=rng.randint(1, max_out),
                arrival_s=t,
                index=i,
            )
        )
    return out


def drive_by_step(core: ReplicaCore, requests, check=None):
    """The virtual engine's loop: add what has arrived, run one iteration, repeat."""
    i, now = 0, 0.0
    while i < len(requests) or core.has_work:
        if not core.has_work:
            now = max(now, requests[i].arrival_s)
        while i < len(requests) and requests[i].arrival_s <= now:
            core.add(requests[i])
            i += 1
        res = core.step(now)
        if res is None:
            continue
        if check is not None:
            check(core, res)
        now = res.start_s + res.duration_s
    return {c.request_id: c for c in core.completions}


def drive_fast(core: ReplicaCore, requests):
    for req in requests:
        core.advance_until(req.arrival_s)
        core.add(req)
    core.advance_until(math.inf)
    return {c.request_id: c for c in core.completions}


CONFIGS = [
    ReplicaConfig(),
    ReplicaConfig(max_num_seqs=8, max_num_batched_tokens=512),
    ReplicaConfig(kv_capacity_tokens=6000, max_num_batched_tokens=1024),  # forces preemption
    ReplicaConfig(enable_chunked_prefill=False, max_num_batched_tokens=4096),
]


@pytest.mark.parametrize("config", CONFIGS)
def test_fast_path_matches_one_step_at_a_time(rngd_8b, config):
    reqs = make_requests(1, 150, rate_rps=6.0)
    slow_core = ReplicaCore(rngd_8b, config, record_completions=True)
    fast_core = ReplicaCore(rngd_8b, config, record_completions=True)
    slow = drive_by_step(slow_core, reqs)
    fast = drive_fast(fast_core, reqs)
    assert slow.keys() == fast.keys() == {r.request_id for r in reqs}
    for rid, a in slow.items():
        b = fast[rid]
        assert b.first_token_s == pytest.approx(a.first_token_s, rel=1e-9, abs=1e-9)
        assert b.finish_s == pytest.approx(a.finish_s, rel=1e-9, abs=1e-9)
        assert b.num_preemptions == a.num_preemptions
    assert fast_core.num_steps == slow_core.num_steps
    assert fast_core.num_output_tokens == slow_core.num_output_tokens
    assert fast_core.energy_j == pytest.approx(slow_core.energy_j, rel=1e-9)


def test_kv_never_exceeds_capacity_and_each_request_finishes_once(rngd_8b):
    config = ReplicaConfig(kv_capacity_tokens=5000, max_num_batched_tokens=1024)
    core = ReplicaCore(rngd_8b, config, record_completions=True)
    reqs = make_requests(7, 120, rate_rps=20.0, max_prompt=2000, max_out=300)
    seen: list[str] = []

    def check(c: ReplicaCore, res) -> None:
        assert 0 <= c.kv_used_blocks <= c.total_blocks
        assert res.kv_used_tokens <= c.kv_capacity_tokens
        seen.extend(res.finished_ids)

    done = drive_by_step(core, reqs, check)
    assert core.num_preemptions > 0  # the case under test really happened
    assert sorted(seen) == sorted(r.request_id for r in reqs)
    assert len(done) == len(reqs)
    assert core.kv_used_blocks == 0 and core.outstanding_tokens == 0


def test_tokens_emitted_equal_requested_outputs(rngd_8b):
    core = ReplicaCore(rngd_8b, ReplicaConfig(max_num_seqs=4, max_num_batched_tokens=256))
    reqs = make_requests(3, 40, rate_rps=10.0, max_out=50)
    emitted: dict[str, int] = {}
    firsts: list[str] = []

    def check(c, res):
        for rid, n in res.emitted:
            emitted[rid] = emitted.get(rid, 0) + n
        firsts.extend(res.first_token_ids)

    drive_by_step(core, reqs, check)
    assert emitted == {r.request_id: r.max_output_tokens for r in reqs}
    assert sorted(firsts) == sorted(r.request_id for r in reqs)


def test_light_load_reproduces_perf_model_ttft_and_tpot(rngd_8b):
    rng = random.Random(5)
    reqs = [
        make_seq_request(
            request_id=str(i),
            prompt_tokens=rng.randint(16, 4000),
            max_output_tokens=rng.randint(2, 300),
            arrival_s=100.0 * i,  # far apart: each request is alone on the replica
            index=i,
        )
        for i in range(30)
    ]
    done = drive_fast(ReplicaCore(rngd_8b, record_completions=True), reqs)
    for r in reqs:
        c = done[r.request_id]
        ttft = c.first_token_s - r.arrival_s
        tpot = (c.finish_s - c.first_token_s) / (r.max_output_tokens - 1)
        assert ttft == pytest.approx(rngd_8b.ttft_s(r.prompt_tokens), rel=1e-9)
        mean_ctx = r.prompt_tokens + r.max_output_tokens / 2
        assert tpot == pytest.approx(rngd_8b.tpot_s(1, mean_ctx), rel=1e-6)


def test_chunked_prefill_splits_long_prompts_over_steps():
    cost = LinearStepCost(fixed_s=0.01, per_prefill_token_s=1e-5)
    core = ReplicaCore(cost, ReplicaConfig(max_num_seqs=4, max_num_batched_tokens=1000))
    core.add(make_seq_request(request_id="a", prompt_tokens=2500, max_output_tokens=2))
    steps = []
    now = 0.0
    while (res := core.step(now)) is not None:
        steps.append(res)
        now += res.duration_s
    assert [bool(s.first_token_ids) for s in steps] == [False, False, True, False]
    assert steps[-1].finished_ids == ("a",)


def test_abort_frees_everything():
    cost = LinearStepCost()
    core = ReplicaCore(cost, ReplicaConfig(kv_capacity_tokens=10_000))
    core.add(make_seq_request(request_id="a", prompt_tokens=100, max_output_tokens=50))
    core.add(make_seq_request(request_id="b", prompt_tokens=100, max_output_tokens=50))
    core.step(0.0)
    core.step(0.01)
    assert core.abort("a") and core.abort("b") and not core.abort("a")
    assert core.kv_used_blocks == 0 and not core.has_work and core.outstanding_tokens == 0
    assert core.step(0.02) is None


def test_request_that_can_never_fit_is_refused():
    core = ReplicaCore(LinearStepCost(kv_capacity_tokens=1000))
    with pytest.raises(InvalidRequestError):
        core.add(make_seq_request(request_id="x", prompt_tokens=900, max_output_tokens=200))
    with pytest.raises(InvalidRequestError):
        core.add(make_seq_request(request_id="y", prompt_tokens=0, max_output_tokens=2))


def test_config_validation():
    with pytest.raises(InvalidConfigError) as err:
        ReplicaConfig(max_num_seqs=300, max_num_batched_tokens=256)
    assert err.value.field == "max_num_batched_tokens"
    with pytest.raises(InvalidConfigError):
        ReplicaConfig(block_size_tokens=0)


def test_disaggregated_request_skips_prefill():
    cost = LinearStepCost(fixed_s=0.01, per_prefill_token_s=1e-3)
    core = ReplicaCore(cost, record_completions=True)
    core.add(
        make_seq_request(
            request_id="d",
            prompt_tokens=1000,
            max_output_tokens=5,
            num_computed_tokens=1000,
            num_output_tokens=1,
        )
    )
    core.advance_until(math.inf)
    (c,) = core.completions
    # four more tokens, one per iteration, none of them a 1000-token prefill
    assert c.finish_s == pytest.approx(4 * 0.01 + 1e-3)
    assert math.isnan(c.first_token_s)


def test_routing_properties_track_queue():
    core = ReplicaCore(LinearStepCost(), ReplicaConfig(max_num_seqs=1))
    for i in range(3):
        core.add(make_seq_request(request_id=str(i), prompt_tokens=10, max_output_tokens=5))
    assert core.num_waiting == 3 and core.queued_prefill_tokens == 30
    assert core.outstanding_tokens == 30 + 15
    core.step(0.0)
    assert core.num_running == 1 and core.num_waiting == 2
    assert core.queued_prefill_tokens == 20 and core.outstanding_tokens == 20 + 14
    assert 0 < core.kv_used_fraction < 1
