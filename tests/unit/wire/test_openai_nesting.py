"""A deeply nested /v1 body is the client's error (400), told without the server's internals."""

from __future__ import annotations

import pytest

from npucenter.errors import InvalidRequestError
from npucenter.wire.openai import CHAT, parse_request


def test_a_deeply_nested_body_is_an_invalid_request() -> None:
    deep = b'{"model": "m", "messages": ' + b"[" * 100_000 + b"]" * 100_000 + b"}"
    with pytest.raises(InvalidRequestError) as info:
        parse_request(deep, CHAT)
    assert info.value.http_status == 400 and "Recursion" not in str(info.value)
