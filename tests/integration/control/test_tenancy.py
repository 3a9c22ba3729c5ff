"""Admin scope vs tenant scope: a tenant sees and changes only its own objects."""

from __future__ import annotations


def test_another_tenants_ids_are_404_and_lists_are_filtered(admin, tenant_client):
    admin.post("/api/servers", json={"name": "h100-1", "device_type": "h100", "num_cards": 8})
    acme = tenant_client("acme", "company")
    kaist = tenant_client("kaist", "university")
    for t in ("acme", "kaist"):
        admin.put("/api/quotas", json={"tenant": t, "device_type": "h100", "nominal_cards": 4})
    job = acme.post(
        "/api/jobs",
        json={
            "name": "ft",
            "kind": "finetune",
            "device_type": "h100",
            "num_cards": 1,
            "image": "img",
        },
    ).json()
    dep = acme.post(
        "/api/deployments",
        json={"name": "svc", "model": "llama-3.1-8b", "device_type": "h100", "replicas": 1},
    ).json()
    acme_tenant = acme.get("/api/whoami").json()
    assert acme_tenant["scope"] == "tenant" and acme_tenant["tenant"] == "acme"

    for method, path, body in (
        ("GET", f"/api/jobs/{job['id']}", None),
        ("GET", f"/api/jobs/{job['id']}/events", None),
        ("POST", f"/api/jobs/{job['id']}/cancel", None),
        ("GET", f"/api/deployments/{dep['id']}", None),
        ("PATCH", f"/api/deployments/{dep['id']}", {"replicas": 0}),
        ("DELETE", f"/api/deployments/{dep['id']}", None),
        ("GET", "/api/tenants/acme", None),
        ("GET", f"/api/tenants/{acme_tenant['tenant_id']}", None),
        ("GET", "/api/usage?tenant=acme", None),
        ("DELETE", f"/api/keys/{acme_tenant['key_id']}", None),
    ):
        resp = kaist.request(method, path, json=body)
        assert resp.status_code == 404, (method, path, resp.text)
        assert resp.json()["error"]["code"] == "not_found"
    # ... and kaist cannot create objects for acme either.
    resp = kaist.post(
        "/api/jobs",
        json={
            "tenant": "acme",
            "name": "x",
            "kind": "benchmark",
            "device_type": "h100",
            "image": "img",
        },
    )
    assert resp.status_code == 404

    # Nothing of acme's changed.
    assert acme.get(f"/api/jobs/{job['id']}").json()["state"] == job["state"]
    assert acme.get(f"/api/deployments/{dep['id']}").json()["replicas"] == 1
    assert acme.get("/api/whoami").status_code == 200

    # Lists show only the caller's own objects; the admin sees all.
    assert kaist.get("/api/jobs").json() == [] and kaist.get("/api/deployments").json() == []
    assert [t["name"] for t in kaist.get("/api/tenants").json()] == ["kaist"]
    assert {k["tenant_id"] for k in kaist.get("/api/keys").json()} == {
        kaist.get("/api/whoami").json()["tenant_id"]
    }
    assert {q["tenant"] for q in kaist.get("/api/quotas").json()} == {"kaist"}
    assert len(admin.get("/api/jobs").json()) == 1 and len(admin.get("/api/tenants").json()) == 2


def test_tenant_creates_its_own_keys_and_objects_without_naming_itself(tenant_client, admin):
    admin.post("/api/servers", json={"name": "atom-1", "device_type": "atom", "num_cards": 2})
    kaist = tenant_client("kaist", "university")
    new = kaist.post("/api/keys", json={"name": "ci"}).json()
    assert new["key"].startswith("npc_") and new["scope"] == "tenant"
    listed = kaist.get("/api/keys").json()
    assert all("key" not in k and "secret_sha256" not in k for k in listed)
    # No quota for atom: refused at once (it could never be admitted), nothing stored.
    body = {"name": "b", "kind": "benchmark", "device_type": "atom", "image": "img"}
    refused = kaist.post("/api/jobs", json=body)
    assert refused.status_code == 429
    assert refused.json()["error"]["details"] == {
        "tenant": "kaist",
        "resource": "rebellions_atom cards",
        "requested": 1,
        "available": 0.0,
    }
    assert kaist.get("/api/jobs").json() == []
    admin.put("/api/quotas", json={"tenant": "kaist", "device_type": "atom", "nominal_cards": 1})
    job = kaist.post("/api/jobs", json=body).json()
    assert job["tenant"] == "kaist" and job["state"] == "admitted"
    admin_job = admin.post(
        "/api/jobs", json={"name": "c", "kind": "benchmark", "device_type": "atom", "image": "img"}
    )
    assert admin_job.status_code == 422  # an admin must say for which tenant
    assert admin_job.json()["error"]["details"]["field"] == "tenant"
