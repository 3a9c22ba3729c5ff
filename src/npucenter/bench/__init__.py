"""The proving ground: load generator, metrics, energy, suites and comparison reports.

An edge layer: it talks HTTP to any OpenAI-compatible endpoint (httpx, loopback or remote) and
never imports the API or CLI. The twin comparison reads the pure perf model lazily.
"""

from __future__ import annotations

from npucenter.bench.client import EndpointInfo, Target, preflight
from npucenter.bench.corpus import TokenCalibration, make_prompt
from npucenter.bench.loadgen import RunOutcome, RunProgress, run_load
from npucenter.bench.metrics import SLO, summarize
from npucenter.bench.record import RequestRecord
from npucenter.bench.result import HARNESS_VERSION, SCHEMA_VERSION, load_result, save_result
from npucenter.bench.scenario import PlannedRequest, Scenario, TraceRow, build_plan

__all__ = [
    "HARNESS_VERSION",
    "SCHEMA_VERSION",
    "SLO",
    "EndpointInfo",
    "PlannedRequest",
    "RequestRecord",
    "RunOutcome",
    "RunProgress",
    "Scenario",
    "Target",
    "TokenCalibration",
    "TraceRow",
    "build_plan",
    "load_result",
    "make_prompt",
    "preflight",
    "run_load",
    "save_result",
    "summarize",
]
