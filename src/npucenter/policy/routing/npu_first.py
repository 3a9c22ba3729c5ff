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
            npu = self._best_of_kind(index, request, "npu")
            return self._decide(request, npu, lambda: self._best_of_kind(index, request, "gpu"))
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

    def _best_of_kind(
        self, index: ReplicaIndex, request: RouteRequest, kind: str
    ) -> tuple[float, ReplicaState] | None:
        """The lowest predicted TTFT on a ``kind`` replica and that replica (first on ties).

        NOTE(routing): the index's view holds, per (model, kind, perf model), the replicas by
        their wait before a prefill; adding the prompt's own prefill time on that perf model
        gives each one's TTFT estimate, so the group's least wait is its least estimate.
        """
        view = index.min_view(self._view_name, self._place)
        found: tuple[float, int] | None = None
        for group in view.groups():
            model_id, group_kind, key = cast(tuple[str, str, int], group)
            if group_kind != kind or model_id != request.model_id:
                continue
            shift = ttft_shift_s(key, request.prompt_tokens, self._estimator)
            least = view.least_shifted(group, shift)
            if least is not None and (found is None or least < found):
                found = least
        return None if found is None else (found[0], index.states[found[1]])

    def _place(self, state: ReplicaState) -> tuple[tuple[str, str, int], float]:
        """Group (model, kind, perf model) and key (wait before a prefill) in an index's view."""
        key, wait_s = ttft_split(state, self._estimator)
        return (state.model_id, state.device_kind, key), wait_s
