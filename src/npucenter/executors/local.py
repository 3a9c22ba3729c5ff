"""Replicas as local subprocesses on free ports, with no orphans left behind.

NOTE(executors): three guards keep children from outliving the executor. (1) ``stop`` and
``shutdown`` send SIGTERM to the child's process group, then SIGKILL after a grace period.
(2) An ``atexit`` hook does the same for every live child when the interpreter exits, Ctrl-C
included. (3) On Linux each child asks the kernel for SIGTERM when its parent dies
(``PR_SET_PDEATHSIG``), so even a SIGKILLed parent leaves no orphan; the virtual engine also
watches ``NPUCENTER_PARENT_PID`` itself (macOS has no PDEATHSIG). PDEATHSIG fires when the
*thread* that spawned the child exits: spawn from a thread that lives as long as the replicas.
"""

from __future__ import annotations

import asyncio
import atexit
import itertools
import logging
import os
import socket
import subprocess
import tempfile
import time
import weakref
from dataclasses import dataclass, replace
from pathlib import Path

import httpx

from npucenter.engines import ENGINES, PARENT_PID_ENV, LaunchSpec, ReplicaSpec
from npucenter.errors import NotFoundError, NpuCenterError, UpstreamError
from npucenter.executors.base import EXECUTORS, ReplicaState, RunningReplica
from npucenter.executors.procs import kill_now, spawn_group
from npucenter.executors.procs import terminate as _terminate
from npucenter.settings import environ

__all__ = ["LocalProcessExecutor", "free_port", "healthy"]

log = logging.getLogger(__name__)

_LIVE_EXECUTORS: weakref.WeakSet[LocalProcessExecutor] = weakref.WeakSet()


def free_port(host: str = "127.0.0.1") -> int:
    """A TCP port free on ``host`` right now (the OS picks it)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((host, 0))
        return int(s.getsockname()[1])


@dataclass(slots=True)
class _Record:
    replica: RunningReplica
    proc: subprocess.Popen[bytes] | None
    log_path: Path
    failed_restarts: int = 0  # consecutive restarts that failed (backoff)
    retry_at_s: float = 0.0  # monotonic time before which restart_failed leaves it alone


class LocalProcessExecutor:
    """Runs each replica as a child process of this one (the embedded default).

    Args:
        host: the interface replicas listen on (loopback by default).
        log_dir: where each replica's stdout/stderr go (default: a temporary directory).
        poll_interval_s: how often readiness is polled.
        ready_timeout_s: overrides the engines' own start-up timeouts when set.
    """

    name = "local"

    def __init__(
        self,
        *,
        host: str = "127.0.0.1",
        log_dir: str | Path | None = None,
        poll_interval_s: float = 0.05,
        ready_timeout_s: float | None = None,
    ) -> None:
        self.host = host
        self.poll_interval_s = poll_interval_s
        self.ready_timeout_s = ready_timeout_s
        self._tmp: tempfile.TemporaryDirectory[str] | None = None
        if log_dir is None:
            self._tmp = tempfile.TemporaryDirectory(prefix="npucenter-replicas-")
            log_dir = self._tmp.name
        self.log_dir = Path(log_dir)
        self.log_dir.mkdir(parents=True, exist_ok=True)
        self._records: dict[str, _Record] = {}
        self._ids = itertools.count(1)
        _LIVE_EXECUTORS.add(self)

    # --- the Executor protocol ----------------------------------------------------------------
    async def start(
        self, spec: ReplicaSpec, *, replica_id: str | None = None, wait_ready: bool = True
    ) -> RunningReplica:
        """Start ``spec`` on a free port; see :class:`~npucenter.executors.base.Executor`."""
        rid = replica_id or f"{spec.engine}-{next(self._ids)}"
        if rid in self._records and self._records[rid].replica.state != ReplicaState.STOPPED:
            raise UpstreamError(f"replica {rid!r} is already running", hint="stop it first")
        engine = ENGINES.get(spec.engine)
        for _attempt in range(3):
            launch = engine.launch_spec(spec, host=self.host, port=free_port(self.host))
            if self.ready_timeout_s is not None:
                launch = replace(launch, ready_timeout_s=self.ready_timeout_s)
            record = self._spawn(rid, spec, launch)
            if not wait_ready:
                return record.replica
            try:
                return await self._wait_ready(record)
            except _PortTaken:
                log.info("port %d was taken before replica %s bound it; retrying", launch.port, rid)
            except BaseException:
                # a start either returns a replica or raises and leaves nothing behind
                if record.proc is not None:
                    await _terminate(record.proc, 1.0)
                self._records.pop(rid, None)
                raise
        self._records.pop(rid, None)
        raise UpstreamError(f"replica {rid!r} found no free port")

    async def stop(self, replica_id: str, *, grace_s: float = 5.0) -> None:
        """SIGTERM the replica's process group, SIGKILL after ``grace_s``."""
        record = self._record(replica_id)
        if record.proc is not None:
            await _terminate(record.proc, grace_s)
        record.replica = replace(record.replica, state=ReplicaState.STOPPED)

    async def restart(self, replica_id: str) -> RunningReplica:
        """Stop, then start again with the same spec and id (restarts + 1)."""
        record = self._record(replica_id)
        restarts = record.replica.restarts + 1
        await self.stop(replica_id)
        try:
            replica = await self.start(record.replica.spec, replica_id=replica_id)
        except NpuCenterError:
            # keep it as FAILED and back off: 2, 4, 8 ... 60 s before restart_failed retries
            record.failed_restarts += 1
            record.retry_at_s = time.monotonic() + min(60.0, 2.0**record.failed_restarts)
            record.replica = replace(record.replica, state=ReplicaState.FAILED)
            self._records[replica_id] = record
            raise
        new = self._records[replica_id]
        new.replica = replace(replica, restarts=restarts)
        return new.replica

    async def check(self, replica_id: str) -> bool:
        """Alive and ``GET health`` answers 200; marks the replica FAILED otherwise."""
        record = self._record(replica_id)
        if record.replica.state == ReplicaState.STOPPED:
            return False
        ok = record.proc is not None and record.proc.poll() is None
        if ok:
            async with httpx.AsyncClient(timeout=2.0) as client:
                ok = await healthy(client, record.replica.launch.health_url)
        state = ReplicaState.READY if ok else ReplicaState.FAILED
        record.replica = replace(record.replica, state=state)
        return ok

    def replicas(self) -> list[RunningReplica]:
        """Snapshots of replicas not stopped."""
        return [
            r.replica for r in self._records.values() if r.replica.state != ReplicaState.STOPPED
        ]

    async def shutdown(self) -> None:
        """Stop every replica (in parallel) and remove the temporary log directory."""
        await asyncio.gather(
            *(self.stop(rid) for rid, r in self._records.items() if r.proc is not None)
        )
        if self._tmp is not None:
            self._tmp.cleanup()
            self._tmp = None

    # --- more than the protocol ---------------------------------------------------------------
    async def restart_failed(self) -> list[str]:
        """Restart every replica whose process has exited; returns the ids restarted.

        A replica whose restart fails is logged, kept FAILED and retried by later calls after
        an exponential backoff (2 s doubling to 60 s); the others are restarted regardless.
        """
        now = time.monotonic()
        dead = [
            rid
            for rid, r in self._records.items()
            if r.replica.state in (ReplicaState.READY, ReplicaState.FAILED)
            and r.proc is not None
            and r.proc.poll() is not None
            and r.retry_at_s <= now
        ]
        restarted = []
        for rid in dead:
            try:
                await self.restart(rid)
            except NpuCenterError as exc:
                log.warning("replica %s did not restart: %s", rid, exc)
                continue
            restarted.append(rid)
        return restarted

    def log_tail(self, replica_id: str, num_lines: int = 20) -> str:
        """The last lines the replica wrote to stdout/stderr."""
        path = self._record(replica_id).log_path
        try:
            lines = path.read_text(errors="replace").splitlines()
        except OSError:
            return ""
        return "\n".join(lines[-num_lines:])

    def kill_all_now(self) -> None:
        """Synchronously SIGTERM, then SIGKILL, every live child (the ``atexit`` hook)."""
        kill_now(r.proc for r in self._records.values() if r.proc is not None)

    # --- helpers ------------------------------------------------------------------------------
    def _record(self, replica_id: str) -> _Record:
        try:
            return self._records[replica_id]
        except KeyError:
            raise NotFoundError("replica", replica_id, valid=list(self._records)) from None

    def _spawn(self, rid: str, spec: ReplicaSpec, launch: LaunchSpec) -> _Record:
        env = {**environ(), **launch.env_dict(), PARENT_PID_ENV: str(os.getpid())}
        log_path = self.log_dir / f"{rid}.log"
        with open(log_path, "ab") as out:
            try:
                proc = spawn_group(launch.argv, env=env, out=out)
            except OSError as exc:
                raise UpstreamError(
                    f"cannot start replica {rid!r}: {exc}",
                    hint=f"is {launch.argv[0]!r} installed and on PATH?",
                    details={"argv": list(launch.argv)},
                ) from exc
        replica = RunningReplica(
            replica_id=rid, spec=spec, launch=launch, state=ReplicaState.STARTING, pid=proc.pid
        )
        record = _Record(replica=replica, proc=proc, log_path=log_path)
        self._records[rid] = record
        log.info("started replica %s (pid %d): %s", rid, proc.pid, launch.shell())
        return record

    async def _wait_ready(self, record: _Record) -> RunningReplica:
        launch = record.replica.launch
        assert record.proc is not None
        deadline = time.monotonic() + launch.ready_timeout_s
        async with httpx.AsyncClient(timeout=1.0) as client:
            while True:
                code = record.proc.poll()
                if code is not None:
                    record.replica = replace(record.replica, state=ReplicaState.FAILED)
                    tail = self.log_tail(record.replica.replica_id)
                    if "address already in use" in tail.lower():
                        raise _PortTaken
                    raise UpstreamError(
                        f"replica {record.replica.replica_id!r} exited with code {code} before "
                        f"it was ready: {_last_line(tail)}",
                        hint=f"see {record.log_path}",
                        details={"exit_code": code, "log_tail": tail},
                    )
                if await healthy(client, launch.health_url):
                    record.replica = replace(record.replica, state=ReplicaState.READY)
                    return record.replica
                if time.monotonic() > deadline:
                    await _terminate(record.proc, 2.0)
                    record.replica = replace(record.replica, state=ReplicaState.FAILED)
                    raise UpstreamError(
                        f"replica {record.replica.replica_id!r} was not ready within "
                        f"{launch.ready_timeout_s:g} s",
                        hint=f"see {record.log_path}",
                        details={"timeout_s": launch.ready_timeout_s},
                    )
                await asyncio.sleep(self.poll_interval_s)


EXECUTORS.add("local", LocalProcessExecutor)


class _PortTaken(Exception):
    pass


def _last_line(text: str) -> str:
    lines = [ln for ln in text.splitlines() if ln.strip()]
    return lines[-1] if lines else "(no output)"


async def healthy(client: httpx.AsyncClient, url: str) -> bool:
    """Whether ``GET url`` answers 200 (connection errors count as no)."""
    try:
        response = await client.get(url)
    except httpx.HTTPError:
        return False
    return response.status_code == 200


@atexit.register
def _kill_children_at_exit() -> None:
    for executor in list(_LIVE_EXECUTORS):
        executor.kill_all_now()
