"""Autoscaling on LLM signals: how many replicas a deployment should have, decided from its load.

One pure decision for the live center and the twin: a deployment's :class:`AutoscalePolicy` and
a :class:`DeploymentLoad` (requests held in the gateway and running, KV-cache use, SLO
attainment, when the last request came) in, a :class:`ScaleDecision` (the replica count to
ask admission for) out. No clock is read and nothing is placed here: the caller passes
``now_s``, admission places what is asked, and a quota bounds the ask.
"""

from __future__ import annotations

import enum
import math
from dataclasses import dataclass

from npucenter.errors import InvalidConfigError

__all__ = [
    "AutoscalePolicy",
    "DeploymentLoad",
    "ScaleDecision",
    "ScaleReason",
    "decide_scale",
]


class ScaleReason(enum.Enum):
    """Which signal set the count (the first that binds, in the order they are applied)."""

    QUEUE = "queue"  # requests held or running per replica above the target
    KV = "kv"  # KV-cache use above the target
    SLO = "slo"  # SLO attainment below the target
    COLD_START = "cold-start"  # requests wait for a deployment at zero replicas
    IDLE = "idle"  # no request for the idle period: down to zero
    MIN = "min"  # held at min_replicas
    MAX = "max"  # capped at max_replicas
    QUOTA = "quota"  # capped by what the tenant's quota admits
    STEP = "step"  # the change was limited to one step
    HOLD = "hold"  # no signal to change, or a change waits for its stabilization window


@dataclass(frozen=True, slots=True, kw_only=True)
class AutoscalePolicy:
    """A deployment's scaling bounds and targets (a fleet file's or a deployment's settings)."""

    min_replicas: int = 1  # 0: scale to zero after idle_to_zero_s
    max_replicas: int = 8
    target_concurrency_per_replica: float = 16.0  # requests held + running one replica should carry
    target_kv_used_fraction: float = 0.8  # 0-1, scale up above (mean over ready replicas)
    target_slo_attainment: float = 0.9  # 0-1, scale up below; no scale-down while below
    idle_to_zero_s: float = 300.0  # with min_replicas 0: no request for this long -> 0 replicas
    scale_down_delay_s: float = 60.0  # no scale-down within this long of the last change
    max_scale_up_factor: float = 2.0  # one decision at most multiplies the count by this
    max_scale_down_step: int = 1  # one decision removes at most this many replicas
    drain_s: float = 60.0  # a replica scaled down finishes its requests for at most this long

    def __post_init__(self) -> None:
        if self.min_replicas < 0:
            raise InvalidConfigError("min_replicas", self.min_replicas, "must be >= 0")
        if self.max_replicas < max(1, self.min_replicas):
            raise InvalidConfigError(
                "max_replicas", self.max_replicas, "must be >= 1 and >= min_replicas"
            )
        if not self.target_concurrency_per_replica > 0:
            raise InvalidConfigError(
                "target_concurrency_per_replica", self.target_concurrency_per_replica, "must be > 0"
            )
        for name in ("target_kv_used_fraction", "target_slo_attainment"):
            value = getattr(self, name)
            if not 0.0 < value <= 1.0:
                raise InvalidConfigError(name, value, "must be in (0, 1]")
        for name in ("idle_to_zero_s", "scale_down_delay_s", "drain_s"):
            value = getattr(self, name)
            if not value >= 0:
                raise InvalidConfigError(name, value, "must be >= 0")
        if not self.max_scale_up_factor > 1.0:
            raise InvalidConfigError("max_scale_up_factor", self.max_scale_up_factor, "must be > 1")
        if self.max_scale_down_step < 1:
            raise InvalidConfigError(
                "max_scale_down_step", self.max_scale_down_step, "must be >= 1"
            )


@dataclass(frozen=True, slots=True, kw_only=True)
class DeploymentLoad:
    """What the gateway (live) or the simulator (twin) saw of one deployment, as of a time."""

    num_ready: int  # replicas serving
    num_starting: int = 0  # replicas asked for and not ready yet (cold starts)
    num_queued: int = 0  # requests held in the gateway for this deployment's model
    num_running: int = 0  # requests on its replicas
    kv_used_fraction: float = 0.0  # 0-1, mean over the ready replicas
    slo_attainment: float | None = None  # 0-1, recent requests meeting TTFT and TPOT; None: none
    last_request_s: float | None = None  # when its last request arrived (None: never)
    last_change_s: float | None = None  # when its replica count last changed (None: never)
    quota_replicas: int | None = None  # most replicas the tenant's quota admits (None: no limit)

    def __post_init__(self) -> None:
        for name in ("num_ready", "num_starting", "num_queued", "num_running"):
            if getattr(self, name) < 0:
                raise InvalidConfigError(name, getattr(self, name), "must be >= 0")
        if self.quota_replicas is not None and self.quota_replicas < 0:
            raise InvalidConfigError("quota_replicas", self.quota_replicas, "must be >= 0")


@dataclass(frozen=True, slots=True, kw_only=True)
class ScaleDecision:
    """The replica count to ask for, and which signal set it."""

    current: int  # ready + starting when decided
    desired: int
    reason: ScaleReason
    detail: str

    @property
    def delta(self) -> int:
        """Replicas to add (> 0) or stop (< 0)."""
        return self.desired - self.current


def decide_scale(policy: AutoscalePolicy, load: DeploymentLoad, *, now_s: float) -> ScaleDecision:
    """The replica count ``policy`` wants for ``load`` at ``now_s``.

    NOTE(autoscaling): the count that would carry the load is the largest of three asks —
    concurrency (held + running requests over ``target_concurrency_per_replica``), KV pressure
    (ready replicas scaled by KV use over its target) and SLO attainment (one more replica while
    below the target) —, never below one while requests wait or run. Starting replicas count as
    capacity, so a cold start is not asked for twice. Scaling up is immediate but at most
    ``max_scale_up_factor`` a step; scaling down waits ``scale_down_delay_s`` after the last
    change, removes at most ``max_scale_down_step`` a step and never happens while the SLO is
    missed. With ``min_replicas`` 0 an idle deployment (nothing held or running, no request for
    ``idle_to_zero_s``) goes to zero, and requests held at zero ask for a cold start. Bounds:
    ``min_replicas``/``max_replicas``, then the quota (which may be below the minimum).

    Example::

        decision = decide_scale(policy, DeploymentLoad(num_ready=2, num_queued=40), now_s=t)
        if decision.delta: ask_admission(deployment, replicas=decision.desired)
    """
    current = load.num_ready + load.num_starting
    busy = load.num_queued + load.num_running
    want, reason, detail = _wanted(policy, load, now_s, current, busy)
    want, reason, detail = _stepped(policy, load, now_s, current, want, reason, detail)
    if want < policy.min_replicas:
        want, reason = policy.min_replicas, ScaleReason.MIN
        detail = f"held at min_replicas {policy.min_replicas} ({detail})"
    if want > policy.max_replicas:
        want, reason, detail = policy.max_replicas, ScaleReason.MAX, f"max_replicas ({detail})"
    if load.quota_replicas is not None and want > load.quota_replicas:
        want, reason = load.quota_replicas, ScaleReason.QUOTA
        detail = f"the quota admits {load.quota_replicas} ({detail})"
    return ScaleDecision(current=current, desired=want, reason=reason, detail=detail)


def _wanted(
    policy: AutoscalePolicy, load: DeploymentLoad, now_s: float, current: int, busy: int
) -> tuple[int, ScaleReason, str]:
    """The count that would carry the load, before steps and bounds."""
    if busy == 0 and policy.min_replicas == 0:
        idle_s = math.inf if load.last_request_s is None else now_s - load.last_request_s
        if idle_s >= policy.idle_to_zero_s:
            return 0, ScaleReason.IDLE, f"no request for {idle_s:.0f} s"
    if current == 0:
        if busy > 0:
            return 1, ScaleReason.COLD_START, f"{busy} requests held at zero replicas"
        return 0, ScaleReason.HOLD, "no replica and no request"
    by_queue = max(1, math.ceil(busy / policy.target_concurrency_per_replica))  # 1: not idle yet
    asks = [(by_queue, ScaleReason.QUEUE, f"{busy} requests held or running")]
    if load.num_ready and load.kv_used_fraction > policy.target_kv_used_fraction:
        by_kv = math.ceil(load.num_ready * load.kv_used_fraction / policy.target_kv_used_fraction)
        asks.append((by_kv, ScaleReason.KV, f"KV use {load.kv_used_fraction:.2f}"))
    missed = load.slo_attainment is not None and load.slo_attainment < policy.target_slo_attainment
    if missed:
        asks.append((current + 1, ScaleReason.SLO, f"SLO attainment {load.slo_attainment:.2f}"))
    want, reason, detail = max(asks, key=lambda a: a[0])  # ties: the first asked
    if want == current:
        return current, ScaleReason.HOLD, f"load within targets ({detail})"
    return want, reason, detail


def _stepped(
    policy: AutoscalePolicy,
    load: DeploymentLoad,
    now_s: float,
    current: int,
    want: int,
    reason: ScaleReason,
    detail: str,
) -> tuple[int, ScaleReason, str]:
    """Limit one decision to one step; a scale-down waits for its stabilization window."""
    if want > current and current > 0:
        cap = max(current + 1, math.floor(current * policy.max_scale_up_factor))
        if want > cap:
            return cap, ScaleReason.STEP, f"up at most x{policy.max_scale_up_factor:g} ({detail})"
    if want < current and reason is not ScaleReason.IDLE:
        since_s = math.inf if load.last_change_s is None else now_s - load.last_change_s
        if since_s < policy.scale_down_delay_s:
            return current, ScaleReason.HOLD, f"scale-down waits ({since_s:.0f} s since a change)"
        floor = current - policy.max_scale_down_step
        if want < floor:
            return floor, ScaleReason.STEP, f"down at most {policy.max_scale_down_step} ({detail})"
    return want, reason, detail
