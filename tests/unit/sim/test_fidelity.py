"""Fidelity at ~85 % of a replica's capacity: the simulator agrees with the performance model's
single-iteration predictions and with the hand-computed steady-state estimate."""

from __future__ import annotations

import math

import numpy as np
import pytest

from npucenter.catalog import default_catalog
from npucenter.perf import build_perf_model
from npucenter.sim.analytic import steady_state_estimate
from npucenter.sim.replica import ReplicaConfig, ReplicaCore, SeqRequest

PROMPT, OUT = 1024, 128


def serve(pm, rate_rps: float, n: int, seed: int):
    rng = np.random.default_rng(seed)
    arrivals = np.cumsum(rng.exponential(1 / rate_rps, n)) if rate_rps < math.inf else np.zeros(n)
    core = ReplicaCore(pm, ReplicaConfig(), record_completions=True)
    for i, t in enumerate(arrivals.tolist()):
        core.advance_until(t)
        core.add(
            SeqRequest(
                request_id=str(i), prompt_tokens=PROMPT, max_output_tokens=OUT, arrival_s=t, index=i
            )
        )
    core.advance_until(math.inf)
    first, finish = np.empty(n), np.empty(n)
    for c in core.completions:
        first[c.index], finish[c.index] = c.first_token_s, c.finish_s
    return arrivals, first, finish


@pytest.mark.parametrize(
    ("model", "device", "tp"), [("llama-3.1-8b", "rngd", 1), ("llama-3.1-70b", "h100", 2)]
)
def test_85_percent_load_matches_steady_state_estimate(model, device, tp):
    pm = build_perf_model(default_catalog(), model=model, device=device, tp=tp)
    arrivals, _, finish = serve(pm, math.inf, 2000, 0)
    capacity_rps = 2000 / finish.max()  # saturated throughput
    rate = 0.85 * capacity_rps
    arrivals, first, finish = serve(pm, rate, 12_000, 1)
    warm = slice(1000, None)
    ttft = (first - arrivals)[warm]
    tpot = ((finish - first) / (OUT - 1))[warm]
    est = steady_state_estimate(pm, rate, PROMPT, OUT)
    # single-iteration predictions are hard lower bounds
    assert np.median(ttft) >= pm.ttft_s(PROMPT)
    assert np.median(tpot) >= pm.tpot_s(est.batch, PROMPT + OUT / 2)
    # the queueing estimate: TPOT within 25 %, mean TTFT inside its bracket (10 % slack)
    assert tpot.mean() == pytest.approx(est.tpot_s, rel=0.25)
    assert 0.9 * est.ttft_low_s <= ttft.mean() <= 1.1 * est.ttft_high_s
