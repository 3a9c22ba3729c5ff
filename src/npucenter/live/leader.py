"""Several center processes on one database: one leader, the others serve.

``npucenter up`` may run as many processes as wanted on one PostgreSQL behind a load balancer.
Each serves the API and the gateway; exactly one, the *leader*, registers the fleet, runs the
deployment reconciler (it starts the engines) and the job runner. The leader is the process
holding the PostgreSQL advisory lock (:class:`npucenter.store.coordination.AdvisoryLock`);
the others try again every ``interval_s`` and take over when the leader's connection is gone
(the process died). A leader that loses its lock stops its engines and waits to lead again.

The others learn the replicas to send requests to from the leader: it publishes its pool (each
replica's endpoint, the aliases, the models still starting) in the store whenever it changes;
followers read it every ``interval_s``. Every gateway publishes its load (queues, running
requests, latency histograms; ``load/<host>-<pid>``) every ``interval_s`` for the leader's
autoscaler. Tenants' token and request buckets are shared through
leases (:mod:`npucenter.gateway.lease`) on the same database.

On SQLite one process owns the database: :func:`hold_center_lock` refuses a second one.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import fcntl
import logging
import os
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any, TextIO

from npucenter.errors import ConflictError
from npucenter.gateway.lease import LeaseGrant
from npucenter.gateway.pool import ReplicaEndpoint
from npucenter.live.load import gateway_load, load_row_name
from npucenter.settings import Settings
from npucenter.store import coordination
from npucenter.store.db import Database

__all__ = [
    "DatabaseBuckets",
    "Leadership",
    "WallClock",
    "hold_center_lock",
    "share_replicas",
]

log = logging.getLogger(__name__)

#: The name of the leader's published pool in the store.
POOL_DOCUMENT = "gateway-pool"


def hold_center_lock(settings: Settings) -> TextIO | None:
    """On SQLite, lock the database for this process (keep the returned file open), or raise.

    Raises:
        ConflictError: another `npucenter up` already serves this SQLite database.
    """
    if not settings.is_sqlite:
        return None
    path = settings.database_url.split(":///", 1)[-1]
    if not path or path == ":memory:" or settings.database_url in ("sqlite://", "sqlite:///"):
        return None
    lock_path = Path(path).with_name(Path(path).name + ".center-lock")
    lock_path.parent.mkdir(parents=True, exist_ok=True)
    handle = lock_path.open("a+")
    try:
        fcntl.flock(handle.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:
        handle.seek(0)
        holder = handle.read().strip() or "another process"
        handle.close()
        raise ConflictError(
            f"another npucenter serves the SQLite database {path} (pid {holder})",
            hint="stop it first, or run several processes on PostgreSQL "
            "(NPUCENTER_DATABASE_URL=postgresql+psycopg://...)",
            details={"database": path, "lock": str(lock_path)},
        ) from None
    handle.seek(0)
    handle.truncate()
    handle.write(str(os.getpid()))
    handle.flush()
    return handle


class Leadership:
    """Whether this process leads the center (always, unless the database is shared)."""

    def __init__(self, db: Database, *, interval_s: float = 1.0) -> None:
        self.db = db
        self.interval_s = interval_s
        self.shared = coordination.is_postgres(db.url)
        self._lock = coordination.AdvisoryLock(db) if self.shared else None

    @property
    def is_leader(self) -> bool:
        """Whether this process leads now."""
        return self._lock is None or self._lock.held

    async def until_leader(self) -> None:
        """Return once this process leads (at once on SQLite)."""
        lock = self._lock
        if lock is None:
            return
        announced = False
        while True:
            try:
                if await asyncio.to_thread(lock.try_acquire):
                    log.warning("this process leads the center (reconcile, admission, jobs)")
                    return
            except Exception as exc:  # the database is down: keep trying
                log.warning("leader election: %s", exc)
            if not announced:
                log.warning("another process leads the center: this one serves and follows")
                announced = True
            await asyncio.sleep(self.interval_s)

    async def until_lost(self) -> None:
        """Return when this process stops leading (its lock's connection failed)."""
        lock = self._lock
        if lock is None:
            await asyncio.Event().wait()  # never
            return
        while await asyncio.to_thread(lock.still_held):
            await asyncio.sleep(self.interval_s)
        log.error("this process lost the center's leadership (database connection lost)")

    def release(self) -> None:
        """Let another process lead (at shutdown)."""
        if self._lock is not None:
            self._lock.release()


class WallClock:
    """Epoch seconds: the one clock several processes' shared buckets agree on."""

    def now_s(self) -> float:
        return time.time()


class DatabaseBuckets:
    """The shared buckets of :class:`~npucenter.gateway.lease.LeaseBook`, in the store."""

    def __init__(self, db: Database) -> None:
        self._db = db

    def lease(
        self, bucket: str, *, rate_per_s: float, burst: float, need: float, want: float,
        now_s: float,
    ) -> LeaseGrant:  # fmt: skip
        got = coordination.lease(
            self._db, bucket, rate_per_s=rate_per_s, burst=burst, need=need, want=want,
            now_s=now_s,
        )  # fmt: skip
        return LeaseGrant(
            granted=got.granted, available=got.available, retry_after_s=got.retry_after_s
        )

    def give_back(self, bucket: str, tokens: float, *, now_s: float) -> None:
        coordination.give_back(self._db, bucket, tokens, now_s=now_s)


def pool_document(gateway: Any) -> dict[str, Any]:
    """What the leader's gateway serves: endpoints (no secrets), aliases, models starting."""
    endpoints = []
    for replica in gateway.pool.replicas():
        fields = dataclasses.asdict(replica.endpoint)
        fields.pop("api_key", None)  # an external server's key stays with the leader
        endpoints.append(fields)
    return {
        "endpoints": sorted(endpoints, key=lambda e: e["replica_id"]),
        "aliases": dict(sorted(gateway.pool.aliases().items())),
        # a follower answers 503 + Retry-After (not 404) for a model scaled to zero
        "expected_models": sorted(
            gateway.expected_models | getattr(gateway, "standby_models", set())
        ),
        "replica_servers": dict(sorted(getattr(gateway, "replica_servers", {}).items())),
        "standby_models": sorted(getattr(gateway, "standby_models", set())),
        # replicas being scaled down: followers route them nothing new either
        "draining": sorted(getattr(getattr(gateway, "reconciler", None), "draining", None) or ()),
    }


def apply_pool_document(gateway: Any, document: dict[str, Any]) -> None:
    """Serve what the leader published (a follower's pool)."""
    gateway.pool.set(ReplicaEndpoint(**e) for e in document.get("endpoints", []))
    gateway.pool.set_aliases(document.get("aliases", {}))
    gateway.expected_models = set(document.get("expected_models", []))
    gateway.replica_servers = dict(document.get("replica_servers", {}))
    gateway.standby_models = set(document.get("standby_models", []))
    draining = set(document.get("draining", []))
    for replica in gateway.pool.replicas():  # drained, or served again (scaled back up)
        if replica.replica_id in draining:
            gateway.pool.drain(replica.replica_id)
        else:
            gateway.pool.undrain(replica.replica_id)


@contextlib.asynccontextmanager
async def share_replicas(
    gateway: Any, leadership: Leadership, *, interval_s: float = 1.0, now_s: Any = None
) -> AsyncIterator[None]:
    """While the app serves: the leader publishes its pool, followers serve what it published;
    every gateway gives back the bucket slices it has not used for a second."""
    clock = now_s or time.time
    db = leadership.db
    row = load_row_name()

    async def loop() -> None:
        last: dict[str, Any] | None = None
        seen_s = -1.0
        while True:
            try:
                if leadership.is_leader:
                    doc = pool_document(gateway)
                    if doc != last:
                        await asyncio.to_thread(
                            coordination.publish, db, POOL_DOCUMENT, doc, now_s=clock()
                        )
                        last = doc
                else:
                    last = None
                    got = await asyncio.to_thread(coordination.read_published, db, POOL_DOCUMENT)
                    if got is not None and got[1] != seen_s:
                        apply_pool_document(gateway, got[0])
                        seen_s = got[1]
                # this gateway's queues, running requests and latency: the leader's autoscaler
                # adds every gateway's row (its own is read in process)
                load = gateway_load(gateway)
                await asyncio.to_thread(coordination.publish, db, row, load, now_s=clock())
                leases = gateway.budgets.leases
                if leases is not None:
                    for key, tokens in leases.collect_idle(1.0):
                        await asyncio.to_thread(
                            leases.shared.give_back, key, tokens, now_s=time.time()
                        )
            except Exception as exc:  # the database is down: serve what we have
                log.warning("sharing the gateway pool: %s", exc)
            await asyncio.sleep(interval_s)

    if not leadership.shared:
        yield
        return
    task = asyncio.create_task(loop(), name="share-replicas")
    try:
        yield
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
        with contextlib.suppress(Exception):  # this gateway's load row goes with it
            await asyncio.to_thread(coordination.unpublish, db, row)
        leases = gateway.budgets.leases
        if leases is not None:
            with contextlib.suppress(Exception):
                leases.give_back_all()
