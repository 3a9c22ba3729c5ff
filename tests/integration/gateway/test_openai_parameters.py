"""Every OpenAI parameter is honoured or refused with 400 naming it: the official client through
the gateway to a virtual engine (docs/gateway.md's parameter table, the virtual engine column)."""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Iterator
from typing import Any

import httpx
import openai
import pytest

from npucenter.engines.virtual.server import VirtualEngineConfig, build_app
from npucenter.gateway import Gateway, GatewayConfig, Principal, ReplicaEndpoint, StaticKeyResolver
from npucenter.gateway.testing import running_server
from npucenter.wire.tokens import count_text_tokens

MODEL = "llama-3.1-8b"
KEY = "sk-params"
MSG = [{"role": "user", "content": "Tell me about the sea."}]
WEATHER = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "parameters": {
            "type": "object",
            "properties": {
                "city": {"type": "string"},
                "days": {"type": "integer", "minimum": 1},
                "unit": {"type": "string", "enum": ["celsius", "fahrenheit"]},
            },
            "required": ["city", "days", "unit"],
        },
    },
}


@pytest.fixture(scope="module")
def center() -> Iterator[tuple[str, Gateway]]:
    engine = build_app(VirtualEngineConfig(model=MODEL, device="rngd", time_scale=1.0))
    with running_server(engine) as engine_url:
        gateway = Gateway(
            keys=StaticKeyResolver({KEY: Principal(key_id="k", tenant="acme")}),
            endpoints=[ReplicaEndpoint(replica_id="r0", base_url=engine_url, model_id=MODEL)],
            config=GatewayConfig(scrape_interval_s=0, cors_origins=("https://app.example",)),
        )
        with running_server(gateway) as url:
            deadline = time.monotonic() + 10
            while MODEL not in gateway.context_tokens and time.monotonic() < deadline:
                time.sleep(0.05)  # the ticker learns the engine's context length
            yield url, gateway


@pytest.fixture
def client(center: tuple[str, Gateway]) -> openai.OpenAI:
    return openai.OpenAI(base_url=f"{center[0]}/v1", api_key=KEY, max_retries=0, timeout=30.0)


def _post(url: str, path: str, body: dict[str, Any], **headers: str) -> httpx.Response:
    return httpx.post(
        f"{url}/v1/{path}", json=body, headers={"authorization": f"Bearer {KEY}", **headers}
    )


# --- honoured ----------------------------------------------------------------------------------


def test_json_object_and_json_schema_answer_valid_json(client: openai.OpenAI) -> None:
    out = client.chat.completions.create(
        model=MODEL, messages=MSG, max_tokens=40, response_format={"type": "json_object"}
    )
    assert isinstance(json.loads(out.choices[0].message.content or ""), dict)
    schema = WEATHER["function"]["parameters"]
    fmt = {"type": "json_schema", "json_schema": {"name": "weather", "schema": schema}}
    chunks = client.chat.completions.create(
        model=MODEL,
        messages=MSG,
        max_tokens=200,
        response_format=fmt,
        stream=True,  # type: ignore[arg-type]
    )
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    value = json.loads(text)
    assert set(value) == {"city", "days", "unit"}
    assert isinstance(value["city"], str) and value["days"] >= 1 and value["unit"] == "celsius"


@pytest.mark.parametrize("stream", [False, True])
def test_a_required_tool_is_called_with_arguments_of_its_schema(
    client: openai.OpenAI, stream: bool
) -> None:
    kw: dict[str, Any] = {"model": MODEL, "messages": MSG, "max_tokens": 100, "tools": [WEATHER]}
    if stream:
        name, args, reason = "", "", None
        for chunk in client.chat.completions.create(**kw, tool_choice="required", stream=True):
            if chunk.choices and chunk.choices[0].delta.tool_calls:
                call = chunk.choices[0].delta.tool_calls[0]
                name += (call.function.name or "") if call.function else ""
                args += (call.function.arguments or "") if call.function else ""
            if chunk.choices and chunk.choices[0].finish_reason:
                reason = chunk.choices[0].finish_reason
    else:
        out = client.chat.completions.create(**kw, tool_choice="required")
        (call,) = out.choices[0].message.tool_calls or []
        name, args, reason = (
            call.function.name,
            call.function.arguments,
            out.choices[0].finish_reason,
        )  # type: ignore[union-attr]
    assert name == "get_weather" and reason == "tool_calls"
    assert set(json.loads(args)) == {"city", "days", "unit"}


def test_stop_strings_cut_the_output(client: openai.OpenAI) -> None:
    plain = client.chat.completions.create(model=MODEL, messages=MSG, max_tokens=60, seed=7)
    text = plain.choices[0].message.content or ""
    stop = text.split()[5]  # a word the answer contains
    out = client.chat.completions.create(
        model=MODEL, messages=MSG, max_tokens=60, seed=7, stop=[f" {stop}"]
    )
    assert out.choices[0].finish_reason == "stop"
    assert out.choices[0].message.content == text[: text.index(f" {stop}")]
    assert out.usage is not None and out.usage.completion_tokens < 60


def test_a_seed_makes_the_answer_repeat_and_another_seed_changes_it(client: openai.OpenAI) -> None:
    def ask(seed: int) -> str:
        out = client.chat.completions.create(model=MODEL, messages=MSG, max_tokens=20, seed=seed)
        return out.choices[0].message.content or ""

    assert ask(1) == ask(1) != ask(2)


def test_logprobs_have_the_openai_shape(client: openai.OpenAI, center: tuple[str, Gateway]) -> None:
    out = client.chat.completions.create(
        model=MODEL, messages=MSG, max_tokens=5, logprobs=True, top_logprobs=3
    )
    content = out.choices[0].logprobs.content  # type: ignore[union-attr]
    assert content is not None and len(content) == 5
    for entry in content:
        assert entry.logprob <= 0 and len(entry.top_logprobs) == 3
        assert entry.top_logprobs[0].token == entry.token
    assert "".join(e.token for e in content) == out.choices[0].message.content
    body = {"model": MODEL, "prompt": "Once upon a time", "max_tokens": 4, "logprobs": 2}
    lp = _post(center[0], "completions", body).json()["choices"][0]["logprobs"]
    assert len(lp["tokens"]) == len(lp["token_logprobs"]) == len(lp["top_logprobs"]) == 4
    assert all(len(top) == 2 for top in lp["top_logprobs"])


def test_completions_echo_repeats_the_prompt(client: openai.OpenAI) -> None:
    out = client.completions.create(model=MODEL, prompt="Once upon a time", max_tokens=3, echo=True)
    text = out.choices[0].text
    assert text.startswith("Once upon a time") and count_text_tokens(text) == 4 + 3


# --- refused -----------------------------------------------------------------------------------

REFUSED = [
    ("chat/completions", {"temperature": 3}, "temperature"),
    ("chat/completions", {"temperature": "hot"}, "temperature"),
    ("chat/completions", {"stream": "yes"}, "stream"),
    ("chat/completions", {"stream_options": {"include_usage": True}}, "stream_options"),
    ("chat/completions", {"frobnicate": 1}, "frobnicate"),
    ("chat/completions", {"messages": [{"role": "wizard", "content": "hi"}]}, "messages[0].role"),
    ("chat/completions", {"messages": [{"content": "hi"}]}, "messages[0].role"),
    ("chat/completions", {"messages": [{"role": "user"}]}, "messages[0].content"),
    ("chat/completions", {"top_logprobs": 2}, "top_logprobs"),
    ("chat/completions", {"tool_choice": "required"}, "tool_choice"),
    ("chat/completions", {"response_format": {"type": "yaml"}}, "response_format.type"),
    ("chat/completions", {"n": 2}, "n"),
    ("chat/completions", {"logit_bias": {"50256": -100}}, "logit_bias"),
    ("chat/completions", {"max_tokens": 10**6}, "max_tokens"),
    ("chat/completions", {"stop": ["a", "b", "c", "d", "e"]}, "stop"),
    ("completions", {"suffix": "the end"}, "suffix"),
    ("completions", {"best_of": 3}, "best_of"),
    ("chat/completions", {"guided_json": {"type": "object"}}, "guided_json"),
    ("completions", {"logprobs": 9}, "logprobs"),
    ("completions", {"echo": True, "prompt": [1, 2, 3]}, "echo"),
]


@pytest.mark.parametrize(("path", "fields", "param"), REFUSED)
def test_what_cannot_be_honoured_is_refused_naming_the_parameter(
    center: tuple[str, Gateway], path: str, fields: dict[str, Any], param: str
) -> None:
    base: dict[str, Any] = {"model": MODEL, "max_tokens": 4}
    base.update({"messages": MSG} if path.startswith("chat") else {"prompt": "Hello"})
    resp = _post(center[0], path, {**base, **fields})
    assert resp.status_code == 400, resp.text
    error = resp.json()["error"]
    assert error["param"] == param and error["type"] == "invalid_request_error"
    assert resp.headers["x-request-id"]


# --- TTFT, CORS, request ids, models -----------------------------------------------------------


def test_ttft_is_timed_at_the_first_token_not_the_role_chunk(
    client: openai.OpenAI, center: tuple[str, Gateway]
) -> None:
    gateway = center[1]
    engine_url = gateway.pool.replicas(MODEL)[0].endpoint.base_url
    before, engine_before = _ttft(gateway), _engine_ttft(engine_url)
    long_prompt = [{"role": "user", "content": "the " * 6000}]
    sent = time.perf_counter()
    first_content = None
    for chunk in client.chat.completions.create(
        model=MODEL, messages=long_prompt, max_tokens=4, stream=True
    ):
        if first_content is None and chunk.choices and chunk.choices[0].delta.content:
            first_content = time.perf_counter() - sent
    assert first_content is not None
    # The gateway observes a request after its last bytes went out: wait for it, not a race.
    observed = _when_observed(lambda: _ttft(gateway), before)
    engine = _when_observed(lambda: _engine_ttft(engine_url), engine_before)
    # The engine's own (modelled) TTFT: the prefill of 6,000 tokens, after the role chunk it
    # sends at once. The gateway's interval holds the engine's (it starts before the engine has
    # the request and ends when the content reaches it), and the client's holds the gateway's:
    # both bounds hold whatever the machine's load, and one timed at the role chunk fails the first.
    assert engine > 0.05
    assert engine <= observed <= first_content


def _ttft(gateway: Gateway) -> tuple[float, float]:
    """The gateway's TTFT histogram: (count, sum)."""
    count = total = 0.0
    for metric in gateway.metrics.ttft.collect():
        for sample in metric.samples:
            if sample.name.endswith("_count"):
                count += float(sample.value)
            elif sample.name.endswith("_sum"):
                total += float(sample.value)
    return count, total


def _engine_ttft(engine_url: str) -> tuple[float, float]:
    """The engine's own TTFT histogram from its /metrics: (count, sum)."""
    count = total = 0.0
    for line in httpx.get(f"{engine_url}/metrics").text.splitlines():
        if line.startswith("vllm:time_to_first_token_seconds_count"):
            count += float(line.split()[-1])
        elif line.startswith("vllm:time_to_first_token_seconds_sum"):
            total += float(line.split()[-1])
    return count, total


def _when_observed(read: Callable[[], tuple[float, float]], before: tuple[float, float]) -> float:
    """The one new observation's value, once the histogram has counted it (30 s at most)."""
    deadline = time.monotonic() + 30
    count, total = read()
    while count == before[0] and time.monotonic() < deadline:
        time.sleep(0.01)
        count, total = read()
    assert count == before[0] + 1
    return total - before[1]


def test_cors_preflight_and_headers_for_allowed_origins_only(center: tuple[str, Gateway]) -> None:
    url = center[0]
    pre = httpx.options(
        f"{url}/v1/chat/completions",
        headers={
            "origin": "https://app.example",
            "access-control-request-method": "POST",
            "access-control-request-headers": "authorization, content-type",
        },
    )
    assert pre.status_code == 204
    assert pre.headers["access-control-allow-origin"] == "https://app.example"
    assert "POST" in pre.headers["access-control-allow-methods"]
    body = {"model": MODEL, "messages": MSG, "max_tokens": 2}
    ok = _post(url, "chat/completions", body, origin="https://app.example")
    assert ok.headers["access-control-allow-origin"] == "https://app.example"
    other = _post(url, "chat/completions", body, origin="https://evil.example")
    assert "access-control-allow-origin" not in other.headers
    refused = httpx.options(
        f"{url}/v1/models",
        headers={"origin": "https://evil.example", "access-control-request-method": "GET"},
    )
    assert refused.status_code == 403


def test_every_response_carries_a_request_id_honouring_the_clients(
    center: tuple[str, Gateway],
) -> None:
    url = center[0]
    auth = {"authorization": f"Bearer {KEY}"}
    mine = httpx.get(f"{url}/v1/models", headers={**auth, "x-request-id": "my-trace-42"})
    assert mine.headers["x-request-id"] == "my-trace-42"
    for resp in (
        httpx.get(f"{url}/v1/models", headers=auth),
        httpx.get(f"{url}/v1/models"),  # 401
        httpx.get(f"{url}/v1/embeddings", headers=auth),  # 404
        httpx.get(f"{url}/v1/health"),
        _post(url, "chat/completions", {"model": MODEL, "messages": MSG, "max_tokens": 1}),
    ):
        assert resp.headers["x-request-id"].strip()


def test_one_model_by_id(center: tuple[str, Gateway]) -> None:
    url = center[0]
    auth = {"authorization": f"Bearer {KEY}"}
    model = httpx.get(f"{url}/v1/models/{MODEL}", headers=auth)
    assert model.status_code == 200 and model.json()["id"] == MODEL
    missing = httpx.get(f"{url}/v1/models/nope", headers=auth)
    assert missing.status_code == 404 and missing.json()["error"]["param"] is None
