"""Bad input is answered with a clear typed error, and nothing stored is lost or changed."""

from __future__ import annotations

import pytest


def _snapshot(admin):
    """Everything an admin can read, to compare before and after bad requests."""
    return {
        path: admin.get(path).json()
        for path in (
            "/api/tenants",
            "/api/servers",
            "/api/quotas",
            "/api/deployments",
            "/api/jobs",
            "/api/keys",
            "/api/usage",
        )
    }


@pytest.fixture
def populated(admin, tenant_client):
    admin.post("/api/servers", json={"name": "rngd-1", "device_type": "rngd", "num_cards": 8})
    acme = tenant_client("acme", "company")
    kaist = tenant_client("kaist", "university")
    for t in ("acme", "kaist"):
        admin.put(
            "/api/quotas",
            json={"tenant": t, "device_type": "rngd", "nominal_cards": 4, "cohort": "c"},
        )
    job = kaist.post(
        "/api/jobs",
        json={
            "name": "j",
            "kind": "benchmark",
            "device_type": "rngd",
            "num_cards": 1,
            "command": ["bench"],
        },
    ).json()
    dep = acme.post(
        "/api/deployments",
        json={"name": "chat", "model": "llama-3.1-8b", "device_type": "rngd", "replicas": 1},
    ).json()
    return {"acme": acme, "kaist": kaist, "job": job, "dep": dep}


def _error(resp, status, code):
    assert resp.status_code == status, resp.text
    body = resp.json()
    assert set(body) == {"error"} and set(body["error"]) == {"code", "message", "details"}
    assert body["error"]["code"] == code and body["error"]["message"]
    return body["error"]


def test_malformed_bodies_are_422_in_the_error_shape(admin, populated):
    before = _snapshot(admin)
    raw = admin.post(
        "/api/tenants", content=b"{not json", headers={"content-type": "application/json"}
    )
    _error(raw, 422, "invalid_request")
    missing = _error(admin.post("/api/tenants", json={"name": "x"}), 422, "invalid_request")
    assert missing["details"]["errors"][0]["field"] == "kind"
    _error(
        admin.post("/api/tenants", json={"name": "x", "kind": "company", "extra": 1}),
        422,
        "invalid_request",
    )
    _error(
        admin.post("/api/servers", json={"name": "s", "device_type": "rngd", "num_cards": "many"}),
        422,
        "invalid_request",
    )
    _error(admin.post("/api/tenants", json=["a", "list"]), 422, "invalid_request")
    _error(
        admin.post(
            "/api/jobs",
            json={"tenant": "kaist", "name": "j2", "kind": "benchmark", "device_type": "rngd"},
        ),
        422,
        "invalid_request",
    )  # no image/command
    assert _snapshot(admin) == before


def test_negative_quotas_and_bad_limits_are_refused(admin, populated):
    before = _snapshot(admin)
    err = _error(
        admin.put(
            "/api/quotas", json={"tenant": "acme", "device_type": "rngd", "nominal_cards": -1}
        ),
        422,
        "invalid_request",
    )
    assert err["details"]["errors"][0]["field"] == "nominal_cards"
    _error(
        admin.put(
            "/api/quotas",
            json={
                "tenant": "acme",
                "device_type": "rngd",
                "nominal_cards": 2,
                "borrowing_limit_cards": -3,
            },
        ),
        422,
        "invalid_request",
    )
    lend = _error(
        admin.put(
            "/api/quotas",
            json={
                "tenant": "acme",
                "device_type": "rngd",
                "nominal_cards": 2,
                "lending_limit_cards": 3,
            },
        ),
        422,
        "invalid_request",
    )
    assert lend["details"]["field"] == "lending_limit_cards"
    assert _snapshot(admin) == before


def test_unknown_ids_are_404(admin, populated):
    before = _snapshot(admin)
    for path in (
        "/api/jobs/999",
        "/api/deployments/999",
        "/api/tenants/nobody",
        "/api/servers/none",
        "/api/jobs/999/events",
    ):
        err = _error(admin.get(path), 404, "not_found")
        assert err["details"]["kind"] in {"job", "deployment", "tenant", "server"}
    _error(
        admin.put(
            "/api/quotas", json={"tenant": "nobody", "device_type": "rngd", "nominal_cards": 1}
        ),
        404,
        "not_found",
    )
    dev = _error(
        admin.post("/api/servers", json={"name": "x", "device_type": "tpu9", "num_cards": 1}),
        404,
        "not_found",
    )
    assert "furiosa_rngd" in dev["details"]["valid"]
    model = _error(
        populated["acme"].post(
            "/api/deployments", json={"name": "m", "model": "gpt-17", "device_type": "rngd"}
        ),
        404,
        "not_found",
    )
    assert model["details"]["kind"] == "model"
    _error(admin.delete("/api/keys/999"), 404, "not_found")
    _error(admin.patch("/api/deployments/999", json={"replicas": 1}), 404, "not_found")
    assert _snapshot(admin) == before


def test_duplicate_names_are_409(admin, populated):
    before = _snapshot(admin)
    _error(admin.post("/api/tenants", json={"name": "acme", "kind": "company"}), 409, "conflict")
    _error(
        admin.post("/api/servers", json={"name": "rngd-1", "device_type": "atom", "num_cards": 1}),
        409,
        "conflict",
    )
    _error(
        populated["acme"].post(
            "/api/deployments",
            json={"name": "chat", "model": "llama-3.1-8b", "device_type": "rngd"},
        ),
        409,
        "conflict",
    )
    assert _snapshot(admin) == before


def test_model_that_does_not_fit_is_422_with_min_tp(admin, populated):
    before = _snapshot(admin)
    err = _error(
        populated["acme"].post(
            "/api/deployments",
            json={
                "name": "big",
                "model": "llama-3.1-70b",
                "device_type": "rngd",
                "tp": 1,
                "precision": "bf16",
            },
        ),
        422,
        "does_not_fit",
    )
    assert err["details"]["min_tp"] > 1
    bad_precision = populated["acme"].post(
        "/api/deployments",
        json={"name": "p", "model": "llama-3.1-8b", "device_type": "rngd", "precision": "fp64"},
    )
    _error(bad_precision, 422, "invalid_request")
    assert _snapshot(admin) == before


def test_illegal_job_transitions_are_409_and_keep_state(admin, populated):
    job = populated["job"]
    assert job["state"] == "admitted"
    err = _error(
        admin.post(f"/api/jobs/{job['id']}/state", json={"state": "succeeded"}), 409, "conflict"
    )
    assert err["details"]["state"] == "admitted"
    assert admin.get(f"/api/jobs/{job['id']}").json()["state"] == "admitted"
    assert populated["kaist"].post(f"/api/jobs/{job['id']}/cancel").json()["state"] == "cancelled"
    _error(admin.post(f"/api/jobs/{job['id']}/state", json={"state": "running"}), 409, "conflict")


def test_keys_are_required_and_checked(anonymous, admin, populated):
    _error(anonymous.get("/api/tenants"), 401, "unauthenticated")
    bad = anonymous.get("/api/tenants", headers={"Authorization": "Bearer npc_wrong"})
    _error(bad, 401, "unauthenticated")
    assert anonymous.get("/healthz").json()["status"] == "ok"
    _error(
        populated["kaist"].post("/api/tenants", json={"name": "evil", "kind": "company"}),
        403,
        "permission_denied",
    )
    _error(populated["kaist"].post("/api/keys", json={"scope": "admin"}), 403, "permission_denied")
    _error(
        populated["kaist"].post(
            f"/api/jobs/{populated['job']['id']}/state", json={"state": "succeeded"}
        ),
        403,
        "permission_denied",
    )
    key = admin.post("/api/keys", json={"tenant": "kaist"}).json()
    assert admin.delete(f"/api/keys/{key['id']}").json()["revoked_at_s"] is not None
    revoked = anonymous.get("/api/whoami", headers={"Authorization": f"Bearer {key['key']}"})
    _error(revoked, 401, "unauthenticated")


def test_gangs_that_could_never_be_admitted_are_refused(admin, populated):
    before = _snapshot(admin)
    kaist = populated["kaist"]
    # 4 nominal + unlimited borrowing in a cohort: 8 is fine by quota, 16 exceeds every server.
    body = {"name": "w", "kind": "finetune", "device_type": "rngd", "num_cards": 16, "image": "i"}
    too_wide = _error(kaist.post("/api/jobs", json=body), 422, "invalid_request")
    assert too_wide["details"]["field"] == "num_cards"
    no_servers = kaist.post("/api/jobs", json={**body, "device_type": "h100", "num_cards": 1})
    _error(no_servers, 503, "capacity_unavailable")
    assert int(no_servers.headers["retry-after"]) >= 1
    admin.put(
        "/api/quotas",
        json={
            "tenant": "kaist",
            "device_type": "rngd",
            "nominal_cards": 1,
            "borrowing_limit_cards": 1,
            "cohort": "c",
        },
    )
    over = _error(kaist.post("/api/jobs", json={**body, "num_cards": 4}), 429, "quota_exceeded")
    assert (over["details"]["requested"], over["details"]["available"]) == (4, 2)
    after = _snapshot(admin)
    assert after["/api/jobs"] == before["/api/jobs"]
    assert after["/api/deployments"] == before["/api/deployments"]


@pytest.mark.parametrize("big", ["18446744073709551616", "9223372036854775808", "2147483648"])
def test_ids_beyond_any_row_are_not_found_not_500(admin, populated, big):
    before = _snapshot(admin)
    for method, path in (
        ("GET", f"/api/deployments/{big}"),
        ("PATCH", f"/api/deployments/{big}"),
        ("DELETE", f"/api/deployments/{big}"),
        ("GET", f"/api/jobs/{big}"),
        ("POST", f"/api/jobs/{big}/cancel"),
        ("DELETE", f"/api/quotas/{big}"),
        ("DELETE", f"/api/keys/{big}"),
        ("GET", f"/api/tenants/{big}"),
        ("GET", f"/api/servers/{big}"),
        ("GET", "/api/tenants/" + "1" * 5000),
    ):
        body = {"replicas": 1} if method == "PATCH" else None
        resp = admin.request(method, path, json=body)
        _error(resp, 404, "not_found")
    assert _snapshot(admin) == before


@pytest.mark.parametrize(
    ("path", "body", "field"),
    [
        ("PATCH dep", {"replicas": False}, "replicas"),
        ("PUT /api/quotas", {"tenant": "acme", "device_type": "rngd", "nominal_cards": True}, "nominal_cards"),
        ("POST /api/jobs", {"name": "j", "kind": "benchmark", "device_type": "rngd", "num_cards": True, "command": ["x"]}, "num_cards"),
        ("PATCH dep", {"replicas": "2"}, "replicas"),
        ("PUT /api/quotas", {"tenant": "acme", "device_type": "rngd", "nominal_cards": 1, "tokens_per_s": True}, "tokens_per_s"),
    ],
)  # fmt: skip
def test_booleans_and_strings_are_not_numbers(admin, populated, path, body, field):
    before = _snapshot(admin)
    method, _, url = path.partition(" ")
    if url == "dep":
        url = f"/api/deployments/{populated['dep']['id']}"
    error = _error(admin.request(method, url, json=body), 422, "invalid_request")
    assert field in error["message"]
    assert _snapshot(admin) == before  # {"replicas": false} did not scale to 0


def test_a_deeply_nested_body_is_a_400_without_internals(admin, populated):
    before = _snapshot(admin)
    deep = '{"name": ' + "[" * 100_000 + "]" * 100_000 + "}"
    resp = admin.post("/api/tenants", content=deep, headers={"Content-Type": "application/json"})
    error = _error(resp, 400, "invalid_request")
    assert "Recursion" not in resp.text and "maximum" not in error["message"]
    assert _snapshot(admin) == before


def test_api_bodies_are_bounded_and_the_key_is_checked_before_the_body(app, admin):
    from fastapi.testclient import TestClient

    big = b'{"name": "' + b"x" * (2 * 1024 * 1024) + b'", "kind": "company"}'
    resp = admin.post("/api/tenants", content=big, headers={"Content-Type": "application/json"})
    _error(resp, 413, "invalid_request")

    def chunks():
        for _ in range(64):
            yield b"x" * 65536

    resp = admin.post(
        "/api/tenants", content=chunks(), headers={"Content-Type": "application/json"}
    )
    _error(resp, 413, "invalid_request")
    with TestClient(app) as anonymous:
        for headers in ({}, {"Authorization": "Bearer npc_wrongwro_" + "x" * 43}):
            resp = anonymous.post("/api/tenants", content=big, headers=headers)
            _error(resp, 401, "unauthenticated")
    assert {t["name"] for t in admin.get("/api/tenants").json()} == set()


def test_metrics_and_docs_are_for_loopback_and_admins_unless_opened(
    app, admin_key, tmp_path, database_url
):
    from fastapi.testclient import TestClient

    from npucenter.api import create_app
    from npucenter.settings import Settings

    remote = TestClient(app, client=("203.0.113.7", 5000))
    for path in ("/openapi.json", "/docs", "/redoc"):
        _error(remote.get(path), 401, "unauthenticated")
        assert remote.get(path, headers={"Authorization": f"Bearer {admin_key}"}).status_code == 200
    for path in ("/metrics", "/v1/metrics", "/v1/x/metrics"):  # guarded before any mount
        _error(remote.get(path), 401, "unauthenticated")
    assert TestClient(app).get("/openapi.json").status_code == 200  # loopback
    opened = create_app(
        Settings(data_dir=tmp_path, database_url=database_url, open_endpoints=frozenset({"docs"})),
        migrate=False,
    )
    assert TestClient(opened, client=("203.0.113.7", 5000)).get("/openapi.json").status_code == 200
    opened.state.control.db.dispose()
