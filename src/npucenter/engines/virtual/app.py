"""The virtual engine's HTTP face: a bare ASGI app speaking the OpenAI API (no framework).

Routes: ``GET /health``, ``GET /metrics``, ``GET /v1/models``, ``POST /v1/completions``,
``POST /v1/chat/completions`` (JSON or SSE with ``stream: true``). Exactly one response or
stream chunk carries ``usage``: the JSON body, or the last chunk before ``[DONE]`` (a separate
``choices: []`` chunk when ``stream_options.include_usage`` is set, else the finish chunk). A
client that disconnects aborts its request in the engine at once.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import time
from collections.abc import Awaitable, Callable, MutableMapping
from dataclasses import dataclass
from typing import Any

from npucenter.engines.virtual.loop import EngineLoop, RequestHandle
from npucenter.engines.virtual.lora import LoraStepCost
from npucenter.engines.virtual.metrics import EngineMetrics
from npucenter.engines.virtual.output import (
    OutputPlan,
    plan_output,
    refuse_unsupported,
    word_seed,
)
from npucenter.errors import InvalidRequestError, NotFoundError, NpuCenterError, UpstreamError
from npucenter.wire.openai import CHAT, COMPLETIONS, new_id, usage_dict, validate_request
from npucenter.wire.sse import DONE_EVENT, sse_event
from npucenter.wire.tokens import (
    count_chat_tokens,
    count_prompt_tokens,
    natural_output_tokens,
    synthetic_text,
)

__all__ = ["VirtualEngineApp"]

log = logging.getLogger(__name__)

Scope = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[MutableMapping[str, Any]]]
Send = Callable[[MutableMapping[str, Any]], Awaitable[None]]

_JSON_HEADERS = [(b"content-type", b"application/json")]
_SSE_HEADERS = [
    (b"content-type", b"text/event-stream"),
    (b"cache-control", b"no-cache"),
]
_MAX_BODY_BYTES = 32 * 1024 * 1024
_dumps = json.JSONEncoder(separators=(",", ":"), ensure_ascii=False).encode


@dataclass(frozen=True, slots=True)
class _Parsed:
    chat: bool
    prompt_tokens: int
    max_tokens: int
    stream: bool
    include_usage: bool
    plan: OutputPlan  # what the request's tokens say


class VirtualEngineApp:
    """An ASGI application serving one model from an :class:`EngineLoop`."""

    def __init__(
        self,
        loop: EngineLoop,
        *,
        model_name: str,
        max_model_len: int,
        metrics: EngineMetrics | None = None,
        owned_by: str = "npucenter-virtual",
        lora_cost: LoraStepCost | None = None,
        adapter_load_s: float = 0.0,
    ) -> None:
        self.loop = loop
        self.model_name = model_name
        self.max_model_len = max_model_len
        self.metrics = metrics
        self._created = int(time.time())
        # LoRA adapters loaded at run time (vLLM's /v1/load_lora_adapter, the same body): the
        # twin runs the same flow as a real engine. While some are loaded every step pays the
        # perf model's LoRA term (engines/virtual/lora.py); a load takes the measured time of
        # the real engine on this device where there is one (else none).
        self.adapters: dict[str, str] = {}  # served name -> path it was loaded from
        self.lora_cost = lora_cost
        self.adapter_load_s = adapter_load_s
        self._models_body = _dumps(
            {
                "object": "list",
                "data": [
                    {
                        "id": model_name,
                        "object": "model",
                        "created": self._created,
                        "owned_by": owned_by,
                        "max_model_len": max_model_len,
                    }
                ],
            }
        ).encode()

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        kind = scope["type"]
        if kind == "http":
            await self._http(scope, receive, send)
        elif kind == "lifespan":
            await self._lifespan(receive, send)

    def _models(self) -> bytes:
        if not self.adapters:
            return self._models_body
        doc = json.loads(self._models_body)
        doc["data"] += [
            {"id": name, "object": "model", "created": self._created, "parent": self.model_name}
            for name in sorted(self.adapters)
        ]
        return _dumps(doc).encode()

    async def _adapter(self, path: str, raw: bytes, send: Send) -> None:
        try:
            body = json.loads(raw or b"{}")
        except ValueError:
            body = None
        name = body.get("lora_name") if isinstance(body, dict) else None
        if not isinstance(name, str) or not name:
            await _error(send, 400, "lora_name is required", "invalid_request_error", "lora_name")
            return
        if path.endswith("/load_lora_adapter"):
            if name in self.adapters:
                await _error(
                    send,
                    400,
                    f"The lora adapter '{name}' has already been loaded.",
                    "invalid_request_error",
                    "lora_name",
                )
                return
            lora_path = str(body.get("lora_path", ""))
            if self.adapter_load_s > 0:
                await asyncio.sleep(self.adapter_load_s)
            self.adapters[name] = lora_path
            if self.lora_cost is not None:
                self.lora_cost.loaded(name, lora_path)
            text = f"Success: LoRA adapter '{name}' added successfully."
        else:
            if self.adapters.pop(name, None) is None:
                await _error(
                    send,
                    404,
                    f"The lora adapter '{name}' cannot be found.",
                    "not_found_error",
                    None,
                )
                return
            if self.lora_cost is not None:
                self.lora_cost.unloaded(name)
            text = f"Success: LoRA adapter '{name}' removed successfully."
        await _respond(send, 200, text.encode(), [(b"content-type", b"text/plain")])

    async def _lifespan(self, receive: Receive, send: Send) -> None:
        while True:
            message = await receive()
            if message["type"] == "lifespan.startup":
                self.loop.start()
                await send({"type": "lifespan.startup.complete"})
            elif message["type"] == "lifespan.shutdown":
                await self.loop.stop()
                await send({"type": "lifespan.shutdown.complete"})
                return

    async def _http(self, scope: Scope, receive: Receive, send: Send) -> None:
        method, path = scope["method"], scope["path"]
        try:
            if path in ("/v1/chat/completions", "/v1/completions"):
                if method != "POST":
                    raise _MethodNotAllowed
                body = await _read_body(receive)
                await self._generate(path == "/v1/chat/completions", body, receive, send)
            elif path in ("/v1/load_lora_adapter", "/v1/unload_lora_adapter") and method == "POST":
                await self._adapter(path, await _read_body(receive), send)
            elif method not in ("GET", "HEAD"):
                raise _MethodNotAllowed
            elif path == "/health":
                status = 200 if self.loop.fatal is None else 503
                await _respond(send, status, b"", [])
            elif path == "/v1/models":
                await _respond(send, 200, self._models(), _JSON_HEADERS)
            elif path == "/metrics" and self.metrics is not None:
                headers = [(b"content-type", b"text/plain; version=0.0.4; charset=utf-8")]
                await _respond(send, 200, self.metrics.render(), headers)
            else:
                await _error(send, 404, f"no route {path}", "not_found_error", None)
        except _MethodNotAllowed:
            await _error(
                send, 405, f"{method} not allowed on {path}", "invalid_request_error", None
            )
        except NpuCenterError as exc:
            await _error(
                send,
                exc.http_status,
                str(exc),
                "invalid_request_error" if exc.http_status < 500 else "server_error",
                exc.details.get("param"),
                code=exc.code,
            )

    # --- generation ---------------------------------------------------------------------------
    def _parse(self, chat: bool, body: dict[str, Any]) -> _Parsed:
        model = body.get("model")
        if model is not None and model != self.model_name and model not in self.adapters:
            raise NotFoundError("model", str(model), valid=[self.model_name, *self.adapters])
        if body.get("n", 1) != 1:
            raise InvalidRequestError("only n=1 is supported", details={"param": "n"})
        if chat:
            prompt_tokens = count_chat_tokens(body.get("messages"))
            validate_request(body, CHAT)
            seed_text = json.dumps(body.get("messages"), sort_keys=True)
            max_tokens = body.get("max_completion_tokens", body.get("max_tokens"))
        else:
            if "prompt" not in body:
                raise InvalidRequestError("prompt is required", details={"param": "prompt"})
            prompt_tokens = count_prompt_tokens(body["prompt"])
            validate_request(body, COMPLETIONS)
            seed_text = json.dumps(body["prompt"])
            max_tokens = body.get("max_tokens", 16)  # the OpenAI completions default
        prompt = body.get("prompt")
        refuse_unsupported(
            body, chat=chat, token_ids_prompt=isinstance(prompt, list) and _all_ints(prompt)
        )
        ignore_eos = bool(body.get("ignore_eos", False))
        room = self.max_model_len - prompt_tokens
        if room < 1:
            raise InvalidRequestError(
                f"prompt has {prompt_tokens} tokens; this model's maximum context is "
                f"{self.max_model_len}",
                details={"param": "messages" if chat else "prompt"},
            )
        natural = max_tokens is None and not ignore_eos
        if max_tokens is None:
            max_tokens = natural_output_tokens(seed_text) if natural else room
        max_tokens = _positive_int(max_tokens, "max_tokens")
        if prompt_tokens + max_tokens > self.max_model_len:
            raise InvalidRequestError(
                f"prompt ({prompt_tokens} tokens) plus max_tokens ({max_tokens}) exceeds the "
                f"maximum context of {self.max_model_len} tokens",
                details={"param": "max_tokens"},
            )
        min_tokens = body.get("min_tokens")
        if min_tokens is not None:
            min_tokens = _positive_int(min_tokens, "min_tokens", allow_zero=True)
            if min_tokens > max_tokens:
                raise InvalidRequestError(
                    "min_tokens must not exceed max_tokens", details={"param": "min_tokens"}
                )
        stream = bool(body.get("stream", False))
        options = body.get("stream_options") or {}
        include_usage = bool(options.get("include_usage", False)) if stream else False
        plan = plan_output(
            body,
            chat=chat,
            num_tokens=max_tokens,
            natural=natural,
            seed=word_seed(body, seed_text),
        )
        if min_tokens is not None and plan.num_tokens < min_tokens:
            plan.num_tokens = min_tokens  # ignore_eos-like: pad with plain words
            plan.pieces = None if plan.pieces is None else _padded(plan, min_tokens)
        return _Parsed(
            chat=chat,
            prompt_tokens=prompt_tokens,
            max_tokens=plan.num_tokens,
            stream=stream,
            include_usage=include_usage,
            plan=plan,
        )

    async def _generate(self, chat: bool, raw: bytes, receive: Receive, send: Send) -> None:
        try:
            body = json.loads(raw)
        except ValueError:
            raise InvalidRequestError("the body is not valid JSON") from None
        if not isinstance(body, dict):
            raise InvalidRequestError("the body must be a JSON object")
        req = self._parse(chat, body)
        handle = self.loop.submit(req.prompt_tokens, req.max_tokens, stream=req.stream)
        watcher = asyncio.get_running_loop().create_task(self._watch_disconnect(receive, handle))
        try:
            if req.stream:
                await self._stream(req, handle, send)
            else:
                await self._complete(req, handle, send)
        finally:
            watcher.cancel()
            self.loop.abort(handle.request_id)  # no-op once finished; frees it on any failure

    async def _watch_disconnect(self, receive: Receive, handle: RequestHandle) -> None:
        while True:
            message = await receive()
            if message["type"] == "http.disconnect":
                self.loop.abort(handle.request_id)
                return

    async def _complete(self, req: _Parsed, handle: RequestHandle, send: Send) -> None:
        try:
            result = await handle.result
        except asyncio.CancelledError:
            task = asyncio.current_task()
            if not handle.result.cancelled() or (task is not None and task.cancelling()):
                raise
            if self.loop.fatal is not None:
                raise UpstreamError("the virtual engine's loop has stopped") from None
            return  # aborted because the client went away: nobody to answer
        plan = req.plan
        n = result.completion_tokens
        text = plan.echo + plan.text(0, n)
        usage = usage_dict(result.prompt_tokens, n)
        rid = new_id(req.chat)
        if req.chat:
            message: dict[str, Any] = {"role": "assistant", "content": text}
            if plan.tool_call is not None:
                call_id, name = plan.tool_call
                message["content"] = None
                message["tool_calls"] = [
                    {
                        "id": call_id,
                        "type": "function",
                        "function": {"name": name, "arguments": plan.text(0, n)},
                    }
                ]
            choice: dict[str, Any] = {
                "index": 0,
                "message": message,
                "logprobs": plan.chat_logprobs(0, n),
                "finish_reason": plan.finish_reason,
            }
            obj = "chat.completion"
        else:
            choice = {
                "index": 0,
                "text": text,
                "logprobs": plan.completion_logprobs(0, n, len(plan.echo)),
                "finish_reason": plan.finish_reason,
            }
            obj = "text_completion"
        body = {
            "id": rid,
            "object": obj,
            "created": int(time.time()),
            "model": self.model_name,
            "choices": [choice],
            "usage": usage,
        }
        await _respond(send, 200, _dumps(body).encode(), _JSON_HEADERS)

    async def _stream(self, req: _Parsed, handle: RequestHandle, send: Send) -> None:
        assert handle.queue is not None
        await send({"type": "http.response.start", "status": 200, "headers": _SSE_HEADERS})
        rid = new_id(req.chat)
        created = int(time.time())
        obj = "chat.completion.chunk" if req.chat else "text_completion"
        head = f'{{"id":"{rid}","object":"{obj}","created":{created},"model":{_dumps(self.model_name)},"choices":['
        if req.chat:
            first = '{"index":0,"delta":{"role":"assistant","content":""},"logprobs":null,"finish_reason":null}'
            await _sse(send, head + first + "]}")
        plan = req.plan
        plain = plan.pieces is None and plan.top_logprobs is None and plan.tool_call is None
        if plan.echo:
            echoed = _dumps(plan.echo)
            await _sse(
                send,
                head + f'{{"index":0,"text":{echoed},"logprobs":null,"finish_reason":null}}]}}',
            )
        sent = 0
        queue = handle.queue
        while True:
            n = await queue.get()
            if n is None:
                break
            if plain:  # the hot path: no JSON encoder for the chunk
                piece = _dumps(plan.text(sent, n))
                if req.chat:
                    choice = f'{{"index":0,"delta":{{"content":{piece}}},"logprobs":null,"finish_reason":null}}'
                else:
                    choice = f'{{"index":0,"text":{piece},"logprobs":null,"finish_reason":null}}'
            else:
                choice = _dumps(self._chunk_choice(req, sent, n))
            sent += n
            await _sse(send, head + choice + "]}")
        if not handle.result.done() or handle.result.cancelled():
            return  # aborted: the client is gone
        result = handle.result.result()
        reason = plan.finish_reason
        usage = _dumps(usage_dict(result.prompt_tokens, result.completion_tokens))
        if req.chat:
            last = f'{{"index":0,"delta":{{}},"logprobs":null,"finish_reason":"{reason}"}}'
        else:
            last = f'{{"index":0,"text":"","logprobs":null,"finish_reason":"{reason}"}}'
        if req.include_usage:
            await _sse(send, head + last + "]}")
            await _sse(send, head + '],"usage":' + usage + "}")
        else:
            await _sse(send, head + last + '],"usage":' + usage + "}")
        await send({"type": "http.response.body", "body": DONE_EVENT, "more_body": False})

    @staticmethod
    def _chunk_choice(req: _Parsed, start: int, n: int) -> dict[str, Any]:
        plan = req.plan
        text = plan.text(start, n)
        if not req.chat:
            logprobs = plan.completion_logprobs(start, n, len(plan.echo) + len(plan.text(0, start)))
            return {"index": 0, "text": text, "logprobs": logprobs, "finish_reason": None}
        delta: dict[str, Any]
        if plan.tool_call is not None:
            call: dict[str, Any] = {"index": 0, "function": {"arguments": text}}
            if start == 0:  # the first piece names the call
                call_id, name = plan.tool_call
                call = {
                    "index": 0,
                    "id": call_id,
                    "type": "function",
                    "function": {"name": name, "arguments": text},
                }
            delta = {"tool_calls": [call]}
        else:
            delta = {"content": text}
        logprobs = plan.chat_logprobs(start, n)
        return {"index": 0, "delta": delta, "logprobs": logprobs, "finish_reason": None}


def _all_ints(values: list[Any]) -> bool:
    return all(isinstance(v, int) and not isinstance(v, bool) for v in values)


def _padded(plan: OutputPlan, num_tokens: int) -> list[str]:
    pieces = plan.pieces or []
    extra = [synthetic_text(i, 1, plan.seed) for i in range(len(pieces), num_tokens)]
    return [*pieces, *extra]


class _MethodNotAllowed(Exception):
    pass


def _positive_int(value: Any, name: str, *, allow_zero: bool = False) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise InvalidRequestError(f"{name} must be an integer", details={"param": name})
    if value < (0 if allow_zero else 1):
        raise InvalidRequestError(
            f"{name} must be {'>= 0' if allow_zero else '>= 1'}", details={"param": name}
        )
    return value


async def _read_body(receive: Receive) -> bytes:
    chunks: list[bytes] = []
    size = 0
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            raise InvalidRequestError("the client disconnected before sending the body")
        chunk = message.get("body", b"")
        size += len(chunk)
        if size > _MAX_BODY_BYTES:
            raise InvalidRequestError("the request body is too large")
        chunks.append(chunk)
        if not message.get("more_body", False):
            return b"".join(chunks)


async def _respond(
    send: Send, status: int, body: bytes, headers: list[tuple[bytes, bytes]]
) -> None:
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": body, "more_body": False})


async def _sse(send: Send, data: str) -> None:
    await send(
        {
            "type": "http.response.body",
            "body": sse_event(data),
            "more_body": True,
        }
    )


async def _error(
    send: Send, status: int, message: str, kind: str, param: Any, *, code: str | None = None
) -> None:
    body = {"error": {"message": message, "type": kind, "param": param, "code": code}}
    with contextlib.suppress(Exception):
        await _respond(send, status, _dumps(body).encode(), _JSON_HEADERS)
