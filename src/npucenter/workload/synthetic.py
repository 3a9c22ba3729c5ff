"""Synthetic request streams: Poisson, gamma (bursty) and diurnal arrivals with length laws.

All randomness comes from the ``numpy.random.Generator`` passed in; the same seed gives the same
trace. Vectorised: a million requests take well under a second.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from npucenter.errors import InvalidConfigError
from npucenter.workload.trace import Trace

__all__ = [
    "ArrivalProcess",
    "DiurnalArrivals",
    "EmpiricalLengths",
    "FixedLength",
    "GammaArrivals",
    "LengthDistribution",
    "LogNormalLengths",
    "PoissonArrivals",
    "UniformLengths",
    "synthetic_trace",
]

IntArray = npt.NDArray[np.int64]
FloatArray = npt.NDArray[np.float64]


def _positive(name: str, value: float) -> None:
    if not (value > 0 and math.isfinite(value)):
        raise InvalidConfigError(name, value, "must be a finite number > 0")


@dataclass(frozen=True, slots=True, kw_only=True)
class PoissonArrivals:
    """Exponential gaps at ``rate_rps``."""

    rate_rps: float

    def __post_init__(self) -> None:
        _positive("rate_rps", self.rate_rps)

    def sample(self, num_requests: int, rng: np.random.Generator) -> FloatArray:
        """Arrival times (s) of ``num_requests`` requests, the first gap included."""
        return np.cumsum(rng.exponential(1.0 / self.rate_rps, size=num_requests))


@dataclass(frozen=True, slots=True, kw_only=True)
class GammaArrivals:
    """Gamma gaps with mean ``1/rate_rps`` and coefficient of variation ``cv`` (cv > 1: bursty)."""

    rate_rps: float
    cv: float = 2.0

    def __post_init__(self) -> None:
        _positive("rate_rps", self.rate_rps)
        _positive("cv", self.cv)

    def sample(self, num_requests: int, rng: np.random.Generator) -> FloatArray:
        """Arrival times (s); shape ``1/cv²``, scale ``cv²/rate``."""
        shape = 1.0 / self.cv**2
        return np.cumsum(rng.gamma(shape, 1.0 / (self.rate_rps * shape), size=num_requests))


@dataclass(frozen=True, slots=True, kw_only=True)
class DiurnalArrivals:
    """A Poisson process whose rate follows a sine over ``period_s`` (non-homogeneous).

    rate(t) = mean_rate_rps · (1 + amplitude · sin(2πt/period_s + phase)), sampled by thinning.
    """

    mean_rate_rps: float
    amplitude_fraction: float = 0.5  # 0-1: peak = mean·(1+a), trough = mean·(1-a)
    period_s: float = 86_400.0
    phase_rad: float = -math.pi / 2  # starts at the trough

    def __post_init__(self) -> None:
        _positive("mean_rate_rps", self.mean_rate_rps)
        _positive("period_s", self.period_s)
        if not 0 <= self.amplitude_fraction <= 1:
            raise InvalidConfigError("amplitude_fraction", self.amplitude_fraction, "must be 0-1")

    def rate_rps(self, t_s: FloatArray | float) -> FloatArray | float:
        """The instantaneous rate at ``t_s``."""
        angle = 2 * np.pi * np.asarray(t_s) / self.period_s + self.phase_rad
        return self.mean_rate_rps * (1 + self.amplitude_fraction * np.sin(angle))

    def sample(self, num_requests: int, rng: np.random.Generator) -> FloatArray:
        """Arrival times (s) by thinning a Poisson process at the peak rate."""
        peak = self.mean_rate_rps * (1 + self.amplitude_fraction)
        out: list[FloatArray] = []
        have = 0
        t0 = 0.0
        while have < num_requests:
            batch = max(1024, int((num_requests - have) * 1.2 * peak / self.mean_rate_rps))
            cand = t0 + np.cumsum(rng.exponential(1.0 / peak, size=batch))
            keep = cand[rng.random(batch) * peak < np.asarray(self.rate_rps(cand))]
            out.append(keep)
            have += len(keep)
            t0 = float(cand[-1])
        return np.concatenate(out)[:num_requests]


@dataclass(frozen=True, slots=True, kw_only=True)
class FixedLength:
    """Every request has ``tokens`` tokens."""

    tokens: int

    def __post_init__(self) -> None:
        if self.tokens < 1:
            raise InvalidConfigError("tokens", self.tokens, "must be >= 1")

    def sample(self, num_requests: int, rng: np.random.Generator) -> IntArray:
        """``num_requests`` lengths."""
        return np.full(num_requests, self.tokens, dtype=np.int64)


@dataclass(frozen=True, slots=True, kw_only=True)
class UniformLengths:
    """Uniform integers in ``[low, high]``."""

    low: int
    high: int

    def __post_init__(self) -> None:
        if not 1 <= self.low <= self.high:
            raise InvalidConfigError("low/high", (self.low, self.high), "need 1 <= low <= high")

    def sample(self, num_requests: int, rng: np.random.Generator) -> IntArray:
        """``num_requests`` lengths."""
        return rng.integers(self.low, self.high + 1, size=num_requests, dtype=np.int64)


@dataclass(frozen=True, slots=True, kw_only=True)
class LogNormalLengths:
    """Log-normal lengths with the given mean and sigma of log, clipped to ``[1, max_tokens]``."""

    mean_tokens: float
    sigma: float = 1.0
    max_tokens: int = 32_768

    def __post_init__(self) -> None:
        _positive("mean_tokens", self.mean_tokens)
        _positive("sigma", self.sigma)
        if self.max_tokens < 1:
            raise InvalidConfigError("max_tokens", self.max_tokens, "must be >= 1")

    def sample(self, num_requests: int, rng: np.random.Generator) -> IntArray:
        """``num_requests`` lengths (the clip lowers the mean slightly for heavy tails)."""
        mu = math.log(self.mean_tokens) - self.sigma**2 / 2
        raw = rng.lognormal(mu, self.sigma, size=num_requests)
        return np.clip(np.rint(raw), 1, self.max_tokens).astype(np.int64)


@dataclass(frozen=True, slots=True, kw_only=True, eq=False)
class EmpiricalLengths:
    """Resample lengths observed in a trace (e.g. the Azure conversation trace's prompts)."""

    values: tuple[int, ...]

    def __post_init__(self) -> None:
        if not self.values or min(self.values) < 1:
            raise InvalidConfigError("values", len(self.values), "need >= 1 value, all >= 1")

    @classmethod
    def from_array(cls, values: npt.ArrayLike) -> EmpiricalLengths:
        """From an array of observed lengths."""
        return cls(values=tuple(int(v) for v in np.asarray(values).ravel()))

    def sample(self, num_requests: int, rng: np.random.Generator) -> IntArray:
        """``num_requests`` draws with replacement."""
        arr = np.asarray(self.values, dtype=np.int64)
        return arr[rng.integers(0, len(arr), size=num_requests)]


ArrivalProcess = PoissonArrivals | GammaArrivals | DiurnalArrivals
LengthDistribution = FixedLength | UniformLengths | LogNormalLengths | EmpiricalLengths


def synthetic_trace(
    *,
    num_requests: int,
    arrivals: ArrivalProcess,
    prompt: LengthDistribution,
    output: LengthDistribution,
    rng: np.random.Generator,
    name: str = "synthetic",
) -> Trace:
    """A synthetic trace of ``num_requests`` requests starting at t = 0.

    Example:
        >>> import numpy as np
        >>> tr = synthetic_trace(num_requests=3, arrivals=PoissonArrivals(rate_rps=2.0),
        ...     prompt=FixedLength(tokens=8), output=FixedLength(tokens=4),
        ...     rng=np.random.default_rng(0))
        >>> len(tr), int(tr.prompt_tokens[0])
        (3, 8)
    """
    if num_requests < 0:
        raise InvalidConfigError("num_requests", num_requests, "must be >= 0")
    times = arrivals.sample(num_requests, rng)
    if num_requests:
        times = times - times[0]
    return Trace(
        name=name,
        arrival_s=times,
        prompt_tokens=prompt.sample(num_requests, rng),
        output_tokens=output.sample(num_requests, rng),
        source=f"synthetic: {arrivals!r}, prompt {prompt!r}, output {output!r}"[:300],
    )
