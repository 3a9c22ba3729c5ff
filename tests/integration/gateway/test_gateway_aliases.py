"""A deployment's name is an alias of its model: listed, routed to the model's replicas, and
forwarded under the model id (what the engine serves)."""

from __future__ import annotations

from typing import Any

import openai
import pytest


def test_an_alias_is_listed_routed_and_forwarded_as_the_model_id(make_rig: Any) -> None:
    rig = make_rig()
    rig.gateway.pool.set_aliases({"chat2": "m", "m": "m"})
    client = rig.client()
    assert [m.id for m in client.models.list()] == ["chat2", "m"]
    out = client.chat.completions.create(
        model="chat2", messages=[{"role": "user", "content": "hi"}], max_tokens=3
    )
    assert out.usage is not None and out.usage.completion_tokens == 3
    assert rig.upstreams[0].last_body is not None
    assert rig.upstreams[0].last_body["model"] == "m"
    chunks = list(
        client.chat.completions.create(
            model="chat2", messages=[{"role": "user", "content": "hi"}], max_tokens=2, stream=True
        )
    )
    assert sum(1 for c in chunks if c.choices and c.choices[0].delta.content) == 2
    assert rig.upstreams[0].last_body["model"] == "m"
    assert rig.upstreams[0].last_body["stream_options"] == {"include_usage": True}


def test_an_alias_of_a_model_without_replicas_is_not_served(make_rig: Any) -> None:
    rig = make_rig()
    rig.gateway.pool.set_aliases({"old": "gone-model"})
    client = rig.client()
    assert [m.id for m in client.models.list()] == ["m"]
    with pytest.raises(openai.NotFoundError):
        client.chat.completions.create(
            model="old", messages=[{"role": "user", "content": "hi"}], max_tokens=3
        )
