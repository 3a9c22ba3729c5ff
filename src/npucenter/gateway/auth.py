"""Who is calling: API keys (``Authorization: Bearer``) to a tenant, its scopes and its limits.

The control plane owns keys (hashed at rest); the gateway sees them through the
:class:`KeyResolver` seam and caches answers for a few seconds so the hot path never waits on
the database. :class:`StaticKeyResolver` is the in-package fake.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Protocol

from npucenter.clock import Clock, SystemClock
from npucenter.errors import AuthenticationError, InvalidConfigError, PermissionDeniedError

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


@dataclass(frozen=True, slots=True, kw_only=True)
class TenantLimits:
    """A tenant's gateway limits; ``None`` means unlimited."""

    requests_per_min: float | None = None
    tokens_per_s: float | None = None  # the tenant quota's token rate (policy.quota.TenantQuota)
    burst_tokens: float | None = None  # its bucket depth; None: tokens_per_s x 10 s
    token_quota: float | None = None  # tokens the tenant may use in total (its quota)

    def __post_init__(self) -> None:
        for name in ("requests_per_min", "tokens_per_s", "burst_tokens", "token_quota"):
            value = getattr(self, name)
            if value is not None and value < 0:
                raise InvalidConfigError(name, value, "must be >= 0 or unset")


@dataclass(frozen=True, slots=True, kw_only=True)
class Principal:
    """The caller behind one API key."""

    key_id: str  # a non-secret id of the key (never the key)
    tenant: str
    scopes: frozenset[str] = field(default_factory=lambda: frozenset({"inference"}))
    is_admin: bool = False
    priority: int = 0  # higher is served first when requests wait
    weight: float = 1.0  # fair-share weight among tenants of one priority
    limits: TenantLimits = field(default_factory=TenantLimits)
    tokens_used: float = 0.0  # tokens counted against token_quota before this process started


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
