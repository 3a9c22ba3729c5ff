"""Engines, sessions and the mapping of SQLAlchemy errors to npucenter errors.

Owns the one I/O seam to the database. SQLite gets foreign keys and a busy timeout; PostgreSQL
goes through psycopg 3. ``map_db_errors`` is the only place that catches sqlalchemy exceptions.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from sqlalchemy import Engine, create_engine, event
from sqlalchemy import exc as sa_exc
from sqlalchemy.orm import Session, sessionmaker
from sqlalchemy.orm import exc as orm_exc

from npucenter.errors import ConflictError, NpuCenterError, UpstreamError

__all__ = ["Database", "DatabaseLibraryError", "make_engine", "map_db_errors"]

log = logging.getLogger(__name__)

# The database library's base exception, for the HTTP edge's last-resort handler (so that no
# module outside the store imports sqlalchemy).
DatabaseLibraryError = sa_exc.SQLAlchemyError


def make_engine(url: str, **kwargs: Any) -> Engine:
    """An Engine for ``url``; SQLite enforces foreign keys and waits on locks."""
    if url.startswith("sqlite"):
        kwargs.setdefault("connect_args", {"check_same_thread": False, "timeout": 30})
        engine = create_engine(url, **kwargs)

        @event.listens_for(engine, "connect")
        def _sqlite_pragmas(dbapi_conn: Any, _record: Any) -> None:
            cur = dbapi_conn.cursor()
            cur.execute("PRAGMA foreign_keys=ON")
            cur.close()

        return engine
    kwargs.setdefault("pool_pre_ping", True)
    return create_engine(url, **kwargs)


class Database:
    """An engine plus a session factory; ``session()`` commits on success, rolls back on error."""

    def __init__(self, url: str, *, engine: Engine | None = None) -> None:
        self.url = url
        self.engine = engine or make_engine(url)
        self._sessions = sessionmaker(self.engine, expire_on_commit=False)
        # Verified API keys of this database (a keyed fingerprint -> key id), see store.keys.
        from npucenter.store.keys import KeyMemo

        self.key_memo = KeyMemo()

    @contextmanager
    def session(self) -> Iterator[Session]:
        """A transaction: commit when the block ends, roll back (and map the error) when it raises."""
        with map_db_errors(), self._sessions() as session:
            session.info["key_memo"] = self.key_memo
            try:
                yield session
                session.commit()
            except BaseException:
                session.rollback()
                raise

    def revision(self) -> str | None:
        """The schema revision the database is at (None before the first migration)."""
        from alembic.runtime.migration import MigrationContext

        with map_db_errors(), self.engine.connect() as conn:
            return MigrationContext.configure(conn).get_current_revision()

    def dispose(self) -> None:
        """Close every pooled connection."""
        self.engine.dispose()


@contextmanager
def map_db_errors() -> Iterator[None]:
    """Map SQLAlchemy exceptions to npucenter errors (most specific first), chaining the cause."""
    try:
        yield
    except NpuCenterError:
        raise
    except orm_exc.StaleDataError as exc:
        raise ConflictError(
            "the object changed while this request was being handled",
            hint="read it again and retry",
            details={"reason": "concurrent_update"},
        ) from exc
    except sa_exc.IntegrityError as exc:
        raise ConflictError(
            "the change conflicts with stored data (duplicate name or a reference in use)",
            hint="choose another name, or remove what refers to it first",
            details={"constraint": _constraint_of(exc)},
        ) from exc
    except (sa_exc.OperationalError, sa_exc.InterfaceError) as exc:
        log.warning("database unavailable: %s", exc)
        raise UpstreamError(
            "the database is unavailable",
            hint="check NPUCENTER_DATABASE_URL and that the server is up",
            details={"backend": "database"},
        ) from exc
    except sa_exc.SQLAlchemyError as exc:
        log.exception("database error")
        raise UpstreamError(
            "the database failed", details={"backend": "database", "error": type(exc).__name__}
        ) from exc


def _constraint_of(exc: sa_exc.IntegrityError) -> str:
    diag = getattr(exc.orig, "diag", None)
    name = getattr(diag, "constraint_name", None)
    return str(name) if name else str(exc.orig).splitlines()[0][:200]
