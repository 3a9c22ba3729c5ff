"""An in-memory executor for tests: nothing is started, every call is recorded."""

from __future__ import annotations

import itertools
from dataclasses import replace

from npucenter.engines import ENGINES, ReplicaSpec
from npucenter.errors import NotFoundError, UpstreamError
from npucenter.executors.base import EXECUTORS, ReplicaState, RunningReplica

__all__ = ["FakeExecutor"]


class FakeExecutor:
    """Pretends to run replicas on ports 20000, 20001, ...; ``fail`` makes one unhealthy.

    ``calls`` records ``("start"|"stop"|"restart", replica_id)`` in order; ``fail_starts``
    makes the next that many ``start`` calls raise :class:`UpstreamError`.
    """

    name = "fake"

    def __init__(self, *, host: str = "127.0.0.1", first_port: int = 20000) -> None:
        self.host = host
        self._ports = itertools.count(first_port)
        self._ids = itertools.count(1)
        self._replicas: dict[str, RunningReplica] = {}
        self.calls: list[tuple[str, str]] = []
        self.fail_starts = 0

    async def start(
        self, spec: ReplicaSpec, *, replica_id: str | None = None, wait_ready: bool = True
    ) -> RunningReplica:
        """Record a start and return a READY replica (or raise if ``fail_starts`` > 0)."""
        rid = replica_id or f"{spec.engine}-{next(self._ids)}"
        self.calls.append(("start", rid))
        if self.fail_starts > 0:
            self.fail_starts -= 1
            raise UpstreamError(f"replica {rid!r} failed to start (fake)")
        launch = ENGINES.get(spec.engine).launch_spec(spec, host=self.host, port=next(self._ports))
        state = ReplicaState.READY if wait_ready else ReplicaState.STARTING
        previous = self._replicas.get(rid)
        replica = RunningReplica(
            replica_id=rid,
            spec=spec,
            launch=launch,
            state=state,
            node="fake",
            restarts=previous.restarts if previous else 0,
        )
        self._replicas[rid] = replica
        return replica

    async def stop(self, replica_id: str, *, grace_s: float = 5.0) -> None:
        """Mark the replica STOPPED."""
        self.calls.append(("stop", replica_id))
        self._replicas[replica_id] = replace(self._get(replica_id), state=ReplicaState.STOPPED)

    async def restart(self, replica_id: str) -> RunningReplica:
        """Start it again READY, restarts + 1."""
        old = self._get(replica_id)
        self.calls.append(("restart", replica_id))
        replica = await self.start(old.spec, replica_id=replica_id)
        replica = replace(replica, restarts=old.restarts + 1)
        self._replicas[replica_id] = replica
        return replica

    async def check(self, replica_id: str) -> bool:
        """True while the replica is READY."""
        return self._get(replica_id).state == ReplicaState.READY

    def replicas(self) -> list[RunningReplica]:
        """Replicas not stopped."""
        return [r for r in self._replicas.values() if r.state != ReplicaState.STOPPED]

    async def shutdown(self) -> None:
        """Stop everything."""
        for rid in [r.replica_id for r in self.replicas()]:
            await self.stop(rid)

    def fail(self, replica_id: str) -> None:
        """Make a replica FAILED (its health check now answers False)."""
        self._replicas[replica_id] = replace(self._get(replica_id), state=ReplicaState.FAILED)

    def _get(self, replica_id: str) -> RunningReplica:
        try:
            return self._replicas[replica_id]
        except KeyError:
            raise NotFoundError("replica", replica_id, valid=list(self._replicas)) from None


EXECUTORS.add("fake", FakeExecutor)
