"""Service-level objectives, SLO attainment and goodput (both ways the field defines it).

* Goodput as requests/s meeting both the TTFT and TPOT limits (vLLM's benchmark_serving
  ``--goodput``, NVIDIA AIPerf): ``met requests / duration``.
* DistServe's goodput (Zhong et al., OSDI 2024): the highest request rate at which at least a
  given share (default 90 %) of requests meets both limits; found by bisection over a simulator.

Dropped or failed requests count as misses. Pure functions over numpy arrays.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np
import numpy.typing as npt

from npucenter.errors import InvalidConfigError, NotFoundError

__all__ = [
    "MLPERF_CONF_URL",
    "SLO_PRESETS",
    "Slo",
    "distserve_goodput_rps",
    "goodput_rps",
    "latency_summary",
    "meets_slo",
    "slo_attainment",
    "slo_from_spec",
]

#: MLPerf Inference LoadGen configuration that defines the LLM server-scenario latency limits.
MLPERF_CONF_URL = (
    "https://github.com/mlcommons/inference/blob/001712e9daf80386e0dda43f97b8f36981d792c4/"
    "loadgen/mlperf.conf"
)


@dataclass(frozen=True, slots=True, kw_only=True)
class Slo:
    """TTFT and TPOT limits of a service; ``percentile`` is the share that must meet them."""

    name: str
    ttft_s: float
    tpot_s: float
    percentile: float = 0.99  # MLPerf checks the 99th percentile of each
    source: str = ""

    def __post_init__(self) -> None:
        for field_name in ("ttft_s", "tpot_s"):
            value = getattr(self, field_name)
            if not value > 0:
                raise InvalidConfigError(field_name, value, "must be > 0 (use inf for no limit)")
        if not 0 < self.percentile <= 1:
            raise InvalidConfigError("percentile", self.percentile, "must be in (0, 1]")


def _mlperf(name: str, ttft_s: float, tpot_s: float, key: str) -> Slo:
    return Slo(
        name=name,
        ttft_s=ttft_s,
        tpot_s=tpot_s,
        percentile=0.99,
        source=f"MLPerf Inference server scenario, {key}.Server.ttft_latency/tpot_latency and "
        f"*.Server.target_latency_percentile = 99 in {MLPERF_CONF_URL}",
    )


#: Named SLO presets. The MLPerf ones are the LoadGen server-scenario limits (p99).
SLO_PRESETS: Mapping[str, Slo] = {
    "mlperf-llama-2-70b": _mlperf("mlperf-llama-2-70b", 2.0, 0.200, "llama2-70b"),
    "mlperf-llama-2-70b-interactive": _mlperf(
        "mlperf-llama-2-70b-interactive", 0.450, 0.040, "llama2-70b-interactive"
    ),
    "mlperf-llama-3.1-8b": _mlperf("mlperf-llama-3.1-8b", 2.0, 0.100, "llama3_1-8b"),
    "mlperf-llama-3.1-8b-interactive": _mlperf(
        "mlperf-llama-3.1-8b-interactive", 0.500, 0.030, "llama3_1-8b-interactive"
    ),
    "mlperf-llama-3.1-405b": _mlperf("mlperf-llama-3.1-405b", 6.0, 0.175, "llama3_1-405b"),
    "none": Slo(name="none", ttft_s=math.inf, tpot_s=math.inf, source="no limits"),
}


def slo_from_spec(spec: str | Mapping[str, Any] | Slo | None, *, default: str = "none") -> Slo:
    """An SLO from a preset name, a ``{ttft_s, tpot_s[, percentile]}`` mapping or an Slo."""
    if spec is None:
        spec = default
    if isinstance(spec, Slo):
        return spec
    if isinstance(spec, str):
        try:
            return SLO_PRESETS[spec.lower()]
        except KeyError:
            raise NotFoundError("SLO preset", spec, valid=list(SLO_PRESETS)) from None
    if isinstance(spec, Mapping):
        unknown = set(spec) - {"name", "ttft_s", "tpot_s", "percentile", "source"}
        if unknown:
            raise InvalidConfigError("slo", sorted(unknown), "unknown keys")
        try:
            return Slo(
                name=str(spec.get("name", "custom")),
                ttft_s=float(spec.get("ttft_s", math.inf)),
                tpot_s=float(spec.get("tpot_s", math.inf)),
                percentile=float(spec.get("percentile", 0.99)),
                source=str(spec.get("source", "user")),
            )
        except (TypeError, ValueError) as exc:
            raise InvalidConfigError("slo", dict(spec), f"not numbers: {exc}") from exc
    raise InvalidConfigError("slo", repr(spec), "must be a preset name or a mapping")


def meets_slo(
    ttft_s: npt.ArrayLike,
    tpot_s: npt.ArrayLike,
    completed: npt.ArrayLike,
    slo: Slo,
) -> npt.NDArray[np.bool_]:
    """Per request: completed and TTFT within the limit and TPOT within it (NaN TPOT, i.e. one
    output token, counts as within)."""
    ttft = np.asarray(ttft_s, dtype=np.float64)
    tpot = np.asarray(tpot_s, dtype=np.float64)
    done = np.asarray(completed, dtype=bool)
    with np.errstate(invalid="ignore"):
        ok_tpot = np.isnan(tpot) | (tpot <= slo.tpot_s)
        return done & (ttft <= slo.ttft_s) & ok_tpot


def slo_attainment(met: npt.ArrayLike) -> float:
    """Share of requests meeting the SLO (all requests in the denominator)."""
    arr = np.asarray(met, dtype=bool)
    return float(arr.mean()) if arr.size else 0.0


def goodput_rps(met: npt.ArrayLike, duration_s: float) -> float:
    """Requests meeting both SLOs per second of ``duration_s`` (vLLM/AIPerf goodput)."""
    if not duration_s > 0:
        return 0.0
    return float(np.count_nonzero(np.asarray(met, dtype=bool))) / duration_s


def latency_summary(values: npt.ArrayLike) -> dict[str, float]:
    """``{"p50", "p90", "p99", "mean"}`` of the finite values (NaN when there are none)."""
    arr = np.asarray(values, dtype=np.float64)
    arr = arr[np.isfinite(arr)]
    if not arr.size:
        return {"p50": math.nan, "p90": math.nan, "p99": math.nan, "mean": math.nan}
    p50, p90, p99 = np.percentile(arr, [50, 90, 99])
    return {"p50": float(p50), "p90": float(p90), "p99": float(p99), "mean": float(arr.mean())}


def distserve_goodput_rps(
    attainment_at: Callable[[float], float],
    *,
    low_rps: float,
    high_rps: float,
    target_fraction: float = 0.9,
    rel_tol: float = 0.02,
    max_evals: int = 20,
) -> float:
    """DistServe goodput: the highest rate whose SLO attainment is at least ``target_fraction``.

    ``attainment_at(rate_rps)`` runs the workload at that rate (e.g. a simulation with the trace
    rate-scaled) and returns the share of requests meeting both SLOs; it is assumed to fall as
    the rate grows. Returns 0.0 if even ``low_rps`` misses the target, ``high_rps`` if that meets
    it. Bisection stops when the bracket is within ``rel_tol``.
    """
    if not 0 < low_rps < high_rps:
        raise InvalidConfigError("low_rps/high_rps", (low_rps, high_rps), "need 0 < low < high")
    if not 0 < target_fraction <= 1:
        raise InvalidConfigError("target_fraction", target_fraction, "must be in (0, 1]")
    if attainment_at(low_rps) < target_fraction:
        return 0.0
    if attainment_at(high_rps) >= target_fraction:
        return high_rps
    lo, hi = low_rps, high_rps
    for _ in range(max_evals):
        if hi - lo <= rel_tol * lo:
            break
        mid = math.sqrt(lo * hi)
        if attainment_at(mid) >= target_fraction:
            lo = mid
        else:
            hi = mid
    return lo
