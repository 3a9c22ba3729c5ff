"""Autoscaling in the twin: the live center's policy on virtual time, with cold starts.

A service whose fleet entry names ``min_replicas``/``max_replicas``/``autoscale:`` is scaled by
:func:`npucenter.policy.autoscaling.decide_scale` (the function the live center's leader runs)
every ``interval_s`` of virtual time, and at once when a request arrives at zero replicas. The
replicas the fleet places for it are the most it can have (its quota in the twin); the ones
not wanted are off: not routed, and their cards are not held (not counted in card-hours nor in
the held energy). A replica asked for serves after its engine's cold start
(:data:`COLD_START_S`); requests that arrive with no replica serving are held while one starts
and rejected after ``hold_s`` (the gateway's bound). A replica scaled down drains like the live
center's (the replicas with the fewest requests in flight are chosen): routing sends it nothing
new at once, its requests finish, and its cards are released when it has none (seen at the next
decision, ``interval_s``) or after the policy's ``drain_s``, when the requests still on it are
cancelled like a replica taken for a job (those without a first token go elsewhere, streaming
ones are lost) and counted (``drain_cancelled``). A scale-up while replicas drain serves again
on those first, like the live center (``revived``): on their cards, with their requests going
on, no cold start; only the rest start cold.

A disaggregated service is scaled pool by pool with the same policy (each role's deployment
gives its own ``min_replicas``/``max_replicas``/``autoscale:``) on the signals that pool owns:
the prefill pool on its queue (requests waiting and prefilling) and TTFT attainment, the
decode pool on its KV-cache use, its sequences (running and waiting) and TPOT attainment. A
hand-off that finds no decode replica serving is held while one starts, like a request at
zero replicas (then rejected after ``hold_s``).
"""

from __future__ import annotations

import heapq
import math
from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from npucenter.fleet.spec import FleetDeployment
from npucenter.policy.autoscaling import AutoscalePolicy, DeploymentLoad, decide_scale

__all__ = ["COLD_START_S", "COLD_START_SOURCES", "TwinAutoscaler", "held_usage"]

#: Seconds from asking for a replica to its engine serving, per engine (the fleet's ``engine``).
COLD_START_S: dict[str, float] = {"virtual": 1.0, "vllm": 35.0}
COLD_START_SOURCES: dict[str, str] = {
    "virtual": "measured on this machine: python -m npucenter.engines.virtual until /v1/models "
    "answers, 0.98-1.56 s over 3 starts (2 shared vCPUs, load 6-10)",
    "vllm": "measured on this machine: vLLM's CPU build ready 35-135 s after launch depending on "
    "load (docs/engines.md); the lower end",
}
_DEFAULT_ENGINE = "virtual"


@dataclass(slots=True, eq=False)
class _Scaled:
    """One scaled pool: a colocated service's replicas, or one role of a disaggregated one."""

    service: str
    role: str  # "both" | "prefill" | "decode"
    pools: Any  # the center's _ServicePools
    policy: AutoscalePolicy
    replicas: list[Any]  # SimReplica, the ones it may turn on
    cold_start_s: float
    starting: dict[int, float] = field(default_factory=dict)  # replica index -> ready at
    draining: dict[int, float] = field(default_factory=dict)  # replica index -> drain bound at
    held: deque[tuple[int, float]] = field(default_factory=deque)  # (request index, since)
    last_request_s: float | None = None
    last_change_s: float | None = None
    ttft_limit_s: float = math.inf  # the latency this pool answers for (prefill: TTFT only)
    tpot_limit_s: float = math.inf  # (decode: TPOT only; colocated: both)
    num_done: int = 0  # requests finished since the last decision
    num_met: int = 0  # of which met this pool's part of the SLO
    num_up: int = 0
    num_down: int = 0
    num_held: int = 0
    num_drained: int = 0  # drains that ended with no request left
    num_drain_cancelled: int = 0  # requests still running at a drain's bound
    num_revived: int = 0  # draining replicas wanted again before their drain ended
    peak: int = 0  # most replicas on (serving or starting) at once

    @property
    def name(self) -> str:
        """The summary's key: the service, with the role when disaggregated."""
        return self.service if self.role == "both" else f"{self.service}/{self.role}"

    @property
    def is_entry(self) -> bool:
        """Whether requests arrive here (colocated or prefill), not hand-offs (decode)."""
        return self.role != "decode"


class TwinAutoscaler:
    """Scales a run's autoscaled services, pool by pool (one per :meth:`Center.run`)."""

    def __init__(
        self,
        deployments: Sequence[FleetDeployment],
        replicas: Sequence[Any],
        pools: dict[str, Any],
        *,
        interval_s: float = 2.0,
        hold_s: float = 60.0,
        now_s: float = 0.0,
        slos: dict[str, Any] | None = None,  # service -> Slo (ttft_s, tpot_s)
    ) -> None:
        self.interval_s = interval_s
        self.hold_s = hold_s
        self.on_since: dict[int, float] = {}  # replica index -> when its cards were taken
        self.on_s: dict[int, float] = {}  # replica index -> seconds held so far
        self.services: dict[str, list[_Scaled]] = {}  # service -> its scaled pools
        self._tick_pending: set[str] = set()
        for dep in deployments:
            if dep.autoscale is None or dep.service not in pools:
                continue
            if any(p.role == dep.role for p in self.services.get(dep.service, [])):
                continue
            mine = [r for r in replicas if r.service == dep.service and r.role == dep.role]
            if not mine:
                continue
            slo = (slos or {}).get(dep.service)
            ttft = float(getattr(slo, "ttft_s", math.inf))
            tpot = float(getattr(slo, "tpot_s", math.inf))
            self.services.setdefault(dep.service, []).append(
                _Scaled(
                    service=dep.service,
                    role=dep.role,
                    pools=pools[dep.service],
                    policy=dep.autoscale,
                    replicas=mine,
                    cold_start_s=COLD_START_S.get(dep.engine, COLD_START_S[_DEFAULT_ENGINE]),
                    ttft_limit_s=math.inf if dep.role == "decode" else ttft,
                    tpot_limit_s=math.inf if dep.role == "prefill" else tpot,
                )
            )
        for svc in self._all():  # start at the minimum (at least one), warm
            first = min(len(svc.replicas), max(1, svc.policy.min_replicas))
            svc.peak = first
            for k, rep in enumerate(svc.replicas):
                if k < first:
                    self.on_since[rep.index] = now_s
                else:
                    rep.healthy = False
                    rep.refresh_state()

    @property
    def active(self) -> bool:
        """Whether any service is scaled."""
        return bool(self.services)

    def _all(self) -> list[_Scaled]:
        return [p for pools in self.services.values() for p in pools]

    def _pool(self, service: str, *, entry: bool) -> _Scaled | None:
        for p in self.services.get(service, []):
            if p.is_entry == entry:
                return p
        return None

    # --- hooks the center's loop calls ----------------------------------------------------------

    def start(self, loop: Any, kind: int, until_s: float) -> None:
        """Schedule each service's first decision."""
        self._kind = kind
        self._until_s = until_s
        for name in self.services:
            self._push(loop, 0.0, name)

    def saw(self, service: str, t: float) -> None:
        """A request for ``service`` arrived at ``t``."""
        for p in self.services.get(service, []):
            if p.is_entry:
                p.last_request_s = t

    def done(self, loop: Any, service: str, idx: int, finish_s: float) -> None:
        """Request ``idx`` of ``service`` finished: count, per pool, whether it met its part."""
        pools = self.services.get(service)
        if not pools:
            return
        first = loop.first_token_s[idx]
        ttft = first - loop.trace.arrival_s[idx]
        out = int(loop.trace.output_tokens[idx])
        tpot = (finish_s - first) / (out - 1) if out > 1 else 0.0
        for p in pools:
            p.num_done += 1
            if ttft <= p.ttft_limit_s and tpot <= p.tpot_limit_s:
                p.num_met += 1

    def hold(self, loop: Any, idx: int, t: float, service: str) -> bool:
        """Hold a request no replica took (True), asking for a cold start; False: not ours."""
        return self._hold(loop, self._pool(service, entry=True), idx, t)

    def hold_handoff(self, loop: Any, idx: int, t: float, service: str) -> bool:
        """Hold a prefilled request no decode replica took (True); False: not ours."""
        return self._hold(loop, self._pool(service, entry=False), idx, t)

    def _hold(self, loop: Any, svc: _Scaled | None, idx: int, t: float) -> bool:
        if svc is None or any(r.healthy for r in svc.replicas):
            return False
        svc.held.append((idx, t))
        svc.num_held += 1
        svc.last_request_s = t
        if not svc.starting and svc.service not in self._tick_pending:
            self._push(loop, t, svc.service)  # decide now: a cold start
        return True

    def on_up(self, loop: Any, rep: Any, t: float) -> None:
        """A replica finished its cold start: serve what was held."""
        svc = next((p for p in self.services.get(rep.service, []) if p.role == rep.role), None)
        if svc is None or svc.starting.pop(rep.index, None) is None:
            return
        self._serve_held(loop, svc, t)

    def _serve_held(self, loop: Any, svc: _Scaled, t: float) -> None:
        """A replica of ``svc`` serves again: the requests held for one go to it."""
        trace = loop.trace
        while svc.held:
            idx, since = svc.held.popleft()
            if t - since > self.hold_s:
                loop.rejected[idx] = True
                continue
            if not svc.is_entry:
                loop._handoff(idx, t)  # its KV is there: decode it
                continue
            prompt, output = int(trace.prompt_tokens[idx]), int(trace.output_tokens[idx])
            loop._arrive(idx, t, prompt, output, svc.pools)

    def tick(self, loop: Any, service: str, t: float) -> None:
        """One decision per pool of ``service`` at ``t``; the next one is scheduled."""
        self._tick_pending.discard(service)
        for svc in self.services[service]:
            self._drain(loop, svc, t)
            if t - self.interval_s < self._until_s:  # after the trace: only drains end
                self._decide(loop, svc, t)
        if t < self._until_s or any(p.draining for p in self.services[service]):
            self._push(loop, t + self.interval_s, service)

    def _drain(self, loop: Any, svc: _Scaled, t: float) -> None:
        """Stop the draining replicas that have no request left, or whose bound has come."""
        for index, bound_s in list(svc.draining.items()):
            rep = loop.replicas[index]
            rep.core.advance_until(t)
            loop._after_sync(rep)
            left = rep.core.num_running + rep.core.num_waiting
            if left and t < bound_s:
                continue
            del svc.draining[index]
            if left:  # the bound: cancelled (retried elsewhere before a first token, else lost)
                svc.num_drain_cancelled += left
            else:
                svc.num_drained += 1
            loop._set_capacity(rep, t, up=False)  # its engine stops (its adapters go with it)
            self.on_s[index] = self.on_s.get(index, 0.0) + t - self.on_since.pop(index, t)

    def _decide(self, loop: Any, svc: _Scaled, t: float) -> None:
        on = [r for r in svc.replicas if r.healthy]
        for rep in on:
            rep.core.advance_until(t)
            loop._after_sync(rep)
        running = sum(r.core.num_running for r in on)
        waiting = sum(r.core.num_waiting for r in on) + len(svc.held)
        if running or waiting:
            svc.last_request_s = t
        # prefill scales on its queue and TTFT; decode (and colocated) on KV use too
        kv = sum(r.core.kv_used_fraction for r in on) / len(on) if on else 0.0
        load = DeploymentLoad(
            num_ready=len(on),
            num_starting=len(svc.starting),
            num_queued=waiting,
            num_running=running,
            kv_used_fraction=0.0 if svc.role == "prefill" else kv,
            slo_attainment=svc.num_met / svc.num_done if svc.num_done else None,
            last_request_s=svc.last_request_s,
            last_change_s=svc.last_change_s,
            quota_replicas=len(svc.replicas),
        )
        svc.num_done = svc.num_met = 0
        decision = decide_scale(svc.policy, load, now_s=t)
        if decision.delta > 0:
            # the live center's choice: those still draining serve again first, on their cards,
            # with their requests (no cold start); then replicas that are off start
            revived = [r for r in svc.replicas if r.index in svc.draining][: decision.delta]
            for rep in revived:
                del svc.draining[rep.index]
                rep.healthy = True
                rep.refresh_state()
            svc.num_revived += len(revived)
            off = [
                r
                for r in svc.replicas
                if not r.healthy and r.index not in svc.starting and r.index not in svc.draining
            ][: decision.delta - len(revived)]
            for rep in off:
                svc.starting[rep.index] = t + svc.cold_start_s
                self.on_since[rep.index] = t  # its cards are held while it loads
                loop.seq += 1
                heapq.heappush(
                    loop.heap, (t + svc.cold_start_s, loop.capacity_kind, loop.seq, rep.index, 1)
                )
            svc.num_up += len(revived) + len(off)
            svc.last_change_s = t
            if revived:
                self._serve_held(loop, svc, t)
        elif decision.delta < 0:
            # the live center's choice: the fewest requests in flight (then the least work)
            fewest = sorted(
                on,
                key=lambda r: (
                    r.core.num_running + r.core.num_waiting,
                    r.core.outstanding_tokens,
                    -r.index,
                ),
            )
            for rep in fewest[: -decision.delta]:
                rep.healthy = False  # routing sends it nothing new; its requests go on
                rep.refresh_state()
                svc.draining[rep.index] = t + svc.policy.drain_s
                svc.num_down += 1
            self._drain(loop, svc, t)  # one with nothing in flight stops now
            svc.last_change_s = t
        svc.peak = max(svc.peak, sum(1 for r in svc.replicas if r.healthy) + len(svc.starting))

    def finish(self, loop: Any, horizon_s: float) -> dict[str, Any]:
        """Close the books at ``horizon_s``: held requests never served are rejected."""
        for svc in self._all():
            while svc.held:
                loop.rejected[svc.held.popleft()[0]] = True
        for index, since in list(self.on_since.items()):
            self.on_s[index] = self.on_s.get(index, 0.0) + max(0.0, horizon_s - since)
        self.on_since.clear()
        return {
            svc.name: {
                "min_replicas": svc.policy.min_replicas,
                "max_replicas": min(svc.policy.max_replicas, len(svc.replicas)),
                "cold_start_s": svc.cold_start_s,
                "scale_ups": svc.num_up,
                "scale_downs": svc.num_down,
                "held_requests": svc.num_held,
                "drained": svc.num_drained,
                "drain_cancelled": svc.num_drain_cancelled,
                "revived": svc.num_revived,
                "peak_replicas": svc.peak,
            }
            for svc in self._all()
        }

    def held_seconds(self, replicas: Sequence[Any], horizon_s: float) -> dict[int, float]:
        """Seconds each replica held its cards (a replica not scaled: the whole run)."""
        scaled = {r.index for svc in self._all() for r in svc.replicas}
        return {
            r.index: (self.on_s.get(r.index, 0.0) if r.index in scaled else horizon_s)
            for r in replicas
        }

    def _push(self, loop: Any, t: float, service: str) -> None:
        self._tick_pending.add(service)
        loop.seq += 1
        heapq.heappush(loop.heap, (t, self._kind, loop.seq, loop.service_number[service], 0))


def held_usage(replicas: Sequence[Any], held_s: dict[int, float]) -> dict[str, float]:
    """Card-hours held by the replicas and their energy over that time (busy energy plus idle
    power for the rest of the time held; cards not held are counted at 0 W: released)."""
    card_h = sum(r.tp * held_s[r.index] for r in replicas) / 3600.0
    energy = sum(
        r.core.energy_j + r.perf.idle_power_w * max(0.0, held_s[r.index] - r.core.busy_s)
        for r in replicas
    )
    return {"card_hours": card_h, "energy_j": energy}
