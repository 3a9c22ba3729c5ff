"""The standard proving-ground suite: a fixed, versioned set of scenarios every chip runs.

``proving-ground`` v1 (durations in real seconds; ``quick`` divides them for smoke runs):

1. ``short-chat``: closed loop, 16 users, prompts 256 +-50 %, answers 128 +-50 % tokens.
2. ``long-context-summarisation``: closed loop, 4 users, 8,192-token prompts (clipped to the
   endpoint's max_model_len), 256-token summaries.
3. ``code-completion-trace``: the Azure LLM code trace (2023, CC BY 4.0) replayed with its own
   timing from its start, so every chip is offered exactly the same requests at the same times.
4. ``rate-sweep``: Poisson arrivals, 512 in / 128 out, offered at fixed fractions of a probed
   capacity, to saturation.
5. ``mlperf-server``: MLPerf Inference's server scenario, miniature: the highest swept rate that
   was sustained (no growing backlog) and whose p99 TTFT and p99 TPOT meet the SLO (default:
   MLPerf llama-3.1-8b limits, 2 s / 100 ms) is re-run as a Poisson confirmation run and marked
   VALID or INVALID.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from npucenter.bench.client import Target, preflight
from npucenter.bench.execute import TargetMeta, benchmark_run, benchmark_sweep
from npucenter.bench.loadgen import RunProgress, make_client
from npucenter.bench.result import build_result
from npucenter.bench.scenario import Scenario, TraceRow
from npucenter.errors import InvalidConfigError, NotFoundError

__all__ = ["SUITES", "SuiteOptions", "load_trace_rows", "run_suite", "suite_plan"]

#: suite name -> version
SUITES = {"proving-ground": "1"}


@dataclass(frozen=True, slots=True, kw_only=True)
class SuiteOptions:
    """Knobs of a suite run (the scenarios themselves are fixed by the suite version)."""

    quick: bool = False
    duration_scale: float = 1.0  # multiplies every duration (tests, or longer runs)
    slo_preset: str = "mlperf-llama-3.1-8b"
    trace_time_scale: float = 1.0
    only: tuple[str, ...] = ()  # run only these entries (names); empty = all
    seed: int = 0

    def __post_init__(self) -> None:
        if not self.duration_scale > 0:
            raise InvalidConfigError("duration_scale", self.duration_scale, "must be > 0")

    @property
    def factor(self) -> float:
        """Duration multiplier: ``duration_scale``, divided by 6 for ``quick``."""
        return self.duration_scale / 6 if self.quick else self.duration_scale


def load_trace_rows(name_or_path: str, *, max_rows: int | None = None) -> tuple[TraceRow, ...]:
    """Rows of a packaged Azure trace (``azure-code``, ``azure-conv``) or a CSV/JSONL file."""
    from npucenter.workload import parse_azure_csv, parse_request_log, read_azure_trace

    path = Path(name_or_path)
    if path.is_file():
        text = path.read_text(encoding="utf-8")
        if text.startswith("TIMESTAMP"):
            trace = parse_azure_csv(text, name=path.stem)
        else:
            fmt = "jsonl" if path.suffix in (".jsonl", ".json") else "csv"
            trace = parse_request_log(text, fmt=fmt, name=path.stem)
    elif path.suffix in (".csv", ".jsonl", ".json"):
        raise NotFoundError("trace file", name_or_path)
    else:
        trace = read_azure_trace(name_or_path)
    n = len(trace) if max_rows is None else min(max_rows, len(trace))
    return tuple(
        TraceRow(
            arrival_s=float(trace.arrival_s[i]),
            input_tokens=int(trace.prompt_tokens[i]),
            output_tokens=int(trace.output_tokens[i]),
        )
        for i in range(n)
    )


def suite_plan(name: str, model_max_len: int | None, opts: SuiteOptions) -> list[dict[str, Any]]:
    """The entries of suite ``name`` (scenario objects plus how to run them)."""
    if name not in SUITES:
        raise NotFoundError("suite", name, valid=list(SUITES))
    from npucenter.workload import slo_from_spec

    slo = slo_from_spec(opts.slo_preset)
    f = opts.factor
    long_in = 8192
    if model_max_len:
        long_in = max(256, min(long_in, model_max_len - 256 - 64))
    entries: list[dict[str, Any]] = [
        {
            "name": "short-chat",
            "how": "run",
            "scenario": Scenario(
                name="short-chat",
                arrival="concurrency",
                concurrency=16,
                input_tokens=256,
                output_tokens=128,
                length_spread_fraction=0.5,
                duration_s=60 * f,
                drain_timeout_s=60 * f,
                slo_ttft_s=slo.ttft_s,
                slo_tpot_s=slo.tpot_s,
                seed=opts.seed,
            ),
        },
        {
            "name": "long-context-summarisation",
            "how": "run",
            "scenario": Scenario(
                name="long-context-summarisation",
                arrival="concurrency",
                concurrency=4,
                input_tokens=long_in,
                output_tokens=256,
                duration_s=60 * f,
                drain_timeout_s=120 * f,
                seed=opts.seed,
            ),
        },
        {
            "name": "code-completion-trace",
            "how": "trace",
            "scenario_factory": lambda: Scenario(
                name="code-completion-trace",
                arrival="trace",
                trace="azure-code",
                trace_rows=load_trace_rows("azure-code", max_rows=5000),
                time_scale=opts.trace_time_scale,
                duration_s=60 * f,
                drain_timeout_s=60 * f,
                max_input_tokens=(model_max_len - 64) if model_max_len else None,
                slo_ttft_s=slo.ttft_s,
                slo_tpot_s=slo.tpot_s,
                seed=opts.seed,
            ),
        },
        {
            "name": "rate-sweep",
            "how": "sweep",
            "step_duration_s": 20 * f,
            "scenario": Scenario(
                name="rate-sweep",
                arrival="poisson",
                rate_rps=1.0,
                input_tokens=512,
                output_tokens=128,
                duration_s=20 * f,
                slo_ttft_s=slo.ttft_s,
                slo_tpot_s=slo.tpot_s,
                seed=opts.seed,
            ),
        },
        {
            "name": "mlperf-server",
            "how": "mlperf",
            "slo": {
                "name": slo.name,
                "ttft_s": slo.ttft_s,
                "tpot_s": slo.tpot_s,
                "source": slo.source,
            },
            "duration_s": 60 * f,
        },
    ]
    if opts.only:
        unknown = set(opts.only) - {e["name"] for e in entries}
        if unknown:
            raise InvalidConfigError("only", sorted(unknown), "not an entry of this suite")
        keep = set(opts.only)
        if "mlperf-server" in keep:
            keep.add("rate-sweep")  # it needs the sweep's steps
        entries = [e for e in entries if e["name"] in keep]
    return entries


async def run_suite(
    name: str,
    target: Target,
    *,
    opts: SuiteOptions | None = None,
    meta: TargetMeta | None = None,
    power: str = "auto",
    progress: RunProgress | None = None,
    on_entry: Callable[[str], None] | None = None,
) -> dict[str, Any]:
    """Run every entry of suite ``name``; one suite document holding each entry's result."""
    opts = opts or SuiteOptions()
    meta = meta or TargetMeta()
    async with make_client(8, target.timeout_s, target.transport) as client:
        info = await preflight(client, target)
    max_len = info.model_card.get("max_model_len")
    entries = suite_plan(name, int(max_len) if max_len else None, opts)
    results: list[dict[str, Any]] = []
    sweep_doc: dict[str, Any] | None = None
    for entry in entries:
        if on_entry is not None:
            on_entry(entry["name"])
        common: dict[str, Any] = {"meta": meta, "power": power, "progress": progress, "info": info}
        if entry["how"] in ("run", "trace"):
            sc = entry["scenario"] if entry["how"] == "run" else entry["scenario_factory"]()
            doc = await benchmark_run(target, sc, **common)
        elif entry["how"] == "sweep":
            doc = await benchmark_sweep(
                target, entry["scenario"], step_duration_s=entry["step_duration_s"], **common
            )
            sweep_doc = doc
        else:
            doc = await _mlperf_server(target, entry, sweep_doc, common)
        doc["suite_entry"] = entry["name"]
        results.append(doc)
    out = build_result(
        kind="suite",
        scenario={"suite": name, "version": SUITES[name], **dataclasses.asdict(opts)},
        endpoint=info.to_dict(),
        summary={},
        device=meta.device,
        label=meta.label,
        extra={
            "suite": {
                "name": name,
                "version": SUITES[name],
                "entries": [e["name"] for e in entries],
            },
            "target": meta.to_dict(),
            "results": results,
            "headline": _headline(results),
        },
    )
    return out


async def _mlperf_server(
    target: Target, entry: dict[str, Any], sweep_doc: dict[str, Any] | None, common: dict[str, Any]
) -> dict[str, Any]:
    """Confirm the highest swept rate whose p99 TTFT/TPOT meet the SLO (MLPerf server, small)."""
    slo = entry["slo"]
    if sweep_doc is None:
        raise InvalidConfigError("suite", "mlperf-server", "needs the rate-sweep entry first")
    best_rate = None
    for run in sweep_doc.get("runs", []):
        # a growing backlog (not sustained) would break a longer run
        if _p99_within(run["summary"], slo)[0] and run.get("sustained", True):
            best_rate = max(best_rate or 0.0, run.get("offered_rate_rps") or 0.0)
    base = sweep_doc["scenario"]
    rate = best_rate or min(
        (r.get("offered_rate_rps") or 1.0 for r in sweep_doc.get("runs", [])), default=1.0
    )
    sc = Scenario(
        name="mlperf-server",
        arrival="poisson",
        rate_rps=rate,
        input_tokens=int(base["input_tokens"]),
        output_tokens=int(base["output_tokens"]),
        duration_s=entry["duration_s"],
        drain_timeout_s=entry["duration_s"],
        slo_ttft_s=slo["ttft_s"],
        slo_tpot_s=slo["tpot_s"],
    )
    doc = await benchmark_run(target, sc, **common)
    within, p99_ttft, p99_tpot = _p99_within(doc["summary"], slo)
    valid = best_rate is not None and within
    doc["mlperf"] = {
        "slo": slo,
        "server_rate_rps": rate,
        "p99_ttft_s": p99_ttft,
        "p99_tpot_s": p99_tpot,
        "result": "VALID" if valid else "INVALID",
        "note": "miniature of MLPerf's server scenario: minutes, not MLPerf's 600 s minimum",
    }
    return doc


def _p99_within(
    summary: dict[str, Any], slo: dict[str, Any]
) -> tuple[bool, float | None, float | None]:
    """(no errors and p99 TTFT and TPOT within the SLO, p99 TTFT, p99 TPOT) of a run summary."""
    p99_ttft, p99_tpot = summary["ttft_s"]["p99"], summary["tpot_s"]["p99"]
    ok = (
        summary["errors"] == 0
        and p99_ttft is not None
        and p99_ttft <= slo["ttft_s"]
        and (p99_tpot is None or p99_tpot <= slo["tpot_s"])
    )
    return ok, p99_ttft, p99_tpot


def _headline(results: list[dict[str, Any]]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for doc in results:
        s = doc.get("summary") or {}
        out[doc["suite_entry"]] = {
            "completed": s.get("completed"),
            "errors": s.get("errors"),
            "output_tokens_per_s": s.get("output_tokens_per_s"),
            "goodput_rps": s.get("goodput_rps"),
            "p99_ttft_s": (s.get("ttft_s") or {}).get("p99"),
            "p99_tpot_s": (s.get("tpot_s") or {}).get("p99"),
            "output_tokens_per_j": s.get("output_tokens_per_j"),
        }
        if "saturation" in doc:
            out[doc["suite_entry"]]["saturation_rps"] = doc["saturation"]["saturation_rps"]
        if "mlperf" in doc:
            out[doc["suite_entry"]]["mlperf"] = doc["mlperf"]["result"]
            out[doc["suite_entry"]]["server_rate_rps"] = doc["mlperf"]["server_rate_rps"]
    return out
