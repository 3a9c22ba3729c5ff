"""Nested cohorts, stop policy, unnamed device types and fungible jobs through the API."""

from __future__ import annotations


def _setup(admin, tenant_client):
    admin.post("/api/servers", json={"name": "rngd-1", "device_type": "rngd", "num_cards": 8})
    for name, kind in (("acme", "company"), ("cs", "university"), ("physics", "university")):
        tenant_client(name, kind)


def test_a_cohort_with_cards_of_its_own_lends_them_to_its_departments(admin, tenant_client):
    _setup(admin, tenant_client)
    assert admin.put("/api/cohorts", json={"name": "center"}).status_code == 200
    univ = admin.put(
        "/api/cohorts",
        json={"name": "univ", "parent": "center", "nominal_cards": {"rngd": 2},
              "borrowing_limit_cards": {"rngd": 0}},
    )  # fmt: skip
    assert univ.status_code == 200 and univ.json()["nominal_cards"] == {"furiosa_rngd": 2}
    admin.put("/api/cohorts", json={"name": "acme-co", "parent": "center"})
    for tenant, cohort, cards in (
        ("acme", "acme-co", 4),
        ("cs", "univ", 1),
        ("physics", "univ", 1),
    ):
        r = admin.put(
            "/api/quotas",
            json={"tenant": tenant, "device_type": "rngd", "nominal_cards": cards,
                  "cohort": cohort},
        )  # fmt: skip
        assert r.status_code == 200, r.text
    assert [c["name"] for c in admin.get("/api/cohorts").json()] == ["acme-co", "center", "univ"]
    for i in range(6):
        r = admin.post(
            "/api/jobs",
            json={"tenant": "cs", "name": f"j{i}", "kind": "finetune", "device_type": "rngd",
                  "num_cards": 1, "image": "img"},
        )  # fmt: skip
        assert r.status_code == 201, r.text
    states = [j["state"] for j in admin.get("/api/jobs").json()]
    # cs: 1 nominal + physics' 1 + the university's 2; the university may not borrow from acme
    assert states.count("queued") == 2
    report = admin.post("/api/admission/cycle").json()
    assert {p["reason"] for p in report["pending"]} == {"quota_in_use"}


def test_cohort_loops_and_bad_cards_are_refused(admin):
    admin.put("/api/cohorts", json={"name": "a", "parent": "b"})
    loop = admin.put("/api/cohorts", json={"name": "b", "parent": "a"})
    assert loop.status_code in (400, 422)
    assert loop.json()["error"]["code"] == "invalid_request"
    bad = admin.put("/api/cohorts", json={"name": "c", "nominal_cards": {"rngd": -1}})
    assert bad.status_code in (400, 422)
    assert admin.delete("/api/cohorts/nope").status_code == 404
    assert admin.delete("/api/cohorts/a").status_code == 204


def test_a_held_tenant_admits_nothing_and_the_reason_says_so(admin, tenant_client):
    _setup(admin, tenant_client)
    r = admin.put(
        "/api/quotas",
        json={"tenant": "acme", "device_type": "rngd", "nominal_cards": 4, "stop_policy": "hold"},
    )
    assert r.status_code == 200 and r.json()["stop_policy"] == "hold"
    r = admin.post(
        "/api/jobs",
        json={"tenant": "acme", "name": "j", "kind": "finetune", "device_type": "rngd",
              "num_cards": 1, "image": "i"},
    )  # fmt: skip
    assert r.status_code == 201, r.text
    report = admin.post("/api/admission/cycle").json()
    assert [p["reason"] for p in report["pending"]] == ["held"]


def test_a_fungible_job_runs_on_its_fallback_device_and_is_refused_only_if_none_could(
    admin, tenant_client
):
    _setup(admin, tenant_client)
    admin.post("/api/servers", json={"name": "h100-1", "device_type": "h100", "num_cards": 8})
    for device, cards in (("rngd", 1), ("h100", 2)):
        admin.put(
            "/api/quotas", json={"tenant": "acme", "device_type": device, "nominal_cards": cards}
        )
    job = {"tenant": "acme", "kind": "finetune", "num_cards": 2, "image": "img"}
    r = admin.post(
        "/api/jobs",
        json={**job, "name": "f", "device_type": "rngd", "fallback_device_types": ["h100"]},
    )
    assert r.status_code == 201, r.text
    placed = r.json()
    assert placed["state"] == "admitted" and placed["device_type"] == "nvidia_h100_sxm"
    assert placed["device_types"] == ["furiosa_rngd", "nvidia_h100_sxm"]
    # 2 rngd cards exceed acme's rngd limit (no cohort): refused unless another type could
    alone = admin.post("/api/jobs", json={**job, "name": "g", "device_type": "rngd"})
    assert alone.status_code == 429


def test_the_live_cycle_shares_by_recent_usage_when_the_setting_says_so(app, admin, tenant_client):
    from dataclasses import replace

    control = app.state.control
    control.settings = replace(control.settings, admission_policy="fair_sharing_basis=usage")
    admin.post("/api/servers", json={"name": "rngd-1", "device_type": "rngd", "num_cards": 8})
    for name in ("heavy", "light", "lender"):
        tenant_client(name, "university")
        cards = 2 if name == "lender" else 1  # the cohort lends 2 idle cards
        admin.put(
            "/api/quotas",
            json={"tenant": name, "device_type": "rngd", "nominal_cards": cards, "cohort": "c"},
        )
    with control.tx() as repo:  # heavy used the center for hours
        heavy = repo.get_tenant("heavy")
        repo.append_usage(
            tenant_id=heavy.id, kind="job", device_type="furiosa_rngd", device_seconds=50_000.0
        )
    # both queue while the server is down (no cycle admits anything), then it comes back
    admin.patch("/api/servers/rngd-1", json={"health": "down"})
    for name in ("heavy", "light"):
        for i in range(4):
            r = admin.post(
                "/api/jobs",
                json={"tenant": name, "name": f"{name}{i}", "kind": "finetune",
                      "device_type": "rngd", "num_cards": 1, "image": "img"},
            )  # fmt: skip
            assert r.status_code == 201, r.text
    admin.patch("/api/servers/rngd-1", json={"health": "healthy"})
    admin.post("/api/admission/cycle")
    held: dict[str, int] = {}
    for job in admin.get("/api/jobs").json():
        if job["state"] != "queued":
            held[job["tenant"]] = held.get(job["tenant"], 0) + 1
    # each its nominal card; both borrowed cards go to the tenant with less recent use
    assert (held["light"], held["heavy"]) == (3, 1)
