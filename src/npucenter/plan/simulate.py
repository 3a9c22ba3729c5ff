"""Simulator-backed planning: per-replica profiles by bisection on rate, and plan verification.

Both run the simulator's whole-center model (:class:`npucenter.sim.center.Center`: continuous
batching, chunked prefill, paged KV, preemption, disaggregated prefill/decode, the live routing
policies) with step times from the performance model, on each service's own trace (or a
synthetic Poisson stream). Deterministic for a seed; no I/O.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import replace
from typing import Any

import numpy as np

from npucenter.catalog import Catalog
from npucenter.fleet.spec import FleetDeployment, FleetService, FleetSpec, ServerPool
from npucenter.perf import PerfModelCache
from npucenter.plan.milp import Allocation
from npucenter.plan.planner import Verification
from npucenter.plan.profile import AnalyticProfile, Candidate, TrafficStats
from npucenter.plan.spec import PlanSpec, ServiceSpec
from npucenter.plan.traffic import service_trace
from npucenter.sim.center import Center
from npucenter.workload.slo import Slo
from npucenter.workload.trace import Trace, merge_traces

__all__ = [
    "CenterVerifier",
    "SimProfile",
    "poisson_like",
    "service_stream",
]


def service_stream(
    service: ServiceSpec,
    *,
    seed: int = 0,
    max_requests: int | None = None,
    synthetic_duration_s: float = 600.0,
) -> Trace:
    """The service's requests: its trace at ``rate_scale``, or a seeded Poisson stream."""
    trace = service_trace(service.traffic)
    if trace is None:
        t = service.traffic
        assert t.rate_rps is not None and t.mean_input_tokens and t.mean_output_tokens
        rate = t.rate_rps * t.rate_scale
        rng = np.random.default_rng(seed)
        n = max(2, int(rate * synthetic_duration_s))
        if max_requests is not None:
            n = min(n, max_requests)
        arrivals = np.cumsum(rng.exponential(1.0 / rate, size=n))
        trace = Trace(
            name=f"poisson-{service.name}",
            arrival_s=arrivals - arrivals[0],
            prompt_tokens=np.full(n, max(1, round(t.mean_input_tokens)), dtype=np.int64),
            output_tokens=np.full(n, max(1, round(t.mean_output_tokens)), dtype=np.int64),
            source="synthetic Poisson",
        )
    if max_requests is not None and len(trace) > max_requests:
        trace = trace.head(max_requests)
    return trace


def poisson_like(trace: Trace, num_requests: int, *, seed: int = 0) -> Trace:
    """A Poisson stream (mean rate of ``trace``) of ``num_requests`` with the trace's lengths."""
    rng = np.random.default_rng(seed)
    n = max(2, num_requests)
    rows = rng.integers(0, len(trace), size=n)
    rate = max(trace.mean_rate_rps, 1e-9)
    arrivals = np.cumsum(rng.exponential(1.0 / rate, size=n))
    return Trace(
        name=f"{trace.name}-poisson",
        arrival_s=arrivals - arrivals[0],
        prompt_tokens=trace.prompt_tokens[rows],
        output_tokens=trace.output_tokens[rows],
        source=f"Poisson arrivals with lengths resampled from {trace.name}",
    )


class SimProfile:
    """Profile = highest rate at which one replica (or unit) meets the SLO in simulation.

    The stream is Poisson with the service's own token lengths (resampled from its trace):
    burstiness is a property of the whole service, which a pooled fleet absorbs better than one
    replica, so it is left to the verification on the real trace. Bisection on the rate
    (geometric), bracketed around the analytic estimate; ``iterations`` halvings of the bracket.
    Each trial runs the simulator's whole-center model (:class:`npucenter.sim.center.Center`) on
    a one-unit fleet; a unit's KV hand-off takes ``kv_link_gbps`` and no extra latency.
    """

    def __init__(
        self,
        catalog: Catalog,
        spec: PlanSpec,
        *,
        traffic: Mapping[str, TrafficStats] | None = None,
        max_requests: int = 1500,  # 600 drifts ~10 % from 3000; 1500 stays within ~4 %
        iterations: int = 7,
        seed: int = 0,
    ) -> None:
        self.catalog = catalog
        self.spec = spec
        self.max_requests = max_requests
        self.iterations = iterations
        self.seed = seed
        self.perf = PerfModelCache(catalog)
        self._streams = {
            s.name: _labelled(
                s.name, poisson_like(service_stream(s, seed=seed), max_requests, seed=seed)
            )
            for s in spec.services
        }
        self.analytic = AnalyticProfile(catalog, traffic) if traffic is not None else None
        self.num_simulations = 0

    @staticmethod
    def describe() -> str:
        """How the profiles were made (printed in reports)."""
        return (
            "simulator (sim.center, one unit) bisection on replay rate, bracketed by the perf model"
        )

    @staticmethod
    def fleet_for(service: ServiceSpec, candidate: Candidate) -> FleetSpec:
        """One replica or unit of ``candidate`` as a fleet (hand-off: the unit's link, no latency)."""
        return _fleet(
            f"{service.name}-profile",
            [(service, candidate, 1)],
            network_gb_per_s=candidate.kv_link_gbps if candidate.disaggregated else None,
            network_latency_s=0.0,
        )

    def max_rate_rps(self, service: ServiceSpec, candidate: Candidate) -> float:
        """Highest replay rate at which the candidate meets ``service.slo`` in simulation."""
        stream = self._streams[service.name]
        base_rate = max(stream.mean_rate_rps, 1e-9)
        guess = (
            self.analytic.max_rate_rps(service, candidate)
            if self.analytic is not None
            else base_rate
        )
        if guess <= 0:
            guess = base_rate
        center = Center(self.fleet_for(service, candidate), self.catalog, perf_models=self.perf)

        def ok(rate: float) -> bool:
            self.num_simulations += 1
            res = center.run(stream.scale_rate(rate / base_rate))
            return float(res.summary["slo_attainment"]) >= service.slo.attainment_fraction

        low, high = guess * 0.5, guess * 1.5
        while not ok(low):
            high, low = low, low * 0.5
            if low < guess * 1e-3:
                return 0.0
        while ok(high):
            low, high = high, high * 1.5
            if high > guess * 1e3:
                return low
        for _ in range(self.iterations):
            mid = math.sqrt(low * high)
            if ok(mid):
                low = mid
            else:
                high = mid
        return low


class CenterVerifier:
    """Verification on the simulator's whole-center model (:class:`npucenter.sim.center.Center`).

    The plan becomes a fleet: one server pool per device type holding exactly the cards the
    replicas use (server boundaries do not change the simulation), one deployment per candidate
    (a disaggregated unit: a prefill and a decode deployment; a service may mix colocated
    replicas and units), the services' traces merged, routed by the same policy objects the live
    gateway uses. A service the allocation gives no replica misses every request.
    """

    def __init__(
        self,
        catalog: Catalog,
        spec: PlanSpec,
        *,
        routing: str | None = None,
        max_requests: int | None = None,
        seed: int = 0,
    ) -> None:
        self.catalog = catalog
        self.routing = routing or spec.verification.routing
        self.perf = PerfModelCache(catalog)
        limit = max_requests if max_requests is not None else spec.verification.max_requests
        #: each service's requests (its trace or a seeded Poisson stream), labelled with its name
        self.streams = {
            s.name: _labelled(s.name, service_stream(s, seed=seed, max_requests=limit))
            for s in spec.services
        }
        self._name = f"{spec.name}-traffic"
        self._traces: dict[tuple[str, ...], Trace] = {}  # served services -> merged trace
        link = [d.kv_link_gbps for d in spec.disaggregation]
        self.network_gb_per_s = min(link) if link else 12.5
        self.num_simulations = 0
        self._cache: dict[tuple[tuple[str, int], ...], Verification] = {}

    @staticmethod
    def describe() -> str:
        """How plans are verified (printed in reports)."""
        return "simulator whole-center model (npucenter.sim.center) on the merged traces"

    def trace_for(self, services: Sequence[str]) -> Trace:
        """The merged requests of ``services`` (in the spec's order), made once per set."""
        key = tuple(services)
        trace = self._traces.get(key)
        if trace is None:
            trace = merge_traces([self.streams[name] for name in key], name=self._name)
            self._traces[key] = trace
        return trace

    def verify(
        self, spec: PlanSpec, allocation: Allocation, candidates: Mapping[str, Candidate]
    ) -> Verification:
        """Run the plan's fleet on every service's traffic; attainment per service."""
        key = tuple(sorted((k, v) for k, v in allocation.replicas.items() if v > 0))
        if key in self._cache:
            return self._cache[key]
        fleet = self.fleet_for(spec, allocation, candidates)
        summary: Mapping[str, Any] = {}
        if fleet is not None:
            self.num_simulations += 1
            served = [s.name for s in fleet.services]
            center = Center(fleet, self.catalog, policy=self.routing, perf_models=self.perf)
            summary = center.run(self.trace_for(served)).summary
        services = summary.get("services", {})
        attainment: dict[str, float] = {}
        notes: list[str] = []
        for svc in spec.services:
            info = services.get(svc.name)
            if info is None:
                attainment[svc.name] = 0.0
                notes.append(f"{svc.name}: no replica, every request missed")
                continue
            attainment[svc.name] = float(info["slo_attainment"])
            notes.append(
                f"{svc.name}: {info['completed']}/{info['requests']} completed, "
                f"p90 TTFT {info['ttft_s']['p90']:.3f} s, "
                f"p90 TPOT {info['tpot_s']['p90'] * 1e3:.1f} ms"
            )
        if fleet is None:
            check = Verification(slo_attainment=attainment, notes=tuple(notes))
            self._cache[key] = check
            return check
        energy = summary.get("energy_j_per_output_token")
        check = Verification(
            slo_attainment=attainment,
            energy_j_per_output_token=(
                float(energy) if energy is not None and math.isfinite(energy) else None
            ),
            mean_power_w=float(summary["mean_power_w"]),
            simulated_requests=int(summary["requests"]),
            notes=(*notes, f"routing {self.routing}; energy includes idle replicas"),
        )
        self._cache[key] = check
        return check

    def fleet_for(
        self, spec: PlanSpec, allocation: Allocation, candidates: Mapping[str, Candidate]
    ) -> FleetSpec | None:
        """The plan as a simulator fleet (services without replicas left out; None: no replica)."""
        units = [
            (svc, candidates[label], n)
            for svc in spec.services
            for label, n in sorted(allocation.replicas.items())
            if n > 0 and candidates[label].service == svc.name
        ]
        if not units:
            return None
        return _fleet(f"{spec.name}-plan", units, network_gb_per_s=self.network_gb_per_s)


def _fleet(
    name: str,
    units: Sequence[tuple[ServiceSpec, Candidate, int]],  # (service, candidate, count)
    *,
    network_gb_per_s: float | None = None,  # None: the fleet default
    network_latency_s: float | None = None,  # None: the fleet default
) -> FleetSpec:
    """``units`` as a simulator fleet: one pool per device holding exactly the cards they use."""
    deployments = [dep for svc, cand, n in units for dep in _deployments(svc, cand, n)]
    cards: dict[str, int] = {}
    for dep in deployments:
        cards[dep.device] = cards.get(dep.device, 0) + dep.tp * dep.replicas_per_server
    services = {
        svc.name: FleetService(name=svc.name, model=svc.model, slo=_slo(svc)) for svc, _, _ in units
    }
    fleet = FleetSpec(
        name=name,
        servers=tuple(
            ServerPool(device=dev, num_servers=1, cards_per_server=n)
            for dev, n in sorted(cards.items())
        ),
        deployments=tuple(deployments),
        services=tuple(services.values()),
    )
    if network_gb_per_s is not None:
        fleet = replace(fleet, network_gb_per_s=network_gb_per_s)
    if network_latency_s is not None:
        fleet = replace(fleet, network_latency_s=network_latency_s)
    return fleet


def _deployments(svc: ServiceSpec, cand: Candidate, count: int) -> list[FleetDeployment]:
    """``count`` replicas (or units: one prefill replica and its decoders) of ``cand``."""
    colocated = FleetDeployment(
        service=svc.name,
        model=svc.model,
        device=cand.device_id,
        precision=cand.precision,
        tp=cand.tp,
        replicas_per_server=count,
    )
    if cand.prefill_device_id is None:
        return [colocated]
    return [
        replace(colocated, device=cand.prefill_device_id, tp=cand.prefill_tp, role="prefill"),
        replace(colocated, replicas_per_server=count * cand.decode_per_prefill, role="decode"),
    ]


def _slo(service: ServiceSpec) -> Slo:
    """The service's limits as the simulator's SLO (both verifiers score against this)."""
    return Slo(name=service.name, ttft_s=service.slo.ttft_s, tpot_s=service.slo.tpot_s)


def _labelled(service: str, trace: Trace) -> Trace:
    """``trace``'s requests, all of ``service`` (what the center routes by)."""
    return Trace(
        name=service,
        arrival_s=trace.arrival_s,
        prompt_tokens=trace.prompt_tokens,
        output_tokens=trace.output_tokens,
        service_names=(service,),
        source=trace.source,
    )
