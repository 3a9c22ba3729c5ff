"""NPU-first with GPU spillover: the center's cruise engines carry the traffic.

A request leaves the NPUs only when every NPU would break the TTFT SLO and a GPU would do better.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, cast

from npucenter.errors import InvalidConfigError
from npucenter.policy.routing.estimate import splits_ttft, ttft_best, ttft_shift_s, ttft_split
from npucenter.policy.routing.index import RoutingSnapshot, candidates
from npucenter.policy.routing.registry import ROUTING_POLICIES
from npucenter.policy.routing.types import (
    DEFAULT_TTFT_SLO_S,
    ReplicaState,
    RouteDecision,
    RouteRequest,
    RoutingContext,
    no_replica,
)

if TYPE_CHECKING:
    from npucenter.policy.routing.index import ReplicaIndex

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
        self._view_name = f"npu-first:{id(self)}"  # its view in an index: by this estimator

    def route(self, snapshot: RoutingSnapshot, request: RouteRequest) -> RouteDecision:
        """Best NPU unless its predicted TTFT breaks the SLO and a GPU would do better."""
        index, estimator = snapshot.index, self._estimator
        if index is not None and not request.exclude and splits_ttft(estimator):
            best = self._best_by_kind(index, request)
            return self._decide(request, best.get("npu"), lambda: best.get("gpu"))
        cands = candidates(snapshot, request)
        if not cands:
            return no_replica(request)
        npus = [c for c in cands if c.device_kind == "npu"]
        gpus = [c for c in cands if c.device_kind == "gpu"]
        npu = ttft_best(npus, request, estimator) if npus else None
        return self._decide(
            request, npu, lambda: ttft_best(gpus, request, estimator) if gpus else None
        )

    def _decide(
        self,
        request: RouteRequest,
        npu: tuple[float, ReplicaState] | None,
        best_gpu: Callable[[], tuple[float, ReplicaState] | None],  # asked only when needed
    ) -> RouteDecision:
        if npu is None:
            gpu = best_gpu()
            if gpu is None:
                return no_replica(request)
            return RouteDecision(replica_id=gpu[1].replica_id, reason="no NPU replica; GPU")
        npu_s = npu[0]
        if npu_s <= self._ttft_slo_s:
            return RouteDecision(replica_id=npu[1].replica_id, reason="npu-first")
        gpu = best_gpu()
        if gpu is None:
            return RouteDecision(replica_id=npu[1].replica_id, reason="npu-first")
        if gpu[0] < npu_s:
            return RouteDecision(
                replica_id=gpu[1].replica_id,
                reason=f"spill to GPU: NPU TTFT {npu_s:.3f} s > SLO {self._ttft_slo_s:.3f} s",
            )
        return RouteDecision(replica_id=npu[1].replica_id, reason="npu-first (GPU no better)")

    def _best_by_kind(
        self, index: ReplicaIndex, request: RouteRequest
    ) -> dict[str, tuple[float, ReplicaState]]:
        """Device kind -> (lowest predicted TTFT, its replica: the first in order on ties).

        NOTE(routing): the index's view holds, per (model, kind, perf model), the replicas by
        their wait before a prefill; adding the prompt's own prefill time on that perf model
        gives each one's TTFT estimate, so the group's least wait is its least estimate.
        """
        view = index.view(self._view_name, self._place)
        found: dict[str, tuple[float, int]] = {}
        for group in view.groups():
            model_id, kind, key = cast(tuple[str, str, int], group)
            if model_id != request.model_id:
                continue
            shift = ttft_shift_s(key, request.prompt_tokens, self._estimator)
            least = view.least_shifted(group, shift)
            if least is not None and (kind not in found or least < found[kind]):
                found[kind] = least
        return {kind: (s, index.states[pos]) for kind, (s, pos) in found.items()}

    def _place(self, state: ReplicaState) -> tuple[tuple[str, str, int], float]:
        """Group (model, kind, perf model) and key (wait before a prefill) in an index's view."""
        key, wait_s = ttft_split(state, self._estimator)
        return (state.model_id, state.device_kind, key), wait_s
