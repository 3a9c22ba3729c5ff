"""The gateway's pre-admission count with the model's own tokenizer equals the engine's count.

The reference is transformers' ``apply_chat_template`` (what vLLM renders and encodes); the
real-engine tier checks the same counter against vLLM's own ``usage.prompt_tokens``.
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
    from transformers import AutoTokenizer

    counter = tokenizer_counter(tiny)
    assert counter is not None
    messages = [
        {"role": "system", "content": "Be brief."},
        {"role": "user", "content": "The center serves"},
    ]
    rendered = AutoTokenizer.from_pretrained(tiny).apply_chat_template(
        messages, tokenize=True, add_generation_prompt=True
    )
    ids = (
        rendered["input_ids"]
        if isinstance(rendered, dict) or hasattr(rendered, "keys")
        else rendered
    )
    assert len(ids) > 10
    assert counter({"messages": messages}, "/v1/chat/completions") == len(ids)
    parts = [{**m, "content": [{"type": "text", "text": m["content"]}]} for m in messages]
    assert counter({"messages": parts}, "/v1/chat/completions") == len(ids)


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
