"""The lean transport's behaviour, and the CLI (run, sweep, trace, suite, report) against the stub."""

from __future__ import annotations

import asyncio
import json

import httpx
import pytest
from typer.testing import CliRunner, Result

from npucenter.bench.client import Target
from npucenter.bench.loadgen import make_client, run_load
from npucenter.bench.scenario import Scenario
from npucenter.bench.stub import running_stub, stub_script
from npucenter.bench.transport import FastTransport
from npucenter.cli.main import app


async def test_fast_transport_reuses_connections_and_survives_server_close():
    opened = 0

    async def handler(reader, writer):
        nonlocal opened
        opened += 1
        for _ in range(2):  # serve two requests, then close the kept-alive connection
            await reader.readuntil(b"\r\n\r\n")
            writer.write(b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok")
            await writer.drain()
        writer.close()

    server = await asyncio.start_server(handler, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    async with httpx.AsyncClient(mounts={"http://": FastTransport()}) as client:
        bodies = []
        for _ in range(5):
            r = await client.get(f"http://127.0.0.1:{port}/x")
            bodies.append(r.text)
            await asyncio.sleep(0.01)
    server.close()
    assert bodies == ["ok"] * 5
    assert opened == 3  # 2 + 2 + 1 requests over three connections


async def test_fast_transport_maps_timeouts_and_refused_connections():
    with running_stub(stub_script(ttft_s=0.5)) as url:
        target = Target(base_url=url, model="stub-model", timeout_s=0.1)
        async with make_client(None, 0.1) as client:
            out = await run_load(
                client, target, Scenario(arrival="constant", rate_rps=10, max_requests=2)
            )
        assert out.summary["errors_by_kind"] == {"timeout": 2}
    async with httpx.AsyncClient(mounts={"http://": FastTransport()}) as client:
        with pytest.raises(httpx.ConnectError):
            await client.get(f"http://127.0.0.1:{_closed_port()}/")


def test_https_stays_on_httpx_default_transport():
    client = make_client(None, 5)
    assert isinstance(client._transport_for_url(httpx.URL("http://h/")), FastTransport)
    assert not isinstance(client._transport_for_url(httpx.URL("https://h/")), FastTransport)


async def test_httpx_transport_option_gives_the_same_counts(stub_url):
    target = Target(base_url=stub_url, model="stub-model", transport="httpx")
    async with make_client(None, 10, "httpx") as client:
        out = await run_load(
            client,
            target,
            Scenario(arrival="constant", rate_rps=50, max_requests=10, output_tokens=5),
        )
    assert out.summary["completed"] == 10 and out.summary["total_output_tokens"] == 50


def _closed_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


runner = CliRunner()


def _bench(command: str, url: str, *args: str, model: str = "stub-model", out=None) -> Result:
    """``npucenter bench COMMAND --endpoint URL --model MODEL ARGS --no-progress [--json OUT]``."""
    argv = ["bench", *command.split(), "--endpoint", url, "--model", model, *args, "--no-progress"]
    if out is not None:
        argv += ["--json", str(out)]
    return runner.invoke(app, argv)


def _doc(res: Result, out) -> dict:
    assert res.exit_code == 0, res.output
    return json.loads(out.read_text())


def test_cli_run_writes_versioned_json(stub_url, tmp_path):
    out = tmp_path / "r.json"
    res = _bench(
        "run",
        stub_url,
        *("--scenario", "gamma", "--rate", "40", "--burstiness", "0.5"),
        *("--max-requests", "20", "--output-tokens", "6", "--slo-ttft-ms", "1000"),
        out=out,
    )
    doc = _doc(res, out)
    assert doc["schema"] == "npucenter.bench.result" and doc["schema_version"] == 1
    assert doc["harness_version"] and doc["machine"]["cpu_count"]
    s = doc["summary"]
    for key in (
        "requests",
        "completed",
        "errors",
        "achieved_rate_rps",
        "output_tokens_per_s",
        "goodput_rps",
    ):
        assert key in s
    for key in ("ttft_s", "tpot_s", "itl_s", "e2e_s"):
        assert {"mean", "p50", "p90", "p99"} <= set(s[key])
    assert len(doc["requests"]) == 20 and doc["scenario"]["burstiness"] == 0.5
    assert s["good_requests"] == 20


def test_cli_rate_sweep_with_explicit_rates_and_trace_replay(stub_url, tmp_path):
    out = tmp_path / "sweep.json"
    res = _bench(
        "run",
        stub_url,
        *("--scenario", "rate-sweep", "--rates", "20,40", "--step-duration", "0.5"),
        *("--output-tokens", "4"),
        out=out,
    )
    doc = _doc(res, out)
    assert [r["offered_rate_rps"] for r in doc["runs"]] == [20.0, 40.0]
    assert doc["saturation"]["saturation_rps"] > 0
    trace_out = tmp_path / "trace.json"
    res = _bench(
        "run",
        stub_url,
        *("--scenario", "trace", "--trace", "azure-conv", "--trace-speedup", "5"),
        *("--duration", "2"),
        out=trace_out,
    )
    tdoc = _doc(res, trace_out)
    assert tdoc["summary"]["requests"] > 5
    # lengths come from the trace, not from --input-tokens
    assert len({r["target_input_tokens"] for r in tdoc["requests"]}) > 1


def test_cli_suite_runs_every_entry_and_reports(stub_url, tmp_path):
    out = tmp_path / "suite.json"
    res = _bench("suite proving-ground", stub_url, "--duration-scale", "0.02", out=out)
    doc = _doc(res, out)
    assert doc["kind"] == "suite" and doc["suite"]["version"] == "1"
    assert [r["suite_entry"] for r in doc["results"]] == [
        "short-chat",
        "long-context-summarisation",
        "code-completion-trace",
        "rate-sweep",
        "mlperf-server",
    ]
    assert doc["results"][-1]["mlperf"]["result"] in ("VALID", "INVALID")
    html = tmp_path / "r.html"
    res = runner.invoke(app, ["bench", "report", str(out), "--html", str(html)])
    assert res.exit_code == 0, res.output
    assert "mlperf-server" in html.read_text()


def test_cli_report_rejects_a_non_result_file(tmp_path):
    bad = tmp_path / "x.json"
    bad.write_text('{"hello": 1}')
    res = runner.invoke(app, ["bench", "report", str(bad)])
    assert res.exit_code == 2


def test_cli_concurrency_sweep_and_typed_exit_codes(stub_url, tmp_path):
    out = tmp_path / "c.json"
    res = _bench(
        "run",
        stub_url,
        *("--scenario", "concurrency-sweep", "--levels", "1,4", "--step-duration", "0.5"),
        *("--output-tokens", "4"),
        out=out,
    )
    doc = _doc(res, out)
    assert [r["concurrency"] for r in doc["runs"]] == [1, 4]
    assert doc["runs"][1]["summary"]["max_concurrent_requests"] <= 4
    bad = _bench("run", stub_url, "--rate", "1", "--max-requests", "1", model="nope")
    assert bad.exit_code == 3
    bad = _bench("run", stub_url, "--scenario", "sometimes")
    assert bad.exit_code == 2


async def test_cancelled_request_closes_its_connection():
    closed = asyncio.Event()

    async def handler(reader, writer):
        await reader.readuntil(b"\r\n\r\n")
        await reader.read()  # wait until the client goes away
        closed.set()
        writer.close()

    server = await asyncio.start_server(handler, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    async with httpx.AsyncClient(mounts={"http://": FastTransport()}) as client:
        task = asyncio.create_task(client.get(f"http://127.0.0.1:{port}/slow"))
        await asyncio.sleep(0.1)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        await asyncio.wait_for(closed.wait(), 5)
    server.close()


async def test_garbage_response_is_a_protocol_error():
    async def handler(reader, writer):
        await reader.readuntil(b"\r\n\r\n")
        writer.write(b"SPDY/9 what\r\n\r\n")
        await writer.drain()
        writer.close()

    server = await asyncio.start_server(handler, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    async with httpx.AsyncClient(mounts={"http://": FastTransport()}) as client:
        with pytest.raises(httpx.RemoteProtocolError):
            await client.get(f"http://127.0.0.1:{port}/")
    server.close()
