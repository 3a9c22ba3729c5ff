"""Server-sent events: what a writer frames, the splitter and the parser give back."""

from __future__ import annotations

import json

from hypothesis import given
from hypothesis import strategies as st

from npucenter.wire.sse import DONE_EVENT, EventSplitter, SSEParser, sse_event, sse_json


@given(st.lists(st.dictionaries(st.text(max_size=5), st.integers()), max_size=6), st.data())
def test_splitting_a_stream_anywhere_gives_back_whole_events(objs, data) -> None:  # type: ignore[no-untyped-def]
    stream = b"".join(sse_json(o) for o in objs) + DONE_EVENT
    cuts = sorted(data.draw(st.lists(st.integers(0, len(stream)), max_size=8)))
    pieces = [stream[a:b] for a, b in zip([0, *cuts], [*cuts, len(stream)], strict=True)]
    splitter, parser = EventSplitter(), SSEParser()
    out = b""
    payloads: list[bytes] = []
    for piece in pieces:
        ready = splitter.feed(piece)
        assert ready == b"" or ready.endswith(b"\n\n")
        out += ready
        payloads.extend(parser.feed(piece))
    assert out == stream and splitter.rest == b""
    assert [json.loads(p) for p in payloads[:-1]] == objs and payloads[-1] == b"[DONE]"


def test_an_event_is_a_data_line_and_a_blank_line() -> None:
    assert sse_event("[DONE]") == DONE_EVENT == b"data: [DONE]\n\n"
    assert sse_json({"a": 1}) == b'data: {"a":1}\n\n'
