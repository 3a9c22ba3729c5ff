"""The shared HTTP/1.1 client (wire.http1, as the gateway and the load generator use it) against
hand-written loopback servers."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable

import httpx
import pytest

from npucenter.bench.transport import FastTransport
from npucenter.gateway.upstream import FastUpstreamClient
from npucenter.wire.http1 import MAX_HEAD_BYTES

Handler = Callable[[asyncio.StreamReader, asyncio.StreamWriter], Awaitable[None]]


async def _serve(handler: Handler) -> tuple[asyncio.Server, str]:
    server = await asyncio.start_server(handler, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    return server, f"http://127.0.0.1:{port}/v1/completions"


async def _read_request(reader: asyncio.StreamReader) -> bytes:
    head = await reader.readuntil(b"\r\n\r\n")
    length = int(head.lower().split(b"content-length:")[1].split(b"\r\n")[0])
    return await reader.readexactly(length)


async def test_chunked_body_is_streamed_piece_by_piece() -> None:
    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await _read_request(reader)
        writer.write(b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n")
        for piece in (b"data: a\n\n", b"data: bb\n\n"):
            writer.write(f"{len(piece):x}\r\n".encode() + piece + b"\r\n")
            await writer.drain()
        writer.write(b"0\r\n\r\n")
        await writer.drain()

    server, url = await _serve(handler)
    client = FastUpstreamClient()
    resp = await client.send(url, b"{}", {})
    pieces = [p async for p in resp.aiter_raw()]
    await resp.aclose()
    assert pieces == [b"data: a\n\n", b"data: bb\n\n"]
    await client.aclose()
    server.close()


async def test_a_stale_pooled_connection_is_replaced() -> None:
    served = 0

    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        nonlocal served
        await _read_request(reader)
        served += 1
        writer.write(b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok")
        await writer.drain()
        writer.close()  # closes the keep-alive connection without saying so

    server, url = await _serve(handler)
    client = FastUpstreamClient()
    for _ in range(3):
        resp = await client.send(url, b"{}", {})
        assert await resp.aread() == b"ok"
        await resp.aclose()
        await asyncio.sleep(0.01)
    assert served == 3
    await client.aclose()
    server.close()


async def test_errors_are_httpx_errors() -> None:
    async def truncated(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await _read_request(reader)
        writer.write(b"HTTP/1.1 200 OK\r\ncontent-length: 10\r\n\r\nabc")
        await writer.drain()
        writer.close()

    server, url = await _serve(truncated)
    client = FastUpstreamClient(read_timeout_s=2.0)
    resp = await client.send(url, b"{}", {})
    with pytest.raises(httpx.RemoteProtocolError):
        await resp.aread()
    await resp.aclose()
    server.close()
    with pytest.raises(httpx.ConnectError):
        await client.send("http://127.0.0.1:9/v1/completions", b"{}", {})
    with pytest.raises(httpx.UnsupportedProtocol):
        await client.send("https://127.0.0.1:9/v1/completions", b"{}", {})

    async def silent(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await _read_request(reader)
        await asyncio.sleep(5)

    server, url = await _serve(silent)
    slow = FastUpstreamClient(read_timeout_s=0.2)
    with pytest.raises(httpx.ReadTimeout):
        await slow.send(url, b"{}", {})
    server.close()


async def test_closing_early_drops_the_connection() -> None:
    closed = asyncio.Event()

    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await _read_request(reader)
        writer.write(b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n5\r\nhello\r\n")
        await writer.drain()
        if await reader.read(1) == b"":  # the client hung up: an engine would abort the request
            closed.set()

    server, url = await _serve(handler)
    client = FastUpstreamClient()
    resp = await client.send(url, b"{}", {})
    async for _ in resp.aiter_raw():
        break
    await resp.aclose()
    await asyncio.wait_for(closed.wait(), 2.0)
    assert not any(client.pool._idle.values())
    server.close()


async def test_a_response_head_is_bounded_and_must_be_http() -> None:
    async def huge(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await _read_request(reader)
        writer.write(b"HTTP/1.1 200 OK\r\nx-big: " + b"a" * (MAX_HEAD_BYTES + 10) + b"\r\n\r\n")
        await writer.drain()

    async def not_http(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await _read_request(reader)
        writer.write(b"SSH-2.0-OpenSSH\r\n\r\n")
        await writer.drain()

    client = FastUpstreamClient(read_timeout_s=2.0)
    for handler in (huge, not_http):
        server, url = await _serve(handler)
        with pytest.raises(httpx.RemoteProtocolError):
            await client.send(url, b"{}", {})
        server.close()
    assert not any(client.pool._idle.values())
    await client.aclose()


async def test_the_load_generator_transport_honours_the_read_timeout() -> None:
    async def stalls(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await _read_request(reader)
        writer.write(b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n2\r\nok\r\n")
        await writer.drain()
        await asyncio.sleep(5)

    server, url = await _serve(stalls)
    timeout = httpx.Timeout(connect=1.0, read=0.2, write=1.0, pool=1.0)
    async with httpx.AsyncClient(mounts={"http://": FastTransport()}, timeout=timeout) as client:
        async with client.stream("POST", url, content=b"{}") as resp:
            with pytest.raises(httpx.ReadTimeout):
                async for _ in resp.aiter_raw():
                    pass
    server.close()
