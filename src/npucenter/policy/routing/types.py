"""The values and seams every routing policy shares: replica state, request, snapshot, decision.

Pure data and Protocols; imports no policy. Policies import this module, never the package.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Protocol, runtime_checkable

from npucenter.errors import InvalidConfigError

if TYPE_CHECKING:
    from npucenter.policy.routing.index import ReplicaIndex

__all__ = [
    "DEFAULT_TTFT_SLO_S",
    "ReplicaState",
    "RouteDecision",
    "RouteRequest",
    "RoutingContext",
    "RoutingPolicy",
    "RoutingPolicyFactory",
    "RoutingSnapshot",
    "StepLatencyModel",
    "TtftEstimator",
    "candidates",
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
class RoutingSnapshot:
    """Every replica a router may choose from, as of ``now_s``.

    ``index``, when given, is kept by the caller over exactly ``replicas`` (``index.states``);
    policies that can use it answer in O(log n) what their scan of ``replicas`` would answer.
    """

    now_s: float
    replicas: Sequence[ReplicaState]  # read during the call only; a caller may reuse it
    index: ReplicaIndex | None = None


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


@runtime_checkable
class RoutingPolicy(Protocol):
    """Chooses a replica for a request from a snapshot."""

    def route(self, snapshot: RoutingSnapshot, request: RouteRequest) -> RouteDecision: ...


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


#: A routing policy factory takes one optional :class:`RoutingContext`.
RoutingPolicyFactory = Callable[[RoutingContext | None], RoutingPolicy]


def candidates(snapshot: RoutingSnapshot, request: RouteRequest) -> list[ReplicaState]:
    """The healthy replicas of the request's model, in snapshot order.

    Replicas in ``request.exclude`` are left out unless every candidate is excluded (a retry may
    then go back to one that failed it).
    """
    model_id = request.model_id
    out = [r for r in snapshot.replicas if r.healthy and r.model_id == model_id]
    if request.exclude and out:
        kept = [r for r in out if r.replica_id not in request.exclude]
        return kept or out
    return out


def no_replica(request: RouteRequest) -> RouteDecision:
    """The decision when no healthy replica serves the request's model."""
    return RouteDecision(replica_id=None, reason=f"no healthy replica serves {request.model_id}")
