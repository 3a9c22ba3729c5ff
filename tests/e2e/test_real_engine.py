"""The real-engine tier: `npucenter up --fleet examples/fleets/cpu-vllm.yaml` serves vLLM's CPU
build (the tiny model, built into the data directory on first start, no download).

One center (one vLLM engine) for the whole module, since vLLM takes 35-135 s to become ready on
this machine; every wait is bounded. In order: the official openai client streams and not through
/v1 with a tenant key and the ledger holds the engine's own usage; killing the vLLM process makes
the reconciler start a new one and the gateway recovers; `deploy scale 0` and `deploy delete`
stop it. Skipped when vLLM is not installed (pip install 'npucenter[engine]', `make engine`).
"""

from __future__ import annotations

import importlib.util
import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import openai
import pytest
from _center import running_up

pytestmark = [
    pytest.mark.e2e,
    pytest.mark.real_engine,
    pytest.mark.skipif(
        importlib.util.find_spec("vllm") is None
        or importlib.util.find_spec("transformers") is None,
        reason="vLLM is not installed: pip install 'npucenter[engine]' (make engine)",
    ),
]

ROOT = Path(__file__).resolve().parents[2]
FLEET = ROOT / "examples" / "fleets" / "cpu-vllm.yaml"
ADMIN = "e2e-real-engine-admin-0123456789"
MODEL = "tiny-llama"
READY_S = 420.0  # vLLM's CPU build: 35 s idle, 135 s under load here; the tiny model's build too


def _until(ok: Callable[[], Any], what: str, timeout_s: float, log: Callable[[], str]) -> Any:
    deadline = time.monotonic() + timeout_s
    while True:
        try:
            value = ok()
        except (httpx.HTTPError, openai.APIError):
            value = None
        if value:
            return value
        assert time.monotonic() < deadline, f"{what} within {timeout_s:g} s; log:\n{log()[-4000:]}"
        time.sleep(1.0)


class Center:
    def __init__(self, url: str, data: Path, log: Callable[[], str]) -> None:
        self.url, self.data, self.log = url, data, log
        self.admin = {"authorization": f"Bearer {ADMIN}"}

    def api(self, method: str, path: str, **kw: Any) -> Any:
        resp = httpx.request(method, f"{self.url}{path}", headers=self.admin, timeout=30, **kw)
        resp.raise_for_status()
        return resp.json() if resp.content else None

    def cli(self, *args: str) -> Any:
        env = {**os.environ, "NPUCENTER_URL": self.url, "NPUCENTER_API_KEY": ADMIN}
        out = subprocess.run(
            [sys.executable, "-m", "npucenter.cli.main", *args, "--json"],
            env=env, capture_output=True, text=True, timeout=60, check=False,
        )  # fmt: skip
        assert out.returncode == 0, out.stderr
        return json.loads(out.stdout)

    def deployment_id(self) -> int:
        (dep,) = [d for d in self.api("GET", "/api/deployments") if d["model"] == MODEL]
        return int(dep["id"])

    def engines(self) -> list[dict[str, Any]]:
        return list(self.api("GET", f"/api/deployments/{self.deployment_id()}/engines"))

    def client(self, key: str) -> openai.OpenAI:
        return openai.OpenAI(base_url=f"{self.url}/v1", api_key=key, max_retries=0, timeout=60)

    def answers(self, key: str) -> bool:
        out = self.client(key).chat.completions.create(
            model=MODEL, messages=[{"role": "user", "content": "Hi"}], max_tokens=2
        )
        return bool(out.usage and out.usage.completion_tokens == 2)


@pytest.fixture(scope="module")
def center(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Center]:
    tmp = tmp_path_factory.mktemp("real-engine")
    env = {**os.environ, "NPUCENTER_ADMIN_KEY": ADMIN}
    for name in ("NPUCENTER_VIRTUAL_FLEET", "NPUCENTER_FLEET", "NPUCENTER_TARIFF"):
        env.pop(name, None)
    log_path = tmp / "up.log"
    args = ("--fleet", str(FLEET), "--log-level", "warning")
    with running_up(tmp / "data", env, *args, log_path=log_path, stop_timeout_s=30) as up:
        c = Center(up.url, tmp / "data", up.log)
        _until(lambda: c.answers(ADMIN), "the vLLM engine serving", READY_S, c.log)
        yield c


@pytest.fixture(scope="module")
def tenant_key(center: Center) -> str:
    center.api("POST", "/api/tenants", json={"name": "lab", "kind": "university"})
    return str(center.api("POST", "/api/keys", json={"tenant": "lab"})["key"])


def test_the_tiny_model_was_built_into_the_data_directory(center: Center) -> None:
    model_dir = center.data / "models" / MODEL
    assert (model_dir / "config.json").is_file() and (model_dir / "tokenizer.json").is_file()
    (engine,) = center.engines()
    assert engine["engine"] == "vllm" and engine["state"] == "ready" and engine["pid"]


def test_the_openai_client_streams_and_not_and_the_ledger_holds_the_engines_usage(
    center: Center, tenant_key: str
) -> None:
    client = center.client(tenant_key)
    assert [m.id for m in client.models.list()] == [MODEL]
    out = client.chat.completions.create(
        model=MODEL, messages=[{"role": "user", "content": "The center serves"}], max_tokens=6
    )
    assert out.usage is not None and out.usage.completion_tokens == 6
    assert out.usage.prompt_tokens > 3  # the chat template's tokens are the engine's count
    chunks = list(
        client.chat.completions.create(
            model=MODEL,
            messages=[{"role": "user", "content": "A tenant meters tokens"}],
            max_tokens=5,
            stream=True,
            stream_options={"include_usage": True},
        )
    )
    stream_usage = chunks[-1].usage
    assert stream_usage is not None and stream_usage.completion_tokens == 5
    assert sum(1 for c in chunks if c.choices and c.choices[0].delta.content is not None) >= 1
    engine_usage = {
        (out.usage.prompt_tokens, out.usage.completion_tokens),
        (stream_usage.prompt_tokens, stream_usage.completion_tokens),
    }

    def ledger() -> set[tuple[int, int]]:
        rows = [
            r
            for r in center.api("GET", "/api/usage")
            if r["kind"] == "tokens" and f"{MODEL} ok " in r["ref"] and r["tenant"] == "lab"
        ]
        return {(r["tokens_in"], r["tokens_out"]) for r in rows}

    assert _until(lambda: ledger() == engine_usage, "the ledger to hold both", 10, center.log)


def test_a_killed_vllm_is_restarted_and_the_gateway_recovers(
    center: Center, tenant_key: str
) -> None:
    (before,) = center.engines()
    os.killpg(int(before["pid"]), signal.SIGKILL)

    def restarted() -> bool:
        (now,) = center.engines()
        return bool(now["pid"] != before["pid"] and now["state"] == "ready" and now["restarts"])

    _until(restarted, "a new vLLM process", READY_S, center.log)
    assert _until(lambda: center.answers(tenant_key), "the gateway to serve again", 60, center.log)


def test_scale_to_zero_and_delete_stop_the_engine(center: Center, tenant_key: str) -> None:
    dep_id = center.deployment_id()
    (engine,) = center.engines()
    pid = int(engine["pid"])
    center.cli("deploy", "scale", str(dep_id), "0")
    _until(lambda: not _alive(pid), "the vLLM process to exit after scale 0", 60, center.log)
    assert center.engines() == []
    with pytest.raises(openai.APIStatusError):
        center.client(tenant_key).chat.completions.create(
            model=MODEL, messages=[{"role": "user", "content": "Hi"}], max_tokens=2
        )
    center.cli("deploy", "delete", str(dep_id))
    assert [d for d in center.api("GET", "/api/deployments") if d["model"] == MODEL] == []


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    stat = Path(f"/proc/{pid}/stat")
    return not (stat.exists() and stat.read_text().split()[2] == "Z")
