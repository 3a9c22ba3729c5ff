"""The dashboard's time series: the gateway's counters sampled every second, kept ten minutes.

A :class:`Sample` holds cumulative figures (requests, output tokens, the TTFT/TPOT histograms);
rates and latency quantiles are differences between two samples, so a missed tick loses no
request. Everything here but :func:`sample_gateway` and :func:`sample_forever` is pure.
"""

from __future__ import annotations

import asyncio
import bisect
import contextlib
import math
import time
from collections import deque
from collections.abc import AsyncIterator, Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from npucenter.gateway.app import Gateway

__all__ = [
    "HistogramState",
    "LiveSeries",
    "Sample",
    "Window",
    "curve_of",
    "histogram_quantile",
    "sample_forever",
    "sample_gateway",
    "window_of",
]

Point = tuple[float, float | None]  # (Unix time, value or None for "no data in this window")


@dataclass(frozen=True, slots=True)
class HistogramState:
    """A cumulative Prometheus histogram summed over its label sets.

    ``bounds`` are the buckets' upper bounds, increasing, the last one ``inf``; ``counts`` the
    cumulative number of observations at or below each bound.
    """

    bounds: tuple[float, ...] = ()
    counts: tuple[float, ...] = ()
    total_s: float = 0.0  # sum of the observations

    @property
    def count(self) -> float:
        """Observations so far."""
        return self.counts[-1] if self.counts else 0.0

    def minus(self, earlier: HistogramState) -> HistogramState:
        """The observations made since ``earlier`` (same buckets; a reset counts from zero)."""
        if earlier.bounds != self.bounds or earlier.count > self.count:
            return self
        return HistogramState(
            self.bounds,
            tuple(a - b for a, b in zip(self.counts, earlier.counts, strict=True)),
            self.total_s - earlier.total_s,
        )


@dataclass(frozen=True, slots=True, kw_only=True)
class Sample:
    """Cumulative gateway figures at one instant."""

    wall_s: float  # Unix time
    num_requests: int = 0  # answered for an authenticated caller, any status
    num_failed: int = 0
    output_tokens: int = 0
    ttft: HistogramState = HistogramState()
    tpot: HistogramState = HistogramState()


@dataclass(frozen=True, slots=True)
class Window:
    """What happened between two samples (histogram differences are taken when asked for)."""

    start: Sample
    end: Sample

    @property
    def span_s(self) -> float:
        """Seconds between the two samples."""
        return self.end.wall_s - self.start.wall_s

    @property
    def num_requests(self) -> int:
        """Requests answered in the window."""
        return max(0, self.end.num_requests - self.start.num_requests)

    @property
    def num_failed(self) -> int:
        """Requests that failed in the window."""
        return max(0, self.end.num_failed - self.start.num_failed)

    @property
    def output_tokens(self) -> int:
        """Output tokens metered in the window."""
        return max(0, self.end.output_tokens - self.start.output_tokens)

    @property
    def ttft(self) -> HistogramState:
        """Times to first token observed in the window."""
        return self.end.ttft.minus(self.start.ttft)

    @property
    def tpot(self) -> HistogramState:
        """Times per output token observed in the window."""
        return self.end.tpot.minus(self.start.tpot)

    @property
    def requests_per_s(self) -> float:
        """Requests answered per second."""
        return self.num_requests / self.span_s if self.span_s > 0 else 0.0

    @property
    def output_tokens_per_s(self) -> float:
        """Output tokens per second."""
        return self.output_tokens / self.span_s if self.span_s > 0 else 0.0


class LiveSeries:
    """A bounded ring of samples (one a ``period_s`` at most) and the curves drawn from it."""

    def __init__(self, *, period_s: float = 1.0, keep_s: float = 600.0) -> None:
        self.period_s = period_s
        self.keep_s = keep_s
        self._samples: deque[Sample] = deque(maxlen=int(keep_s / period_s) + 2)

    def add(self, sample: Sample) -> None:
        """Keep ``sample`` unless the last one is less than ``period_s`` older."""
        if self._samples and sample.wall_s - self._samples[-1].wall_s < self.period_s * 0.5:
            return
        self._samples.append(sample)

    def samples(self) -> list[Sample]:
        """The samples kept, oldest first (a copy: safe to read in another thread)."""
        return list(self._samples)

    def window(self, last_s: float) -> Window | None:
        """See :func:`window_of`."""
        return window_of(self.samples(), last_s)

    def curve(
        self, value: Callable[[Window], float | None], *, trailing_s: float, max_points: int = 0
    ) -> list[Point]:
        """See :func:`curve_of`."""
        return curve_of(self.samples(), value, trailing_s=trailing_s, max_points=max_points)


def window_of(samples: Sequence[Sample], last_s: float) -> Window | None:
    """The last ``last_s`` seconds of ``samples`` (or all of them); None before two samples."""
    if len(samples) < 2:
        return None
    end = samples[-1]
    start = next((s for s in samples if end.wall_s - s.wall_s <= last_s), samples[-2])
    return Window(samples[-2] if start is end else start, end)


def curve_of(
    samples: Sequence[Sample],
    value: Callable[[Window], float | None],
    *,
    trailing_s: float,
    max_points: int = 0,
) -> list[Point]:
    """``value`` of the window ending at each sample and starting ``trailing_s`` before it.

    ``max_points`` > 0 keeps every k-th sample (the last one always) so that a chart of a few
    hundred pixels does not compute a thousand windows.
    """
    n = len(samples)
    stride = max(1, -(-(n - 1) // max_points)) if max_points > 0 else 1
    ends = range(n - 1, 0, -stride)
    out: list[Point] = []
    for i in reversed(ends):
        end = samples[i]
        j = bisect.bisect_left(samples, end.wall_s - trailing_s - 1e-9, hi=i, key=_wall_s)
        out.append((end.wall_s, value(Window(samples[min(j, i - 1)], end))))
    return out


def histogram_quantile(q: float, hist: HistogramState) -> float | None:
    """The ``q``-quantile of ``hist``, interpolated linearly inside its bucket (as PromQL does).

    None without observations; a quantile in the ``+Inf`` bucket is the last finite bound.
    """
    total = hist.count
    if total <= 0:
        return None
    rank = q * total
    lower_bound, lower_count = 0.0, 0.0
    for bound, count in zip(hist.bounds, hist.counts, strict=True):
        if count >= rank:
            if math.isinf(bound):
                return lower_bound
            if count == lower_count:
                return bound
            return lower_bound + (bound - lower_bound) * (rank - lower_count) / (
                count - lower_count
            )
        lower_bound, lower_count = bound, count
    return lower_bound


def sample_gateway(gateway: Gateway, wall_s: float | None = None) -> Sample:
    """The gateway's cumulative figures now."""
    totals = list(gateway.usage_totals.values())
    return Sample(
        wall_s=time.time() if wall_s is None else wall_s,
        num_requests=sum(t.num_requests for t in totals),
        num_failed=sum(t.num_failed for t in totals),
        output_tokens=sum(t.output_tokens for t in totals),
        ttft=_histogram(gateway.metrics.ttft.collect()),
        tpot=_histogram(gateway.metrics.tpot.collect()),
    )


@contextlib.asynccontextmanager
async def sample_forever(series: LiveSeries, gateway: Gateway) -> AsyncIterator[None]:
    """Sample ``gateway`` into ``series`` every ``series.period_s`` while the context is open."""

    async def loop() -> None:
        while True:
            series.add(sample_gateway(gateway))
            await asyncio.sleep(series.period_s)

    task = asyncio.create_task(loop(), name="dashboard-sampler")
    try:
        yield
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task


def _wall_s(sample: Sample) -> float:
    return sample.wall_s


def _histogram(families: Iterable[Any]) -> HistogramState:
    """Sum a prometheus_client histogram's ``_bucket`` and ``_sum`` samples over label sets."""
    buckets: dict[float, float] = {}
    total_s = 0.0
    for family in families:
        for s in family.samples:
            if s.name.endswith("_bucket"):
                bound = float(s.labels["le"])
                buckets[bound] = buckets.get(bound, 0.0) + s.value
            elif s.name.endswith("_sum"):
                total_s += s.value
    bounds: Sequence[float] = sorted(buckets)
    return HistogramState(tuple(bounds), tuple(buckets[b] for b in bounds), total_s)
