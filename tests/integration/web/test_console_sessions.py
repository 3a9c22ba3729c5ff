"""Console sessions in the database (web/sessions.py, store/sessions.py) and the sign-in limit.

Two app instances on one database stand for two ``npucenter up`` processes behind a load
balancer: a session made through one is valid through the other, survives a restart (a new
app on the same database), and ends everywhere when its key is revoked. SQLite and PostgreSQL
(when NPUCENTER_TEST_POSTGRES_URL names a server; ``make test`` starts one).
"""

from __future__ import annotations

import hashlib
import os
import re
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from npucenter.api import create_app
from npucenter.clock import FakeClock
from npucenter.settings import Settings
from npucenter.web.console import SESSION_COOKIE, install_console
from npucenter.web.sessions import SESSION_IDLE_S, SESSION_MAX_S, SESSION_REFRESH_S

ADMIN = "npc_console_sessions_admin_key_0123456789"
T0_S = 1_700_000_000.0


@pytest.fixture(params=["sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)])
def database_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path}/c.db"
        return
    base = os.environ.get("NPUCENTER_TEST_POSTGRES_URL")
    if not base:
        pytest.skip("NPUCENTER_TEST_POSTGRES_URL is not set (make test starts a server)")
    import psycopg

    name = f"npc_test_{uuid.uuid4().hex[:12]}"
    with psycopg.connect(base, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    yield base.rsplit("/", 1)[0] + "/" + name
    with psycopg.connect(base, autocommit=True) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock(T0_S)


@pytest.fixture
def instance(database_url: str, tmp_path: Path, clock: FakeClock) -> Iterator[Callable[[], object]]:
    """Make app instances (processes) on the one database; all are disposed at the end."""
    made: list[object] = []

    def make() -> object:
        settings = Settings(data_dir=tmp_path, database_url=database_url, admin_key=ADMIN)
        app = create_app(settings, now_s=clock.now_s)
        install_console(app)
        made.append(app)
        return app

    yield make
    for app in made:
        app.state.control.db.dispose()  # type: ignore[attr-defined]


def _csrf(html: str) -> str:
    found = re.search(r'name="csrf" value="([^"]+)"', html)
    assert found, html
    return found.group(1)


def _browser(app: object) -> TestClient:
    return TestClient(app, base_url="https://testserver", follow_redirects=False)  # type: ignore[arg-type]


def _try_sign_in(browser: TestClient, key: str):
    form = browser.get("/console/login")
    return browser.post("/console/login", data={"csrf": _csrf(form.text), "key": key})


def _sign_in(app: object, key: str) -> TestClient:
    browser = _browser(app)
    assert _try_sign_in(browser, key).status_code == 303
    return browser


def _move(browser: TestClient, app: object) -> TestClient:
    """The same browser (its cookie) talking to another instance."""
    other = _browser(app)
    other.cookies.set(SESSION_COOKIE, browser.cookies[SESSION_COOKIE], path="/console")
    return other


def _tenant_key(app: object, name: str = "lab") -> tuple[str, int]:
    admin = TestClient(app, headers={"authorization": f"Bearer {ADMIN}"})  # type: ignore[arg-type]
    assert admin.post("/api/tenants", json={"name": name, "kind": "university"}).is_success
    made = admin.post("/api/keys", json={"tenant": name, "name": "k"}).json()
    return made["key"], made["id"]


def _signed_in(browser: TestClient) -> bool:
    page = browser.get("/console/keys")
    return page.status_code == 200 and "Sign out" in page.text


def test_a_session_made_on_one_instance_is_valid_on_another(instance) -> None:
    a, b = instance(), instance()
    key, _ = _tenant_key(a)
    browser = _sign_in(a, key)
    on_b = _move(browser, b)
    assert _signed_in(on_b)
    # a form made on one instance posts on the other: the CSRF token is the session's
    csrf = _csrf(browser.get("/console/keys").text)
    made = on_b.post("/console/keys", data={"csrf": csrf, "name": "from-b"})
    assert made.status_code == 201 and "from-b" in made.text
    # signing out on b ends it on a too
    assert on_b.post("/console/logout", data={"csrf": csrf}).status_code == 303
    assert browser.get("/console/keys").headers["location"] == "/console/login"


def test_a_restart_keeps_the_session_and_only_a_hash_is_stored(instance) -> None:
    first = instance()
    key, _ = _tenant_key(first)
    browser = _sign_in(first, key)
    token = browser.cookies[SESSION_COOKIE]
    first.state.control.db.dispose()  # type: ignore[attr-defined]
    restarted = instance()
    assert _signed_in(_move(browser, restarted))
    db = restarted.state.control.db  # type: ignore[attr-defined]
    from sqlalchemy import text

    with db.engine.connect() as conn:
        rows = conn.execute(text("SELECT * FROM console_sessions")).mappings().all()
    assert len(rows) == 1
    stored = " ".join(str(v) for v in rows[0].values())
    assert token not in stored and key not in stored
    assert rows[0]["token_hash"] == hashlib.sha256(token.encode()).hexdigest()


def test_revoking_the_key_on_another_instance_ends_the_session(instance) -> None:
    a, b = instance(), instance()
    key, key_id = _tenant_key(a)
    browser = _sign_in(a, key)
    other_session = _sign_in(b, key)
    admin_on_b = TestClient(b, headers={"authorization": f"Bearer {ADMIN}"})  # type: ignore[arg-type]
    assert admin_on_b.delete(f"/api/keys/{key_id}").status_code in (200, 204)
    for br in (browser, other_session, _move(browser, b)):
        page = br.get("/console/usage")
        assert page.status_code == 303 and page.headers["location"] == "/console/login"
    assert _try_sign_in(_browser(a), key).status_code == 401


def test_sessions_expire_when_idle_and_at_the_latest_after_max_s(instance, clock) -> None:
    app = instance()
    key, _ = _tenant_key(app)
    browser = _sign_in(app, key)
    clock.advance(SESSION_IDLE_S - 60)
    assert _signed_in(browser)  # used before the idle limit: pushed forward
    clock.advance(SESSION_IDLE_S - 60)
    assert _signed_in(browser)
    clock.advance(SESSION_IDLE_S + 1)  # unused too long
    assert browser.get("/console/usage").status_code == 303
    # however busy, a session ends SESSION_MAX_S after its sign-in
    busy = _sign_in(app, key)
    start, step = clock.now_s(), SESSION_REFRESH_S * 10
    while clock.now_s() + step - start < SESSION_MAX_S:
        clock.advance(step)
        assert _signed_in(busy)
    clock.advance(start + SESSION_MAX_S - clock.now_s())
    assert busy.get("/console/usage").status_code == 303


def test_expired_rows_are_purged_at_sign_in(instance, clock) -> None:
    app = instance()
    key, _ = _tenant_key(app)
    for _ in range(3):
        _sign_in(app, key)
    db = app.state.control.db  # type: ignore[attr-defined]
    from sqlalchemy import text

    def count() -> int:
        with db.engine.connect() as conn:
            return int(conn.execute(text("SELECT count(*) FROM console_sessions")).scalar_one())

    assert count() == 3
    clock.advance(SESSION_IDLE_S + 1)
    _sign_in(app, key)
    assert count() == 1


def test_a_page_view_writes_no_session_row(instance, clock) -> None:
    app = instance()
    key, _ = _tenant_key(app)
    browser = _sign_in(app, key)
    db = app.state.control.db  # type: ignore[attr-defined]
    from sqlalchemy import text

    def expiry() -> float:
        with db.engine.connect() as conn:
            return float(conn.execute(text("SELECT expires_at_s FROM console_sessions")).scalar())

    before = expiry()
    clock.advance(SESSION_REFRESH_S / 2)
    assert _signed_in(browser)
    assert expiry() == before  # not yet worth a write
    clock.advance(SESSION_REFRESH_S)
    assert _signed_in(browser)
    assert expiry() == pytest.approx(clock.now_s() + SESSION_IDLE_S)


def test_repeated_failed_sign_ins_get_429_with_retry_after(instance) -> None:
    app = instance()
    key, _ = _tenant_key(app)
    limiter = app.state.console_sign_in_limiter  # type: ignore[attr-defined]
    now = [0.0]
    limiter.clock = lambda: now[0]
    browser = _browser(app)
    for i in range(limiter.max_failures):
        assert _try_sign_in(browser, f"npc_wrong{i}_x").status_code == 401
    refused = _try_sign_in(browser, key)  # even the right key: this address is limited
    assert refused.status_code == 429
    assert int(refused.headers["retry-after"]) == 60
    assert "try again in 60 s" in refused.text and key not in refused.text
    now[0] += 45
    refused = _try_sign_in(browser, key)
    assert refused.status_code == 429 and refused.headers["retry-after"] == "15"
    now[0] += 15
    assert _try_sign_in(browser, key).status_code == 303


def test_failed_sign_ins_for_one_key_prefix_are_limited_from_any_address(instance) -> None:
    app = instance()
    key, _ = _tenant_key(app)
    limiter = app.state.console_sign_in_limiter  # type: ignore[attr-defined]
    now = [0.0]
    limiter.clock = lambda: now[0]
    guess = key[:12] + "_guessed-rest-of-the-key-0123456789"
    for i in range(limiter.max_failures):  # each from another address
        limiter.failed(f"10.0.0.{i}", guess)
    assert limiter.retry_after_s("10.9.9.9", key) == 60  # the same prefix: the real key waits
    assert limiter.retry_after_s("10.9.9.9", "npc_other123_x") == 0  # another key does not
    assert limiter.retry_after_s("10.0.0.1", "") == 0  # one failure from that address
    assert _try_sign_in(_browser(app), key).status_code == 429


def test_the_limiter_forgets_the_least_recent_beyond_its_bound() -> None:
    from npucenter.web.sessions import SignInLimiter

    limiter = SignInLimiter(max_failures=1, max_tracked=4, clock=lambda: 0.0)
    for i in range(10):
        limiter.failed(f"10.0.0.{i}", "")
    assert len(limiter._failures) == 4
    assert limiter.retry_after_s("10.0.0.9") == 60 and limiter.retry_after_s("10.0.0.0") == 0


def test_a_key_holds_at_most_100_sessions_the_oldest_ending(instance, clock) -> None:
    app = instance()
    _, key_id = _tenant_key(app)
    control = app.state.control  # type: ignore[attr-defined]
    tokens = []
    for _ in range(101):
        clock.advance(1.0)
        with control.tx() as repo:
            tokens.append(repo.open_session(key_id, idle_s=3600.0, max_s=7200.0)[0])
    with control.tx() as repo:
        live = [
            t for t in tokens if repo.read_session(t, idle_s=3600.0, max_s=7200.0, refresh_s=60.0)
        ]
    assert live == tokens[1:]  # the first (oldest) ended, the 100 newest live
