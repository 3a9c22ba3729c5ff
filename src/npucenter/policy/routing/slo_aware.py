"""SLO-aware: the replica with the most headroom to the service's TTFT and TPOT limits."""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import cast

import numpy as np

from npucenter.policy.routing.estimate import splits_ttft, ttft_ranked, ttft_shift_s, ttft_split
from npucenter.policy.routing.index import ReplicaIndex, RoutingSnapshot, candidates
from npucenter.policy.routing.registry import ROUTING_POLICIES
from npucenter.policy.routing.types import (
    DEFAULT_TTFT_SLO_S,
    ReplicaState,
    RouteDecision,
    RouteRequest,
    RoutingContext,
    no_replica,
)

__all__ = ["SloAware"]


@ROUTING_POLICIES.register("slo-aware", aliases=("slo",))
class SloAware:
    """The replica with the most headroom to the SLO, by the performance model's predictions.

    NOTE(routing): pressure = max(predicted TTFT / TTFT limit, predicted TPOT / TPOT limit); the
    replica with the lowest pressure wins (ties: snapshot order). A pressure below 1 means the
    request is predicted to meet both limits there. Without a TPOT limit only TTFT counts.
    """

    def __init__(self, context: RoutingContext | None = None) -> None:
        ctx = context or RoutingContext()
        self._estimator = ctx.estimator
        self._ttft_slo_s = ctx.ttft_slo_s if ctx.ttft_slo_s is not None else DEFAULT_TTFT_SLO_S
        self._tpot_slo_s = ctx.tpot_slo_s if ctx.tpot_slo_s is not None else math.inf
        self._keys: list[int] = []  # perf-model keys of ttft_split, by their code in a column
        self._code_of: dict[int, int] = {}

    def route(self, snapshot: RoutingSnapshot, request: RouteRequest) -> RouteDecision:
        """Lowest predicted SLO pressure."""
        index = snapshot.index
        if index is not None and not request.exclude:
            if self._ttft_only_orderable():
                return self._route_indexed(index, request)
            if self._two_limits_columnable():
                return self._route_columns(index, request)
        cands = candidates(snapshot, request)
        if not cands:
            return no_replica(request)
        best = (math.inf, 0, cands[0])
        for ttft, i, state in ttft_ranked(cands, request, self._estimator):
            pressure = ttft / self._ttft_slo_s
            if self._estimator is not None and math.isfinite(self._tpot_slo_s):
                pressure = max(pressure, self._estimator.estimate_tpot_s(state) / self._tpot_slo_s)
            if (pressure, i) < best[:2]:
                best = (pressure, i, state)
        verdict = "meets SLO" if best[0] <= 1 else "no replica predicted to meet SLO"
        return RouteDecision(
            replica_id=best[2].replica_id, reason=f"slo-aware: pressure {best[0]:.2f}, {verdict}"
        )

    def _ttft_only_orderable(self) -> bool:
        """Pressure is the TTFT alone, by an estimate an index can keep in order."""
        tpot_counts = self._estimator is not None and math.isfinite(self._tpot_slo_s)
        return not tpot_counts and self._ttft_slo_s > 0 and splits_ttft(self._estimator)

    def _two_limits_columnable(self) -> bool:
        """Pressure is the larger of TTFT and TPOT pressure, by an estimate split per replica."""
        return (
            self._estimator is not None
            and math.isfinite(self._tpot_slo_s)
            and self._ttft_slo_s > 0
            and splits_ttft(self._estimator)
        )

    def _row(self, state: ReplicaState) -> tuple[str, tuple[float, float, float]]:
        """A replica's row in a column view: (perf-model code, wait before a prefill, TPOT
        pressure), the scan's floats; grouped by model."""
        estimator = self._estimator
        assert estimator is not None
        key, wait_s = ttft_split(state, estimator)
        code = self._code_of.get(key)
        if code is None:
            code = self._code_of[key] = len(self._keys)
            self._keys.append(key)
        return state.model_id, (
            float(code),
            wait_s,
            estimator.estimate_tpot_s(state) / self._tpot_slo_s,
        )

    def _route_columns(self, index: ReplicaIndex, request: RouteRequest) -> RouteDecision:
        """The scan's choice with both limits, from a column view: per candidate
        ``max((wait + prefill) / TTFT limit, TPOT / TPOT limit)`` as vectors, first least.

        NOTE(routing): the larger of two pressures has ties no single ordering holds (every
        idle replica has the same TPOT pressure), so this is a scan, but of float columns the
        replicas keep current (no snapshot, no per-replica Python): a few vector operations.
        """
        view = index.columns(f"slo-aware-columns:{id(self)}", self._row, 3)
        members, rows = view.columns(request.model_id)
        if not len(members):
            return no_replica(request)
        shifts = np.array(
            [ttft_shift_s(key, request.prompt_tokens, self._estimator) for key in self._keys]
        )
        ttft = (rows[1] + shifts[rows[0].astype(np.intp)]) / self._ttft_slo_s
        pressures = np.maximum(ttft, rows[2])
        best = int(np.argmin(pressures))  # the first of equal least pressures
        pressure = float(pressures[best])
        verdict = "meets SLO" if pressure <= 1 else "no replica predicted to meet SLO"
        return RouteDecision(
            replica_id=index.states[int(members[best])].replica_id,
            reason=f"slo-aware: pressure {pressure:.2f}, {verdict}",
        )

    def _place(self, state: ReplicaState) -> tuple[tuple[str, str, int], float]:
        """Group (model, kind, perf model) and key (wait before a prefill) in an index's view."""
        key, wait_s = ttft_split(state, self._estimator)
        return (state.model_id, state.device_kind, key), wait_s

    def _route_indexed(self, index: ReplicaIndex, request: RouteRequest) -> RouteDecision:
        """The scan's choice from the index: the least (TTFT / limit, position) over the groups
        of (model, kind, perf model), from a view like npu-first's.

        With a TPOT limit the pressure is the larger of two terms and its ties (common: every
        idle replica has the same TPOT) need the first in snapshot order of a set no ordering
        holds, so that case stays a scan.
        """
        estimator, slo_s = self._estimator, self._ttft_slo_s
        view = index.min_view(f"slo-aware:{id(self)}", self._place)
        best: tuple[float, int] | None = None
        for group in view.groups():
            model_id, _, key = cast(tuple[str, str, int], group)
            if model_id != request.model_id:
                continue
            shift = ttft_shift_s(key, request.prompt_tokens, estimator)
            least = view.least_scored(group, _pressure(shift, slo_s))
            if least is not None and (best is None or least < best):
                best = least
        if best is None:
            return no_replica(request)
        pressure, pos = best
        verdict = "meets SLO" if pressure <= 1 else "no replica predicted to meet SLO"
        return RouteDecision(
            replica_id=index.states[pos].replica_id,
            reason=f"slo-aware: pressure {pressure:.2f}, {verdict}",
        )


def _pressure(shift_s: float, slo_s: float) -> Callable[[float], float]:
    """TTFT pressure of a wait: the scan's ``(wait + prefill) / limit``, the same float."""
    return lambda wait_s: (wait_s + shift_s) / slo_s
