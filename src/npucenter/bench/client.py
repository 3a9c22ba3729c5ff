"""Talking to an OpenAI-compatible endpoint: preflight checks and one timed streaming request.

The edge of the proving ground: httpx exceptions are mapped here to error kinds (per request)
or to npucenter.errors (preflight), never leaked. TTFT and ITL are stamped when the raw bytes
arrive, before any SSE or JSON parsing.
"""

from __future__ import annotations

import dataclasses
import json
import time
from dataclasses import dataclass, field
from typing import Any

import httpx

from npucenter.bench.corpus import TokenCalibration, make_prompt
from npucenter.bench.record import RequestRecord
from npucenter.errors import (
    AuthenticationError,
    InvalidConfigError,
    NotFoundError,
    NotSupportedError,
    PermissionDeniedError,
    UpstreamError,
)
from npucenter.wire.sse import SSEParser

__all__ = [
    "EndpointInfo",
    "Target",
    "build_body",
    "preflight",
    "send_request",
]

_PROBE_WORDS = (32, 160)


@dataclass(frozen=True, slots=True, kw_only=True)
class Target:
    """Where and how to send requests.

    ``base_url`` may or may not end in ``/v1``. ``ignore_eos`` asks vLLM-style servers to
    generate exactly ``max_tokens`` (the field is ignored by servers that do not know it).
    With ``continuous_usage`` the server reports usage on every chunk, so a chunk carrying k
    tokens adds k inter-token gaps of gap/k; otherwise ITL is per content chunk (as in
    ``vllm bench serve``) while TPOT always uses the server's token count.
    """

    base_url: str
    model: str
    api_key: str | None = None
    api: str = "chat"
    timeout_s: float = 300.0
    ignore_eos: bool = True
    include_usage: bool = True  # stream_options.include_usage (OpenAI); off for servers refusing it
    continuous_usage: bool = False  # ask vLLM-style servers for usage on every chunk
    transport: str = "fast"  # fast (npucenter's lean http:// transport) | httpx
    extra_body: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if not self.base_url.startswith(("http://", "https://")):
            raise InvalidConfigError(
                "endpoint", self.base_url, "must be an http:// or https:// URL"
            )
        if self.api not in ("chat", "completions"):
            raise InvalidConfigError("api", self.api, "must be chat or completions")
        if self.transport not in ("fast", "httpx"):
            raise InvalidConfigError("transport", self.transport, "must be fast or httpx")

    @property
    def root_url(self) -> str:
        """The base URL without a trailing ``/v1``."""
        url = self.base_url.rstrip("/")
        return url[: -len("/v1")] if url.endswith("/v1") else url

    @property
    def completions_url(self) -> str:
        """The URL requests are POSTed to."""
        path = "/v1/chat/completions" if self.api == "chat" else "/v1/completions"
        return self.root_url + path

    def headers(self) -> dict[str, str]:
        """Request headers (auth when a key is given)."""
        h = {"content-type": "application/json", "accept": "text/event-stream"}
        if self.api_key:
            h["authorization"] = f"Bearer {self.api_key}"
        return h


@dataclass(frozen=True, slots=True, kw_only=True)
class EndpointInfo:
    """What preflight learnt about the endpoint."""

    base_url: str
    model: str
    models: tuple[str, ...] = ()
    model_card: dict[str, Any] = field(default_factory=dict)
    server: str | None = None
    calibration: TokenCalibration = field(default_factory=TokenCalibration)
    usage_in_stream: bool = True
    ignore_eos: bool = True  # whether the endpoint accepted ignore_eos/min_tokens
    include_usage: bool = True  # whether it accepted stream_options
    notes: tuple[str, ...] = ()

    def adjust(self, target: Target) -> Target:
        """``target`` with the request fields this endpoint accepts."""
        return dataclasses.replace(
            target,
            ignore_eos=target.ignore_eos and self.ignore_eos,
            include_usage=target.include_usage and self.include_usage,
        )

    def to_dict(self) -> dict[str, Any]:
        """JSON-able metadata for the result file."""
        cal = self.calibration
        return {
            "base_url": self.base_url,
            "model": self.model,
            "models": list(self.models),
            "model_card": self.model_card,
            "server": self.server,
            "usage_in_stream": self.usage_in_stream,
            "accepts_ignore_eos": self.ignore_eos,
            "accepts_stream_options": self.include_usage,
            "token_calibration": {
                "tokens_per_word": cal.tokens_per_word,
                "overhead_tokens": cal.overhead_tokens,
                "source": cal.source,
            },
            "notes": list(self.notes),
        }


def build_body(target: Target, prompt: str, max_tokens: int, stream: bool = True) -> dict[str, Any]:
    """The JSON body of one request asking for exactly ``max_tokens`` tokens."""
    body: dict[str, Any] = {"model": target.model, "max_tokens": max_tokens, "temperature": 0.0}
    if target.api == "chat":
        body["messages"] = [{"role": "user", "content": prompt}]
    else:
        body["prompt"] = prompt
    if stream:
        body["stream"] = True
        if target.include_usage:
            body["stream_options"] = {"include_usage": True}
            if target.continuous_usage:
                body["stream_options"]["continuous_usage_stats"] = True
    if target.ignore_eos:
        body["ignore_eos"] = True
        body["min_tokens"] = max_tokens
    body.update(target.extra_body)
    return body


async def send_request(
    client: httpx.AsyncClient,
    target: Target,
    body: bytes,
    record: RequestRecord,
    run_start: float,
) -> RequestRecord:
    """Send one streaming request and fill ``record`` with its timings and token counts.

    Never raises for a request-level failure: the error kind lands in ``record.error``.
    """
    perf = time.perf_counter
    start = perf()
    record.start_s = start - run_start
    state = _StreamState()
    try:
        async with client.stream(
            "POST", target.completions_url, content=body, headers=target.headers()
        ) as resp:
            if resp.status_code != 200:
                detail = (await resp.aread())[:300].decode("utf-8", "replace")
                return _fail(record, f"http_{resp.status_code}", detail, start)
            ctype = resp.headers.get("content-type", "")
            if "text/event-stream" not in ctype:
                await resp.aread()
                return _fail(record, "not_streaming", f"content-type {ctype!r}", start)
            parser = SSEParser()
            raw = resp.aiter_raw() if "content-encoding" not in resp.headers else resp.aiter_bytes()
            async for chunk in raw:
                stamp = perf()  # stamped on arrival, before parsing
                for payload in parser.feed(chunk):
                    state.on_event(payload, stamp)
            for payload in parser.flush():
                state.on_event(payload, perf())
    except httpx.TimeoutException as exc:
        return _fail(record, "timeout", type(exc).__name__, start)
    except httpx.ConnectError as exc:
        return _fail(record, "connect_error", str(exc)[:200], start)
    except (httpx.RemoteProtocolError, httpx.ReadError, httpx.WriteError) as exc:
        return _fail(record, "connection_lost", f"{type(exc).__name__}: {exc}"[:200], start)
    except httpx.HTTPError as exc:
        return _fail(record, "http_error", f"{type(exc).__name__}: {exc}"[:200], start)
    return state.finish(record, start, perf())


class _StreamState:
    __slots__ = (
        "chunk_tokens",
        "done",
        "error",
        "first_s",
        "last_s",
        "num_chunks",
        "stamps",
        "usage",
    )

    def __init__(self) -> None:
        self.first_s: float | None = None
        self.last_s: float | None = None
        self.stamps: list[float] = []
        self.chunk_tokens: list[int] = []
        self.usage: dict[str, Any] | None = None
        self.done = False
        self.error: str | None = None
        self.num_chunks = 0

    def on_event(self, payload: bytes, stamp: float) -> None:
        if payload == b"[DONE]":
            self.done = True
            return
        try:
            event = json.loads(payload)
        except ValueError:
            self.error = self.error or "bad_event"
            return
        if not isinstance(event, dict):
            return
        if "error" in event:
            self.error = "stream_error"
            return
        usage = event.get("usage")
        if usage:
            self.usage = usage
        has_content = False
        for choice in event.get("choices") or ():
            delta = choice.get("delta") or {}
            text = (
                delta.get("content")
                or delta.get("reasoning_content")
                or delta.get("reasoning")
                or choice.get("text")
                or delta.get("tool_calls")  # a tool call's name or arguments are tokens too
            )
            if text:
                has_content = True
            if choice.get("finish_reason"):
                self.done = True
        if has_content:
            self.num_chunks += 1
            if self.first_s is None:
                self.first_s = stamp
            self.stamps.append(stamp)
            # servers with continuous usage stats tell how many tokens a chunk carried
            self.chunk_tokens.append(int(usage["completion_tokens"]) if usage else -1)

    def finish(self, record: RequestRecord, start: float, end: float) -> RequestRecord:
        record.e2e_s = end - start
        record.num_chunks = self.num_chunks
        if self.usage:
            record.usage_reported = True
            record.prompt_tokens = _int(self.usage.get("prompt_tokens"))
            record.output_tokens = _int(self.usage.get("completion_tokens")) or 0
            details = self.usage.get("completion_tokens_details") or {}
            record.reasoning_tokens = _int(details.get("reasoning_tokens")) or 0
        else:
            record.output_tokens = self.num_chunks
        if self.error:
            record.error = self.error
            return record
        if self.first_s is None:
            record.error = "empty_response"
            return record
        if not self.done:
            record.error = "incomplete_stream"
            return record
        record.ttft_s = self.first_s - start
        record.itl_s = self._itls()
        record.ok = True
        return record

    def _itls(self) -> tuple[float, ...]:
        out: list[float] = []
        prev_tokens = self.chunk_tokens[0] if self.chunk_tokens else -1
        for i in range(1, len(self.stamps)):
            gap = self.stamps[i] - self.stamps[i - 1]
            now_tokens = self.chunk_tokens[i]
            k = now_tokens - prev_tokens if now_tokens > 0 and prev_tokens > 0 else 1
            prev_tokens = now_tokens
            k = max(1, k)
            out.extend([gap / k] * k)
        return tuple(out)


def _int(value: Any) -> int | None:
    try:
        return int(value) if value is not None else None
    except (TypeError, ValueError):
        return None


def _fail(record: RequestRecord, kind: str, detail: str, start: float) -> RequestRecord:
    record.e2e_s = time.perf_counter() - start
    record.ok = False
    record.error = kind
    record.error_detail = detail
    return record


async def preflight(
    client: httpx.AsyncClient, target: Target, calibrate: bool = True
) -> EndpointInfo:
    """Check the endpoint before a run; raise a typed error a user can act on.

    Raises:
        UpstreamError: the endpoint cannot be reached or answers garbage.
        AuthenticationError / PermissionDeniedError: 401 / 403.
        NotFoundError: the model is not served there (valid names listed).
        NotSupportedError: the endpoint does not stream (``stream=true`` answered with JSON).
    """
    notes: list[str] = []
    models, card, server = await _list_models(client, target, notes)
    if models and target.model not in models:
        raise NotFoundError("model", target.model, valid=models)
    target = await _compatible_target(client, target, notes)
    usage_in_stream = True
    cal = TokenCalibration()
    tokens: list[int] = []
    for i, words in enumerate(_PROBE_WORDS if calibrate else _PROBE_WORDS[:1]):
        usage = await _probe(client, target, words, seed=-(i + 1))
        if usage is None:
            usage_in_stream = False
            notes.append(
                "the server sent no usage in the stream: output tokens are counted as content "
                "chunks and prompt lengths are assumed 1 token per word"
            )
            break
        tokens.append(int(usage.get("prompt_tokens", 0)))
    if calibrate and len(tokens) == 2:
        cal = TokenCalibration.fit(_PROBE_WORDS, (tokens[0], tokens[1]))
    return EndpointInfo(
        base_url=target.root_url,
        model=target.model,
        models=tuple(models),
        model_card=card,
        server=server,
        calibration=cal,
        usage_in_stream=usage_in_stream,
        ignore_eos=target.ignore_eos,
        include_usage=target.include_usage,
        notes=tuple(notes),
    )


async def _compatible_target(client: httpx.AsyncClient, target: Target, notes: list[str]) -> Target:
    """Drop optional request fields (ignore_eos/min_tokens, stream_options) a server refuses.

    Strict OpenAI-compatible servers answer unknown fields with 400/422; the run then goes on
    without them and the result notes say so (output lengths may then fall short of the target,
    which ``output_token_error_fraction`` shows).
    """
    candidates = [target]
    if target.ignore_eos:
        candidates.append(dataclasses.replace(target, ignore_eos=False))
    if target.include_usage:
        candidates.append(dataclasses.replace(candidates[-1], include_usage=False))
    last: UpstreamError | None = None
    for cand in candidates:
        try:
            await _probe(client, cand, 8, seed=-99)
        except UpstreamError as exc:
            if exc.details.get("status") not in (400, 422):
                raise
            last = exc
            continue
        if not cand.ignore_eos and target.ignore_eos:
            notes.append("the endpoint refused ignore_eos/min_tokens: sent without them")
        if not cand.include_usage and target.include_usage:
            notes.append("the endpoint refused stream_options: sent without include_usage")
        return cand
    assert last is not None
    raise last


async def _list_models(
    client: httpx.AsyncClient, target: Target, notes: list[str]
) -> tuple[list[str], dict[str, Any], str | None]:
    url = target.root_url + "/v1/models"
    try:
        resp = await client.get(url, headers=target.headers())
    except httpx.HTTPError as exc:
        raise UpstreamError(
            f"cannot reach {target.root_url}: {type(exc).__name__}",
            hint="check --endpoint and that the server is running and listening",
            details={"endpoint": target.root_url, "cause": str(exc)[:200]},
        ) from exc
    _raise_for_auth(resp, target)
    server = resp.headers.get("server")
    if resp.status_code != 200:
        notes.append(f"GET /v1/models answered {resp.status_code}; model name not checked")
        return [], {}, server
    try:
        data = resp.json().get("data") or []
        ids = [str(m["id"]) for m in data]
    except (ValueError, KeyError, TypeError, AttributeError):
        notes.append("GET /v1/models answered something that is not a model list")
        return [], {}, server
    card: dict[str, Any] = next((m for m in data if m.get("id") == target.model), {})
    return ids, card, server


async def _probe(
    client: httpx.AsyncClient, target: Target, words: int, seed: int
) -> dict[str, Any] | None:
    body = build_body(target, make_prompt(words, seed), max_tokens=2)
    try:
        async with client.stream(
            "POST", target.completions_url, json=body, headers=target.headers()
        ) as resp:
            _raise_for_auth(resp, target)
            if resp.status_code != 200:
                text = (await resp.aread())[:300].decode("utf-8", "replace")
                if resp.status_code == 404 and "model" in text.lower():
                    raise NotFoundError("model", target.model)
                raise UpstreamError(
                    f"probe request failed with HTTP {resp.status_code}: {text}",
                    hint="check --model, --api and the server log",
                    details={"status": resp.status_code},
                )
            ctype = resp.headers.get("content-type", "")
            if "text/event-stream" not in ctype:
                await resp.aread()
                raise NotSupportedError(
                    "streaming",
                    f"the endpoint answered stream=true with {ctype or 'no content-type'}",
                    hint="the proving ground needs streaming (SSE) to time the first token; "
                    "enable streaming on the server",
                )
            parser = SSEParser()
            usage: dict[str, Any] | None = None
            async for chunk in resp.aiter_bytes():
                for payload in parser.feed(chunk):
                    if payload == b"[DONE]":
                        continue
                    try:
                        event = json.loads(payload)
                    except ValueError:
                        continue
                    if isinstance(event, dict) and event.get("usage"):
                        usage = event["usage"]
            return usage
    except httpx.HTTPError as exc:
        raise UpstreamError(
            f"probe request to {target.completions_url} failed: {type(exc).__name__}",
            hint="check the endpoint's health and logs",
            details={"cause": str(exc)[:200]},
        ) from exc


def _raise_for_auth(resp: httpx.Response, target: Target) -> None:
    if resp.status_code == 401:
        raise AuthenticationError(
            f"{target.root_url} rejected the request (HTTP 401)",
            hint="pass a valid key with --api-key (or NPUCENTER_API_KEY)"
            if not target.api_key
            else "the --api-key given is not accepted there",
            details={"endpoint": target.root_url},
        )
    if resp.status_code == 403:
        raise PermissionDeniedError(
            f"{target.root_url} refused the request (HTTP 403)",
            hint="the key is valid but not allowed to use this model or endpoint",
            details={"endpoint": target.root_url},
        )
