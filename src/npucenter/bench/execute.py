"""Whole benchmarks: preflight, the run or sweep, and the result document (what the CLI calls).

``TargetMeta`` says what is behind the endpoint (device, TP, a virtual engine's time scale) so
the report can ask the twin for the same chip and workload.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass
from typing import Any

from npucenter.bench.client import EndpointInfo, Target, preflight
from npucenter.bench.loadgen import RunProgress, make_client, run_load
from npucenter.bench.power import make_power_source
from npucenter.bench.result import build_result
from npucenter.bench.scenario import Scenario
from npucenter.bench.sweep import SweepOutcome, concurrency_sweep, rate_sweep

__all__ = ["TargetMeta", "benchmark_run", "benchmark_sweep", "pool_size"]


@dataclass(frozen=True, slots=True, kw_only=True)
class TargetMeta:
    """What is behind the endpoint, as declared by the user (all optional)."""

    device: str | None = None
    catalog_model: str | None = None  # catalog id when the served name differs
    tp: int | None = None
    precision: str | None = None
    max_num_seqs: int | None = None
    max_num_batched_tokens: int | None = None
    time_scale: float | None = None  # virtual engines: real seconds per modelled second
    price_usd_per_hour: float | None = None
    label: str | None = None

    def to_dict(self) -> dict[str, Any]:
        """JSON-able, Nones kept (the schema lists every key)."""
        return asdict(self)


def pool_size(scenario: Scenario) -> int | None:
    """Connections to keep: the concurrency for closed loops, the cap (or unbounded) otherwise."""
    if not scenario.open_loop:
        return scenario.concurrency
    return scenario.max_concurrency


async def benchmark_run(
    target: Target,
    scenario: Scenario,
    *,
    meta: TargetMeta | None = None,
    power: str = "auto",
    progress: RunProgress | None = None,
    info: EndpointInfo | None = None,
) -> dict[str, Any]:
    """Preflight and run one scenario; the result document."""
    meta = meta or TargetMeta()
    async with make_client(pool_size(scenario), target.timeout_s, target.transport) as client:
        info = info or await preflight(client, target)
        source = make_power_source(power, target.root_url)
        out = await run_load(client, target, scenario, info=info, progress=progress, power=source)
    return build_result(
        kind="run",
        scenario=scenario.to_dict(),
        endpoint=info.to_dict(),
        summary=out.summary,
        records=out.records,
        device=meta.device,
        label=meta.label,
        extra={"target": meta.to_dict(), "energy": out.energy.to_dict() if out.energy else None},
    )


async def benchmark_sweep(
    target: Target,
    base: Scenario,
    *,
    kind: str = "rate",
    rates_rps: Sequence[float] | None = None,
    concurrency_levels: Sequence[int] = (),
    step_duration_s: float = 10.0,
    probe_concurrency: int = 256,
    fractions: Sequence[float] | None = None,
    meta: TargetMeta | None = None,
    power: str = "auto",
    progress: RunProgress | None = None,
    info: EndpointInfo | None = None,
) -> dict[str, Any]:
    """Preflight and run a rate sweep (``kind="rate"``) or concurrency sweep; the result document.

    The top-level ``summary`` is the saturated step's.
    """
    meta = meta or TargetMeta()
    async with make_client(None, target.timeout_s, target.transport) as client:
        info = info or await preflight(client, target)
        source = make_power_source(power, target.root_url)
        sweep: SweepOutcome
        if kind == "rate":
            kwargs: dict[str, Any] = {}
            if fractions:
                kwargs["fractions"] = fractions
            sweep = await rate_sweep(
                client,
                target,
                base,
                info=info,
                rates_rps=rates_rps,
                step_duration_s=step_duration_s,
                probe_concurrency=probe_concurrency,
                progress=progress,
                power=source,
                **kwargs,
            )
        else:
            sweep = await concurrency_sweep(
                client,
                target,
                base,
                concurrency_levels,
                info=info,
                step_duration_s=step_duration_s,
                progress=progress,
                power=source,
            )
    best = sweep.saturation.get("saturation_step")
    summary = sweep.steps[best].summary if best is not None else sweep.steps[-1].summary
    return build_result(
        kind="sweep",
        scenario={**base.to_dict(), "sweep": kind, "step_duration_s": step_duration_s},
        endpoint=info.to_dict(),
        summary=summary,
        records=sweep.records(),
        runs=sweep.runs(),
        device=meta.device,
        label=meta.label,
        extra={"target": meta.to_dict(), "saturation": sweep.saturation, "probe": sweep.probe},
    )
