"""The gateway's pre-admission count with the model's own tokenizer equals the engine's count.

The expected figure (24 prompt tokens for one chat message) is what vLLM's CPU build reported
in ``usage`` for the tiny model here; the real-engine tier checks the ledger against the engine.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from npucenter.engines.tiny import build_tiny_model
from npucenter.engines.tokenizer import tokenizer_counter

pytest.importorskip("transformers", reason="the engine extra (pip install 'npucenter[engine]')")


@pytest.fixture(scope="module")
def tiny(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_tiny_model(tmp_path_factory.mktemp("m") / "tiny", seed=0)


def test_chat_prompts_are_counted_through_the_chat_template(tiny: Path) -> None:
    counter = tokenizer_counter(tiny)
    assert counter is not None
    chat = {"messages": [{"role": "user", "content": "The center serves"}]}
    assert counter(chat, "/v1/chat/completions") == 24  # vLLM's usage.prompt_tokens here
    parts = {
        "messages": [{"role": "user", "content": [{"type": "text", "text": "The center serves"}]}]
    }
    assert counter(parts, "/v1/chat/completions") == 24


def test_completion_prompts_text_ids_and_lists(tiny: Path) -> None:
    counter = tokenizer_counter(tiny)
    assert counter is not None
    text = counter({"prompt": "The gateway routes requests."}, "/v1/completions")
    assert text is not None and 0 < text < len("The gateway routes requests.")
    assert counter({"prompt": [5, 6, 7]}, "/v1/completions") == 3
    both = counter({"prompt": ["The gateway routes requests.", [1, 2]]}, "/v1/completions")
    assert both == text + 2
    assert counter({"prompt": None}, "/v1/completions") is None


def test_no_counter_without_a_tokenizer_file(tmp_path: Path) -> None:
    assert tokenizer_counter(tmp_path) is None
    assert tokenizer_counter(None) is None
