"""What an executor does: start, stop, health-check and restart engine replicas.

An executor takes a :class:`~npucenter.engines.ReplicaSpec`, picks a port and a node, builds
the launch with the spec's engine and runs it. It hides one I/O seam (processes, Ray actors);
:class:`~npucenter.executors.fake.FakeExecutor` is its in-memory fake.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum
from typing import Any, Protocol, runtime_checkable

from npucenter.engines import LaunchSpec, ReplicaSpec
from npucenter.registry import Registry

__all__ = ["EXECUTORS", "Executor", "ReplicaState", "RunningReplica"]


class ReplicaState(StrEnum):
    """Life cycle of a replica."""

    STARTING = "starting"
    READY = "ready"
    FAILED = "failed"  # the process exited or stopped answering its health check
    STOPPED = "stopped"


@dataclass(frozen=True, slots=True, kw_only=True)
class RunningReplica:
    """A snapshot of one replica an executor runs."""

    replica_id: str
    spec: ReplicaSpec
    launch: LaunchSpec
    state: ReplicaState
    pid: int | None = None  # the local process id (None on Ray or in fakes)
    node: str = "local"
    restarts: int = 0

    @property
    def base_url(self) -> str:
        """``http://host:port`` of the replica's OpenAI-compatible server."""
        return self.launch.base_url

    @property
    def openai_base_url(self) -> str:
        """The ``base_url`` an OpenAI client uses (``.../v1``)."""
        return self.launch.base_url + "/v1"


@runtime_checkable
class Executor(Protocol):
    """Runs engine replicas somewhere (local processes, a Ray cluster, memory)."""

    name: str

    async def start(
        self, spec: ReplicaSpec, *, replica_id: str | None = None, wait_ready: bool = True
    ) -> RunningReplica:
        """Start a replica; with ``wait_ready`` return once its health check answers 200.

        Raises UpstreamError if it exits or does not become ready in its launch's timeout.
        """
        ...

    async def stop(self, replica_id: str, *, grace_s: float = 5.0) -> None:
        """Stop a replica: SIGTERM (or its equivalent), then SIGKILL after ``grace_s``."""
        ...

    async def restart(self, replica_id: str) -> RunningReplica:
        """Stop and start a replica again with the same spec and id."""
        ...

    async def check(self, replica_id: str) -> bool:
        """Whether the replica is alive and its health check answers 200 now."""
        ...

    def replicas(self) -> list[RunningReplica]:
        """Snapshots of the replicas this executor runs (not stopped ones)."""
        ...

    async def shutdown(self) -> None:
        """Stop every replica."""
        ...


EXECUTORS: Registry[Any] = Registry("executor")  # name -> executor class
