"""Benchmark: how many small requests per second one virtual engine serves on loopback.

Starts a virtual engine (RNGD, llama-3.1-8b, real time) with the LocalProcessExecutor and
drives it open-loop at 200, 500 and 1,000 requests/s (8-token prompts, 4 output tokens,
non-streaming and streaming) from a raw asyncio HTTP/1.1 keep-alive client, so that the client
costs little CPU. Reports achieved rate, latency percentiles against those of the simulator's
replica fed the same send times offline (the difference is what HTTP, asyncio and the
client add), and the engine's CPU time per request. Writes bench/results/engine.json.

Run: ``.venv/bin/python benchmarks/bench_engine.py [--duration 4] [--rates 200,500,1000]``.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import statistics
import time
from pathlib import Path
from typing import Any

from npucenter.engines import ReplicaSpec
from npucenter.executors import LocalProcessExecutor
from npucenter.sim.replica import ReplicaConfig, ReplicaCore, SeqRequest
from npucenter.wire.tokens import count_chat_tokens

RESULTS = Path(__file__).resolve().parents[1] / "bench" / "results" / "engine.json"


def _cpu_s(pid: int) -> float:
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    ticks = os.sysconf("SC_CLK_TCK")
    return (int(fields[11]) + int(fields[12])) / ticks


async def _read_response(reader: asyncio.StreamReader) -> bytes:
    head = await reader.readuntil(b"\r\n\r\n")
    headers = head.decode("latin-1").lower()
    if "content-length:" in headers:
        n = int(headers.split("content-length:", 1)[1].split("\r\n", 1)[0])
        return await reader.readexactly(n)
    body = b""
    while True:  # chunked
        size = int((await reader.readuntil(b"\r\n")).strip(), 16)
        if size == 0:
            await reader.readuntil(b"\r\n")
            return body
        body += await reader.readexactly(size + 2)


async def _run_rate(
    port: int, rate: float, duration_s: float, stream: bool, connections: int
) -> dict[str, Any]:
    payload = {
        "model": "llama-3.1-8b",
        "messages": _MESSAGES,
        "max_tokens": 4,
        "ignore_eos": True,
        "stream": stream,
    }
    body = json.dumps(payload).encode()
    request = (
        b"POST /v1/chat/completions HTTP/1.1\r\nhost: 127.0.0.1\r\n"
        b"content-type: application/json\r\ncontent-length: "
        + str(len(body)).encode()
        + b"\r\n\r\n"
        + body
    )
    total = int(rate * duration_s)
    queue: asyncio.Queue[float | None] = asyncio.Queue()
    latencies: list[float] = []
    sent_at: list[float] = []  # actual send times (s since start), for the offline replay
    errors = 0
    start = time.perf_counter() + 0.05
    for i in range(total):
        queue.put_nowait(start + i / rate)

    async def worker() -> None:
        nonlocal errors
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        try:
            while True:
                try:
                    due = queue.get_nowait()
                except asyncio.QueueEmpty:
                    return
                assert due is not None
                delay = due - time.perf_counter()
                if delay > 0:
                    await asyncio.sleep(delay)
                t_send = time.perf_counter()
                sent_at.append(t_send - start)
                writer.write(request)
                data = await _read_response(reader)
                if b'"usage"' not in data:
                    errors += 1
                latencies.append(time.perf_counter() - t_send)
        finally:
            writer.close()

    t0 = time.perf_counter()
    await asyncio.gather(*(worker() for _ in range(connections)))
    wall = time.perf_counter() - t0
    latencies.sort()

    def pct(p: float) -> float:
        return latencies[min(len(latencies) - 1, int(p * len(latencies)))] * 1000

    modelled = _replay_offline(sorted(sent_at), prompt_tokens=_PROMPT_TOKENS, output_tokens=4)

    def mpct(p: float) -> float:
        return modelled[min(len(modelled) - 1, int(p * len(modelled)))] * 1000

    return {
        "target_rps": rate,
        "modelled_p50_ms": round(mpct(0.50), 2),
        "modelled_p99_ms": round(mpct(0.99), 2),
        "stream": stream,
        "requests": total,
        "errors": errors,
        "achieved_rps": round(len(latencies) / wall, 1),
        "p50_ms": round(pct(0.50), 2),
        "p99_ms": round(pct(0.99), 2),
        "mean_ms": round(statistics.fmean(latencies) * 1000, 2),
    }


_MESSAGES = [{"role": "user", "content": "say hi to the bench now"}]
_PROMPT_TOKENS = count_chat_tokens(_MESSAGES)
_PM: Any = None


def _replay_offline(
    arrivals: list[float], *, prompt_tokens: int, output_tokens: int
) -> list[float]:
    """The simulator's replica fed the same send times: modelled e2e latency per request."""
    core = ReplicaCore(_PM, ReplicaConfig(max_num_seqs=256))
    finish: dict[str, float] = {}
    now, i = 0.0, 0
    while i < len(arrivals) or core.has_work:
        while i < len(arrivals) and arrivals[i] <= now:
            core.add(
                SeqRequest(
                    request_id=str(i),
                    prompt_tokens=prompt_tokens,
                    max_output_tokens=output_tokens,
                    arrival_s=arrivals[i],
                )
            )
            i += 1
        step = core.step(now)
        if step is None:
            now = arrivals[i] if i < len(arrivals) else now
            continue
        now = step.start_s + step.duration_s
        for rid in step.finished_ids:
            finish[rid] = now
    return sorted(finish[str(k)] - arrivals[k] for k in range(len(arrivals)))


async def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--duration", type=float, default=4.0)
    ap.add_argument("--rates", default="200,500,1000")
    ap.add_argument("--connections", type=int, default=128)
    args = ap.parse_args()
    executor = LocalProcessExecutor()
    spec = ReplicaSpec(engine="virtual", model="llama-3.1-8b", device="rngd", tp=1)
    replica = await executor.start(spec)
    assert replica.pid is not None
    # the modelled latency of one such request alone: prefill step + 3 decode steps
    from npucenter.catalog import default_catalog
    from npucenter.perf import build_perf_model

    global _PM
    pm = _PM = build_perf_model(default_catalog(), model="llama-3.1-8b", device="rngd", tp=1)
    modelled_ms = (pm.ttft_s(_PROMPT_TOKENS) + 3 * pm.tpot_s(1, _PROMPT_TOKENS + 2)) * 1000
    runs = []
    try:
        for stream in (False, True):
            for rate in (float(r) for r in args.rates.split(",")):
                cpu0 = _cpu_s(replica.pid)
                run = await _run_rate(
                    replica.launch.port, rate, args.duration, stream, args.connections
                )
                cpu = _cpu_s(replica.pid) - cpu0
                run["engine_cpu_ms_per_request"] = round(cpu * 1000 / run["requests"], 3)
                run["engine_cpu_fraction"] = round(cpu / args.duration, 3)
                runs.append(run)
                print(
                    f"{'stream' if stream else 'json  '} {rate:6.0f} rps -> "
                    f"{run['achieved_rps']:7.1f} rps, p50 {run['p50_ms']:7.2f} ms, "
                    f"p99 {run['p99_ms']:7.2f} ms (same arrivals simulated: p50 "
                    f"{run['modelled_p50_ms']:.2f}, p99 {run['modelled_p99_ms']:.2f} ms), "
                    f"engine CPU {run['engine_cpu_ms_per_request']:.3f} ms/req, "
                    f"errors {run['errors']}"
                )
    finally:
        await executor.shutdown()
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(
        json.dumps(
            {
                "benchmark": "engine",
                "what": "virtual engine (llama-3.1-8b on 1 RNGD, real time) on loopback, "
                f"chat requests of {_PROMPT_TOKENS} prompt tokens and 4 output tokens, open loop",
                "modelled_alone_ms": round(modelled_ms, 2),
                "machine": {"cpus": os.cpu_count(), "python": platform.python_version()},
                "runs": runs,
            },
            indent=2,
        )
        + "\n"
    )
    print(f"wrote {RESULTS}")


if __name__ == "__main__":
    asyncio.run(main())
