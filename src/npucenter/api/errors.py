"""The one place control-plane errors become HTTP responses.

npucenter errors render as ``{"error": {"code", "message", "details"}}`` with their
``http_status`` (and ``Retry-After`` when retryable); request validation errors are 422 in the
same shape; anything unmapped is a 500 ``internal`` that never leaks a traceback.
"""

from __future__ import annotations

import logging
import math
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

from npucenter.errors import NpuCenterError
from npucenter.store.db import DatabaseLibraryError, map_db_errors

__all__ = ["error_response", "install_error_handlers"]

log = logging.getLogger(__name__)

_STATUS_CODES = {
    400: "invalid_request",
    401: "unauthenticated",
    403: "permission_denied",
    404: "not_found",
    405: "method_not_allowed",
    409: "conflict",
    413: "invalid_request",
    415: "invalid_request",
    422: "invalid_request",
    429: "quota_exceeded",
}


def error_response(exc: NpuCenterError) -> JSONResponse:
    """The JSON response of a typed error."""
    headers: dict[str, str] = {}
    if exc.retryable:
        retry_after_s = float(exc.details.get("retry_after_s", getattr(exc, "retry_after_s", 1.0)))
        headers["Retry-After"] = str(max(1, math.ceil(retry_after_s)))
    return JSONResponse({"error": exc.to_dict()}, status_code=exc.http_status, headers=headers)


def install_error_handlers(app: FastAPI) -> None:
    """Register the handlers on ``app``."""

    @app.exception_handler(NpuCenterError)
    async def _typed(_: Request, exc: NpuCenterError) -> JSONResponse:
        if exc.http_status >= 500:
            log.warning("request failed: %s", exc, exc_info=exc.http_status == 500)
        return error_response(exc)

    @app.exception_handler(RequestValidationError)
    async def _invalid(_: Request, exc: RequestValidationError) -> JSONResponse:
        problems = [_problem(e) for e in exc.errors()]
        first = problems[0] if problems else {"field": "body", "reason": "invalid"}
        body = {
            "code": "invalid_request",
            "message": f"invalid {first['field']}: {first['reason']}",
            "details": {"errors": problems},
        }
        return JSONResponse({"error": body}, status_code=422)

    @app.exception_handler(StarletteHTTPException)
    async def _http(_: Request, exc: StarletteHTTPException) -> JSONResponse:
        code = _STATUS_CODES.get(exc.status_code, "internal")
        body = {"code": code, "message": str(exc.detail), "details": {}}
        return JSONResponse({"error": body}, status_code=exc.status_code, headers=exc.headers)

    @app.exception_handler(DatabaseLibraryError)
    async def _db(_: Request, exc: DatabaseLibraryError) -> JSONResponse:
        try:
            with map_db_errors():
                raise exc
        except NpuCenterError as mapped:
            return error_response(mapped)
        raise AssertionError("unreachable")  # pragma: no cover

    @app.exception_handler(RecursionError)
    async def _nested(_: Request, exc: RecursionError) -> JSONResponse:
        # json.loads of a body nested thousands deep: the client's error, told without internals
        log.info("refused a request body nested too deeply")
        body = {
            "code": "invalid_request",
            "message": "the JSON body is nested too deeply",
            "details": {"hint": "send at most a few hundred levels of nested arrays and objects"},
        }
        return JSONResponse({"error": body}, status_code=400)

    @app.exception_handler(Exception)
    async def _internal(_: Request, exc: Exception) -> JSONResponse:
        log.exception("unhandled error", exc_info=exc)
        body = {"code": "internal", "message": "internal server error", "details": {}}
        return JSONResponse({"error": body}, status_code=500)


def _problem(error: Any) -> dict[str, Any]:
    loc = [str(p) for p in error.get("loc", ()) if p != "body"]
    return {
        "field": ".".join(loc) or "body",
        "reason": str(error.get("msg", "invalid")),
        "type": str(error.get("type", "")),
    }
