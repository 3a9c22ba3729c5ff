"""Completions go straight to the gateway; everything else through the control plane."""

from __future__ import annotations

from typing import Any

from npucenter.gateway.fastpath import GatewayFastPath


class _Recorder:
    def __init__(self) -> None:
        self.scopes: list[dict[str, Any]] = []

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        self.scopes.append(scope)


async def _noop() -> dict[str, Any]:
    return {}


async def _send(message: Any) -> None:
    return None


async def test_completions_skip_the_control_plane_and_keep_the_mount_scope() -> None:
    api, gateway = _Recorder(), _Recorder()
    app = GatewayFastPath(api, gateway)
    for method, path in (
        ("POST", "/v1/chat/completions"),
        ("POST", "/v1/completions"),
        ("GET", "/v1/models"),
        ("GET", "/v1/metrics"),  # the API guard keeps checking who may read it
        ("POST", "/api/tenants"),
        ("GET", "/v1/chat/completions"),
    ):
        await app({"type": "http", "method": method, "path": path, "root_path": ""}, _noop, _send)
    assert [s["path"] for s in gateway.scopes] == ["/v1/chat/completions", "/v1/completions"]
    assert all(s["root_path"] == "/v1" for s in gateway.scopes)
    assert [s["path"] for s in api.scopes] == [
        "/v1/models",
        "/v1/metrics",
        "/api/tenants",
        "/v1/chat/completions",
    ]
    await app({"type": "lifespan"}, _noop, _send)
    assert api.scopes[-1]["type"] == "lifespan"
