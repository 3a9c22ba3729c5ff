"""Step-cost models with simple closed forms, for tests and queueing checks (not device figures).

``LinearStepCost``: one iteration takes ``fixed_s + per_prefill_token_s * prefill_tokens +
per_decode_seq_s * decode_seqs + per_context_token_s * decode_context_tokens``; power is constant.
With all but ``fixed_s`` zero, a replica serving one request at a time is a fixed-service-time
server, which is what the M/D/1 check needs.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from npucenter.errors import InvalidConfigError
from npucenter.perf.model import PerfModel

__all__ = ["LinearStepCost"]


@dataclass(frozen=True, slots=True, kw_only=True)
class LinearStepCost:
    """A linear iteration-time model satisfying ``npucenter.sim.replica.StepCostModel``."""

    kv_capacity_tokens: int = 100_000
    fixed_s: float = 0.01
    per_prefill_token_s: float = 0.0
    per_decode_seq_s: float = 0.0
    per_context_token_s: float = 0.0
    busy_power_w: float = 100.0
    idle_power_w: float = 20.0

    attn_pairs = staticmethod(PerfModel.attn_pairs)  # the real model's causal pair count

    def __post_init__(self) -> None:
        for name in (
            "fixed_s",
            "per_prefill_token_s",
            "per_decode_seq_s",
            "per_context_token_s",
            "busy_power_w",
            "idle_power_w",
        ):
            if getattr(self, name) < 0:
                raise InvalidConfigError(name, getattr(self, name), "must be >= 0")

    def step_time_s(
        self, prefill_tokens: Any, prefill_attn_pairs: Any, decode_seqs: Any, decode_context: Any
    ) -> Any:
        """Iteration time (broadcasts over numpy arrays)."""
        return (
            self.fixed_s
            + self.per_prefill_token_s * prefill_tokens
            + self.per_decode_seq_s * decode_seqs
            + self.per_context_token_s * decode_context
        )

    def step_power_w(
        self, prefill_tokens: Any, prefill_attn_pairs: Any, decode_seqs: Any, decode_context: Any
    ) -> Any:
        """Constant busy power (broadcasts)."""
        return self.busy_power_w + 0.0 * decode_context

    def ttft_s(self, input_tokens: float, batch: float = 1) -> float:
        """One prefill iteration of ``batch`` prompts."""
        return float(self.step_time_s(batch * input_tokens, 0.0, 0.0, 0.0))

    def tpot_s(self, batch: float, context_tokens: float) -> float:
        """One decode iteration."""
        return float(self.step_time_s(0.0, 0.0, batch, batch * context_tokens))
