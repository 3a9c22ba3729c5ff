"""How fast and how accurate is the load generator alone? (the stub server stands in for a model)

Starts the stub in its own process on loopback, then drives it with the generator at constant
rates up to 2,000 requests/s and with a Poisson 2,000 requests/s run, recording achieved vs target
rate, scheduling lag and the generator's CPU time per request; a plain sequential httpx client
measures the per-request floor of the same machine for comparison. Writes
bench/results/loadgen.json and prints a short summary. Bounded: about a minute in all.
"""

from __future__ import annotations

import json
import os
import resource
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import httpx

from npucenter.bench.client import Target, build_body, preflight
from npucenter.bench.corpus import make_prompt
from npucenter.bench.loadgen import make_client, run_load
from npucenter.bench.result import HARNESS_VERSION, machine_info
from npucenter.bench.runner import run_async
from npucenter.bench.scenario import Scenario

RESULTS = Path(__file__).resolve().parent.parent / "bench" / "results" / "loadgen.json"
GOAL_RPS = 2000.0
RUN_S = 5.0
INPUT_TOKENS, OUTPUT_TOKENS = 32, 4


def _cpu_s() -> float:
    ru = resource.getrusage(resource.RUSAGE_SELF)
    return ru.ru_utime + ru.ru_stime


def start_stub() -> tuple[subprocess.Popen[str], str]:
    proc = subprocess.Popen(
        [sys.executable, "-m", "npucenter.bench.stub", "--port", "0"],
        stdout=subprocess.PIPE,
        text=True,
    )
    assert proc.stdout is not None
    line = proc.stdout.readline()
    if "listening on" not in line:
        proc.kill()
        raise SystemExit(f"stub did not start: {line!r}")
    return proc, line.rsplit(" ", 1)[1].strip()


async def generator_run(url: str, scenario: Scenario) -> dict[str, Any]:
    target = Target(base_url=url, model="stub-model")
    async with make_client(None, 30) as client:
        info = await preflight(client, target)
        cpu0, wall0 = _cpu_s(), time.perf_counter()
        out = await run_load(client, target, scenario, info=info)
        cpu, wall = _cpu_s() - cpu0, time.perf_counter() - wall0
    s = out.summary
    return {
        "scenario": scenario.arrival,
        "target_rate_rps": scenario.rate_rps,
        "requests": s["requests"],
        "completed": s["completed"],
        "errors": s["errors"],
        "achieved_rate_rps": s["achieved_rate_rps"],
        "scheduled_rate_rps": s["scheduled_rate_rps"],
        "rate_error_fraction": s["rate_error_fraction"],
        "completed_per_s": s["request_throughput_rps"],
        "lag_p50_ms": (s["lag_s"]["p50"] or 0) * 1000,
        "lag_p99_ms": (s["lag_s"]["p99"] or 0) * 1000,
        "lag_max_ms": (s["lag_s"]["max"] or 0) * 1000,
        "ttft_p50_ms": (s["ttft_s"]["p50"] or 0) * 1000,
        "e2e_p50_ms": (s["e2e_s"]["p50"] or 0) * 1000,
        "max_concurrent_requests": s["max_concurrent_requests"],
        "generator_cpu_s": cpu,
        "wall_s": wall,
        "generator_cpu_us_per_request": cpu / max(1, s["requests"]) * 1e6,
    }


def sequential_baseline(url: str, n: int) -> dict[str, Any]:
    """A plain synchronous httpx client, one streaming request after another."""
    target = Target(base_url=url, model="stub-model")
    bodies = [
        json.dumps(build_body(target, make_prompt(INPUT_TOKENS, i), OUTPUT_TOKENS)).encode()
        for i in range(n)
    ]
    with httpx.Client() as client:
        cpu0, t0 = _cpu_s(), time.perf_counter()
        for body in bodies:
            with client.stream(
                "POST", target.completions_url, content=body, headers=target.headers()
            ) as resp:
                for _ in resp.iter_raw():
                    pass
        wall, cpu = time.perf_counter() - t0, _cpu_s() - cpu0
    return {
        "requests": n,
        "requests_per_s": n / wall,
        "latency_mean_ms": wall / n * 1000,
        "client_cpu_us_per_request": cpu / n * 1e6,
    }


def main() -> None:
    proc, url = start_stub()
    try:
        seq = sequential_baseline(url, 1000)
        runs = []
        for rate in (500.0, 1000.0, GOAL_RPS):
            sc = Scenario(
                arrival="constant",
                rate_rps=rate,
                duration_s=RUN_S,
                input_tokens=INPUT_TOKENS,
                output_tokens=OUTPUT_TOKENS,
                drain_timeout_s=30,
            )
            runs.append(run_async(generator_run(url, sc)))
        poisson = Scenario(
            arrival="poisson",
            rate_rps=GOAL_RPS,
            duration_s=RUN_S,
            input_tokens=INPUT_TOKENS,
            output_tokens=OUTPUT_TOKENS,
            drain_timeout_s=30,
            seed=1,
        )
        runs.append(run_async(generator_run(url, poisson)))
        closed = Scenario(
            arrival="concurrency",
            concurrency=1,
            max_requests=1000,
            input_tokens=INPUT_TOKENS,
            output_tokens=OUTPUT_TOKENS,
        )
        seq_ours = run_async(generator_run(url, closed))
    finally:
        proc.terminate()
        proc.wait(10)
    goal = [r for r in runs if r["target_rate_rps"] == GOAL_RPS]
    met = all(
        r["errors"] == 0 and abs((r["achieved_rate_rps"] or 0) / GOAL_RPS - 1) <= 0.02 for r in goal
    )
    doc = {
        "benchmark": "loadgen",
        "harness_version": HARNESS_VERSION,
        "machine": machine_info(),
        "cpu_count": os.cpu_count(),
        "goal": f"{GOAL_RPS:g} req/s with achieved rate within 2 % of target",
        "goal_met": met,
        "runs": runs,
        "sequential_httpx_client": seq,
        "generator_concurrency_1": seq_ours,
        "overhead_vs_sequential_us_per_request": seq_ours["generator_cpu_us_per_request"]
        - seq["client_cpu_us_per_request"],
    }
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps(doc, indent=2) + "\n")
    print(f"loadgen benchmark ({os.cpu_count()} cores, stub in a separate process)")
    for r in runs:
        print(
            f"  {r['scenario']:>8} target {r['target_rate_rps']:6.0f}/s  achieved "
            f"{r['achieved_rate_rps']:7.1f}/s ({(r['rate_error_fraction'] or 0) * 100:+.2f} % "
            f"vs schedule)  completed {r['completed']}/{r['requests']}  lag p50/p99 "
            f"{r['lag_p50_ms']:.2f}/{r['lag_p99_ms']:.2f} ms  cpu "
            f"{r['generator_cpu_us_per_request']:.0f} us/req"
        )
    print(
        f"  sequential httpx client: {seq['requests_per_s']:.0f} req/s, "
        f"{seq['client_cpu_us_per_request']:.0f} us cpu/req; generator at concurrency 1: "
        f"{seq_ours['completed_per_s']:.0f} req/s, {seq_ours['generator_cpu_us_per_request']:.0f}"
        " us cpu/req"
    )
    print(f"  goal {doc['goal']}: {'MET' if met else 'NOT MET'} -> {RESULTS}")


if __name__ == "__main__":
    main()
