"""The data-set format: every accepted shape, the first bad line named, packing."""

from __future__ import annotations

import hashlib
import json

import pytest

from npucenter.errors import InvalidRequestError
from npucenter.jobs.data import check_jsonl, pack, record_text
from npucenter.jobs.spec import FinetuneSpec, program_spec


def _lines(*objs: object) -> bytes:
    return ("\n".join(json.dumps(o) for o in objs) + "\n").encode()


def test_the_three_text_shapes_are_one_format_with_a_checksum() -> None:
    data = _lines(
        {"text": "a"},
        {"prompt": "q ", "completion": "a"},
        {"messages": [{"role": "user", "content": "hi"}]},
    )
    info = check_jsonl(data + b"\n\n")
    assert (info.format, info.num_records) == ("jsonl", 3)
    assert info.sha256 == hashlib.sha256(data + b"\n\n").hexdigest()
    assert check_jsonl(_lines({"input_ids": [1, 5, 2]})).format == "packed-jsonl"


@pytest.mark.parametrize(
    ("bad", "said"),
    [
        (b"{not json", "not JSON"),
        (b"[1, 2]", "not an object"),
        (b'{"text": ""}', "text"),
        (b'{"prompt": 3, "completion": "x"}', "prompt"),
        (b'{"messages": [{"role": "robot", "content": "x"}]}', "role"),
        (b'{"input_ids": [1, -2]}', "input_ids"),
        (b'{"title": "x"}', "keys: title"),
        (b"\xff\xfe", "UTF-8"),
    ],
)
def test_the_first_bad_line_is_named(bad: bytes, said: str) -> None:
    data = _lines({"text": "fine"}, {"text": "fine too"}) + bad + b"\n" + _lines({"text": "x"})
    with pytest.raises(InvalidRequestError) as err:
        check_jsonl(data)
    assert err.value.details["line"] == 3
    assert said in err.value.message


def test_size_limit_empty_and_mixed_sets_are_refused() -> None:
    with pytest.raises(InvalidRequestError) as err:
        check_jsonl(_lines({"text": "x" * 100}), max_bytes=50)
    assert err.value.details["max_bytes"] == 50
    with pytest.raises(InvalidRequestError):
        check_jsonl(b"\n \n")
    with pytest.raises(InvalidRequestError) as err:
        check_jsonl(_lines({"text": "x"}, {"input_ids": [3]}))
    assert err.value.details["line"] == 2


def test_pack_lays_sequences_end_to_end_and_cuts_long_ones() -> None:
    rows, masks = pack([[1, 2, 3], [4, 5], [6, 7, 8, 9, 10, 11]], max_seq_len=4, pad_id=0)
    assert rows == [[1, 2, 3, 0], [4, 5, 0, 0], [6, 7, 8, 9], [10, 11, 0, 0]]
    assert [sum(m) for m in masks] == [3, 2, 4, 2]
    flat = [t for r, m in zip(rows, masks, strict=True) for t, k in zip(r, m, strict=True) if k]
    assert flat == list(range(1, 12))


def test_record_text_uses_the_chat_renderer_for_messages() -> None:
    msgs = {"messages": [{"role": "user", "content": "hi"}]}
    assert record_text(msgs, lambda m: f"<{m[0]['content']}>") == "<hi>"
    assert record_text({"prompt": "a", "completion": "b"}, None) == "ab"


def test_finetune_spec_defaults_and_refusals() -> None:
    spec = program_spec("finetune", {"base_model": "tiny-llama", "dataset": "d"})
    assert isinstance(spec, FinetuneSpec) and spec.target_modules == ("q_proj", "v_proj")
    for bad in ({"rank": 0}, {"learning_rate": -1}, {"target_modules": "q_proj"}, {"stepz": 3}):
        with pytest.raises(InvalidRequestError):
            program_spec("finetune", {"base_model": "m", "dataset": "d", **bad})
    with pytest.raises(InvalidRequestError):
        program_spec("benchmark", {})
