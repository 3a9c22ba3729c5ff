"""OpenAI request parsing: what is refused (naming the parameter) and how prompts are counted."""

from __future__ import annotations

import json

import pytest

from npucenter.errors import InvalidRequestError
from npucenter.wire.openai import (
    CHAT,
    COMPLETIONS,
    parse_request,
    prompt_text,
    prompt_tokens,
    requested_max_tokens,
    with_include_usage,
)
from npucenter.wire.tokens import count_chat_tokens, count_text_tokens


@pytest.mark.parametrize(
    ("body", "endpoint", "field"),
    [
        (b"{", CHAT, None),
        (b"[]", CHAT, None),
        (b'{"messages": [{"role": "user", "content": "x"}]}', CHAT, "model"),
        (b'{"model": "m", "messages": []}', CHAT, "messages"),
        (b'{"model": "m"}', COMPLETIONS, "prompt"),
    ],
)
def test_malformed_requests_are_refused(body: bytes, endpoint: str, field: str | None) -> None:
    with pytest.raises(InvalidRequestError) as info:
        parse_request(body, endpoint)
    assert info.value.details.get("field") == field


@pytest.mark.parametrize("value", [0, -1, True, "8", 1.5])
def test_max_tokens_must_be_a_positive_integer(value: object) -> None:
    with pytest.raises(InvalidRequestError):
        requested_max_tokens({"max_tokens": value}, 16)
    assert requested_max_tokens({}, 16) == 16
    assert requested_max_tokens({"max_completion_tokens": 5, "max_tokens": 9}, 16) == 5


def test_the_gateway_counts_a_prompt_as_the_virtual_engine_does() -> None:
    messages = [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Hi!"}]
    chat = {"model": "m", "messages": messages}
    text, num_ids = prompt_text(chat, CHAT)
    assert prompt_tokens(chat, CHAT, text, num_ids) == count_chat_tokens(messages)
    completion = {"model": "m", "prompt": ["a longer prompt", [1, 2, 3]]}
    text, num_ids = prompt_text(completion, COMPLETIONS)
    assert prompt_tokens(completion, COMPLETIONS, text, num_ids) == 3 + count_text_tokens(
        "a longer prompt"
    )


def test_include_usage_is_spliced_or_merged() -> None:
    request = {"model": "m", "prompt": "x", "stream": True}
    spliced = json.loads(with_include_usage(json.dumps(request).encode(), request))
    assert spliced == {**request, "stream_options": {"include_usage": True}}
    request = {**request, "stream_options": {"continuous_usage_stats": True}}
    merged = json.loads(with_include_usage(json.dumps(request).encode(), request))
    assert merged["stream_options"] == {"continuous_usage_stats": True, "include_usage": True}
