"""Benchmark scenarios and the request plans they expand to (pure: no I/O, randomness injected).

A :class:`Scenario` says how requests arrive (constant, Poisson, bursty gamma, closed-loop
concurrency, trace replay) and how long they are; :func:`build_plan` turns it into the exact list
of :class:`PlannedRequest` that the load generator sends, so the same seed gives the same plan.
"""

from __future__ import annotations

import itertools
import math
import random
from collections.abc import Iterator, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

from npucenter.errors import InvalidConfigError

__all__ = [
    "ARRIVALS",
    "PlannedRequest",
    "Scenario",
    "TraceRow",
    "build_plan",
    "iter_plan",
]

#: Arrival processes a scenario may name.
ARRIVALS = ("constant", "poisson", "gamma", "concurrency", "trace")


@dataclass(frozen=True, slots=True, kw_only=True)
class TraceRow:
    """One request of a replayed trace: arrival offset and token lengths."""

    arrival_s: float
    input_tokens: int
    output_tokens: int


@dataclass(frozen=True, slots=True, kw_only=True)
class PlannedRequest:
    """One request the generator will send; ``scheduled_s`` is relative to the run start.

    Closed-loop (concurrency) plans leave ``scheduled_s`` at 0: a request goes when a worker frees.
    """

    index: int
    scheduled_s: float
    input_tokens: int
    output_tokens: int


@dataclass(frozen=True, slots=True, kw_only=True)
class Scenario:
    """One load pattern.

    ``arrival``: constant | poisson | gamma (bursty; ``burstiness`` is the gamma shape, < 1 is
    burstier than Poisson) | concurrency (closed loop with ``concurrency`` workers) | trace.
    Lengths: fixed ``input_tokens``/``output_tokens`` unless ``length_spread_fraction`` > 0
    (uniform +-spread) or a trace supplies them. Bounds: ``max_requests`` and/or ``duration_s``
    (at least one). ``time_scale`` > 1 replays a trace faster (inter-arrivals divided by it).
    """

    name: str = "custom"
    arrival: str = "poisson"
    rate_rps: float | None = None
    burstiness: float = 1.0
    concurrency: int | None = None
    max_concurrency: int | None = None  # cap on in-flight requests for open-loop arrivals
    input_tokens: int = 128
    output_tokens: int = 128
    length_spread_fraction: float = 0.0
    max_requests: int | None = None
    duration_s: float | None = None
    drain_timeout_s: float = 60.0
    warmup_requests: int = 0
    seed: int = 0
    trace: str | None = None  # trace name or path (replay)
    trace_rows: tuple[TraceRow, ...] = field(default=(), repr=False)
    time_scale: float = 1.0
    max_input_tokens: int | None = None  # clip trace lengths (e.g. the endpoint's context)
    slo_ttft_s: float | None = None
    slo_tpot_s: float | None = None
    slo_e2e_s: float | None = None
    api: str = "chat"  # chat | completions

    def __post_init__(self) -> None:
        if self.arrival not in ARRIVALS:
            raise InvalidConfigError("arrival", self.arrival, f"must be one of {ARRIVALS}")
        needs_rate = self.arrival in ("constant", "poisson", "gamma")
        if needs_rate and (
            self.rate_rps is None or not self.rate_rps > 0 or math.isinf(self.rate_rps)
        ):
            raise InvalidConfigError("rate_rps", self.rate_rps, "must be a finite rate > 0")
        if self.arrival == "concurrency" and (self.concurrency is None or self.concurrency < 1):
            raise InvalidConfigError("concurrency", self.concurrency, "must be >= 1")
        if self.arrival == "trace" and not self.trace_rows:
            raise InvalidConfigError("trace_rows", len(self.trace_rows), "trace replay needs rows")
        if self.max_requests is None and self.duration_s is None and self.arrival != "trace":
            raise InvalidConfigError(
                "max_requests", None, "give --max-requests or --duration to bound the run"
            )
        if self.max_requests is not None and self.max_requests < 1:
            raise InvalidConfigError("max_requests", self.max_requests, "must be >= 1")
        if self.duration_s is not None and not self.duration_s > 0:
            raise InvalidConfigError("duration_s", self.duration_s, "must be > 0")
        if self.burstiness <= 0:
            raise InvalidConfigError("burstiness", self.burstiness, "must be > 0")
        if self.time_scale <= 0:
            raise InvalidConfigError("time_scale", self.time_scale, "must be > 0")
        if self.input_tokens < 1 or self.output_tokens < 1:
            raise InvalidConfigError(
                "input_tokens/output_tokens",
                (self.input_tokens, self.output_tokens),
                "token lengths must be >= 1",
            )
        if not 0 <= self.length_spread_fraction < 1:
            raise InvalidConfigError(
                "length_spread_fraction", self.length_spread_fraction, "must be in [0, 1)"
            )
        if self.max_concurrency is not None and self.max_concurrency < 1:
            raise InvalidConfigError("max_concurrency", self.max_concurrency, "must be >= 1")
        if self.api not in ("chat", "completions"):
            raise InvalidConfigError("api", self.api, "must be chat or completions")

    @property
    def open_loop(self) -> bool:
        """True when arrivals follow a clock (everything but closed-loop concurrency)."""
        return self.arrival != "concurrency"

    def to_dict(self) -> dict[str, Any]:
        """JSON-able description (trace rows summarised by their count)."""
        out = asdict(self)
        out.pop("trace_rows")
        out["num_trace_rows"] = len(self.trace_rows)
        return out


def build_plan(scenario: Scenario, rng: random.Random | None = None) -> list[PlannedRequest]:
    """Expand ``scenario`` into the requests to send, in order of ``scheduled_s``.

    A ``duration_s`` bound keeps only arrivals before it; with ``max_requests`` too, whichever
    comes first. A closed-loop plan needs ``max_requests`` here; use :func:`iter_plan` for one
    bounded only by time.
    """
    if scenario.arrival == "concurrency" and scenario.max_requests is None:
        raise InvalidConfigError(
            "max_requests", None, "a closed-loop plan bounded by time only is endless: iter_plan"
        )
    return list(iter_plan(scenario, rng))


def iter_plan(scenario: Scenario, rng: random.Random | None = None) -> Iterator[PlannedRequest]:
    """The requests of ``scenario`` one by one (endless for time-bounded closed loops)."""
    rng = rng or random.Random(scenario.seed)
    if scenario.arrival == "trace":
        yield from _trace_plan(scenario)
        return
    counter = range(scenario.max_requests) if scenario.max_requests else itertools.count()
    t_s = 0.0
    for i in counter:
        if scenario.open_loop:
            if i > 0:
                t_s += _gap_s(scenario, rng)
            if scenario.duration_s is not None and t_s >= scenario.duration_s:
                return
        n_in, n_out = _lengths(scenario, rng)
        yield PlannedRequest(index=i, scheduled_s=t_s, input_tokens=n_in, output_tokens=n_out)


def _gap_s(scenario: Scenario, rng: random.Random) -> float:
    rate = scenario.rate_rps
    assert rate is not None
    if scenario.arrival == "constant":
        return 1.0 / rate
    if scenario.arrival == "poisson":
        return rng.expovariate(rate)
    # gamma with shape k and mean 1/rate: scale = 1 / (rate * k); k = 1 is Poisson
    k = scenario.burstiness
    return rng.gammavariate(k, 1.0 / (rate * k))


def _lengths(scenario: Scenario, rng: random.Random) -> tuple[int, int]:
    s = scenario.length_spread_fraction
    if s == 0:
        return scenario.input_tokens, scenario.output_tokens
    n_in = max(1, round(scenario.input_tokens * rng.uniform(1 - s, 1 + s)))
    n_out = max(1, round(scenario.output_tokens * rng.uniform(1 - s, 1 + s)))
    return n_in, n_out


def _trace_plan(scenario: Scenario) -> list[PlannedRequest]:
    rows: Sequence[TraceRow] = scenario.trace_rows
    t0 = rows[0].arrival_s
    plan: list[PlannedRequest] = []
    for i, row in enumerate(rows):
        t_s = (row.arrival_s - t0) / scenario.time_scale
        if scenario.duration_s is not None and t_s >= scenario.duration_s:
            break
        if scenario.max_requests is not None and i >= scenario.max_requests:
            break
        n_in = max(1, row.input_tokens)
        if scenario.max_input_tokens is not None:
            n_in = min(n_in, scenario.max_input_tokens)
        plan.append(
            PlannedRequest(
                index=i, scheduled_s=t_s, input_tokens=n_in, output_tokens=max(1, row.output_tokens)
            )
        )
    return plan
