"""LocalProcessExecutor running real virtual-engine processes on loopback: start, serve with the
official openai client, abort on disconnect, restart, stop, and no orphans when the parent dies."""

from __future__ import annotations

import asyncio
import dataclasses
import os
import signal
import subprocess
import sys
import textwrap
import time
from collections.abc import AsyncIterator

import httpx
import openai
import pytest

from npucenter.engines import ReplicaSpec
from npucenter.errors import UpstreamError
from npucenter.executors import LocalProcessExecutor, ReplicaState, RunningReplica


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    # a zombie still answers kill(0); read its state
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().split(")")[-1].split()[0] != "Z"
    except FileNotFoundError:
        return False


def _wait_gone(pid: int, timeout_s: float = 10.0) -> bool:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if not _alive(pid):
            return True
        time.sleep(0.05)
    return False


def _wait_exited(executor: LocalProcessExecutor, replica_id: str, timeout_s: float = 10.0) -> None:
    # a SIGKILLed process can show as a zombie before waitpid may reap it (threads still
    # exiting); wait until the executor's own Popen sees the exit
    proc = executor._records[replica_id].proc
    assert proc is not None
    proc.wait(timeout=timeout_s)


def _metric(text: str, name: str) -> float:
    for line in text.splitlines():
        if line.startswith(name + "{") or line.startswith(name + " "):
            return float(line.rsplit(" ", 1)[1])
    raise KeyError(name)


@pytest.fixture
async def executor() -> AsyncIterator[LocalProcessExecutor]:
    ex = LocalProcessExecutor(ready_timeout_s=30)
    yield ex
    await ex.shutdown()


@pytest.fixture
async def replica(executor: LocalProcessExecutor) -> RunningReplica:
    spec = ReplicaSpec(
        engine="virtual",
        model="llama-3.1-8b",
        device="rngd",
        served_model_name="llama",
        time_scale=0.2,
    )
    return await executor.start(spec)


async def test_openai_client_streaming_and_not(replica: RunningReplica) -> None:
    assert replica.state is ReplicaState.READY and replica.pid is not None
    client = openai.AsyncOpenAI(base_url=replica.openai_base_url, api_key="unused")
    try:
        models = await client.models.list()
        assert [m.id for m in models.data] == ["llama"]
        done = await client.chat.completions.create(
            model="llama", messages=[{"role": "user", "content": "hello"}], max_tokens=7
        )
        assert done.usage is not None and done.usage.completion_tokens == 7
        assert done.choices[0].finish_reason == "length"
        stream = await client.chat.completions.create(
            model="llama",
            messages=[{"role": "user", "content": "hello"}],
            max_tokens=5,
            stream=True,
            stream_options={"include_usage": True},
        )
        pieces, usage = [], None
        async for chunk in stream:
            if chunk.choices and chunk.choices[0].delta.content:
                pieces.append(chunk.choices[0].delta.content)
            if chunk.usage is not None:
                usage = chunk.usage
        assert usage is not None and usage.completion_tokens == 5
        assert len(pieces) == 5
        comp = await client.completions.create(model="llama", prompt="a b c", max_tokens=3)
        assert comp.usage is not None and comp.usage.prompt_tokens == 3
    finally:
        await client.close()


async def test_client_disconnect_aborts_the_request(replica: RunningReplica) -> None:
    async with httpx.AsyncClient(base_url=replica.base_url, timeout=10) as client:
        payload = {
            "model": "llama",
            "messages": [{"role": "user", "content": "go"}],
            "max_tokens": 5000,
            "stream": True,
        }
        async with client.stream("POST", "/v1/chat/completions", json=payload) as response:
            lines = response.aiter_lines()
            got = 0
            async for line in lines:
                if line.startswith("data: "):
                    got += 1
                if got >= 3:
                    break
        # the connection is closed now; the engine must drop the request promptly
        for _ in range(100):
            metrics = (await client.get("/metrics")).text
            if _metric(metrics, "npucenter:requests_aborted_total") == 1:
                break
            await asyncio.sleep(0.05)
        assert _metric(metrics, "npucenter:requests_aborted_total") == 1
        assert _metric(metrics, "vllm:num_requests_running") == 0
        generated = _metric(metrics, "vllm:generation_tokens_total")
        await asyncio.sleep(0.3)
        later = _metric((await client.get("/metrics")).text, "vllm:generation_tokens_total")
        assert later == generated < 5000  # no more tokens for the gone client


async def test_stop_and_restart(executor: LocalProcessExecutor, replica: RunningReplica) -> None:
    assert replica.pid is not None
    again = await executor.restart(replica.replica_id)
    assert again.restarts == 1 and again.pid != replica.pid
    assert _wait_gone(replica.pid)
    assert await executor.check(again.replica_id)
    assert again.pid is not None
    os.kill(again.pid, signal.SIGKILL)
    _wait_exited(executor, again.replica_id)
    assert not await executor.check(again.replica_id)
    assert await executor.restart_failed() == [again.replica_id]
    third = executor.replicas()[0]
    assert third.restarts == 2 and await executor.check(third.replica_id)
    await executor.stop(third.replica_id)
    assert third.pid is not None and _wait_gone(third.pid)
    assert executor.replicas() == []


async def test_a_replica_that_cannot_start_reports_why(executor: LocalProcessExecutor) -> None:
    spec = ReplicaSpec(engine="virtual", model="no-such-model", device="rngd")
    with pytest.raises(UpstreamError) as info:
        await executor.start(spec)
    assert info.value.details["exit_code"] == 3
    assert "not_found" in str(info.value)
    assert executor.replicas() == []  # a failed start leaves nothing behind


async def test_a_replica_that_cannot_restart_backs_off(
    executor: LocalProcessExecutor, replica: RunningReplica, monkeypatch: pytest.MonkeyPatch
) -> None:
    rid = replica.replica_id
    record = executor._records[rid]
    record.replica = dataclasses.replace(
        record.replica, spec=dataclasses.replace(replica.spec, model="no-such-model")
    )
    assert replica.pid is not None
    os.kill(replica.pid, signal.SIGKILL)
    _wait_exited(executor, rid)
    assert await executor.restart_failed() == []
    assert [r.state for r in executor.replicas()] == [ReplicaState.FAILED]
    calls = []
    monkeypatch.setattr(executor, "restart", lambda rid: calls.append(rid))
    assert await executor.restart_failed() == []
    assert calls == []  # backing off: not retried at once


_PARENT = textwrap.dedent(
    """
    import asyncio, sys
    from npucenter.engines import ReplicaSpec
    from npucenter.executors import LocalProcessExecutor

    async def main():
        ex = LocalProcessExecutor(ready_timeout_s=30)
        r = await ex.start(ReplicaSpec(engine="virtual", model="llama-3.1-8b", device="rngd"))
        print(r.pid, flush=True)
        await asyncio.sleep(60)

    asyncio.run(main())
    """
)


@pytest.mark.parametrize("sig", [signal.SIGKILL, signal.SIGTERM, signal.SIGINT])
def test_no_orphan_when_the_parent_dies(sig: int) -> None:
    parent = subprocess.Popen([sys.executable, "-c", _PARENT], stdout=subprocess.PIPE, text=True)
    try:
        assert parent.stdout is not None
        child_pid = int(parent.stdout.readline())
        assert _alive(child_pid)
        parent.send_signal(sig)
        parent.wait(timeout=10)
        assert _wait_gone(child_pid), f"replica {child_pid} outlived its parent ({sig!r})"
    finally:
        if parent.poll() is None:
            parent.kill()
            parent.wait()
