"""The real-engine tier: `npucenter up --fleet examples/fleets/cpu-vllm.yaml` serves vLLM's CPU
build (the tiny model, built into the data directory on first start, no download).

One center (one vLLM engine) for the whole module, since vLLM takes 35-135 s to become ready on
this machine; every wait is bounded. The example fleet is used as it is, with LoRA serving turned
on (``engine.enable_lora``). In order: the official openai client streams and not through /v1
with a tenant key and the ledger holds the engine's own usage; docs/gateway.md's parameter
table, vLLM column (each parameter honoured, or refused with 400 naming it); a LoRA adapter (made here with
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


# --- docs/gateway.md's parameter table, the vLLM column: honoured or refused with 400 naming it --

WEATHER = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "parameters": {
            "type": "object",
            "properties": {"city": {"type": "string"}, "days": {"type": "integer"}},
            "required": ["city", "days"],
        },
    },
}
# The gateway refuses these before an engine sees them (the same on every engine) ...
REFUSED_BY_THE_GATEWAY = [
    ("chat/completions", {"temperature": 3}, "temperature"),
    ("chat/completions", {"frobnicate": 1}, "frobnicate"),
    ("chat/completions", {"messages": [{"role": "wizard", "content": "hi"}]}, "messages[0].role"),
    ("chat/completions", {"top_logprobs": 2}, "top_logprobs"),
    ("chat/completions", {"tool_choice": "required"}, "tool_choice"),
    ("chat/completions", {"stream_options": {"include_usage": True}}, "stream_options"),
    ("chat/completions", {"stop": ["a", "b", "c", "d", "e"]}, "stop"),
    ("chat/completions", {"max_tokens": 10**6}, "max_tokens"),  # vLLM's max_model_len: 1024
    ("chat/completions", {"guided_json": {"type": "object"}}, "guided_json"),  # vLLM ignores it
    ("completions", {"best_of": 3}, "best_of"),  # vLLM ignores it
    ("completions", {"logprobs": 9}, "logprobs"),
]
# ... and vLLM refuses these itself (its error passes through the gateway)
REFUSED_BY_VLLM = [
    ("completions", {"suffix": "the end"}, "suffix"),  # only models with FIM rendering
    ("completions", {"suffix": "the end", "echo": True}, "suffix"),
    # tool_choice "required" (and "auto") need vLLM's --tool-call-parser, which cpu-vllm.yaml does
    # not set: vLLM answers 400 with param null and a message naming tool_choice
    ("chat/completions", {"tools": [WEATHER], "tool_choice": "required"}, "tool_choice"),
]


def _post(center: Center, key: str, path: str, fields: dict[str, Any]) -> httpx.Response:
    body: dict[str, Any] = {"model": MODEL, "max_tokens": 4}
    body.update(
        {"messages": [{"role": "user", "content": "Hello"}]}
        if path.startswith("chat")
        else {"prompt": "Hello"}
    )
    body.update(fields)
    headers = {"authorization": f"Bearer {key}"}
    return httpx.post(f"{center.url}/v1/{path}", json=body, headers=headers, timeout=120)


@pytest.mark.parametrize(("path", "fields", "param"), REFUSED_BY_THE_GATEWAY + REFUSED_BY_VLLM)
def test_vllm_parameters_refused_with_400_naming_them(
    center: Center, tenant_key: str, path: str, fields: dict[str, Any], param: str
) -> None:
    resp = _post(center, tenant_key, path, fields)
    assert resp.status_code == 400, resp.text
    error = resp.json()["error"]
    assert error["param"] == param or (error["param"] is None and param in error["message"]), error


def test_vllm_parameters_honoured(center: Center, tenant_key: str) -> None:
    """Each parameter the vLLM column says "yes" to, checked for its effect (the tiny model has
    random weights: a json_schema answer is checked only as far as vLLM guarantees it, since
    the model runs out of tokens inside the object)."""

    def ok(path: str, **fields: Any) -> dict[str, Any]:
        resp = _post(center, tenant_key, path, fields)
        assert resp.status_code == 200, (fields, resp.text)
        return dict(resp.json())

    def chat(**fields: Any) -> tuple[str, str]:
        choice = ok("chat/completions", **fields)["choices"][0]
        return choice["message"]["content"] or "", choice["finish_reason"]

    greedy = {"temperature": 0, "ignore_eos": True}
    # stop: the greedy answer, cut before a string it contains
    text, _ = chat(max_tokens=24, **greedy)
    stop = text[len(text) // 2 : len(text) // 2 + 3]
    assert stop.strip(), text
    cut, reason = chat(max_tokens=24, stop=[stop], **greedy)
    assert (cut, reason) == (text[: text.index(stop)], "stop")
    kept, _ = chat(max_tokens=24, stop=[stop], include_stop_str_in_output=True, **greedy)
    assert kept == text[: text.index(stop) + len(stop)]
    # seed: the same seed repeats a sampled answer, another seed changes it
    sampled = {"max_tokens": 16, "temperature": 1.0, "ignore_eos": True}
    assert chat(seed=1, **sampled) == chat(seed=1, **sampled) != chat(seed=2, **sampled)
    # logprobs (chat): one entry per token, top_logprobs of the asked size
    out = ok("chat/completions", max_tokens=5, logprobs=True, top_logprobs=3, **greedy)
    content = out["choices"][0]["logprobs"]["content"]
    assert len(content) == out["usage"]["completion_tokens"] == 5
    assert all(e["logprob"] <= 0 and len(e["top_logprobs"]) == 3 for e in content)
    # logprobs (completions): the legacy shape
    lp = ok("completions", max_tokens=4, logprobs=2, **greedy)["choices"][0]["logprobs"]
    assert len(lp["tokens"]) == len(lp["token_logprobs"]) == len(lp["top_logprobs"]) == 4
    assert all(len(top) >= 2 for top in lp["top_logprobs"])  # vLLM adds the sampled token
    # echo: the prompt comes back before the completion
    echoed = ok("completions", prompt="Once upon a time", max_tokens=3, echo=True, **greedy)
    assert echoed["choices"][0]["text"].startswith("Once upon a time")
    # n > 1: n choices
    assert len(ok("chat/completions", n=2, max_tokens=3)["choices"]) == 2
    # logit_bias: a token forbidden by -100 never appears (greedy picks it without the bias)
    ids = {"max_tokens": 1, "logprobs": 1, "return_tokens_as_token_ids": True, **greedy}
    first = ok("completions", **ids)["choices"][0]["logprobs"]["tokens"][0]
    banned = first.removeprefix("token_id:")
    biased = ok("completions", logit_bias={banned: -100}, **ids)
    assert biased["choices"][0]["logprobs"]["tokens"][0] != first
    # response_format json_object / json_schema: vLLM constrains decoding to JSON, so the output
    # is JSON where the model finished it (random weights may run out of tokens first)
    schema = WEATHER["function"]["parameters"]
    for fmt in (
        {"type": "json_object"},
        {"type": "json_schema", "json_schema": {"name": "weather", "schema": schema}},
    ):
        text, reason = chat(max_tokens=120, temperature=0, response_format=fmt)
        assert text.lstrip().startswith("{"), (fmt, text)
        if fmt["type"] == "json_object" or reason == "stop":  # json_object: '{      }' here
            value = json.loads(text)
            assert isinstance(value, dict)
            if fmt["type"] == "json_schema":
                assert set(value) >= {"city", "days"}


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
