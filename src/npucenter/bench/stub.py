"""A minimal OpenAI-compatible server for testing the load generator (no model, no device).

It speaks just enough HTTP/1.1 (keep-alive, chunked SSE) on raw asyncio streams to stay cheap, so
that a benchmark of the generator measures the generator, not the server. It counts prompt tokens
as whitespace-separated words plus a fixed chat-template overhead, answers ``max_tokens`` tokens,
and can be told to require an API key, refuse to stream, or pace its tokens.

Run it alone with ``python -m npucenter.bench.stub --port 8123``; tests use :func:`running_stub`.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass

__all__ = ["StubConfig", "main", "running_stub", "serve_stub"]

_REASONS = {200: "OK", 400: "Bad Request", 401: "Unauthorized", 403: "Forbidden", 404: "Not Found"}


@dataclass(frozen=True, slots=True, kw_only=True)
class StubConfig:
    """How the stub behaves.

    ``template_overhead_tokens`` is added to the word count of chat prompts, like a chat
    template would; ``tokens_per_chunk`` > 1 packs several tokens into one SSE event.
    """

    models: tuple[str, ...] = ("stub-model",)
    api_key: str | None = None
    forbidden_key: str | None = None  # a known key that may not use the models (HTTP 403)
    streaming: bool = True
    ttft_s: float = 0.0
    itl_s: float = 0.0
    tokens_per_chunk: int = 1
    template_overhead_tokens: int = 7
    reasoning_tokens: int = 0  # this many of the output tokens arrive as reasoning_content
    power_w: float = 150.0
    default_max_tokens: int = 16
    strict_fields: bool = False  # refuse vLLM extensions (ignore_eos, min_tokens) like OpenAI


class _Stub:
    def __init__(self, config: StubConfig) -> None:
        self.config = config
        self.started_s = time.monotonic()
        self.num_requests = 0

    async def handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while True:
                try:
                    head = await reader.readuntil(b"\r\n\r\n")
                except (asyncio.IncompleteReadError, asyncio.LimitOverrunError):
                    return
                lines = head.decode("latin-1").split("\r\n")
                method, path, _ = lines[0].split(" ", 2)
                headers = {}
                for line in lines[1:]:
                    if ":" in line:
                        k, v = line.split(":", 1)
                        headers[k.strip().lower()] = v.strip()
                length = int(headers.get("content-length", "0") or 0)
                try:
                    body = await reader.readexactly(length) if length else b""
                except asyncio.IncompleteReadError:
                    return
                await self._route(method, path.split("?", 1)[0], headers, body, writer)
                if headers.get("connection", "").lower() == "close":
                    return
        except (ConnectionError, asyncio.CancelledError):
            return
        finally:
            with contextlib.suppress(Exception):
                writer.close()

    async def _route(
        self,
        method: str,
        path: str,
        headers: dict[str, str],
        body: bytes,
        writer: asyncio.StreamWriter,
    ) -> None:
        cfg = self.config
        if path == "/metrics":
            return await self._send(writer, 200, self._metrics(), "text/plain; version=0.0.4")
        if path in ("/health", "/healthz"):
            return await self._send(writer, 200, b"ok", "text/plain")
        auth = headers.get("authorization")
        if cfg.forbidden_key is not None and auth == f"Bearer {cfg.forbidden_key}":
            return await self._error(writer, 403, "key may not use this model", "permission_error")
        if cfg.api_key is not None and auth != f"Bearer {cfg.api_key}":
            return await self._error(writer, 401, "invalid API key", "authentication_error")
        if path == "/v1/models" and method == "GET":
            data = [{"id": m, "object": "model", "owned_by": "npucenter-stub"} for m in cfg.models]
            return await self._send(writer, 200, json.dumps({"object": "list", "data": data}))
        if path in ("/v1/chat/completions", "/v1/completions") and method == "POST":
            return await self._complete(path, body, writer)
        return await self._error(writer, 404, f"no route {method} {path}", "not_found")

    async def _complete(self, path: str, body: bytes, writer: asyncio.StreamWriter) -> None:
        cfg = self.config
        try:
            req = json.loads(body)
        except ValueError:
            return await self._error(writer, 400, "body is not JSON", "invalid_request_error")
        if cfg.strict_fields and ({"ignore_eos", "min_tokens"} & set(req)):
            bad = sorted({"ignore_eos", "min_tokens"} & set(req))[0]
            msg = f"Unrecognized request argument supplied: {bad}"
            return await self._error(writer, 400, msg, "invalid_request_error")
        if req.get("model") not in cfg.models:
            msg = f"The model `{req.get('model')}` does not exist."
            return await self._error(writer, 404, msg, "NotFoundError")
        self.num_requests += 1
        chat = path.endswith("chat/completions")
        if chat:
            text = " ".join(str(m.get("content", "")) for m in req.get("messages", []))
            prompt_tokens = len(text.split()) + cfg.template_overhead_tokens
        else:
            prompt_tokens = len(str(req.get("prompt", "")).split())
        max_tokens = req.get("max_completion_tokens") or req.get("max_tokens")
        n_out = int(max_tokens or cfg.default_max_tokens)
        usage: dict[str, object] = {
            "prompt_tokens": prompt_tokens,
            "completion_tokens": n_out,
            "total_tokens": prompt_tokens + n_out,
        }
        if cfg.reasoning_tokens:
            usage["completion_tokens_details"] = {
                "reasoning_tokens": min(cfg.reasoning_tokens, n_out)
            }
        if not (req.get("stream") and cfg.streaming):
            return await self._send(writer, 200, json.dumps(self._whole(chat, n_out, usage)))
        opts = req.get("stream_options") or {}
        include_usage = bool(opts.get("include_usage"))
        per_chunk = bool(opts.get("continuous_usage_stats"))
        await self._stream(writer, chat, n_out, usage if include_usage else None, per_chunk)

    def _whole(self, chat: bool, n_out: int, usage: dict[str, object]) -> dict[str, object]:
        text = " tok" * n_out
        if chat:
            choice: dict[str, object] = {
                "index": 0,
                "message": {"role": "assistant", "content": text},
                "finish_reason": "length",
            }
            return {"id": "stub", "object": "chat.completion", "choices": [choice], "usage": usage}
        choice = {"index": 0, "text": text, "finish_reason": "length"}
        return {"id": "stub", "object": "text_completion", "choices": [choice], "usage": usage}

    async def _stream(
        self,
        writer: asyncio.StreamWriter,
        chat: bool,
        n_out: int,
        usage: dict[str, object] | None,
        per_chunk_usage: bool = False,
    ) -> None:
        cfg = self.config
        writer.write(
            b"HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\n"
            b"transfer-encoding: chunked\r\ncache-control: no-cache\r\n\r\n"
        )
        obj = "chat.completion.chunk" if chat else "text_completion"
        if cfg.ttft_s > 0:
            await writer.drain()
            await asyncio.sleep(cfg.ttft_s)
        sent = 0
        while sent < n_out:
            k = min(cfg.tokens_per_chunk, n_out - sent)
            reasoning = sent < cfg.reasoning_tokens
            piece = " tok" * k
            if chat:
                delta = {"reasoning_content": piece} if reasoning else {"content": piece}
                choice: dict[str, object] = {"index": 0, "delta": delta, "finish_reason": None}
            else:
                choice = {"index": 0, "text": piece, "finish_reason": None}
            sent += k
            if sent >= n_out:
                choice["finish_reason"] = "length"
            event: dict[str, object] = {"id": "stub", "object": obj, "choices": [choice]}
            if per_chunk_usage and usage is not None:
                event["usage"] = {**usage, "completion_tokens": sent}
            _write_chunk(writer, b"data: " + json.dumps(event).encode() + b"\n\n")
            if cfg.itl_s > 0 and sent < n_out:
                await writer.drain()
                await asyncio.sleep(cfg.itl_s)
        if usage is not None:
            event = {"id": "stub", "object": obj, "choices": [], "usage": usage}
            _write_chunk(writer, b"data: " + json.dumps(event).encode() + b"\n\n")
        _write_chunk(writer, b"data: [DONE]\n\n")
        writer.write(b"0\r\n\r\n")
        await writer.drain()

    def _metrics(self) -> bytes:
        elapsed_s = time.monotonic() - self.started_s
        lines = [
            "# HELP npucenter_power_watts Power drawn by the device (stub: constant).",
            "# TYPE npucenter_power_watts gauge",
            f'npucenter_power_watts{{device="stub"}} {self.config.power_w}',
            "# HELP npucenter_energy_joules_total Energy drawn since start.",
            "# TYPE npucenter_energy_joules_total counter",
            f'npucenter_energy_joules_total{{device="stub"}} {self.config.power_w * elapsed_s}',
            f"npucenter_stub_requests_total {self.num_requests}",
        ]
        return ("\n".join(lines) + "\n").encode()

    async def _error(self, writer: asyncio.StreamWriter, status: int, msg: str, kind: str) -> None:
        body = {"error": {"message": msg, "type": kind, "param": None, "code": status}}
        await self._send(writer, status, json.dumps(body))

    async def _send(
        self,
        writer: asyncio.StreamWriter,
        status: int,
        body: str | bytes,
        ctype: str = "application/json",
    ) -> None:
        data = body.encode() if isinstance(body, str) else body
        head = (
            f"HTTP/1.1 {status} {_REASONS.get(status, 'Error')}\r\ncontent-type: {ctype}\r\n"
            f"content-length: {len(data)}\r\n\r\n"
        )
        writer.write(head.encode() + data)
        await writer.drain()


def _write_chunk(writer: asyncio.StreamWriter, data: bytes) -> None:
    writer.write(b"%x\r\n%b\r\n" % (len(data), data))


async def serve_stub(config: StubConfig, host: str = "127.0.0.1", port: int = 0) -> asyncio.Server:
    """Start the stub on ``host:port`` (0 = any free port) in the running loop."""
    stub = _Stub(config)
    return await asyncio.start_server(stub.handle, host, port, backlog=4096)


@contextlib.contextmanager
def running_stub(config: StubConfig | None = None) -> Iterator[str]:
    """Run the stub on a loopback port in a background thread; yields its base URL."""
    cfg = config or StubConfig()
    loop = asyncio.new_event_loop()
    ready = threading.Event()
    holder: dict[str, asyncio.Server] = {}

    def _run() -> None:
        asyncio.set_event_loop(loop)
        holder["server"] = loop.run_until_complete(serve_stub(cfg))
        ready.set()
        loop.run_forever()

    thread = threading.Thread(target=_run, name="npucenter-stub", daemon=True)
    thread.start()
    ready.wait(10)
    server = holder["server"]
    port = server.sockets[0].getsockname()[1]
    try:
        yield f"http://127.0.0.1:{port}"
    finally:

        async def _close() -> None:
            server.close()
            tasks = [t for t in asyncio.all_tasks() if t is not asyncio.current_task()]
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)

        asyncio.run_coroutine_threadsafe(_close(), loop).result(10)
        loop.call_soon_threadsafe(loop.stop)
        thread.join(10)
        loop.close()


def main(argv: list[str] | None = None) -> None:
    """Command line: ``python -m npucenter.bench.stub --port 8123 [--api-key K] [--no-stream]``."""
    parser = argparse.ArgumentParser(description="Minimal OpenAI-compatible stub server.")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8123)
    parser.add_argument("--model", action="append", dest="models")
    parser.add_argument("--api-key")
    parser.add_argument("--no-stream", action="store_true")
    parser.add_argument("--ttft-ms", type=float, default=0.0)
    parser.add_argument("--itl-ms", type=float, default=0.0)
    parser.add_argument("--tokens-per-chunk", type=int, default=1)
    args = parser.parse_args(argv)
    cfg = StubConfig(
        models=tuple(args.models or ("stub-model",)),
        api_key=args.api_key,
        streaming=not args.no_stream,
        ttft_s=args.ttft_ms / 1000,
        itl_s=args.itl_ms / 1000,
        tokens_per_chunk=args.tokens_per_chunk,
    )

    async def _serve() -> None:
        server = await serve_stub(cfg, args.host, args.port)
        port = server.sockets[0].getsockname()[1]
        print(f"stub listening on http://{args.host}:{port}", flush=True)
        async with server:
            await server.serve_forever()

    try:
        import uvloop

        uvloop.run(_serve())
    except ImportError:  # pragma: no cover - uvloop ships with uvicorn[standard]
        asyncio.run(_serve())
    except KeyboardInterrupt:
        pass


if __name__ == "__main__":
    main()
