"""The twin against a real engine: vLLM's CPU build serving the tiny model on this machine.

Needs the engine extra (vLLM, transformers). One `npucenter up --fleet examples/fleets/cpu-vllm.yaml`
serves the engine; then, in order:

1. **Profile sweep** (straight to the engine): prefill step times (TTFT of a request alone, prompts
   of 16-768 token ids, one output token) and decode step times (mean inter-token time of ``b``
   concurrent streams, b = 1-16). The perf model's ``cpu`` efficiency (compute and memory
   fractions, per-step overhead) is fitted to them by least squares on log step times and written
   to ``src/npucenter/perf/data/measured_profiles.json`` (``--no-write`` leaves it alone).
2. **Twin vs real**: a seeded Poisson trace (requests of 32-256 prompt and 16-64 output tokens) is
   replayed through the gateway (/v1 with a tenant key, streaming, token-id prompts so counts
   are exact) and simulated by the twin (``sim.build_center`` on the same fleet file, with the
   fitted profile). The twin runs twice: with the step times alone, then with a per-request
   overhead (``request_overhead_s`` in the profile, measured on this machine: the median over
   requests of measured TTFT - twin TTFT, i.e. the gateway hop and vLLM's front end around the
   iterations). The TTFT and TPOT p50/p90 of both runs and their errors (measured / twin - 1) go
   to ``bench/results/twin_cpu_vllm.json``; docs/twin-fidelity.md quotes them.
3. ``npucenter bench run`` against the same deployment through the gateway (``--device cpu
   --catalog-model tiny-llama``), so ``npucenter bench report`` shows the twin beside it.

The figures are of this machine (2 shared vCPUs here): run it on an idle machine.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import math
import os
import random
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import httpx
import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import write_result

ROOT = Path(__file__).resolve().parents[1]
FLEET = ROOT / "examples" / "fleets" / "cpu-vllm.yaml"
PROFILE = ROOT / "src" / "npucenter" / "perf" / "data" / "measured_profiles.json"
MODEL = "tiny-llama"
ADMIN = "bench-twin-cpu-admin-0123456789"
PREFILL_LENGTHS = (16, 128, 256, 512, 768)
DECODE_BATCHES = (1, 2, 4, 8, 16)
DECODE_PROMPT, DECODE_OUTPUT = 64, 48
REPEATS = 6  # prefill requests per length; decode rounds are half as many


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=80)
    parser.add_argument("--rate", type=float, default=2.0, help="Poisson arrivals per second")
    parser.add_argument("--no-write", action="store_true", help="do not write the profile")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="npucenter-twin-cpu-") as tmp:
        proc, url = _start_center(Path(tmp))
        try:
            result = asyncio.run(_run(url, Path(tmp), args))
        finally:
            proc.terminate()
            try:
                proc.wait(timeout=60)
            except subprocess.TimeoutExpired:
                proc.kill()
    path = write_result("twin_cpu_vllm", result)
    print(json.dumps(result["profile"]["efficiency"]))
    print(json.dumps(result["means_ms"]))
    summary = result.get("bench_run_summary") or {}
    print("bench run errors:", summary.get("errors"), summary.get("errors_by_kind"))
    print(f"per-request overhead fitted: {result['request_overhead_s'] * 1e3:.1f} ms")
    for row in result["comparison_steps_only"]:
        print(
            f"{row['metric']:>5} {row['quantile']} (step times only): measured "
            f"{row['measured_ms']:.1f} ms, twin {row['twin_ms']:.1f} ms, "
            f"error {row['error_fraction'] * 100:+.1f} %"
        )
    for row in result["comparison"]:
        print(
            f"{row['metric']:>5} {row['quantile']}: measured {row['measured_ms']:.1f} ms, "
            f"twin {row['twin_ms']:.1f} ms, error {row['error_fraction'] * 100:+.1f} %"
        )
    print(f"-> {path}")


async def _run(url: str, tmp: Path, args: argparse.Namespace) -> dict[str, Any]:
    admin = {"authorization": f"Bearer {ADMIN}"}
    async with httpx.AsyncClient(base_url=url, headers=admin, timeout=60) as api:
        (dep,) = (await api.get("/api/deployments")).json()
        (engine,) = (await api.get(f"/api/deployments/{dep['id']}/engines")).json()
        (
            await api.post("/api/tenants", json={"name": "bench", "kind": "university"})
        ).raise_for_status()
        key = (await api.post("/api/keys", json={"tenant": "bench"})).json()["key"]
    points = await _sweep(engine["base_url"])
    fit = _fit(points)
    profile = {
        "device_id": "cpu",
        "model": MODEL,
        "measured_with": "vLLM CPU build 0.32.0, benchmarks/bench_twin_cpu_vllm.py",
        "machine": _machine(),
        "source": "measured on this machine (never a vendor figure)",
        "points": points,
        "efficiency": fit,
    }
    trace = _trace(args.requests, args.rate)
    async with httpx.AsyncClient(base_url=engine["base_url"], timeout=60) as eng:
        before = await _engine_counters(eng)
        live = await _replay(url, key, trace)
        after = await _engine_counters(eng)
    # the step-time profile alone first (no per-request overhead), then the overhead fitted
    # to what it leaves: the median over requests of measured TTFT - twin TTFT (the work
    # around the iterations: gateway, HTTP, vLLM's front end; robust to a few stalled requests)
    shipped = PROFILE.read_text()  # put back at the end with --no-write
    try:
        _write_profile(profile, overhead_s=0.0)
        twin_steps_only = _simulate(trace)
        gaps = [m[0] - t[0] for m, t in zip(live, twin_steps_only, strict=True)]
        overhead_s = max(0.0, float(np.nanmedian(gaps)))
        _write_profile(profile, overhead_s=overhead_s)
        twin = _simulate(trace)
    finally:
        if args.no_write:
            PROFILE.write_text(shipped)
    comparison = _compare(live, twin)
    comparison_steps_only = _compare(live, twin_steps_only)
    engine_means = {
        "ttft_mean_ms": 1e3
        * _delta(after, before, "vllm:time_to_first_token_seconds_sum")
        / _delta(after, before, "vllm:time_to_first_token_seconds_count"),
        "tpot_mean_ms": 1e3
        * _delta(after, before, "vllm:request_time_per_output_token_seconds_sum")
        / _delta(after, before, "vllm:request_time_per_output_token_seconds_count"),
    }
    twin_means = {
        "ttft_mean_ms": 1e3 * float(np.nanmean([t for t, _ in twin])),
        "tpot_mean_ms": 1e3 * float(np.nanmean([p for _, p in twin])),
    }
    client_means = {
        "ttft_mean_ms": 1e3 * float(np.nanmean([t for t, _ in live])),
        "tpot_mean_ms": 1e3 * float(np.nanmean([p for _, p in live])),
    }
    bench_doc = _bench_run(url, key, tmp)
    twin_means["ttft_mean_ms_steps_only"] = 1e3 * float(np.nanmean([t for t, _ in twin_steps_only]))
    return {
        "profile": profile,
        "trace": {"requests": args.requests, "rate_rps": args.rate, "seed": 11},
        "live": _quantiles(live),
        "twin": _quantiles(twin),
        "twin_steps_only": _quantiles(twin_steps_only),
        "comparison": comparison,
        "comparison_steps_only": comparison_steps_only,
        "request_overhead_s": overhead_s,
        "means_ms": {"client": client_means, "engine": engine_means, "twin": twin_means},
        "bench_run_summary": (bench_doc or {}).get("summary"),
    }


# --- the center ------------------------------------------------------------------------------
def _start_center(tmp: Path) -> tuple[subprocess.Popen[bytes], str]:
    from npucenter.executors import free_port

    port = free_port()
    env = {**os.environ, "NPUCENTER_ADMIN_KEY": ADMIN}
    for name in ("NPUCENTER_VIRTUAL_FLEET", "NPUCENTER_FLEET", "NPUCENTER_TARIFF"):
        env.pop(name, None)
    log = (tmp / "up.log").open("w")
    argv = [sys.executable, "-m", "npucenter.cli.main", "up", "--port", str(port)]
    argv += ["--data-dir", str(tmp / "data"), "--fleet", str(FLEET), "--log-level", "warning"]
    proc = subprocess.Popen(argv, env=env, stdout=log, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 600
    body = {"model": MODEL, "prompt": [1, 2, 3], "max_tokens": 1}
    while True:
        assert proc.poll() is None, (tmp / "up.log").read_text()[-3000:]
        try:
            r = httpx.post(
                f"{url}/v1/completions",
                json=body,
                headers={"authorization": f"Bearer {ADMIN}"},
                timeout=30,
            )
            if r.status_code == 200:
                return proc, url
        except httpx.HTTPError:
            pass
        assert time.monotonic() < deadline, (tmp / "up.log").read_text()[-3000:]
        time.sleep(2)


# --- 1. the profile sweep --------------------------------------------------------------------
async def _stream(client: httpx.AsyncClient, prompt: list[int], max_tokens: int) -> list[float]:
    """Token arrival times (perf_counter) of one streamed completion; [0] is the send time."""
    body = {
        "model": MODEL,
        "prompt": prompt,
        "max_tokens": max_tokens,
        "ignore_eos": True,
        "stream": True,
    }
    stamps = [time.perf_counter()]
    async with client.stream("POST", "/v1/completions", json=body) as resp:
        resp.raise_for_status()
        async for line in resp.aiter_lines():
            if line.startswith("data: {"):
                choices = json.loads(line[6:]).get("choices") or []
                if choices and choices[0].get("text") is not None:
                    stamps.append(time.perf_counter())
    return stamps


def _ids(n: int, rng: random.Random) -> list[int]:
    return [rng.randint(3, 511) for _ in range(n)]


async def _engine_counters(client: httpx.AsyncClient) -> dict[str, float]:
    """The engine's own cumulative timings (vLLM's Prometheus histograms' sums and counts)."""
    text = (await client.get("/metrics")).text
    wanted = {
        "vllm:request_prefill_time_seconds_sum",
        "vllm:request_prefill_time_seconds_count",
        "vllm:request_decode_time_seconds_sum",
        "vllm:request_decode_time_seconds_count",
        "vllm:generation_tokens_total",
        "vllm:time_to_first_token_seconds_sum",
        "vllm:time_to_first_token_seconds_count",
        "vllm:request_time_per_output_token_seconds_sum",
        "vllm:request_time_per_output_token_seconds_count",
    }
    out: dict[str, float] = dict.fromkeys(wanted, 0.0)
    for line in text.splitlines():
        name = line.split("{", 1)[0].split(" ", 1)[0]
        if name in wanted:
            out[name] += float(line.rsplit(" ", 1)[1])
    return out


def _delta(after: dict[str, float], before: dict[str, float], key: str) -> float:
    return after[key] - before[key]


async def _sweep(engine_url: str) -> list[dict[str, Any]]:
    """Step times from the engine's own clocks (prefill and decode phases of each request).

    The client's clock would add HTTP, (de)tokenisation and, on a loaded machine, its own
    scheduling delays; the engine times its phases itself (vLLM's ``request_prefill_time`` and
    ``request_decode_time`` histograms), which is what the perf model's step time describes.
    """
    rng = random.Random(5)
    points: list[dict[str, Any]] = []
    async with httpx.AsyncClient(base_url=engine_url, timeout=120) as client:
        await _stream(client, _ids(32, rng), 4)  # warm-up
        for n in PREFILL_LENGTHS:
            before = await _engine_counters(client)
            for _ in range(REPEATS):
                await _stream(client, _ids(n, rng), 1)
            after = await _engine_counters(client)
            count = _delta(after, before, "vllm:request_prefill_time_seconds_count")
            step = _delta(after, before, "vllm:request_prefill_time_seconds_sum") / count
            points.append({"kind": "prefill", "input_tokens": n, "step_s": step})
        for b in DECODE_BATCHES:
            before = await _engine_counters(client)
            for _ in range(REPEATS // 2):
                await asyncio.gather(
                    *(_stream(client, _ids(DECODE_PROMPT, rng), DECODE_OUTPUT) for _ in range(b))
                )
            after = await _engine_counters(client)
            count = _delta(after, before, "vllm:request_decode_time_seconds_count")
            tokens = _delta(after, before, "vllm:generation_tokens_total")
            step = _delta(after, before, "vllm:request_decode_time_seconds_sum") / (tokens - count)
            points.append(
                {
                    "kind": "decode",
                    "batch": b,
                    "context_tokens": DECODE_PROMPT + DECODE_OUTPUT // 2,
                    "step_s": step,
                }
            )
    return points


def _fit(points: list[dict[str, Any]]) -> dict[str, float]:
    from scipy.optimize import least_squares

    from npucenter.catalog import default_catalog
    from npucenter.perf import Efficiency, build_perf_model

    def predicted(theta: np.ndarray) -> np.ndarray:
        eff = Efficiency(
            compute_fraction=float(theta[0]),
            memory_fraction=float(theta[1]),
            step_overhead_s=float(theta[2]),
            source="fit",
        )
        pm = build_perf_model(
            default_catalog(), model=MODEL, device="cpu", precision="bf16", efficiency=eff
        )
        out = []
        for p in points:
            if p["kind"] == "prefill":
                n = float(p["input_tokens"])
                out.append(pm.step_time_s(n, pm.attn_pairs(n, 0.0), 0.0, 0.0))
            else:
                b = float(p["batch"])
                out.append(pm.step_time_s(0.0, 0.0, b, b * float(p["context_tokens"])))
        return np.asarray(out, dtype=np.float64)

    measured = np.asarray([p["step_s"] for p in points], dtype=np.float64)
    fit = least_squares(
        lambda th: np.log(predicted(th)) - np.log(measured),
        x0=np.array([0.3, 0.5, float(measured.min()) * 0.8]),
        bounds=([1e-4, 1e-4, 0.0], [1.0, 1.0, 1.0]),
        x_scale=np.array([0.1, 0.1, 0.01]),
        loss="soft_l1",  # a point a busy machine slowed down weighs less
        f_scale=0.3,
    )
    rel = np.exp(np.abs(fit.fun)) - 1
    return {
        "compute_fraction": round(float(fit.x[0]), 5),
        "memory_fraction": round(float(fit.x[1]), 5),
        "step_overhead_s": round(float(fit.x[2]), 6),
        "fit_max_error_fraction": round(float(rel.max()), 4),
        "fit_mean_error_fraction": round(float(rel.mean()), 4),
    }


# --- 2. twin vs real -------------------------------------------------------------------------
def _trace(num: int, rate: float) -> Any:
    from npucenter.workload.trace import Trace

    rng = random.Random(11)
    gaps = [0.0] + [rng.expovariate(rate) for _ in range(num - 1)]
    return Trace(
        name="twin-cpu-vllm",
        arrival_s=np.cumsum(gaps),
        prompt_tokens=np.array([rng.randint(32, 256) for _ in range(num)]),
        output_tokens=np.array([rng.randint(16, 64) for _ in range(num)]),
        source="synthetic (seeded) for benchmarks/bench_twin_cpu_vllm.py",
    )


async def _replay(url: str, key: str, trace: Any) -> list[tuple[float, float]]:
    rng = random.Random(3)
    headers = {"authorization": f"Bearer {key}"}
    async with httpx.AsyncClient(base_url=url, headers=headers, timeout=300) as client:
        t0 = time.perf_counter() + 0.5

        async def one(i: int) -> tuple[float, float]:
            await asyncio.sleep(max(0.0, t0 + float(trace.arrival_s[i]) - time.perf_counter()))
            s = await _stream(
                client, _ids(int(trace.prompt_tokens[i]), rng), int(trace.output_tokens[i])
            )
            tpot = (s[-1] - s[1]) / (len(s) - 2) if len(s) > 2 else math.nan
            return s[1] - s[0], tpot

        return list(await asyncio.gather(*(one(i) for i in range(len(trace)))))


def _write_profile(profile: dict[str, Any], *, overhead_s: float) -> None:
    """The package's profile file, which the twin reads (``--no-write`` puts it back after)."""
    profile["efficiency"]["request_overhead_s"] = round(overhead_s, 6)
    PROFILE.write_text(json.dumps({"profiles": [profile]}, indent=2) + "\n")


def _simulate(trace: Any) -> list[tuple[float, float]]:
    import yaml

    from npucenter.catalog import default_catalog
    from npucenter.fleet.spec import fleet_spec_from_mapping
    from npucenter.perf import profiles
    from npucenter.sim.center import build_center

    profiles.measured_profiles.cache_clear()  # the profile just written
    spec = fleet_spec_from_mapping(yaml.safe_load(FLEET.read_text()))
    out = build_center(spec, default_catalog(), policy="round-robin").run(trace)
    return list(zip(out.ttft_s.tolist(), out.tpot_s.tolist(), strict=True))


def _quantiles(rows: list[tuple[float, float]]) -> dict[str, float]:
    ttft = np.array([r[0] for r in rows], dtype=np.float64)
    tpot = np.array([r[1] for r in rows], dtype=np.float64)
    return {
        "ttft_p50_ms": float(np.nanpercentile(ttft, 50) * 1e3),
        "ttft_p90_ms": float(np.nanpercentile(ttft, 90) * 1e3),
        "tpot_p50_ms": float(np.nanpercentile(tpot, 50) * 1e3),
        "tpot_p90_ms": float(np.nanpercentile(tpot, 90) * 1e3),
    }


def _compare(live: list[tuple[float, float]], twin: list[tuple[float, float]]) -> list[Any]:
    lq, tq = _quantiles(live), _quantiles(twin)
    rows = []
    for metric in ("ttft", "tpot"):
        for q in ("p50", "p90"):
            k = f"{metric}_{q}_ms"
            rows.append(
                {
                    "metric": metric.upper(),
                    "quantile": q,
                    "measured_ms": round(lq[k], 2),
                    "twin_ms": round(tq[k], 2),
                    "error_fraction": round(lq[k] / tq[k] - 1, 4),
                }
            )
    return rows


# --- 3. the proving ground's own run ---------------------------------------------------------
def _bench_run(url: str, key: str, tmp: Path) -> dict[str, Any] | None:
    out = tmp / "bench-run.json"
    argv = [sys.executable, "-m", "npucenter.cli.main", "bench", "run", "--endpoint", url]
    argv += ["--model", MODEL, "--api-key", key, "--scenario", "poisson", "--rate", "2"]
    argv += ["--max-requests", "40", "--input-tokens", "128", "--output-tokens", "32"]
    argv += ["--device", "cpu", "--catalog-model", MODEL, "--max-num-seqs", "16"]
    argv += ["--no-progress", "--json", str(out)]
    done = subprocess.run(argv, capture_output=True, text=True, timeout=600, check=False)
    if done.returncode != 0:
        print(done.stderr[-2000:], file=sys.stderr)
        return None
    report = subprocess.run(
        [sys.executable, "-m", "npucenter.cli.main", "bench", "report", str(out)],
        capture_output=True, text=True, timeout=120, check=False,
    )  # fmt: skip
    print(report.stdout[-3000:])
    doc: dict[str, Any] = json.loads(out.read_text())
    return doc


def _machine() -> str:
    cpu = "unknown CPU"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    load = " ".join(f"{x:.1f}" for x in os.getloadavg())
    return f"{os.cpu_count()} vCPUs, {cpu}; load average {load} when measured"


if __name__ == "__main__":
    main()
