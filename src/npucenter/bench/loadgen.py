"""The load generator: sends a scenario's requests on time and records what happened.

NOTE(bench): open-loop arrivals are dispatched by one coroutine that sleeps until each request's
due time and hands it to its own task, so a slow response never delays the next arrival; the
delay between due time and the moment the request is handed to the socket is recorded as its
scheduling lag, and achieved vs scheduled send rate is part of every summary. Closed-loop
(concurrency) runs use N workers that each send their next request when the previous finishes.
The httpx pool is sized to the concurrency (open loop: unbounded unless ``max_concurrency``), so no
request waits for a connection inside the client where the lag would go unseen.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import httpx

from npucenter.bench.client import EndpointInfo, Target, build_body, send_request
from npucenter.bench.corpus import TokenCalibration, make_prompt
from npucenter.bench.metrics import SLO, summarize
from npucenter.bench.power import EnergyReport, PowerSampler, PowerSource
from npucenter.bench.record import RequestRecord
from npucenter.bench.scenario import PlannedRequest, Scenario, build_plan, iter_plan
from npucenter.bench.transport import FastTransport
from npucenter.errors import InvalidConfigError

__all__ = ["TRANSPORTS", "RunOutcome", "RunProgress", "make_client", "run_load", "scenario_slo"]

#: Client transports: ``fast`` (ours, http:// only, https falls back) and ``httpx`` (default).
TRANSPORTS = ("fast", "httpx")


@dataclass(slots=True)
class RunProgress:
    """Live counters a progress display reads while a run goes on (written by the generator)."""

    label: str = ""
    planned: int = 0
    sent: int = 0
    completed: int = 0
    failed: int = 0
    output_tokens: int = 0
    started_s: float | None = None
    step: int = 0
    num_steps: int = 1

    @property
    def in_flight(self) -> int:
        """Requests sent and not yet answered."""
        return self.sent - self.completed - self.failed

    def elapsed_s(self) -> float:
        """Seconds since the current run started."""
        return 0.0 if self.started_s is None else time.perf_counter() - self.started_s


@dataclass(slots=True, kw_only=True)
class RunOutcome:
    """Records and summary of one run (one scenario or one sweep step)."""

    records: list[RequestRecord]
    summary: dict[str, Any]
    energy: EnergyReport | None = None
    extra: dict[str, Any] = field(default_factory=dict)


def scenario_slo(scenario: Scenario) -> SLO:
    """The SLO a scenario declares."""
    return SLO(ttft_s=scenario.slo_ttft_s, tpot_s=scenario.slo_tpot_s, e2e_s=scenario.slo_e2e_s)


def make_client(
    max_connections: int | None, timeout_s: float, transport: str = "fast"
) -> httpx.AsyncClient:
    """An httpx client with a keep-alive pool of ``max_connections`` (None: unbounded).

    ``transport="fast"`` mounts :class:`FastTransport` for ``http://`` (``https://`` keeps
    httpx's default); ``"httpx"`` uses httpx's default transport throughout.
    """
    if transport not in TRANSPORTS:
        raise InvalidConfigError("transport", transport, f"must be one of {TRANSPORTS}")
    limits = httpx.Limits(
        max_connections=max_connections,
        max_keepalive_connections=max_connections if max_connections else 4096,
        keepalive_expiry=30.0,
    )
    timeout = httpx.Timeout(timeout_s, connect=min(10.0, timeout_s))
    mounts: dict[str, httpx.AsyncBaseTransport] = {}
    if transport == "fast":
        mounts["http://"] = FastTransport(max_keepalive_connections=max_connections or 4096)
    return httpx.AsyncClient(limits=limits, timeout=timeout, mounts=mounts)


async def run_load(
    client: httpx.AsyncClient,
    target: Target,
    scenario: Scenario,
    *,
    info: EndpointInfo | None = None,
    progress: RunProgress | None = None,
    power: PowerSource | None = None,
    step: int = 0,
    plan: list[PlannedRequest] | None = None,
) -> RunOutcome:
    """Run ``scenario`` against ``target`` and summarise it (request failures never raise)."""
    cal = info.calibration if info is not None else TokenCalibration()
    if info is not None:
        target = info.adjust(target)
    progress = progress or RunProgress()
    if plan is None and scenario.open_loop:
        plan = build_plan(scenario)
    progress.planned = len(plan) if plan is not None else (scenario.max_requests or 0)
    progress.sent, progress.completed, progress.failed = 0, 0, 0
    progress.output_tokens = 0
    if scenario.warmup_requests:
        await _warmup(client, target, scenario, cal)
    sampler = PowerSampler(power, client) if power is not None else None
    if sampler is not None and not await sampler.start():
        sampler = None
    sender = _Sender(client, target, scenario, cal, progress)
    if plan is not None and scenario.open_loop:
        records = await sender.open_loop(plan, step)
    else:
        records = await sender.closed_loop(iter(plan) if plan else iter_plan(scenario), step)
    energy = await sampler.stop() if sampler is not None else None
    summary = summarize(
        records,
        slo=scenario_slo(scenario),
        target_rate_rps=scenario.rate_rps,
        open_loop=scenario.open_loop,
    )
    _add_energy(summary, energy)
    return RunOutcome(records=records, summary=summary, energy=energy)


def _add_energy(summary: dict[str, Any], energy: EnergyReport | None) -> None:
    if energy is None or energy.energy_j <= 0:
        summary.update(energy_j=None, mean_power_w=None, output_tokens_per_j=None)
        return
    # energy over the sampling window; tokens/J uses the tokens finished within the run
    summary["energy_j"] = energy.energy_j
    summary["mean_power_w"] = energy.mean_power_w
    summary["output_tokens_per_j"] = summary["total_output_tokens"] / energy.energy_j
    summary["total_tokens_per_j"] = (
        summary["total_input_tokens"] + summary["total_output_tokens"]
    ) / energy.energy_j
    summary["energy_method"] = energy.method


class _Sender:
    def __init__(
        self,
        client: httpx.AsyncClient,
        target: Target,
        scenario: Scenario,
        cal: TokenCalibration,
        progress: RunProgress,
    ) -> None:
        self.client = client
        self.target = target
        self.scenario = scenario
        self.cal = cal
        self.progress = progress
        self.run_start = 0.0
        cap = scenario.max_concurrency if scenario.open_loop else None
        self.slots = asyncio.Semaphore(cap) if cap else None

    def _record(self, p: PlannedRequest, step: int) -> RequestRecord:
        return RequestRecord(
            index=p.index,
            step=step,
            scheduled_s=p.scheduled_s,
            target_input_tokens=p.input_tokens,
            target_output_tokens=p.output_tokens,
        )

    def _body(self, p: PlannedRequest, step: int) -> bytes:
        words = self.cal.words_for(p.input_tokens)
        prompt = make_prompt(
            words, seed=(self.scenario.seed * 1_000_003 + step) * 10_000_019 + p.index
        )
        return json.dumps(build_body(self.target, prompt, p.output_tokens)).encode()

    async def _one(self, p: PlannedRequest, rec: RequestRecord, step: int) -> None:
        body = self._body(p, step)
        prog = self.progress
        try:
            if self.slots is not None:
                async with self.slots:
                    prog.sent += 1
                    await send_request(self.client, self.target, body, rec, self.run_start)
            else:
                prog.sent += 1
                await send_request(self.client, self.target, body, rec, self.run_start)
        finally:
            if rec.start_s is not None and self.scenario.open_loop:
                rec.lag_s = rec.start_s - rec.scheduled_s
            if rec.ok:
                prog.completed += 1
                prog.output_tokens += rec.output_tokens
            else:
                prog.failed += 1
                if rec.error is None:
                    rec.error = "dropped"
                    rec.error_detail = "still running when the run's drain timeout ended"

    async def open_loop(self, plan: list[PlannedRequest], step: int) -> list[RequestRecord]:
        records = [self._record(p, step) for p in plan]
        perf = time.perf_counter
        self.run_start = perf() + 0.01
        self.progress.started_s = self.run_start
        tasks: set[asyncio.Task[None]] = set()
        for p, rec in zip(plan, records, strict=True):
            delay = self.run_start + p.scheduled_s - perf()
            if delay > 0:
                await asyncio.sleep(delay)
            task = asyncio.create_task(self._one(p, rec, step))
            tasks.add(task)
            task.add_done_callback(tasks.discard)
        await self._drain(tasks, self.scenario.drain_timeout_s)
        return records

    async def closed_loop(self, plan: Iterator[PlannedRequest], step: int) -> list[RequestRecord]:
        n_workers = self.scenario.concurrency or 1
        perf = time.perf_counter
        self.run_start = perf()
        self.progress.started_s = self.run_start
        duration = self.scenario.duration_s
        deadline = self.run_start + duration if duration is not None else None
        used: list[RequestRecord] = []
        queue = plan

        async def worker() -> None:
            for p in queue:
                if deadline is not None and perf() >= deadline:
                    return
                rec = self._record(p, step)
                rec.scheduled_s = perf() - self.run_start
                used.append(rec)
                await self._one(p, rec, step)

        tasks = {asyncio.create_task(worker()) for _ in range(n_workers)}
        budget = (duration or 0.0) + self.scenario.drain_timeout_s if duration else None
        await self._drain(tasks, budget)
        used.sort(key=lambda r: r.index)
        return used

    async def _drain(self, tasks: set[asyncio.Task[None]], timeout_s: float | None) -> None:
        if not tasks:
            return
        pending = set(tasks)
        _, still = await asyncio.wait(pending, timeout=timeout_s)
        for task in still:
            task.cancel()
        for task in still:
            with contextlib.suppress(asyncio.CancelledError):
                await task


async def _warmup(
    client: httpx.AsyncClient, target: Target, scenario: Scenario, cal: TokenCalibration
) -> None:
    for i in range(scenario.warmup_requests):
        prompt = make_prompt(cal.words_for(scenario.input_tokens), seed=-1000 - i)
        body = json.dumps(build_body(target, prompt, scenario.output_tokens)).encode()
        await send_request(client, target, body, RequestRecord(index=-1 - i), time.perf_counter())
