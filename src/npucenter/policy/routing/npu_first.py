"""NPU-first with GPU spillover: the center's cruise engines carry the traffic.

A request leaves the NPUs only when every NPU would break the TTFT SLO and a GPU would do better.
"""

from __future__ import annotations

from typing import cast

from npucenter.errors import InvalidConfigError
from npucenter.policy.routing.estimate import splits_ttft, ttft_best, ttft_shift_s, ttft_split
from npucenter.policy.routing.registry import ROUTING_POLICIES
from npucenter.policy.routing.types import (
    DEFAULT_TTFT_SLO_S,
    ReplicaState,
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
        best = self._best_by_kind(snapshot, request)
        npu, gpu = best.get("npu"), best.get("gpu")
        if npu is None:
            if gpu is None:
                return no_replica(request)
            return RouteDecision(replica_id=gpu[1].replica_id, reason="no NPU replica; GPU")
        npu_s = npu[0]
        if npu_s <= self._ttft_slo_s or gpu is None:
            return RouteDecision(replica_id=npu[1].replica_id, reason="npu-first")
        gpu_s = gpu[0]
        if gpu_s < npu_s:
            return RouteDecision(
                replica_id=gpu[1].replica_id,
                reason=f"spill to GPU: NPU TTFT {npu_s:.3f} s > SLO {self._ttft_slo_s:.3f} s",
            )
        return RouteDecision(replica_id=npu[1].replica_id, reason="npu-first (GPU no better)")

    def _best_by_kind(
        self, snapshot: RoutingSnapshot, request: RouteRequest
    ) -> dict[str, tuple[float, ReplicaState]]:
        """Device kind -> (lowest predicted TTFT, its replica: the first in order on ties)."""
        index, estimator = snapshot.index, self._estimator
        if index is None or request.exclude or not splits_ttft(estimator):
            cands = candidates(snapshot, request)
            out: dict[str, tuple[float, ReplicaState]] = {}
            for kind in ("npu", "gpu"):
                mine = [c for c in cands if c.device_kind == kind]
                if mine:
                    out[kind] = ttft_best(mine, request, estimator)
            return out
        # the index's view: per (model, kind, perf model) the replicas by their wait before a
        # prefill; adding the prompt's own prefill time of that perf model gives the estimate
        view = index.view(
            f"npu-first:{id(estimator)}",
            lambda s: ttft_split(s, estimator)[1],
            lambda s: (s.model_id, s.device_kind, ttft_split(s, estimator)[0]),
        )
        found: dict[str, tuple[float, int]] = {}
        for group in view.groups():
            model_id, kind, key = cast(tuple[str, str, int], group)
            if model_id != request.model_id:
                continue
            shift = ttft_shift_s(key, request.prompt_tokens, estimator)
            least = view.least_shifted(group, shift)
            if least is not None and (kind not in found or least < found[kind]):
                found[kind] = least
        return {kind: (s, index.states[pos]) for kind, (s, pos) in found.items()}
