"""Fixtures of the control-plane tests: a fresh database on SQLite and on PostgreSQL, the app, clients.

PostgreSQL runs when NPUCENTER_TEST_POSTGRES_URL names a server (``make test`` starts one with
scripts/pg-test-server.sh); each test gets its own database, dropped afterwards.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Callable, Iterator

import pytest
from fastapi.testclient import TestClient

from npucenter.api import create_app
from npucenter.clock import FakeClock
from npucenter.settings import Settings

ADMIN_KEY = "npc_test_admin_key_0123456789"
T0_S = 1_700_000_000.0


def _pg_database(base_url: str) -> Iterator[str]:
    import psycopg

    name = f"npc_test_{uuid.uuid4().hex[:12]}"
    with psycopg.connect(base_url, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    try:
        yield base_url.rsplit("/", 1)[0] + "/" + name
    finally:
        with psycopg.connect(base_url, autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@pytest.fixture(params=["sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)])
def database_url(request: pytest.FixtureRequest, tmp_path) -> Iterator[str]:
    """A fresh, empty database: SQLite in tmp_path, or a new database on the test PostgreSQL."""
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path / 'npucenter.db'}"
        return
    base = os.environ.get("NPUCENTER_TEST_POSTGRES_URL")
    if not base:
        pytest.skip("NPUCENTER_TEST_POSTGRES_URL is not set (make test starts a server)")
    yield from _pg_database(base)


@pytest.fixture
def admin_key() -> str:
    """The admin key the app was created with."""
    return ADMIN_KEY


@pytest.fixture
def clock() -> FakeClock:
    """Epoch-seconds clock the app reads; tests advance it."""
    return FakeClock(T0_S)


@pytest.fixture
def app(database_url: str, tmp_path, clock: FakeClock):
    """The control-plane app on the fresh database, admin key ADMIN_KEY."""
    settings = Settings(data_dir=tmp_path, database_url=database_url, admin_key=ADMIN_KEY)
    app = create_app(settings, now_s=clock.now_s)
    yield app
    app.state.control.db.dispose()


@pytest.fixture
def admin(app) -> Iterator[TestClient]:
    """A client with the admin key."""
    with TestClient(app, headers={"Authorization": f"Bearer {ADMIN_KEY}"}) as client:
        yield client


@pytest.fixture
def anonymous(app) -> Iterator[TestClient]:
    """A client with no key."""
    with TestClient(app) as client:
        yield client


@pytest.fixture
def tenant_client(app, admin: TestClient) -> Iterator[Callable[[str, str], TestClient]]:
    """``tenant_client(name, kind)`` creates a tenant and returns a client with its new key."""
    clients: list[TestClient] = []

    def make(name: str, kind: str = "university") -> TestClient:
        assert admin.post("/api/tenants", json={"name": name, "kind": kind}).status_code == 201
        key = admin.post("/api/keys", json={"tenant": name}).json()["key"]
        client = TestClient(app, headers={"Authorization": f"Bearer {key}"})
        clients.append(client)
        return client

    yield make
    for client in clients:
        client.close()
