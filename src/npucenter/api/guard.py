"""The control plane's front door: what an unauthenticated or oversized request gets before any body.

An ASGI middleware around the whole app (the API, and what extensions mount beside it):

- ``/api``: the key is checked before the body is read (401 without reading it), and the body is
  bounded (413 from ``Content-Length`` at once, or as soon as a chunked body passes the limit;
  the control plane's bodies are small, so it is read here and replayed); the principal found
  is handed to the route (no second lookup).
- ``/metrics``, ``/docs``, ``/redoc``, ``/openapi.json``: served to loopback clients and to admin
  keys; off loopback only when the operator opens them (``NPUCENTER_OPEN_ENDPOINTS``).
"""

from __future__ import annotations

import ipaddress
from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any

from starlette.concurrency import run_in_threadpool

from npucenter.api.errors import error_response
from npucenter.errors import AuthenticationError, InvalidRequestError, NpuCenterError
from npucenter.jobs.data import MAX_DATASET_BYTES
from npucenter.store.results import MAX_RESULT_BYTES

__all__ = ["MAX_API_BODY_BYTES", "MAX_RESULT_BODY_BYTES", "ApiGuard", "PayloadTooLargeError"]

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]

MAX_API_BODY_BYTES = 1024 * 1024  # any /api body but a job result
MAX_RESULT_BODY_BYTES = 2 * MAX_RESULT_BYTES  # a result document, pretty-printed at most 2x
MAX_DATASET_BODY_BYTES = 2 * MAX_DATASET_BYTES  # a JSONL data set as a JSON string (escapes)
_GUARDED = {
    "/metrics": "metrics",
    "/v1/metrics": "metrics",  # the gateway's own path to the same text
    "/docs": "docs",
    "/docs/oauth2-redirect": "docs",
    "/redoc": "docs",
    "/openapi.json": "docs",
}


class PayloadTooLargeError(InvalidRequestError):
    """A request body over the limit (HTTP 413)."""

    http_status = 413


class ApiGuard:
    """The middleware; ``authenticate(secret, route)`` returns a principal or raises (blocking)."""

    def __init__(
        self,
        app: ASGIApp,
        *,
        authenticate: Callable[[str, str], Any],
        open_endpoints: frozenset[str] = frozenset(),
        max_body_bytes: int = MAX_API_BODY_BYTES,
    ) -> None:
        self.app = app
        self.authenticate = authenticate
        self.open_endpoints = open_endpoints
        self.max_body_bytes = max_body_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        path: str = scope.get("path", "")
        group = _GUARDED.get(path) or ("metrics" if path.endswith("/metrics") else None)
        try:
            if group is not None:  # /metrics, and the gateway's own /v1/.../metrics
                await self._check_exposure(scope, group)
            elif path == "/api" or path.startswith("/api/"):
                receive = await self._check_api(scope, receive)
        except NpuCenterError as exc:
            await error_response(exc)(scope, receive, send)
            return
        await self.app(scope, receive, send)

    async def _check_exposure(self, scope: Scope, group: str) -> None:
        if group in self.open_endpoints or _is_loopback(scope):
            return
        secret = _bearer(scope)
        if secret:
            principal = await run_in_threadpool(self.authenticate, secret, "")
            if getattr(principal, "is_admin", False):
                return
        raise AuthenticationError(
            f"{scope['path']} is served to loopback clients and admin keys only",
            hint="send an admin key, or have the operator set "
            f"NPUCENTER_OPEN_ENDPOINTS={group} to open it",
        )

    async def _check_api(self, scope: Scope, receive: Receive) -> Receive:
        secret = _bearer(scope)
        if not secret:
            raise AuthenticationError(
                "no API key given",
                hint="send 'Authorization: Bearer <key>' (the CLI reads NPUCENTER_API_KEY)",
            )
        route = f"{scope.get('method', '')} {scope['path']}"  # a job's key: its result only
        principal = await run_in_threadpool(self.authenticate, secret, route)
        scope.setdefault("state", {})["principal"] = principal
        limit = self._limit(scope)
        length = _header(scope, b"content-length")
        if length is not None:
            if not length.isdigit() or len(length) > 12:
                raise InvalidRequestError("Content-Length is not a number of bytes")
            if int(length) > limit:
                raise PayloadTooLargeError(
                    f"the request body is {int(length)} bytes; the limit is {limit}",
                    hint="send a smaller body (a job result: drop per-request records)",
                )
        return await _read_bounded(receive, limit)

    def _limit(self, scope: Scope) -> int:
        path: str = scope["path"]
        if scope.get("method") == "PUT" and path.endswith("/result"):
            return max(self.max_body_bytes, MAX_RESULT_BODY_BYTES)
        if scope.get("method") == "POST" and path == "/api/datasets":
            return max(self.max_body_bytes, MAX_DATASET_BODY_BYTES)
        return self.max_body_bytes


async def _read_bounded(receive: Receive, limit: int) -> Receive:
    """Read the whole body (raising PayloadTooLargeError past ``limit``); a receive replaying it."""
    chunks: list[bytes] = []
    seen = 0
    while True:
        message = await receive()
        if message.get("type") != "http.request":  # the client left: let the app see that
            first: Message | None = message
            break
        chunk = bytes(message.get("body", b""))
        seen += len(chunk)
        if seen > limit:
            raise PayloadTooLargeError(f"the request body is over the limit of {limit} bytes")
        chunks.append(chunk)
        if not message.get("more_body", False):
            first = {"type": "http.request", "body": b"".join(chunks), "more_body": False}
            break
    pending = [first]

    async def replay() -> Message:
        return pending.pop() if pending else await receive()

    return replay


def _header(scope: Scope, name: bytes) -> str | None:
    for key, value in scope.get("headers", ()):
        if key.lower() == name:
            return bytes(value).decode("latin-1").strip()
    return None


def _bearer(scope: Scope) -> str:
    header = _header(scope, b"authorization") or ""
    secret = header[7:].strip() if header.lower().startswith("bearer ") else ""
    return secret or (_header(scope, b"x-api-key") or "")


def _is_loopback(scope: Scope) -> bool:
    client = scope.get("client")
    if not client:
        return True  # in-process (TestClient without a client address, or a unix socket)
    host = str(client[0])
    if host in ("testclient", "localhost"):
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False
