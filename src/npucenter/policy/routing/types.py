"""The values every routing policy shares: replica state, request, decision, context.

Pure data and Protocols; imports no other routing module. Policies import it, never the package.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

from npucenter.errors import InvalidConfigError

__all__ = [
    "DEFAULT_TTFT_SLO_S",
    "ReplicaState",
    "RouteDecision",
    "RouteRequest",
    "RoutingContext",
    "StepLatencyModel",
    "TtftEstimator",
    "no_replica",
]

#: TTFT limit used when a policy needs one and none is given (MLPerf Inference server scenario).
DEFAULT_TTFT_SLO_S = 2.0
_DEVICE_KINDS = ("npu", "gpu")


@dataclass(frozen=True, slots=True, kw_only=True)
class ReplicaState:
    """What a router knows about one engine replica at the snapshot time."""

    replica_id: str
    model_id: str
    device_id: str
    device_kind: str  # "npu" | "gpu"
    healthy: bool = True
    num_running: int = 0
    num_waiting: int = 0
    outstanding_tokens: int = 0  # prompt tokens not yet prefilled + output tokens still to come
    queued_prefill_tokens: int = 0  # prompt (or recompute) tokens not yet prefilled
    kv_used_fraction: float = 0.0  # 0-1, blocks in use / blocks of the replica
    predicted_ttft_s: float | None = None  # queueing delay before a new prefill, if known
    max_num_seqs: int | None = None

    def __post_init__(self) -> None:
        if self.device_kind not in _DEVICE_KINDS:
            raise InvalidConfigError("device_kind", self.device_kind, "must be 'npu' or 'gpu'")


@dataclass(frozen=True, slots=True, kw_only=True)
class RouteRequest:
    """The facts about a request a router may use (no prompt text).

    The live gateway and the simulator both build this one type.
    """

    request_id: str
    model_id: str
    prompt_tokens: int  # counted by the simulator, estimated by the gateway
    max_output_tokens: int
    tenant: str = ""
    priority: int = 0
    prefix_hashes: tuple[int, ...] = ()  # hashes of the prompt's leading blocks (prefix affinity)
    exclude: frozenset[str] = frozenset()  # replica ids that already failed this request


@dataclass(frozen=True, slots=True, kw_only=True)
class RouteDecision:
    """The chosen replica (``None``: no healthy replica serves the model) and why."""

    replica_id: str | None
    reason: str


class StepLatencyModel(Protocol):
    """The part of ``npucenter.perf.PerfModel`` a latency estimate needs."""

    def ttft_s(self, input_tokens: float, batch: float = 1) -> float: ...

    def tpot_s(self, batch: float, context_tokens: float) -> float: ...


class TtftEstimator(Protocol):
    """Predicts the TTFT and TPOT a request would see on a replica if routed there now."""

    def estimate_ttft_s(self, state: ReplicaState, prompt_tokens: int) -> float: ...

    def estimate_tpot_s(self, state: ReplicaState) -> float: ...


@dataclass(frozen=True, slots=True, kw_only=True)
class RoutingContext:
    """What a policy factory may be given: an estimator and the service's SLO limits."""

    estimator: TtftEstimator | None = None
    ttft_slo_s: float | None = None
    tpot_slo_s: float | None = None


def no_replica(request: RouteRequest) -> RouteDecision:
    """The decision when no healthy replica serves the request's model."""
    return RouteDecision(replica_id=None, reason=f"no healthy replica serves {request.model_id}")
