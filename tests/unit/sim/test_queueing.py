"""Queueing theory checks: a degenerate replica behaves as M/D/1 and M/M/1; Little's law holds."""

from __future__ import annotations

import math

import numpy as np
import pytest

from factories import make_seq_request
from npucenter.sim.fakes import LinearStepCost
from npucenter.sim.replica import ReplicaConfig, ReplicaCore

ONE_AT_A_TIME = ReplicaConfig(
    max_num_seqs=1,
    max_num_batched_tokens=100_000,
    enable_chunked_prefill=False,
    kv_capacity_tokens=200_000,
)


def run_single_server(cost, arrivals, prompts, outputs):
    core = ReplicaCore(cost, ONE_AT_A_TIME, record_completions=True)
    for i, (t, p, o) in enumerate(zip(arrivals, prompts, outputs, strict=True)):
        core.advance_until(t)
        core.add(
            make_seq_request(
                request_id=str(i), prompt_tokens=p, max_output_tokens=o, arrival_s=t, index=i
            )
        )
    core.advance_until(math.inf)
    first = np.empty(len(arrivals))
    for c in core.completions:
        first[c.index] = c.first_token_s
    return first


def test_md1_mean_wait_matches_pollaczek_khinchine():
    rng = np.random.default_rng(11)
    n, service_s, rho = 40_000, 0.01, 0.7
    lam = rho / service_s
    arrivals = np.cumsum(rng.exponential(1 / lam, n))
    first = run_single_server(
        LinearStepCost(fixed_s=service_s), arrivals.tolist(), [1] * n, [1] * n
    )
    wait = first - service_s - arrivals  # time from arrival to start of service
    expected = rho * service_s / (2 * (1 - rho))  # M/D/1
    assert wait[n // 10 :].mean() == pytest.approx(expected, rel=0.05)


def test_mm1_mean_wait_matches_formula():
    rng = np.random.default_rng(12)
    n, mean_tokens, per_token_s, rho = 40_000, 200, 5e-5, 0.6
    mean_service = mean_tokens * per_token_s
    lam = rho / mean_service
    arrivals = np.cumsum(rng.exponential(1 / lam, n))
    # geometric token counts -> (nearly) exponential service times
    prompts = np.minimum(rng.geometric(1 / mean_tokens, n), 50_000)
    first = run_single_server(
        LinearStepCost(fixed_s=0.0, per_prefill_token_s=per_token_s),
        arrivals.tolist(),
        prompts.tolist(),
        [1] * n,
    )
    wait = first - prompts * per_token_s - arrivals
    expected = rho * mean_service / (1 - rho)  # M/M/1: Wq = rho / (mu - lambda)
    assert wait[n // 10 :].mean() == pytest.approx(expected, rel=0.06)


def test_littles_law_on_a_batching_replica():
    """Time-average requests in the replica (from its own counts) = arrival rate x mean time in
    system (from the per-request records)."""
    rng = np.random.default_rng(13)
    n, lam = 6000, 40.0
    arrivals = np.cumsum(rng.exponential(1 / lam, n))
    outputs = rng.integers(20, 200, n)
    cost = LinearStepCost(fixed_s=0.01, per_decode_seq_s=1e-4, per_prefill_token_s=1e-5)
    core = ReplicaCore(cost, ReplicaConfig(max_num_seqs=64), record_completions=True)
    i, now, area = 0, 0.0, 0.0
    while i < n or core.has_work:
        if not core.has_work:
            now = max(now, arrivals[i])
        while i < n and arrivals[i] <= now:
            core.add(
                make_seq_request(
                    request_id=str(i),
                    prompt_tokens=100,
                    max_output_tokens=int(outputs[i]),
                    arrival_s=float(arrivals[i]),
                    index=i,
                )
            )
            i += 1
        in_system = core.num_running + core.num_waiting
        res = core.step(now)
        if res is None:
            continue
        area += in_system * res.duration_s
        now = res.start_s + res.duration_s
    finish = np.empty(n)
    for c in core.completions:
        finish[c.index] = c.finish_s
    horizon = finish.max()
    mean_in_system = area / horizon
    rate = n / horizon
    mean_time = float((finish - arrivals).mean())
    assert mean_in_system > 5  # really a batching regime
    assert mean_in_system == pytest.approx(rate * mean_time, rel=0.05)
