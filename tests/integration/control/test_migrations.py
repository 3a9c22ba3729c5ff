"""Alembic meta-tests: one head; upgrade -> downgrade -> upgrade; migrations match the models."""

from __future__ import annotations

from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from sqlalchemy import inspect

from npucenter.settings import normalize_database_url
from npucenter.store import current_revision, downgrade, heads, make_engine, upgrade
from npucenter.store.models import Base


def _tables(url: str) -> set[str]:
    engine = make_engine(normalize_database_url(url))
    try:
        return set(inspect(engine).get_table_names()) - {"alembic_version"}
    finally:
        engine.dispose()


def test_one_head():
    assert len(heads()) == 1


def test_upgrade_downgrade_upgrade(empty_database_url):
    database_url = empty_database_url
    assert current_revision(database_url) is None
    head = heads()[0]
    assert upgrade(database_url) == head
    assert _tables(database_url) == set(Base.metadata.tables)
    assert downgrade(database_url, "base") is None
    assert _tables(database_url) == set()
    assert upgrade(database_url) == head
    assert upgrade(database_url) == head  # idempotent
    assert _tables(database_url) == set(Base.metadata.tables)


def test_migrations_match_the_models(database_url):
    assert current_revision(database_url) == heads()[0]
    engine = make_engine(normalize_database_url(database_url))
    try:
        with engine.connect() as conn:
            diff = compare_metadata(MigrationContext.configure(conn), Base.metadata)
    finally:
        engine.dispose()
    assert diff == []
