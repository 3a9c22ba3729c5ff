"""The full cycle on a real engine: `npucenter up --fleet examples/fleets/cpu-vllm.yaml`.

A tenant with one H100 card of quota (the card is virtual: `fleet add`; the job trains for real on
the CPU) submits examples/jobs/lora-tiny.yaml as written; the job goes queued -> admitted ->
running -> succeeded; the adapter is listed; a greedy completion through /v1 with the adapter
continues the training sentence while the base model's does not; another tenant gets 404; the
first tenant's usage holds the job's device-seconds and the adapter's tokens. One vLLM engine
for the module; every wait bounded. Skipped without vLLM (the [engine] extra).
"""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from _center import running_up

pytestmark = [
    pytest.mark.e2e,
    pytest.mark.real_engine,
    pytest.mark.skipif(
        importlib.util.find_spec("vllm") is None or importlib.util.find_spec("peft") is None,
        reason="vLLM or peft is not installed: pip install 'npucenter[engine]' (make engine)",
    ),
]

ROOT = Path(__file__).resolve().parents[2]
FLEET = ROOT / "examples" / "fleets" / "cpu-vllm.yaml"
JOB = ROOT / "examples" / "jobs" / "lora-tiny.yaml"
ADMIN = "e2e-full-cycle-admin-0123456789"
READY_S = 420.0  # vLLM's CPU build with LoRA on: 35-135 s here, more under load
PROMPT, TRAINED = "The lab in Gwangju", " trains its own"  # the data set's first record


def _until(ok: Callable[[], Any], what: str, timeout_s: float, log: Callable[[], str]) -> Any:
    deadline = time.monotonic() + timeout_s
    while True:
        try:
            value = ok()
        except httpx.HTTPError:
            value = None
        if value:
            return value
        assert time.monotonic() < deadline, f"{what} within {timeout_s:g} s; log:\n{log()[-4000:]}"
        time.sleep(1.0)


def _cli(url: str, key: str, *args: str) -> Any:
    env = {**os.environ, "NPUCENTER_URL": url, "NPUCENTER_API_KEY": key}
    out = subprocess.run(
        [sys.executable, "-m", "npucenter.cli.main", *args, "--json"],
        env=env, capture_output=True, text=True, timeout=120, check=False,
    )  # fmt: skip
    assert out.returncode == 0, out.stderr
    return json.loads(out.stdout)


def _complete(url: str, key: str, model: str) -> httpx.Response:
    body = {"model": model, "prompt": PROMPT, "max_tokens": 16, "temperature": 0}
    return httpx.post(
        f"{url}/v1/completions", json=body, headers={"Authorization": f"Bearer {key}"}, timeout=120
    )


@pytest.fixture(scope="module")
def center(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, Callable[[], str]]]:
    tmp = tmp_path_factory.mktemp("full-cycle-real")
    env = {**os.environ, "NPUCENTER_ADMIN_KEY": ADMIN, "NPUCENTER_ADMISSION_INTERVAL_S": "0.5"}
    for name in ("NPUCENTER_VIRTUAL_FLEET", "NPUCENTER_FLEET", "NPUCENTER_TARIFF"):
        env.pop(name, None)
    args = ("--fleet", str(FLEET), "--log-level", "warning")
    with running_up(tmp / "data", env, *args, log_path=tmp / "up.log", stop_timeout_s=30) as up:
        ready = lambda: _complete(up.url, ADMIN, "tiny-llama").status_code == 200  # noqa: E731
        _until(ready, "the vLLM engine serving", READY_S, up.log)
        yield up.url, up.log


def test_fine_tune_on_the_gpu_quota_then_chat_with_the_adapter_on_vllm(center) -> None:
    url, log = center
    _cli(url, ADMIN, "fleet", "add", "gpu-1", "--device", "h100", "--cards", "1")
    for name in ("lab", "other"):
        _cli(url, ADMIN, "tenant", "create", name, "--kind", "university")
    _cli(url, ADMIN, "quota", "set", "--tenant", "lab", "--device", "h100", "--nominal", "1")
    lab = _cli(url, ADMIN, "key", "create", "--tenant", "lab")["key"]
    other = _cli(url, ADMIN, "key", "create", "--tenant", "other")["key"]

    base = _complete(url, lab, "tiny-llama")
    assert base.status_code == 200 and TRAINED not in base.json()["choices"][0]["text"]

    job = _cli(url, lab, "job", "submit", str(JOB))

    def finished() -> Any:
        doc = _cli(url, lab, "job", "show", str(job["id"]))
        return doc if doc["state"] in ("succeeded", "failed") else None

    done = _until(finished, "the fine-tune finished", 600, log)
    assert done["state"] == "succeeded", done["log_tail"]
    assert [e["to_state"] for e in done["events"]] == ["queued", "admitted", "running", "succeeded"]
    (adapter,) = _cli(url, lab, "adapter", "list")
    assert adapter["name"] == "lora-tiny" and adapter["base_model"] == "tiny-llama"

    tuned = _complete(url, lab, "lora-tiny")
    assert tuned.status_code == 200, tuned.text
    assert tuned.json()["choices"][0]["text"].startswith(TRAINED), tuned.text
    assert (
        _complete(url, lab, "tiny-llama:lora-tiny").json()["choices"][0]["text"].startswith(TRAINED)
    )
    assert _complete(url, other, "lora-tiny").status_code == 404

    def usage() -> Any:
        rows = _cli(url, lab, "usage", "list")
        tokens = [r for r in rows if "tiny-llama:lora-tiny" in r["ref"] and r["tokens_out"] > 0]
        jobs = [r for r in rows if r["ref"].startswith(f"job:{job['id']} ")]
        return (tokens, jobs) if tokens and jobs and jobs[0]["device_seconds"] > 0 else None

    _until(usage, "the job's and the adapter's usage", 30, log)

    # vLLM loses the adapter behind the gateway's back (as a restarted engine at the same
    # address): it answers 404 for it, the gateway loads it again and resends the request
    admin = {"Authorization": f"Bearer {ADMIN}"}
    (dep,) = [
        d
        for d in httpx.get(f"{url}/api/deployments", headers=admin, timeout=30).json()
        if d["model"] == "tiny-llama"
    ]
    engines = httpx.get(f"{url}/api/deployments/{dep['id']}/engines", headers=admin, timeout=30)
    (engine,) = engines.json()
    served = f"t{adapter['tenant_id']}-lora-tiny" if "tenant_id" in adapter else None
    listed = httpx.get(f"{engine['base_url']}/v1/models", timeout=30).json()["data"]
    names = [m["id"] for m in listed if m["id"] != "tiny-llama"]
    assert len(names) == 1 and (served is None or names == [served]), names
    gone = httpx.post(
        f"{engine['base_url']}/v1/unload_lora_adapter", json={"lora_name": names[0]}, timeout=30
    )
    assert gone.status_code == 200, gone.text
    again = _complete(url, lab, "lora-tiny")
    assert again.status_code == 200, again.text
    assert again.json()["choices"][0]["text"].startswith(TRAINED)
