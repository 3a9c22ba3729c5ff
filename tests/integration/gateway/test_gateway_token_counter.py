"""The gateway reserves a tenant's budget on the model's own token count where one is at hand."""

from __future__ import annotations

from typing import Any

import openai
import pytest


def test_a_models_counter_replaces_the_character_estimate(make_rig: Any) -> None:
    rig = make_rig()
    model = rig.gateway.pool.models()[0]
    prompt = "abcd " * 4  # 20 characters: the estimate reserves 6 + max_tokens
    ok = rig.client("sk-tiny").completions.create(model=model, prompt=prompt, max_tokens=4)
    assert ok.usage is not None

    seen: list[tuple[str, str]] = []

    def counter(request: dict[str, Any], endpoint: str) -> int:
        seen.append((str(request.get("prompt")), endpoint))
        return 60  # this model's tokenizer counts more tokens than the tenant's quota of 50

    rig.gateway.token_counters[model] = counter
    with pytest.raises(openai.RateLimitError) as info:
        rig.client("sk-tiny").completions.create(model=model, prompt=prompt, max_tokens=4)
    assert info.value.status_code == 429
    assert seen == [(prompt, "/v1/completions")]

    rig.gateway.token_counters[model] = lambda _req, _endpoint: None  # a shape it cannot count
    rig.client("sk-acme").completions.create(model=model, prompt=prompt, max_tokens=4)
