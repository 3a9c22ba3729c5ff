"""The full cycle on a virtual fleet (fast tier): upload -> fine-tune -> adapter -> /v1.

`npucenter up` with a fleet whose tiny-llama replica is the virtual engine (the twin's), the job
runner and the CLI as subprocesses. A tenant with one H100 card of quota submits a copy of
examples/jobs/lora-tiny.yaml (fewer steps: the training is real, on CPU torch); the job goes
queued -> admitted -> running -> succeeded; its adapter is listed; requests naming it (bare and
``base:adapter``) are served by the base model's replica after a runtime load; another tenant
gets 404 and does not see it in /v1/models; usage holds the job's device-seconds and the
adapter's tokens; deleting it unloads it.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml
from _center import CLI, running_up

pytestmark = pytest.mark.e2e
pytest.importorskip("peft")

ROOT = Path(__file__).resolve().parents[2]
JOB = ROOT / "examples" / "jobs" / "lora-tiny.yaml"
FLEET = {
    "name": "virtual-lora",
    "servers": [{"device": "h100", "count": 1, "cards_per_server": 4}],
    "services": [{"model": "tiny-llama", "device": "h100", "replicas": 1, "max_num_seqs": 8}],
    "tariff_usd_per_device_hour": {"h100": 2.0},
}


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, str]]:
    from npucenter.engines.tiny import ensure_tiny_model

    tmp = tmp_path_factory.mktemp("full-cycle")
    ensure_tiny_model(tmp / "data" / "models" / "tiny-llama")
    (tmp / "fleet.yaml").write_text(yaml.safe_dump(FLEET))
    env = {k: v for k, v in os.environ.items() if not k.startswith("NPUCENTER_")}
    env |= {"NPUCENTER_ADMISSION_INTERVAL_S": "0.5"}
    log_path = tmp / "server.log"
    args = ("--fleet", str(tmp / "fleet.yaml"))
    with running_up(tmp / "data", env, *args, log_path=log_path) as up:
        key = re.findall(r"admin key \(shown once, store it now\): (\S+)", up.log())
        yield {"url": up.url, "admin_key": key[0], "log": str(log_path), "tmp": str(tmp)}


def _cli(server: dict[str, str], *args: str, key: str) -> Any:
    env = {k: v for k, v in os.environ.items() if not k.startswith("NPUCENTER_")}
    env |= {"NPUCENTER_URL": server["url"], "NPUCENTER_API_KEY": key, "COLUMNS": "200"}
    out = subprocess.run([*CLI, *args], capture_output=True, text=True, env=env, timeout=120)
    assert out.returncode == 0, out.stderr
    return json.loads(out.stdout) if "--json" in args else out.stdout


def _until(ok: Any, what: str, timeout_s: float, log: str) -> Any:
    deadline = time.monotonic() + timeout_s
    while True:
        value = ok()
        if value:
            return value
        assert time.monotonic() < deadline, f"{what}; log:\n{Path(log).read_text()[-3000:]}"
        time.sleep(0.3)


def _complete(server: dict[str, str], key: str, model: str) -> httpx.Response:
    body = {"model": model, "prompt": "The lab in Gwangju", "max_tokens": 4, "temperature": 0}
    headers = {"Authorization": f"Bearer {key}"}
    return httpx.post(f"{server['url']}/v1/completions", json=body, headers=headers, timeout=60)


def test_fine_tune_then_serve_the_adapter_on_the_virtual_engine(server, tmp_path: Path) -> None:
    admin = server["admin_key"]
    cli = lambda *a, key=admin: _cli(server, *a, key=key)  # noqa: E731
    for name in ("lab", "other"):
        cli("tenant", "create", name, "--kind", "university", "--json")
        cli("quota", "set", "--tenant", name, "--device", "h100", "--nominal", "1", "--json")
    lab = cli("key", "create", "--tenant", "lab", "--json")["key"]
    other = cli("key", "create", "--tenant", "other", "--json")["key"]

    job_file = yaml.safe_load(JOB.read_text())
    job_file["finetune"].update(steps=6, checkpoint_every=3)
    (tmp_path / "job.yaml").write_text(yaml.safe_dump(job_file))
    shutil.copy(JOB.with_suffix(".jsonl"), tmp_path / "lora-tiny.jsonl")
    job = cli("job", "submit", str(tmp_path / "job.yaml"), "--json", key=lab)
    assert job["kind"] == "finetune" and "h100" in job["device_type"]
    assert cli("dataset", "list", "--json", key=lab)[0]["name"] == "lora-tiny"
    assert cli("dataset", "list", "--json", key=other) == []

    def finished() -> Any:
        doc = cli("job", "show", str(job["id"]), "--json", key=lab)
        return doc if doc["state"] in ("succeeded", "failed") else None

    done = _until(finished, "the fine-tune finished", 300, server["log"])
    assert done["state"] == "succeeded", done["log_tail"]
    states = [e["to_state"] for e in done["events"]]
    assert states == ["queued", "admitted", "running", "succeeded"]
    result = cli("job", "result", str(job["id"]), "--json", key=lab)
    assert len(result["loss_curve"]) == 6 and result["final_loss"] < result["initial_loss"]

    (adapter,) = cli("adapter", "list", "--json", key=lab)
    assert (adapter["name"], adapter["base_model"]) == ("lora-tiny", "tiny-llama")
    assert adapter["source_job_id"] == job["id"]
    assert cli("adapter", "list", "--json", key=other) == []

    for model in ("lora-tiny", "tiny-llama:lora-tiny"):
        resp = _complete(server, lab, model)
        assert resp.status_code == 200, resp.text
        assert resp.json()["usage"]["completion_tokens"] == 4
    for model in ("lora-tiny", "tiny-llama:lora-tiny"):
        assert _complete(server, other, model).status_code == 404
    headers = lambda k: {"Authorization": f"Bearer {k}"}  # noqa: E731
    seen = {
        m["id"]
        for m in httpx.get(f"{server['url']}/v1/models", headers=headers(lab)).json()["data"]
    }
    assert {"tiny-llama", "lora-tiny"} <= seen
    seen = {
        m["id"]
        for m in httpx.get(f"{server['url']}/v1/models", headers=headers(other)).json()["data"]
    }
    assert "lora-tiny" not in seen and "tiny-llama" in seen

    def usage() -> Any:
        rows = cli("usage", "list", "--json", key=lab)
        tokens = [r for r in rows if "tiny-llama:lora-tiny" in r["ref"]]
        jobs = [r for r in rows if r["ref"].startswith(f"job:{job['id']} ")]
        return (tokens, jobs) if len(tokens) >= 2 and jobs else None

    tokens, jobs = _until(usage, "usage rows", 30, server["log"])
    assert all(r["tokens_out"] == 4 for r in tokens)
    assert jobs[0]["device_seconds"] > 0 and jobs[0]["energy_j"] > 0

    cli("adapter", "delete", "lora-tiny", "--json", key=lab)
    assert _complete(server, lab, "lora-tiny").status_code == 404
