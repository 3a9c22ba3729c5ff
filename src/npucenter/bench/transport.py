"""The load generator's httpx transport: the shared keep-alive HTTP/1.1 pool (``http://`` only).

NOTE(bench): httpx's default transport (httpcore over anyio) spends several hundred microseconds
of CPU per streamed request and scans its whole pool on every request, which caps a Python load
generator well below 2,000 requests/s on a small machine. :class:`FastTransport` hands httpx's
requests to :class:`~npucenter.wire.http1.Http1Pool` (the gateway's client too) and its bytes
back as they are read from the socket. ``https://`` stays on httpx's default transport
(``make_client`` mounts this one for http only).
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import httpx

from npucenter.wire.http1 import Http1Pool, Http1Response

__all__ = ["FastTransport"]


class _Body(httpx.AsyncByteStream):
    """The response body, yielded as the socket delivers it (chunked or sized)."""

    def __init__(self, response: Http1Response) -> None:
        self._response = response

    async def __aiter__(self) -> AsyncIterator[bytes]:
        async for piece in self._response.aiter_raw():
            yield piece

    async def aclose(self) -> None:
        await self._response.aclose()


class FastTransport(httpx.AsyncBaseTransport):
    """An httpx transport over :class:`Http1Pool`: a stack of idle connections per host."""

    def __init__(self, max_keepalive_connections: int = 4096) -> None:
        self._pool = Http1Pool(max_idle_per_host=max_keepalive_connections)

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        url = request.url
        if url.scheme != "http":
            raise httpx.UnsupportedProtocol("FastTransport serves http:// only")
        key = (url.host, url.port or 80)
        timeouts: dict[str, Any] = request.extensions.get("timeout", {})
        try:
            body = request.content
        except httpx.RequestNotRead:
            body = b"".join([c async for c in request.stream])  # type: ignore[union-attr]
        response = await self._pool.request(
            key,
            _request_head(request, key, len(body)) + body,
            head_only=request.method == "HEAD",
            timeouts_s=(timeouts.get("connect"), timeouts.get("read")),
        )
        return httpx.Response(
            response.status_code,
            headers=response.raw_headers,
            stream=_Body(response),
            extensions={"http_version": b"HTTP/1.1"},
        )

    async def aclose(self) -> None:
        await self._pool.aclose()


def _request_head(request: httpx.Request, key: tuple[str, int], length: int) -> bytes:
    target = request.url.raw_path
    lines = [request.method.encode() + b" " + target + b" HTTP/1.1"]
    has_host = False
    for name, value in request.headers.raw:
        low = name.lower()
        if low == b"host":
            has_host = True
        if low in (b"content-length", b"transfer-encoding"):
            continue
        lines.append(name + b": " + value)
    if not has_host:
        lines.append(b"Host: " + f"{key[0]}:{key[1]}".encode())
    if length or request.method in ("POST", "PUT", "PATCH"):
        lines.append(b"Content-Length: " + str(length).encode())
    return b"\r\n".join(lines) + b"\r\n\r\n"
