"""A lean HTTP/1.1 transport for httpx on plain asyncio streams (``http://`` only).

NOTE(bench): httpx's default transport (httpcore over anyio) spends several hundred microseconds
of CPU per streamed request and scans its whole pool on every request, which caps a Python load
generator well below 2,000 requests/s on a small machine and makes it collapse as in-flight
requests grow. The generator only needs keep-alive HTTP/1.1 with chunked or sized bodies, so this
transport does exactly that: one idle-connection stack per host, bytes handed to httpx as they
are read from the socket. Errors map to httpx's own exception classes, so callers see httpx.
``https://`` stays on httpx's default transport (``make_client`` mounts this one for http only).
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from typing import Any

import httpx

__all__ = ["FastTransport"]

_MAX_HEADER_BYTES = 64 * 1024


class _Conn:
    __slots__ = ("reader", "writer")

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader = reader
        self.writer = writer

    def close(self) -> None:
        with contextlib.suppress(OSError, RuntimeError):  # the loop may be closed already
            self.writer.close()


class _Body(httpx.AsyncByteStream):
    """The response body, yielded as the socket delivers it (chunked or sized)."""

    def __init__(
        self,
        transport: FastTransport,
        key: tuple[str, int],
        conn: _Conn,
        *,
        chunked: bool,
        length: int | None,
        keep_alive: bool,
        read_timeout_s: float | None,
    ) -> None:
        self._t = transport
        self._key = key
        self._conn = conn
        self._chunked = chunked
        self._length = length
        self._keep = keep_alive
        self._timeout = read_timeout_s
        self._done = False

    async def __aiter__(self) -> AsyncIterator[bytes]:
        reader = self._conn.reader
        try:
            async with asyncio.timeout(None) as cm:
                if self._chunked:
                    while True:
                        cm.reschedule(_deadline(self._timeout))
                        line = await reader.readuntil(b"\r\n")
                        size = int(line.split(b";", 1)[0], 16)
                        if size == 0:
                            await reader.readuntil(b"\r\n")
                            break
                        data = await reader.readexactly(size + 2)
                        yield data[:-2]
                elif self._length is not None:
                    left = self._length
                    while left > 0:
                        cm.reschedule(_deadline(self._timeout))
                        data = await reader.read(min(left, 65536))
                        if not data:
                            raise httpx.RemoteProtocolError("connection closed mid-body")
                        left -= len(data)
                        yield data
                else:
                    while True:
                        cm.reschedule(_deadline(self._timeout))
                        data = await reader.read(65536)
                        if not data:
                            break
                        yield data
                    self._keep = False
            self._done = True
        except TimeoutError as exc:
            raise httpx.ReadTimeout("no bytes within the read timeout") from exc
        except (asyncio.IncompleteReadError, ConnectionError, ValueError) as exc:
            raise httpx.RemoteProtocolError(f"broken response body: {exc!r}") from exc

    async def aclose(self) -> None:
        if self._done and self._keep:
            self._t._release(self._key, self._conn)
        else:
            self._conn.close()


class FastTransport(httpx.AsyncBaseTransport):
    """Keep-alive HTTP/1.1 over asyncio streams; a stack of idle connections per host."""

    def __init__(self, max_keepalive_connections: int = 4096) -> None:
        self._idle: dict[tuple[str, int], list[_Conn]] = {}
        self._max_idle = max_keepalive_connections

    def _release(self, key: tuple[str, int], conn: _Conn) -> None:
        stack = self._idle.setdefault(key, [])
        if len(stack) < self._max_idle and not conn.reader.at_eof():
            stack.append(conn)
        else:
            conn.close()

    async def _acquire(self, key: tuple[str, int], timeout_s: float | None) -> tuple[_Conn, bool]:
        stack = self._idle.get(key)
        while stack:
            conn = stack.pop()
            if not conn.reader.at_eof() and not conn.writer.is_closing():
                return conn, True
            conn.close()
        try:
            async with asyncio.timeout(_deadline(timeout_s)):
                reader, writer = await asyncio.open_connection(key[0], key[1], limit=1 << 20)
        except TimeoutError as exc:
            raise httpx.ConnectTimeout(f"connecting to {key[0]}:{key[1]} timed out") from exc
        except OSError as exc:
            raise httpx.ConnectError(f"cannot connect to {key[0]}:{key[1]}: {exc}") from exc
        return _Conn(reader, writer), False

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
        head = _request_head(request, key, len(body))
        for attempt in (0, 1):
            conn, reused = await self._acquire(key, timeouts.get("connect"))
            try:
                conn.writer.write(head + body)
                if len(body) > 65536:
                    await conn.writer.drain()
                async with asyncio.timeout(_deadline(timeouts.get("read"))):
                    raw = await conn.reader.readuntil(b"\r\n\r\n")
                break
            except TimeoutError as exc:
                conn.close()
                raise httpx.ReadTimeout("no response head within the read timeout") from exc
            except (asyncio.IncompleteReadError, ConnectionError) as exc:
                conn.close()
                # a kept-alive connection the server closed meanwhile: retry once on a new one
                if reused and attempt == 0:
                    continue
                raise httpx.RemoteProtocolError(f"server closed the connection: {exc!r}") from exc
            except asyncio.LimitOverrunError as exc:
                conn.close()
                raise httpx.RemoteProtocolError("response head too large") from exc
            except BaseException:  # cancelled mid-request: never reuse a half-used connection
                conn.close()
                raise
        try:
            status, headers = _parse_head(raw)
        except httpx.RemoteProtocolError:
            conn.close()
            raise
        hmap = {k.lower(): v for k, v in headers}
        chunked = b"chunked" in hmap.get(b"transfer-encoding", b"").lower()
        try:
            length = (
                int(hmap[b"content-length"]) if b"content-length" in hmap and not chunked else None
            )
        except ValueError as exc:
            conn.close()
            raise httpx.RemoteProtocolError("bad content-length") from exc
        keep = hmap.get(b"connection", b"").lower() != b"close"
        if request.method == "HEAD" or status in (204, 304) or 100 <= status < 200:
            length, chunked = 0, False
        stream = _Body(
            self,
            key,
            conn,
            chunked=chunked,
            length=length,
            keep_alive=keep,
            read_timeout_s=timeouts.get("read"),
        )
        return httpx.Response(
            status, headers=headers, stream=stream, extensions={"http_version": b"HTTP/1.1"}
        )

    async def aclose(self) -> None:
        for stack in self._idle.values():
            for conn in stack:
                conn.close()
        self._idle.clear()


def _deadline(timeout_s: float | None) -> float | None:
    return None if timeout_s is None else asyncio.get_running_loop().time() + timeout_s


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


def _parse_head(raw: bytes) -> tuple[int, list[tuple[bytes, bytes]]]:
    if len(raw) > _MAX_HEADER_BYTES:
        raise httpx.RemoteProtocolError("response head too large")
    lines = raw[:-4].split(b"\r\n")
    parts = lines[0].split(b" ", 2)
    if len(parts) < 2 or not parts[0].startswith(b"HTTP/1."):
        raise httpx.RemoteProtocolError(f"not an HTTP/1.x response: {lines[0][:80]!r}")
    try:
        status = int(parts[1])
    except ValueError as exc:
        raise httpx.RemoteProtocolError(f"bad status line {lines[0][:80]!r}") from exc
    headers = []
    for line in lines[1:]:
        name, sep, value = line.partition(b":")
        if sep:
            headers.append((name.strip(), value.strip()))
    return status, headers
