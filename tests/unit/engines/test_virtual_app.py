"""The virtual engine's OpenAI-compatible HTTP face, in process (no sockets)."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest

from npucenter.engines.virtual.server import VirtualEngineConfig, build_app
from npucenter.wire.tokens import count_chat_tokens, count_text_tokens


@pytest.fixture
async def client(perf: Any) -> AsyncIterator[httpx.AsyncClient]:
    app = build_app(
        VirtualEngineConfig(model="tiny", device="rngd", time_scale=0.0, max_model_len=4096),
        perf=perf,
    )
    app.loop.start()
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://engine") as c:
        yield c
    await app.loop.stop()


async def test_health_and_models(client: httpx.AsyncClient) -> None:
    assert (await client.get("/health")).status_code == 200
    models = (await client.get("/v1/models")).json()
    assert [m["id"] for m in models["data"]] == ["tiny"]
    assert models["data"][0]["max_model_len"] == 4096


async def test_chat_completion_usage_counts_tokens(client: httpx.AsyncClient) -> None:
    messages = [{"role": "user", "content": "Tell me a story about the sea."}]
    r = await client.post(
        "/v1/chat/completions", json={"model": "tiny", "messages": messages, "max_tokens": 12}
    )
    assert r.status_code == 200
    body = r.json()
    assert body["object"] == "chat.completion"
    assert body["usage"]["prompt_tokens"] == count_chat_tokens(messages)
    assert body["usage"]["completion_tokens"] == 12
    assert body["usage"]["total_tokens"] == count_chat_tokens(messages) + 12
    text = body["choices"][0]["message"]["content"]
    assert count_text_tokens(text) == 12
    assert body["choices"][0]["finish_reason"] == "length"


async def test_completion_with_token_ids_and_default_max_tokens(client: httpx.AsyncClient) -> None:
    r = await client.post("/v1/completions", json={"prompt": list(range(50))})
    body = r.json()
    assert body["object"] == "text_completion"
    assert body["usage"]["prompt_tokens"] == 50
    assert body["usage"]["completion_tokens"] == 16  # OpenAI's completions default


async def test_chat_without_max_tokens_stops_by_itself(client: httpx.AsyncClient) -> None:
    r = await client.post(
        "/v1/chat/completions", json={"messages": [{"role": "user", "content": "x"}]}
    )
    body = r.json()
    assert body["choices"][0]["finish_reason"] == "stop"
    assert 16 <= body["usage"]["completion_tokens"] <= 256


def _events(raw: str) -> list[Any]:
    out = []
    for line in raw.splitlines():
        if line.startswith("data: "):
            data = line[len("data: ") :]
            out.append(data if data == "[DONE]" else json.loads(data))
    return out


@pytest.mark.parametrize("include_usage", [False, True])
async def test_chat_stream_carries_usage_exactly_once_at_the_end(
    client: httpx.AsyncClient, include_usage: bool
) -> None:
    payload: dict[str, Any] = {
        "messages": [{"role": "user", "content": "hi"}],
        "max_completion_tokens": 9,
        "stream": True,
        "ignore_eos": True,
    }
    if include_usage:
        payload["stream_options"] = {"include_usage": True}
    r = await client.post("/v1/chat/completions", json=payload)
    assert r.headers["content-type"].startswith("text/event-stream")
    events = _events(r.text)
    assert events[-1] == "[DONE]"
    chunks = events[:-1]
    with_usage = [c for c in chunks if c.get("usage")]
    assert len(with_usage) == 1 and with_usage[0] is chunks[-1]
    assert with_usage[0]["usage"]["completion_tokens"] == 9
    text = "".join(c["choices"][0]["delta"].get("content") or "" for c in chunks if c["choices"])
    assert count_text_tokens(text) == 9
    assert chunks[0]["choices"][0]["delta"]["role"] == "assistant"
    finish = [c["choices"][0]["finish_reason"] for c in chunks if c["choices"]]
    assert finish[-1] == "length" and set(finish[:-1]) == {None}


async def test_completion_stream(client: httpx.AsyncClient) -> None:
    r = await client.post(
        "/v1/completions", json={"prompt": "a b c", "max_tokens": 5, "stream": True}
    )
    chunks = _events(r.text)[:-1]
    text = "".join(c["choices"][0]["text"] for c in chunks if c["choices"])
    assert count_text_tokens(text) == 5
    assert chunks[-1]["usage"] == {"prompt_tokens": 3, "completion_tokens": 5, "total_tokens": 8}


@pytest.mark.parametrize(
    ("path", "payload", "status", "param"),
    [
        ("/v1/chat/completions", {"messages": []}, 400, "messages"),
        (
            "/v1/chat/completions",
            {"messages": [{"role": "user", "content": "x"}], "max_tokens": 0},
            400,
            "max_tokens",
        ),
        (
            "/v1/chat/completions",
            {"messages": [{"role": "user", "content": "x"}], "max_tokens": 5000},
            400,
            "max_tokens",
        ),
        (
            "/v1/chat/completions",
            {"messages": [{"role": "user", "content": "x"}], "n": 2},
            400,
            "n",
        ),
        ("/v1/completions", {"prompt": "x", "max_tokens": 2, "min_tokens": 3}, 400, "min_tokens"),
        ("/v1/completions", {"model": "other", "prompt": "x"}, 404, None),
        ("/v1/completions", {"max_tokens": 3}, 400, "prompt"),
    ],
)
async def test_bad_requests_get_openai_errors(
    client: httpx.AsyncClient, path: str, payload: dict[str, Any], status: int, param: str | None
) -> None:
    r = await client.post(path, json=payload)
    assert r.status_code == status
    error = r.json()["error"]
    assert error["param"] == param
    assert error["message"]


async def test_invalid_json_and_unknown_routes(client: httpx.AsyncClient) -> None:
    r = await client.post("/v1/completions", content=b"{nope")
    assert r.status_code == 400
    assert (await client.get("/v2/nothing")).status_code == 404
    assert (await client.get("/v1/completions")).status_code == 405


async def test_metrics_report_tokens_power_and_energy(client: httpx.AsyncClient) -> None:
    await client.post("/v1/completions", json={"prompt": "a b", "max_tokens": 4})
    text = (await client.get("/metrics")).text
    values = {}
    for line in text.splitlines():
        if line and not line.startswith("#"):
            name = line.split("{")[0]
            values[name] = float(line.rsplit(" ", 1)[1])
    assert values["vllm:generation_tokens_total"] == 4
    assert values["vllm:prompt_tokens_total"] == 2
    assert values["vllm:request_success_total"] == 1
    assert values["npucenter:energy_joules_total"] > 0
    assert values["npucenter:power_watts"] > 0
    assert values["vllm:num_requests_running"] == 0


class _BrokenCore:
    def add(self, request: Any) -> None:
        pass

    def abort(self, request_id: str) -> None:
        pass

    def step(self, now_s: float) -> Any:
        raise RuntimeError("device fell off the bus")


async def test_a_dead_loop_is_reported_by_health_and_requests_fail_fast(perf: Any) -> None:
    from npucenter.engines.virtual.app import VirtualEngineApp
    from npucenter.engines.virtual.loop import EngineLoop

    loop = EngineLoop(_BrokenCore(), idle_power_w=1.0, kv_capacity_tokens=1000, time_scale=0.0)
    app = VirtualEngineApp(loop, model_name="tiny", max_model_len=1000)
    loop.start()
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://engine") as c:
        first = await c.post("/v1/completions", json={"prompt": "a", "max_tokens": 2})
        assert first.status_code == 502
        assert (await c.get("/health")).status_code == 503
        again = await c.post("/v1/completions", json={"prompt": "a", "max_tokens": 2})
        assert again.status_code == 502
    assert isinstance(loop.fatal, RuntimeError)
    await loop.stop()
