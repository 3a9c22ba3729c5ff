"""Hand-computable steady-state estimates of one continuous-batching replica under Poisson load.

Used to check the simulator where it matters (docs/twin-fidelity.md) and cheap enough for a
planner's first cut. Pure arithmetic on the performance model; no simulation.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Protocol

from npucenter.errors import InvalidConfigError

__all__ = ["SteadyStateEstimate", "steady_state_estimate"]


class _StepTime(Protocol):
    def step_time_s(self, p: Any, a: Any, n: Any, c: Any) -> Any: ...


@dataclass(frozen=True, slots=True, kw_only=True)
class SteadyStateEstimate:
    """Mean-value estimates for requests of ``prompt_tokens`` in, ``output_tokens`` out."""

    rate_rps: float
    batch: float  # mean sequences decoding (Little's law)
    prefill_step_s: float  # an iteration that prefills one prompt beside the decode batch
    decode_step_s: float  # a decode-only iteration
    prefill_utilisation: float  # share of time spent in prefill iterations
    tpot_s: float  # mean iteration time = time per output token
    ttft_low_s: float  # no queueing for prefill: residual iteration + own prefill iteration
    ttft_high_s: float  # plus M/D/1 waiting for the prefill iterations ahead


def steady_state_estimate(
    perf: _StepTime, rate_rps: float, prompt_tokens: int, output_tokens: int
) -> SteadyStateEstimate:
    """Fixed point of the iteration rate ``x`` (iterations per second) at arrival rate λ.

    NOTE(sim): Each request causes one prefill iteration (its prompt fits the token budget) and
    then decodes for ``O - 1`` iterations, so ``b = λ(O-1)/x`` sequences decode at any time
    (Little). Time balances as ``λ·t_pf + (x - λ)·t_dec = 1`` with ``t_pf``/``t_dec`` the
    performance model's prefill and decode-only iteration times at batch ``b`` and mean context
    ``P + O/2``; TPOT is ``1/x``. TTFT is bracketed: at least the mean residual of the iteration
    in progress plus the request's own prefill iteration; at most that plus an M/D/1 wait for the
    prefill iterations queued ahead (utilisation ``λ·t_pf``), which ignores that engines batch
    several queued prompts into one iteration.
    """
    if not rate_rps > 0 or prompt_tokens < 1 or output_tokens < 2:
        raise InvalidConfigError(
            "rate/prompt/output", (rate_rps, prompt_tokens, output_tokens), "need >0, >=1, >=2"
        )
    p, o = float(prompt_tokens), float(output_tokens)
    pairs = p * (p + 1) / 2
    x = 1.0 / float(perf.step_time_s(0.0, 0.0, 1.0, p))
    t_pf = t_dec = 0.0
    b = 0.0
    for _ in range(500):
        b = rate_rps * (o - 1) / x
        ctx = b * (p + o / 2)
        t_pf = float(perf.step_time_s(p, pairs, b, ctx))
        t_dec = float(perf.step_time_s(0.0, 0.0, b, ctx))
        x_new = rate_rps + (1 - rate_rps * t_pf) / t_dec
        if x_new <= rate_rps:  # prefill alone saturates the replica
            x_new = rate_rps
        if abs(x_new - x) <= 1e-12 * x:
            break
        x = 0.5 * x + 0.5 * x_new
    util = rate_rps * t_pf
    e_t2 = (rate_rps * t_pf**2 + (x - rate_rps) * t_dec**2) / x
    residual = e_t2 / (2 / x)
    low = residual + t_pf
    wait = util * t_pf / (2 * (1 - util)) if util < 1 else math.inf
    return SteadyStateEstimate(
        rate_rps=rate_rps,
        batch=b,
        prefill_step_s=t_pf,
        decode_step_s=t_dec,
        prefill_utilisation=util,
        tpot_s=1 / x,
        ttft_low_s=low,
        ttft_high_s=low + wait,
    )
