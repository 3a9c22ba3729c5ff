"""SLO-aware: the replica with the most headroom to the service's TTFT and TPOT limits."""

from __future__ import annotations

import math

from npucenter.policy.routing.estimate import ttft_ranked
from npucenter.policy.routing.registry import ROUTING_POLICIES
from npucenter.policy.routing.types import (
    DEFAULT_TTFT_SLO_S,
    RouteDecision,
    RouteRequest,
    RoutingContext,
    RoutingSnapshot,
    candidates,
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

    def route(self, snapshot: RoutingSnapshot, request: RouteRequest) -> RouteDecision:
        """Lowest predicted SLO pressure."""
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
