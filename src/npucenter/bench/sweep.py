"""Sweeps: a rate sweep to saturation and a concurrency sweep, each a series of bounded runs.

NOTE(bench): the saturation point is the endpoint's service rate: the most requests per second it
completes in steady state. Each step's steady throughput counts completions inside the send
window after warm-up (see ``metrics._steady_throughput``); once offered load exceeds capacity the
queue grows and that count is the capacity itself. A rate sweep without explicit rates first
probes capacity with a short closed-loop run at high concurrency, then offers fixed fractions of
it (below and above), so the ladder brackets the knee in a bounded number of steps; if the last
step still keeps up (the probe underestimated), up to four more steps of +25 % follow. Steps are
lengthened to at least three median e2e latencies (at most 3x the requested step) so that the
steady window holds several request lifetimes. We report
``saturation_rps`` (the highest steady throughput seen) and ``max_sustained_rate_rps`` (the
highest offered rate still served at >= 95 % of what its schedule offered, nothing dropped
and no growing backlog: TTFT of the last third of requests not above twice the first third's + 50 ms).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from typing import Any

import httpx

from npucenter.bench.client import EndpointInfo, Target
from npucenter.bench.loadgen import RunOutcome, RunProgress, run_load
from npucenter.bench.power import PowerSource
from npucenter.bench.record import RequestRecord
from npucenter.bench.scenario import Scenario
from npucenter.errors import InvalidConfigError

__all__ = [
    "DEFAULT_RATE_FRACTIONS",
    "SweepOutcome",
    "backlog_grows",
    "concurrency_sweep",
    "rate_sweep",
    "saturation_of",
]

#: Offered load as fractions of the probed capacity.
DEFAULT_RATE_FRACTIONS = (0.25, 0.5, 0.75, 0.9, 1.05, 1.25, 1.5)
_SUSTAINED_FRACTION = 0.95
_MAX_EXTRA_STEPS = 4


@dataclasses.dataclass(slots=True, kw_only=True)
class SweepOutcome:
    """The steps of a sweep and what they say about saturation."""

    steps: list[RunOutcome]
    saturation: dict[str, Any]
    probe: dict[str, Any] | None = None

    def runs(self) -> list[dict[str, Any]]:
        """Per-step rows for the result file (``offered`` is rate or concurrency)."""
        return [{"step": i, **s.extra, "summary": s.summary} for i, s in enumerate(self.steps)]

    def records(self) -> list[Any]:
        """All request records of every step."""
        return [r for s in self.steps for r in s.records]


def backlog_grows(records: Sequence[RequestRecord]) -> bool:
    """True when later requests wait clearly longer for their first token (a growing queue)."""
    ttfts = [r.ttft_s for r in sorted(records, key=lambda r: r.index) if r.ttft_s is not None]
    if len(ttfts) < 6:
        return False
    third = len(ttfts) // 3
    first = sum(ttfts[:third]) / third
    last = sum(ttfts[-third:]) / third
    return last > 2 * first + 0.05


def saturation_of(steps: Sequence[RunOutcome]) -> dict[str, Any]:
    """Saturation figures of a sweep's steps."""
    best_rps = 0.0
    best_tok = 0.0
    best_step = None
    sustained = None
    for i, s in enumerate(steps):
        thr = s.summary.get("steady_request_throughput_rps") or s.summary["request_throughput_rps"]
        if thr > best_rps:
            best_rps, best_step = thr, i
            best_tok = s.summary["output_tokens_per_s"]
        offered: float | None = s.extra.get("offered_rate_rps")
        if offered is not None and _sustained(s):
            sustained = max(sustained or 0.0, offered)
    return {
        "saturation_rps": best_rps,
        "saturation_output_tokens_per_s": best_tok,
        "saturation_step": best_step,
        "max_sustained_rate_rps": sustained,
        "definition": "highest steady completion rate over the sweep's steps",
    }


async def rate_sweep(
    client: httpx.AsyncClient,
    target: Target,
    base: Scenario,
    *,
    info: EndpointInfo | None = None,
    rates_rps: Sequence[float] | None = None,
    step_duration_s: float = 10.0,
    probe_concurrency: int = 256,
    fractions: Sequence[float] = DEFAULT_RATE_FRACTIONS,
    progress: RunProgress | None = None,
    power: PowerSource | None = None,
) -> SweepOutcome:
    """Offer increasing open-loop rates for ``step_duration_s`` each; find the saturation point."""
    if step_duration_s <= 0:
        raise InvalidConfigError("step_duration_s", step_duration_s, "must be > 0")
    probe = None
    if not rates_rps:
        probe_sc = dataclasses.replace(
            base,
            name=f"{base.name}-probe",
            arrival="concurrency",
            concurrency=probe_concurrency,
            duration_s=step_duration_s,
            max_requests=None,
            drain_timeout_s=max(step_duration_s, 10.0),
        )
        if progress is not None:
            progress.label = f"probe c={probe_concurrency}"
        probe_run = await run_load(client, target, probe_sc, info=info, progress=progress)
        cap = (
            probe_run.summary.get("steady_request_throughput_rps")
            or probe_run.summary["request_throughput_rps"]
        )
        if not cap:
            raise InvalidConfigError(
                "endpoint", target.root_url, "the capacity probe completed no request"
            )
        probe = {"concurrency": probe_concurrency, "throughput_rps": cap}
        rates_rps = [cap * f for f in fractions]
    ladder = list(rates_rps)
    auto = probe is not None
    steps: list[RunOutcome] = []
    duration_s = step_duration_s
    i = 0
    while i < len(ladder):
        rate = ladder[i]
        sc = dataclasses.replace(
            base,
            name=f"{base.name}-r{i}",
            arrival=base.arrival if base.arrival in ("poisson", "constant", "gamma") else "poisson",
            rate_rps=rate,
            duration_s=duration_s,
            max_requests=None,
            drain_timeout_s=max(duration_s, 5.0),
            seed=base.seed + i,
        )
        if progress is not None:
            progress.label, progress.step, progress.num_steps = f"{rate:.2f} req/s", i, len(ladder)
        run = await run_load(client, target, sc, info=info, progress=progress, power=power, step=i)
        run.extra["offered_rate_rps"] = rate
        run.extra["step_duration_s"] = duration_s
        run.extra["sustained"] = _sustained(run)
        steps.append(run)
        duration_s = _next_duration(run, duration_s, step_duration_s)
        i += 1
        # the probe may underestimate capacity: climb until a step no longer keeps up
        room = len(ladder) < len(fractions) + _MAX_EXTRA_STEPS
        if auto and i == len(ladder) and room and _sustained(run):
            ladder.append(rate * 1.25)
    return SweepOutcome(steps=steps, saturation=saturation_of(steps), probe=probe)


def _next_duration(run: RunOutcome, current_s: float, requested_s: float) -> float:
    """Lengthen later steps to >= 3 median e2e latencies (steady windows need several), <= 3x."""
    e2e: float | None = (run.summary.get("e2e_s") or {}).get("p50")
    if not e2e:
        return current_s
    return float(min(max(current_s, 3.0 * e2e), 3.0 * requested_s))


def _sustained(run: RunOutcome) -> bool:
    offered = run.extra.get("offered_rate_rps")
    if not offered:
        return False
    thr = run.summary.get("steady_request_throughput_rps") or run.summary["request_throughput_rps"]
    realized = run.summary.get("scheduled_rate_rps") or offered
    return bool(
        thr >= _SUSTAINED_FRACTION * realized
        and run.summary["dropped"] == 0
        and not backlog_grows(run.records)
    )


async def concurrency_sweep(
    client: httpx.AsyncClient,
    target: Target,
    base: Scenario,
    levels: Sequence[int],
    *,
    info: EndpointInfo | None = None,
    step_duration_s: float = 10.0,
    progress: RunProgress | None = None,
    power: PowerSource | None = None,
) -> SweepOutcome:
    """Closed-loop runs at each concurrency level for ``step_duration_s`` each."""
    if not levels or min(levels) < 1:
        raise InvalidConfigError("concurrency levels", list(levels), "need levels >= 1")
    steps: list[RunOutcome] = []
    for i, level in enumerate(levels):
        sc = dataclasses.replace(
            base,
            name=f"{base.name}-c{level}",
            arrival="concurrency",
            concurrency=level,
            rate_rps=None,
            duration_s=step_duration_s,
            max_requests=None,
            drain_timeout_s=max(step_duration_s, 5.0),
        )
        if progress is not None:
            progress.label, progress.step, progress.num_steps = f"c={level}", i, len(levels)
        run = await run_load(client, target, sc, info=info, progress=progress, power=power, step=i)
        run.extra["concurrency"] = level
        steps.append(run)
    return SweepOutcome(steps=steps, saturation=saturation_of(steps))
