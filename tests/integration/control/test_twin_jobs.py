"""Twin jobs (kinds simulate and plan) through the local job runner: the spec is written into the
sandboxed work dir, the center's program runs the twin, its progress is the log and its summary
the result (what the console's twin page draws)."""

from __future__ import annotations

import asyncio

import pytest
from fastapi.testclient import TestClient

from npucenter.api import create_app
from npucenter.api.runner import make_job_runner
from npucenter.fleet.model import default_fleet_mapping
from npucenter.settings import Settings


@pytest.fixture
def center(database_url, tmp_path, clock, admin_key):
    settings = Settings(data_dir=tmp_path, database_url=database_url, admin_key=admin_key)
    app = create_app(settings, now_s=clock.now_s, migrate=False)
    yield app
    app.state.control.db.dispose()


@pytest.fixture
def runner(center):
    runner = make_job_runner(center.state.control, grace_s=1.0)
    yield runner
    asyncio.run(runner.shutdown())


@pytest.fixture
def tenant(center, admin_key):
    admin = TestClient(center, headers={"Authorization": f"Bearer {admin_key}"})
    server = {"name": "g", "device_type": "h100", "num_cards": 2}
    assert admin.post("/api/servers", json=server).is_success
    assert admin.post("/api/tenants", json={"name": "lab", "kind": "university"}).is_success
    quota = {"tenant": "lab", "device_type": "h100", "nominal_cards": 1}
    assert admin.put("/api/quotas", json=quota).is_success
    key = admin.post("/api/keys", json={"tenant": "lab"}).json()["key"]
    return TestClient(center, headers={"Authorization": f"Bearer {key}"})


def test_a_simulation_job_runs_the_twin_and_leaves_its_summary(tenant, runner) -> None:
    spec = {"fleet": default_fleet_mapping(), "trace": "synthetic:5", "num_requests": 150}
    body = {"name": "sim", "kind": "simulate", "device_type": "h100", "spec": spec}
    made = tenant.post("/api/jobs", json=body)
    assert made.status_code == 201, made.text
    job_id = made.json()["id"]
    asyncio.run(runner.tick())
    assert asyncio.run(runner.wait_exited(job_id, 120.0)) == 0
    asyncio.run(runner.tick())
    job = tenant.get(f"/api/jobs/{job_id}").json()
    assert job["state"] == "succeeded", job
    assert "simulated 150/150 requests" in job["log_tail"]
    doc = tenant.get(f"/api/jobs/{job_id}/result").json()
    assert doc["kind"] == "simulate" and doc["num_requests"] == 150
    assert doc["summary"]["requests"] == 150 and doc["summary"]["completed"] <= 150
    ttft = doc["cdf"]["ttft_s"]
    assert len(ttft) == 201 and ttft == sorted(ttft)  # quantiles, for the report's CDF


def test_a_host_twin_job_holds_no_card_and_host_jobs_are_bounded_per_tenant(
    tenant, runner, center, admin_key
) -> None:
    spec = {"fleet": default_fleet_mapping(), "trace": "synthetic:5", "num_requests": 100}
    host = {"name": "sim", "kind": "simulate", "device_type": "h100", "num_cards": 0, "spec": spec}
    first = tenant.post("/api/jobs", json=host)
    assert first.status_code == 201, first.text
    job = first.json()
    assert job["state"] == "admitted" and job["num_cards"] == 0, job
    # the tenant's one h100 card is still free: a one-card twin job is admitted beside it
    carded = tenant.post("/api/jobs", json={**host, "name": "carded", "num_cards": 1}).json()
    assert carded["state"] == "admitted", carded
    (quota,) = tenant.get("/api/quotas").json()  # its one quota: h100
    assert quota["used_cards"] == 1, quota  # the carded job's card only
    # at most two host jobs of a tenant at once: the third waits, with the reason
    second = tenant.post("/api/jobs", json={**host, "name": "sim2"}).json()
    third = tenant.post("/api/jobs", json={**host, "name": "sim3"}).json()
    assert second["state"] == "admitted" and third["state"] == "queued", (second, third)
    admin = TestClient(center, headers={"Authorization": f"Bearer {admin_key}"})
    report = admin.post("/api/admission/cycle").json()
    assert [(p["workload"], p["reason"]) for p in report["pending"]] == [
        (f"job:{third['id']}", "host_job_limit")
    ], report
    # a job that needs a device cannot ask for no card
    refused = tenant.post("/api/jobs", json={**host, "kind": "benchmark", "command": ["true"]})
    assert refused.status_code == 400 and "at least one card" in refused.text
    # the host job runs with no card visible, and when it ends the waiting one is admitted
    asyncio.run(runner.tick())
    assert asyncio.run(runner.wait_exited(job["id"], 120.0)) == 0
    asyncio.run(runner.tick())
    done = tenant.get(f"/api/jobs/{job['id']}").json()
    assert done["state"] == "succeeded" and "simulated 100/100 requests" in done["log_tail"], done
    reasons = [e["reason"] for e in tenant.get(f"/api/jobs/{job['id']}/events").json()]
    assert (
        "admitted on the host (no card)" in reasons and "started on the host (no card)" in reasons
    )
    assert tenant.get(f"/api/jobs/{third['id']}").json()["state"] in ("admitted", "running")
