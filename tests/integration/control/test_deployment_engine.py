"""A deployment names its engine through the API (`deploy create --engine`); the reconciler runs
what the row says; a bad engine entry is refused before anything is stored."""

from __future__ import annotations

from npucenter.gateway.reconciler import wanted_replicas


def _deploy(admin, **extra):  # type: ignore[no-untyped-def]
    body = {
        "name": "chat",
        "model": "tiny-llama",
        "device_type": "h100",
        "precision": "bf16",
        "replicas": 1,
        "tenant": "lab",
        **extra,
    }
    return admin.post("/api/deployments", json=body)


def _setup(admin) -> None:  # type: ignore[no-untyped-def]
    assert admin.post("/api/tenants", json={"name": "lab", "kind": "university"}).status_code == 201
    assert (
        admin.post(
            "/api/servers", json={"name": "h100-0", "device_type": "h100", "num_cards": 2}
        ).status_code
        == 201
    )
    quota = {"tenant": "lab", "device_type": "h100", "nominal_cards": 2}
    assert admin.put("/api/quotas", json=quota).status_code in (200, 201)


def test_the_row_names_the_engine_and_the_reconciler_runs_it(admin, app) -> None:  # type: ignore[no-untyped-def]
    _setup(admin)
    options = {"base_url": "http://10.0.0.7:8000", "api_key_env": "TEAM_KEY"}
    resp = _deploy(admin, engine="external", engine_options=options)
    assert resp.status_code == 201, resp.text
    doc = resp.json()
    assert doc["engine"] == "external" and doc["engine_options"] == options
    with app.state.control.tx() as repo:
        (wanted,) = wanted_replicas(repo)
    assert wanted.engine.is_external and wanted.engine.base_url == "http://10.0.0.7:8000"
    assert wanted.engine.api_key_env == "TEAM_KEY"


def test_a_default_deployment_is_virtual(admin, app) -> None:  # type: ignore[no-untyped-def]
    _setup(admin)
    assert _deploy(admin).json()["engine"] == "virtual"
    with app.state.control.tx() as repo:
        (wanted,) = wanted_replicas(repo)
    assert wanted.engine.name == "virtual"


def test_a_bad_engine_entry_is_refused_and_nothing_is_stored(admin) -> None:  # type: ignore[no-untyped-def]
    _setup(admin)
    assert _deploy(admin, engine="tgi").status_code == 404  # unknown engine: valid ones listed
    assert _deploy(admin, engine="external").status_code == 422  # no base_url
    bad_option = _deploy(admin, engine="vllm", engine_options={"gpus": 2})
    assert bad_option.status_code == 422
    assert admin.get("/api/deployments").json() == []
