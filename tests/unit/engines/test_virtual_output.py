"""The virtual engine's output plan: documents cut into tokens stay whole, stop strings cut."""

from __future__ import annotations

import json

import pytest
from hypothesis import given
from hypothesis import strategies as st

from npucenter.engines.virtual.output import plan_output, refuse_unsupported
from npucenter.errors import InvalidRequestError
from npucenter.wire.tokens import synthetic_text

SCHEMA = {
    "type": "object",
    "properties": {
        "name": {"type": "string"},
        "tags": {"type": "array", "items": {"type": "string"}},
        "size": {"type": "number", "minimum": 2},
        "kind": {"enum": ["a", "b"]},
        "ok": {"type": "boolean"},
    },
}


@given(st.integers(1, 300), st.integers(0, 2**31 - 1))
def test_a_json_schema_answer_is_valid_json_at_any_length(num_tokens: int, seed: int) -> None:
    body = {
        "response_format": {"type": "json_schema", "json_schema": {"name": "x", "schema": SCHEMA}}
    }
    plan = plan_output(body, chat=True, num_tokens=num_tokens, natural=False, seed=seed)
    assert 1 <= plan.num_tokens <= num_tokens
    value = json.loads(plan.text(0, plan.num_tokens))
    assert set(value) == set(SCHEMA["properties"]) and value["kind"] == "a" and value["size"] >= 2


def test_stop_cuts_before_the_first_stop_string() -> None:
    full = synthetic_text(0, 40, 3)
    stop = full.split(" ")[7]
    plan = plan_output({"stop": f" {stop}"}, chat=False, num_tokens=40, natural=False, seed=3)
    assert plan.text(0, plan.num_tokens) == full[: full.index(f" {stop}")]
    assert plan.finish_reason == "stop" and plan.num_tokens < 40


@pytest.mark.parametrize(
    ("body", "param"),
    [
        ({"suffix": "x"}, "suffix"),
        ({"logit_bias": {"1": 2}}, "logit_bias"),
        ({"guided_regex": "a+"}, "guided_regex"),
        (
            {"messages": [{"role": "user", "content": [{"type": "image_url"}]}]},
            "messages[0].content[0].type",
        ),
    ],
)
def test_what_cannot_be_honoured_is_refused(body: dict[str, object], param: str) -> None:
    with pytest.raises(InvalidRequestError) as info:
        refuse_unsupported(body, chat=True, token_ids_prompt=False)
    assert info.value.details["param"] == param
