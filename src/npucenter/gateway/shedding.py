"""Load shedding: answer 503 + ``Retry-After`` at once instead of queueing without bound.

NOTE(gateway): two signals, both cheap. At the door (:class:`DoorGuard`), before the body or the
key is read: requests in progress in the gateway are capped (``max_inflight_requests``), and
while the event loop runs late (a timer probe every ``probe_interval_s``; when even the least
late of the last ``window`` probes fired more than ``max_loop_lag_s`` late, work waits for the
CPU all the time, not just behind one long step such as a ledger flush holding the GIL: the
gateway's own CPU is the bottleneck) new completions are refused (CoDel's idea, on the loop).
A refused request costs a few microseconds, so the requests already taken in keep the CPU and
goodput stays near capacity under overload. At the fair queue (:class:`WaitEstimator`): the
expected wait of a new waiter is its place in the queue times the mean interval between two
waiters being served over the last second (measured while the queue is not empty); above ``max_expected_wait_s`` (by
default the longest wait, ``max_wait_s``) it is refused now rather than timed out later.
"""

from __future__ import annotations

import asyncio
import math
import time
from collections import deque
from collections.abc import Callable

from npucenter.errors import CapacityUnavailableError

__all__ = ["DoorGuard", "WaitEstimator"]


class DoorGuard:
    """Requests in progress and the event loop's lateness; ``refusal()`` says when to shed."""

    def __init__(
        self,
        max_inflight: int = 4096,
        max_loop_lag_s: float = 0.05,
        probe_interval_s: float = 0.02,
        retry_after_s: float = 1.0,
        window: int = 10,
        now_s: Callable[[], float] = time.monotonic,  # the probes' clock (tests inject one)
    ) -> None:
        self._now_s = now_s
        self.max_inflight = max_inflight
        self.max_loop_lag_s = max_loop_lag_s
        self.probe_interval_s = probe_interval_s
        self.retry_after_s = retry_after_s
        self.inflight = 0
        self.loop_lag_s = 0.0  # the least lateness over the last ``window`` probes
        self._lags: deque[float] = deque(maxlen=max(1, window))
        self.shed = 0  # requests refused so far
        self._probe: asyncio.TimerHandle | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._due = 0.0

    def refusal(self) -> CapacityUnavailableError | None:
        """The error to answer now, or None when the request may come in."""
        if self.max_loop_lag_s > 0 and (
            self._probe is None or self._loop is not asyncio.get_running_loop()
        ):
            self._start_probe()  # first request, or served from another loop than before
        if self.inflight >= self.max_inflight:
            why = f"the gateway has {self.inflight} requests in progress (its bound)"
        elif self.max_loop_lag_s > 0 and self.loop_lag_s > self.max_loop_lag_s:
            why = f"the gateway is saturated (its loop runs {self.loop_lag_s * 1e3:.0f} ms late)"
        else:
            return None
        self.shed += 1
        return CapacityUnavailableError(
            why, hint="retry after the Retry-After seconds", retry_after_s=self.retry_after_s
        )

    def _start_probe(self) -> None:
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:
            return
        if self._probe is not None:
            self._probe.cancel()
        self._loop = loop
        self._lags.clear()
        self.loop_lag_s = 0.0
        self._due = self._now_s() + self.probe_interval_s
        self._probe = loop.call_at(loop.time() + self.probe_interval_s, self._tick, loop)

    def _tick(self, loop: asyncio.AbstractEventLoop) -> None:
        now = self._now_s()
        self._lags.append(max(0.0, now - self._due))
        self.loop_lag_s = min(self._lags)
        if loop.is_closed():
            self._probe = None
            return
        self._due = now + self.probe_interval_s
        self._probe = loop.call_at(loop.time() + self.probe_interval_s, self._tick, loop)

    def close(self) -> None:
        """Stop the probe (the gateway is shutting down)."""
        if self._probe is not None:
            self._probe.cancel()
            self._probe = None


class WaitEstimator:
    """Per model, the mean interval between two waiters served: the gaps of the last
    ``window_s`` (at least the last ``min_gaps``) summed over their number; refuses a waiter
    whose expected wait exceeds ``max_expected_wait_s``.

    NOTE(gateway): not an EWMA of the gaps: slots free in bursts (a replica's batch ends, the
    ticker wakes waiters), so most gaps are ~0 and a few are long; an EWMA spends most of its
    time far below the mean gap and admitted 2-5x the bound (answered p50 1.3-4.4 s under a
    0.5 s bound in bench_gateway's 3x overload). The gaps' sum over their number is the mean
    whatever the bursts; the idle time between two busy periods is no gap, and the last gaps
    of the previous busy period still count, so a new one does not start from one sample.
    """

    def __init__(
        self, max_expected_wait_s: float, window_s: float = 1.0, min_gaps: int = 32
    ) -> None:
        self.max_expected_wait_s = max_expected_wait_s
        self.window_s = window_s
        self.min_gaps = min_gaps
        self._gaps: dict[str, deque[tuple[float, float]]] = {}  # (when, gap), oldest first
        self._sum_s: dict[str, float] = {}
        self._last_s: dict[str, float] = {}

    def served(self, model_id: str, now_s: float, *, measure: bool = True) -> None:
        """A waiter of ``model_id`` got a slot at ``now_s`` (``measure=False``: the queue was
        empty until now, so the time since the last one is no service interval)."""
        last = self._last_s.get(model_id)
        self._last_s[model_id] = now_s
        if last is None or not measure:
            return
        gaps = self._gaps.get(model_id)
        if gaps is None:
            gaps = self._gaps[model_id] = deque()
        gap = max(0.0, now_s - last)
        gaps.append((now_s, gap))
        total = self._sum_s.get(model_id, 0.0) + gap
        while len(gaps) > self.min_gaps and now_s - gaps[0][0] > self.window_s:
            total -= gaps.popleft()[1]
        self._sum_s[model_id] = total

    def expected_wait_s(self, model_id: str, position: int) -> float:
        """Seconds until the waiter at ``position`` (1 = next) is served; 0 without a rate yet."""
        gaps = self._gaps.get(model_id)
        if not gaps:
            return 0.0
        return position * max(0.0, self._sum_s[model_id]) / len(gaps)

    def check(self, model_id: str, position: int) -> None:
        """Raise CapacityUnavailableError (503, retryable) when the wait would be too long."""
        wait = self.expected_wait_s(model_id, position)
        if wait > self.max_expected_wait_s:
            raise CapacityUnavailableError(
                f"the wait for a {model_id} replica would be ~{wait:.1f} s "
                f"(bound {self.max_expected_wait_s:g} s)",
                hint="retry after the Retry-After seconds; the fleet is saturated",
                retry_after_s=float(max(1, min(60, math.ceil(wait / 2)))),
                model=model_id,
            )
