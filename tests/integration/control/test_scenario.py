"""The must-show scenario of issue 6, on SQLite and PostgreSQL, through the HTTP API.

An operator registers a fleet, creates a company and a university with quotas in one cohort;
the university borrows idle NPUs for a research job; the company deploys a service; the
borrowed cards are reclaimed with the job preempted and requeued; the ledger shows it all.
"""

from __future__ import annotations

import pytest


def _by_tenant(rows, tenant):
    return [r for r in rows if r["tenant"] == tenant]


def test_borrow_reclaim_preempt_requeue_and_ledger(admin, tenant_client, clock):
    # The operator registers the fleet: one 8-card RNGD server and one 8-card H100 server.
    rngd = admin.post(
        "/api/servers", json={"name": "rngd-1", "device_type": "rngd", "num_cards": 8}
    )
    assert rngd.status_code == 201 and rngd.json()["device_type"] == "furiosa_rngd"
    assert rngd.json()["device_kind"] == "npu" and rngd.json()["num_free_cards"] == 8
    h100 = admin.post(
        "/api/servers", json={"name": "h100-1", "device_type": "h100", "num_cards": 8}
    )
    assert h100.status_code == 201 and h100.json()["device_kind"] == "gpu"

    # A company and a university with quotas in one cohort.
    company = tenant_client("acme", "company")
    university = tenant_client("kaist", "university")
    for tenant, nominal, priority in (("acme", 6, "production"), ("kaist", 2, "research")):
        r = admin.put(
            "/api/quotas",
            json={
                "tenant": tenant,
                "device_type": "rngd",
                "nominal_cards": nominal,
                "cohort": "center",
                "priority_class": priority,
            },
        )
        assert r.status_code == 200, r.text

    # The university borrows idle NPUs for a research job: 6 cards, 2 of them nominal.
    job = university.post(
        "/api/jobs",
        json={
            "name": "lora-ko",
            "kind": "finetune",
            "device_type": "rngd",
            "num_cards": 6,
            "image": "registry.local/lora:1",
            "command": ["python", "train.py"],
        },
    )
    assert job.status_code == 201, job.text
    job = job.json()
    assert job["state"] == "admitted" and job["server"] == "rngd-1"
    assert job["borrowed_cards"] == 6 - 2
    quota = _by_tenant(university.get("/api/quotas").json(), "kaist")[0]
    assert (quota["used_cards"], quota["borrowed_cards"]) == (6, 4)

    # The executor reports it running; time passes.
    r = admin.post(f"/api/jobs/{job['id']}/state", json={"state": "running"})
    assert r.status_code == 200 and r.json()["state"] == "running"
    run_s = 120.0
    clock.advance(run_s)

    # The company deploys a service needing 4 cards: only 2 are idle, so its lent cards are
    # reclaimed and the university's job is preempted and requeued.
    dep = company.post(
        "/api/deployments",
        json={
            "name": "chat",
            "model": "llama-3.1-8b",
            "device_type": "rngd",
            "tp": 1,
            "precision": "bf16",
            "replicas": 4,
        },
    )
    assert dep.status_code == 201, dep.text
    dep = dep.json()
    assert dep["num_placed_replicas"] == 4
    assert all(r["server"] == "rngd-1" for r in dep["replica_states"])

    job = university.get(f"/api/jobs/{job['id']}").json()
    assert job["state"] == "queued" and job["num_preemptions"] == 1 and job["server"] is None
    states = [e["to_state"] for e in university.get(f"/api/jobs/{job['id']}/events").json()]
    assert states == ["queued", "admitted", "running", "preempted", "queued"]
    quota = _by_tenant(university.get("/api/quotas").json(), "kaist")[0]
    assert quota["used_cards"] == 0

    # The ledger bills the preempted job 6 cards x the time it held them.
    ledger = admin.get("/api/usage").json()
    preemption = [r for r in ledger if r["kind"] == "preemption"]
    assert len(preemption) == 1 and preemption[0]["tenant"] == "kaist"
    assert preemption[0]["device_seconds"] == pytest.approx(6 * run_s)
    assert preemption[0]["ref"].startswith(f"job:{job['id']}")

    # The company scales the service down after a while: its replicas are billed, the freed
    # cards go back to the queued job.
    serve_s = 30.0
    clock.advance(serve_s)
    r = company.patch(f"/api/deployments/{dep['id']}", json={"replicas": 0})
    assert r.status_code == 200 and r.json()["num_placed_replicas"] == 0
    job = university.get(f"/api/jobs/{job['id']}").json()
    assert job["state"] == "admitted"

    summary = {(r["tenant"], r["kind"]): r for r in admin.get("/api/usage/summary").json()}
    assert summary[("acme", "replica")]["device_seconds"] == pytest.approx(4 * serve_s)
    assert summary[("kaist", "preemption")]["device_seconds"] == pytest.approx(6 * run_s)
    # A tenant sees only its own rows.
    assert {r["tenant"] for r in university.get("/api/usage").json()} == {"kaist"}


def test_checkpoint_bills_running_work_without_stopping_it(admin, tenant_client, clock):
    admin.post("/api/servers", json={"name": "atom-1", "device_type": "atom", "num_cards": 4})
    uni = tenant_client("snu", "university")
    admin.put("/api/quotas", json={"tenant": "snu", "device_type": "atom", "nominal_cards": 4})
    job = uni.post(
        "/api/jobs",
        json={
            "name": "prep",
            "kind": "preprocess",
            "device_type": "atom",
            "num_cards": 2,
            "command": ["prep.sh"],
        },
    ).json()
    assert job["state"] == "admitted"
    clock.advance(10.0)
    rows = admin.post("/api/usage/checkpoint").json()
    assert [r["device_seconds"] for r in rows] == [pytest.approx(20.0)]
    clock.advance(5.0)
    done = admin.post(f"/api/jobs/{job['id']}/state", json={"state": "failed", "reason": "oom"})
    assert done.json()["state"] == "failed"
    billed = [r["device_seconds"] for r in uni.get("/api/usage").json()]
    assert billed == [pytest.approx(20.0), pytest.approx(10.0)]  # no second counted twice


def test_a_server_going_down_requeues_its_work_and_pending_reasons_are_reported(
    admin, tenant_client, clock
):
    admin.post("/api/servers", json={"name": "h100-1", "device_type": "h100", "num_cards": 4})
    uni = tenant_client("kaist", "university")
    admin.put("/api/quotas", json={"tenant": "kaist", "device_type": "h100", "nominal_cards": 4})
    job = uni.post(
        "/api/jobs",
        json={
            "name": "ft",
            "kind": "finetune",
            "device_type": "h100",
            "num_cards": 4,
            "image": "img",
        },
    ).json()
    assert job["state"] == "admitted"
    clock.advance(7.0)
    down = admin.patch("/api/servers/h100-1", json={"health": "down"})
    assert down.status_code == 200 and down.json()["num_free_cards"] == 0
    job = uni.get(f"/api/jobs/{job['id']}").json()
    assert job["state"] == "queued" and job["num_preemptions"] == 1
    [row] = uni.get("/api/usage").json()
    assert row["kind"] == "preemption" and row["device_seconds"] == pytest.approx(4 * 7.0)
    report = admin.post("/api/admission/cycle").json()
    assert report["admitted"] == [] and report["num_still_pending"] == 1
    assert report["pending"][0]["workload"] == f"job:{job['id']}"
    # Back up: the job is admitted again.
    admin.patch("/api/servers/h100-1", json={"health": "healthy"})
    assert uni.get(f"/api/jobs/{job['id']}").json()["state"] == "admitted"


def test_deleting_a_deployment_frees_and_bills_its_cards(admin, tenant_client, clock):
    admin.post("/api/servers", json={"name": "rngd-1", "device_type": "rngd", "num_cards": 4})
    acme = tenant_client("acme", "company")
    admin.put("/api/quotas", json={"tenant": "acme", "device_type": "rngd", "nominal_cards": 4})
    dep = acme.post(
        "/api/deployments",
        json={"name": "chat", "model": "llama-3.1-8b", "device_type": "rngd", "replicas": 3},
    ).json()
    assert dep["num_placed_replicas"] == 3
    clock.advance(20.0)
    scaled = acme.patch(f"/api/deployments/{dep['id']}", json={"replicas": 4}).json()
    assert [r["index"] for r in scaled["replica_states"]] == [0, 1, 2, 3]
    assert scaled["num_placed_replicas"] == 4
    clock.advance(10.0)
    assert acme.delete(f"/api/deployments/{dep['id']}").status_code == 204
    assert acme.get(f"/api/deployments/{dep['id']}").status_code == 404
    assert admin.get("/api/servers/rngd-1").json()["num_free_cards"] == 4
    billed = sum(r["device_seconds"] for r in acme.get("/api/usage").json())
    assert billed == pytest.approx(3 * 20.0 + 4 * 10.0)
