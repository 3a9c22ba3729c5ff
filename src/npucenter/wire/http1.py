"""Keep-alive HTTP/1.1 client over asyncio streams: one pool for the gateway and the load generator.

NOTE(wire): httpx's connection pool scans every pooled connection on each request (and polls each
idle socket for readability), and its default transport spends several hundred microseconds of
CPU per streamed request; above a few hundred requests/s that pool, not the proxying or the
measuring, became the main cost of both the gateway and the load generator (bench_gateway's and
bench_loadgen's profiles). :class:`Http1Pool` keeps a LIFO stack of idle connections per host and
speaks just the HTTP/1.1 that engines answer with: a bounded response head (64 KiB), then a
Content-Length, chunked or read-to-close body handed over as the socket delivers it. A kept-alive
connection the server closed meanwhile is retried once on a fresh one. Errors are httpx's own
exception classes, so callers handle one family; closing a response before its end closes the
connection, which is how an engine learns that its client went away.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator

import httpx

__all__ = ["MAX_HEAD_BYTES", "Http1Pool", "Http1Response", "parse_head"]

MAX_HEAD_BYTES = 64 * 1024  # a response head above this is refused (no engine sends one)
_STREAM_LIMIT = 1 << 20  # asyncio buffer per connection (bounds one chunk-size line too)
_PIECE = 65536

HostKey = tuple[str, int]


class _Conn:
    __slots__ = ("key", "reader", "reused", "writer")

    def __init__(self, key: HostKey, reader: asyncio.StreamReader, writer: asyncio.StreamWriter):
        self.key = key
        self.reader = reader
        self.writer = writer
        self.reused = False

    def usable(self) -> bool:
        return not self.writer.is_closing() and not self.reader.at_eof()

    def close(self) -> None:
        with contextlib.suppress(OSError, RuntimeError):  # the loop may be closed already
            self.writer.close()


class Http1Response:
    """A response whose head is in and whose body has not been read yet."""

    __slots__ = (
        "_chunked",
        "_conn",
        "_done",
        "_headers",
        "_keep",
        "_length",
        "_pool",
        "_read_timeout_s",
        "raw_headers",
        "status_code",
    )

    def __init__(
        self,
        pool: Http1Pool,
        conn: _Conn,
        status_code: int,
        raw_headers: list[tuple[bytes, bytes]],
        *,
        no_body: bool,
        read_timeout_s: float | None,
    ) -> None:
        self._pool = pool
        self._conn = conn
        self.status_code = status_code
        self.raw_headers = raw_headers  # as sent (names keep their case)
        self._headers: dict[str, str] | None = None
        chunked = False
        length: bytes | None = None
        self._keep = True
        for name, value in raw_headers:  # the three that frame the body, without a dict
            low = name.lower()
            if low == b"transfer-encoding":
                chunked = b"chunked" in value.lower()
            elif low == b"content-length":
                length = value
            elif low == b"connection":
                self._keep = value.lower() != b"close"
        self._chunked = chunked and not no_body
        self._length: int | None = None
        if no_body:
            self._length = 0
        elif not chunked and length is not None:
            try:
                self._length = int(length)
            except ValueError:
                conn.close()
                raise httpx.RemoteProtocolError("bad content-length") from None
            if self._length < 0:
                conn.close()
                raise httpx.RemoteProtocolError("negative content-length")
        self._read_timeout_s = read_timeout_s
        self._done = False

    @property
    def headers(self) -> dict[str, str]:
        """Response headers by lower-case name (the last one wins)."""
        if self._headers is None:
            self._headers = {
                k.decode("latin-1").lower(): v.decode("latin-1") for k, v in self.raw_headers
            }
        return self._headers

    def header(self, name: str, default: str = "") -> str:
        """A response header by its lower-case name."""
        if self._headers is None:  # a scan of a few headers beats building the dict
            wanted = name.encode("latin-1")
            found = None
            for key, value in self.raw_headers:
                if key.lower() == wanted:
                    found = value
            return default if found is None else found.decode("latin-1")
        return self._headers.get(name, default)

    async def aread(self) -> bytes:
        """The whole body."""
        return b"".join([piece async for piece in self.aiter_raw()])

    async def aiter_raw(self) -> AsyncIterator[bytes]:
        """The body, piece by piece as the socket delivers it (chunk framing removed)."""
        reader = self._conn.reader
        timeout_s = self._read_timeout_s
        try:
            if self._length is not None and self._length <= _STREAM_LIMIT:
                if self._length:  # one read, one timer (the gateway's unary answers)
                    async with asyncio.timeout(timeout_s):
                        data = await reader.readexactly(self._length)
                    yield data
                self._done = True
                return
            async with asyncio.timeout(None) as cm:
                if self._length is not None:
                    left = self._length
                    while left > 0:
                        cm.reschedule(_deadline(timeout_s))
                        data = await reader.readexactly(min(left, _STREAM_LIMIT))
                        left -= len(data)
                        yield data
                elif self._chunked:
                    while True:
                        cm.reschedule(_deadline(timeout_s))
                        line = await reader.readuntil(b"\r\n")
                        size = int(line.split(b";", 1)[0].strip(), 16)
                        if size == 0:
                            await reader.readuntil(b"\r\n")  # the end (no trailers expected)
                            break
                        data = await reader.readexactly(size + 2)
                        yield data[:-2]
                else:  # read to EOF; no reuse
                    self._keep = False
                    while True:
                        cm.reschedule(_deadline(timeout_s))
                        data = await reader.read(_PIECE)
                        if not data:
                            break
                        yield data
        except TimeoutError:
            raise httpx.ReadTimeout(f"the server sent nothing for {timeout_s:g} s") from None
        except asyncio.IncompleteReadError:
            raise httpx.RemoteProtocolError(
                "the server closed the connection mid-response"
            ) from None
        except (ValueError, asyncio.LimitOverrunError) as exc:
            raise httpx.RemoteProtocolError(f"malformed chunked body: {exc}") from None
        except OSError as exc:
            raise httpx.ReadError(f"reading the response failed: {exc!r}") from None
        self._done = True

    async def aclose(self) -> None:
        """Return the connection to the pool when the body was read to its end, else close it."""
        conn = self._conn
        if self._done and self._keep and conn.usable():
            self._pool._release(conn)
        else:
            conn.close()


class Http1Pool:
    """Idle keep-alive connections per host, and one request/response exchange on them."""

    def __init__(
        self,
        *,
        connect_timeout_s: float | None = 2.0,
        read_timeout_s: float | None = 120.0,
        max_idle_per_host: int = 512,
    ) -> None:
        self.connect_timeout_s = connect_timeout_s
        self.read_timeout_s = read_timeout_s
        self.max_idle_per_host = max_idle_per_host
        self._idle: dict[HostKey, list[_Conn]] = {}

    async def request(
        self,
        key: HostKey,
        message: bytes,
        *,
        head_only: bool = False,
        timeouts_s: tuple[float | None, float | None] | None = None,
    ) -> Http1Response:
        """Send ``message`` (a complete request: head and body) to ``key``; return once the
        response head is in. ``head_only``: the request was a HEAD (no body follows).
        ``timeouts_s`` is (connect, read) for this request, the pool's when ``None``; a ``None``
        inside waits forever."""
        if timeouts_s is None:
            connect_s, read_s = self.connect_timeout_s, self.read_timeout_s
        else:
            connect_s, read_s = timeouts_s
        for attempt in (0, 1):
            conn = await self._acquire(key, connect_s)
            try:
                conn.writer.write(message)
                if len(message) > _PIECE:
                    await conn.writer.drain()
                async with asyncio.timeout(read_s):
                    raw = await conn.reader.readuntil(b"\r\n\r\n")
            except TimeoutError:
                conn.close()
                raise httpx.ReadTimeout(f"no response head within {read_s:g} s") from None
            except (asyncio.IncompleteReadError, ConnectionError) as exc:
                conn.close()
                if conn.reused and attempt == 0:  # the server closed an idle connection
                    continue
                raise httpx.ReadError(f"the server dropped the connection: {exc!r}") from None
            except asyncio.LimitOverrunError:
                conn.close()
                raise httpx.RemoteProtocolError("response head too large") from None
            except OSError as exc:
                conn.close()
                raise httpx.ReadError(f"talking to the server failed: {exc!r}") from None
            except BaseException:  # cancelled mid-request: never reuse a half-used connection
                conn.close()
                raise
            try:
                status, headers = parse_head(raw)
            except httpx.RemoteProtocolError:
                conn.close()
                raise
            no_body = head_only or status in (204, 304) or 100 <= status < 200
            return Http1Response(
                self, conn, status, headers, no_body=no_body, read_timeout_s=read_s
            )
        raise httpx.ReadError("the server closed two connections in a row")

    async def aclose(self) -> None:
        """Close every idle connection."""
        for stack in self._idle.values():
            for conn in stack:
                conn.close()
        self._idle.clear()

    async def _acquire(self, key: HostKey, timeout_s: float | None) -> _Conn:
        stack = self._idle.get(key)
        while stack:
            conn = stack.pop()
            if conn.usable():
                conn.reused = True
                return conn
            conn.close()
        try:
            async with asyncio.timeout(timeout_s):
                reader, writer = await asyncio.open_connection(key[0], key[1], limit=_STREAM_LIMIT)
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


def parse_head(raw: bytes) -> tuple[int, list[tuple[bytes, bytes]]]:
    """Status and headers of a response head (``raw`` ends with the blank line).

    Raises:
        httpx.RemoteProtocolError: the head is over :data:`MAX_HEAD_BYTES` or not HTTP/1.x.
    """
    if len(raw) > MAX_HEAD_BYTES:
        raise httpx.RemoteProtocolError("response head too large")
    lines = raw[:-4].split(b"\r\n")
    parts = lines[0].split(b" ", 2)
    if len(parts) < 2 or not parts[0].startswith(b"HTTP/1."):
        raise httpx.RemoteProtocolError(f"not an HTTP/1.x response: {lines[0][:80]!r}")
    try:
        status = int(parts[1])
    except ValueError:
        raise httpx.RemoteProtocolError(f"bad status line {lines[0][:80]!r}") from None
    headers = []
    for line in lines[1:]:
        name, sep, value = line.partition(b":")
        if sep:
            headers.append((name.strip(), value.strip()))
    return status, headers


def _deadline(timeout_s: float | None) -> float | None:
    return None if timeout_s is None else asyncio.get_running_loop().time() + timeout_s
