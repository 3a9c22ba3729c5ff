"""The gateway inside the control-plane app: store keys and token rates, store ledger, dashboard."""

from __future__ import annotations

import asyncio
import base64
import math
import re
import time
from collections.abc import Iterator
from pathlib import Path

import openai
import pytest

import npucenter.live.extension  # noqa: F401  (registers the 'gateway' server extension)
from factories import make_endpoint, make_tenant
from npucenter.api.app import build_server_app
from npucenter.clock import FakeClock
from npucenter.gateway.budget import BudgetBook
from npucenter.gateway.testing import running_server
from npucenter.settings import Settings
from npucenter.wire.fake import FakeOpenAI

ADMIN = "admin-key-for-tests-0123456789"


@pytest.fixture
def center(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[tuple[str, object, str]]:
    settings = Settings.from_env(
        {"NPUCENTER_ADMIN_KEY": ADMIN, "NPUCENTER_VIRTUAL_FLEET": "0"}, data_dir=tmp_path
    )
    app = build_server_app(settings)
    control = app.state.control
    with control.tx() as repo:
        # 1 rngd card, 20 tokens/s (burst: 200 tokens)
        _, secret = make_tenant(repo, device_type="rngd", tokens_per_s=20.0, key=True)
    upstream = FakeOpenAI()
    with running_server(upstream, lifespan="off") as up_url:
        app.state.gateway.pool.set(
            [
                make_endpoint(
                    replica_id="rngd-0-r0",
                    base_url=up_url,
                    model_id="llama-3.1-8b",
                    device_id="rngd",
                )
            ]
        )
        with running_server(app) as url:
            yield url, app, secret


def _usage(url: str, n: int) -> list[dict[str, object]]:
    import httpx

    deadline = time.monotonic() + 30  # the ledger flushes every 0.2 s; a loaded CI box is slower
    rows: list[dict[str, object]] = []
    while time.monotonic() < deadline:
        rows = [
            r
            for r in httpx.get(
                f"{url}/api/usage", headers={"authorization": f"Bearer {ADMIN}"}
            ).json()
            if r["kind"] == "tokens"
        ]
        if len(rows) >= n:
            break
        time.sleep(0.05)
    return rows


def test_tenant_key_is_metered_into_the_store_ledger(center) -> None:  # type: ignore[no-untyped-def]
    url, _app, secret = center
    client = openai.OpenAI(base_url=f"{url}/v1", api_key=secret, max_retries=0)
    out = client.chat.completions.create(
        model="llama-3.1-8b", messages=[{"role": "user", "content": "hi"}], max_tokens=4
    )
    admin = openai.OpenAI(base_url=f"{url}/v1", api_key=ADMIN, max_retries=0)
    admin.chat.completions.create(
        model="llama-3.1-8b", messages=[{"role": "user", "content": "hi"}], max_tokens=3
    )
    rows = _usage(url, 2)
    by_tenant = {r["tenant"]: r for r in rows}
    assert by_tenant["acme"]["tokens_out"] == 4
    assert by_tenant["acme"]["tokens_in"] == out.usage.prompt_tokens  # type: ignore[union-attr]
    assert by_tenant["operator"]["tokens_out"] == 3  # the admin key is metered too
    assert by_tenant["acme"]["device_type"] == "rngd" and by_tenant["acme"]["cost_usd"] > 0


def test_tenant_token_rate_from_the_quota_is_enforced(center) -> None:  # type: ignore[no-untyped-def]
    url, app, secret = center
    # The buckets' clock stands still between the calls, so the refill (20 tokens/s) is what the
    # test lets pass, not however long a loaded machine takes between two requests.
    gateway = app.state.gateway
    assert gateway.budgets.leases is None  # one gateway: its own buckets (no shared store)
    clock = FakeClock(1000.0)
    gateway.budgets = BudgetBook(clock)
    client = openai.OpenAI(base_url=f"{url}/v1", api_key=secret, max_retries=0)

    def ask(max_tokens: int) -> None:
        client.chat.completions.create(
            model="llama-3.1-8b", messages=[{"role": "user", "content": "x"}], max_tokens=max_tokens
        )

    with pytest.raises(openai.RateLimitError) as info:  # 500 tokens > the 200-token burst: never
        ask(500)
    assert info.value.body["code"] == "quota_exceeded"  # type: ignore[index]
    ask(100)
    with pytest.raises(openai.RateLimitError) as info:
        ask(100)
    assert info.value.body["code"] == "rate_limited"  # type: ignore[index]
    message = info.value.body["message"]  # type: ignore[index]
    asked, left = (
        float(n) for n in re.findall(r"asked for ([\d.]+) .* has ([\d.]+) left", message)[0]
    )
    assert left == gateway.budgets.view("acme").token_bucket_level  # the bucket, not a guess
    wait_s = (asked - left) / 20.0  # the quota's 20 tokens/s refill the difference
    assert int(info.value.response.headers["retry-after"]) == math.ceil(wait_s)
    clock.advance(wait_s * 0.9)  # not yet refilled: still refused
    with pytest.raises(openai.RateLimitError):
        ask(100)
    clock.advance(wait_s * 0.1 + 1e-6)  # refilled at the quota's rate: admitted
    ask(100)


def test_revoked_and_unknown_keys_are_refused(center) -> None:  # type: ignore[no-untyped-def]
    url, _app, _secret = center
    with pytest.raises(openai.AuthenticationError):
        openai.OpenAI(base_url=f"{url}/v1", api_key="npc_not_a_key", max_retries=0).models.list()


def test_dashboard_and_metrics(center) -> None:  # type: ignore[no-untyped-def]
    import httpx

    url, app, secret = center
    openai.OpenAI(base_url=f"{url}/v1", api_key=secret, max_retries=0).chat.completions.create(
        model="llama-3.1-8b", messages=[{"role": "user", "content": "hi"}], max_tokens=2
    )
    page = httpx.get(f"{url}/")
    assert page.status_code == 200 and "<svg" in page.text
    assert "rngd-0-r0" in page.text and "acme" in page.text
    assert "cdn" not in page.text.lower() and "<script" not in page.text.lower()
    assert "npucenter_gateway_requests_total" in httpx.get(f"{url}/metrics").text
    # a non-loopback client needs the admin key (ASGI transport with a remote client address)
    basic = base64.b64encode(f":{ADMIN}".encode()).decode()
    tenant_basic = base64.b64encode(f":{secret}".encode()).decode()

    async def remote() -> list[int]:
        transport = httpx.ASGITransport(app=app, client=("10.1.2.3", 5555))
        async with httpx.AsyncClient(transport=transport, base_url="http://center") as http:
            return [
                (await http.get("/")).status_code,
                (await http.get("/", headers={"authorization": f"Basic {basic}"})).status_code,
                (
                    await http.get("/", headers={"authorization": f"Basic {tenant_basic}"})
                ).status_code,
            ]

    assert asyncio.run(remote()) == [401, 200, 401]


def test_key_maps_to_tenant_priority_and_token_rate(center) -> None:  # type: ignore[no-untyped-def]
    _url, app, secret = center
    principal = app.state.gateway.keys.resolve(secret)
    assert principal.tenant == "acme" and not principal.is_admin
    assert principal.limits.tokens_per_s == 20.0  # from the quota
    assert principal.priority == 2  # the quota's default class "research"
    admin = app.state.gateway.keys.resolve(ADMIN)
    assert admin.is_admin and admin.tenant == "operator"
