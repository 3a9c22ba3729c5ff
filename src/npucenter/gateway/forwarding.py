"""Forwarding: attempts on replicas with failover, and the stream relay.

A request is tried on up to ``max_attempts`` replicas while nothing has been sent to its client:
a replica that refuses the connection, answers 5xx or drops before its first event is cooled down,
excluded and the next one is tried. Once the first event went out the stream is relayed event by
event, never buffered; a replica that fails after that ends the stream with a final SSE error
event. The relay picks up the engine's ``usage`` on the way and drops the usage-only chunk the
client did not ask for (the gateway asks for it to meter).
"""

from __future__ import annotations

import re
from collections.abc import AsyncIterator
from typing import TYPE_CHECKING

import httpx

from npucenter.errors import NpuCenterError, UpstreamError
from npucenter.gateway.accounting import settle, stamp_tokens, take_usage
from npucenter.gateway.asgi import Send, respond
from npucenter.gateway.call import Attempt, Call
from npucenter.gateway.errors import sse_error_event
from npucenter.gateway.pool import Replica
from npucenter.gateway.upstream import UpstreamResponse
from npucenter.wire.openai import CHAT, find_usage
from npucenter.wire.sse import DONE_EVENT, EventSplitter

if TYPE_CHECKING:
    from npucenter.gateway.app import Gateway

__all__ = ["forward_stream", "forward_unary"]

_USAGE_RE = re.compile(rb'"usage"\s*:\s*\{')
_EMPTY_CHOICES_RE = re.compile(rb'"choices"\s*:\s*\[\s*\]')
_DONE = DONE_EVENT.rstrip()
# an event that carries a token: text, content, reasoning, or a tool call (name or arguments)
_TOKEN_RE = re.compile(
    rb'"(?:content|text|reasoning_content|reasoning|arguments)"\s*:\s*"[^"]|"tool_calls"\s*:\s*\['
)


async def _attempt(gw: Gateway, call: Call) -> Attempt:
    """The next try of ``call``: a slot on the replica the dispatcher picks."""
    assert call.ticket is not None
    return Attempt(gw, call, await gw.dispatcher.acquire(call.ticket, weight=_weight(call)))


async def _send(gw: Gateway, attempt: Attempt, body: bytes) -> UpstreamResponse:
    """POST ``body`` to the attempt's replica; returns once the response head is in."""
    upstream = gw.upstream_client()
    call = attempt.call
    if call.adapter is not None:  # loaded on demand on the replica the router picked
        await gw.adapter_loader.ensure(gw.control_client(), attempt.replica, call.adapter)
    headers = {"content-type": "application/json", "x-request-id": call.request_id}
    if attempt.replica.endpoint.api_key:  # an external server's own key, never the tenant's
        headers["authorization"] = f"Bearer {attempt.replica.endpoint.api_key}"
    resp = await upstream.send(_url(attempt.replica, call.endpoint), body, headers)
    if (
        call.adapter is not None
        and resp.status_code == 404
        and gw.adapter_loader.lost(attempt.replica, call.adapter)
    ):  # the engine restarted unseen and lost it: load it again, resend once
        await resp.aclose()
        await gw.adapter_loader.ensure(gw.control_client(), attempt.replica, call.adapter)
        resp = await upstream.send(_url(attempt.replica, call.endpoint), body, headers)
    return resp


async def forward_unary(gw: Gateway, call: Call, body: bytes, send: Send) -> None:
    """Send ``body`` to replicas until one answers (at most ``max_attempts``); pass it on."""
    for _ in range(gw.config.max_attempts):
        attempt = await _attempt(gw, call)
        try:
            try:
                resp = await _send(gw, attempt, body)
                try:
                    content = await resp.aread()
                finally:
                    await resp.aclose()
            except httpx.HTTPError as exc:
                attempt.fail(repr(exc))
                continue
            if resp.status_code >= 500:
                attempt.fail(f"HTTP {resp.status_code}")
                continue
        finally:
            attempt.end()
        if resp.status_code == 200:
            usage = find_usage(content)
            if usage is not None:
                take_usage(call, usage)
            stamp_tokens(call)
            settle(gw, call, final=True)  # journaled before the answer goes out
        else:
            call.status = "error"
        call.responded = True
        await respond(
            send,
            resp.status_code,
            content,
            resp.header("content-type", "application/json").encode(),
        )
        return
    raise _exhausted(call)


async def forward_stream(
    gw: Gateway, call: Call, body: bytes, send: Send, want_usage: bool
) -> None:
    """Like :func:`forward_unary` up to the first event; then relay the stream (no retry)."""
    for _ in range(gw.config.max_attempts):
        attempt = await _attempt(gw, call)
        try:
            try:
                resp = await _send(gw, attempt, body)
            except httpx.HTTPError as exc:
                attempt.fail(repr(exc))
                continue
            try:
                if resp.status_code != 200:
                    try:
                        content = await resp.aread()
                    except httpx.HTTPError as exc:
                        attempt.fail(repr(exc))
                        continue
                    if resp.status_code >= 500:
                        attempt.fail(f"HTTP {resp.status_code}")
                        continue
                    call.status = "error"
                    call.responded = True
                    await respond(send, resp.status_code, content)
                    return
                chunks = resp.aiter_raw()
                try:
                    first, splitter = await _first_events(chunks)
                except httpx.HTTPError as exc:
                    attempt.fail(repr(exc))
                    continue
                await _pump(gw, call, send, first, splitter, chunks, want_usage)
                return
            finally:
                await resp.aclose()
        finally:
            attempt.end()
    raise _exhausted(call)


async def _pump(
    gw: Gateway,
    call: Call,
    send: Send,
    first: bytes,
    splitter: EventSplitter,
    chunks: AsyncIterator[bytes],
    want_usage: bool,
) -> None:
    """Send the response head and every SSE event as it arrives; end with an error event."""
    await send(
        {
            "type": "http.response.start",
            "status": 200,
            "headers": [
                (b"content-type", b"text/event-stream"),
                (b"cache-control", b"no-cache"),
            ],
        }
    )
    if _TOKEN_RE.search(first) is not None:  # TTFT: the first token, not the role chunk
        call.first_token_s = gw.clock.now_s()
    done = await _send_events(gw, call, send, first, want_usage)
    call.responded = done
    try:
        async for raw in chunks:
            ready = splitter.feed(raw)
            if not ready:
                continue
            done = await _send_events(gw, call, send, ready, want_usage) or done
            # [DONE] went out: the client has its whole answer, so a hang-up now is no cancel
            call.responded = call.responded or done
        if not done:
            raise httpx.RemoteProtocolError("stream ended without [DONE]")
    except httpx.HTTPError as exc:
        call.status = "error"
        call.attempts.append(
            {"replica": call.replica.replica_id if call.replica else "", "error": repr(exc)}
        )
        call.responded = True
        error = UpstreamError(
            f"replica {call.replica.replica_id if call.replica else '?'} failed mid-stream",
            hint="retry the request; tokens already sent are not charged",
            details={"request_id": call.request_id},
        )
        await send(
            {"type": "http.response.body", "body": sse_error_event(error), "more_body": False}
        )
        return
    stamp_tokens(call)
    call.responded = True
    await send({"type": "http.response.body", "body": b"", "more_body": False})


async def _send_events(gw: Gateway, call: Call, send: Send, ready: bytes, want_usage: bool) -> bool:
    """Forward complete events; pick up usage; True when ``[DONE]`` was among them."""
    done = _DONE in ready
    if _USAGE_RE.search(ready) is not None:
        kept: list[bytes] = []
        for event in ready.split(b"\n\n"):
            if not event:
                continue
            if _USAGE_RE.search(event) is not None:
                usage = find_usage(event[event.index(b"{") :])
                if usage is not None:
                    take_usage(call, usage)
                if not want_usage and _EMPTY_CHOICES_RE.search(event) is not None:
                    continue
            kept.append(event + b"\n\n")
        ready = b"".join(kept)
    n = _count_token_events(ready)
    if n:
        call.num_events += n
        call.last_token_s = gw.clock.now_s()
    if done:  # the client has everything once this goes out: journal its row first
        stamp_tokens(call)
        settle(gw, call, final=False)
    if ready:
        await send({"type": "http.response.body", "body": ready, "more_body": True})
    return done


def _exhausted(call: Call) -> NpuCenterError:
    return UpstreamError(
        f"{call.model_id}: {len(call.attempts)} replica(s) failed before answering",
        hint="retry later; the operator sees the failing replicas in /metrics",
        details={"attempts": call.attempts, "request_id": call.request_id},
    )


def _count_token_events(ready: bytes) -> int:
    """Events in ``ready`` that carry a token (the output count when an engine sends no usage)."""
    if ready.count(b"\n\n") <= 1:
        return 1 if _TOKEN_RE.search(ready) is not None else 0
    return sum(1 for event in ready.split(b"\n\n") if _TOKEN_RE.search(event) is not None)


def _weight(call: Call) -> float:
    return call.principal.weight if call.principal is not None else 1.0


def _url(replica: Replica, endpoint: str) -> str:
    return replica.url_chat if endpoint == CHAT else replica.url_completions


async def _first_events(chunks: AsyncIterator[bytes]) -> tuple[bytes, EventSplitter]:
    """Read until the first token (or the end of the stream): (complete events so far, the
    splitter with the rest). Events before it (the role chunk an engine sends before prefill)
    are held, so a replica that fails during prefill is still retried on another."""
    splitter = EventSplitter()
    held = b""
    async for raw in chunks:
        ready = splitter.feed(raw)
        if ready:
            held += ready
            if _TOKEN_RE.search(ready) is not None or _DONE in ready:
                return held, splitter
    if held:
        return held, splitter
    raise httpx.RemoteProtocolError("the stream ended before its first event")
