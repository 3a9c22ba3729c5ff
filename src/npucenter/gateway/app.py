"""The OpenAI-compatible gateway: a plain ASGI app mounted at ``/v1``.

For each request: authenticate the Bearer key, reserve its estimated tokens on the tenant's
budget, wait (fairly, in the gateway) for a replica slot chosen by the routing policy, forward
the body to the engine over a pooled keep-alive HTTP/1.1 client (``upstream.py``) and pass the answer
through (streams event by event, never buffered), then reconcile the budget with the real usage
and write one ledger row. Nothing is sent to the client before the first upstream event, so a
replica that fails before it is retried on another; one that fails after ends the stream with a
final SSE error event. A client that disconnects cancels the upstream request.

It is plain ASGI rather than FastAPI routes because this is the hot path (see docs/gateway.md).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import re
import time
import uuid
from collections import deque
from collections.abc import AsyncIterator, Awaitable, Callable, MutableMapping
from dataclasses import dataclass, field, replace
from typing import Any

import httpx

from npucenter.clock import Clock, SystemClock
from npucenter.errors import (
    CapacityUnavailableError,
    InvalidRequestError,
    NotFoundError,
    NpuCenterError,
    UpstreamError,
)
from npucenter.gateway.auth import KeyResolver, Principal, bearer_key, require_inference
from npucenter.gateway.budget import BudgetBook, Reservation
from npucenter.gateway.dispatch import Dispatcher
from npucenter.gateway.errors import error_body, error_headers, sse_error_event
from npucenter.gateway.metrics import CONTENT_TYPE, GatewayMetrics
from npucenter.gateway.pool import Replica, ReplicaEndpoint, UpstreamPool
from npucenter.gateway.routing import DEFAULT_GATEWAY_POLICY, PolicyRouter, make_router
from npucenter.gateway.scrape import scrape_replica
from npucenter.gateway.upstream import (
    FastUpstreamClient,
    HttpxUpstreamClient,
    UpstreamClient,
    UpstreamResponse,
)
from npucenter.metering.ledger import (
    InMemoryLedger,
    Ledger,
    PriceBook,
    UsageRecord,
    UsageTotals,
)
from npucenter.policy.routing import RouteRequest, prefix_block_hashes

__all__ = ["Gateway", "GatewayConfig"]

log = logging.getLogger(__name__)

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]

_USAGE_RE = re.compile(rb'"usage"\s*:\s*\{')
_EMPTY_CHOICES_RE = re.compile(rb'"choices"\s*:\s*\[\s*\]')
_DONE = b"data: [DONE]"


@dataclass(frozen=True, slots=True, kw_only=True)
class GatewayConfig:
    """Tunables of the gateway (defaults suit the embedded center)."""

    default_max_tokens: int = 256  # reserved when a request sets no max_tokens
    chars_per_token: float = 4.0  # prompt-length estimate before the engine counts
    max_attempts: int = 3  # replicas tried per request before giving up
    failure_cooldown_s: float = 1.0  # a failed replica gets no new requests for this long
    connect_timeout_s: float = 2.0
    read_timeout_s: float = 120.0  # between two bytes from an engine
    max_queued: int = 1024  # requests waiting in the gateway per model
    max_wait_s: float = 30.0  # longest wait for a replica slot
    max_body_bytes: int = 8 * 1024 * 1024
    ledger_flush_interval_s: float = 0.2
    prefix_block_chars: int = 256
    max_prefix_blocks: int = 16
    max_connections: int = 2048
    scrape_interval_s: float = 1.0  # engine /metrics (KV use, power); 0 = never
    upstream_client: str = "fast"  # "fast" (own keep-alive pool) | "httpx"

    def __post_init__(self) -> None:
        if self.max_attempts < 1:
            raise InvalidRequestError("max_attempts must be >= 1")
        if self.upstream_client not in ("fast", "httpx"):
            raise InvalidRequestError("upstream_client must be 'fast' or 'httpx'")
        if self.default_max_tokens < 1:
            raise InvalidRequestError("default_max_tokens must be >= 1")


class _ClientGone(Exception):
    """The client disconnected."""


@dataclass(slots=True, kw_only=True)
class _Call:
    """Per-request bookkeeping."""

    request_id: str
    endpoint: str
    started_s: float
    started_wall_s: float
    principal: Principal | None = None
    model_id: str = ""
    ticket: RouteRequest | None = None
    reservation: Reservation | None = None
    replica: Replica | None = None  # the replica that served (last tried)
    status: str = "ok"
    input_tokens: int = 0  # from the engine's usage (or estimate when it gave none)
    output_tokens: int = 0
    usage_seen: bool = False
    num_events: int = 0  # content events streamed (a token count when usage is missing)
    first_token_s: float | None = None
    last_token_s: float | None = None
    device_s: float = 0.0
    energy_j: float = 0.0
    device_id: str = ""
    attempts: list[dict[str, Any]] = field(default_factory=list)
    responded: bool = False  # the final byte went out (no more disconnect handling)


class Gateway:
    """The gateway ASGI app and its state (pool, budgets, queue, ledger buffer, metrics)."""

    def __init__(
        self,
        *,
        keys: KeyResolver,
        endpoints: list[ReplicaEndpoint] | None = None,
        pool: UpstreamPool | None = None,
        ledger: Ledger | None = None,
        router: PolicyRouter | None = None,
        prices: PriceBook | None = None,
        config: GatewayConfig | None = None,
        clock: Clock | None = None,
        transport: httpx.AsyncBaseTransport | None = None,
    ) -> None:
        self.config = config or GatewayConfig()
        self.clock = clock or SystemClock()
        self.keys = keys
        self.pool = pool or UpstreamPool(self.clock, endpoints or [])
        self.ledger: Ledger = ledger if ledger is not None else InMemoryLedger()
        self.router = router or make_router(DEFAULT_GATEWAY_POLICY, self.clock)
        self.prices = prices or PriceBook()
        self.budgets = BudgetBook(self.clock)
        self.dispatcher = Dispatcher(
            self.pool,
            self.router,
            self.clock,
            max_queued=self.config.max_queued,
            max_wait_s=self.config.max_wait_s,
        )
        self.metrics = GatewayMetrics(self.pool, self.dispatcher.queued)
        self._transport = transport
        self._upstream: UpstreamClient | None = None
        self._scrape_client: httpx.AsyncClient | None = None
        self._pending: list[UsageRecord] = []
        self._ticker: asyncio.Task[None] | None = None
        self._uses_prefixes = bool(getattr(self.router, "uses_prefixes", False))
        self.started_wall_s = time.time()
        self.expected_models: set[str] = set()  # served once their replicas are up (starting)
        self.replica_servers: dict[str, str] = {}  # replica id -> server, placed outside the fleet
        # model id -> its tokenizer's prompt count (request, endpoint) -> tokens | None, set by
        # the reconciler for real engines with a local tokenizer; else the estimate below
        self.token_counters: dict[str, Callable[[dict[str, Any], str], int | None]] = {}
        self.usage_totals: dict[tuple[str, str], UsageTotals] = {}  # (tenant, model) -> totals
        # one sample a second: (Unix time, requests answered, output tokens) for the dashboard
        self.history: deque[tuple[float, int, int]] = deque(maxlen=600)

    # --- lifecycle -------------------------------------------------------------------------

    async def start(self) -> None:
        """Open the upstream client and start the background ticker (idempotent)."""
        if self._upstream is None:
            cfg = self.config
            self._scrape_client = httpx.AsyncClient(
                timeout=2.0, limits=httpx.Limits(max_connections=32, max_keepalive_connections=32)
            )
            if self._transport is not None or cfg.upstream_client == "httpx":
                self._upstream = HttpxUpstreamClient(
                    httpx.AsyncClient(
                        transport=self._transport,
                        timeout=httpx.Timeout(
                            connect=cfg.connect_timeout_s,
                            read=cfg.read_timeout_s,
                            write=cfg.read_timeout_s,
                            pool=cfg.max_wait_s,
                        ),
                        limits=httpx.Limits(
                            max_connections=cfg.max_connections,
                            max_keepalive_connections=cfg.max_connections,
                            keepalive_expiry=30.0,
                        ),
                    )
                )
            else:
                self._upstream = FastUpstreamClient(
                    connect_timeout_s=cfg.connect_timeout_s, read_timeout_s=cfg.read_timeout_s
                )
        if self._ticker is None or self._ticker.done():
            self._ticker = asyncio.create_task(self._tick_forever(), name="gateway-ticker")

    async def aclose(self) -> None:
        """Stop the ticker, write pending ledger rows and close the upstream clients."""
        if self._ticker is not None:
            self._ticker.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._ticker
            self._ticker = None
        await self.flush()
        if self._upstream is not None:
            await self._upstream.aclose()
            self._upstream = None
        if self._scrape_client is not None:
            await self._scrape_client.aclose()
            self._scrape_client = None

    async def flush(self) -> None:
        """Write the buffered ledger rows now."""
        if not self._pending:
            return
        rows, self._pending = self._pending, []
        try:
            await asyncio.to_thread(self.ledger.append, rows)
        except Exception:
            log.exception(
                "could not write %d usage rows; keeping them for the next flush", len(rows)
            )
            self._pending[:0] = rows

    async def _tick_forever(self) -> None:
        last_scrape_s = 0.0
        energy_marks: dict[str, tuple[float, float]] = {}
        while True:
            await asyncio.sleep(self.config.ledger_flush_interval_s)
            for model_id in self.pool.models():  # replicas back from a cool-down take waiters
                self.dispatcher.wake(model_id)
            await self.flush()
            self._sample_history()
            now_s = self.clock.now_s()
            interval_s = self.config.scrape_interval_s
            client = self._scrape_client
            if interval_s > 0 and now_s - last_scrape_s >= interval_s and client is not None:
                last_scrape_s = now_s
                await asyncio.gather(
                    *(scrape_replica(client, r, now_s, energy_marks) for r in self.pool.replicas())
                )

    def models(self) -> list[str]:
        """Models served now or starting, sorted."""
        return sorted({*self.pool.models(), *self.expected_models})

    def _sample_history(self) -> None:
        wall_s = time.time()
        if self.history and wall_s - self.history[-1][0] < 1.0:
            return
        totals = self.usage_totals.values()
        self.history.append(
            (wall_s, sum(t.num_requests for t in totals), sum(t.output_tokens for t in totals))
        )

    # --- ASGI ------------------------------------------------------------------------------

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        """Serve one ASGI connection event."""
        kind = scope["type"]
        if kind == "lifespan":
            await self._lifespan(receive, send)
            return
        if kind != "http":
            return
        if self._upstream is None or self._ticker is None:
            await self.start()
        path: str = scope["path"]
        method: str = scope["method"]
        if path.endswith("/chat/completions") and method == "POST":
            await self._guarded(self._completion, scope, receive, send, "/v1/chat/completions")
        elif path.endswith("/completions") and method == "POST":
            await self._guarded(self._completion, scope, receive, send, "/v1/completions")
        elif path.endswith("/models") and method == "GET":
            await self._guarded(self._models, scope, receive, send, "/v1/models")
        elif path.endswith("/metrics") and method == "GET":
            await _respond(send, 200, self.metrics.render(), CONTENT_TYPE.encode())
        elif path.endswith("/health") and method == "GET":
            await _respond(send, 200, b'{"status":"ok"}')
        else:
            exc = NotFoundError("endpoint", f"{method} {path}", valid=_ENDPOINTS)
            await _respond(send, exc.http_status, error_body(exc))

    async def _lifespan(self, receive: Receive, send: Send) -> None:
        while True:
            message = await receive()
            if message["type"] == "lifespan.startup":
                await self.start()
                await send({"type": "lifespan.startup.complete"})
            elif message["type"] == "lifespan.shutdown":
                await self.aclose()
                await send({"type": "lifespan.shutdown.complete"})
                return

    async def _guarded(
        self,
        handler: Callable[[_Call, Scope, Receive, Send], Awaitable[None]],
        scope: Scope,
        receive: Receive,
        send: Send,
        endpoint: str,
    ) -> None:
        """Run ``handler``; map errors; cancel it when the client goes; meter it in every case."""
        call = _Call(
            request_id=f"req-{uuid.uuid4().hex[:20]}",
            endpoint=endpoint,
            started_s=self.clock.now_s(),
            started_wall_s=time.time(),
        )
        task = asyncio.current_task()
        gone = False

        async def watch() -> None:
            nonlocal gone
            while True:
                message = await receive()
                if message["type"] == "http.disconnect":
                    if not call.responded and task is not None:
                        gone = True
                        task.cancel()
                    return

        try:
            body = await _read_body(receive, self.config.max_body_bytes)
            watcher = asyncio.create_task(watch())
            try:
                await handler(call, scope, _replay(body), send)
            finally:
                watcher.cancel()
        except NpuCenterError as exc:
            call.status = "error"
            if not call.responded:
                await self._send_error(call, send, exc)
        except _ClientGone:
            call.status = "cancelled"
        except asyncio.CancelledError:
            if not gone or task is None:
                self._finish(call)
                raise
            task.uncancel()
            call.status = "cancelled"
        except Exception as exc:  # a bug: answer 500, keep serving
            log.exception("gateway request %s failed", call.request_id)
            call.status = "error"
            if not call.responded:
                await self._send_error(call, send, UpstreamError(f"gateway error: {exc!r}"))
        self._finish(call)

    async def _send_error(self, call: _Call, send: Send, exc: NpuCenterError) -> None:
        call.responded = True
        await send(
            {
                "type": "http.response.start",
                "status": exc.http_status,
                "headers": [*error_headers(exc), (b"x-request-id", call.request_id.encode())],
            }
        )
        await send({"type": "http.response.body", "body": error_body(exc)})

    # --- endpoints -------------------------------------------------------------------------

    async def _models(self, call: _Call, scope: Scope, receive: Receive, send: Send) -> None:
        call.principal = self._authenticate(scope)
        call.reservation = self.budgets.reserve(call.principal, 0)
        created = int(time.time())
        data = [
            {"id": m, "object": "model", "created": created, "owned_by": "npucenter"}
            for m in self.models()
        ]
        call.responded = True
        await _respond(send, 200, json.dumps({"object": "list", "data": data}).encode())

    async def _completion(self, call: _Call, scope: Scope, receive: Receive, send: Send) -> None:
        call.principal = principal = self._authenticate(scope)
        raw = (await receive())["body"]
        request = _parse_request(raw, call.endpoint)
        call.model_id = model_id = self.pool.resolve(request["model"])
        if model_id != request["model"]:  # an alias (a deployment's name): the engine's name
            request = {**request, "model": model_id}
            raw = json.dumps(request).encode()
        if not self.pool.replicas(model_id):
            if model_id in self.expected_models:
                raise CapacityUnavailableError(
                    f"the {model_id} replicas are still starting",
                    hint="retry in a few seconds",
                    retry_after_s=2.0,
                    model=model_id,
                )
            raise NotFoundError("model", model_id, valid=self.models())
        stream = bool(request.get("stream", False))
        prompt_text, num_ids = _prompt_text(request, call.endpoint)
        counter = self.token_counters.get(model_id)
        counted = counter(request, call.endpoint) if counter is not None else None
        est_in = (
            counted
            if counted is not None
            else num_ids + int(len(prompt_text) / self.config.chars_per_token) + 1
        )
        max_out = _max_tokens(request, self.config.default_max_tokens)
        call.input_tokens = est_in
        call.reservation = self.budgets.reserve(principal, est_in + max_out)
        call.ticket = RouteRequest(
            request_id=call.request_id,
            tenant=principal.tenant,
            model_id=model_id,
            priority=principal.priority,
            prompt_tokens=est_in,
            max_output_tokens=max_out,
            prefix_hashes=(
                prefix_block_hashes(
                    prompt_text,
                    block_chars=self.config.prefix_block_chars,
                    max_blocks=self.config.max_prefix_blocks,
                )
                if self._uses_prefixes
                else ()
            ),
        )
        want_usage = True
        if stream:
            options = request.get("stream_options") or {}
            want_usage = bool(isinstance(options, dict) and options.get("include_usage"))
            if not want_usage:
                raw = _with_include_usage(raw, request, options)
            await self._forward_stream(call, raw, send, want_usage)
        else:
            await self._forward_unary(call, raw, send)

    # --- forwarding ------------------------------------------------------------------------

    async def _attempt(self, call: _Call) -> _Attempt:
        """The next try of ``call``: a slot on the replica the dispatcher picks."""
        assert call.ticket is not None
        return _Attempt(
            self, call, await self.dispatcher.acquire(call.ticket, weight=_weight(call))
        )

    async def _send(self, attempt: _Attempt, body: bytes) -> UpstreamResponse:
        """POST ``body`` to the attempt's replica; returns once the response head is in."""
        assert self._upstream is not None
        call = attempt.call
        headers = {"content-type": "application/json", "x-request-id": call.request_id}
        if attempt.replica.endpoint.api_key:  # an external server's own key, never the tenant's
            headers["authorization"] = f"Bearer {attempt.replica.endpoint.api_key}"
        return await self._upstream.send(_url(attempt.replica, call.endpoint), body, headers)

    async def _forward_unary(self, call: _Call, body: bytes, send: Send) -> None:
        for _ in range(self.config.max_attempts):
            attempt = await self._attempt(call)
            try:
                try:
                    resp = await self._send(attempt, body)
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
                usage = _json_usage(content)
                if usage is not None:
                    self._take_usage(call, usage)
                self._stamp_tokens(call)
            else:
                call.status = "error"
            call.responded = True
            await _respond(
                send,
                resp.status_code,
                content,
                resp.header("content-type", "application/json").encode(),
                extra=[(b"x-request-id", call.request_id.encode())],
            )
            return
        raise self._exhausted(call)

    async def _forward_stream(self, call: _Call, body: bytes, send: Send, want_usage: bool) -> None:
        for _ in range(self.config.max_attempts):
            attempt = await self._attempt(call)
            try:
                try:
                    resp = await self._send(attempt, body)
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
                        await _respond(
                            send,
                            resp.status_code,
                            content,
                            extra=[(b"x-request-id", call.request_id.encode())],
                        )
                        return
                    chunks = resp.aiter_raw()
                    try:
                        first, rest = await _first_events(chunks)
                    except httpx.HTTPError as exc:
                        attempt.fail(repr(exc))
                        continue
                    await self._pump(call, send, first, rest, chunks, want_usage)
                    return
                finally:
                    await resp.aclose()
            finally:
                attempt.end()
        raise self._exhausted(call)

    async def _pump(
        self,
        call: _Call,
        send: Send,
        first: bytes,
        rest: bytes,
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
                    (b"x-request-id", call.request_id.encode()),
                ],
            }
        )
        call.first_token_s = self.clock.now_s()
        done = await self._send_events(call, send, first, want_usage)
        buffer = rest
        try:
            async for raw in chunks:
                buffer += raw
                cut = buffer.rfind(b"\n\n")
                if cut < 0:
                    continue
                ready, buffer = buffer[: cut + 2], buffer[cut + 2 :]
                done = await self._send_events(call, send, ready, want_usage) or done
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
        self._stamp_tokens(call)
        call.responded = True
        await send({"type": "http.response.body", "body": b"", "more_body": False})

    async def _send_events(self, call: _Call, send: Send, ready: bytes, want_usage: bool) -> bool:
        """Forward complete events; pick up usage; True when ``[DONE]`` was among them."""
        done = _DONE in ready
        if _USAGE_RE.search(ready) is not None:
            kept: list[bytes] = []
            for event in ready.split(b"\n\n"):
                if not event:
                    continue
                if _USAGE_RE.search(event) is not None:
                    usage = _json_usage(event[event.index(b"{") :])
                    if usage is not None:
                        self._take_usage(call, usage)
                    if not want_usage and _EMPTY_CHOICES_RE.search(event) is not None:
                        continue
                kept.append(event + b"\n\n")
            ready = b"".join(kept)
        n = ready.count(b"data: {")
        if n:
            call.num_events += n
            call.last_token_s = self.clock.now_s()
        if ready:
            await send({"type": "http.response.body", "body": ready, "more_body": True})
        return done

    # --- accounting ------------------------------------------------------------------------

    def _exhausted(self, call: _Call) -> NpuCenterError:
        return UpstreamError(
            f"{call.model_id}: {len(call.attempts)} replica(s) failed before answering",
            hint="retry later; the operator sees the failing replicas in /metrics",
            details={"attempts": call.attempts, "request_id": call.request_id},
        )

    def _take_usage(self, call: _Call, usage: dict[str, Any]) -> None:
        call.usage_seen = True
        call.input_tokens = int(usage.get("prompt_tokens") or 0)
        call.output_tokens = int(usage.get("completion_tokens") or 0)

    def _stamp_tokens(self, call: _Call) -> None:
        if not call.usage_seen:
            call.output_tokens = call.num_events

    def _finish(self, call: _Call) -> None:
        """Reconcile the budget, observe metrics and buffer the ledger row (every request)."""
        ok = call.status == "ok"
        if call.status == "cancelled" and not call.usage_seen:
            call.output_tokens = call.num_events
        # A failed request is the center's fault: it is metered (device time, energy) but free;
        # so is one whose client left before its first token. A client that leaves mid-stream
        # pays for the prompt and the tokens it was sent.
        free = call.status == "error" or (
            call.status == "cancelled" and call.first_token_s is None and not call.usage_seen
        )
        billed_in = 0 if free else call.input_tokens
        billed_out = 0 if free else call.output_tokens
        if call.reservation is not None:
            self.budgets.reconcile(call.reservation, billed_in + billed_out)
        principal = call.principal
        tenant = principal.tenant if principal else "-"
        model = call.model_id or "-"
        end_s = self.clock.now_s()
        m = self.metrics
        m.requests.labels(model, tenant, call.endpoint, call.status).inc()
        if billed_in or billed_out:
            m.tokens.labels(model, tenant, "input").inc(billed_in)
            m.tokens.labels(model, tenant, "output").inc(billed_out)
        if ok and call.model_id:
            m.e2e.labels(model).observe(end_s - call.started_s)
            if call.first_token_s is not None:
                m.ttft.labels(model).observe(call.first_token_s - call.started_s)
                if call.last_token_s is not None and call.output_tokens > 1:
                    m.tpot.labels(model).observe(
                        (call.last_token_s - call.first_token_s) / (call.output_tokens - 1)
                    )
        if principal is None:
            return  # unauthenticated: nobody to charge (counted in the metrics above)
        record = UsageRecord(
            request_id=call.request_id,
            tenant=principal.tenant,
            key_id=principal.key_id,
            service=model,
            endpoint=call.endpoint,
            replica_id=call.replica.replica_id if call.replica else "",
            device_id=call.device_id,
            status=call.status,
            input_tokens=billed_in,
            output_tokens=billed_out,
            device_s=call.device_s,
            energy_j=call.energy_j,
            cost_usd=self.prices.cost_usd(call.device_id, call.device_s),
            started_at_s=call.started_wall_s,
            duration_s=max(0.0, end_s - call.started_s),
        )
        self._pending.append(record)
        key = (record.tenant, model)
        self.usage_totals[key] = self.usage_totals.get(key, _ZERO).plus(record)

    # --- helpers ---------------------------------------------------------------------------

    def _authenticate(self, scope: Scope) -> Principal:
        authorization = None
        for name, value in scope["headers"]:
            if name == b"authorization":
                authorization = value.decode("latin-1")
                break
        principal = self.keys.resolve(bearer_key(authorization))
        require_inference(principal)
        return principal


class _Attempt:
    """One try of a request on one replica: its slot, its metering mark, its end (once)."""

    __slots__ = ("call", "gateway", "mark", "open", "replica")

    def __init__(self, gateway: Gateway, call: _Call, replica: Replica) -> None:
        self.gateway = gateway
        self.call = call
        self.replica = replica
        self.mark = replica.meter.start()
        self.open = True
        call.replica = replica

    def fail(self, why: str) -> None:
        """The replica failed before the first token: cool it down, exclude it, count a retry."""
        gw, call, replica = self.gateway, self.call, self.replica
        self.end()
        call.attempts.append({"replica": replica.replica_id, "error": why})
        gw.pool.mark_failed(replica, gw.config.failure_cooldown_s)
        if call.ticket is not None:
            call.ticket = replace(call.ticket, exclude=call.ticket.exclude | {replica.replica_id})
        gw.metrics.retries.labels(call.model_id).inc()
        log.warning(
            "request %s failed on replica %s before its first token: %s",
            call.request_id,
            replica.replica_id,
            why,
        )

    def end(self) -> None:
        """Free the slot and charge the request its share of the replica (idempotent)."""
        if not self.open:
            return
        self.open = False
        call, replica = self.call, self.replica
        share = replica.meter.finish(self.mark)
        call.device_s += share.device_s
        call.energy_j += share.energy_j
        call.device_id = replica.endpoint.device_id
        if call.ticket is not None:
            self.gateway.dispatcher.release(replica, call.ticket)
        replica.num_served += 1


_ZERO = UsageTotals()
_ENDPOINTS = ["GET /v1/models", "POST /v1/chat/completions", "POST /v1/completions", "GET /metrics"]


def _weight(call: _Call) -> float:
    return call.principal.weight if call.principal is not None else 1.0


def _url(replica: Replica, endpoint: str) -> str:
    return replica.url_chat if endpoint == "/v1/chat/completions" else replica.url_completions


async def _read_body(receive: Receive, max_bytes: int) -> bytes:
    parts: list[bytes] = []
    size = 0
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            raise _ClientGone()
        chunk = message.get("body", b"")
        size += len(chunk)
        if size > max_bytes:
            raise InvalidRequestError(f"request body over {max_bytes} bytes")
        parts.append(chunk)
        if not message.get("more_body", False):
            return b"".join(parts)


def _replay(body: bytes) -> Receive:
    async def receive() -> Message:
        return {"type": "http.request", "body": body, "more_body": False}

    return receive


async def _respond(
    send: Send,
    status: int,
    body: bytes,
    content_type: bytes = b"application/json",
    *,
    extra: list[tuple[bytes, bytes]] | None = None,
) -> None:
    headers = [
        (b"content-type", content_type),
        (b"content-length", str(len(body)).encode()),
        *(extra or []),
    ]
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": body})


async def _first_events(chunks: AsyncIterator[bytes]) -> tuple[bytes, bytes]:
    """Read until at least one complete SSE event: (complete events, the partial rest)."""
    buffer = b""
    async for raw in chunks:
        buffer += raw
        cut = buffer.rfind(b"\n\n")
        if cut >= 0:
            return buffer[: cut + 2], buffer[cut + 2 :]
    raise httpx.RemoteProtocolError("the stream ended before its first event")


def _parse_request(raw: bytes, endpoint: str) -> dict[str, Any]:
    try:
        request = json.loads(raw)
    except ValueError as exc:
        raise InvalidRequestError(f"the body is not valid JSON: {exc}") from None
    if not isinstance(request, dict):
        raise InvalidRequestError("the body must be a JSON object")
    model = request.get("model")
    if not isinstance(model, str) or not model:
        raise InvalidRequestError("`model` is required", details={"field": "model"})
    if endpoint == "/v1/chat/completions":
        messages = request.get("messages")
        if not isinstance(messages, list) or not messages:
            raise InvalidRequestError(
                "`messages` must be a non-empty list", details={"field": "messages"}
            )
    elif "prompt" not in request:
        raise InvalidRequestError("`prompt` is required", details={"field": "prompt"})
    return request


def _max_tokens(request: dict[str, Any], default: int) -> int:
    value = request.get("max_completion_tokens", request.get("max_tokens"))
    if value is None:
        return default
    if not isinstance(value, int) or isinstance(value, bool) or value < 1:
        raise InvalidRequestError(
            "`max_tokens` must be a positive integer", details={"field": "max_tokens"}
        )
    return value


def _prompt_text(request: dict[str, Any], endpoint: str) -> tuple[str, int]:
    """The prompt as text (for the estimate and prefix hashes) and its count of token ids."""
    if endpoint == "/v1/completions":
        prompt = request.get("prompt")
        if isinstance(prompt, str):
            return prompt, 0
        if isinstance(prompt, list):
            if all(isinstance(p, int) for p in prompt):  # one prompt of token ids
                return "", len(prompt)
            texts: list[str] = []
            num_ids = 0
            for p in prompt:
                if isinstance(p, str):
                    texts.append(p)
                elif isinstance(p, list):
                    num_ids += len(p)
                else:
                    raise InvalidRequestError(
                        "`prompt` must be a string, token ids, or a list of either",
                        details={"field": "prompt"},
                    )
            return "\n".join(texts), num_ids
        raise InvalidRequestError(
            "`prompt` must be a string, token ids, or a list of either", details={"field": "prompt"}
        )
    parts: list[str] = []
    for message in request.get("messages") or ():
        if not isinstance(message, dict):
            raise InvalidRequestError(
                "each message must be an object", details={"field": "messages"}
            )
        content = message.get("content")
        if isinstance(content, str):
            parts.append(content)
        elif isinstance(content, list):
            parts.extend(str(p.get("text", "")) for p in content if isinstance(p, dict))
    return "\n".join(parts), 0


def _with_include_usage(raw: bytes, request: dict[str, Any], options: Any) -> bytes:
    """The body with ``stream_options.include_usage`` set (spliced in when the client sent none,
    to spare re-serialising a long prompt)."""
    if "stream_options" not in request:
        end = raw.rstrip()
        if end.endswith(b"}"):
            return end[:-1] + b',"stream_options":{"include_usage":true}}'
    merged = dict(options) if isinstance(options, dict) else {}
    return json.dumps({**request, "stream_options": {**merged, "include_usage": True}}).encode()


def _json_usage(body: bytes) -> dict[str, Any] | None:
    try:
        data = json.loads(body)
    except ValueError:
        return None
    usage = data.get("usage") if isinstance(data, dict) else None
    return usage if isinstance(usage, dict) else None
