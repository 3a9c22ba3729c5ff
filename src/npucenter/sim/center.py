"""The whole center on virtual time: replicas of many models and devices, a router per service,
disaggregated prefill/decode, power and energy of every card (busy or idle).

Event-driven: one heap of replica wake-ups and KV hand-offs, merged with the sorted arrivals;
no wall clock. The routing policies are the same objects the live gateway calls.
"""

from __future__ import annotations

import heapq
import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass

import numpy as np

from npucenter.catalog import Catalog
from npucenter.errors import InvalidConfigError, InvalidRequestError
from npucenter.fleet.placement import place_fleet
from npucenter.fleet.spec import FleetDeployment, FleetSpec
from npucenter.perf import PerfModel, PerfModelCache, idle_power_w
from npucenter.policy.routing import (
    PerfEstimator,
    ReplicaIndex,
    ReplicaState,
    RouteRequest,
    RoutingContext,
    RoutingPolicy,
    RoutingSnapshot,
    make_routing_policy,
)
from npucenter.sim.adapters import TwinAdapters, replica_devices
from npucenter.sim.autoscale import TwinAutoscaler, held_usage
from npucenter.sim.jobs import JobTimeline, simulate_jobs
from npucenter.sim.layout import fleet_perf_models
from npucenter.sim.replica import ReplicaConfig, ReplicaCore, SeqRequest
from npucenter.sim.results import SimResult
from npucenter.workload.slo import distserve_goodput_rps
from npucenter.workload.trace import Trace

__all__ = ["Center", "SimReplica", "build_center", "distserve_goodput"]

# event kinds; at equal times arrivals, then wake-ups, hand-offs, replicas stopped or restarted
_WAKE, _HANDOFF, _CAPACITY, _SCALE = 0, 1, 2, 3  # _SCALE: an autoscaling decision
_LOADED = 4  # a request's LoRA adapter is loaded on its replica (sim/adapters.py)
_BLOCK = 65_536  # requests converted to Python numbers at a time
# pools smaller than this are scanned by the policies (cheaper than keeping ordered views there;
# the decisions are the same either way)
_INDEX_MIN_REPLICAS = 32


@dataclass(slots=True, eq=False)
class SimReplica:
    """One replica in the center: its scheduler, identity and cached routing state."""

    index: int
    replica_id: str
    service: str
    model_id: str
    device_id: str
    device_kind: str
    role: str
    tp: int
    core: ReplicaCore
    perf: PerfModel
    state: ReplicaState
    version: int = 0
    healthy: bool = True  # False while admission has taken the replica away for a job
    board: ReplicaIndex | None = None  # the routing index of the pool the replica is in
    position: int = -1  # its position there (the pool's snapshot order)

    def refresh_state(self) -> None:
        """Rebuild the routing snapshot entry from the scheduler (one entry of its pool's index)."""
        core = self.core
        self.state = ReplicaState(
            replica_id=self.replica_id,
            model_id=self.model_id,
            device_id=self.device_id,
            device_kind=self.device_kind,
            healthy=self.healthy,
            num_running=core.num_running,
            num_waiting=core.num_waiting,
            outstanding_tokens=core.outstanding_tokens,
            queued_prefill_tokens=core.queued_prefill_tokens,
            kv_used_fraction=core.kv_used_fraction,
            max_num_seqs=core.config.max_num_seqs,
        )
        if self.board is not None:
            self.board.update(self.position, self.state)


@dataclass(slots=True, eq=False)
class _ServicePools:
    name: str
    model_id: str
    entry: ReplicaIndex  # where requests arrive: colocated and prefill replicas
    decode: ReplicaIndex  # the decode pool (replicas of role 'decode'), else empty
    policy: RoutingPolicy
    decode_policy: RoutingPolicy | None
    prefill_only: bool = False  # every entry replica prefills only (routed as 1-token requests)
    adapters: TwinAdapters | None = None  # the LoRA adapters its requests name, this run
    estimator: PerfEstimator | None = None  # its routing's perf models, per replica


class Center:
    """A built center, ready to run traces (each :meth:`run` starts from an empty center)."""

    def __init__(
        self,
        fleet: FleetSpec,
        catalog: Catalog,
        *,
        policy: str = "least-outstanding-tokens",
        perf_models: PerfModelCache | None = None,  # shared with other centers of one catalog
        autoscale: bool = True,  # False: every placed replica serves all along (a fixed fleet)
    ) -> None:
        self.fleet = fleet
        self.autoscale = autoscale
        self.catalog = catalog
        self.policy_name = policy
        self._perf = perf_models if perf_models is not None else PerfModelCache(catalog)
        self.unused_cards: dict[str, int] = {}
        self.idle_power_unused_w = 0.0
        self.assumptions: list[str] = []
        self._build_layout()

    # --- construction -------------------------------------------------------------------------
    def _build_layout(self) -> None:
        """Place the replicas by the admission policy and build their perf models, once."""
        perf = fleet_perf_models(self.fleet, self._perf)
        self._perf_by_type = perf  # (deployment index, device type) -> perf model
        self.placement = place_fleet(self.fleet)
        self._layout: list[tuple[str, FleetDeployment, PerfModel]] = [
            (
                p.replica_id,
                self.fleet.deployments[p.deployment_index],
                perf[p.deployment_index, p.device_type],  # where admission put it
            )
            for p in self.placement.replicas
        ]
        self.jobs: JobTimeline | None = None
        if self.fleet.jobs:
            self.jobs = simulate_jobs(self.fleet, self.placement)
            self.assumptions.append("cards running jobs are counted at idle power")
        used = dict(self.placement.unused_cards)
        for pool in self.fleet.servers:
            free = used.get(pool.device, 0)
            self.unused_cards[pool.device] = free
            if free:
                idle_w = idle_power_w(self.catalog.device(pool.device))
                if idle_w is not None:
                    self.idle_power_unused_w += free * idle_w
                else:
                    self.assumptions.append(
                        f"{free} unused {pool.device} cards counted at 0 W (no sourced power)"
                    )
        for pm in dict.fromkeys(pm for _, _, pm in self._layout):  # this fleet's, in order
            for line in pm.assumptions():
                if line not in self.assumptions:
                    self.assumptions.append(line)

    def _fresh(self, timeline_bin_s: float) -> tuple[list[SimReplica], dict[str, _ServicePools]]:
        replicas: list[SimReplica] = []
        for rid, dep, pm in self._layout:
            model = pm.model
            core = ReplicaCore(
                pm,
                ReplicaConfig(
                    max_num_seqs=dep.max_num_seqs,
                    max_num_batched_tokens=dep.max_num_batched_tokens,
                    block_size_tokens=dep.block_size_tokens,
                    enable_chunked_prefill=dep.enable_chunked_prefill,
                    max_model_len_tokens=model.max_context_tokens,
                ),
                record_completions=True,
            )
            core.timeline_bin_s = timeline_bin_s
            rep = SimReplica(
                index=len(replicas),
                replica_id=rid,
                service=dep.service,
                model_id=model.model_id,
                device_id=pm.device.device_id,
                device_kind=pm.device.kind,
                role=dep.role,
                tp=dep.tp,
                core=core,
                perf=pm,
                state=ReplicaState(
                    replica_id=rid,
                    model_id=model.model_id,
                    device_id=pm.device.device_id,
                    device_kind=pm.device.kind,
                ),
            )
            rep.refresh_state()
            replicas.append(rep)
        pools: dict[str, _ServicePools] = {}
        for svc in self.fleet.services:
            mine = [r for r in replicas if r.service == svc.name]
            entry = [r for r in mine if r.role != "decode"]
            decode = [r for r in mine if r.role == "decode"]
            estimator = PerfEstimator({r.replica_id: r.perf for r in mine})
            context = RoutingContext(
                estimator=estimator,
                ttft_slo_s=svc.slo.ttft_s if math.isfinite(svc.slo.ttft_s) else None,
                tpot_slo_s=svc.slo.tpot_s if math.isfinite(svc.slo.tpot_s) else None,
            )
            name = svc.routing or self.policy_name
            pools[svc.name] = _ServicePools(
                name=svc.name,
                model_id=mine[0].model_id,
                entry=_board(entry),
                decode=_board(decode),
                policy=make_routing_policy(name, context),
                decode_policy=make_routing_policy(name, context) if decode else None,
                prefill_only=all(r.role == "prefill" for r in entry),
                estimator=estimator,
            )
        return replicas, pools

    # --- running ------------------------------------------------------------------------------
    def run(
        self,
        trace: Trace,
        *,
        progress: Callable[[int, int], None] | None = None,
        progress_every: int = 2000,
        timeline_bin_s: float | None = None,
    ) -> SimResult:
        """Serve every request of ``trace``; returns per-request records and fleet totals.

        Requests of a service the fleet lacks raise InvalidConfigError; a request no replica can
        hold (too long) or no healthy replica serves is recorded as rejected (a miss).
        """
        n = len(trace)
        if timeline_bin_s is None:
            timeline_bin_s = max(1.0, trace.duration_s / 120.0)
        replicas, pools = self._fresh(timeline_bin_s)
        svc_pools = self._pools_for(trace, pools)
        for number, p in enumerate(svc_pools):
            mix = self.fleet.service(p.name).adapters if p.name in pools else None
            if mix is not None:
                devices = replica_devices(replicas, p.name)
                p.adapters = TwinAdapters(p.name, mix, trace.service_index, number, devices)
        scaler = None
        if self.autoscale and any(d.autoscale is not None for d in self.fleet.deployments):
            scaler = TwinAutoscaler(
                self.fleet.deployments,
                replicas,
                {p.name: p for p in svc_pools},
                slos={svc.name: svc.slo for svc in self.fleet.services},
            )
        loop = _Loop(
            self.fleet,
            trace,
            replicas,
            svc_pools,
            self._capacity_events(),
            autoscaler=scaler if scaler is not None and scaler.active else None,
        )
        loop.run(progress, progress_every)
        horizon = float(np.nanmax(loop.finish_s)) if np.any(np.isfinite(loop.finish_s)) else 0.0
        horizon = max(horizon, float(trace.arrival_s[-1]) if n else 0.0)
        scaled = loop.autoscaler.finish(loop, horizon) if loop.autoscaler is not None else {}
        held_s = (
            loop.autoscaler.held_seconds(replicas, horizon)
            if loop.autoscaler is not None
            else {r.index: horizon for r in replicas}
        )
        result = SimResult.build(
            trace=trace,
            fleet=self.fleet,
            policy=self.policy_name,
            replicas=replicas,
            replica_index=loop.replica_index,
            first_token_s=loop.first_token_s,
            finish_s=loop.finish_s,
            preemptions=loop.preemptions,
            rejected=loop.rejected,
            simulated_s=horizon,
            timeline_bin_s=timeline_bin_s,
            idle_power_unused_w=self.idle_power_unused_w,
            unused_cards=dict(self.unused_cards),
            assumptions=tuple(self.assumptions),
            num_events=loop.num_events,
        )
        # service -> device type -> replicas placed there (where fungible ones landed)
        result.summary["placement"] = self.placement.devices_by_service(self.fleet)
        if self.jobs is not None:
            result.summary["jobs"] = self.jobs.summary(self.fleet, horizon)
        # the cards the replicas held (all along in a fixed fleet) and their energy meanwhile
        result.summary["held"] = held_usage(replicas, held_s)
        if scaled:
            result.summary["autoscaling"] = scaled
        adapters = {p.name: p.adapters.summary() for p in svc_pools if p.adapters is not None}
        if adapters:
            result.summary["adapters"] = adapters
        return result

    def _capacity_events(self) -> list[tuple[float, int, bool, PerfModel | None]]:
        """(time, replica index, up, its perf model when admitted again on another device type)
        of replicas preempted and readmitted for jobs (a fungible replica chooses its type
        again, as the live center's does)."""
        if self.jobs is None:
            return []
        index = {rid: k for k, (rid, _, _) in enumerate(self._layout)}
        deployment = {p.replica_id: p.deployment_index for p in self.placement.replicas}
        events: list[tuple[float, int, bool, PerfModel | None]] = []
        for outage in self.jobs.outages:
            k = index[outage.replica_id]
            events.append((outage.down_s, k, False, None))
            if outage.up_s is not None:
                pm = None
                if outage.device_type is not None:
                    pm = self._perf_by_type[deployment[outage.replica_id], outage.device_type]
                events.append((outage.up_s, k, True, pm))
        return events

    def _pools_for(self, trace: Trace, pools: Mapping[str, _ServicePools]) -> list[_ServicePools]:
        out = []
        for name in trace.service_names:
            if name in pools:
                out.append(pools[name])
            elif len(pools) == 1 and name == "default":
                out.append(next(iter(pools.values())))
            else:
                raise InvalidConfigError(
                    "trace service",
                    name,
                    f"the fleet serves {sorted(pools)}; split the trace across them",
                )
        return out


class _Loop:
    """One run's mutable state and event loop."""

    def __init__(
        self,
        fleet: FleetSpec,
        trace: Trace,
        replicas: Sequence[SimReplica],
        svc_pools: Sequence[_ServicePools],
        # (time, replica index, up, perf model it comes back with: None or its own)
        capacity: Sequence[tuple[float, int, bool, PerfModel | None]] = (),
        autoscaler: TwinAutoscaler | None = None,
    ) -> None:
        n = len(trace)
        self.fleet = fleet
        self.trace = trace
        self.replicas = replicas
        self.svc_pools = svc_pools
        self.by_id = {r.replica_id: r for r in replicas}
        self.replica_index = np.full(n, -1, dtype=np.int64)
        self.decode_replica_index = np.full(n, -1, dtype=np.int64)
        self.first_token_s = np.full(n, np.nan)
        self.finish_s = np.full(n, np.nan)
        self.preemptions = np.zeros(n, dtype=np.int64)
        self.rejected = np.zeros(n, dtype=bool)
        self.heap: list[tuple[float, int, int, int, int]] = []
        self.seq = 0
        self.num_events = 0
        self.pools_of = {p.name: p for p in svc_pools}
        self.rebinds: list[PerfModel] = []  # a capacity event's b - 2: the perf model it takes
        for t, index, up, pm in capacity:
            self.seq += 1
            code = int(up)
            if up and pm is not None:  # _rebind keeps a replica already on that type
                code = 2 + len(self.rebinds)
                self.rebinds.append(pm)
            heapq.heappush(self.heap, (t, _CAPACITY, self.seq, index, code))
        self.autoscaler = autoscaler
        self.capacity_kind = _CAPACITY
        self.service_number = {p.name: k for k, p in enumerate(svc_pools)}
        if autoscaler is not None:
            autoscaler.start(self, _SCALE, float(trace.arrival_s[-1]) if n else 0.0)

    def run(self, progress: Callable[[int, int], None] | None, every: int) -> None:
        trace = self.trace
        n = len(trace)
        heap = self.heap
        i = 0
        # the arrivals as Python numbers, a block at a time (10 M requests as lists of Python
        # objects would take ~1 GB); arrivals[i - base] is request i's
        base, end = 0, 0
        arrivals: list[float] = []
        while i < n or heap:
            if i >= end and i < n:
                base, end = i, min(n, i + _BLOCK)
                arrivals = trace.arrival_s[base:end].tolist()
                prompts = trace.prompt_tokens[base:end].tolist()
                outputs = trace.output_tokens[base:end].tolist()
                services = trace.service_index[base:end].tolist()
            if heap and (i >= n or heap[0][0] < arrivals[i - base]):
                t, kind, _, a, b = heapq.heappop(heap)
                self.num_events += 1
                if kind == _WAKE:
                    rep = self.replicas[a]
                    if rep.version != b:
                        continue
                    rep.core.advance_until(t, inclusive=True)
                    self._after_sync(rep)
                elif kind == _HANDOFF:
                    self._handoff(a, t)
                elif kind == _SCALE:
                    assert self.autoscaler is not None
                    self.autoscaler.tick(self, self.svc_pools[a].name, t)
                elif kind == _LOADED:
                    self._loaded(a, self.replicas[b], t)
                else:
                    if b >= 2:
                        self._rebind(self.replicas[a], self.rebinds[b - 2])
                    self._set_capacity(self.replicas[a], t, up=bool(b))
                    if b and self.autoscaler is not None:
                        self.autoscaler.on_up(self, self.replicas[a], t)
                continue
            self.num_events += 1
            k = i - base
            self._arrive(i, arrivals[k], prompts[k], outputs[k], self.svc_pools[services[k]])
            i += 1
            if progress is not None and i % every == 0:
                progress(i, n)
        if progress is not None:
            progress(n, n)

    def _arrive(self, idx: int, t: float, prompt: int, output: int, pools: _ServicePools) -> None:
        if self.autoscaler is not None:
            self.autoscaler.saw(pools.name, t)
        board = pools.entry
        adapters = pools.adapters
        adapter = adapters.label(idx) if adapters is not None else -1
        decision = pools.policy.route(
            RoutingSnapshot(now_s=t, replicas=board.states, index=_routing_index(board)),
            RouteRequest(
                request_id=str(idx),
                model_id=pools.model_id,
                prompt_tokens=prompt,
                max_output_tokens=1 if pools.prefill_only else output,
                prefix_hashes=adapters.hashes[adapter] if adapters and adapter >= 0 else (),
            ),
        )
        rep = self.by_id.get(decision.replica_id) if decision.replica_id else None
        if rep is None:
            if self.autoscaler is not None and self.autoscaler.hold(self, idx, t, pools.name):
                return  # held while a replica starts (autoscaled at zero)
            self.rejected[idx] = True
            return
        if adapters is not None and adapter >= 0:
            ready_s = adapters.acquire(rep.index, adapter, t)
            if ready_s > t:  # the gateway loads it on that replica first, then forwards
                self.seq += 1
                heapq.heappush(self.heap, (ready_s, _LOADED, self.seq, idx, rep.index))
                return
        self._enter(idx, t, prompt, output, rep)

    def _loaded(self, idx: int, rep: SimReplica, t: float) -> None:
        """Request ``idx``'s adapter is loaded on ``rep``: it enters the engine now."""
        prompt, output = int(self.trace.prompt_tokens[idx]), int(self.trace.output_tokens[idx])
        if not rep.healthy:  # taken away for a job meanwhile: routed again
            self._arrive(idx, t, prompt, output, self.pools_of[rep.service])
            return
        self._enter(idx, t, prompt, output, rep)

    def _enter(self, idx: int, t: float, prompt: int, output: int, rep: SimReplica) -> None:
        core = rep.core
        core.advance_until(t)
        try:
            core.add(
                SeqRequest(
                    request_id=str(idx),
                    prompt_tokens=prompt,
                    max_output_tokens=1 if rep.role == "prefill" else output,
                    arrival_s=t,
                    index=idx,
                )
            )
        except InvalidRequestError:
            self.rejected[idx] = True
            self._after_sync(rep)
            return
        self.replica_index[idx] = rep.index
        self._after_sync(rep)

    def _after_sync(self, rep: SimReplica) -> None:
        core = rep.core
        if core.completions:
            prefill_only = rep.role == "prefill"
            front_s = rep.perf.request_overhead_s  # the engine's front end, once per request
            for c in core.completions:
                idx = c.index
                self.preemptions[idx] += c.num_preemptions
                if not math.isnan(c.first_token_s) and math.isnan(self.first_token_s[idx]):
                    self.first_token_s[idx] = c.first_token_s + front_s
                if prefill_only and self.trace.output_tokens[idx] > 1:
                    delay = self._transfer_s(rep, int(self.trace.prompt_tokens[idx]))
                    self.seq += 1
                    heapq.heappush(self.heap, (c.finish_s + delay, _HANDOFF, self.seq, idx, 0))
                else:
                    self.finish_s[idx] = c.finish_s + front_s
                    if self.autoscaler is not None:  # the SLO attainment it scales on
                        self.autoscaler.done(self, rep.service, idx, c.finish_s)
            core.completions.clear()
        rep.refresh_state()
        when = core.next_event_s()
        rep.version += 1
        if when is not None:
            self.seq += 1
            heapq.heappush(self.heap, (when, _WAKE, self.seq, rep.index, rep.version))

    def _set_capacity(self, rep: SimReplica, t: float, *, up: bool) -> None:
        """Take a replica preempted by admission out of routing, or put it back.

        Its requests fail like the live gateway's: one without a first token is routed again
        (the gateway's retry), one already streaming is lost (a rejection).
        """
        pools = self.pools_of.get(rep.service)
        if pools is None:  # a service without traffic in this trace
            return
        rep.healthy = up  # routing skips an unhealthy replica, in its place in the pool's order
        if pools.adapters is not None:  # its engine stops: it comes back with no adapter
            pools.adapters.forget(rep.index)
        if up:
            rep.refresh_state()
            return
        rep.core.advance_until(t)
        self._after_sync(rep)
        for idx, first_token_s in rep.core.evict():
            self.replica_index[idx] = -1
            if math.isnan(first_token_s) and rep.role != "decode":
                trace = self.trace
                prompt, output = int(trace.prompt_tokens[idx]), int(trace.output_tokens[idx])
                self._arrive(idx, t, prompt, output, pools)
            else:
                self.rejected[idx] = True
        self._after_sync(rep)

    def _rebind(self, rep: SimReplica, pm: PerfModel) -> None:
        """A replica admitted again on another device type serves at that type's speed (its
        engine restarts there: nothing in flight; one that kept work keeps its type)."""
        if rep.core.has_work or pm is rep.perf:
            return
        rep.core.rebind(pm)
        rep.perf = pm
        rep.device_id = pm.device.device_id
        rep.device_kind = pm.device.kind
        pools = self.pools_of.get(rep.service)
        if pools is not None and pools.estimator is not None:
            pools.estimator.set_model(rep.replica_id, pm)

    def _transfer_s(self, rep: SimReplica, prompt_tokens: int) -> float:
        kv_bytes = rep.perf.kv_bytes_per_token * prompt_tokens
        return self.fleet.network_latency_s + kv_bytes / (self.fleet.network_gb_per_s * 1e9)

    def _handoff(self, idx: int, t: float) -> None:
        pools = self.svc_pools[int(self.trace.service_index[idx])]
        assert pools.decode_policy is not None
        prompt = int(self.trace.prompt_tokens[idx])
        output = int(self.trace.output_tokens[idx])
        board = pools.decode
        decision = pools.decode_policy.route(
            RoutingSnapshot(now_s=t, replicas=board.states, index=_routing_index(board)),
            RouteRequest(
                request_id=str(idx),
                model_id=pools.model_id,
                prompt_tokens=prompt,
                max_output_tokens=output,
            ),
        )
        rep = self.by_id.get(decision.replica_id) if decision.replica_id else None
        if rep is None:
            if self.autoscaler is not None and self.autoscaler.hold_handoff(
                self, idx, t, pools.name
            ):
                return  # held while a decode replica starts (its pool autoscaled at zero)
            self.rejected[idx] = True
            return
        rep.core.advance_until(t)
        try:
            rep.core.add(
                SeqRequest(
                    request_id=str(idx),
                    prompt_tokens=prompt,
                    max_output_tokens=output,
                    arrival_s=t,
                    index=idx,
                    num_computed_tokens=prompt,
                    num_output_tokens=1,
                )
            )
        except InvalidRequestError:
            self.rejected[idx] = True
        else:
            self.decode_replica_index[idx] = rep.index
        self._after_sync(rep)


def _routing_index(board: ReplicaIndex) -> ReplicaIndex | None:
    """The index a policy may answer from (None: scan the snapshot)."""
    return board if len(board) >= _INDEX_MIN_REPLICAS else None


def _board(replicas: Sequence[SimReplica]) -> ReplicaIndex:
    """The routing index of a pool, which its replicas keep current from now on."""
    board = ReplicaIndex([r.state for r in replicas])
    for position, rep in enumerate(replicas):
        rep.board, rep.position = board, position
    return board


def build_center(
    fleet: FleetSpec, catalog: Catalog, *, policy: str = "least-outstanding-tokens"
) -> Center:
    """A center for ``fleet`` (raises the perf model's errors for deployments that cannot run)."""
    make_routing_policy(policy)  # fail early on an unknown name
    return Center(fleet, catalog, policy=policy)


def distserve_goodput(
    center: Center,
    trace: Trace,
    *,
    target_fraction: float = 0.9,
    low_scale: float = 0.25,
    high_scale: float = 16.0,
    rel_tol: float = 0.05,
) -> float:
    """DistServe goodput of ``center`` on ``trace``: the highest request rate (req/s) at which at
    least ``target_fraction`` of requests meet their SLO, replaying the trace rate-scaled."""
    base = trace.mean_rate_rps
    if not base > 0:
        raise InvalidConfigError("trace", trace.name, "needs at least two requests over time")

    def attainment_at(rate_rps: float) -> float:
        return float(center.run(trace.scale_rate(rate_rps / base)).summary["slo_attainment"])

    return distserve_goodput_rps(
        attainment_at,
        low_rps=base * low_scale,
        high_rps=base * high_scale,
        target_fraction=target_fraction,
        rel_tol=rel_tol,
    )
