"""Fixtures of the control-plane tests: a fresh database on SQLite and on PostgreSQL, the app, clients.

PostgreSQL runs when NPUCENTER_TEST_POSTGRES_URL names a server (``make test`` starts one with
scripts/pg-test-server.sh); each test gets its own database, dropped afterwards.
"""

from __future__ import annotations

import os
import shutil
import uuid
from collections.abc import Callable, Iterator

import pytest
from fastapi.testclient import TestClient

from npucenter.api import create_app
from npucenter.clock import FakeClock
from npucenter.settings import Settings
from npucenter.store import upgrade

ADMIN_KEY = "npc_test_admin_key_0123456789"
T0_S = 1_700_000_000.0


def _pg_create(base_url: str, template: str | None = None) -> str:
    import psycopg

    name = f"npc_test_{uuid.uuid4().hex[:12]}"
    suffix = f' TEMPLATE "{template}"' if template else ""
    with psycopg.connect(base_url, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"{suffix}')
    return name


def _pg_drop(base_url: str, name: str) -> None:
    import psycopg

    with psycopg.connect(base_url, autocommit=True) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def _pg_url(base_url: str, name: str) -> str:
    return base_url.rsplit("/", 1)[0] + "/" + name


def _pg_base() -> str:
    base = os.environ.get("NPUCENTER_TEST_POSTGRES_URL")
    if not base:
        pytest.skip("NPUCENTER_TEST_POSTGRES_URL is not set (make test starts a server)")
    return base


@pytest.fixture(params=["sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)])
def backend(request: pytest.FixtureRequest) -> str:
    """The database backend of a test: "sqlite" or "postgresql" (skipped when no server)."""
    if request.param == "postgresql":
        _pg_base()
    return str(request.param)


@pytest.fixture(scope="session")
def _templates(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, str]]:
    """Databases migrated once per session and copied per test (migrations are the slow part)."""
    made: dict[str, str] = {}
    path = tmp_path_factory.mktemp("template") / "template.db"
    upgrade(f"sqlite:///{path}")
    made["sqlite"] = str(path)
    base = os.environ.get("NPUCENTER_TEST_POSTGRES_URL")
    if base:
        made["postgresql"] = _pg_create(base)
        upgrade(_pg_url(base, made["postgresql"]))
    yield made
    if base:
        _pg_drop(base, made["postgresql"])


@pytest.fixture
def empty_database_url(backend: str, tmp_path) -> Iterator[str]:
    """A fresh database without any table."""
    if backend == "sqlite":
        yield f"sqlite:///{tmp_path / 'empty.db'}"
        return
    base = _pg_base()
    name = _pg_create(base)
    yield _pg_url(base, name)
    _pg_drop(base, name)


@pytest.fixture
def database_url(backend: str, tmp_path, _templates: dict[str, str]) -> Iterator[str]:
    """A fresh database at the head revision: SQLite in tmp_path or a new PostgreSQL database."""
    if backend == "sqlite":
        path = tmp_path / "npucenter.db"
        shutil.copyfile(_templates["sqlite"], path)
        yield f"sqlite:///{path}"
        return
    base = _pg_base()
    name = _pg_create(base, template=_templates["postgresql"])
    yield _pg_url(base, name)
    _pg_drop(base, name)


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
    app = create_app(settings, now_s=clock.now_s, migrate=False)  # copied at head
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
