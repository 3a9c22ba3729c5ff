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


async def generator_run(url: str, scenario: Scenario, transport: str = "fast") -> dict[str, Any]:
    target = Target(base_url=url, model="stub-model", transport=transport)
    async with make_client(None, 30, transport) as client:
        info = await preflight(client, target)
        cpu0, wall0 = _cpu_s(), time.perf_counter()
        out = await run_load(client, target, scenario, info=info)
        cpu, wall = _cpu_s() - cpu0, time.perf_counter() - wall0
    s = out.summary
    return {
        "scenario": scenario.arrival,
        "transport": transport,
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
        # share of one core this process got while it ran (low = the machine is contended)
        "cpu_share_of_wall": cpu / wall if wall > 0 else None,
        "dropped": s["dropped"],
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


def _scenario(arrival: str, rate: float, seed: int = 0) -> Scenario:
    return Scenario(
        arrival=arrival,
        rate_rps=rate,
        duration_s=RUN_S,
        input_tokens=INPUT_TOKENS,
        output_tokens=OUTPUT_TOKENS,
        drain_timeout_s=10,
        seed=seed,
    )


def main() -> None:
    load_before = os.getloadavg()
    proc, url = start_stub()
    try:
        seq = sequential_baseline(url, 1000)
        closed = Scenario(
            arrival="concurrency",
            concurrency=1,
            max_requests=1000,
            input_tokens=INPUT_TOKENS,
            output_tokens=OUTPUT_TOKENS,
        )
        seq_ours = run_async(generator_run(url, closed))
        runs = [
            run_async(generator_run(url, _scenario("constant", 1000.0))),
            run_async(generator_run(url, _scenario("constant", GOAL_RPS))),
            run_async(generator_run(url, _scenario("poisson", GOAL_RPS, seed=1))),
            run_async(generator_run(url, _scenario("constant", 1000.0), transport="httpx")),
        ]
    finally:
        proc.terminate()
        proc.wait(10)
    load_after = os.getloadavg()
    goal = [r for r in runs if r["target_rate_rps"] == GOAL_RPS]
    met = all(
        r["errors"] == 0 and abs((r["achieved_rate_rps"] or 0) / GOAL_RPS - 1) <= 0.02 for r in goal
    )
    cpu_us = seq_ours["generator_cpu_us_per_request"]
    doc = {
        "benchmark": "loadgen",
        "harness_version": HARNESS_VERSION,
        "machine": machine_info(),
        "load_average_before_after": [load_before, load_after],
        "goal": f"{GOAL_RPS:g} req/s with achieved rate within 2 % of target",
        "goal_met": met,
        "runs": runs,
        "sequential_httpx_client": seq,
        "generator_concurrency_1": seq_ours,
        "overhead_vs_sequential_us_per_request": cpu_us - seq["client_cpu_us_per_request"],
        # what one fully available core could sustain at the measured CPU cost per request
        "generator_rps_per_free_core": 1e6 / cpu_us if cpu_us else None,
    }
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps(doc, indent=2) + "\n")
    _print(doc)


def _print(doc: dict[str, Any]) -> None:
    out = print  # benchmarks print their summary
    seq, ours = doc["sequential_httpx_client"], doc["generator_concurrency_1"]
    out(
        f"loadgen benchmark ({os.cpu_count()} cores, stub in its own process, load average "
        f"{doc['load_average_before_after'][0][0]:.1f} -> {doc['load_average_before_after'][1][0]:.1f})"
    )
    for r in doc["runs"]:
        out(
            f"  {r['scenario']:>8}/{r['transport']:<5} target {r['target_rate_rps']:6.0f}/s  "
            f"achieved {r['achieved_rate_rps'] or 0:7.1f}/s "
            f"({(r['rate_error_fraction'] or 0) * 100:+.2f} % vs schedule)  completed "
            f"{r['completed']}/{r['requests']}  lag p50/p99 {r['lag_p50_ms']:.2f}/"
            f"{r['lag_p99_ms']:.2f} ms  cpu {r['generator_cpu_us_per_request']:.0f} us/req, "
            f"got {(r['cpu_share_of_wall'] or 0) * 100:.0f} % of a core"
        )
    out(
        f"  sequential plain httpx client: {seq['requests_per_s']:.0f} req/s, "
        f"{seq['client_cpu_us_per_request']:.0f} us cpu/req; generator at concurrency 1: "
        f"{ours['completed_per_s']:.0f} req/s, {ours['generator_cpu_us_per_request']:.0f} us "
        f"cpu/req (overhead {doc['overhead_vs_sequential_us_per_request']:+.0f} us/req)"
    )
    out(
        f"  one free core sustains ~{doc['generator_rps_per_free_core']:.0f} req/s at that cost; "
        f"goal {doc['goal']}: {'MET' if doc['goal_met'] else 'NOT MET'} -> {RESULTS}"
    )


if __name__ == "__main__":
    main()
