"""Traffic statistics for planning: rate and token-length figures of a stream or a synthetic spec.

Pure: the caller hands in the stream's arrays (from :mod:`npucenter.workload` readers).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np

from npucenter.errors import InvalidConfigError
from npucenter.plan.profile import TrafficStats
from npucenter.plan.spec import PlanSpec, TrafficSpec
from npucenter.workload.readers import read_azure_trace
from npucenter.workload.trace import Trace

__all__ = ["resolve_traffic", "service_trace", "stats_from_spec", "stats_from_stream"]


def service_trace(
    traffic: TrafficSpec, load_trace: Callable[[str], Trace] = read_azure_trace
) -> Trace | None:
    """The service's trace replayed at its ``rate_scale`` (None for synthetic traffic)."""
    if traffic.trace is None:
        return None
    trace = load_trace(traffic.trace)
    return trace.scale_rate(traffic.rate_scale) if traffic.rate_scale != 1.0 else trace


def resolve_traffic(
    spec: PlanSpec, load_trace: Callable[[str], Trace] = read_azure_trace
) -> dict[str, TrafficStats]:
    """Traffic statistics of every service: measured on its trace, or from its synthetic spec."""
    out: dict[str, TrafficStats] = {}
    for svc in spec.services:
        trace = service_trace(svc.traffic, load_trace)
        if trace is None:
            out[svc.name] = stats_from_spec(svc.traffic)
        else:
            out[svc.name] = stats_from_stream(
                trace.arrival_s, trace.prompt_tokens, trace.output_tokens
            )
    return out


def stats_from_stream(
    arrival_s: Sequence[float] | np.ndarray,
    input_tokens: Sequence[float] | np.ndarray,
    output_tokens: Sequence[float] | np.ndarray,
    *,
    rate_scale: float = 1.0,
) -> TrafficStats:
    """Statistics of a recorded stream replayed at ``rate_scale`` times its rate.

    The rate is requests over the span from the first to the last arrival (scaled).

    Raises:
        InvalidConfigError: fewer than two requests, or arrays of different lengths.
    """
    arr = np.asarray(arrival_s, dtype=float)
    inp = np.asarray(input_tokens, dtype=float)
    out = np.asarray(output_tokens, dtype=float)
    if not (arr.shape == inp.shape == out.shape):
        raise InvalidConfigError("traffic", arr.shape, "arrays differ in length")
    if arr.size < 2:
        raise InvalidConfigError("traffic", int(arr.size), "needs at least two requests")
    if rate_scale <= 0:
        raise InvalidConfigError("traffic.rate_scale", rate_scale, "must be > 0")
    span = float(arr.max() - arr.min()) / rate_scale
    if span <= 0:
        raise InvalidConfigError("traffic", span, "all requests arrive at the same instant")
    return TrafficStats(
        rate_rps=arr.size / span,
        mean_input_tokens=float(inp.mean()),
        mean_output_tokens=float(out.mean()),
        p90_input_tokens=float(np.percentile(inp, 90)),
        p90_output_tokens=float(np.percentile(out, 90)),
        num_requests=int(arr.size),
        duration_s=span,
    )


def stats_from_spec(traffic: TrafficSpec) -> TrafficStats:
    """Statistics of a synthetic (Poisson, fixed-length) stream given by rate and mean lengths.

    Raises:
        InvalidConfigError: the spec names a trace (use :func:`stats_from_stream`).
    """
    if traffic.trace is not None:
        raise InvalidConfigError(
            "traffic.trace", traffic.trace, "a trace needs its stream: use stats_from_stream"
        )
    assert traffic.rate_rps is not None
    assert traffic.mean_input_tokens is not None and traffic.mean_output_tokens is not None
    return TrafficStats(
        rate_rps=traffic.rate_rps * traffic.rate_scale,
        mean_input_tokens=traffic.mean_input_tokens,
        mean_output_tokens=traffic.mean_output_tokens,
        p90_input_tokens=traffic.mean_input_tokens,
        p90_output_tokens=traffic.mean_output_tokens,
    )
