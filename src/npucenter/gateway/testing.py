"""Fakes and helpers for exercising the gateway: a scripted OpenAI-compatible upstream and a
loopback server runner.

:class:`ScriptedUpstream` answers ``/v1/chat/completions`` and ``/v1/completions`` (streaming and
not) with a fixed number of synthetic tokens, and can be told to fail before its first token or
mid-stream. ``python -m npucenter.gateway.testing --port N`` runs it as a process (to be killed in
tests). Only loopback addresses are ever bound.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import threading
import time
from collections.abc import Awaitable, Callable, Iterator, MutableMapping
from dataclasses import dataclass
from typing import Any, Literal

import uvicorn

__all__ = ["ScriptedUpstream", "UpstreamScript", "running_server", "start_virtual_replicas"]

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]


@dataclass(slots=True, kw_only=True)
class UpstreamScript:
    """How the scripted upstream behaves (mutable: tests change it between requests)."""

    output_tokens: int = 8  # when the request sets no max_tokens
    ttft_s: float = 0.0
    token_delay_s: float = 0.0
    fail: str = (
        ""  # "" | "status" (HTTP 500) | "before_first" (drop before any event) | "mid_stream"
    )
    fail_after_events: int = 2  # for "mid_stream"


class ScriptedUpstream:
    """An OpenAI-compatible fake engine (ASGI)."""

    def __init__(self, script: UpstreamScript | None = None, *, name: str = "scripted") -> None:
        self.script = script or UpstreamScript()
        self.name = name
        self.num_requests = 0
        self.num_completed = 0
        self.num_cancelled = 0
        self.last_body: dict[str, Any] | None = None

    async def __call__(
        self,
        scope: Scope,
        receive: Callable[[], Awaitable[Message]],
        send: Callable[[Message], Awaitable[None]],
    ) -> None:
        """Serve one request."""
        if scope["type"] != "http":
            return
        path = scope["path"]
        if scope["method"] == "GET":
            body = (
                b'{"status":"ok"}' if path.endswith("/health") else b'{"object":"list","data":[]}'
            )
            await _send_json(send, 200, body)
            return
        raw = b""
        while True:
            message = await receive()
            raw += message.get("body", b"")
            if not message.get("more_body"):
                break
        request = json.loads(raw)
        self.last_body = request
        self.num_requests += 1
        script = self.script
        if script.fail == "status":
            await _send_json(send, 500, b'{"error":{"message":"scripted failure"}}')
            return
        if script.fail == "before_first":
            raise ConnectionAbortedError("scripted: dropped before the first token")
        chat = path.endswith("/chat/completions")
        n = int(
            request.get("max_tokens")
            or request.get("max_completion_tokens")
            or script.output_tokens
        )
        prompt = json.dumps(request.get("messages") if chat else request.get("prompt"))
        usage = {"prompt_tokens": max(1, len(prompt) // 4), "completion_tokens": n}
        usage["total_tokens"] = usage["prompt_tokens"] + n
        if script.ttft_s:
            await asyncio.sleep(script.ttft_s)
        if request.get("stream"):
            task = asyncio.current_task()
            gone = asyncio.Event()
            state = {"finished": False}

            async def watch() -> None:  # like vLLM: abort the request when the client goes
                message = await receive()
                if (
                    message["type"] == "http.disconnect"
                    and task is not None
                    and not state["finished"]
                ):
                    gone.set()
                    task.cancel()

            watcher = asyncio.create_task(watch())
            try:
                await self._stream(send, request, chat, n, usage, state)
            except asyncio.CancelledError:
                if not gone.is_set():
                    raise
            finally:
                watcher.cancel()
        else:
            if script.token_delay_s:
                generate = asyncio.ensure_future(
                    asyncio.sleep(script.token_delay_s * max(0, n - 1))
                )
                hangup = asyncio.ensure_future(receive())
                await asyncio.wait([generate, hangup], return_when=asyncio.FIRST_COMPLETED)
                if not generate.done():  # the client hung up: abort, like an engine
                    generate.cancel()
                    self.num_cancelled += 1
                    return
                hangup.cancel()
            await _send_json(
                send, 200, json.dumps(_full(request, chat, n, usage, self.name)).encode()
            )
            self.num_completed += 1

    async def _stream(
        self,
        send: Callable[[Message], Awaitable[None]],
        request: dict[str, Any],
        chat: bool,
        n: int,
        usage: dict[str, int],
        state: dict[str, bool],
    ) -> None:
        script = self.script
        await send(
            {
                "type": "http.response.start",
                "status": 200,
                "headers": [(b"content-type", b"text/event-stream")],
            }
        )
        try:
            for i in range(n):
                if script.fail == "mid_stream" and i >= script.fail_after_events:
                    raise ConnectionResetError("scripted: died mid-stream")
                if i and script.token_delay_s:
                    await asyncio.sleep(script.token_delay_s)
                delta: dict[str, Any] = {"content": f"t{i} "} if chat else {}
                choice = {"index": 0, "delta": delta} if chat else {"index": 0, "text": f"t{i} "}
                choice["finish_reason"] = "length" if i == n - 1 else None
                chunk = _chunk(request, chat, [choice], self.name)
                await send({"type": "http.response.body", "body": _sse(chunk), "more_body": True})
            if (request.get("stream_options") or {}).get("include_usage"):
                chunk = _chunk(request, chat, [], self.name)
                chunk["usage"] = usage
                await send({"type": "http.response.body", "body": _sse(chunk), "more_body": True})
            await send(
                {"type": "http.response.body", "body": b"data: [DONE]\n\n", "more_body": False}
            )
            self.num_completed += 1
        except (asyncio.CancelledError, OSError) as exc:
            if isinstance(exc, asyncio.CancelledError) or "scripted" not in str(exc):
                self.num_cancelled += 1
            raise


def _chunk(
    request: dict[str, Any], chat: bool, choices: list[dict[str, Any]], name: str
) -> dict[str, Any]:
    return {
        "id": "cmpl-scripted",
        "object": "chat.completion.chunk" if chat else "text_completion",
        "created": int(time.time()),
        "model": request.get("model", name),
        "choices": choices,
    }


def _full(
    request: dict[str, Any], chat: bool, n: int, usage: dict[str, int], name: str
) -> dict[str, Any]:
    text = "".join(f"t{i} " for i in range(n))
    choice: dict[str, Any] = (
        {"index": 0, "message": {"role": "assistant", "content": text}, "finish_reason": "length"}
        if chat
        else {"index": 0, "text": text, "finish_reason": "length"}
    )
    return {
        "id": "cmpl-scripted",
        "object": "chat.completion" if chat else "text_completion",
        "created": int(time.time()),
        "model": request.get("model", name),
        "choices": [choice],
        "usage": usage,
    }


def _sse(obj: dict[str, Any]) -> bytes:
    return b"data: " + json.dumps(obj).encode() + b"\n\n"


async def _send_json(send: Callable[[Message], Awaitable[None]], status: int, body: bytes) -> None:
    await send(
        {
            "type": "http.response.start",
            "status": status,
            "headers": [
                (b"content-type", b"application/json"),
                (b"content-length", str(len(body)).encode()),
            ],
        }
    )
    await send({"type": "http.response.body", "body": body})


@contextlib.contextmanager
def running_server(
    app: Any, *, port: int = 0, lifespan: Literal["auto", "on", "off"] = "on"
) -> Iterator[str]:
    """Serve ``app`` with uvicorn on 127.0.0.1 in a background thread; yields its base URL."""
    config = uvicorn.Config(
        app, host="127.0.0.1", port=port, log_level="warning", lifespan=lifespan, access_log=False
    )
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, name="npucenter-test-server", daemon=True)
    thread.start()
    deadline = time.monotonic() + 10.0
    while not server.started:
        if not thread.is_alive() or time.monotonic() > deadline:
            raise RuntimeError("the loopback server did not start")
        time.sleep(0.01)
    bound = server.servers[0].sockets[0].getsockname()[1]
    try:
        yield f"http://127.0.0.1:{bound}"
    finally:
        server.should_exit = True
        thread.join(timeout=10.0)


def main(argv: list[str] | None = None) -> None:
    """Run a scripted upstream on 127.0.0.1 (for process-kill tests and benchmarks)."""
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--output-tokens", type=int, default=8)
    parser.add_argument("--ttft-s", type=float, default=0.0)
    parser.add_argument("--token-delay-s", type=float, default=0.0)
    args = parser.parse_args(argv)
    script = UpstreamScript(
        output_tokens=args.output_tokens, ttft_s=args.ttft_s, token_delay_s=args.token_delay_s
    )
    uvicorn.run(
        ScriptedUpstream(script),
        host="127.0.0.1",
        port=args.port,
        log_level="warning",
        access_log=False,
        lifespan="off",
    )


async def start_virtual_replicas(
    model: str, device: str, count: int, *, max_num_seqs: int = 64, precision: str = "fp8"
) -> tuple[Any, list[Any]]:
    """Start ``count`` virtual engines (one card each) as local processes.

    Returns the executor (stop it with ``await executor.shutdown()``) and the
    gateway endpoints of the replicas, ids ``<device>-0-r<i>`` as a fleet file would name them.
    """
    from npucenter.engines import ReplicaSpec
    from npucenter.executors.local import LocalProcessExecutor
    from npucenter.gateway.pool import ReplicaEndpoint

    executor = LocalProcessExecutor()
    spec = ReplicaSpec(
        engine="virtual",
        model=model,
        device=device,
        tp=1,
        precision=precision,
        max_num_seqs=max_num_seqs,
    )
    reps = await asyncio.gather(
        *(executor.start(spec, replica_id=f"{device}-0-r{i}") for i in range(count))
    )
    endpoints = [
        ReplicaEndpoint(
            replica_id=r.replica_id, base_url=r.base_url, model_id=model, device_id=device
        )
        for r in reps
    ]
    return executor, endpoints


if __name__ == "__main__":
    main()
