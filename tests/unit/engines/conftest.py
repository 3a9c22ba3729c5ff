"""Fakes for the engine tests: a linear perf model with round numbers."""

from __future__ import annotations

from dataclasses import dataclass

import pytest


@dataclass
class LinearPerf:
    """step time = base + per_prefill * prefill tokens + per_decode * decode seqs."""

    kv_capacity_tokens: int = 10_000
    idle_power_w: float = 10.0
    base_s: float = 0.010
    per_prefill_s: float = 0.0001
    per_decode_s: float = 0.001
    busy_power_w: float = 100.0

    @staticmethod
    def attn_pairs(chunk_tokens: float, prior_context_tokens: float) -> float:
        return chunk_tokens * (prior_context_tokens + (chunk_tokens + 1) / 2)

    def step_time_s(self, prefill: float, pairs: float, decode: float, ctx: float) -> float:
        return self.base_s + self.per_prefill_s * prefill + self.per_decode_s * decode

    def step_power_w(self, prefill: float, pairs: float, decode: float, ctx: float) -> float:
        return self.busy_power_w + 0 * decode  # broadcasts like the real model


@pytest.fixture
def perf() -> LinearPerf:
    return LinearPerf()
