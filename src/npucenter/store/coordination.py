"""Coordination of several center processes on one database (the SQL half).

Shared token buckets: each gateway leases a slice of a tenant's bucket (the row is locked,
refilled to now, and the slice taken in one transaction) and gives back what it did not use.
The leading process is the one holding a PostgreSQL session-level advisory lock
(``pg_try_advisory_lock``): it dies with the holder's connection, so a follower takes over as
soon as the leader's process is gone. Documents the leader publishes (the replicas it serves)
are rows the others read. Admission cycles of every process serialise on a transaction-level
advisory lock. On SQLite none of this is needed: one process owns the database
(:mod:`npucenter.live.leader` refuses a second).
"""

from __future__ import annotations

import contextlib
import math
from dataclasses import dataclass
from typing import Any

from sqlalchemy import Connection, select, text
from sqlalchemy.orm import Session

from npucenter.store.db import Database, map_db_errors
from npucenter.store.models import SharedBucket, SharedDocument

__all__ = [
    "LEADER_LOCK_KEY",
    "AdvisoryLock",
    "Lease",
    "cycle_lock",
    "give_back",
    "is_postgres",
    "lease",
    "prune_published",
    "publish",
    "read_published",
    "read_published_prefix",
    "unpublish",
]

#: The advisory lock key of the center's leader (arbitrary, fixed: "npuc" in ASCII).
LEADER_LOCK_KEY = 0x6E707563
#: The transaction-level lock key of admission cycles.
ADMISSION_LOCK_KEY = LEADER_LOCK_KEY + 1


def is_postgres(url: str) -> bool:
    """Whether ``url`` names a PostgreSQL database."""
    return url.startswith(("postgresql", "postgres:"))


@dataclass(frozen=True, slots=True)
class Lease:
    """What one lease call got: ``granted`` tokens (0: refused) and the bucket after it."""

    granted: float
    available: float  # the shared bucket's level before the lease (refilled to now)
    retry_after_s: float  # 0 when granted; when the bucket will hold ``need``; inf: never


def lease(
    db: Database,
    bucket: str,
    *,
    rate_per_s: float,
    burst: float,
    need: float,
    want: float,
    now_s: float,
) -> Lease:
    """Take between ``need`` and ``want`` tokens from the shared ``bucket``, or none.

    The row is created full on first use; its rate and burst follow the caller's (a changed
    limit keeps the debt, not the credit). Atomic across processes (row lock).
    """
    with db.session() as session:
        row = session.execute(
            select(SharedBucket).where(SharedBucket.bucket == bucket).with_for_update()
        ).scalar_one_or_none()
        if row is None:
            row = SharedBucket(
                bucket=bucket, rate_per_s=rate_per_s, burst=burst, level=burst, updated_s=now_s
            )
            session.add(row)
            session.flush()
        elapsed = max(0.0, now_s - row.updated_s)
        level = min(burst, row.level + elapsed * row.rate_per_s)
        row.rate_per_s, row.burst, row.updated_s = rate_per_s, burst, max(now_s, row.updated_s)
        if need <= level:
            granted = min(max(need, want), level)
            row.level = level - granted
            return Lease(granted=granted, available=level, retry_after_s=0.0)
        row.level = level
        never = need > burst or rate_per_s <= 0
        wait = math.inf if never else (need - level) / rate_per_s
        return Lease(granted=0.0, available=level, retry_after_s=wait)


def give_back(db: Database, bucket: str, tokens: float, *, now_s: float) -> None:
    """Return ``tokens`` not used to ``bucket`` (capped at its burst; negative: a debt)."""
    if tokens == 0:
        return
    with db.session() as session:
        row = session.execute(
            select(SharedBucket).where(SharedBucket.bucket == bucket).with_for_update()
        ).scalar_one_or_none()
        if row is None:
            return
        elapsed = max(0.0, now_s - row.updated_s)
        level = min(row.burst, row.level + elapsed * row.rate_per_s)
        row.level = min(row.burst, level + tokens)
        row.updated_s = max(now_s, row.updated_s)


def publish(db: Database, name: str, document: dict[str, Any], *, now_s: float) -> None:
    """Store ``document`` under ``name`` (replacing the last one)."""
    with db.session() as session:
        row = session.get(SharedDocument, name, with_for_update=True)
        if row is None:
            session.add(SharedDocument(name=name, document=document, updated_at_s=now_s))
        else:
            row.document, row.updated_at_s = document, now_s


def unpublish(db: Database, name: str) -> None:
    """Remove the document ``name`` (absent: nothing to do)."""
    with db.session() as session:
        row = session.get(SharedDocument, name)
        if row is not None:
            session.delete(row)


def prune_published(db: Database, prefix: str, *, before_s: float) -> int:
    """Remove the documents under ``prefix`` last published before ``before_s``; how many."""
    with db.session() as session:
        rows = session.scalars(
            select(SharedDocument).where(
                SharedDocument.name.startswith(prefix, autoescape=True),
                SharedDocument.updated_at_s < before_s,
            )
        ).all()
        for row in rows:
            session.delete(row)
        return len(rows)


def read_published(db: Database, name: str) -> tuple[dict[str, Any], float] | None:
    """The document last published under ``name`` and when, or None."""
    with db.session() as session:
        row = session.get(SharedDocument, name)
        return None if row is None else (dict(row.document), row.updated_at_s)


def read_published_prefix(
    db: Database, prefix: str, *, since_s: float
) -> list[tuple[str, dict[str, Any]]]:
    """Every document whose name starts with ``prefix`` published at or after ``since_s``."""
    with db.session() as session:
        rows = session.scalars(
            select(SharedDocument).where(
                SharedDocument.name.startswith(prefix, autoescape=True),
                SharedDocument.updated_at_s >= since_s,
            )
        ).all()
        return [(row.name, dict(row.document)) for row in rows]


def cycle_lock(session: Session) -> None:
    """Serialise admission cycles across processes (PostgreSQL; a no-op elsewhere)."""
    if session.get_bind().dialect.name == "postgresql":
        session.execute(text("SELECT pg_advisory_xact_lock(:k)"), {"k": ADMISSION_LOCK_KEY})


class AdvisoryLock:
    """A session-level advisory lock on its own connection, held until released or the
    connection (the process) dies."""

    def __init__(self, db: Database, key: int = LEADER_LOCK_KEY) -> None:
        self._db = db
        self._key = key
        self._conn: Connection | None = None

    @property
    def held(self) -> bool:
        """Whether this object holds the lock (as far as it knows)."""
        return self._conn is not None

    def try_acquire(self) -> bool:
        """Take the lock if no other session holds it; True when held after the call."""
        if self._conn is not None:
            return True
        with map_db_errors():
            conn = self._db.engine.connect().execution_options(isolation_level="AUTOCOMMIT")
            try:
                got = bool(
                    conn.execute(text("SELECT pg_try_advisory_lock(:k)"), {"k": self._key}).scalar()
                )
            except BaseException:
                conn.close()
                raise
        if not got:
            conn.close()
            return False
        self._conn = conn
        return True

    def still_held(self) -> bool:
        """Check the holding connection still answers (False, and released, when it does not)."""
        if self._conn is None:
            return False
        try:
            with map_db_errors():
                self._conn.execute(text("SELECT 1"))
        except Exception:
            self._drop()
            return False
        return True

    def release(self) -> None:
        """Unlock and close the connection (a no-op when not held)."""
        if self._conn is None:
            return
        try:
            with map_db_errors():
                self._conn.execute(text("SELECT pg_advisory_unlock(:k)"), {"k": self._key})
        except Exception:  # the connection is gone: so is the lock
            pass
        self._drop()

    def _drop(self) -> None:
        conn, self._conn = self._conn, None
        if conn is not None:
            with contextlib.suppress(Exception):  # already broken
                conn.close()
