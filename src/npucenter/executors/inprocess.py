"""Virtual engines served from the caller's own event loop: no processes, millisecond starts.

For laptops and tests: a fleet of dozens of virtual replicas costs one interpreter instead of
~90 MB and ~0.7 s of start-up each. The engines then share this process's CPU with whatever else
runs on the loop (the gateway), so use :class:`LocalProcessExecutor` to measure throughput.
Only the ``virtual`` engine can run this way.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import socket
from collections.abc import Generator
from dataclasses import dataclass, replace
from typing import Any

import httpx
import uvicorn

from npucenter.engines import ENGINES, ReplicaSpec
from npucenter.engines.virtual.server import VirtualEngineConfig, build_app
from npucenter.errors import NotFoundError, NotSupportedError, UpstreamError
from npucenter.executors.base import EXECUTORS, ReplicaState, RunningReplica
from npucenter.executors.local import healthy

__all__ = ["InProcessExecutor"]


class _QuietServer(uvicorn.Server):
    """A uvicorn server that leaves the host process's signal handlers alone."""

    @contextlib.contextmanager
    def capture_signals(self) -> Generator[None, None, None]:
        yield


@dataclass(slots=True)
class _Hosted:
    replica: RunningReplica
    server: _QuietServer | None
    task: asyncio.Task[None] | None


class InProcessExecutor:
    """Runs virtual replicas as uvicorn servers on this event loop (``perf`` injectable)."""

    name = "inprocess"

    def __init__(self, *, host: str = "127.0.0.1", perf: Any = None) -> None:
        self.host = host
        self._perf = perf
        self._hosted: dict[str, _Hosted] = {}
        self._ids = itertools.count(1)

    async def start(
        self, spec: ReplicaSpec, *, replica_id: str | None = None, wait_ready: bool = True
    ) -> RunningReplica:
        """Build the virtual engine for ``spec`` and serve it on a free port."""
        if spec.engine != "virtual":
            raise NotSupportedError(
                f"engine {spec.engine} in process",
                "only the virtual engine runs inside the caller's process",
                hint="use the local executor for real engines",
            )
        rid = replica_id or f"virtual-{next(self._ids)}"
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((self.host, 0))  # bound here, so no other process can take the port
        port = int(sock.getsockname()[1])
        launch = ENGINES.get("virtual").launch_spec(spec, host=self.host, port=port)
        app = build_app(_engine_config(spec, self.host, port), perf=self._perf)
        server = _QuietServer(
            uvicorn.Config(
                app,
                host=self.host,
                port=port,
                lifespan="on",
                access_log=False,
                log_config=None,  # leave the host's logging configuration alone
                timeout_graceful_shutdown=1,
            )
        )
        task = asyncio.get_running_loop().create_task(
            server.serve(sockets=[sock]), name=f"replica-{rid}"
        )
        previous = self._hosted.get(rid)
        replica = RunningReplica(
            replica_id=rid,
            spec=spec,
            launch=launch,
            state=ReplicaState.STARTING,
            node="inprocess",
            restarts=previous.replica.restarts if previous else 0,
        )
        hosted = _Hosted(replica=replica, server=server, task=task)
        self._hosted[rid] = hosted
        if wait_ready:
            while not server.started:
                if task.done():
                    hosted.replica = replace(replica, state=ReplicaState.FAILED)
                    exc = task.exception()
                    raise UpstreamError(f"replica {rid!r} failed to start: {exc!r}")
                await asyncio.sleep(0.005)
            hosted.replica = replace(replica, state=ReplicaState.READY)
        return hosted.replica

    async def stop(self, replica_id: str, *, grace_s: float = 5.0) -> None:
        """Shut the replica's server down (its in-flight requests are aborted)."""
        hosted = self._get(replica_id)
        if hosted.server is not None and hosted.task is not None:
            hosted.server.should_exit = True
            try:
                await asyncio.wait_for(asyncio.shield(hosted.task), grace_s)
            except TimeoutError:
                hosted.server.force_exit = True
                hosted.task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await hosted.task
        hosted.server = hosted.task = None
        hosted.replica = replace(hosted.replica, state=ReplicaState.STOPPED)

    async def restart(self, replica_id: str) -> RunningReplica:
        """Stop and start again on a new port, restarts + 1."""
        hosted = self._get(replica_id)
        restarts = hosted.replica.restarts + 1
        await self.stop(replica_id)
        replica = await self.start(hosted.replica.spec, replica_id=replica_id)
        self._hosted[replica_id].replica = replace(replica, restarts=restarts)
        return self._hosted[replica_id].replica

    async def check(self, replica_id: str) -> bool:
        """The server task runs and ``/health`` answers 200."""
        hosted = self._get(replica_id)
        if hosted.task is None or hosted.task.done():
            return False
        async with httpx.AsyncClient(timeout=2.0) as client:
            return await healthy(client, hosted.replica.launch.health_url)

    def replicas(self) -> list[RunningReplica]:
        """Replicas not stopped."""
        return [h.replica for h in self._hosted.values() if h.replica.state != ReplicaState.STOPPED]

    async def shutdown(self) -> None:
        """Stop every replica."""
        await asyncio.gather(*(self.stop(r.replica_id) for r in self.replicas()))

    def _get(self, replica_id: str) -> _Hosted:
        try:
            return self._hosted[replica_id]
        except KeyError:
            raise NotFoundError("replica", replica_id, valid=list(self._hosted)) from None


def _engine_config(spec: ReplicaSpec, host: str, port: int) -> VirtualEngineConfig:
    extra: dict[str, Any] = {}
    if spec.max_num_seqs is not None:
        extra["max_num_seqs"] = spec.max_num_seqs
    return VirtualEngineConfig(
        model=spec.model,
        device=spec.device,
        tp=spec.tp,
        precision=spec.precision,
        served_model_name=spec.served_model_name,
        host=host,
        port=port,
        time_scale=spec.time_scale,
        max_model_len=spec.max_model_len,
        **extra,
    )


EXECUTORS.add("inprocess", InProcessExecutor)
