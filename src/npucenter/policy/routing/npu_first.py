"""NPU-first with GPU spillover: the center's cruise engines carry the traffic.

A request leaves the NPUs only when every NPU would break the TTFT SLO and a GPU would do better.
"""

from __future__ import annotations

from npucenter.errors import InvalidConfigError
from npucenter.policy.routing.estimate import ttft_best
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

__all__ = ["NpuFirst"]


@ROUTING_POLICIES.register("npu-first", aliases=("npu-spillover",))
class NpuFirst:
    """NPUs carry the traffic; a request spills to a GPU when every NPU would break the TTFT SLO.

    Among NPUs the one with the lowest predicted TTFT is chosen. If that prediction exceeds the
    SLO and a GPU replica predicts a lower TTFT, the request goes to that GPU instead.
    """

    def __init__(self, context: RoutingContext | None = None) -> None:
        ctx = context or RoutingContext()
        self._estimator = ctx.estimator
        self._ttft_slo_s = ctx.ttft_slo_s if ctx.ttft_slo_s is not None else DEFAULT_TTFT_SLO_S
        if self._ttft_slo_s <= 0:
            raise InvalidConfigError("ttft_slo_s", self._ttft_slo_s, "must be > 0")

    def route(self, snapshot: RoutingSnapshot, request: RouteRequest) -> RouteDecision:
        """Best NPU unless its predicted TTFT breaks the SLO and a GPU would do better."""
        cands = candidates(snapshot, request)
        if not cands:
            return no_replica(request)
        npus = [c for c in cands if c.device_kind == "npu"]
        gpus = [c for c in cands if c.device_kind == "gpu"]
        if not npus:
            _, gpu_only = ttft_best(gpus, request, self._estimator)
            return RouteDecision(replica_id=gpu_only.replica_id, reason="no NPU replica; GPU")
        npu_s, npu = ttft_best(npus, request, self._estimator)
        if npu_s <= self._ttft_slo_s or not gpus:
            return RouteDecision(replica_id=npu.replica_id, reason="npu-first")
        gpu_s, gpu = ttft_best(gpus, request, self._estimator)
        if gpu_s < npu_s:
            return RouteDecision(
                replica_id=gpu.replica_id,
                reason=f"spill to GPU: NPU TTFT {npu_s:.3f} s > SLO {self._ttft_slo_s:.3f} s",
            )
        return RouteDecision(replica_id=npu.replica_id, reason="npu-first (GPU no better)")
