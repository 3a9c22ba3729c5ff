"""Device fallback lists for deployments (issue 17): each replica runs on the first device type
with quota and room, the store records the type per replica, its engine is that device family's,
and its device-seconds are billed to that type."""

from __future__ import annotations

from npucenter.gateway.reconciler import wanted_replicas

RNGD, H100 = "furiosa_rngd", "nvidia_h100_sxm"


def _setup(admin, *, rngd: int = 1, h100: int = 2) -> None:  # type: ignore[no-untyped-def]
    assert admin.post("/api/tenants", json={"name": "lab", "kind": "university"}).status_code == 201
    for name, device in (("rngd-0", "rngd"), ("h100-0", "h100")):
        body = {"name": name, "device_type": device, "num_cards": 4}
        assert admin.post("/api/servers", json=body).status_code == 201
    for device, cards in (("rngd", rngd), ("h100", h100)):
        quota = {"tenant": "lab", "device_type": device, "nominal_cards": cards}
        assert admin.put("/api/quotas", json=quota).status_code in (200, 201)


def _deploy(admin, **extra):  # type: ignore[no-untyped-def]
    body = {
        "name": "chat",
        "model": "llama-3.1-8b",
        "device_type": "rngd",
        "fallback_device_types": ["h100"],
        "replicas": 3,
        "tenant": "lab",
        **extra,
    }
    return admin.post("/api/deployments", json=body)


def test_replicas_fill_the_first_type_then_fall_back_and_the_store_records_each_type(
    admin, app
) -> None:  # type: ignore[no-untyped-def]
    _setup(admin, rngd=1, h100=2)
    resp = _deploy(admin)
    assert resp.status_code == 201, resp.text
    doc = resp.json()
    assert doc["device_type"] == RNGD and doc["device_types"] == [RNGD, H100]
    assert doc["num_placed_replicas"] == 3
    placed = [r["device_type"] for r in doc["replica_states"]]
    assert sorted(placed) == [RNGD, H100, H100]  # rngd's one card first, then h100's two
    with app.state.control.tx() as repo:
        wanted = wanted_replicas(repo)
    assert sorted(w.device for w in wanted) == sorted(placed)
    assert {w.server for w in wanted if w.device == H100} == {"h100-0"}


def test_each_replica_is_served_by_its_device_familys_engine(admin, app) -> None:  # type: ignore[no-untyped-def]
    _setup(admin, rngd=1, h100=1)
    resp = _deploy(
        admin, engine="vllm", replicas=2, device_type="h100", fallback_device_types=["rngd"]
    )
    assert resp.status_code == 201, resp.text
    with app.state.control.tx() as repo:
        engines = {w.device: w.engine.name for w in wanted_replicas(repo)}
    assert engines == {H100: "vllm", RNGD: "furiosa-llm"}


def test_a_replica_released_is_billed_to_the_type_it_ran_on_and_chosen_again(
    admin, app, clock
) -> None:  # type: ignore[no-untyped-def]
    _setup(admin, rngd=0, h100=1)
    resp = _deploy(admin, replicas=1)
    assert resp.status_code == 201, resp.text
    assert [r["device_type"] for r in resp.json()["replica_states"]] == [H100]
    clock.advance(100.0)
    dep_id = resp.json()["id"]
    scaled = admin.patch(f"/api/deployments/{dep_id}", json={"replicas": 0})
    assert scaled.status_code == 200, scaled.text
    with app.state.control.tx() as repo:
        rows = [u for u in repo.list_usage() if u.device_seconds > 0]
    assert {u.device_type for u in rows} == {H100}
    assert sum(u.device_seconds for u in rows) == 100.0  # one card for 100 s
    again = admin.patch(f"/api/deployments/{dep_id}", json={"replicas": 1}).json()
    assert [r["device_type"] for r in again["replica_states"]] == [H100]


def test_a_list_the_model_cannot_run_on_or_naming_a_type_twice_is_refused(admin) -> None:  # type: ignore[no-untyped-def]
    _setup(admin)
    twice = _deploy(admin, fallback_device_types=["h100", "rngd"])
    assert twice.status_code == 422
    assert twice.json()["error"]["code"] == "invalid_request"
    lora = _deploy(admin, engine="vllm", device_type="h100", fallback_device_types=["rngd"],
                   engine_options={"enable_lora": True})  # fmt: skip
    assert lora.status_code == 501  # furiosa-llm serves no LoRA adapters
    assert admin.get("/api/deployments").json() == []


def test_a_list_is_admissible_when_one_type_could_hold_a_replica(admin) -> None:  # type: ignore[no-untyped-def]
    _setup(admin, rngd=0, h100=0)
    alone = _deploy(admin, name="one", fallback_device_types=[])
    assert alone.status_code == 429  # no rngd quota at all: never admissible
    quota = {"tenant": "lab", "device_type": "h100", "nominal_cards": 1}
    admin.put("/api/quotas", json=quota)
    fungible = _deploy(admin, name="two", replicas=2)
    assert fungible.status_code == 201, fungible.text
    states = fungible.json()["replica_states"]
    assert [r["device_type"] for r in states if r["state"] == "placed"] == [H100]
    report = admin.post("/api/admission/cycle").json()
    (waiting,) = report["pending"]
    assert waiting["reason"] == "quota_in_use" and "accepts" in waiting["message"]
