"""A streamed run of the twin: arrivals from an iterator of trace blocks, memory bounded.

``Center.run`` keeps a record per request (arrays of the trace's length), which is what its
result offers; at national scale (10,000 replicas, 10 M requests) the arrays and the trace are
most of the memory. :func:`run_streamed` serves the same requests through the same event loop
(``sim.center._Loop``, the same routing and scheduling, so the same times) but reads arrivals
block by block from an iterator and keeps a request only while it is in flight: when it
finishes or is rejected its latencies are folded into running totals and log-spaced histograms
(quantiles to within one bin, 0.5 %) and it is dropped. Memory is O(replicas + requests in
flight + one block), not O(requests).

Colocated fleets without jobs or autoscaling only (the paths that reach back into the whole
trace); anything else raises InvalidConfigError. Pure: no I/O, no clock.
"""

from __future__ import annotations

import heapq
import math
from collections.abc import Callable, Iterable, Iterator
from typing import Any

import numpy as np

from npucenter.errors import InvalidConfigError
from npucenter.sim.center import _CAPACITY, _HANDOFF, _SCALE, _WAKE, Center, _Loop
from npucenter.workload.trace import Trace

__all__ = ["StreamSummary", "run_streamed"]

_LOG_LO, _LOG_HI, _BINS = math.log(1e-5), math.log(1e5), 4600  # 0.5 % wide bins, 10 us - 1 day

StreamSummary = dict[str, Any]


class _Hist:
    """Count, sum and a log-spaced histogram of positive values (quantiles to one bin)."""

    __slots__ = ("counts", "n", "total")

    def __init__(self) -> None:
        self.counts = [0] * (_BINS + 2)
        self.n = 0
        self.total = 0.0

    def add(self, x: float) -> None:
        self.n += 1
        self.total += x
        if x <= 0.0:
            b = 0
        else:
            b = int((math.log(x) - _LOG_LO) * (_BINS / (_LOG_HI - _LOG_LO))) + 1
            b = min(max(b, 0), _BINS + 1)
        self.counts[b] += 1

    def summary(self) -> dict[str, float]:
        if not self.n:
            return {"p50": math.nan, "p90": math.nan, "p99": math.nan, "mean": math.nan}
        cum = np.cumsum(self.counts)
        out = {"mean": self.total / self.n}
        width = (_LOG_HI - _LOG_LO) / _BINS
        for name, q in (("p50", 0.5), ("p90", 0.9), ("p99", 0.99)):
            b = int(np.searchsorted(cum, q * self.n))  # first bin holding the q-th value
            out[name] = 0.0 if b == 0 else math.exp(_LOG_LO + (b - 0.5) * width)
        return out


class _InFlight:
    """What the loop writes per request, kept only while the request is in flight."""

    def __init__(self) -> None:
        self.arrival: dict[int, float] = {}
        self.output: dict[int, int] = {}
        self.first: dict[int, float] = {}
        self.ttft, self.tpot, self.e2e = _Hist(), _Hist(), _Hist()
        self.completed = 0
        self.rejected = 0
        self.output_tokens = 0
        self.last_finish_s = 0.0

    def finish(self, idx: int, finish_s: float) -> None:
        arrival = self.arrival.pop(idx)
        out = self.output.pop(idx)
        first = self.first.pop(idx, math.nan)
        self.completed += 1
        self.output_tokens += out
        self.last_finish_s = max(self.last_finish_s, finish_s)
        self.ttft.add(first - arrival)
        self.e2e.add(finish_s - arrival)
        if out > 1:
            self.tpot.add((finish_s - first) / (out - 1))

    def reject(self, idx: int) -> None:
        if self.arrival.pop(idx, None) is not None:
            self.output.pop(idx, None)
            self.first.pop(idx, None)
            self.rejected += 1


class _FirstTokens:
    """``loop.first_token_s``: NaN until set, per in-flight request."""

    def __init__(self, state: _InFlight) -> None:
        self._first = state.first

    def __getitem__(self, idx: int) -> float:
        return self._first.get(idx, math.nan)

    def __setitem__(self, idx: int, value: float) -> None:
        self._first[idx] = value


class _Finishes:
    """``loop.finish_s``: setting one folds the request into the totals and forgets it."""

    def __init__(self, state: _InFlight) -> None:
        self._state = state

    def __setitem__(self, idx: int, value: float) -> None:
        self._state.finish(idx, value)


class _Rejections:
    """``loop.rejected``: setting one counts a rejection and forgets the request."""

    def __init__(self, state: _InFlight) -> None:
        self._state = state

    def __setitem__(self, idx: int, value: bool) -> None:
        if value:
            self._state.reject(idx)


class _Ignored:
    """A per-request record the streamed summary does not keep (replica, preemptions)."""

    def __getitem__(self, idx: int) -> int:
        return 0

    def __setitem__(self, idx: int, value: Any) -> None:
        pass


def _check(center: Center) -> None:
    fleet = center.fleet
    if fleet.jobs:
        raise InvalidConfigError("fleet", fleet.name, "a streamed run takes no jobs")
    for dep in fleet.deployments:
        if dep.role != "both":
            raise InvalidConfigError(
                "fleet", fleet.name, "a streamed run takes colocated replicas only"
            )
        if center.autoscale and dep.autoscale is not None:
            raise InvalidConfigError(
                "fleet", fleet.name, "a streamed run takes a fixed fleet (Center(autoscale=False))"
            )


def run_streamed(
    center: Center,
    blocks: Iterable[Trace],
    *,
    progress: Callable[[int, float], None] | None = None,
) -> StreamSummary:
    """Serve the requests of ``blocks`` (consecutive traces of one run: arrival times keep
    increasing across blocks, same service names) on ``center``; a summary, no records.

    ``progress(requests so far, simulated time)`` is called after each block.
    """
    _check(center)
    it: Iterator[Trace] = iter(blocks)
    first = next(it, None)
    if first is None:
        raise InvalidConfigError("blocks", 0, "need at least one trace block")
    replicas, pools = center._fresh(1e12)  # one bin: no timeline kept
    svc_pools = center._pools_for(first, pools)
    loop = _Loop(center.fleet, first.head(0), replicas, svc_pools)
    state = _InFlight()
    loop.first_token_s = _FirstTokens(state)  # type: ignore[assignment]
    loop.finish_s = _Finishes(state)  # type: ignore[assignment]
    loop.rejected = _Rejections(state)  # type: ignore[assignment]
    loop.replica_index = loop.decode_replica_index = loop.preemptions = _Ignored()  # type: ignore[assignment]
    heap = loop.heap
    i = 0
    block: Trace | None = first
    last_arrival = -math.inf
    while block is not None:
        if block.service_names != first.service_names:
            raise InvalidConfigError("blocks", block.name, "every block needs the same services")
        arrivals = block.arrival_s.tolist()
        prompts = block.prompt_tokens.tolist()
        outputs = block.output_tokens.tolist()
        services = block.service_index.tolist()
        if arrivals and arrivals[0] < last_arrival:
            raise InvalidConfigError("blocks", block.name, "arrivals must keep increasing")
        for k, t in enumerate(arrivals):
            while heap and heap[0][0] < t:
                _event(loop, heapq.heappop(heap))
            loop.num_events += 1
            state.arrival[i] = t
            state.output[i] = outputs[k]
            loop._arrive(i, t, prompts[k], outputs[k], svc_pools[services[k]])
            i += 1
        if arrivals:
            last_arrival = arrivals[-1]
        if progress is not None:
            progress(i, last_arrival)
        block = next(it, None)
    while heap:
        _event(loop, heapq.heappop(heap))
    cores = [r.core for r in replicas]
    energy = sum(c.energy_j for c in cores)
    return {
        "requests": i,
        "completed": state.completed,
        "rejected": state.rejected,
        "in_flight_at_end": len(state.arrival),
        "output_tokens": state.output_tokens,
        "simulated_s": max(state.last_finish_s, last_arrival if i else 0.0),
        "ttft_s": state.ttft.summary(),
        "tpot_s": state.tpot.summary(),
        "e2e_s": state.e2e.summary(),
        "busy_energy_j": energy,
        "events": loop.num_events,
        "replicas": len(replicas),
        "quantiles": "log-spaced histogram, bins 0.5 % wide (mean exact)",
    }


def _event(loop: _Loop, item: tuple[float, int, int, int, int]) -> None:
    """One event of the center's heap, as ``_Loop.run`` handles it (wake-ups only here)."""
    t, kind, _, a, b = item
    loop.num_events += 1
    if kind == _WAKE:
        rep = loop.replicas[a]
        if rep.version != b:
            return
        rep.core.advance_until(t, inclusive=True)
        loop._after_sync(rep)
    elif kind in (_HANDOFF, _CAPACITY, _SCALE):  # excluded by _check
        raise AssertionError(f"event kind {kind} in a streamed run")
