"""Per-replica capacity profiles: the highest rate one replica serves within a service's SLO.

A :class:`ProfileSource` answers ``max_rate_rps(service, candidate)``. Two ship here: the
perf-model :class:`AnalyticProfile` (fast; unit tests, first guesses) and :class:`CachedProfile`,
which memoises any source (the simulator-backed one lives in :mod:`npucenter.plan.simprofile`).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Protocol, runtime_checkable

from npucenter.catalog import Catalog
from npucenter.errors import InvalidConfigError
from npucenter.perf import PerfModel, PerfModelCache
from npucenter.plan.spec import ServiceSpec

__all__ = [
    "AnalyticProfile",
    "CachedProfile",
    "Candidate",
    "ProfileSource",
    "TrafficStats",
]


@dataclass(frozen=True, slots=True, kw_only=True)
class TrafficStats:
    """What the planner needs to know about a service's traffic (measured or given)."""

    rate_rps: float  # mean arrival rate after scaling
    mean_input_tokens: float
    mean_output_tokens: float
    p90_input_tokens: float
    p90_output_tokens: float
    num_requests: int = 0
    duration_s: float = 0.0

    def __post_init__(self) -> None:
        for name in ("rate_rps", "mean_input_tokens", "mean_output_tokens"):
            if not getattr(self, name) >= 0:
                raise InvalidConfigError(f"traffic.{name}", getattr(self, name), "must be >= 0")

    @property
    def output_tokens_per_s(self) -> float:
        """Mean generated tokens per second."""
        return self.rate_rps * self.mean_output_tokens


@dataclass(frozen=True, slots=True, kw_only=True)
class Candidate:
    """One way to deploy a service: a replica, or a disaggregated prefill/decode unit.

    A disaggregated unit is one prefill replica (``prefill_tp`` cards of ``prefill_device_id``)
    feeding ``decode_per_prefill`` decode replicas (``tp`` cards of ``device_id`` each).
    """

    service: str
    device_id: str  # the whole replica, or the decode side of a disaggregated unit
    tp: int
    precision: str
    prefill_device_id: str | None = None
    prefill_tp: int = 1
    decode_per_prefill: int = 1
    kv_link_gbps: float = 0.0  # KV transfer bandwidth prefill -> decode (disaggregated only)

    @property
    def disaggregated(self) -> bool:
        """Whether prefill and decode run on separate replicas."""
        return self.prefill_device_id is not None

    @property
    def cards(self) -> dict[str, int]:
        """device_id -> cards one unit occupies."""
        out = {self.device_id: self.tp * self.decode_per_prefill}
        if self.prefill_device_id is not None:
            out[self.prefill_device_id] = out.get(self.prefill_device_id, 0) + self.prefill_tp
        return out

    @property
    def label(self) -> str:
        """A unique readable name, e.g. ``chat@furiosa_rngd tp1 fp8``."""
        if self.prefill_device_id is None:
            return f"{self.service}@{self.device_id} tp{self.tp} {self.precision}"
        return (
            f"{self.service}@{self.prefill_device_id} tp{self.prefill_tp} prefill + "
            f"{self.decode_per_prefill}x {self.device_id} tp{self.tp} decode {self.precision}"
        )


@runtime_checkable
class ProfileSource(Protocol):
    """Capacity of one replica (or disaggregated unit) of a service within its SLO."""

    def max_rate_rps(self, service: ServiceSpec, candidate: Candidate) -> float:
        """Highest mean request rate the candidate sustains while meeting ``service.slo``."""
        ...


class CachedProfile:
    """Memoises another source: each (service, candidate) is profiled once per process."""

    def __init__(self, inner: ProfileSource) -> None:
        self.inner = inner
        self._cache: dict[tuple[ServiceSpec, Candidate], float] = {}

    def max_rate_rps(self, service: ServiceSpec, candidate: Candidate) -> float:
        """The inner source's answer, computed once."""
        key = (service, candidate)
        if key not in self._cache:
            self._cache[key] = self.inner.max_rate_rps(service, candidate)
        return self._cache[key]


class AnalyticProfile:
    """Closed-form capacity from the performance model (no simulation).

    NOTE(plan): steady continuous batching with chunked prefill. At arrival rate λ and step time
    T, λ·O·T sequences decode at once and each step also prefills λ·I·T prompt tokens (means I, O
    of the trace), so T solves ``T = step_time(λIT, λT·pairs(I), λOT, λOT·(I+O/2))``; no fixed
    point means overload. A rate is sustainable when T <= the TPOT limit, the decode batch's KV
    fits, and TTFT ≈ T + prefill(p90 prompt) / (1 - prefill utilisation) <= the TTFT limit.
    Disaggregated units apply the same test to the prefill replica (plus the KV transfer) and to
    each decode replica separately. The highest such rate is found by bisection. Mean-based: the
    simulator-backed source and the verification step catch what tails add.
    """

    def __init__(
        self,
        catalog: Catalog,
        traffic: Mapping[str, TrafficStats],
        *,
        utilisation_cap_fraction: float = 0.95,
    ) -> None:
        self.catalog = catalog
        self.perf = PerfModelCache(catalog)
        self.traffic = dict(traffic)
        self.utilisation_cap_fraction = utilisation_cap_fraction

    @staticmethod
    def describe() -> str:
        """How the profiles were made (printed in reports)."""
        return "analytic (perf model, closed form)"

    def max_rate_rps(self, service: ServiceSpec, candidate: Candidate) -> float:
        """Highest rate meeting the SLO by the closed-form model (0 when even 0+ fails)."""
        stats = self._stats(service)
        decode = self.perf.get(
            service.model, candidate.device_id, candidate.precision, candidate.tp
        )
        if candidate.prefill_device_id is None:
            return _bisect_rate(lambda rate: self._colocated_ok(decode, service, stats, rate))
        prefill = self.perf.get(
            service.model, candidate.prefill_device_id, candidate.precision, candidate.prefill_tp
        )
        return _bisect_rate(
            lambda rate: self._disaggregated_ok(prefill, decode, candidate, service, stats, rate)
        )

    def _stats(self, service: ServiceSpec) -> TrafficStats:
        try:
            return self.traffic[service.name]
        except KeyError:
            raise InvalidConfigError(
                "traffic", service.name, "no traffic statistics for this service"
            ) from None

    def _colocated_ok(
        self, pm: PerfModel, service: ServiceSpec, stats: TrafficStats, rate: float
    ) -> bool:
        i, o = stats.mean_input_tokens, stats.mean_output_tokens
        prefill_s = pm.ttft_s(i)
        utilisation = rate * prefill_s
        if utilisation >= self.utilisation_cap_fraction:
            return False
        step = _steady_step_s(pm, rate, i, o, with_prefill=True)
        if step is None or step > service.slo.tpot_s:
            return False
        if rate * o * step * (i + o) > pm.kv_capacity_tokens:
            return False
        ttft = step + pm.ttft_s(max(i, stats.p90_input_tokens)) / (1.0 - utilisation)
        return ttft <= service.slo.ttft_s

    def _disaggregated_ok(
        self,
        prefill: PerfModel,
        decode: PerfModel,
        cand: Candidate,
        service: ServiceSpec,
        stats: TrafficStats,
        rate: float,
    ) -> bool:
        i, o = stats.mean_input_tokens, stats.mean_output_tokens
        utilisation = rate * prefill.ttft_s(i)
        if utilisation >= self.utilisation_cap_fraction:
            return False
        per_decode = rate / cand.decode_per_prefill
        step = _steady_step_s(decode, per_decode, i, o, with_prefill=False)
        if step is None or step > service.slo.tpot_s:
            return False
        if per_decode * o * step * (i + o) > decode.kv_capacity_tokens:
            return False
        p90_in = max(i, stats.p90_input_tokens)
        transfer_s = p90_in * prefill.kv_bytes_per_token / (cand.kv_link_gbps * 1e9)
        ttft = prefill.ttft_s(p90_in) / (1.0 - utilisation) + transfer_s + step
        return ttft <= service.slo.ttft_s


def _steady_step_s(
    pm: PerfModel, rate: float, mean_in: float, mean_out: float, *, with_prefill: bool
) -> float | None:
    """Fixed point of the step time at ``rate`` (None: the replica cannot keep up)."""
    pairs = pm.attn_pairs(mean_in, 0.0)
    ctx = mean_in + mean_out / 2.0
    step = float(pm.step_time_s(0.0, 0.0, 0.0, 0.0))
    for _ in range(200):
        batch = rate * mean_out * step
        prefill_tokens = rate * mean_in * step if with_prefill else 0.0
        prefill_pairs = rate * pairs * step if with_prefill else 0.0
        nxt = float(pm.step_time_s(prefill_tokens, prefill_pairs, batch, batch * ctx))
        if nxt > 1e3:
            return None
        if abs(nxt - step) <= 1e-9 * max(1.0, step):
            return nxt
        step = nxt
    return None


def _bisect_rate(ok: Callable[[float], bool], *, high: float = 1.0) -> float:
    """Largest rate with ``ok(rate)`` (assumed monotone: ok below, not ok above)."""
    low = 0.0
    if not ok(1e-6):
        return 0.0
    while ok(high):
        low, high = high, high * 2.0
        if high > 1e6:
            return low
    for _ in range(40):
        mid = (low + high) / 2.0
        if ok(mid):
            low = mid
        else:
            high = mid
    return low
