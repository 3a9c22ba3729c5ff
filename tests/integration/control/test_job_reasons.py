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


def test_a_waiting_job_says_why_and_the_row_is_written_once(admin) -> None:
    """The admission cycle's pending reason becomes the waiting job's latest history row,
    written again only when the reason changes (not once per cycle)."""
    assert admin.post("/api/tenants", json={"name": "lab", "kind": "university"}).is_success
    assert admin.put(
        "/api/quotas", json={"tenant": "lab", "device_type": "h100", "nominal_cards": 1}
    ).is_success
    assert admin.post(
        "/api/servers", json={"name": "s1", "device_type": "h100", "num_cards": 1}
    ).is_success
    ids = []
    for i in range(2):
        job = {"name": f"j{i}", "kind": "benchmark", "device_type": "h100", "num_cards": 1,
               "command": ["true"], "tenant": "lab"}  # fmt: skip
        made = admin.post("/api/jobs", json=job)
        assert made.status_code == 201, made.text
        ids.append(made.json()["id"])
    for _ in range(3):  # several cycles, nothing changes
        assert admin.post("/api/admission/cycle").is_success
    first, second = (admin.get(f"/api/jobs/{i}").json() for i in ids)
    assert first["state"] != "queued" and second["state"] == "queued"
    events = admin.get(f"/api/jobs/{ids[1]}/events").json()
    waiting = [e for e in events if e["from_state"] == "queued" and e["to_state"] == "queued"]
    assert len(waiting) == 1, events  # once, not per cycle
    assert second["latest_reason"] == waiting[0]["reason"] != "submitted"
    assert ":" in waiting[0]["reason"] and "lab" in waiting[0]["reason"]  # code: message
    # the first job ends: the second is admitted and its waiting row stays history
    assert admin.post(f"/api/jobs/{ids[0]}/cancel").is_success
    assert admin.post("/api/admission/cycle").is_success
    assert admin.get(f"/api/jobs/{ids[1]}").json()["state"] != "queued"
