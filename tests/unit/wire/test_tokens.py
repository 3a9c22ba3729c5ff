"""The virtual engine's tokenizer and synthetic text."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from npucenter.errors import InvalidRequestError
from npucenter.wire.tokens import (
    TOKENS_PER_MESSAGE,
    TOKENS_REPLY_PRIMING,
    count_chat_tokens,
    count_prompt_tokens,
    count_text_tokens,
    natural_output_tokens,
    synthetic_text,
)


def test_text_rule_short_words_long_words_and_punctuation() -> None:
    assert count_text_tokens("") == 0
    assert count_text_tokens("the cat sat") == 3
    assert count_text_tokens("internationalization") == 5  # 20 chars -> 5 pieces
    assert count_text_tokens("Hi, you!") == 4


def test_token_ids_count_exactly() -> None:
    assert count_prompt_tokens(list(range(1234))) == 1234
    assert count_prompt_tokens([[1, 2, 3]]) == 3
    assert count_prompt_tokens(["a b c"]) == 3


@pytest.mark.parametrize("prompt", [[], ["a", "b"], 5, None, {"x": 1}])
def test_bad_prompts_are_rejected(prompt: object) -> None:
    with pytest.raises(InvalidRequestError):
        count_prompt_tokens(prompt)


def test_chat_overhead_per_message() -> None:
    one = count_chat_tokens([{"role": "user", "content": "hi"}])
    two = count_chat_tokens([{"role": "user", "content": "hi"}, {"role": "user", "content": "hi"}])
    assert one == TOKENS_REPLY_PRIMING + TOKENS_PER_MESSAGE + 1 + 1
    assert two - one == TOKENS_PER_MESSAGE + 1 + 1


def test_chat_content_parts() -> None:
    parts = [{"type": "text", "text": "a b"}, {"type": "image_url", "image_url": {}}]
    assert count_chat_tokens([{"role": "user", "content": parts}]) == count_chat_tokens(
        [{"role": "user", "content": "a b"}]
    )


@pytest.mark.parametrize("messages", [[], "hi", [1], [{"role": "user", "content": 3}]])
def test_bad_messages_are_rejected(messages: object) -> None:
    with pytest.raises(InvalidRequestError):
        count_chat_tokens(messages)


@given(st.integers(0, 500), st.integers(0, 300), st.integers(0, 50))
def test_synthetic_text_counts_back_to_its_tokens(start: int, n: int, seed: int) -> None:
    assert count_text_tokens(synthetic_text(start, n, seed)) == n


@given(st.text(max_size=200))
def test_natural_length_is_deterministic_and_bounded(text: str) -> None:
    n = natural_output_tokens(text)
    assert 16 <= n <= 256
    assert n == natural_output_tokens(text)
