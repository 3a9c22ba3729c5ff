"""The gateway's HTTP client to engines: one POST, returned once the response head is in.

:class:`FastUpstreamClient` is the default: the keep-alive HTTP/1.1 pool of
:mod:`npucenter.wire.http1` (why not httpx: see the note there), with each engine URL's request
head built once. :class:`HttpxUpstreamClient` is the same interface over ``httpx.AsyncClient``
(custom transports in tests, TLS, proxies). Both raise ``httpx`` exceptions, so the gateway
handles one error family; closing a response before its end closes the connection, which is how
an engine learns that the client went away.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Mapping
from typing import Protocol
from urllib.parse import urlsplit

import httpx

from npucenter.wire.http1 import Http1Pool

__all__ = [
    "FastUpstreamClient",
    "HttpxUpstreamClient",
    "UpstreamClient",
    "UpstreamResponse",
]


class UpstreamResponse(Protocol):
    """An engine's response whose body has not been read yet."""

    status_code: int

    def header(self, name: str, default: str = "") -> str:
        """A response header (lower-case name)."""
        ...

    async def aread(self) -> bytes:
        """The whole body."""
        ...

    def aiter_raw(self) -> AsyncIterator[bytes]:
        """The body, piece by piece as it arrives."""
        ...

    async def aclose(self) -> None:
        """Release the connection (closing it when the body was not read to the end)."""
        ...


class UpstreamClient(Protocol):
    """Sends one POST to an engine and returns as soon as the response head is in."""

    async def send(self, url: str, body: bytes, headers: Mapping[str, str]) -> UpstreamResponse:
        """POST ``body`` to ``url``."""
        ...

    async def aclose(self) -> None:
        """Close every pooled connection."""
        ...


# --- httpx ---------------------------------------------------------------------------------------


class _HttpxResponse:
    __slots__ = ("_resp", "status_code")

    def __init__(self, resp: httpx.Response) -> None:
        self._resp = resp
        self.status_code = resp.status_code

    def header(self, name: str, default: str = "") -> str:
        return str(self._resp.headers.get(name, default))

    async def aread(self) -> bytes:
        return await self._resp.aread()

    def aiter_raw(self) -> AsyncIterator[bytes]:
        return self._resp.aiter_raw()

    async def aclose(self) -> None:
        await self._resp.aclose()


class HttpxUpstreamClient:
    """The interface over an ``httpx.AsyncClient`` (streaming requests)."""

    def __init__(self, client: httpx.AsyncClient) -> None:
        self.client = client

    async def send(self, url: str, body: bytes, headers: Mapping[str, str]) -> UpstreamResponse:
        """POST and return once the head is in."""
        request = self.client.build_request("POST", url, content=body, headers=dict(headers))
        return _HttpxResponse(await self.client.send(request, stream=True))

    async def aclose(self) -> None:
        """Close the client."""
        await self.client.aclose()


# --- the fast path -------------------------------------------------------------------------------


class FastUpstreamClient:
    """Keep-alive HTTP/1.1 to engines over the shared :class:`~npucenter.wire.http1.Http1Pool`."""

    def __init__(
        self,
        *,
        connect_timeout_s: float = 2.0,
        read_timeout_s: float = 120.0,
        max_idle_per_host: int = 512,
    ) -> None:
        self.pool = Http1Pool(
            connect_timeout_s=connect_timeout_s,
            read_timeout_s=read_timeout_s,
            max_idle_per_host=max_idle_per_host,
        )
        self._targets: dict[str, tuple[tuple[str, int], bytes]] = {}  # url -> (host, port), head

    async def send(self, url: str, body: bytes, headers: Mapping[str, str]) -> UpstreamResponse:
        """POST and return once the head is in (retried once on a stale pooled connection)."""
        key, head = self._target(url)
        extra = "".join(f"{k}: {v}\r\n" for k, v in headers.items())
        message = head + f"{extra}content-length: {len(body)}\r\n\r\n".encode() + body
        return await self.pool.request(key, message)

    async def aclose(self) -> None:
        """Close every idle connection."""
        await self.pool.aclose()

    def _target(self, url: str) -> tuple[tuple[str, int], bytes]:
        target = self._targets.get(url)
        if target is None:
            parts = urlsplit(url)
            if parts.scheme != "http" or not parts.hostname:
                raise httpx.UnsupportedProtocol(
                    f"the fast upstream client speaks plain http only: {url}"
                )
            port = parts.port or 80
            path = parts.path or "/"
            head = f"POST {path} HTTP/1.1\r\nhost: {parts.hostname}:{port}\r\n".encode()
            target = self._targets[url] = ((parts.hostname, port), head)
        return target
