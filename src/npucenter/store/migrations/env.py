"""Alembic environment: run migrations online against the configured URL."""

from __future__ import annotations

from alembic import context

from npucenter.store.db import make_engine
from npucenter.store.models import Base

config = context.config
target_metadata = Base.metadata


def run_migrations_online() -> None:
    """Connect to the configured URL and run the migrations in one transaction."""
    connection = config.attributes.get("connection")
    if connection is not None:
        context.configure(connection=connection, target_metadata=target_metadata)
        with context.begin_transaction():
            context.run_migrations()
        return
    engine = make_engine(config.get_main_option("sqlalchemy.url") or "")
    try:
        with engine.connect() as conn:
            context.configure(
                connection=conn,
                target_metadata=target_metadata,
                render_as_batch=conn.dialect.name == "sqlite",
            )
            with context.begin_transaction():
                context.run_migrations()
    finally:
        engine.dispose()


if context.is_offline_mode():
    raise SystemExit("offline (SQL script) migrations are not supported; give a database URL")
run_migrations_online()
