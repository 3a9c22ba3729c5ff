"""Keys, scopes, and the OpenAI error shape."""

from __future__ import annotations

import json

import pytest

from npucenter.clock import FakeClock
from npucenter.errors import (
    AuthenticationError,
    NpuCenterError,
    PermissionDeniedError,
    RateLimitedError,
    all_error_classes,
)
from npucenter.gateway.auth import (
    CachingKeyResolver,
    Principal,
    StaticKeyResolver,
    bearer_key,
    require_inference,
)
from npucenter.gateway.errors import error_body, error_headers, openai_error_type


@pytest.mark.parametrize("header", [None, "", "Basic abc", "Bearer ", "Bearer"])
def test_bad_authorization_headers_are_401(header: str | None) -> None:
    with pytest.raises(AuthenticationError):
        bearer_key(header)


def test_bearer_key_extracts_the_key() -> None:
    assert bearer_key("Bearer sk-123 ") == "sk-123"


def test_scope_without_inference_is_403() -> None:
    with pytest.raises(PermissionDeniedError):
        require_inference(Principal(key_id="k", tenant="t", scopes=frozenset({"read"})))
    require_inference(Principal(key_id="k", tenant="t", scopes=frozenset(), is_admin=True))


class _Counting:
    def __init__(self) -> None:
        self.calls = 0
        self.inner = StaticKeyResolver({"good": Principal(key_id="k", tenant="t")})

    def resolve(self, api_key: str) -> Principal:
        self.calls += 1
        return self.inner.resolve(api_key)


def test_cache_hits_and_expires() -> None:
    clock = FakeClock()
    inner = _Counting()
    cache = CachingKeyResolver(inner, ttl_s=5, negative_ttl_s=1, clock=clock)
    cache.resolve("good")
    cache.resolve("good")
    assert inner.calls == 1
    clock.advance(6)
    cache.resolve("good")
    assert inner.calls == 2
    for _ in range(3):
        with pytest.raises(AuthenticationError):
            cache.resolve("bad")
    assert inner.calls == 3


@pytest.mark.parametrize("cls", all_error_classes())
def test_every_error_renders_the_openai_shape(cls: type[NpuCenterError]) -> None:
    exc = NpuCenterError.__new__(cls)
    NpuCenterError.__init__(exc, "boom")
    body = json.loads(error_body(exc))
    assert set(body["error"]) == {"message", "type", "param", "code"}
    assert body["error"]["code"] == cls.code
    names = [h[0] for h in error_headers(exc)]
    assert (b"retry-after" in names) == cls.retryable


def test_rate_limit_retry_after_is_whole_seconds_rounded_up() -> None:
    exc = RateLimitedError("t", "requests/min", 1, 0, retry_after_s=2.2)
    assert dict(error_headers(exc))[b"retry-after"] == b"3"
    assert openai_error_type(exc) == "rate_limit_error"
