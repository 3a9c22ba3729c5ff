"""``latest_reason`` of ``GET /api/jobs``: each job's latest history reason, in one query."""

from __future__ import annotations


def test_every_listed_job_carries_its_latest_history_reason(admin) -> None:
    assert admin.post("/api/tenants", json={"name": "lab", "kind": "university"}).is_success
    assert admin.put(
        "/api/quotas", json={"tenant": "lab", "device_type": "h100", "nominal_cards": 2}
    ).is_success
    assert admin.post(
        "/api/servers", json={"name": "s1", "device_type": "h100", "num_cards": 2}
    ).is_success
    ids = []
    for i, cards in enumerate((2, 2, 1)):  # the first fits; the others wait
        job = {
            "name": f"j{i}",
            "kind": "benchmark",
            "device_type": "h100",
            "num_cards": cards,
            "command": ["true"],
            "tenant": "lab",
        }
        made = admin.post("/api/jobs", json=job)
        assert made.status_code == 201, made.text
        ids.append(made.json()["id"])
    assert admin.post(f"/api/jobs/{ids[2]}/cancel").is_success
    listed = {j["id"]: j for j in admin.get("/api/jobs").json()}
    assert set(listed) == set(ids)
    reasons = set()
    for job_id in ids:
        events = admin.get(f"/api/jobs/{job_id}/events").json()
        assert listed[job_id]["latest_reason"] == events[-1]["reason"]
        assert admin.get(f"/api/jobs/{job_id}").json()["latest_reason"] == events[-1]["reason"]
        reasons.add(events[-1]["reason"])
    assert len(reasons) == 3  # admitted, waiting, cancelled: three different reasons
