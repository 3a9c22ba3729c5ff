"""The gateway's HTTP client to engines: pooled keep-alive HTTP/1.1, streaming, O(1) per request.

NOTE(gateway): httpx's connection pool scans every pooled connection on each request (and polls
each idle socket for readability), which made the pool, not the proxying, the gateway's main cost
above a few hundred requests/s (bench_gateway's profile). :class:`FastUpstreamClient` keeps a LIFO
stack of idle connections per engine and speaks just the HTTP/1.1 the engines answer with
(Content-Length or chunked bodies). :class:`HttpxUpstreamClient` is the same interface over
``httpx.AsyncClient`` (custom transports in tests, TLS, proxies). Both raise ``httpx`` exceptions,
so the gateway handles one error family; closing a response before its end closes the connection,
which is how an engine learns that the client went away.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Mapping
from typing import Protocol
from urllib.parse import urlsplit

import httpx

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


class _Conn:
    __slots__ = ("key", "reader", "reused", "writer")

    def __init__(
        self, key: tuple[str, int], reader: asyncio.StreamReader, writer: asyncio.StreamWriter
    ) -> None:
        self.key = key
        self.reader = reader
        self.writer = writer
        self.reused = False

    def usable(self) -> bool:
        return not self.writer.is_closing() and not self.reader.at_eof()

    def close(self) -> None:
        with contextlib.suppress(Exception):
            self.writer.close()


class _FastResponse:
    __slots__ = (
        "_chunked",
        "_client",
        "_conn",
        "_done",
        "_headers",
        "_keep",
        "_length",
        "status_code",
    )

    def __init__(
        self,
        client: FastUpstreamClient,
        conn: _Conn,
        status_code: int,
        headers: dict[str, str],
    ) -> None:
        self._client = client
        self._conn = conn
        self.status_code = status_code
        self._headers = headers
        self._chunked = "chunked" in headers.get("transfer-encoding", "").lower()
        length = headers.get("content-length")
        self._length = int(length) if length is not None and not self._chunked else None
        self._keep = headers.get("connection", "").lower() != "close"
        self._done = False

    def header(self, name: str, default: str = "") -> str:
        return self._headers.get(name, default)

    async def aread(self) -> bytes:
        return b"".join([piece async for piece in self.aiter_raw()])

    async def aiter_raw(self) -> AsyncIterator[bytes]:
        reader = self._conn.reader
        read_s = self._client.read_timeout_s
        try:
            if self._length is not None:
                if self._length:
                    async with asyncio.timeout(read_s):
                        yield await reader.readexactly(self._length)
            elif self._chunked:
                while True:
                    async with asyncio.timeout(read_s):
                        line = await reader.readuntil(b"\r\n")
                        size = int(line.split(b";", 1)[0].strip(), 16)
                        data = await reader.readexactly(size + 2)
                    if size == 0:
                        break
                    yield data[:-2]
            else:  # read to EOF; no reuse
                self._keep = False
                while True:
                    async with asyncio.timeout(read_s):
                        data = await reader.read(65536)
                    if not data:
                        break
                    yield data
        except TimeoutError:
            raise httpx.ReadTimeout(f"engine sent nothing for {read_s:g} s") from None
        except asyncio.IncompleteReadError:
            raise httpx.RemoteProtocolError(
                "the engine closed the connection mid-response"
            ) from None
        except (ValueError, asyncio.LimitOverrunError) as exc:
            raise httpx.RemoteProtocolError(f"malformed chunked body: {exc}") from None
        except OSError as exc:
            raise httpx.ReadError(f"reading from the engine failed: {exc!r}") from None
        self._done = True

    async def aclose(self) -> None:
        conn = self._conn
        if self._done and self._keep and conn.usable():
            self._client._release(conn)
        else:
            conn.close()


class FastUpstreamClient:
    """Keep-alive HTTP/1.1 to engines over asyncio streams; an idle-connection stack per engine."""

    def __init__(
        self,
        *,
        connect_timeout_s: float = 2.0,
        read_timeout_s: float = 120.0,
        max_idle_per_host: int = 512,
    ) -> None:
        self.connect_timeout_s = connect_timeout_s
        self.read_timeout_s = read_timeout_s
        self.max_idle_per_host = max_idle_per_host
        self._idle: dict[tuple[str, int], list[_Conn]] = {}
        self._targets: dict[str, tuple[tuple[str, int], bytes]] = {}  # url -> (host, port), head

    async def send(self, url: str, body: bytes, headers: Mapping[str, str]) -> UpstreamResponse:
        """POST and return once the head is in (retried once on a stale pooled connection)."""
        key, head = self._target(url)
        extra = "".join(f"{k}: {v}\r\n" for k, v in headers.items())
        message = head + f"{extra}content-length: {len(body)}\r\n\r\n".encode() + body
        for _ in range(2):
            conn = await self._acquire(key)
            try:
                conn.writer.write(message)
                async with asyncio.timeout(self.read_timeout_s):
                    raw = await conn.reader.readuntil(b"\r\n\r\n")
            except (asyncio.IncompleteReadError, ConnectionError) as exc:
                conn.close()
                if conn.reused:  # the engine closed an idle connection: try a fresh one
                    continue
                raise httpx.ReadError(f"the engine dropped the connection: {exc!r}") from None
            except TimeoutError:
                conn.close()
                raise httpx.ReadTimeout(
                    f"no answer from the engine in {self.read_timeout_s:g} s"
                ) from None
            except (OSError, asyncio.LimitOverrunError) as exc:
                conn.close()
                raise httpx.ReadError(f"talking to the engine failed: {exc!r}") from None
            except BaseException:
                conn.close()
                raise
            return _parse_head(self, conn, raw)
        raise httpx.ReadError("the engine closed two connections in a row")

    async def aclose(self) -> None:
        """Close every idle connection."""
        for stack in self._idle.values():
            for conn in stack:
                conn.close()
        self._idle.clear()

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

    async def _acquire(self, key: tuple[str, int]) -> _Conn:
        stack = self._idle.get(key)
        while stack:
            conn = stack.pop()
            if conn.usable():
                conn.reused = True
                return conn
            conn.close()
        try:
            async with asyncio.timeout(self.connect_timeout_s):
                reader, writer = await asyncio.open_connection(key[0], key[1], limit=1 << 20)
        except TimeoutError:
            raise httpx.ConnectTimeout(f"connecting to {key[0]}:{key[1]} timed out") from None
        except OSError as exc:
            raise httpx.ConnectError(f"cannot connect to {key[0]}:{key[1]}: {exc}") from None
        return _Conn(key, reader, writer)

    def _release(self, conn: _Conn) -> None:
        stack = self._idle.setdefault(conn.key, [])
        if len(stack) < self.max_idle_per_host:
            stack.append(conn)
        else:
            conn.close()


def _parse_head(client: FastUpstreamClient, conn: _Conn, raw: bytes) -> _FastResponse:
    lines = raw.decode("latin-1").split("\r\n")
    try:
        status = int(lines[0].split(" ", 2)[1])
    except (IndexError, ValueError):
        conn.close()
        raise httpx.RemoteProtocolError(f"malformed status line {lines[0]!r}") from None
    headers: dict[str, str] = {}
    for line in lines[1:]:
        if line:
            name, _, value = line.partition(":")
            headers[name.strip().lower()] = value.strip()
    return _FastResponse(client, conn, status, headers)
