"""Benchmark of the digital twin: the Azure conversation trace on the 80/20 example fleet, how
wall time and memory grow with the number of requests (up to 1,000,000 synthetic ones), and how
the cost per request grows with the number of replicas.

Targets (issue 4): the one-hour trace (19,366 requests) in under 3.6 s wall (1,000x real time);
1,000,000 synthetic requests in under 120 s with peak memory under 2 GB. Issue 18: microseconds
per request at most 1.3x from 12 to 1,200 replicas at the same traffic per replica (the 80/20
fleet x1, x10, x100, each replica offered the conversation trace's rate / 12 and 100 requests,
median of 5 runs, four policies); the x100 point streamed (``sim.stream``, bounded memory);
every run also streams 10,008 replicas (x834) with 20 requests each (cost per request and peak
RSS at national scale in a minute); ``--big``: 10,008 replicas and 10,008,000 requests.
Each point runs in its own subprocess so its peak RSS is its own. Writes bench/results/sim.json.

    .venv/bin/python benchmarks/bench_sim.py            # full run (~4 min on 2 cores)
    .venv/bin/python benchmarks/bench_sim.py --quick    # no 1M point
    .venv/bin/python benchmarks/bench_sim.py --big      # also 10,008 replicas x 10 M (~1 h)
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
FLEET = ROOT / "examples" / "fleets" / "gwangju-80-20.yaml"
OUT = ROOT / "bench" / "results" / "sim.json"
SCALE_POINTS = (10_000, 30_000, 100_000, 1_000_000)
FLEET_SCALES = (1, 10, 100)  # copies of the 80/20 fleet: 12, 120 and 1,200 replicas
FLEET_POLICIES = ("npu-first", "least-outstanding-tokens", "slo-aware", "prefix-affinity")
FLEET_REPEATS = 5  # timed runs per point; the median is reported (and the best)
REQUESTS_PER_REPLICA = 100
BIG_SCALE, BIG_REQUESTS_PER_REPLICA = 834, 1000  # 10,008 replicas, 10,008,000 requests
BIG_SHORT_REQUESTS_PER_REPLICA = 20  # the 10,008-replica point of every run: 200,160 requests


def _center(policy: str, copies: int = 1):
    import yaml

    from npucenter.catalog import default_catalog
    from npucenter.fleet.spec import fleet_spec_from_mapping
    from npucenter.sim.center import build_center

    data = yaml.safe_load(FLEET.read_text())
    for pool in data["servers"]:
        pool["count"] *= copies
    return build_center(fleet_spec_from_mapping(data), default_catalog(), policy=policy)


def _conv_like(num_requests: int, rate_scale: float):
    """Poisson arrivals at ``rate_scale`` x the conversation trace's rate, with its lengths."""
    import numpy as np

    from npucenter.workload import (
        EmpiricalLengths,
        PoissonArrivals,
        read_azure_trace,
        synthetic_trace,
    )

    conv = read_azure_trace("conv")
    return synthetic_trace(
        num_requests=num_requests,
        arrivals=PoissonArrivals(rate_rps=conv.mean_rate_rps * rate_scale),
        prompt=EmpiricalLengths.from_array(conv.prompt_tokens),
        output=EmpiricalLengths.from_array(conv.output_tokens),
        rng=np.random.default_rng(0),
    )


def _conv_blocks(num_requests: int, rate_scale: float, block: int = 65_536):
    """The same kind of traffic as :func:`_conv_like`, made ``block`` requests at a time."""
    import numpy as np

    from npucenter.workload import Trace, read_azure_trace

    conv = read_azure_trace("conv")
    rate = conv.mean_rate_rps * rate_scale
    rng = np.random.default_rng(0)
    prompts, outputs = conv.prompt_tokens, conv.output_tokens
    t0 = 0.0
    for start in range(0, num_requests, block):
        n = min(block, num_requests - start)
        arrivals = t0 + np.cumsum(rng.exponential(1.0 / rate, n))
        t0 = float(arrivals[-1])
        yield Trace(
            name=f"conv-like block {start // block}",
            arrival_s=arrivals,
            prompt_tokens=rng.choice(prompts, n),
            output_tokens=rng.choice(outputs, n),
            source="Poisson at the Azure conversation trace's rate x k, its lengths (bench_sim)",
        )


def run_streamed_scale(copies: int, per_replica: int, policy: str) -> dict[str, object]:
    """``copies`` x the 80/20 fleet, its traffic streamed (``sim.stream``): bounded memory."""
    from npucenter.sim.stream import run_streamed

    center = _center(policy, copies)
    replicas = len(center.placement.replicas)
    n = replicas * per_replica
    last = [time.perf_counter()]

    def progress(done: int, sim_t: float) -> None:  # on stderr: how far a long run got
        if done % 1_048_576 < 65_536 or done == n:
            rss_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0
            print(
                f"{done:,}/{n:,} requests, {sim_t:,.0f} s simulated, peak RSS {rss_mb:,.0f} MB, "
                f"{time.perf_counter() - last[0]:,.0f} s wall",
                file=sys.stderr,
            )

    load0 = os.getloadavg()[0]
    cpu0, wall0 = time.process_time(), time.perf_counter()
    out = run_streamed(center, _conv_blocks(n, float(copies)), progress=progress)
    wall_s, cpu_s = time.perf_counter() - wall0, time.process_time() - cpu0
    return {
        "mode": "streamed",
        "policy": policy,
        "copies": copies,
        "load_average_1min": [load0, os.getloadavg()[0]],
        "replicas": replicas,
        "requests": n,
        "completed": out["completed"],
        "rejected": out["rejected"],
        "wall_s": wall_s,
        "cpu_s": cpu_s,
        "us_per_request": wall_s / n * 1e6,
        "cpu_us_per_request": cpu_s / n * 1e6,
        "events": out["events"],
        "simulated_s": out["simulated_s"],
        "ttft_s": out["ttft_s"],
        "tpot_s": out["tpot_s"],
        "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0,
    }


def run_fleet_scale(
    copies: int, per_replica: int, policy: str, repeats: int = 3
) -> dict[str, object]:
    """``copies`` x the 80/20 fleet with ``copies`` x its traffic: the cost per request.

    A short warm-up run first (first calls, caches), then ``repeats`` timed runs: the median is
    the figure (the best beside it); CPU time is reported beside wall time because the machine
    is shared and wall time counts other processes' turns.
    """
    load0 = os.getloadavg()[0]
    built = time.perf_counter()
    center = _center(policy, copies)
    build_s = time.perf_counter() - built
    replicas = len(center.placement.replicas)
    n = replicas * per_replica
    made = time.perf_counter()
    trace = _conv_like(n, float(copies))
    trace_s = time.perf_counter() - made
    center.run(trace.head(min(n, 2000)))
    walls, cpus = [], []

    def progress(done: int, total: int) -> None:  # on stderr: how far a long run got, and RSS
        rss_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0
        print(f"{done:,}/{total:,} requests, peak RSS {rss_mb:,.0f} MB", file=sys.stderr)

    for _ in range(repeats):
        cpu0, wall0 = time.process_time(), time.perf_counter()
        result = center.run(
            trace, progress=progress if n >= 1_000_000 else None, progress_every=500_000
        )
        walls.append(time.perf_counter() - wall0)
        cpus.append(time.process_time() - cpu0)
    wall_s, cpu_s = statistics.median(walls), statistics.median(cpus)
    return {
        "policy": policy,
        "copies": copies,
        "load_average_1min": [load0, os.getloadavg()[0]],  # at the start and end of the point
        "replicas": replicas,
        "requests": n,
        "completed": result.summary["completed"],
        "center_build_s": build_s,
        "trace_build_s": trace_s,
        "wall_s": wall_s,
        "cpu_s": cpu_s,
        "wall_s_all": walls,
        "cpu_s_all": cpus,
        "us_per_request": wall_s / n * 1e6,
        "cpu_us_per_request": cpu_s / n * 1e6,
        "best_cpu_us_per_request": min(cpus) / n * 1e6,
        "events": result.num_events,
        "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0,
    }


def _subprocess(args: list[str], timeout_s: float | None = 600) -> dict[str, object]:
    proc = subprocess.run(
        [sys.executable, __file__, *args],
        check=True,
        capture_output=True,
        text=True,
        timeout=timeout_s,
    )
    return json.loads(proc.stdout.strip().splitlines()[-1])


def run_conv(policy: str, repeats: int) -> dict[str, object]:
    """The whole conversation trace, best of ``repeats`` runs (the trace is loaded once)."""
    from npucenter.workload import read_azure_trace

    trace = read_azure_trace("conv")
    built = time.perf_counter()
    center = _center(policy)  # parse, place the replicas by admission, build the perf models
    build_s = time.perf_counter() - built
    walls = []
    result = None
    for _ in range(repeats):
        started = time.perf_counter()
        result = center.run(trace)
        walls.append(time.perf_counter() - started)
    assert result is not None
    best = min(walls)
    s = result.summary
    return {
        "policy": policy,
        "requests": s["requests"],
        "completed": s["completed"],
        "wall_s": best,
        "wall_s_all": walls,
        "center_build_s": build_s,
        "num_replicas": len(center.placement.replicas),
        "simulated_s": s["simulated_s"],
        "speedup_vs_real_time": s["simulated_s"] / best,
        "events": result.num_events,
        "events_per_s": result.num_events / best,
        "ttft_p99_s": s["ttft_s"]["p99"],
        "tpot_p99_s": s["tpot_s"]["p99"],
        "slo_attainment": s["slo_attainment"],
        "energy_j_per_output_token": s["energy_j_per_output_token"],
    }


def run_synthetic(num_requests: int) -> dict[str, object]:
    """``num_requests`` Poisson requests at the conversation trace's rate and lengths."""
    started = time.perf_counter()
    trace = _conv_like(num_requests, 1.0)
    made = time.perf_counter()
    result = _center("npu-first").run(trace)
    done = time.perf_counter()
    peak_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0
    return {
        "requests": num_requests,
        "completed": result.summary["completed"],
        "trace_build_s": made - started,
        "wall_s": done - made,
        "simulated_s": result.simulated_s,
        "events": result.num_events,
        "events_per_s": result.num_events / (done - made),
        "us_per_request": (done - made) / num_requests * 1e6,
        "peak_rss_mb": peak_mb,
    }


FIDELITY_CASES = (
    ("llama-3.1-8b", "rngd", 1),
    ("llama-3.1-8b", "h100", 1),
    ("llama-3.1-70b", "rngd", 4),
    ("llama-3.1-70b", "h100", 2),
)


def run_fidelity(prompt: int = 1024, output: int = 128, n: int = 20_000) -> list[dict[str, object]]:
    """One replica at 85 % of its saturated throughput vs the perf model and the estimate."""
    import math

    import numpy as np

    from npucenter.catalog import default_catalog
    from npucenter.perf import build_perf_model
    from npucenter.sim.analytic import steady_state_estimate
    from npucenter.sim.replica import ReplicaCore, SeqRequest
    from npucenter.workload import latency_summary

    def serve(pm, arrivals):
        core = ReplicaCore(pm, record_completions=True)
        for i, t in enumerate(arrivals.tolist()):
            core.advance_until(t)
            core.add(
                SeqRequest(
                    request_id=str(i),
                    prompt_tokens=prompt,
                    max_output_tokens=output,
                    arrival_s=t,
                    index=i,
                )
            )
        core.advance_until(math.inf)
        first, finish = np.empty(len(arrivals)), np.empty(len(arrivals))
        for c in core.completions:
            first[c.index], finish[c.index] = c.first_token_s, c.finish_s
        return first, finish

    rows = []
    for model, device, tp in FIDELITY_CASES:
        pm = build_perf_model(default_catalog(), model=model, device=device, tp=tp)
        _, finish = serve(pm, np.zeros(3000))
        capacity = 3000 / finish.max()
        rate = 0.85 * capacity
        arrivals = np.cumsum(np.random.default_rng(1).exponential(1 / rate, n))
        first, finish = serve(pm, arrivals)
        warm = slice(n // 10, None)
        ttft = latency_summary((first - arrivals)[warm])
        tpot = latency_summary(((finish - first) / (output - 1))[warm])
        est = steady_state_estimate(pm, rate, prompt, output)
        even = np.arange(n) / rate
        first_even, finish_even = serve(pm, even)
        tpot_even = float(((finish_even - first_even) / (output - 1))[warm].mean())
        rows.append(
            {
                "model": model,
                "device": device,
                "tp": tp,
                "prompt": prompt,
                "output": output,
                "capacity_rps": capacity,
                "rate_rps": rate,
                "sim_ttft_s": ttft,
                "sim_tpot_s": tpot,
                "perf_ttft_alone_s": pm.ttft_s(prompt),
                "perf_tpot_at_est_batch_s": pm.tpot_s(est.batch, prompt + output / 2),
                "est_batch": est.batch,
                "est_tpot_s": est.tpot_s,
                "est_ttft_low_s": est.ttft_low_s,
                "est_ttft_high_s": est.ttft_high_s,
                "tpot_mean_error": tpot["mean"] / est.tpot_s - 1,
                "evenly_spaced_sim_tpot_mean_s": tpot_even,
                "evenly_spaced_tpot_error": tpot_even / est.tpot_s - 1,
            }
        )
    return rows


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--quick", action="store_true", help="skip the 1M-request point")
    parser.add_argument(
        "--big", action="store_true", help="also 10,008 replicas and 10,008,000 requests"
    )
    parser.add_argument("--one", type=int, help=argparse.SUPPRESS)
    # copies per_replica policy repeats
    parser.add_argument("--fleet", nargs=4, help=argparse.SUPPRESS)
    # copies per_replica policy: one streamed run (sim.stream), bounded memory
    parser.add_argument("--stream", nargs=3, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.stream:
        copies, per_replica, policy = args.stream
        print(json.dumps(run_streamed_scale(int(copies), int(per_replica), policy)))
        return
    if args.one:
        print(json.dumps(run_synthetic(args.one)))
        return
    if args.fleet:
        copies, per_replica, policy, repeats = args.fleet
        print(json.dumps(run_fleet_scale(int(copies), int(per_replica), policy, int(repeats))))
        return
    conv = [run_conv(p, repeats=3) for p in ("npu-first", "least-outstanding-tokens")]
    fidelity = run_fidelity()
    points = [n for n in SCALE_POINTS if not (args.quick and n >= 1_000_000)]
    scaling = [_subprocess(["--one", str(n)]) for n in points]
    first = scaling[0]
    for row in scaling:
        # wall per request relative to the smallest run: 1.0 = perfectly linear
        row["per_request_vs_smallest"] = row["us_per_request"] / first["us_per_request"]
    fleet_scaling = [
        _subprocess(["--fleet", str(k), str(REQUESTS_PER_REPLICA), policy, str(FLEET_REPEATS)])
        for policy in FLEET_POLICIES
        for k in FLEET_SCALES
    ]
    # the same x100 point streamed (sim.stream): the records' memory against bounded memory
    streamed = [_subprocess(["--stream", "100", str(REQUESTS_PER_REPLICA), "npu-first"])]
    # 10,008 replicas on a short trace (20 requests each): the cost per request and the memory
    # of a national fleet in a minute (--big runs it for 10 M requests)
    streamed.append(
        _subprocess(["--stream", str(BIG_SCALE), str(BIG_SHORT_REQUESTS_PER_REPLICA), "npu-first"])
    )
    if args.big:  # 10,008 replicas and 10,008,000 requests, streamed: ~1 h on 2 shared cores
        streamed.append(
            _subprocess(
                ["--stream", str(BIG_SCALE), str(BIG_REQUESTS_PER_REPLICA), "npu-first"], None
            )
        )
    for row in fleet_scaling:
        base = next(r for r in fleet_scaling if r["policy"] == row["policy"] and r["copies"] == 1)
        # cost per request relative to 12 replicas: 1.0 = independent of the fleet's size
        row["cpu_per_request_vs_12_replicas"] = (
            row["cpu_us_per_request"] / base["cpu_us_per_request"]
        )
        row["per_request_vs_12_replicas"] = row["us_per_request"] / base["us_per_request"]
    doc = {
        "machine_note": "shared 2-core VM; other processes may run at the same time",
        "conv_trace_80_20": conv,
        "conv_target_wall_s": 3.6,
        "fidelity_85pct": fidelity,
        "scaling": scaling,
        "target_1m_wall_s": 120.0,
        "target_1m_peak_rss_mb": 2048.0,
        "fleet_scaling": fleet_scaling,
        "streamed": streamed,
        "fleet_scaling_note": (
            f"x copies of the 80/20 fleet at x copies of the conversation rate, "
            f"{REQUESTS_PER_REPLICA} requests per replica, median of {FLEET_REPEATS} runs "
            "(best_cpu_us_per_request: the least); cpu_us_per_request is the process's CPU time "
            "(wall time counts other processes' turns on this shared machine); 'streamed': the "
            f"x100 point through sim.stream (--big: x{BIG_SCALE}, {BIG_REQUESTS_PER_REPLICA} "
            "requests per replica), peak RSS from getrusage"
        ),
        "target_per_request_1200_vs_12_replicas": 1.3,
    }
    OUT.parent.mkdir(parents=True, exist_ok=True)
    OUT.write_text(json.dumps(doc, indent=2) + "\n")
    for row in conv:
        print(
            f"conv x 80/20 [{row['policy']}]: {row['requests']} requests, wall "
            f"{row['wall_s']:.2f} s (target < 3.6), {row['speedup_vs_real_time']:.0f}x real time, "
            f"{row['events_per_s']:,.0f} events/s"
        )
    for row in scaling:
        print(
            f"synthetic {row['requests']:>9,}: wall {row['wall_s']:7.2f} s, "
            f"{row['us_per_request']:6.1f} us/request (x{row['per_request_vs_smallest']:.2f}), "
            f"{row['events_per_s']:,.0f} events/s, peak RSS {row['peak_rss_mb']:.0f} MB"
        )
    for row in fleet_scaling:
        print(
            f"fleet x{row['copies']:<4} [{row['policy']}]: {row['replicas']:>6,} replicas, "
            f"{row['requests']:>10,} requests: {row['cpu_us_per_request']:6.1f} us/request CPU "
            f"(x{row['cpu_per_request_vs_12_replicas']:.2f} vs 12 replicas; wall "
            f"{row['us_per_request']:.1f} us, x{row['per_request_vs_12_replicas']:.2f}), "
            f"peak RSS {row['peak_rss_mb']:,.0f} MB"
        )
    for policy in FLEET_POLICIES:
        ratio = next(
            r["cpu_per_request_vs_12_replicas"]
            for r in fleet_scaling
            if r["policy"] == policy and r["copies"] == FLEET_SCALES[-1]
        )
        print(f"cost per request, 1,200 vs 12 replicas [{policy}]: x{ratio:.2f} (target <= 1.3)")
    print(f"load average (1, 5, 15 min) at the end: {os.getloadavg()}")
    for row in streamed:
        print(
            f"streamed x{row['copies']:<4}: {row['replicas']:>6,} replicas, {row['requests']:>10,} "
            f"requests: {row['cpu_us_per_request']:6.1f} us/request CPU, wall {row['wall_s']:,.0f} s, "
            f"peak RSS {row['peak_rss_mb']:,.0f} MB, {row['completed']:,} completed"
        )
    for row in fidelity:
        print(
            f"85% load {row['model']} on {row['tp']}x{row['device']}: TTFT mean "
            f"{row['sim_ttft_s']['mean']:.3f} s (estimate {row['est_ttft_low_s']:.3f}-"
            f"{row['est_ttft_high_s']:.3f}), TPOT mean {row['sim_tpot_s']['mean'] * 1e3:.1f} ms "
            f"(estimate {row['est_tpot_s'] * 1e3:.1f} ms, {row['tpot_mean_error']:+.0%}; evenly "
            f"spaced arrivals {row['evenly_spaced_tpot_error']:+.1%})"
        )
    print(f"wrote {OUT.relative_to(ROOT)}")


if __name__ == "__main__":
    main()
