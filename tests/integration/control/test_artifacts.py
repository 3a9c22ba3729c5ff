"""Data sets, program jobs and adapters through the API, with jobs really run by the runner.

A tenant uploads a JSONL data set (checked, checksummed, invisible to others), submits a
``finetune`` job with a spec (no command): the runner copies the data set and the tiny base
model into the job's sandboxed work dir, the program trains a LoRA adapter on CPU torch, and the
adapter is registered under the tenant; the job's cards are billed to it.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import shutil
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from npucenter.api import create_app
from npucenter.api.runner import make_job_runner
from npucenter.settings import Settings

pytest.importorskip("peft")
ROOT = Path(__file__).resolve().parents[3]
DATA = (ROOT / "examples" / "jobs" / "lora-tiny.jsonl").read_text()


@pytest.fixture(scope="module")
def tiny_model(tmp_path_factory) -> Path:
    from npucenter.engines.tiny import ensure_tiny_model

    path = tmp_path_factory.mktemp("models") / "tiny-llama"
    ensure_tiny_model(path)
    return path


@pytest.fixture
def center(database_url, tmp_path, clock, admin_key, tiny_model):
    shutil.copytree(tiny_model, tmp_path / "models" / "tiny-llama")
    settings = Settings(data_dir=tmp_path, database_url=database_url, admin_key=admin_key)
    app = create_app(settings, now_s=clock.now_s, migrate=False)
    yield app
    app.state.control.db.dispose()


@pytest.fixture
def admin(center, admin_key):
    with TestClient(center, headers={"Authorization": f"Bearer {admin_key}"}) as client:
        assert (
            client.post(
                "/api/servers", json={"name": "gpu-1", "device_type": "h100", "num_cards": 8}
            ).status_code
            == 201
        )
        yield client


def _tenant(admin, app, name):
    assert admin.post("/api/tenants", json={"name": name, "kind": "university"}).status_code == 201
    body = {"tenant": name, "device_type": "h100", "nominal_cards": 1}
    assert admin.put("/api/quotas", json=body).status_code == 200
    key = admin.post("/api/keys", json={"tenant": name}).json()["key"]
    return TestClient(app, headers={"Authorization": f"Bearer {key}"})


def _upload(client, name, content, **extra):
    return client.post("/api/datasets", json={"name": name, "content": content, **extra})


def test_datasets_are_checked_owned_and_counted(admin, center):
    lab = _tenant(admin, center, "lab")
    other = _tenant(admin, center, "other")
    digest = hashlib.sha256(DATA.encode()).hexdigest()
    r = _upload(lab, "tiny", DATA, sha256=digest)
    assert r.status_code == 201, r.text
    doc = r.json()
    assert doc["num_records"] == DATA.count("\n") and doc["sha256"] == digest
    assert _upload(lab, "tiny", DATA).status_code == 200  # the same bytes: kept once
    assert _upload(lab, "tiny", DATA + '{"text": "more"}\n').status_code == 409
    bad = _upload(lab, "bad", DATA + '{"text": 1}\n')
    assert bad.status_code == 400
    assert bad.json()["error"]["details"]["line"] == DATA.count("\n") + 1
    wrong = _upload(lab, "wrong", DATA, sha256="0" * 64)
    assert wrong.status_code == 400 and wrong.json()["error"]["details"]["sha256"] == digest

    assert other.get(f"/api/datasets/{doc['id']}").status_code == 404
    assert other.get("/api/datasets/tiny").status_code == 404
    assert other.delete(f"/api/datasets/{doc['id']}").status_code == 404
    assert other.get("/api/datasets").json() == []
    used = {u["tenant"]: u for u in admin.get("/api/storage").json()}
    assert (
        used["lab"]["total_bytes"] == len(DATA.encode()) == used["lab"]["bytes_by_kind"]["dataset"]
    )
    assert used["other"]["total_bytes"] == 0
    assert [u["tenant"] for u in other.get("/api/storage").json()] == ["other"]
    assert lab.delete("/api/datasets/tiny").status_code == 204
    assert lab.get("/api/storage").json()[0]["total_bytes"] == 0
    assert not any((center.state.control.settings.data_dir / "artifacts").rglob("*.jsonl"))


def test_a_finetune_job_trains_registers_its_adapter_and_bills_its_card(admin, center, clock):
    lab = _tenant(admin, center, "lab")
    other = _tenant(admin, center, "other")
    assert _upload(lab, "tiny", DATA).status_code == 201
    spec = {
        "base_model": "tiny-llama",
        "dataset": "tiny",
        "adapter": "lab-tiny",
        "steps": 4,
        "checkpoint_every": 2,
        "max_seq_len": 32,
    }
    body = {"name": "ft", "kind": "finetune", "device_type": "h100", "spec": spec}
    # another tenant cannot name the lab's data set
    assert other.post("/api/jobs", json=body).status_code == 404
    assert lab.post("/api/jobs", json=body | {"command": ["true"]}).status_code == 400
    r = lab.post("/api/jobs", json=body)
    assert r.status_code == 201, r.text
    job = r.json()
    assert job["state"] == "admitted" and job["command"][1:3] == ["-m", "npucenter.jobs.finetune"]

    runner = make_job_runner(center.state.control, grace_s=1.0)
    try:
        assert asyncio.run(runner.tick()).started == [job["id"]]
        clock.advance(30.0)
        assert asyncio.run(runner.wait_exited(job["id"], 240.0)) is not None
        asyncio.run(runner.tick())
    finally:
        asyncio.run(runner.shutdown())
    done = lab.get(f"/api/jobs/{job['id']}").json()
    assert done["state"] == "succeeded", done["log_tail"]
    assert (
        "step 4/4 loss" in done["log_tail"] and "adapter 'lab-tiny' registered" in done["log_tail"]
    )
    result = lab.get(f"/api/jobs/{job['id']}/result").json()
    assert [s for s, _ in result["loss_curve"]] == [1, 2, 3, 4]
    assert result["final_loss"] < result["initial_loss"]

    adapters = lab.get("/api/adapters").json()
    assert [(a["name"], a["base_model"], a["rank"], a["source_job_id"]) for a in adapters] == [
        ("lab-tiny", "tiny-llama", 8, job["id"])
    ]
    assert adapters[0]["num_bytes"] > 0 and adapters[0]["served_as"] == "tiny-llama:lab-tiny"
    assert other.get("/api/adapters/lab-tiny").status_code == 404
    assert other.get(f"/api/adapters/{adapters[0]['id']}").status_code == 404
    used = lab.get("/api/storage").json()[0]["bytes_by_kind"]
    assert used["adapter"] == adapters[0]["num_bytes"]
    rows = [u for u in lab.get("/api/usage").json() if u["ref"].startswith(f"job:{job['id']} ")]
    assert rows and "h100" in rows[0]["device_type"] and rows[0]["device_seconds"] >= 30.0
    assert rows[0]["energy_j"] > 0
    # a second fine-tune may not take the same adapter name
    assert lab.post("/api/jobs", json=body).status_code == 409
    assert lab.delete("/api/adapters/lab-tiny").status_code == 204
    assert lab.get("/api/adapters").json() == []
    assert "adapter" not in lab.get("/api/storage").json()[0]["bytes_by_kind"]
    # the job's work dir held the inputs; the data dir was never bound into it
    work = Path(center.state.control.settings.data_dir) / "jobs" / f"job-{job['id']}" / "work"
    assert json.loads((work / "spec.json").read_text())["dataset"] == "inputs/data.jsonl"


def test_a_preprocess_job_stores_the_packed_data_set_a_fine_tune_can_name(admin, center):
    lab = _tenant(admin, center, "lab")
    assert _upload(lab, "tiny", DATA).status_code == 201
    spec = {"base_model": "tiny-llama", "dataset": "tiny", "max_seq_len": 16}
    body = {"name": "pp", "kind": "preprocess", "device_type": "h100", "spec": spec}
    job = lab.post("/api/jobs", json=body).json()
    assert job["command"][1:3] == ["-m", "npucenter.jobs.preprocess"]
    # a spec is for the center's programs only; a missing base model is named
    bench = body | {"kind": "benchmark"}
    assert lab.post("/api/jobs", json=bench).status_code == 422
    missing = body | {"spec": spec | {"base_model": "no-such-model"}}
    assert lab.post("/api/jobs", json=missing).json()["error"]["code"] == "not_found"

    runner = make_job_runner(center.state.control, grace_s=1.0)
    try:
        assert asyncio.run(runner.tick()).started == [job["id"]]
        assert asyncio.run(runner.wait_exited(job["id"], 120.0)) is not None
        asyncio.run(runner.tick())
    finally:
        asyncio.run(runner.shutdown())
    done = lab.get(f"/api/jobs/{job['id']}").json()
    assert done["state"] == "succeeded", done["log_tail"]
    assert "tokenised" in done["log_tail"]
    result = lab.get(f"/api/jobs/{job['id']}/result").json()
    packed = lab.get("/api/datasets/tiny-packed").json()
    assert packed["format"] == "packed-jsonl" and packed["source_job_id"] == job["id"]
    assert packed["num_records"] == result["num_rows"] >= result["num_tokens"] // 16
