"""Alembic migrations run programmatically from the installed package (no alembic.ini).

``upgrade(url)`` brings a database to the newest schema; the server calls it at start and
``npucenter db upgrade`` calls it on demand.
"""

from __future__ import annotations

from pathlib import Path

from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory

from npucenter.settings import normalize_database_url
from npucenter.store.db import make_engine, map_db_errors

__all__ = ["MIGRATIONS_DIR", "alembic_config", "current_revision", "downgrade", "heads", "upgrade"]

MIGRATIONS_DIR = Path(__file__).parent / "migrations"


def alembic_config(url: str) -> Config:
    """An Alembic Config pointing at the packaged migrations and ``url``."""
    cfg = Config()
    cfg.set_main_option("script_location", str(MIGRATIONS_DIR))
    # ConfigParser interpolation: a literal % in a password must be doubled.
    cfg.set_main_option("sqlalchemy.url", normalize_database_url(url).replace("%", "%%"))
    return cfg


def upgrade(url: str, revision: str = "head") -> str | None:
    """Apply migrations up to ``revision``; return the revision the database is at."""
    with map_db_errors():
        command.upgrade(alembic_config(url), revision)
    return current_revision(url)


def downgrade(url: str, revision: str) -> str | None:
    """Revert migrations down to ``revision`` (``"base"`` removes every table)."""
    with map_db_errors():
        command.downgrade(alembic_config(url), revision)
    return current_revision(url)


def current_revision(url: str) -> str | None:
    """The revision the database is at (None when it has never been migrated)."""
    engine = make_engine(normalize_database_url(url))
    try:
        with map_db_errors(), engine.connect() as conn:
            return MigrationContext.configure(conn).get_current_revision()
    finally:
        engine.dispose()


def heads() -> list[str]:
    """The head revisions of the packaged migrations (exactly one when the history is sound)."""
    return list(ScriptDirectory.from_config(alembic_config("sqlite://")).get_heads())
