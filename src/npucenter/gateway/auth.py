"""Who is calling: API keys (``Authorization: Bearer``) to a tenant, its scopes and its limits.

The control plane owns keys (hashed at rest); the gateway sees them through the
:class:`KeyResolver` seam and caches answers for a few seconds so the hot path never waits on
the database. :class:`StaticKeyResolver` is the in-package fake.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping
from typing import Protocol

from npucenter.clock import Clock, SystemClock
from npucenter.errors import AuthenticationError, PermissionDeniedError
from npucenter.policy.principal import Principal, TenantLimits

__all__ = [
    "INFERENCE_SCOPES",
    "CachingKeyResolver",
    "KeyResolver",
    "Principal",
    "StaticKeyResolver",
    "TenantLimits",
    "bearer_key",
    "require_inference",
]

INFERENCE_SCOPES = frozenset({"inference", "gateway", "*", "admin"})


class KeyResolver(Protocol):
    """Looks an API key up; raises AuthenticationError when it is unknown or revoked."""

    def resolve(self, api_key: str) -> Principal:
        """The principal of ``api_key``."""
        ...


class StaticKeyResolver:
    """Keys from a mapping (tests, benchmarks)."""

    def __init__(self, keys: Mapping[str, Principal]) -> None:
        self._keys = dict(keys)

    def resolve(self, api_key: str) -> Principal:
        """The principal of ``api_key``."""
        try:
            return self._keys[api_key]
        except KeyError:
            raise AuthenticationError(
                "invalid API key", hint="pass a key issued by `npucenter key create`"
            ) from None


class CachingKeyResolver:
    """Caches another resolver's answers (by key digest) for ``ttl_s`` seconds.

    Unknown keys are cached for ``negative_ttl_s`` so a flood of bad keys does not reach the
    database; revocation takes effect within ``ttl_s``.
    """

    def __init__(
        self,
        inner: KeyResolver,
        *,
        ttl_s: float = 5.0,
        negative_ttl_s: float = 1.0,
        clock: Clock | None = None,
        max_entries: int = 10_000,
    ) -> None:
        self._inner = inner
        self._ttl_s = ttl_s
        self._negative_ttl_s = negative_ttl_s
        self._clock = clock or SystemClock()
        self._max_entries = max_entries
        self._cache: dict[bytes, tuple[float, Principal | AuthenticationError]] = {}

    def resolve(self, api_key: str) -> Principal:
        """The principal of ``api_key``, from cache when fresh."""
        digest = hashlib.blake2b(api_key.encode(), digest_size=16).digest()
        now_s = self._clock.now_s()
        hit = self._cache.get(digest)
        if hit is not None and hit[0] > now_s:
            if isinstance(hit[1], AuthenticationError):
                raise hit[1]
            return hit[1]
        if len(self._cache) >= self._max_entries:
            self._cache.clear()
        try:
            principal = self._inner.resolve(api_key)
        except AuthenticationError as exc:
            self._cache[digest] = (now_s + self._negative_ttl_s, exc)
            raise
        self._cache[digest] = (now_s + self._ttl_s, principal)
        return principal


def bearer_key(authorization: str | None) -> str:
    """The key of an ``Authorization: Bearer <key>`` header value."""
    if not authorization:
        raise AuthenticationError(
            "missing API key", hint="send `Authorization: Bearer <key>` (OPENAI_API_KEY)"
        )
    scheme, _, key = authorization.strip().partition(" ")
    if scheme.lower() != "bearer" or not key.strip():
        raise AuthenticationError(
            "malformed Authorization header", hint="send `Authorization: Bearer <key>`"
        )
    return key.strip()


def require_inference(principal: Principal) -> None:
    """Raise PermissionDeniedError unless the key may call the inference endpoints."""
    if principal.is_admin or principal.scopes & INFERENCE_SCOPES:
        return
    raise PermissionDeniedError(
        f"key {principal.key_id!r} of tenant {principal.tenant!r} has no inference scope",
        hint="create a key with the `inference` scope",
        details={"key_id": principal.key_id, "scopes": sorted(principal.scopes)},
    )
