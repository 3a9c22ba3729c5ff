"""The gateway's seams over the store: key resolution with tenant limits, ledger appends."""

from __future__ import annotations

import pytest

from npucenter.api.gateway_bridge import ADMIN_TENANT, StoreKeyResolver, StoreLedger
from npucenter.errors import AuthenticationError
from npucenter.metering.ledger import UsageRecord
from npucenter.policy.quota import PriorityClass


def test_resolver_gives_tenant_priority_and_token_limit(app, admin, admin_key):
    admin.post("/api/tenants", json={"name": "acme", "kind": "company"})
    admin.put(
        "/api/quotas",
        json={
            "tenant": "acme",
            "device_type": "rngd",
            "nominal_cards": 2,
            "priority_class": "production",
            "tokens_per_s": 100.0,
        },
    )
    key = admin.post("/api/keys", json={"tenant": "acme"}).json()["key"]
    resolver = StoreKeyResolver(app.state.control)
    who = resolver.resolve(key)
    assert who.tenant == "acme" and not who.is_admin
    assert who.limits.tokens_per_min == pytest.approx(6000.0)
    assert who.priority == int(PriorityClass.PRODUCTION)
    assert resolver.resolve(admin_key).is_admin
    assert resolver.resolve(admin_key).tenant == ADMIN_TENANT
    with pytest.raises(AuthenticationError):
        resolver.resolve("npc_unknown")


def test_ledger_appends_usage_records(app, admin):
    admin.post("/api/tenants", json={"name": "acme", "kind": "company"})
    records = [
        UsageRecord(
            request_id="r1",
            tenant="acme",
            key_id="1",
            service="llama-3.1-8b",
            endpoint="/v1/chat/completions",
            device_id="furiosa_rngd",
            input_tokens=100,
            output_tokens=50,
            device_s=0.5,
            energy_j=40.0,
            cost_usd=0.001,
            started_at_s=1_700_000_100.0,
        ),
        UsageRecord(
            request_id="r2",
            tenant=ADMIN_TENANT,
            key_id="0",
            service="s",
            endpoint="/v1/completions",
        ),
    ]
    StoreLedger(app.state.control).append(records)
    rows = admin.get("/api/usage").json()
    assert len(rows) == 1
    row = rows[0]
    assert (row["tenant"], row["kind"], row["tokens_in"], row["tokens_out"]) == (
        "acme",
        "tokens",
        100,
        50,
    )
    assert row["energy_j"] == pytest.approx(40.0) and row["device_seconds"] == pytest.approx(0.5)
    assert row["ref"].startswith("r1")
