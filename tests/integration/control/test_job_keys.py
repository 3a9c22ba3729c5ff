"""A job that calls the gateway gets a key of its own for its run; no key is ever stored with it.

(SQLite and PostgreSQL; issue 13.) The runner makes the key (scope ``job``) when the run starts
and puts it only into the job's environment; it calls /v1 as the job's tenant and uploads that
job's result, nothing else on /api, and is revoked when the run ends (or, for a run a killed
center left, when the next runner starts). A command carrying a key is refused before anything
is stored, and a key that a job prints or reports is redacted from its stored log and result.
"""

from __future__ import annotations

import asyncio
import sys
import time
from pathlib import Path

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import select

from npucenter.api import create_app
from npucenter.api.runner import make_job_runner
from npucenter.errors import AuthenticationError
from npucenter.executors.sandbox import JobIsolation, Sandbox, SandboxPolicy
from npucenter.live.gateway import StoreKeyResolver
from npucenter.settings import Settings
from npucenter.store.models import Base

PY = sys.executable
# prints its key (plain and as a header), waits for the test's go, reports the key as a result
JOB = r"""
import json, os, sys, time
key = os.environ["NPUCENTER_API_KEY"]
assert os.environ["OPENAI_API_KEY"] == key
open("key", "w").write(key)
print("my key is", key)
print("Authorization: Bearer " + key, flush=True)
deadline = time.monotonic() + 60
while not os.path.exists("go") and time.monotonic() < deadline:
    time.sleep(0.05)
json.dump({"api_key": key, "note": "called with " + key, "ok": True},
          open(os.environ["NPUCENTER_RESULT_PATH"], "w"))
"""


def _sandbox() -> Sandbox:
    sandbox = Sandbox()
    if sandbox.unavailable_reason() is None:
        return sandbox
    return Sandbox(SandboxPolicy(isolation=JobIsolation.NONE))


@pytest.fixture
def center(database_url, tmp_path, clock, admin_key):
    settings = Settings(data_dir=tmp_path / "data", database_url=database_url, admin_key=admin_key)
    settings.ensure_data_dir()
    app = create_app(settings, now_s=clock.now_s, migrate=False)
    yield app
    app.state.control.db.dispose()


@pytest.fixture
def admin(center, admin_key):
    with TestClient(center, headers={"Authorization": f"Bearer {admin_key}"}) as client:
        body = {"name": "gpu-1", "device_type": "h100", "num_cards": 8}
        assert client.post("/api/servers", json=body).status_code == 201
        yield client


def _tenant(admin, app, name):
    assert admin.post("/api/tenants", json={"name": name, "kind": "company"}).status_code == 201
    body = {"tenant": name, "device_type": "h100", "nominal_cards": 4}
    assert admin.put("/api/quotas", json=body).status_code == 200
    key = admin.post("/api/keys", json={"tenant": name}).json()["key"]
    return TestClient(app, headers={"Authorization": f"Bearer {key}"}), key


def _body(command):
    return {"name": "bench", "kind": "benchmark", "device_type": "h100", "num_cards": 1} | {
        "command": command
    }


def _everything_stored(control) -> str:
    with control.db.session() as session:
        return "\n".join(
            repr(tuple(row))
            for table in Base.metadata.sorted_tables
            for row in session.execute(select(table))
        )


def _wait_for(path: Path, timeout_s: float = 30.0) -> None:
    deadline = time.monotonic() + timeout_s
    while not (path.exists() and path.read_text()):
        assert time.monotonic() < deadline, f"{path} never appeared"
        time.sleep(0.05)


def test_a_command_carrying_a_key_is_refused_and_nothing_is_stored(admin, center):
    acme, tenant_key = _tenant(admin, center, "acme")
    for command in (
        ["npucenter", "bench", "run", "--api-key", tenant_key],
        ["sh", "-c", f"curl -H 'Authorization: Bearer {tenant_key}' http://gw/v1/models"],
        ["python", "bench.py", f"--api-key={tenant_key}"],
    ):
        r = acme.post("/api/jobs", json=_body(command))
        assert r.status_code == 422, r.text
        assert r.json()["error"]["details"]["field"] == "command"
        assert tenant_key not in r.text
    assert acme.get("/api/jobs").json() == []
    # a reference the job's environment fills is no key: accepted
    r = acme.post("/api/jobs", json=_body(["npucenter", "bench", "run", "--api-key", "$KEY"]))
    assert r.status_code == 201
    assert tenant_key not in _everything_stored(center.state.control)


def test_a_run_has_its_own_key_for_v1_and_its_result_revoked_when_it_ends(admin, center):
    control = center.state.control
    acme, tenant_key = _tenant(admin, center, "acme")
    other, _ = _tenant(admin, center, "other")
    other_job = other.post("/api/jobs", json=_body([PY, "-c", "pass"])).json()["id"]
    job_id = acme.post("/api/jobs", json=_body([PY, "-c", JOB])).json()["id"]
    runner = make_job_runner(control, grace_s=1.0, sandbox=_sandbox(), job_keys=True)
    work = control.settings.data_dir / "jobs" / f"job-{job_id}" / "work"
    try:
        assert job_id in asyncio.run(runner.tick()).started
        _wait_for(work / "key")
        key = (work / "key").read_text()
        assert key != tenant_key and key.startswith("npc_")

        # the gateway takes it as the tenant's (metered to acme), with the inference scope
        principal = StoreKeyResolver(control).resolve(key)
        acme_id = admin.get("/api/tenants").json()
        assert principal.tenant == "acme" and principal.job_id == job_id
        assert "inference" in principal.scopes and not principal.is_admin
        assert [t["id"] for t in acme_id if t["name"] == "acme"] == [principal.tenant_id]
        # on /api: its own job's result, nothing else
        job_client = TestClient(center, headers={"Authorization": f"Bearer {key}"})
        assert job_client.get("/api/jobs").status_code == 403
        assert job_client.get(f"/api/jobs/{job_id}").status_code == 403
        assert job_client.post("/api/keys", json={"tenant": "acme"}).status_code == 403
        assert job_client.post("/api/jobs", json=_body([PY, "-c", "pass"])).status_code == 403
        assert job_client.put(f"/api/jobs/{other_job}/result", json={"x": 1}).status_code == 403
        r = job_client.put(f"/api/jobs/{job_id}/result", json={"summary": {"uploaded": 1}})
        assert r.status_code == 200, r.text
        listed = [k for k in acme.get("/api/keys").json() if k["scope"] == "job"]
        assert len(listed) == 1 and listed[0]["revoked_at_s"] is None

        (work / "go").write_text("go")
        assert asyncio.run(runner.wait_exited(job_id, 60.0)) == 0
        asyncio.run(runner.tick())
    finally:
        asyncio.run(runner.shutdown())

    with control.tx() as repo, pytest.raises(AuthenticationError):
        repo.lookup_key(key)  # revoked with the run's end
    assert job_client.put(f"/api/jobs/{job_id}/result", json={"x": 1}).status_code == 401
    job = admin.get(f"/api/jobs/{job_id}").json()
    assert job["state"] == "succeeded", job
    assert key not in job["log_tail"] and "my key is npc_" in job["log_tail"]
    assert "Bearer [redacted]" in job["log_tail"]
    result = admin.get(f"/api/jobs/{job_id}/result").json()
    assert result["api_key"] == "[redacted]" and result["ok"] is True
    short_id = key.split("_")[1]  # public, as in key listings; the secret part is gone
    assert result["note"] == f"called with npc_{short_id}_[redacted]"
    stored = _everything_stored(control)
    secret_part = key.split("_", 2)[2]
    assert tenant_key not in stored and secret_part not in stored
    assert tenant_key.split("_", 2)[2] not in stored


def test_keys_a_killed_center_left_are_revoked_when_the_next_runner_starts(admin, center):
    control = center.state.control
    acme, _ = _tenant(admin, center, "acme")
    job_id = acme.post("/api/jobs", json=_body([PY, "-c", JOB])).json()["id"]
    first = make_job_runner(control, grace_s=0.5, sandbox=_sandbox(), job_keys=True)
    work = control.settings.data_dir / "jobs" / f"job-{job_id}" / "work"
    assert job_id in asyncio.run(first.tick()).started
    _wait_for(work / "key")
    key = (work / "key").read_text()
    first._runs.clear()  # the center dies with the run (the next runner stops the process)

    again = make_job_runner(control, grace_s=0.5, sandbox=_sandbox(), job_keys=False)
    try:
        assert asyncio.run(again.recover()) == [job_id]
        with control.tx() as repo, pytest.raises(AuthenticationError):
            repo.lookup_key(key)
    finally:
        asyncio.run(again.shutdown())
