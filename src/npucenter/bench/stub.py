"""The load generator's stand-in server: the fake OpenAI server on raw asyncio streams.

:class:`~npucenter.wire.fake.FakeOpenAI` answers (token counts by the one rule of
:mod:`npucenter.wire.tokens`: a corpus word is one token, a chat message adds the template's
overhead); serving it on raw streams keeps it cheap, so that a benchmark of the generator
measures the generator, not the server. :func:`stub_script` is its script with the stub's model.

Run it alone with ``python -m npucenter.bench.stub --port 8123``; tests use :func:`running_stub`.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import threading
from collections.abc import Iterator
from typing import Any

from npucenter.wire.fake import FakeOpenAI, FakeScript, serve_fake

__all__ = ["STUB_MODEL", "main", "running_stub", "serve_stub", "stub_script"]

STUB_MODEL = "stub-model"


def stub_script(**fields: Any) -> FakeScript:
    """A :class:`FakeScript` serving :data:`STUB_MODEL` (16 tokens by default), with ``fields``."""
    return FakeScript(**{"models": (STUB_MODEL,), "output_tokens": 16, **fields})


async def serve_stub(
    script: FakeScript | None = None, host: str = "127.0.0.1", port: int = 0
) -> asyncio.Server:
    """Start the stub on ``host:port`` (0 = any free port) in the running loop."""
    return await serve_fake(FakeOpenAI(script or stub_script(), name="npucenter-stub"), host, port)


@contextlib.contextmanager
def running_stub(script: FakeScript | None = None) -> Iterator[str]:
    """Run the stub on a loopback port in a background thread; yields its base URL."""
    loop = asyncio.new_event_loop()
    ready = threading.Event()
    holder: dict[str, asyncio.Server] = {}

    def _run() -> None:
        asyncio.set_event_loop(loop)
        holder["server"] = loop.run_until_complete(serve_stub(script))
        ready.set()
        loop.run_forever()

    thread = threading.Thread(target=_run, name="npucenter-stub", daemon=True)
    thread.start()
    ready.wait(10)
    server = holder["server"]
    port = server.sockets[0].getsockname()[1]
    try:
        yield f"http://127.0.0.1:{port}"
    finally:

        async def _close() -> None:
            server.close()
            tasks = [t for t in asyncio.all_tasks() if t is not asyncio.current_task()]
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)

        asyncio.run_coroutine_threadsafe(_close(), loop).result(10)
        loop.call_soon_threadsafe(loop.stop)
        thread.join(10)
        loop.close()


def main(argv: list[str] | None = None) -> None:
    """Command line: ``python -m npucenter.bench.stub --port 8123 [--api-key K] [--no-stream]``."""
    parser = argparse.ArgumentParser(description="Minimal OpenAI-compatible stub server.")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8123)
    parser.add_argument("--model", action="append", dest="models")
    parser.add_argument("--api-key")
    parser.add_argument("--no-stream", action="store_true")
    parser.add_argument("--ttft-ms", type=float, default=0.0)
    parser.add_argument("--itl-ms", type=float, default=0.0)
    parser.add_argument("--tokens-per-chunk", type=int, default=1)
    args = parser.parse_args(argv)
    script = stub_script(
        models=tuple(args.models or (STUB_MODEL,)),
        api_key=args.api_key,
        streaming=not args.no_stream,
        ttft_s=args.ttft_ms / 1000,
        itl_s=args.itl_ms / 1000,
        tokens_per_chunk=args.tokens_per_chunk,
    )

    async def _serve() -> None:
        server = await serve_stub(script, args.host, args.port)
        port = server.sockets[0].getsockname()[1]
        print(f"stub listening on http://{args.host}:{port}", flush=True)
        async with server:
            await server.serve_forever()

    try:
        import uvloop

        uvloop.run(_serve())
    except ImportError:  # pragma: no cover - uvloop ships with uvicorn[standard]
        asyncio.run(_serve())
    except KeyboardInterrupt:
        pass


if __name__ == "__main__":
    main()
