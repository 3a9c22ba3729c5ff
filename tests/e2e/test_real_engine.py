"""The real-engine tier: `npucenter up --fleet examples/fleets/cpu-vllm.yaml` serves vLLM's CPU
build (the tiny model, built into the data directory on first start, no download).

One center (one vLLM engine) for the whole module, since vLLM takes 35-135 s to become ready on
this machine; every wait is bounded. The example fleet is used as it is, with LoRA serving turned
on (``engine.enable_lora``). In order: the official openai client streams and not through /v1
with a tenant key and the ledger holds the engine's own usage; a LoRA adapter (made here with
peft) is loaded into the running engine, served under its name and unloaded; killing the vLLM
process makes the reconciler start a new one and the gateway recovers; `deploy scale 0` and
`deploy delete` stop it. Skipped when vLLM is not installed (pip install 'npucenter[engine]',
`make engine`).
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
import yaml
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
            model=MODEL,
            messages=[{"role": "user", "content": "Hi"}],
            max_tokens=2,
            extra_body={"ignore_eos": True},
        )
        return bool(out.usage and out.usage.completion_tokens == 2)


@pytest.fixture(scope="module")
def center(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Center]:
    tmp = tmp_path_factory.mktemp("real-engine")
    env = {**os.environ, "NPUCENTER_ADMIN_KEY": ADMIN}
    for name in ("NPUCENTER_VIRTUAL_FLEET", "NPUCENTER_FLEET", "NPUCENTER_TARIFF"):
        env.pop(name, None)
    log_path = tmp / "up.log"
    fleet = yaml.safe_load(FLEET.read_text())
    fleet["services"][0]["engine"].update(enable_lora=True, max_lora_rank=8)
    (tmp / "fleet.yaml").write_text(yaml.safe_dump(fleet))
    args = ("--fleet", str(tmp / "fleet.yaml"), "--log-level", "warning")
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
    greedy: dict[str, Any] = {"temperature": 0, "extra_body": {"ignore_eos": True}}
    out = client.chat.completions.create(
        model=MODEL,
        messages=[{"role": "user", "content": "The center serves"}],
        max_tokens=6,
        **greedy,
    )
    assert out.usage is not None and out.usage.completion_tokens == 6
    assert out.choices[0].message.content  # the tiny model's tokens all decode to text
    # the gateway's pre-admission count (the model's own tokenizer) is the engine's count
    from npucenter.engines.tokenizer import tokenizer_counter

    counter = tokenizer_counter(center.data / "models" / MODEL)
    assert counter is not None
    chat = {"messages": [{"role": "user", "content": "The center serves"}]}
    assert counter(chat, "/v1/chat/completions") == out.usage.prompt_tokens
    chunks = list(
        client.chat.completions.create(
            model=MODEL,
            messages=[{"role": "user", "content": "A tenant meters tokens"}],
            max_tokens=5,
            stream=True,
            stream_options={"include_usage": True},
            **greedy,
        )
    )
    stream_usage = chunks[-1].usage
    assert stream_usage is not None and stream_usage.completion_tokens == 5
    deltas = [c.choices[0].delta.content for c in chunks if c.choices]
    assert sum(1 for d in deltas if d) == 5  # one text delta per token
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


def test_a_lora_adapter_is_loaded_served_and_unloaded_at_run_time(
    center: Center, tmp_path: Path
) -> None:
    import asyncio

    from npucenter.engines.lora import list_adapters, load_adapter, unload_adapter

    pytest.importorskip("peft", reason="peft makes the adapter (the engine extra)")

    adapter = _make_adapter(center.data / "models" / MODEL, tmp_path / "lab-adapter")
    (engine,) = center.engines()
    base = str(engine["base_url"])

    async def run() -> None:
        async with httpx.AsyncClient(timeout=120) as client:
            await load_adapter(client, base, "lab-adapter", adapter)
            assert await list_adapters(client, base, MODEL) == ["lab-adapter"]
            out = await client.post(
                f"{base}/v1/completions",
                json={
                    "model": "lab-adapter",
                    "prompt": "The center",
                    "max_tokens": 3,
                    "ignore_eos": True,
                },
            )
            assert out.status_code == 200 and out.json()["usage"]["completion_tokens"] == 3
            await unload_adapter(client, base, "lab-adapter")
            assert await list_adapters(client, base, MODEL) == []

    asyncio.run(run())


def _make_adapter(base_model: Path, out: Path) -> Path:
    """A rank-8 LoRA adapter of the tiny model on q_proj/v_proj (peft; untrained)."""
    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    torch.manual_seed(0)
    model = AutoModelForCausalLM.from_pretrained(base_model)
    config = LoraConfig(r=8, lora_alpha=16, target_modules=["q_proj", "v_proj"])
    get_peft_model(model, config).save_pretrained(out)
    return out


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
