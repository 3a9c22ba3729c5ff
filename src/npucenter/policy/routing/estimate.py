"""Latency estimates the SLO-minded policies (npu-first, slo-aware) rank replicas by.

:class:`PerfEstimator` predicts TTFT/TPOT from each replica's performance model; without one,
a replica's own ``predicted_ttft_s`` or its queued tokens stand in. Pure arithmetic, no clock.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence

from npucenter.policy.routing.types import (
    ReplicaState,
    RouteRequest,
    StepLatencyModel,
    TtftEstimator,
)

__all__ = [
    "PerfEstimator",
    "splits_ttft",
    "ttft_best",
    "ttft_estimate_s",
    "ttft_ranked",
    "ttft_shift_s",
    "ttft_split",
]


class PerfEstimator:
    """TTFT/TPOT estimates from each replica's performance model.

    NOTE(routing): TTFT on a replica = the time to prefill the prompt tokens queued ahead (at the
    replica's marginal prefill rate) + this prompt's own prefill + one decode step of the batch
    already running (the step in flight). Decode time uses the running batch plus this request at
    ``nominal_context_tokens``. Estimates are cheap (a few perf calls); they need not be exact,
    only ordered right.
    """

    def __init__(
        self,
        models: Mapping[str, StepLatencyModel],
        *,
        nominal_context_tokens: int = 1024,
    ) -> None:
        """``models`` maps a replica id to the performance model of that replica."""
        self._models = dict(models)
        self._nominal_context = float(nominal_context_tokens)
        self._per_token: dict[int, float] = {}
        self._ttft_cache: dict[tuple[int, int], float] = {}  # (model, prompt) -> TTFT alone
        self._tpot_cache: dict[tuple[int, int], float] = {}  # (model, batch) -> TPOT
        self._by_key: dict[int, StepLatencyModel] = {}  # id(model) -> model (ttft_split's keys)
        # replica -> (id(model), prefill s per queued token, model): ttft_split's per-call lookups
        self._split_of: dict[str, tuple[int, float, StepLatencyModel]] = {}

    def set_model(self, replica_id: str, model: StepLatencyModel) -> None:
        """Replica ``replica_id`` runs ``model`` from now on (the twin's fungible replica admitted
        again on another device type)."""
        self._models[replica_id] = model
        self._split_of.pop(replica_id, None)

    def _model(self, state: ReplicaState) -> StepLatencyModel | None:
        return self._models.get(state.replica_id)

    def _prefill_s_per_token(self, model: StepLatencyModel) -> float:
        key = id(model)
        rate = self._per_token.get(key)
        if rate is None:
            rate = (model.ttft_s(2048.0) - model.ttft_s(1.0)) / 2047.0
            self._per_token[key] = rate
        return rate

    def _ttft_alone_s(self, model: StepLatencyModel, prompt_tokens: int) -> float:
        key = (id(model), prompt_tokens)
        value = self._ttft_cache.get(key)
        if value is None:
            if len(self._ttft_cache) > 65_536:
                self._ttft_cache.clear()
            value = model.ttft_s(float(max(1, prompt_tokens)))
            self._ttft_cache[key] = value
        return value

    def _tpot_at_s(self, model: StepLatencyModel, batch: int) -> float:
        key = (id(model), batch)
        value = self._tpot_cache.get(key)
        if value is None:
            value = model.tpot_s(float(batch), batch * self._nominal_context)
            self._tpot_cache[key] = value
        return value

    def estimate_ttft_s(self, state: ReplicaState, prompt_tokens: int) -> float:
        """Predicted time to first token of a ``prompt_tokens`` prompt routed there now."""
        model = self._models.get(state.replica_id)
        if model is None:
            return state.predicted_ttft_s or 0.0
        queued = state.queued_prefill_tokens * self._prefill_s_per_token(model)
        in_flight = self._tpot_at_s(model, state.num_running) if state.num_running else 0.0
        return queued + in_flight + self._ttft_alone_s(model, prompt_tokens)

    def ttft_split(self, state: ReplicaState) -> tuple[int, float]:
        """(model key, wait before this prompt's prefill): the TTFT estimate is the wait plus
        :meth:`ttft_alone_for` of the key, summed in the same order (so bit for bit)."""
        split = self._split_of.get(state.replica_id)
        if split is None:
            model = self._models.get(state.replica_id)
            if model is None:
                return 0, state.predicted_ttft_s or 0.0
            self._by_key[id(model)] = model
            split = (id(model), self._prefill_s_per_token(model), model)
            self._split_of[state.replica_id] = split
        key, per_token_s, model = split
        queued = state.queued_prefill_tokens * per_token_s
        batch = state.num_running
        if not batch:
            return key, queued + 0.0
        in_flight = self._tpot_cache.get((key, batch))
        if in_flight is None:
            in_flight = self._tpot_at_s(model, batch)
        return key, queued + in_flight

    def ttft_alone_for(self, key: int, prompt_tokens: int) -> float:
        """The prompt's own prefill time on the model of ``key`` (from :meth:`ttft_split`)."""
        if key == 0:
            return 0.0
        return self._ttft_alone_s(self._by_key[key], prompt_tokens)

    def estimate_tpot_s(self, state: ReplicaState) -> float:
        """Predicted time per output token once the request joins the running batch."""
        model = self._models.get(state.replica_id)
        if model is None:
            return 0.0
        return self._tpot_at_s(model, state.num_running + 1)


def ttft_estimate_s(state: ReplicaState, prompt: int, estimator: TtftEstimator | None) -> float:
    """The estimator's TTFT, else the replica's own prediction, else its queued tokens × 1 µs."""
    if estimator is not None:
        return estimator.estimate_ttft_s(state, prompt)
    if state.predicted_ttft_s is not None:
        return state.predicted_ttft_s
    return float(state.queued_prefill_tokens + state.outstanding_tokens) * 1e-6  # no model


def ttft_ranked(
    cands: Sequence[ReplicaState], request: RouteRequest, estimator: TtftEstimator | None
) -> list[tuple[float, int, ReplicaState]]:
    """(TTFT estimate, position, replica) for each candidate, fastest first (ties: position)."""
    out = [
        (ttft_estimate_s(state, request.prompt_tokens, estimator), i, state)
        for i, state in enumerate(cands)
    ]
    out.sort(key=lambda t: (t[0], t[1]))
    return out


def ttft_best(
    cands: Sequence[ReplicaState], request: RouteRequest, estimator: TtftEstimator | None
) -> tuple[float, ReplicaState]:
    """The lowest predicted TTFT and its replica (first in order on ties)."""
    best_s, best = math.inf, cands[0]
    for state in cands:
        est = ttft_estimate_s(state, request.prompt_tokens, estimator)
        if est < best_s:
            best_s, best = est, state
    return best_s, best


def splits_ttft(estimator: TtftEstimator | None) -> bool:
    """Whether :func:`ttft_split` and :func:`ttft_shift_s` rebuild this estimator's TTFT."""
    return estimator is None or type(estimator) is PerfEstimator  # a subclass may estimate anew


def ttft_split(state: ReplicaState, estimator: TtftEstimator | None) -> tuple[int, float]:
    """(group key, prompt-independent part) of :func:`ttft_estimate_s`: the estimate is the part
    plus ``ttft_shift_s(key, prompt)``, exactly; only where :func:`splits_ttft` holds."""
    if isinstance(estimator, PerfEstimator):
        return estimator.ttft_split(state)
    return 0, ttft_estimate_s(state, 0, None)


def ttft_shift_s(key: int, prompt: int, estimator: TtftEstimator | None) -> float:
    """The prompt-dependent part of :func:`ttft_estimate_s` for a :func:`ttft_split` key."""
    if isinstance(estimator, PerfEstimator):
        return estimator.ttft_alone_for(key, prompt)
    return 0.0
