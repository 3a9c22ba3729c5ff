"""Routing policies: which engine replica serves a request, decided from a snapshot of replicas.

Policies are plain deterministic objects shared by the live gateway and the simulator: a
:class:`RoutingSnapshot` and a :class:`RouteRequest` in, a :class:`RouteDecision` out. They never
import simulator or gateway types and never read a clock; any memory they keep (round-robin's
counter) depends only on the sequence of calls, so replaying the same calls gives the same answers.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Protocol, runtime_checkable

from npucenter.errors import InvalidConfigError
from npucenter.registry import Registry

__all__ = [
    "DEFAULT_TTFT_SLO_S",
    "ROUTING_POLICIES",
    "LeastOutstandingTokens",
    "LeastRequests",
    "NpuFirst",
    "PerfEstimator",
    "ReplicaState",
    "RoundRobin",
    "RouteDecision",
    "RouteRequest",
    "RoutingContext",
    "RoutingPolicy",
    "RoutingPolicyFactory",
    "RoutingSnapshot",
    "SloAware",
    "StepLatencyModel",
    "TtftEstimator",
    "make_routing_policy",
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
    """Every replica a router may choose from, as of ``now_s``."""

    now_s: float
    replicas: tuple[ReplicaState, ...]


@dataclass(frozen=True, slots=True, kw_only=True)
class RouteRequest:
    """The facts about a request a router may use (no prompt text)."""

    request_id: str
    model_id: str
    prompt_tokens: int
    max_output_tokens: int
    tenant: str = ""
    priority: int = 0
    prefix_hashes: tuple[int, ...] = ()  # hashes of the prompt's leading blocks (prefix affinity)


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

ROUTING_POLICIES: Registry[RoutingPolicyFactory] = Registry("routing policy")


def make_routing_policy(name: str, context: RoutingContext | None = None) -> RoutingPolicy:
    """A fresh policy registered as ``name`` (raises UnknownPluginError listing valid names)."""
    return ROUTING_POLICIES.get(name)(context)


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

    def estimate_tpot_s(self, state: ReplicaState) -> float:
        """Predicted time per output token once the request joins the running batch."""
        model = self._models.get(state.replica_id)
        if model is None:
            return 0.0
        return self._tpot_at_s(model, state.num_running + 1)


def _candidates(snapshot: RoutingSnapshot, request: RouteRequest) -> list[ReplicaState]:
    return [r for r in snapshot.replicas if r.healthy and r.model_id == request.model_id]


def _none(request: RouteRequest) -> RouteDecision:
    return RouteDecision(replica_id=None, reason=f"no healthy replica serves {request.model_id}")


@ROUTING_POLICIES.register("round-robin", aliases=("rr",))
class RoundRobin:
    """Each healthy replica of the model in turn (one counter per model)."""

    def __init__(self, context: RoutingContext | None = None) -> None:
        self._next: dict[str, int] = {}

    def route(self, snapshot: RoutingSnapshot, request: RouteRequest) -> RouteDecision:
        """The next replica in snapshot order after the previous choice for this model."""
        cands = _candidates(snapshot, request)
        if not cands:
            return _none(request)
        turn = self._next.get(request.model_id, 0)
        self._next[request.model_id] = turn + 1
        return RouteDecision(replica_id=cands[turn % len(cands)].replica_id, reason="round-robin")


@ROUTING_POLICIES.register("least-outstanding-tokens", aliases=("lot", "least-tokens"))
class LeastOutstandingTokens:
    """The replica with the fewest tokens still to process (ties: fewer requests, then order)."""

    def __init__(self, context: RoutingContext | None = None) -> None:
        pass

    def route(self, snapshot: RoutingSnapshot, request: RouteRequest) -> RouteDecision:
        """Least outstanding prompt + output tokens."""
        cands = _candidates(snapshot, request)
        if not cands:
            return _none(request)
        best = min(
            range(len(cands)),
            key=lambda i: (
                cands[i].outstanding_tokens,
                cands[i].num_running + cands[i].num_waiting,
                i,
            ),
        )
        return RouteDecision(replica_id=cands[best].replica_id, reason="least outstanding tokens")


@ROUTING_POLICIES.register("least-requests", aliases=("least-loaded",))
class LeastRequests:
    """The replica with the fewest running plus waiting requests."""

    def __init__(self, context: RoutingContext | None = None) -> None:
        pass

    def route(self, snapshot: RoutingSnapshot, request: RouteRequest) -> RouteDecision:
        """Least running + waiting requests (ties: snapshot order)."""
        cands = _candidates(snapshot, request)
        if not cands:
            return _none(request)
        best = min(
            range(len(cands)), key=lambda i: (cands[i].num_running + cands[i].num_waiting, i)
        )
        return RouteDecision(replica_id=cands[best].replica_id, reason="least requests")


def _ttft_estimate(state: ReplicaState, prompt: int, estimator: TtftEstimator | None) -> float:
    if estimator is not None:
        return estimator.estimate_ttft_s(state, prompt)
    if state.predicted_ttft_s is not None:
        return state.predicted_ttft_s
    return float(state.queued_prefill_tokens + state.outstanding_tokens) * 1e-6  # no model


def _ttft_ranked(
    cands: Sequence[ReplicaState], request: RouteRequest, estimator: TtftEstimator | None
) -> list[tuple[float, int, ReplicaState]]:
    out = [
        (_ttft_estimate(state, request.prompt_tokens, estimator), i, state)
        for i, state in enumerate(cands)
    ]
    out.sort(key=lambda t: (t[0], t[1]))
    return out


def _ttft_best(
    cands: Sequence[ReplicaState], request: RouteRequest, estimator: TtftEstimator | None
) -> tuple[float, ReplicaState]:
    """The lowest predicted TTFT and its replica (first in order on ties)."""
    best_s, best = math.inf, cands[0]
    for state in cands:
        est = _ttft_estimate(state, request.prompt_tokens, estimator)
        if est < best_s:
            best_s, best = est, state
    return best_s, best


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
        cands = _candidates(snapshot, request)
        if not cands:
            return _none(request)
        npus = [c for c in cands if c.device_kind == "npu"]
        gpus = [c for c in cands if c.device_kind == "gpu"]
        if not npus:
            _, gpu_only = _ttft_best(gpus, request, self._estimator)
            return RouteDecision(replica_id=gpu_only.replica_id, reason="no NPU replica; GPU")
        npu_s, npu = _ttft_best(npus, request, self._estimator)
        if npu_s <= self._ttft_slo_s or not gpus:
            return RouteDecision(replica_id=npu.replica_id, reason="npu-first")
        gpu_s, gpu = _ttft_best(gpus, request, self._estimator)
        if gpu_s < npu_s:
            return RouteDecision(
                replica_id=gpu.replica_id,
                reason=f"spill to GPU: NPU TTFT {npu_s:.3f} s > SLO {self._ttft_slo_s:.3f} s",
            )
        return RouteDecision(replica_id=npu.replica_id, reason="npu-first (GPU no better)")


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
        cands = _candidates(snapshot, request)
        if not cands:
            return _none(request)
        best = (math.inf, 0, cands[0])
        for ttft, i, state in _ttft_ranked(cands, request, self._estimator):
            pressure = ttft / self._ttft_slo_s
            if self._estimator is not None and math.isfinite(self._tpot_slo_s):
                pressure = max(pressure, self._estimator.estimate_tpot_s(state) / self._tpot_slo_s)
            if (pressure, i) < best[:2]:
                best = (pressure, i, state)
        verdict = "meets SLO" if best[0] <= 1 else "no replica predicted to meet SLO"
        return RouteDecision(
            replica_id=best[2].replica_id, reason=f"slo-aware: pressure {best[0]:.2f}, {verdict}"
        )


# Policies defined in their own modules register themselves on import; importing them here means
# every user of ROUTING_POLICIES (gateway, simulator, CLI choices) sees the same set.
from npucenter.policy import prefix_affinity as _prefix_affinity  # noqa: E402, F401
