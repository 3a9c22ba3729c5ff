"""Kill a replica under load: nothing hangs, early failures are retried, the ledger adds up."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator

import httpx
import openai
import pytest

from factories import make_endpoint
from npucenter.gateway import Gateway, GatewayConfig, Principal, StaticKeyResolver
from npucenter.gateway.testing import running_server
from npucenter.metering import InMemoryLedger

pytestmark = pytest.mark.slow


def _free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture
def upstream_procs() -> Iterator[list[tuple[subprocess.Popen[bytes], str]]]:
    procs = []
    for _ in range(3):
        port = _free_port()
        proc = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "npucenter.gateway.testing",
                "--port",
                str(port),
                "--token-delay-s",
                "0.02",
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        procs.append((proc, f"http://127.0.0.1:{port}"))
    deadline = time.monotonic() + 20
    for _proc, url in procs:
        while True:
            try:
                if httpx.get(f"{url}/health", timeout=0.5).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            assert time.monotonic() < deadline, "scripted upstreams did not start"
            time.sleep(0.05)
    yield procs
    for proc, _ in procs:
        if proc.poll() is None:
            proc.kill()
        proc.wait(timeout=5)


def test_kill_a_replica_under_load(upstream_procs) -> None:  # type: ignore[no-untyped-def]
    endpoints = [
        make_endpoint(replica_id=f"r{i}", base_url=url, device_id="rngd", busy_power_w=100.0)
        for i, (_p, url) in enumerate(upstream_procs)
    ]
    ledger = InMemoryLedger()
    gateway = Gateway(
        keys=StaticKeyResolver({"sk": Principal(key_id="k", tenant="acme")}),
        endpoints=endpoints,
        ledger=ledger,
        config=GatewayConfig(failure_cooldown_s=30.0, read_timeout_s=5.0, scrape_interval_s=0),
    )
    victim = upstream_procs[1][0]

    async def one(client: openai.AsyncOpenAI, i: int) -> tuple[str, int]:
        try:
            stream = await client.chat.completions.create(
                model="m",
                messages=[{"role": "user", "content": f"request {i}"}],
                max_tokens=15,
                stream=True,
                stream_options={"include_usage": True},
            )
            total = 0
            async for chunk in stream:
                if chunk.usage is not None:
                    total = chunk.usage.total_tokens
            return "ok", total
        except openai.APIError:
            return "error", 0

    async def load(url: str) -> list[tuple[str, int]]:
        client = openai.AsyncOpenAI(base_url=f"{url}/v1", api_key="sk", max_retries=0, timeout=15.0)
        first = [asyncio.create_task(one(client, i)) for i in range(24)]
        await asyncio.sleep(0.15)  # every replica is mid-stream now
        os.kill(victim.pid, signal.SIGKILL)
        await asyncio.sleep(0.05)
        second = [asyncio.create_task(one(client, 100 + i)) for i in range(24)]
        done = await asyncio.wait_for(asyncio.gather(*first, *second), timeout=30.0)  # no hang
        await client.close()
        return list(done)

    with running_server(gateway) as url:
        results = asyncio.run(load(url))
        deadline = time.monotonic() + 30  # the ledger flushes every 0.2 s: every row, then check
        while len(ledger.rows()) < 48 and time.monotonic() < deadline:
            time.sleep(0.05)
        metrics = httpx.get(f"{url}/metrics").text

    ok = [tokens for status, tokens in results if status == "ok"]
    assert len(results) == 48
    assert len(ok) >= 40  # only streams already running on the victim may fail
    assert all(status == "ok" for status, _ in results[24:])  # after the kill: retried, not lost
    retried = [
        line
        for line in metrics.splitlines()
        if line.startswith('npucenter_gateway_retries_total{model="m"}')
    ]
    assert retried and float(retried[0].split()[-1]) >= 1
    rows = ledger.rows()
    assert len(rows) == 48
    assert sum(r.total_tokens for r in rows) == sum(ok)
    assert sum(r.total_tokens for r in rows if r.status == "ok") == sum(ok)
    assert all(r.replica_id != "r1" for r in rows if r.status == "ok")  # nothing finished on it
    assert all(r.output_tokens == 0 for r in rows if r.status == "error")  # failures are free
