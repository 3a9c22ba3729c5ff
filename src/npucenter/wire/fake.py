"""A fake OpenAI-compatible server (no model, no device) for the gateway's tests and the bench stub.

:class:`FakeOpenAI` decides every answer (auth, model check, token counts by
:mod:`npucenter.wire.tokens`, synthetic text, pacing, scripted failures) and serves it two ways:
as an ASGI app (``await fake(scope, receive, send)``: under uvicorn, where the gateway's tests
run it) and on raw asyncio streams (:func:`serve_fake`: keep-alive HTTP/1.1 with chunked SSE, so
cheap that a benchmark of the load generator measures the generator, not the server).
:class:`FakeScript` is mutable: tests change it between requests.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
from collections.abc import AsyncGenerator, Awaitable, Callable, Mapping, MutableMapping
from dataclasses import dataclass
from typing import Any

from npucenter.wire.openai import completion_body, stream_chunk, usage_dict
from npucenter.wire.sse import DONE_EVENT, sse_json
from npucenter.wire.tokens import count_chat_tokens, count_prompt_tokens, synthetic_text

__all__ = ["FakeOpenAI", "FakeReply", "FakeScript", "serve_fake"]

Message = MutableMapping[str, Any]
_REASONS = {200: "OK", 400: "Bad Request", 401: "Unauthorized", 403: "Forbidden", 404: "Not Found"}


@dataclass(slots=True, kw_only=True)
class FakeScript:
    """How the fake behaves.

    ``models`` empty accepts any model (and lists none); ``fail`` is ``""``, ``"status"`` (HTTP
    500), ``"before_first"`` (drop the connection before any event) or ``"mid_stream"`` (drop it
    after ``fail_after_events`` events).
    """

    models: tuple[str, ...] = ()
    api_key: str | None = None
    forbidden_key: str | None = None  # a known key that may not use the models (HTTP 403)
    streaming: bool = True  # False: answer a stream request with one JSON body
    output_tokens: int = 8  # when the request sets no max_tokens
    ttft_s: float = 0.0
    itl_s: float = 0.0
    tokens_per_chunk: int = 1
    reasoning_tokens: int = 0  # this many of the output tokens arrive as reasoning_content
    power_w: float = 150.0
    strict_fields: bool = False  # refuse vLLM extensions (ignore_eos, min_tokens) like OpenAI
    fail: str = ""
    fail_after_events: int = 2


@dataclass(frozen=True, slots=True)
class FakeReply:
    """What to answer: a whole body (after ``delay_s``), or ``events`` streamed as SSE."""

    status: int = 200
    body: bytes = b""
    content_type: str = "application/json"
    delay_s: float = 0.0
    events: AsyncGenerator[bytes, None] | None = None
    drop: bool = False  # close the connection without answering


class FakeOpenAI:
    """The fake server's logic and its ASGI face."""

    def __init__(self, script: FakeScript | None = None, *, name: str = "fake") -> None:
        self.script = script or FakeScript()
        self.name = name
        self.started_s = time.monotonic()
        self.num_requests = 0
        self.num_completed = 0
        self.num_cancelled = 0
        self.last_body: dict[str, Any] | None = None

    # --- decisions ---------------------------------------------------------------------------

    def answer(self, method: str, path: str, headers: Mapping[str, str], body: bytes) -> FakeReply:
        """The reply to one request (``headers`` by lower-case name)."""
        script = self.script
        if path == "/metrics":
            return FakeReply(body=self._metrics(), content_type="text/plain; version=0.0.4")
        if path in ("/health", "/healthz"):
            return FakeReply(body=b'{"status":"ok"}')
        auth = headers.get("authorization")
        if script.forbidden_key is not None and auth == f"Bearer {script.forbidden_key}":
            return _error(403, "key may not use this model", "permission_error")
        if script.api_key is not None and auth != f"Bearer {script.api_key}":
            return _error(401, "invalid API key", "authentication_error")
        if path == "/v1/models" and method == "GET":
            data = [{"id": m, "object": "model", "owned_by": self.name} for m in script.models]
            return FakeReply(body=json.dumps({"object": "list", "data": data}).encode())
        if path in ("/v1/chat/completions", "/v1/completions") and method == "POST":
            return self._complete(path.endswith("chat/completions"), body)
        return _error(404, f"no route {method} {path}", "not_found")

    def _complete(self, chat: bool, raw: bytes) -> FakeReply:
        script = self.script
        try:
            request = json.loads(raw)
        except ValueError:
            return _error(400, "body is not JSON", "invalid_request_error")
        if not isinstance(request, dict):
            return _error(400, "body is not a JSON object", "invalid_request_error")
        extensions = sorted({"ignore_eos", "min_tokens"} & set(request))
        if script.strict_fields and extensions:
            msg = f"Unrecognized request argument supplied: {extensions[0]}"
            return _error(400, msg, "invalid_request_error")
        model = request.get("model")
        if script.models and model not in script.models:
            return _error(404, f"The model `{model}` does not exist.", "NotFoundError")
        self.last_body = request
        self.num_requests += 1
        if script.fail == "status":
            return _error(500, "scripted failure", "server_error")
        if script.fail == "before_first":
            return FakeReply(drop=True)
        try:
            prompt_tokens = (
                count_chat_tokens(request.get("messages"))
                if chat
                else count_prompt_tokens(request.get("prompt", ""))
            )
        except Exception as exc:
            return _error(400, str(exc), "invalid_request_error")
        n_out = int(
            request.get("max_completion_tokens")
            or request.get("max_tokens")
            or script.output_tokens
        )
        usage: dict[str, Any] = usage_dict(prompt_tokens, n_out)
        if script.reasoning_tokens:
            usage["completion_tokens_details"] = {
                "reasoning_tokens": min(script.reasoning_tokens, n_out)
            }
        model_name = str(model or self.name)
        if not (request.get("stream") and script.streaming):
            body = completion_body(
                chat=chat,
                model=model_name,
                text=synthetic_text(0, n_out),
                finish_reason="length",
                usage=usage,
                response_id="cmpl-fake",
            )
            delay_s = script.ttft_s + script.itl_s * max(0, n_out - 1)
            return FakeReply(body=json.dumps(body).encode(), delay_s=delay_s)
        options = request.get("stream_options") or {}
        return FakeReply(
            content_type="text/event-stream",
            events=self._events(
                chat,
                model_name,
                n_out,
                usage if options.get("include_usage") else None,
                per_chunk_usage=bool(options.get("continuous_usage_stats")),
            ),
        )

    async def _events(
        self,
        chat: bool,
        model: str,
        n_out: int,
        usage: dict[str, Any] | None,
        *,
        per_chunk_usage: bool,
    ) -> AsyncGenerator[bytes, None]:
        script = self.script
        finished = False
        try:
            if script.ttft_s > 0:
                await asyncio.sleep(script.ttft_s)
            sent = events = 0
            while sent < n_out:
                if script.fail == "mid_stream" and events >= script.fail_after_events:
                    raise ConnectionResetError("scripted: died mid-stream")
                if events and script.itl_s > 0:
                    await asyncio.sleep(script.itl_s)
                k = min(script.tokens_per_chunk, n_out - sent)
                piece = synthetic_text(sent, k)
                delta = None
                if chat and sent < script.reasoning_tokens:
                    delta = {"reasoning_content": piece}
                sent += k
                chunk = stream_chunk(
                    chat=chat,
                    model=model,
                    response_id="cmpl-fake",
                    text=piece,
                    delta=delta,
                    finish_reason="length" if sent >= n_out else None,
                )
                if per_chunk_usage and usage is not None:
                    chunk["usage"] = {**usage, "completion_tokens": sent}
                events += 1
                yield sse_json(chunk)
            if usage is not None:
                yield sse_json(
                    stream_chunk(chat=chat, model=model, response_id="cmpl-fake", usage=usage)
                )
            yield DONE_EVENT
            finished = True
            self.num_completed += 1
        finally:
            if not finished and script.fail != "mid_stream":
                self.num_cancelled += 1

    def _metrics(self) -> bytes:
        elapsed_s = time.monotonic() - self.started_s
        power_w = self.script.power_w
        lines = [
            "# HELP npucenter_power_watts Power drawn by the device (fake: constant).",
            "# TYPE npucenter_power_watts gauge",
            f'npucenter_power_watts{{device="fake"}} {power_w}',
            "# HELP npucenter_energy_joules_total Energy drawn since start.",
            "# TYPE npucenter_energy_joules_total counter",
            f'npucenter_energy_joules_total{{device="fake"}} {power_w * elapsed_s}',
            f"npucenter_stub_requests_total {self.num_requests}",
        ]
        return ("\n".join(lines) + "\n").encode()

    # --- ASGI --------------------------------------------------------------------------------

    async def __call__(
        self,
        scope: MutableMapping[str, Any],
        receive: Callable[[], Awaitable[Message]],
        send: Callable[[Message], Awaitable[None]],
    ) -> None:
        """Serve one ASGI request (a client that hangs up aborts it, as an engine would)."""
        if scope["type"] != "http":
            return
        raw = b""
        while True:
            message = await receive()
            raw += message.get("body", b"")
            if not message.get("more_body"):
                break
        headers = {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in scope["headers"]}
        reply = self.answer(scope["method"], scope["path"], headers, raw)
        if reply.drop:
            raise ConnectionAbortedError("scripted: dropped before the first token")
        hangup = asyncio.ensure_future(receive())
        try:
            if reply.events is None:
                if reply.delay_s > 0:
                    await asyncio.wait([hangup], timeout=reply.delay_s)
                    if hangup.done():
                        self.num_cancelled += 1
                        return
                await _asgi_whole(send, reply)
                if reply.status == 200 and scope["path"].endswith("completions"):
                    self.num_completed += 1
                return
            await send(
                {
                    "type": "http.response.start",
                    "status": 200,
                    "headers": [(b"content-type", b"text/event-stream")],
                }
            )
            events = reply.events
            while True:
                step = asyncio.ensure_future(anext(events))
                await asyncio.wait([step, hangup], return_when=asyncio.FIRST_COMPLETED)
                if not step.done():  # the client hung up: abort the request
                    step.cancel()
                    with contextlib.suppress(asyncio.CancelledError, StopAsyncIteration):
                        await step
                    await events.aclose()
                    return
                try:
                    data = step.result()
                except StopAsyncIteration:
                    break
                await send({"type": "http.response.body", "body": data, "more_body": True})
            await send({"type": "http.response.body", "body": b"", "more_body": False})
        finally:
            hangup.cancel()


async def serve_fake(fake: FakeOpenAI, host: str = "127.0.0.1", port: int = 0) -> asyncio.Server:
    """Serve ``fake`` on raw asyncio streams at ``host:port`` (0 = any free port)."""

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while True:
                try:
                    head = await reader.readuntil(b"\r\n\r\n")
                except (asyncio.IncompleteReadError, asyncio.LimitOverrunError):
                    return
                lines = head.decode("latin-1").split("\r\n")
                method, target, _ = lines[0].split(" ", 2)
                headers = {}
                for line in lines[1:]:
                    name, sep, value = line.partition(":")
                    if sep:
                        headers[name.strip().lower()] = value.strip()
                length = int(headers.get("content-length", "0") or 0)
                try:
                    body = await reader.readexactly(length) if length else b""
                except asyncio.IncompleteReadError:
                    return
                reply = fake.answer(method, target.split("?", 1)[0], headers, body)
                if reply.drop:
                    return
                await _write_reply(writer, reply)
                if headers.get("connection", "").lower() == "close":
                    return
        except (ConnectionError, asyncio.CancelledError):
            return
        finally:
            with contextlib.suppress(Exception):
                writer.close()

    return await asyncio.start_server(handle, host, port, backlog=4096)


async def _write_reply(writer: asyncio.StreamWriter, reply: FakeReply) -> None:
    if reply.events is None:
        if reply.delay_s > 0:
            await asyncio.sleep(reply.delay_s)
        head = (
            f"HTTP/1.1 {reply.status} {_REASONS.get(reply.status, 'Error')}\r\n"
            f"content-type: {reply.content_type}\r\ncontent-length: {len(reply.body)}\r\n\r\n"
        )
        writer.write(head.encode() + reply.body)
        await writer.drain()
        return
    writer.write(
        b"HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\n"
        b"transfer-encoding: chunked\r\ncache-control: no-cache\r\n\r\n"
    )
    events = reply.events
    try:
        async for data in events:
            writer.write(b"%x\r\n%b\r\n" % (len(data), data))
            if writer.transport.get_write_buffer_size() > 65536:
                await writer.drain()
    finally:
        await events.aclose()
    writer.write(b"0\r\n\r\n")
    await writer.drain()


async def _asgi_whole(send: Callable[[Message], Awaitable[None]], reply: FakeReply) -> None:
    await send(
        {
            "type": "http.response.start",
            "status": reply.status,
            "headers": [
                (b"content-type", reply.content_type.encode()),
                (b"content-length", str(len(reply.body)).encode()),
            ],
        }
    )
    await send({"type": "http.response.body", "body": reply.body})


def _error(status: int, message: str, kind: str) -> FakeReply:
    body = {"error": {"message": message, "type": kind, "param": None, "code": status}}
    return FakeReply(status=status, body=json.dumps(body).encode())
