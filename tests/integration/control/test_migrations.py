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


def test_keys_made_before_0004_keep_working_and_lose_their_clear_prefix(empty_database_url):
    import hashlib

    from sqlalchemy import text

    from npucenter.store import Database
    from npucenter.store.repository import Repository

    url = empty_database_url
    upgrade(url, "0003")
    old_tenant_key = "npc_" + "T" * 43
    old_admin_key = "operator-admin-key-0123"
    engine = make_engine(normalize_database_url(url))
    with engine.begin() as conn:
        conn.execute(
            text(
                "INSERT INTO tenants (id, name, kind, created_at_s) VALUES (1, 'acme', 'company', 1)"
            )
        )
        for i, (secret, scope, tenant) in enumerate(
            [(old_tenant_key, "tenant", 1), (old_admin_key, "admin", None)], start=1
        ):
            conn.execute(
                text(
                    "INSERT INTO api_keys (id, prefix, secret_sha256, tenant_id, scope, name,"
                    " created_at_s) VALUES (:id, :p, :h, :t, :s, '', 1)"
                ),
                {"id": i, "p": secret[:12], "h": hashlib.sha256(secret.encode()).hexdigest(),
                 "t": tenant, "s": scope},
            )  # fmt: skip
    engine.dispose()
    assert upgrade(url) == heads()[0]
    db = Database(normalize_database_url(url))
    try:
        with db.session() as s:
            repo = Repository(s, lambda: 2.0)
            assert repo.lookup_key(old_tenant_key).tenant == "acme"
            assert repo.lookup_key(old_admin_key).is_admin
            dump = str(s.execute(text("SELECT * FROM api_keys")).all())
        assert (
            old_admin_key[:12] not in dump
            and hashlib.sha256(old_admin_key.encode()).hexdigest() not in dump
        )
    finally:
        db.dispose()
