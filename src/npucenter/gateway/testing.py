"""Helpers for exercising the gateway: a loopback server runner, virtual replicas, and the fake
OpenAI upstream (:class:`~npucenter.wire.fake.FakeOpenAI`) as a process.

``python -m npucenter.gateway.testing --port N`` runs the fake under uvicorn (to be killed in tests
and benchmarks). Only loopback addresses are ever bound.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import threading
import time
from collections.abc import Iterator
from typing import Any, Literal

import uvicorn

from npucenter.wire.fake import FakeOpenAI, FakeScript

__all__ = ["running_server", "start_virtual_replicas"]


@contextlib.contextmanager
def running_server(
    app: Any, *, port: int = 0, lifespan: Literal["auto", "on", "off"] = "on"
) -> Iterator[str]:
    """Serve ``app`` with uvicorn on 127.0.0.1 in a background thread; yields its base URL."""
    config = uvicorn.Config(
        app, host="127.0.0.1", port=port, log_level="warning", lifespan=lifespan, access_log=False
    )
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, name="npucenter-test-server", daemon=True)
    thread.start()
    deadline = time.monotonic() + 10.0
    while not server.started:
        if not thread.is_alive() or time.monotonic() > deadline:
            raise RuntimeError("the loopback server did not start")
        time.sleep(0.01)
    bound = server.servers[0].sockets[0].getsockname()[1]
    try:
        yield f"http://127.0.0.1:{bound}"
    finally:
        server.should_exit = True
        thread.join(timeout=10.0)


def main(argv: list[str] | None = None) -> None:
    """Run the fake OpenAI upstream on 127.0.0.1 (for process-kill tests and benchmarks)."""
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--output-tokens", type=int, default=8)
    parser.add_argument("--ttft-s", type=float, default=0.0)
    parser.add_argument("--token-delay-s", type=float, default=0.0)
    args = parser.parse_args(argv)
    script = FakeScript(
        output_tokens=args.output_tokens, ttft_s=args.ttft_s, itl_s=args.token_delay_s
    )
    uvicorn.run(
        FakeOpenAI(script, name="scripted"),
        host="127.0.0.1",
        port=args.port,
        log_level="warning",
        access_log=False,
        lifespan="off",
    )


async def start_virtual_replicas(
    model: str,
    device: str,
    count: int,
    *,
    max_num_seqs: int = 64,
    precision: str = "fp8",
    time_scale: float = 1.0,
) -> tuple[Any, list[Any]]:
    """Start ``count`` virtual engines (one card each) as local processes.

    ``time_scale`` is the engines' real seconds per modelled second (2: half speed).

    Returns the executor (stop it with ``await executor.shutdown()``) and the
    gateway endpoints of the replicas, ids ``<device>-0-r<i>`` as a fleet file would name them.
    """
    from npucenter.engines import ReplicaSpec
    from npucenter.executors.local import LocalProcessExecutor
    from npucenter.gateway.pool import ReplicaEndpoint

    executor = LocalProcessExecutor()
    spec = ReplicaSpec(
        engine="virtual",
        model=model,
        device=device,
        tp=1,
        precision=precision,
        max_num_seqs=max_num_seqs,
        time_scale=time_scale,
    )
    reps = await asyncio.gather(
        *(executor.start(spec, replica_id=f"{device}-0-r{i}") for i in range(count))
    )
    endpoints = [
        ReplicaEndpoint(
            replica_id=r.replica_id, base_url=r.base_url, model_id=model, device_id=device
        )
        for r in reps
    ]
    return executor, endpoints


if __name__ == "__main__":
    main()
