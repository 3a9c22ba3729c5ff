"""A bug inside the gateway answers an error without its text (that stays in the server log)."""

from __future__ import annotations

import httpx

from npucenter.clock import FakeClock
from npucenter.gateway import Gateway
from npucenter.gateway.auth import Principal


class _Broken:
    def resolve(self, api_key: str) -> Principal:
        raise RuntimeError("secret internals: /var/lib/npucenter/db password=hunter2")


async def test_an_unexpected_exception_is_answered_without_its_text() -> None:
    gateway = Gateway(keys=_Broken(), clock=FakeClock())
    transport = httpx.ASGITransport(app=gateway)
    async with httpx.AsyncClient(transport=transport, base_url="http://gw") as client:
        resp = await client.post(
            "/v1/chat/completions",
            json={"model": "m", "messages": [{"role": "user", "content": "hi"}]},
            headers={"Authorization": "Bearer sk"},
        )
    await gateway.aclose()
    assert resp.status_code >= 500
    assert "internals" not in resp.text and "RuntimeError" not in resp.text
    assert resp.json()["error"]["message"].startswith("the gateway failed on this request")
