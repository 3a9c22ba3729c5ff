"""Fakes for the engine tests: the simulator's linear step-cost model with round numbers."""

from __future__ import annotations

from typing import Any

import pytest

from npucenter.sim.fakes import LinearStepCost


def LinearPerf(**changes: Any) -> LinearStepCost:
    """step time = 10 ms + 0.1 ms per prefill token + 1 ms per decode sequence; 100 W busy."""
    base: dict[str, Any] = {
        "kv_capacity_tokens": 10_000,
        "idle_power_w": 10.0,
        "fixed_s": 0.010,
        "per_prefill_token_s": 0.0001,
        "per_decode_seq_s": 0.001,
        "busy_power_w": 100.0,
    }
    return LinearStepCost(**{**base, **changes})


@pytest.fixture
def perf() -> LinearStepCost:
    return LinearPerf()
