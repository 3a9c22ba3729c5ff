"""create_app is composable (extra routers, lifespan hooks) and documents itself (OpenAPI)."""

from __future__ import annotations

from contextlib import asynccontextmanager

from fastapi import APIRouter
from fastapi.testclient import TestClient

from npucenter.api import add_lifespan_hook, create_app
from npucenter.settings import Settings


def test_extra_routers_and_lifespan_hooks(tmp_path, database_url):
    events: list[str] = []
    extra = APIRouter()

    @extra.get("/v1/ping")
    def ping() -> dict[str, str]:
        return {"pong": "yes"}

    def hook(name: str):
        @asynccontextmanager
        async def run(app):
            assert app.state.control is not None
            events.append(f"start {name}")
            yield
            events.append(f"stop {name}")

        return run

    settings = Settings(
        data_dir=tmp_path, database_url=database_url, admin_key="npc_compose_admin_key_0123"
    )
    app = create_app(settings, routers=[extra], lifespan_hooks=[hook("a")], migrate=False)
    add_lifespan_hook(app, hook("b"))
    with TestClient(app) as client:
        assert events == ["start a", "start b"]
        assert client.get("/v1/ping").json() == {"pong": "yes"}
        assert client.get("/healthz").json()["schema"] is not None
    assert events == ["start a", "start b", "stop b", "stop a"]
    assert app.state.generated_admin_key is None  # the given admin key was used


def test_openapi_lists_the_control_plane(admin):
    spec = admin.get("/openapi.json").json()
    paths = set(spec["paths"])
    for path in (
        "/api/tenants",
        "/api/keys",
        "/api/servers",
        "/api/quotas",
        "/api/deployments",
        "/api/jobs",
        "/api/jobs/{job_id}/events",
        "/api/usage",
        "/api/admission/cycle",
    ):
        assert path in paths
    kind = spec["components"]["schemas"]["TenantIn"]["properties"]["kind"]
    assert set(kind["enum"]) == {"company", "university", "research_institute"}


def test_admin_key_is_generated_at_first_start_only(tmp_path, database_url):
    settings = Settings(data_dir=tmp_path, database_url=database_url)
    first = create_app(settings, migrate=False)
    key = first.state.generated_admin_key
    first.state.control.db.dispose()
    assert key and key.startswith("npc_")
    again = create_app(settings)  # a restart: migrations are a no-op, no new key
    assert again.state.generated_admin_key is None
    with TestClient(again, headers={"Authorization": f"Bearer {key}"}) as client:
        assert client.get("/api/whoami").json()["scope"] == "admin"
    again.state.control.db.dispose()


def test_a_revoked_startup_admin_key_does_not_stop_a_restart(tmp_path, database_url):
    from typer.testing import CliRunner

    from npucenter.cli.main import app as cli_app

    settings = Settings(
        data_dir=tmp_path, database_url=database_url, admin_key="npc_startup_admin_key_0123"
    )
    first = create_app(settings, migrate=False)
    with TestClient(first, headers={"Authorization": "Bearer npc_startup_admin_key_0123"}) as c:
        key_id = c.get("/api/whoami").json()["key_id"]
        assert c.delete(f"/api/keys/{key_id}").status_code == 200
    first.state.control.db.dispose()
    again = create_app(settings)  # starts anyway, says why, and how to recover
    notice = again.state.admin_key_notice
    assert "revoked" in notice and "npucenter db admin-key" in notice
    with TestClient(again, headers={"Authorization": "Bearer npc_startup_admin_key_0123"}) as c:
        assert c.get("/api/whoami").status_code == 401  # the revocation stands
    again.state.control.db.dispose()
    env = {"NPUCENTER_DATA_DIR": str(tmp_path), "NPUCENTER_DATABASE_URL": database_url}
    out = CliRunner().invoke(cli_app, ["db", "admin-key", "--json"], env=env)
    assert out.exit_code == 0, out.output
    import json

    new_key = json.loads(out.output)["key"]
    third = create_app(settings)
    with TestClient(third, headers={"Authorization": f"Bearer {new_key}"}) as c:
        assert c.get("/api/whoami").json()["scope"] == "admin"
    third.state.control.db.dispose()
