"""Simulator-backed planning: per-replica profiles by bisection on rate, and plan verification.

Both drive the simulator's replica model (:class:`npucenter.sim.ReplicaCore`: continuous
batching, chunked prefill, paged KV, preemption) with step times from the performance model, on
each service's own trace (or synthetic Poisson stream). Deterministic for a seed; no I/O.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace

import numpy as np

from npucenter.catalog import Catalog
from npucenter.errors import InvalidRequestError
from npucenter.fleet.spec import Deployment, FleetSpec, ServerPool
from npucenter.fleet.spec import ServiceSpec as FleetService
from npucenter.perf import PerfModelCache
from npucenter.plan.milp import Allocation
from npucenter.plan.planner import Verification
from npucenter.plan.profile import AnalyticProfile, Candidate, TrafficStats
from npucenter.plan.spec import PlanSpec, ServiceSpec
from npucenter.plan.traffic import service_trace
from npucenter.sim import ReplicaConfig, ReplicaCore, SeqRequest
from npucenter.sim.center import Center
from npucenter.workload.slo import Slo, meets_slo
from npucenter.workload.trace import Trace, merge_traces

__all__ = [
    "CenterVerifier",
    "ServiceSimResult",
    "SimProfile",
    "SimVerifier",
    "poisson_like",
    "service_stream",
    "simulate_service",
]

_DRAIN_S = 1e12  # "run until idle": a finite horizon far beyond any trace


@dataclass(frozen=True, slots=True, kw_only=True)
class ServiceSimResult:
    """One service simulated on a set of replicas."""

    requests: int
    met: int  # requests meeting both TTFT and TPOT limits
    dropped: int  # requests no replica could hold
    energy_j: float  # card energy of the busy iterations
    output_tokens: int
    ttft_p90_s: float
    tpot_p90_s: float

    @property
    def slo_attainment(self) -> float:
        """Share of requests that met both limits (dropped ones count as misses)."""
        return self.met / self.requests if self.requests else 1.0


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


# NOTE(plan): a service's fleet is simulated on its own (replicas serve one service). Requests
# are routed by weighted power-of-two-choices: two entry replicas are drawn with probability
# proportional to their profiled capacity, both are advanced to the arrival, and the one with
# fewer outstanding tokens per unit of capacity gets the request. A disaggregated unit's prefill
# replica is an entry; prefill runs as a one-token request, and the request then joins a decode
# replica of its unit type after the KV transfer. Decode never pushes back on prefill, so the two
# phases are simulated one after the other, which is exact for this model.
def simulate_service(
    service: ServiceSpec,
    trace: Trace,
    units: Sequence[tuple[Candidate, int, float]],  # (candidate, count, capacity weight)
    perf_for: PerfModelCache,
    *,
    seed: int = 0,
) -> ServiceSimResult:
    """Simulate ``trace`` on ``units`` and score it against the service's SLO."""
    rng = np.random.default_rng(seed)
    entries: list[_Entry] = []
    for cand, count, weight in units:
        for _ in range(count):
            entries.append(_Entry.build(cand, service.model, weight, perf_for))
    n = len(trace)
    if not entries or n == 0:
        return ServiceSimResult(
            requests=n,
            met=0,
            dropped=n,
            energy_j=0.0,
            output_tokens=0,
            ttft_p90_s=math.inf,
            tpot_p90_s=math.inf,
        )
    arrival = trace.arrival_s
    prompt = trace.prompt_tokens
    output = trace.output_tokens
    weights = np.array([e.weight for e in entries], dtype=float)
    picks = rng.choice(len(entries), size=(n, 2), p=weights / weights.sum())
    first_s = np.full(n, math.inf)
    finish_s = np.full(n, math.inf)
    routed_to = np.full(n, -1, dtype=np.int64)
    for i in range(n):
        t = float(arrival[i])
        ia, ib = int(picks[i, 0]), int(picks[i, 1])
        a, b = entries[ia], entries[ib]
        a.front.advance_until(t)
        b.front.advance_until(t)
        k = ia if a.load() <= b.load() else ib
        chosen = entries[k]
        out_tokens = 1 if chosen.disaggregated else int(output[i])
        try:
            chosen.front.add(
                SeqRequest(
                    request_id=str(i),
                    prompt_tokens=int(prompt[i]),
                    max_output_tokens=out_tokens,
                    arrival_s=t,
                    index=i,
                )
            )
        except InvalidRequestError:
            continue
        routed_to[i] = k
    for entry in entries:
        entry.front.advance_until(_DRAIN_S)
        for c in entry.front.completions:
            first_s[c.index] = c.first_token_s
            finish_s[c.index] = c.finish_s
    _run_decode_phase(entries, trace, first_s, finish_s, routed_to)
    return _score(service, trace, entries, first_s, finish_s)


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


class SimVerifier:
    """Simulates a plan's replicas of every service on the service's full traffic."""

    def __init__(
        self,
        catalog: Catalog,
        spec: PlanSpec,
        *,
        traffic: Mapping[str, TrafficStats] | None = None,
        max_requests: int | None = None,
        seed: int = 0,
    ) -> None:
        self.catalog = catalog
        self.perf = PerfModelCache(catalog)
        # routing weights: each replica's capacity share by the analytic model (1.0 without it)
        self.weights = AnalyticProfile(catalog, traffic) if traffic is not None else None
        self.seed = seed
        limit = max_requests if max_requests is not None else spec.verification.max_requests
        self.streams = {
            s.name: service_stream(s, seed=seed, max_requests=limit) for s in spec.services
        }
        self.num_simulations = 0
        # (service, replicas) -> result: a re-solve that keeps a service's replicas reuses it
        self._cache: dict[tuple[str, tuple[tuple[str, int], ...]], ServiceSimResult] = {}

    @staticmethod
    def describe() -> str:
        """How plans are verified (printed in reports)."""
        return "per-service replica simulation (ReplicaCore, weighted power-of-two routing)"

    def verify(
        self, spec: PlanSpec, allocation: Allocation, candidates: Mapping[str, Candidate]
    ) -> Verification:
        """Attainment per service, and card energy per output token over all services."""
        attainment: dict[str, float] = {}
        energy = 0.0
        tokens = 0
        requests = 0
        notes: list[str] = []
        for svc in spec.services:
            units = [
                (candidates[label], count, self._weight(svc, candidates[label]))
                for label, count in sorted(allocation.replicas.items())
                if candidates[label].service == svc.name and count > 0
            ]
            key = (svc.name, tuple((u[0].label, u[1]) for u in units))
            res = self._cache.get(key)
            if res is None:
                self.num_simulations += 1
                res = simulate_service(
                    svc, self.streams[svc.name], units, self.perf, seed=self.seed
                )
                self._cache[key] = res
            attainment[svc.name] = res.slo_attainment
            energy += res.energy_j
            tokens += res.output_tokens
            requests += res.requests
            notes.append(
                f"{svc.name}: {res.met}/{res.requests} met, p90 TTFT {res.ttft_p90_s:.3f} s, "
                f"p90 TPOT {res.tpot_p90_s * 1e3:.1f} ms, dropped {res.dropped}"
            )
        return Verification(
            slo_attainment=attainment,
            energy_j_per_output_token=energy / tokens if tokens else None,
            simulated_requests=requests,
            notes=tuple(notes),
        )

    def _weight(self, service: ServiceSpec, candidate: Candidate) -> float:
        if self.weights is None:
            return 1.0
        return max(self.weights.max_rate_rps(service, candidate), 1e-6)


class CenterVerifier:
    """Verification on the simulator's whole-center model (:class:`npucenter.sim.center.Center`).

    The plan becomes a fleet: one server pool per device type holding exactly the cards the
    replicas use (server boundaries do not change the simulation), one deployment per candidate,
    the services' traces merged, routed by the same policy objects the live gateway uses. A
    service that mixes colocated and disaggregated replicas cannot be expressed as a fleet (the
    center runs a service either way, not both); such plans fall back to :class:`SimVerifier`.
    """

    def __init__(
        self,
        catalog: Catalog,
        spec: PlanSpec,
        *,
        traffic: Mapping[str, TrafficStats] | None = None,
        routing: str | None = None,
        max_requests: int | None = None,
        seed: int = 0,
    ) -> None:
        self.catalog = catalog
        self.routing = routing or spec.verification.routing
        self.fallback = SimVerifier(
            catalog, spec, traffic=traffic, max_requests=max_requests, seed=seed
        )
        # the fallback's per-service streams, labelled with their service and merged
        streams = [_labelled(name, tr) for name, tr in self.fallback.streams.items()]
        self.trace = merge_traces(streams, name=f"{spec.name}-traffic")
        link = [d.kv_link_gbps for d in spec.disaggregation]
        self.network_gb_per_s = min(link) if link else 12.5
        self.num_simulations = 0
        self.num_fallbacks = 0
        self._cache: dict[tuple[tuple[str, int], ...], Verification] = {}

    @staticmethod
    def describe() -> str:
        """How plans are verified (printed in reports)."""
        return "simulator whole-center model (npucenter.sim.center) on the merged traces"

    def verify(
        self, spec: PlanSpec, allocation: Allocation, candidates: Mapping[str, Candidate]
    ) -> Verification:
        """Run the plan's fleet on every service's traffic; attainment per service."""
        key = tuple(sorted((k, v) for k, v in allocation.replicas.items() if v > 0))
        if key in self._cache:
            return self._cache[key]
        fleet = self.fleet_for(spec, allocation, candidates)
        if fleet is None:
            self.num_fallbacks += 1
            return self.fallback.verify(spec, allocation, candidates)
        self.num_simulations += 1
        center = Center(fleet, self.catalog, policy=self.routing, perf_models=self.fallback.perf)
        result = center.run(self.trace)
        summary = result.summary
        services = summary["services"]
        attainment = {s.name: float(services[s.name]["slo_attainment"]) for s in spec.services}
        notes = tuple(
            f"{name}: {info['completed']}/{info['requests']} completed, "
            f"p90 TTFT {info['ttft_s']['p90']:.3f} s, p90 TPOT {info['tpot_s']['p90'] * 1e3:.1f} ms"
            for name, info in services.items()
        )
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
        """The plan as a simulator fleet, or None when a service mixes serving modes."""
        units: list[tuple[ServiceSpec, Candidate, int]] = []
        for svc in spec.services:
            mine = [
                (svc, candidates[label], n)
                for label, n in sorted(allocation.replicas.items())
                if n > 0 and candidates[label].service == svc.name
            ]
            if not mine or len({c.disaggregated for _, c, _ in mine}) > 1:
                return None
            units.extend(mine)
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


def _deployments(svc: ServiceSpec, cand: Candidate, count: int) -> list[Deployment]:
    """``count`` replicas (or units: one prefill replica and its decoders) of ``cand``."""
    colocated = Deployment(
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


# --- internals ----------------------------------------------------------------------------


@dataclass(slots=True)
class _Entry:
    """One routing target: a colocated replica, or a disaggregated unit (prefill + decoders)."""

    front: ReplicaCore  # where requests arrive (the replica, or the unit's prefill replica)
    decoders: list[ReplicaCore]
    weight: float
    transfer_s_per_token: float
    disaggregated: bool
    cores: list[ReplicaCore] = field(default_factory=list)

    @classmethod
    def build(cls, cand: Candidate, model: str, weight: float, perf: PerfModelCache) -> _Entry:
        cfg = ReplicaConfig()

        def core(device: str, tp: int) -> ReplicaCore:
            pm = perf.get(model, device, cand.precision, tp)
            return ReplicaCore(pm, cfg, record_completions=True)

        if not cand.disaggregated:
            only = core(cand.device_id, cand.tp)
            return cls(
                front=only,
                decoders=[],
                weight=weight,
                transfer_s_per_token=0.0,
                disaggregated=False,
                cores=[only],
            )
        assert cand.prefill_device_id is not None
        front = core(cand.prefill_device_id, cand.prefill_tp)
        decoders = [core(cand.device_id, cand.tp) for _ in range(cand.decode_per_prefill)]
        pre_pm = perf.get(model, cand.prefill_device_id, cand.precision, cand.prefill_tp)
        transfer = pre_pm.kv_bytes_per_token / (cand.kv_link_gbps * 1e9)
        return cls(
            front=front,
            decoders=decoders,
            weight=weight,
            transfer_s_per_token=transfer,
            disaggregated=True,
            cores=[front, *decoders],
        )

    def load(self) -> float:
        return self.front.outstanding_tokens / self.weight


def _run_decode_phase(
    entries: list[_Entry],
    trace: Trace,
    first_s: np.ndarray,
    finish_s: np.ndarray,
    routed_to: np.ndarray,
) -> None:
    """Hand each request a unit prefilled to the unit's least-loaded decoder (deterministic)."""
    prompt, output = trace.prompt_tokens, trace.output_tokens
    for k, entry in enumerate(entries):
        if not entry.disaggregated:
            continue
        idx = np.flatnonzero((routed_to == k) & np.isfinite(first_s) & (output > 1))
        ready = first_s[idx] + prompt[idx] * entry.transfer_s_per_token
        order = np.argsort(ready, kind="stable")
        decs = entry.decoders
        for j in order:
            i = int(idx[j])
            t = float(ready[j])
            for d in decs:
                d.advance_until(t)
            target = min(decs, key=lambda d: d.outstanding_tokens)
            finish_s[i] = math.inf
            try:
                target.add(
                    SeqRequest(
                        request_id=str(i),
                        prompt_tokens=int(prompt[i]),
                        max_output_tokens=int(output[i]),
                        arrival_s=t,
                        index=i,
                        num_computed_tokens=int(prompt[i]),
                        num_output_tokens=1,
                    )
                )
            except InvalidRequestError:
                continue
        for d in decs:
            d.advance_until(_DRAIN_S)
            for c in d.completions:
                finish_s[c.index] = c.finish_s


def _score(
    service: ServiceSpec,
    trace: Trace,
    entries: list[_Entry],
    first_s: np.ndarray,
    finish_s: np.ndarray,
) -> ServiceSimResult:
    out = trace.output_tokens.astype(float)
    done = np.isfinite(first_s) & np.isfinite(finish_s)
    safe_first = np.where(done, first_s, 0.0)
    safe_finish = np.where(done, finish_s, 0.0)
    ttft = np.where(done, safe_first - trace.arrival_s, math.inf)
    decode_s = (safe_finish - safe_first) / np.maximum(out - 1, 1)
    tpot = np.where(done, np.where(out > 1, decode_s, 0.0), math.inf)
    met = int(np.count_nonzero(meets_slo(ttft, tpot, done, _slo(service))))
    energy = sum(core.energy_j for e in entries for core in e.cores)
    tokens = int(out[done].sum())
    return ServiceSimResult(
        requests=len(trace),
        met=met,
        dropped=int(np.count_nonzero(~done)),
        energy_j=energy,
        output_tokens=tokens,
        ttft_p90_s=_p90(ttft),
        tpot_p90_s=_p90(tpot),
    )


def _p90(values: np.ndarray) -> float:
    """The 90th percentile without interpolation (values may be inf: missed requests)."""
    if len(values) == 0:
        return 0.0
    ordered = np.sort(values)
    return float(ordered[max(0, math.ceil(0.9 * len(ordered)) - 1)])


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
