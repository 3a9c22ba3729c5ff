"""The one error handler: every npucenter error gets its status, code and (if retryable) Retry-After;
the client turns the body back into the same error class and exit code."""

from __future__ import annotations

import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient
from pydantic import BaseModel

from npucenter.api.errors import install_error_handlers
from npucenter.cli.client import error_from_body
from npucenter.errors import NpuCenterError, RateLimitedError, all_error_classes


def _instance(cls: type[NpuCenterError]) -> NpuCenterError:
    exc = cls.__new__(cls)
    NpuCenterError.__init__(exc, f"{cls.__name__} happened", details={"k": 1})
    return exc


class Body(BaseModel):
    n: int


def _app(exc: Exception) -> TestClient:
    app = FastAPI()
    install_error_handlers(app)

    @app.get("/boom")
    def boom() -> None:
        raise exc

    @app.post("/typed")
    def typed(body: Body) -> int:
        return body.n

    return TestClient(app, raise_server_exceptions=False)


@pytest.mark.parametrize("cls", all_error_classes(), ids=lambda c: c.__name__)
def test_each_error_class_renders_its_status_and_code(cls):
    resp = _app(_instance(cls)).get("/boom")
    assert resp.status_code == cls.http_status
    err = resp.json()["error"]
    assert err["code"] == cls.code and err["details"] == {"k": 1}
    assert ("retry-after" in resp.headers) == cls.retryable


@pytest.mark.parametrize("cls", all_error_classes(), ids=lambda c: c.__name__)
def test_client_rebuilds_the_error_class_and_exit_code(cls):
    resp = _app(_instance(cls)).get("/boom")
    back = error_from_body(resp.status_code, resp.json())
    assert back.code == cls.code and back.exit_code == cls.exit_code
    assert back.http_status == cls.http_status and back.details == {"k": 1}


def test_retry_after_rounds_up_the_wait():
    resp = _app(RateLimitedError("t", "tokens", 10, 0, retry_after_s=2.2)).get("/boom")
    assert resp.status_code == 429 and resp.headers["retry-after"] == "3"


def test_unmapped_exceptions_are_500_without_a_traceback():
    resp = _app(ValueError("secret internals")).get("/boom")
    assert resp.status_code == 500
    assert resp.json()["error"]["code"] == "internal"
    assert "secret internals" not in resp.text


def test_validation_errors_and_unknown_routes_use_the_same_shape():
    client = _app(ValueError())
    bad = client.post("/typed", json={"n": "x"})
    assert bad.status_code == 422 and bad.json()["error"]["code"] == "invalid_request"
    assert bad.json()["error"]["details"]["errors"][0]["field"] == "n"
    missing = client.get("/nowhere")
    assert missing.status_code == 404 and missing.json()["error"]["code"] == "not_found"


def test_a_body_without_error_document_is_an_upstream_error():
    assert error_from_body(502, "<html>bad gateway</html>").code == "upstream_error"
