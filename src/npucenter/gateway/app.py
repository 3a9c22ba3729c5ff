"""The OpenAI-compatible gateway: a plain ASGI app mounted at ``/v1`` (its state and its routes).

For each request: authenticate the Bearer key, parse the request (:mod:`npucenter.wire.openai`),
reserve its estimated tokens on the tenant's budget, wait (fairly, in the gateway) for a replica
slot chosen by the routing policy, forward it (:mod:`.forwarding`: failover before the first
event, the stream relayed after it), then settle the budget and buffer one ledger row
(:mod:`.accounting`). A client that disconnects cancels the upstream request.

It is plain ASGI rather than FastAPI routes because this is the hot path (see docs/gateway.md).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import random
import time
from collections import deque
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

import httpx

from npucenter.clock import Clock, SystemClock
from npucenter.errors import (
    CapacityUnavailableError,
    InvalidRequestError,
    NotFoundError,
    NpuCenterError,
    PermissionDeniedError,
    UpstreamError,
)
from npucenter.gateway.accounting import finish, sample_history
from npucenter.gateway.adapters import AdapterLoader, AdapterResolver, adapter_prefix
from npucenter.gateway.asgi import (
    ClientGone,
    Message,
    Receive,
    Scope,
    Send,
    header,
    read_body,
    replay,
    respond,
)
from npucenter.gateway.auth import KeyResolver, Principal, bearer_key, require_inference
from npucenter.gateway.budget import BudgetBook
from npucenter.gateway.call import Call
from npucenter.gateway.dispatch import Dispatcher
from npucenter.gateway.errors import error_body, error_headers
from npucenter.gateway.forwarding import forward_stream, forward_unary
from npucenter.gateway.metrics import CONTENT_TYPE, GatewayMetrics
from npucenter.gateway.pool import Replica, ReplicaEndpoint, UpstreamPool
from npucenter.gateway.routing import DEFAULT_GATEWAY_POLICY, PolicyRouter, make_router
from npucenter.gateway.scrape import scrape_replica
from npucenter.gateway.shedding import DoorGuard
from npucenter.gateway.upstream import FastUpstreamClient, HttpxUpstreamClient, UpstreamClient
from npucenter.metering.ledger import InMemoryLedger, Ledger, PriceBook, UsageRecord, UsageTotals
from npucenter.policy.routing import RouteRequest, prefix_block_hashes
from npucenter.wire.openai import (
    CHAT,
    COMPLETIONS,
    parse_request,
    prompt_text,
    prompt_tokens,
    requested_max_tokens,
    with_include_usage,
)

__all__ = ["Gateway", "GatewayConfig"]

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True, kw_only=True)
class GatewayConfig:
    """Tunables of the gateway (defaults suit the embedded center)."""

    default_max_tokens: int = 256  # reserved when a request sets no max_tokens
    max_attempts: int = 3  # replicas tried per request before giving up
    failure_cooldown_s: float = 1.0  # a failed replica gets no new requests for this long
    connect_timeout_s: float = 2.0
    read_timeout_s: float = 120.0  # between two bytes from an engine
    max_queued: int = 1024  # requests waiting in the gateway per model
    max_wait_s: float = 30.0  # longest wait for a replica slot
    # load shedding (gateway/shedding.py): 503 + Retry-After at once instead of queueing
    max_inflight_requests: int = 4096  # requests in progress in the gateway
    max_loop_lag_s: float = 0.05  # the event loop this late for 0.2 s: the CPU is saturated
    max_expected_wait_s: float = 30.0  # a waiter expected to wait longer is refused now
    max_body_bytes: int = 8 * 1024 * 1024
    ledger_flush_interval_s: float = 0.2
    prefix_block_chars: int = 256
    max_prefix_blocks: int = 16
    max_connections: int = 2048
    scrape_interval_s: float = 1.0  # engine /metrics (KV use, power); 0 = never
    upstream_client: str = "fast"  # "fast" (own keep-alive pool) | "httpx"
    # browser origins allowed to call /v1 (CORS); "*" any; () none (no CORS headers)
    cors_origins: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        if self.max_attempts < 1:
            raise InvalidRequestError("max_attempts must be >= 1")
        if self.upstream_client not in ("fast", "httpx"):
            raise InvalidRequestError("upstream_client must be 'fast' or 'httpx'")
        if self.default_max_tokens < 1:
            raise InvalidRequestError("default_max_tokens must be >= 1")


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
        # A durable ledger journals each row before the answer's last bytes (write-ahead).
        self.journal: Callable[..., None] | None = getattr(self.ledger, "record", None)
        self.router = router or make_router(DEFAULT_GATEWAY_POLICY, self.clock)
        self.prices = prices or PriceBook()
        self.budgets = BudgetBook(self.clock)
        self.dispatcher = Dispatcher(
            self.pool,
            self.router,
            self.clock,
            max_queued=self.config.max_queued,
            max_wait_s=self.config.max_wait_s,
            max_expected_wait_s=self.config.max_expected_wait_s,
        )
        self.door = DoorGuard(self.config.max_inflight_requests, self.config.max_loop_lag_s)
        self.metrics = GatewayMetrics(self.pool, self.dispatcher.queued)
        self._transport = transport
        self._upstream: UpstreamClient | None = None
        self._scrape_client: httpx.AsyncClient | None = None
        self.pending_usage: list[UsageRecord] = []
        self._ticker: asyncio.Task[None] | None = None
        self._uses_prefixes = bool(getattr(self.router, "uses_prefixes", False))
        self.started_wall_s = time.time()
        # LoRA adapters (gateway/adapters.py): set by the live center; None serves no adapter.
        self.adapters: AdapterResolver | None = None
        self.adapter_loader: AdapterLoader = AdapterLoader(lambda _model: ("virtual", True))
        self._control_client: httpx.AsyncClient | None = None
        self.expected_models: set[str] = set()  # served once their replicas are up (starting)
        self.replica_servers: dict[str, str] = {}  # replica id -> server, placed outside the fleet
        # Autoscaled models that may have no replica (live/autoscaler.py): a request for one is
        # held up to cold_start_hold_s while a replica starts (then 503 + Retry-After), counted
        # in held_for_replica (the autoscaler's cold-start signal), and on_cold_start is called.
        self.standby_models: set[str] = set()
        self.cold_start_hold_s = 60.0
        self.held_for_replica: dict[str, int] = {}
        self.on_cold_start: Callable[[], None] | None = None
        # model id -> its tokenizer's prompt count (request, endpoint) -> tokens | None, set by
        # the reconciler for real engines with a local tokenizer; else wire.tokens' rule
        self.token_counters: dict[str, Callable[[dict[str, Any], str], int | None]] = {}
        # model id -> the smallest max_model_len its engines report in /v1/models (learned once
        # per replica by the ticker); models whose engines count prompts by wire.tokens' rule
        self.context_tokens: dict[str, int] = {}
        self.exact_prompt_counts: set[str] = set()
        self._probed: set[str] = set()  # replica ids asked for their context
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
        self.door.close()
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
        if self._control_client is not None:
            await self._control_client.aclose()
            self._control_client = None

    async def flush(self) -> None:
        """Write the buffered ledger rows now."""
        if not self.pending_usage:
            return
        rows, self.pending_usage = self.pending_usage, []
        try:
            await asyncio.to_thread(self.ledger.append, rows)
        except Exception:
            log.exception(
                "could not write %d usage rows; keeping them for the next flush", len(rows)
            )
            self.pending_usage[:0] = rows

    async def _tick_forever(self) -> None:
        last_scrape_s = 0.0
        energy_marks: dict[str, tuple[float, float]] = {}
        while True:
            await asyncio.sleep(self.config.ledger_flush_interval_s)
            for model_id in self.pool.models():  # replicas back from a cool-down take waiters
                self.dispatcher.wake(model_id)
            await self.flush()
            sample_history(self)
            now_s = self.clock.now_s()
            interval_s = self.config.scrape_interval_s
            client = self._scrape_client
            if client is not None:
                await self._probe_contexts(client)
            if interval_s > 0 and now_s - last_scrape_s >= interval_s and client is not None:
                last_scrape_s = now_s
                await asyncio.gather(
                    *(scrape_replica(client, r, now_s, energy_marks) for r in self.pool.replicas())
                )

    async def _probe_contexts(self, client: httpx.AsyncClient) -> None:
        """Learn each new replica's context length (``max_model_len`` in its /v1/models)."""
        new = [r for r in self.pool.replicas() if r.replica_id not in self._probed]
        if not new:
            return
        self._probed.update(r.replica_id for r in new)

        async def probe(replica: Replica) -> None:
            endpoint = replica.endpoint
            headers = {"authorization": f"Bearer {endpoint.api_key}"} if endpoint.api_key else {}
            try:
                resp = await client.get(f"{endpoint.base_url}/v1/models", headers=headers)
                models = resp.json().get("data") or []
            except (httpx.HTTPError, ValueError, AttributeError):
                self._probed.discard(replica.replica_id)  # asked again on the next tick
                return
            for entry in models:
                context = entry.get("max_model_len") if isinstance(entry, dict) else None
                if isinstance(context, int) and context > 0:
                    known = self.context_tokens.get(endpoint.model_id, context)
                    self.context_tokens[endpoint.model_id] = min(known, context)
                    if entry.get("owned_by") == "npucenter-virtual":
                        self.exact_prompt_counts.add(endpoint.model_id)

        await asyncio.gather(*(probe(r) for r in new))

    def upstream_client(self) -> UpstreamClient:
        """The client to engines (open once :meth:`start` ran)."""
        if self._upstream is None:
            raise UpstreamError("the gateway has not started")
        return self._upstream

    def control_client(self) -> httpx.AsyncClient:
        """The client of engines' control calls (loading and unloading adapters)."""
        if self._control_client is None:
            self._control_client = httpx.AsyncClient(transport=self._transport, timeout=120.0)
        return self._control_client

    def models(self) -> list[str]:
        """Models served now or starting, sorted."""
        return sorted({*self.pool.models(), *self.expected_models, *self.standby_models})

    # --- ASGI ------------------------------------------------------------------------------

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        """Serve one ASGI connection event."""
        kind = scope["type"]
        if kind == "lifespan":
            await self._lifespan(receive, send)
            return
        if kind != "http":
            return
        if scope["method"] == "POST":
            refused = self.door.refusal()
            if refused is None and not (self.standby_models or self.expected_models):
                refused = self.dispatcher.saturated()  # every queue full for its wait bound
                self.door.shed += refused is not None
            if refused is not None:
                await respond(send, 503, error_body(refused), extra=error_headers(refused)[1:])
                return
        self.door.inflight += 1
        try:
            await self._serve(scope, receive, send)
        finally:
            self.door.inflight -= 1

    async def _serve(self, scope: Scope, receive: Receive, send: Send) -> None:
        if self._upstream is None or self._ticker is None:
            await self.start()
        path: str = scope["path"]
        method: str = scope["method"]
        request_id = f"req-{_ids.getrandbits(80):020x}"
        send = self._stamped(send, scope, _client_request_id(scope) or request_id)
        if method == "OPTIONS":
            await self._preflight(scope, send)
        elif path.endswith("/chat/completions") and method == "POST":
            await self._guarded(self._completion, scope, receive, send, CHAT, request_id)
        elif path.endswith("/completions") and method == "POST":
            await self._guarded(self._completion, scope, receive, send, COMPLETIONS, request_id)
        elif path.endswith("/models") and method == "GET":
            await self._guarded(self._models, scope, receive, send, "/v1/models", request_id)
        elif "/models/" in path and method == "GET":
            await self._guarded(self._model, scope, receive, send, "/v1/models/{id}", request_id)
        elif path.endswith("/metrics") and method == "GET":
            await respond(send, 200, self.metrics.render(), CONTENT_TYPE.encode())
        elif path.endswith("/health") and method in ("GET", "HEAD"):
            await respond(send, 200, b'{"status":"ok"}')
        else:
            exc = NotFoundError("endpoint", f"{method} {path}", valid=_ENDPOINTS)
            await respond(send, exc.http_status, error_body(exc))

    def _stamped(self, send: Send, scope: Scope, shown_id: str) -> Send:
        """``send`` adding ``x-request-id`` (and CORS headers for an allowed origin) to the head."""
        extra = [(b"x-request-id", shown_id.encode())]
        origin = header(scope, b"origin")
        if origin is not None and self._origin_allowed(origin):
            extra += [
                (b"access-control-allow-origin", origin.encode("latin-1")),
                (b"access-control-expose-headers", b"x-request-id, retry-after"),
                (b"vary", b"origin"),
            ]

        async def stamped(message: Message) -> None:
            if message["type"] == "http.response.start":
                message["headers"] = [*message.get("headers", ()), *extra]
            await send(message)

        return stamped

    def _origin_allowed(self, origin: str) -> bool:
        allowed = self.config.cors_origins
        return "*" in allowed or origin in allowed

    async def _preflight(self, scope: Scope, send: Send) -> None:
        """Answer a CORS preflight: 204 with what an allowed origin may send, else 403."""
        origin = header(scope, b"origin")
        if origin is None or not self._origin_allowed(origin):
            exc = PermissionDeniedError(
                f"origin {origin!r} may not call this API from a browser",
                hint="the operator lists allowed origins in NPUCENTER_CORS_ORIGINS",
            )
            await respond(send, exc.http_status, error_body(exc))
            return
        asked = header(scope, b"access-control-request-headers")
        headers = [
            (b"access-control-allow-methods", b"GET, POST, OPTIONS"),
            (
                b"access-control-allow-headers",
                (asked or "authorization, content-type, x-request-id").encode("latin-1"),
            ),
            (b"access-control-max-age", b"600"),
        ]
        await send({"type": "http.response.start", "status": 204, "headers": headers})
        await send({"type": "http.response.body", "body": b""})

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
        handler: Callable[[Call, Scope, Receive, Send], Awaitable[None]],
        scope: Scope,
        receive: Receive,
        send: Send,
        endpoint: str,
        request_id: str,
    ) -> None:
        """Run ``handler``; map errors; cancel it when the client goes; meter it in every case."""
        call = Call(
            request_id=request_id,
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
            body = await read_body(receive, self.config.max_body_bytes)
            watcher = asyncio.create_task(watch())
            try:
                await handler(call, scope, replay(body), send)
            finally:
                watcher.cancel()
        except NpuCenterError as exc:
            call.status = "error"
            if not call.responded:
                await self._send_error(call, send, exc)
        except ClientGone:
            call.status = "cancelled"
        except asyncio.CancelledError:
            if not gone or task is None:
                finish(self, call)
                raise
            task.uncancel()
            call.status = "cancelled"
        except Exception:  # a bug: answer without its text (it is in the log), keep serving
            log.exception("gateway request %s failed", call.request_id)
            call.status = "error"
            if not call.responded:
                error = UpstreamError(
                    "the gateway failed on this request",
                    hint="the operator finds it in the server log by its request id",
                    details={"request_id": call.request_id},
                )
                await self._send_error(call, send, error)
        finish(self, call)

    async def _send_error(self, call: Call, send: Send, exc: NpuCenterError) -> None:
        call.responded = True
        await send(
            {
                "type": "http.response.start",
                "status": exc.http_status,
                "headers": error_headers(exc),
            }
        )
        await send({"type": "http.response.body", "body": error_body(exc)})

    # --- endpoints -------------------------------------------------------------------------

    async def _models(self, call: Call, scope: Scope, receive: Receive, send: Send) -> None:
        call.principal = self._authenticate(scope)
        call.reservation = self.budgets.reserve(call.principal, 0)
        created = int(time.time())
        data = [
            {"id": m, "object": "model", "created": created, "owned_by": "npucenter"}
            for m in self.models()
        ]
        if self.adapters is not None:  # the caller's own adapters only
            served = set(self.models())
            data += [
                {
                    "id": name,
                    "object": "model",
                    "created": created,
                    "owned_by": call.principal.tenant,
                    "parent": base,
                }
                for name, base in self.adapters.names(call.principal)
                if self.pool.resolve(base) in served
            ]
        call.responded = True
        await respond(send, 200, json.dumps({"object": "list", "data": data}).encode())

    async def _model(self, call: Call, scope: Scope, receive: Receive, send: Send) -> None:
        call.principal = self._authenticate(scope)
        call.reservation = self.budgets.reserve(call.principal, 0)
        name = scope["path"].rsplit("/models/", 1)[1]
        served = self.models()
        if name not in served and self.pool.resolve(name) not in served:
            raise NotFoundError("model", name, valid=served)
        body = {"id": name, "object": "model", "created": int(time.time()), "owned_by": "npucenter"}
        call.responded = True
        await respond(send, 200, json.dumps(body).encode())

    async def _completion(self, call: Call, scope: Scope, receive: Receive, send: Send) -> None:
        call.principal = principal = self._authenticate(scope)
        raw = (await receive())["body"]
        request = parse_request(raw, call.endpoint)
        call.model_id = model_id = self.pool.resolve(request["model"])
        if model_id != request["model"]:  # an alias (a deployment's name): the engine's name
            request = {**request, "model": model_id}
            raw = json.dumps(request).encode()
        adapter = None
        if self.adapters is not None and not self.pool.replicas(model_id):
            adapter = self.adapters.resolve(principal, request["model"])
        if adapter is not None:  # served on its base model's replicas, under its engine name
            call.adapter = adapter
            call.model_id = model_id = self.pool.resolve(adapter.base_model)
            if self.pool.replicas(model_id):
                self.adapter_loader.check(model_id)
            request = {**request, "model": adapter.served_name}
            raw = json.dumps(request).encode()
        if not self.pool.replicas(model_id) and model_id in self.standby_models:
            await self._hold_for_replica(model_id)
        if not self.pool.replicas(model_id):
            if model_id in self.expected_models or model_id in self.standby_models:
                raise CapacityUnavailableError(
                    f"the {model_id} replicas are still starting",
                    hint="retry in a few seconds",
                    retry_after_s=2.0,
                    model=model_id,
                )
            raise NotFoundError("model", model_id, valid=self.models())
        stream = bool(request.get("stream", False))
        text, num_ids = prompt_text(request, call.endpoint)
        counter = self.token_counters.get(model_id)
        counted = counter(request, call.endpoint) if counter is not None else None
        est_in = (
            counted if counted is not None else prompt_tokens(request, call.endpoint, text, num_ids)
        )
        max_out = requested_max_tokens(request, self.config.default_max_tokens)
        self._check_context(request, call.endpoint, model_id, est_in, exact=counted is not None)
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
                    text
                    if adapter is None
                    else adapter_prefix(adapter, self.config.prefix_block_chars) + text,
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
                raw = with_include_usage(raw, request)
            await forward_stream(self, call, raw, send, want_usage)
        else:
            await forward_unary(self, call, raw, send)

    # --- helpers ---------------------------------------------------------------------------

    async def _hold_for_replica(self, model_id: str) -> None:
        """Wait (bounded) for a replica of an autoscaled model at zero replicas."""
        self.held_for_replica[model_id] = self.held_for_replica.get(model_id, 0) + 1
        try:
            if self.on_cold_start is not None:
                self.on_cold_start()
            deadline = time.monotonic() + self.cold_start_hold_s
            while not self.pool.replicas(model_id) and time.monotonic() < deadline:
                await asyncio.sleep(0.1)
        finally:
            self.held_for_replica[model_id] -= 1

    def _check_context(
        self, request: dict[str, Any], endpoint: str, model_id: str, prompt: int, *, exact: bool
    ) -> None:
        """Refuse, before any budget is touched, what cannot fit the model's context: a
        ``max_tokens`` as long as the context, or (where the prompt count is exact) prompt
        plus ``max_tokens`` over it."""
        context = self.context_tokens.get(model_id)
        if context is None:
            return
        exact = exact or model_id in self.exact_prompt_counts
        asked = request.get("max_completion_tokens", request.get("max_tokens"))
        where = "messages" if endpoint == CHAT else "prompt"
        if exact and prompt >= context:
            raise InvalidRequestError(
                f"This model's maximum context length is {context} tokens; the {where} has "
                f"{prompt}.",
                hint=f"shorten the {where}",
                details={"param": where},
            )
        if asked is not None and (asked >= context or (exact and prompt + asked > context)):
            raise InvalidRequestError(
                f"This model's maximum context length is {context} tokens. However, you "
                f"requested {prompt + asked} tokens ({prompt} in the {where}, {asked} in the "
                "completion).",
                hint=f"lower max_tokens to at most {max(1, context - prompt)}",
                details={"param": "max_tokens"},
            )

    def _authenticate(self, scope: Scope) -> Principal:
        principal = self.keys.resolve(bearer_key(header(scope, b"authorization")))
        require_inference(principal)
        return principal


# Request ids: 80 random bits from a generator seeded by the OS (no system call a request, as
# uuid4 made: ~30 us under load); unique, not secret (the client sees its own in x-request-id).
_ids = random.Random()

_ENDPOINTS = [
    "GET /v1/models",
    "GET /v1/models/{id}",
    "POST /v1/chat/completions",
    "POST /v1/completions",
    "GET /v1/health",
]
_MAX_REQUEST_ID_CHARS = 128


def _client_request_id(scope: Scope) -> str | None:
    """The client's own ``x-request-id`` when it is short printable ASCII (else ours is used)."""
    value = header(scope, b"x-request-id")
    if value and len(value) <= _MAX_REQUEST_ID_CHARS and value.isascii() and value.isprintable():
        return value
    return None
