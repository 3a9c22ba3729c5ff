"""The fake OpenAI server answers the same on both faces (ASGI under uvicorn, raw streams)."""

from __future__ import annotations

import json
from collections.abc import Iterator

import httpx
import pytest

from npucenter.bench.stub import running_stub, stub_script
from npucenter.gateway.testing import running_server
from npucenter.wire.fake import FakeOpenAI
from npucenter.wire.sse import SSEParser
from npucenter.wire.tokens import count_chat_tokens, synthetic_text

MSG = [{"role": "user", "content": "Hello there, fake."}]


@pytest.fixture(params=["asgi", "streams"])
def fake_url(request: pytest.FixtureRequest) -> Iterator[str]:
    script = stub_script(api_key="k", tokens_per_chunk=2)
    if request.param == "asgi":
        with running_server(FakeOpenAI(script), lifespan="off") as url:
            yield url
    else:
        with running_stub(script) as url:
            yield url


def test_both_faces_answer_alike(fake_url: str) -> None:
    headers = {"authorization": "Bearer k"}
    body = {"model": "stub-model", "messages": MSG, "max_tokens": 5}
    with httpx.Client(base_url=fake_url, headers=headers) as client:
        assert (
            client.post(
                "/v1/chat/completions", json=body, headers={"authorization": "x"}
            ).status_code
            == 401
        )
        assert client.post("/v1/chat/completions", json={**body, "model": "x"}).status_code == 404
        whole = client.post("/v1/chat/completions", json=body).json()
        assert whole["choices"][0]["message"]["content"] == synthetic_text(0, 5)
        assert whole["usage"]["prompt_tokens"] == count_chat_tokens(MSG)
        stream = {**body, "stream": True, "stream_options": {"include_usage": True}}
        raw = client.post("/v1/chat/completions", json=stream).content
    payloads = list(SSEParser().feed(raw))
    assert payloads[-1] == b"[DONE]"

    chunks = [json.loads(p) for p in payloads[:-1]]
    text = "".join(c["choices"][0]["delta"].get("content", "") for c in chunks if c["choices"])
    assert text == synthetic_text(0, 5) and len(chunks) == 3 + 1  # 2+2+1 tokens, then usage
    assert chunks[-1]["usage"]["completion_tokens"] == 5
