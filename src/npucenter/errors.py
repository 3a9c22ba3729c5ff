"""The error tree of npucenter: every failure a user can act on is a typed error with fields.

Errors are mapped to HTTP statuses and CLI exit codes here and only here (``http_status``,
``exit_code``); edges render them, the core only raises them.

::

    NpuCenterError                      internal              500  1
    ├── InvalidRequestError             invalid_request       400  2
    │   ├── InvalidConfigError          invalid_request       422  2
    │   └── MissingFigureError          invalid_request       422  2
    ├── AuthenticationError             unauthenticated       401  9
    ├── PermissionDeniedError           permission_denied     403  10
    ├── NotFoundError                   not_found             404  3
    │   └── UnknownPluginError          not_found             404  3
    ├── ConflictError                   conflict              409  4
    ├── QuotaExceededError              quota_exceeded        429  5
    │   └── RateLimitedError            rate_limited          429  5
    ├── CapacityUnavailableError        capacity_unavailable  503  6
    │   └── ModelDoesNotFitError        does_not_fit          422  6
    ├── UpstreamError                   upstream_error        502  7
    └── NotSupportedError               not_supported         501  8
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any, ClassVar

__all__ = [
    "AuthenticationError",
    "CapacityUnavailableError",
    "ConflictError",
    "InvalidConfigError",
    "InvalidRequestError",
    "MissingFigureError",
    "ModelDoesNotFitError",
    "NotFoundError",
    "NotSupportedError",
    "NpuCenterError",
    "PermissionDeniedError",
    "QuotaExceededError",
    "RateLimitedError",
    "UnknownPluginError",
    "UpstreamError",
    "all_error_classes",
    "retry_after_whole_s",
]


class NpuCenterError(Exception):
    """Base of every error npucenter raises on purpose.

    Subclasses set ``code``, ``http_status``, ``exit_code`` and ``retryable``; instances carry
    ``details`` (a JSON-able mapping of the fields a program can act on) and a ``hint`` telling a
    person what to do.
    """

    code: ClassVar[str] = "internal"
    http_status: ClassVar[int] = 500
    exit_code: ClassVar[int] = 1
    retryable: ClassVar[bool] = False

    def __init__(self, message: str, *, hint: str = "", details: Mapping[str, Any] | None = None):
        super().__init__(message)
        self.message = message
        self.hint = hint
        self.details: dict[str, Any] = dict(details or {})

    def __str__(self) -> str:
        return f"{self.message} ({self.hint})" if self.hint else self.message

    def to_dict(self) -> dict[str, Any]:
        """The control-plane error body: ``{"code", "message", "details"}``."""
        return {"code": self.code, "message": str(self), "details": self.details}


class InvalidRequestError(NpuCenterError):
    """The request or input is malformed or out of range."""

    code = "invalid_request"
    http_status = 400
    exit_code = 2


class InvalidConfigError(InvalidRequestError):
    """A configuration value (catalog entry, fleet file, spec) is invalid."""

    http_status = 422

    def __init__(self, field: str, value: Any, reason: str, *, hint: str = "") -> None:
        super().__init__(
            f"invalid {field}={value!r}: {reason}",
            hint=hint,
            details={"field": field, "value": _jsonable(value), "reason": reason},
        )
        self.field = field
        self.value = value
        self.reason = reason


class MissingFigureError(InvalidRequestError):
    """A device or model lacks a sourced figure that a prediction needs.

    npucenter never invents a device figure: supply it in a user catalog override.
    """

    http_status = 422

    def __init__(self, entity: str, entity_id: str, missing_fields: Sequence[str]) -> None:
        fields = ", ".join(missing_fields)
        super().__init__(
            f"{entity} {entity_id!r} has no sourced figure for: {fields}",
            hint=(
                f'supply them in a user catalog file (e.g. `[[{entity}s]] id = "{entity_id}"` '
                f"with {fields} and a source) passed with --catalog or placed in the user catalog "
                "directory; the figure is then shown as an assumption"
            ),
            details={"entity": entity, "id": entity_id, "missing_fields": list(missing_fields)},
        )
        self.entity = entity
        self.entity_id = entity_id
        self.missing_fields = tuple(missing_fields)


class AuthenticationError(NpuCenterError):
    """No API key, or one that is not known."""

    code = "unauthenticated"
    http_status = 401
    exit_code = 9


class PermissionDeniedError(NpuCenterError):
    """The key is valid but may not do this (tenant scope, admin only)."""

    code = "permission_denied"
    http_status = 403
    exit_code = 10


class NotFoundError(NpuCenterError):
    """An object named by id or name does not exist (or is not visible to the caller)."""

    code = "not_found"
    http_status = 404
    exit_code = 3

    def __init__(self, kind: str, key: str, *, valid: Sequence[str] | None = None) -> None:
        hint = ""
        if valid is not None:
            shown = ", ".join(sorted(valid)[:30])
            hint = f"valid {kind} names: {shown}" if shown else f"no {kind} is defined yet"
        super().__init__(
            f"unknown {kind} {key!r}",
            hint=hint,
            details={"kind": kind, "key": key, "valid": list(valid) if valid else []},
        )
        self.kind = kind
        self.key = key
        self.valid = tuple(valid or ())


class UnknownPluginError(NotFoundError):
    """A registry lookup for a name that is not registered."""


class ConflictError(NpuCenterError):
    """The object exists already, or its state does not allow this change."""

    code = "conflict"
    http_status = 409
    exit_code = 4


class QuotaExceededError(NpuCenterError):
    """The tenant's quota does not cover the request."""

    code = "quota_exceeded"
    http_status = 429
    exit_code = 5

    def __init__(
        self, tenant: str, resource: str, requested: float, available: float, *, hint: str = ""
    ) -> None:
        super().__init__(
            f"tenant {tenant!r} asked for {requested:g} {resource} but has {available:g} left",
            hint=hint or "ask the operator for more quota, or release what you hold",
            details={
                "tenant": tenant,
                "resource": resource,
                "requested": requested,
                "available": available,
            },
        )
        self.tenant = tenant
        self.resource = resource
        self.requested = requested
        self.available = available


class RateLimitedError(QuotaExceededError):
    """A per-minute rate limit was hit; retry after ``retry_after_s``."""

    code = "rate_limited"
    retryable = True

    def __init__(
        self, tenant: str, resource: str, requested: float, available: float, retry_after_s: float
    ) -> None:
        super().__init__(
            tenant,
            resource,
            requested,
            available,
            hint=f"retry after {retry_after_whole_s(retry_after_s)} s or ask for a higher limit",
        )
        self.retry_after_s = retry_after_s
        self.details["retry_after_s"] = retry_after_s


class CapacityUnavailableError(NpuCenterError):
    """No free capacity now; retrying later may succeed."""

    code = "capacity_unavailable"
    http_status = 503
    exit_code = 6
    retryable = True

    def __init__(
        self, message: str, *, hint: str = "", attempts: Sequence[Any] = (), **details: Any
    ) -> None:
        super().__init__(
            message,
            hint=hint or "retry later, or free capacity",
            details={"attempts": [_jsonable(a) for a in attempts], **details},
        )
        self.attempts = tuple(attempts)


class ModelDoesNotFitError(CapacityUnavailableError):
    """The model's weights (plus a minimal KV cache) do not fit the device at this TP degree."""

    code = "does_not_fit"
    http_status = 422
    retryable = False

    def __init__(
        self,
        model_id: str,
        device_id: str,
        tp: int,
        required_gb: float,
        available_gb: float,
        min_tp: int | None,
    ) -> None:
        hint = (
            f"use --tp {min_tp} or more"
            if min_tp is not None
            else "no tensor-parallel degree up to 64 fits; use a smaller precision or model"
        )
        super().__init__(
            f"{model_id} needs {required_gb:.1f} GB per card on {device_id} at TP={tp}, "
            f"which has {available_gb:.1f} GB usable",
            hint=hint,
            model_id=model_id,
            device_id=device_id,
            tp=tp,
            required_gb=required_gb,
            available_gb=available_gb,
            min_tp=min_tp,
        )
        self.model_id = model_id
        self.device_id = device_id
        self.tp = tp
        self.required_gb = required_gb
        self.available_gb = available_gb
        self.min_tp = min_tp


class UpstreamError(NpuCenterError):
    """An engine, Ray, the database or another backend failed."""

    code = "upstream_error"
    http_status = 502
    exit_code = 7


class NotSupportedError(NpuCenterError):
    """The feature is not supported by this device, engine or backend."""

    code = "not_supported"
    http_status = 501
    exit_code = 8

    def __init__(self, feature: str, reason: str, *, hint: str = "") -> None:
        super().__init__(
            f"{feature} is not supported: {reason}",
            hint=hint,
            details={"feature": feature, "reason": reason},
        )
        self.feature = feature
        self.reason = reason


def all_error_classes() -> list[type[NpuCenterError]]:
    """Every error class of the tree, base first (for meta-tests and the API's error table)."""
    out: list[type[NpuCenterError]] = []
    stack: list[type[NpuCenterError]] = [NpuCenterError]
    while stack:
        cls = stack.pop(0)
        out.append(cls)
        stack.extend(cls.__subclasses__())
    return out


def _jsonable(value: Any) -> Any:
    if isinstance(value, str | int | float | bool) or value is None:
        return value
    if isinstance(value, Mapping):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_jsonable(v) for v in value]
    return repr(value)


def retry_after_whole_s(retry_after_s: float) -> int:
    """Whole seconds to wait (at least 1): what ``Retry-After`` says and the message repeats."""
    return max(1, math.ceil(retry_after_s))
