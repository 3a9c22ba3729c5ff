"""An external replica: a server started outside the center (the bench stub, with its own API
key) named in the fleet file is health-checked, routed, metered and shown on the dashboard like
the others; its upstream key (from an environment variable) is never printed."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import openai
import pytest
from _center import running_up, stop, wait_healthy

from npucenter.executors import free_port

pytestmark = pytest.mark.e2e

ADMIN = "e2e-external-admin-0123456789ab"
UPSTREAM_KEY = "sk-team-vllm-upstream-0123456789"
FLEET = """\
name: external
servers:
  - {{device: h100, count: 1, cards_per_server: 1}}
services:
  - model: tiny-llama
    device: h100
    precision: bf16
    replicas: 1
    engine: {{name: external, base_url: "{base_url}", api_key_env: TEAM_VLLM_KEY}}
tariff_usd_per_device_hour: {{h100: 2.0}}
"""


@pytest.fixture
def stub() -> Iterator[str]:
    port = free_port()
    argv = [sys.executable, "-m", "npucenter.bench.stub", "--port", str(port)]
    argv += ["--model", "tiny-llama", "--api-key", UPSTREAM_KEY]
    proc = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    url = f"http://127.0.0.1:{port}"
    try:
        wait_healthy(url, proc, what="bench stub", path="/health", timeout_s=30)
        yield url
    finally:
        stop(proc, timeout_s=10)


def test_an_external_server_is_routed_metered_and_shown(stub: str, tmp_path: Path) -> None:
    fleet = tmp_path / "fleet.yaml"
    fleet.write_text(FLEET.format(base_url=stub))
    env = {**os.environ, "NPUCENTER_ADMIN_KEY": ADMIN, "TEAM_VLLM_KEY": UPSTREAM_KEY}
    for name in ("NPUCENTER_VIRTUAL_FLEET", "NPUCENTER_FLEET", "NPUCENTER_TARIFF"):
        env.pop(name, None)
    log_path = tmp_path / "up.log"
    args = ("--fleet", str(fleet), "--log-level", "info")
    with running_up(tmp_path / "data", env, *args, log_path=log_path, sig=signal.SIGINT) as up:
        admin = {"authorization": f"Bearer {ADMIN}"}
        httpx.post(
            f"{up.url}/api/tenants", headers=admin, json={"name": "lab", "kind": "university"}
        ).raise_for_status()
        key = httpx.post(f"{up.url}/api/keys", headers=admin, json={"tenant": "lab"}).json()["key"]
        client = openai.OpenAI(base_url=f"{up.url}/v1", api_key=key, max_retries=0, timeout=30)
        deadline = time.monotonic() + 60
        while True:  # 503 + Retry-After until the reconciler has reached the server
            try:
                out = client.chat.completions.create(
                    model="tiny-llama",
                    messages=[{"role": "user", "content": "one two three"}],
                    max_tokens=4,
                )
                break
            except openai.InternalServerError as exc:
                assert exc.status_code == 503, up.log()
                assert time.monotonic() < deadline, up.log()
                time.sleep(0.5)
        assert out.usage is not None and out.usage.completion_tokens == 4
        time.sleep(0.6)  # ledger flush
        rows = [
            r
            for r in httpx.get(f"{up.url}/api/usage", headers=admin).json()
            if r["kind"] == "tokens" and r["tenant"] == "lab"
        ]
        assert [(r["tokens_in"], r["tokens_out"]) for r in rows] == [(out.usage.prompt_tokens, 4)]
        assert rows[0]["ref"].endswith("h100-0-r0") and rows[0]["device_seconds"] > 0
        assert "h100-0-r0" in httpx.get(f"{up.url}/").text  # on the dashboard
        dep_id = httpx.get(f"{up.url}/api/deployments", headers=admin).json()[0]["id"]
        cli_env = {**os.environ, "NPUCENTER_URL": up.url, "NPUCENTER_API_KEY": ADMIN}
        shown = subprocess.run(
            [sys.executable, "-m", "npucenter.cli.main", "deploy", "show", str(dep_id), "--json"],
            env=cli_env, capture_output=True, text=True, timeout=60, check=True,
        ).stdout  # fmt: skip
        (engine,) = json.loads(shown)["engines"]
        assert (engine["engine"], engine["state"], engine["base_url"]) == (
            "external",
            "ready",
            stub,
        )
        assert UPSTREAM_KEY not in shown
    assert UPSTREAM_KEY not in log_path.read_text()
