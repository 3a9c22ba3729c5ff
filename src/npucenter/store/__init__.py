"""The control-plane store: SQLAlchemy 2 models, Alembic migrations and the repository.

SQLite in the user data directory by default, PostgreSQL by URL. Only this package (and the
api/ composition root through it) talks to the database.
"""

from npucenter.store.db import Database, make_engine, map_db_errors
from npucenter.store.migrate import current_revision, downgrade, heads, upgrade

__all__ = [
    "Database",
    "current_revision",
    "downgrade",
    "heads",
    "make_engine",
    "map_db_errors",
    "upgrade",
]
