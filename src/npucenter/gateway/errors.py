"""Render npucenter errors in the OpenAI error shape, the one place the gateway maps them.

``{"error": {"message", "type", "param", "code"}}`` with the HTTP status of the error class and
``Retry-After`` when the error is retryable. Streams that fail after their first token end with
the same body as a final SSE ``data:`` event (the ``openai`` client raises ``APIError`` on it).
"""

from __future__ import annotations

import json
from typing import Any

from npucenter.errors import (
    AuthenticationError,
    CapacityUnavailableError,
    InvalidRequestError,
    NotFoundError,
    NotSupportedError,
    NpuCenterError,
    PermissionDeniedError,
    QuotaExceededError,
    RateLimitedError,
    UpstreamError,
    retry_after_whole_s,
)
from npucenter.wire.sse import sse_event

__all__ = ["error_body", "error_headers", "openai_error_type", "sse_error_event"]

# Most specific first: the first isinstance match wins.
_TYPES: tuple[tuple[type[NpuCenterError], str], ...] = (
    (RateLimitedError, "rate_limit_error"),
    (QuotaExceededError, "insufficient_quota"),
    (AuthenticationError, "authentication_error"),
    (PermissionDeniedError, "permission_error"),
    (NotFoundError, "not_found_error"),
    (InvalidRequestError, "invalid_request_error"),
    (CapacityUnavailableError, "server_overloaded"),
    (UpstreamError, "upstream_error"),
    (NotSupportedError, "not_supported_error"),
)


def openai_error_type(exc: NpuCenterError) -> str:
    """The OpenAI ``type`` field for an npucenter error."""
    for cls, name in _TYPES:
        if isinstance(exc, cls):
            return name
    return "server_error"


def error_body(exc: NpuCenterError, *, param: str | None = None) -> bytes:
    """The JSON body of an error response."""
    body: dict[str, Any] = {
        "error": {
            "message": str(exc),
            "type": openai_error_type(exc),
            "param": param if param is not None else _param(exc),
            "code": exc.code,
        }
    }
    return json.dumps(body).encode()


def _param(exc: NpuCenterError) -> Any:
    return exc.details.get("param", exc.details.get("field"))


def error_headers(exc: NpuCenterError) -> list[tuple[bytes, bytes]]:
    """Response headers: content type, and ``Retry-After`` (whole seconds) when retryable."""
    headers = [(b"content-type", b"application/json")]
    if exc.retryable:
        retry_after_s = float(exc.details.get("retry_after_s", 1.0))
        headers.append((b"retry-after", str(retry_after_whole_s(retry_after_s)).encode()))
    return headers


def sse_error_event(exc: NpuCenterError) -> bytes:
    """A final SSE event carrying the error (for streams that already sent tokens)."""
    return sse_event(error_body(exc))
