"""The virtual engine's clock-driven loop: step the replica core, wait the step, deliver tokens.

NOTE(engines): the loop keeps a modelled timeline. A step that starts at modelled time ``t``
ends at ``t + duration_s``; the loop sleeps until the real clock reaches that end (scaled by
``time_scale``) and then hands the step's tokens to the requests' streams. Back-to-back steps
start where the previous one ended, so sleep overshoot does not accumulate; after idling, or
when the loop lags the real clock by more than ``max_lag_s``, the timeline resyncs to the clock.
``time_scale`` is real seconds per modelled second (1 = real time, 0 = as fast as possible).
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

from npucenter.clock import Clock, SystemClock
from npucenter.engines.virtual.core import ReplicaCore, SeqRequest
from npucenter.errors import CapacityUnavailableError, UpstreamError

__all__ = ["EngineLoop", "EngineStats", "RequestHandle", "RequestResult"]

log = logging.getLogger(__name__)

Sleep = Callable[[float], Awaitable[Any]]


@dataclass(frozen=True, slots=True, kw_only=True)
class RequestResult:
    """How one request went, in modelled seconds."""

    request_id: str
    prompt_tokens: int
    completion_tokens: int
    arrival_s: float
    first_token_s: float
    finished_s: float

    @property
    def ttft_s(self) -> float:
        """Time to first token."""
        return self.first_token_s - self.arrival_s

    @property
    def e2e_s(self) -> float:
        """Arrival to last token."""
        return self.finished_s - self.arrival_s


class RequestHandle:
    """A submitted request: a queue of token counts (streaming) and a result future.

    ``queue`` receives the number of tokens of each step, then ``None`` when the request ends.
    """

    __slots__ = (
        "arrival_s",
        "completion_tokens",
        "first_token_s",
        "max_tokens",
        "prompt_tokens",
        "queue",
        "request_id",
        "result",
    )

    def __init__(
        self, request_id: str, prompt_tokens: int, max_tokens: int, arrival_s: float, stream: bool
    ) -> None:
        self.request_id = request_id
        self.prompt_tokens = prompt_tokens
        self.max_tokens = max_tokens
        self.arrival_s = arrival_s
        self.first_token_s = -1.0
        self.completion_tokens = 0
        self.queue: asyncio.Queue[int | None] | None = asyncio.Queue() if stream else None
        self.result: asyncio.Future[RequestResult] = asyncio.get_running_loop().create_future()


@dataclass(slots=True)
class EngineStats:
    """Running totals the /metrics endpoint reports (modelled time and energy)."""

    num_steps: int = 0
    busy_s: float = 0.0
    energy_j: float = 0.0
    last_power_w: float = 0.0
    prompt_tokens: int = 0
    generation_tokens: int = 0
    finished: int = 0
    aborted: int = 0
    preemptions: int = 0
    resyncs: int = 0


class EngineLoop:
    """Drives a replica core in (scaled) real time and feeds tokens to request handles."""

    def __init__(
        self,
        core: ReplicaCore,
        *,
        idle_power_w: float,
        kv_capacity_tokens: int,
        request_cls: type = SeqRequest,
        clock: Clock | None = None,
        sleep: Sleep = asyncio.sleep,
        time_scale: float = 1.0,
        max_lag_s: float = 0.05,
        on_finish: Callable[[RequestResult], None] | None = None,
    ) -> None:
        self._core = core
        self._request_cls = request_cls
        self._clock = clock or SystemClock()
        self._sleep = sleep
        self._scale = time_scale
        self._max_lag_s = max_lag_s
        self._on_finish = on_finish
        self.idle_power_w = idle_power_w
        self.kv_capacity_tokens = kv_capacity_tokens
        self.stats = EngineStats(last_power_w=idle_power_w)
        self._live: dict[str, RequestHandle] = {}
        self._wake = asyncio.Event()
        self._ids = itertools.count()
        self._t0 = self._clock.now_s()
        self._vnow = 0.0  # modelled time at which the next step starts
        self._energy_mark_v = 0.0  # modelled time up to which energy is accounted
        self._energy_reported_j = 0.0  # the counter as last reported (kept monotone)
        self._task: asyncio.Task[None] | None = None
        self.fatal: Exception | None = None

    # --- time ---------------------------------------------------------------------------------
    def modelled_now_s(self) -> float:
        """Modelled time now: the real clock scaled, or the timeline when not scaled."""
        if self._scale <= 0:
            return self._vnow
        return (self._clock.now_s() - self._t0) / self._scale

    # --- requests -----------------------------------------------------------------------------
    def submit(self, prompt_tokens: int, max_tokens: int, *, stream: bool) -> RequestHandle:
        """Queue a request; its tokens arrive on ``handle.queue`` / ``handle.result``."""
        if self.fatal is not None:
            raise UpstreamError("the virtual engine's loop has stopped", hint="restart the replica")
        if prompt_tokens + max_tokens > self.kv_capacity_tokens:
            raise CapacityUnavailableError(
                f"{prompt_tokens + max_tokens} tokens exceed this replica's KV cache "
                f"({self.kv_capacity_tokens} tokens)",
                hint="shorten the prompt or max_tokens, or use a replica with more cards",
            )
        rid = f"r{next(self._ids)}"
        handle = RequestHandle(rid, prompt_tokens, max_tokens, self.modelled_now_s(), stream)
        self._core.add(
            self._request_cls(
                request_id=rid,
                prompt_tokens=prompt_tokens,
                max_output_tokens=max_tokens,
                arrival_s=handle.arrival_s,
            )
        )
        self._live[rid] = handle
        self.stats.prompt_tokens += prompt_tokens
        self._wake.set()
        return handle

    def abort(self, request_id: str) -> None:
        """Cancel a request (client gone): the core frees its KV, no more work is done for it."""
        handle = self._live.pop(request_id, None)
        if handle is None:
            return
        self._core.abort(request_id)
        self.stats.aborted += 1
        if handle.queue is not None:
            handle.queue.put_nowait(None)
        if not handle.result.done():
            handle.result.cancel()

    @property
    def num_live(self) -> int:
        """Requests submitted and not yet finished or aborted."""
        return len(self._live)

    def counts(self) -> tuple[int, int]:
        """(running, waiting): the core's figures (sequences holding KV, and queued ones)."""
        running = getattr(self._core, "num_running", None)
        waiting = getattr(self._core, "num_waiting", None)
        if isinstance(running, int) and isinstance(waiting, int):
            return running, waiting
        started = sum(1 for h in self._live.values() if h.first_token_s >= 0)
        return started, len(self._live) - started

    def kv_used_tokens(self) -> int:
        """KV tokens in use: the core's figure, or prompt + output of requests that started."""
        used = getattr(self._core, "kv_used_tokens", None)
        if isinstance(used, int):
            return used
        return sum(
            h.prompt_tokens + h.completion_tokens
            for h in self._live.values()
            if h.first_token_s >= 0
        )

    def energy_j_now(self) -> float:
        """Energy so far, including idle power up to now (never decreases between calls)."""
        idle_s = max(0.0, self.modelled_now_s() - self._energy_mark_v)
        self._energy_reported_j = max(
            self._energy_reported_j, self.stats.energy_j + self.idle_power_w * idle_s
        )
        return self._energy_reported_j

    def power_w_now(self) -> float:
        """Power of the last step while busy, idle power otherwise."""
        return self.stats.last_power_w if self._live else self.idle_power_w

    # --- the loop -----------------------------------------------------------------------------
    def start(self) -> None:
        """Start the loop as a task on the running event loop."""
        if self._task is None:
            self._t0 = self._clock.now_s()
            self._vnow = self._energy_mark_v = 0.0
            self._task = asyncio.get_running_loop().create_task(self.run(), name="engine-loop")

    async def stop(self) -> None:
        """Stop the loop and fail the requests still live."""
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None
        for rid in list(self._live):
            self.abort(rid)

    async def run(self) -> None:
        """Step until cancelled; a failing step stops the loop and is kept in ``fatal``."""
        try:
            while True:
                if not await self._step_once():
                    await self._wait_for_work()
        except Exception as exc:  # fatal: logged, kept in .fatal, reported by /health
            log.exception("virtual engine loop failed")
            self.fatal = exc
            for rid in list(self._live):
                self.abort(rid)

    async def _wait_for_work(self) -> None:
        self._wake.clear()
        await self._wake.wait()
        self._vnow = max(self._vnow, self.modelled_now_s())

    async def _step_once(self) -> bool:
        now_v = self.modelled_now_s()
        if now_v - self._vnow > self._max_lag_s:
            if self.stats.num_steps:
                self.stats.resyncs += 1
            self._vnow = now_v
        result = self._core.step(self._vnow)
        if result is None:
            return False
        end_v = self._vnow + result.duration_s
        if self._scale > 0:
            delay = self._t0 + end_v * self._scale - self._clock.now_s()
            if delay > 0:
                await self._sleep(delay)
        else:
            await self._sleep(0)
        self._account(result, start_v=self._vnow)
        self._vnow = end_v
        self._deliver(result, end_v)
        return True

    def _account(self, result: Any, *, start_v: float) -> None:
        stats = self.stats
        stats.num_steps += 1
        stats.busy_s += result.duration_s
        idle_s = max(0.0, start_v - self._energy_mark_v)
        stats.energy_j += result.energy_j + self.idle_power_w * idle_s
        self._energy_mark_v = start_v + result.duration_s
        if result.duration_s > 0:
            stats.last_power_w = result.energy_j / result.duration_s
        stats.preemptions += len(result.preempted_ids)

    def _deliver(self, result: Any, end_v: float) -> None:
        live = self._live
        for rid, n in result.emitted:
            handle = live.get(rid)
            if handle is None:
                continue  # aborted while the step ran
            if handle.first_token_s < 0:
                handle.first_token_s = end_v
            handle.completion_tokens += n
            self.stats.generation_tokens += n
            if handle.queue is not None:
                handle.queue.put_nowait(n)
        for rid in result.finished_ids:
            handle = live.pop(rid, None)
            if handle is None:
                continue
            self.stats.finished += 1
            res = RequestResult(
                request_id=rid,
                prompt_tokens=handle.prompt_tokens,
                completion_tokens=handle.completion_tokens,
                arrival_s=handle.arrival_s,
                first_token_s=handle.first_token_s,
                finished_s=end_v,
            )
            if handle.queue is not None:
                handle.queue.put_nowait(None)
            if not handle.result.done():
                handle.result.set_result(res)
            if self._on_finish is not None:
                self._on_finish(res)
