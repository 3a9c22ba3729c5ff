"""A deployment takes autoscaling bounds through the API (`deploy create --min-replicas`); the
live autoscaler tracks it from the row; bounds that cannot hold are refused."""

from __future__ import annotations

from typing import Any

from npucenter.clock import FakeClock
from npucenter.fleet import fleet_from_dict
from npucenter.gateway.dispatch import Dispatcher
from npucenter.gateway.pool import UpstreamPool
from npucenter.gateway.routing import make_router
from npucenter.live.autoscaler import Autoscaler


def _setup(admin) -> None:  # type: ignore[no-untyped-def]
    assert admin.post("/api/tenants", json={"name": "lab", "kind": "university"}).status_code == 201
    server = {"name": "rngd-0", "device_type": "rngd", "num_cards": 2}
    assert admin.post("/api/servers", json=server).status_code == 201
    quota = {"tenant": "lab", "device_type": "rngd", "nominal_cards": 2}
    assert admin.put("/api/quotas", json=quota).status_code in (200, 201)


def _deploy(admin, **extra: Any):  # type: ignore[no-untyped-def]
    body = {"name": "chat", "model": "llama-3.1-8b", "device_type": "rngd", "tenant": "lab"}
    return admin.post("/api/deployments", json={**body, **extra})


class _Gateway:
    def __init__(self) -> None:
        clock = FakeClock()
        self.pool = UpstreamPool(clock)
        self.dispatcher = Dispatcher(self.pool, make_router("round-robin", clock), clock)
        self.held_for_replica: dict[str, int] = {}
        self.usage_totals: dict[Any, Any] = {}
        self.standby_models: set[str] = set()
        self.on_cold_start = None


async def test_bounds_are_stored_and_an_idle_deployment_goes_to_zero(admin, app) -> None:  # type: ignore[no-untyped-def]
    _setup(admin)
    resp = _deploy(admin, min_replicas=0, max_replicas=2)
    assert resp.status_code == 201, resp.text
    doc = resp.json()
    assert (doc["min_replicas"], doc["max_replicas"], doc["replicas"]) == (0, 2, 1)
    now = [0.0]
    fleet = fleet_from_dict(  # a fleet file that autoscales nothing: the row decides
        {"name": "f", "servers": [{"device": "rngd", "count": 1, "cards_per_server": 2}]}
    )
    gw = _Gateway()
    scaler = Autoscaler(app.state.control, gw, fleet, now_s=lambda: now[0])
    assert await scaler.tick() == []  # found in the store: idle counts from now
    now[0] = 1000.0  # no request since, past idle_to_zero_s (300)
    assert await scaler.tick() == [("chat", 1, 0)]
    assert gw.standby_models == {"llama-3.1-8b"}  # held at zero, never 404
    (dep,) = admin.get("/api/deployments").json()
    assert dep["replicas"] == 0


def test_bounds_that_cannot_hold_are_refused(admin) -> None:  # type: ignore[no-untyped-def]
    _setup(admin)
    assert _deploy(admin, min_replicas=3, max_replicas=2).status_code == 422
    assert _deploy(admin, max_replicas=0).status_code == 422
    assert admin.get("/api/deployments").json() == []


async def test_bounds_change_after_creation_and_the_autoscaler_uses_them_next_tick(
    admin, app
) -> None:  # type: ignore[no-untyped-def]
    _setup(admin)
    dep = _deploy(admin, replicas=2).json()  # a fixed count: not autoscaled
    now = [0.0]
    fleet = fleet_from_dict(
        {"name": "f", "servers": [{"device": "rngd", "count": 1, "cards_per_server": 2}]}
    )
    gw = _Gateway()
    scaler = Autoscaler(app.state.control, gw, fleet, now_s=lambda: now[0])
    assert await scaler.tick() == [] and scaler.tracked == []
    # an idle period alone is stored, but scales nothing: the count stays fixed
    assert admin.patch(f"/api/deployments/{dep['id']}", json={"idle_to_zero_s": 5}).is_success
    assert await scaler.tick() == [] and scaler.tracked == []
    body = {"min_replicas": 0, "max_replicas": 2, "idle_to_zero_s": 30}
    resp = admin.patch(f"/api/deployments/{dep['id']}", json=body)
    assert resp.status_code == 200, resp.text
    doc = resp.json()
    assert (doc["min_replicas"], doc["max_replicas"], doc["idle_to_zero_s"]) == (0, 2, 30.0)
    assert doc["replicas"] == 2  # bounds alone do not scale; the autoscaler does
    # tracked at the next tick (no request: one replica carries it; idle counts from now)
    assert await scaler.tick() == [("chat", 2, 1)]
    (t,) = scaler.tracked
    assert (t.policy.min_replicas, t.policy.max_replicas, t.policy.idle_to_zero_s) == (0, 2, 30.0)
    now[0] = 29.0
    assert await scaler.tick() == []  # within the new idle period
    now[0] = 31.0  # past it (the default, 300 s, would still hold)
    assert await scaler.tick() == [("chat", 1, 0)]
    # only the field given changes; the next tick's policy has it
    resp = admin.patch(f"/api/deployments/{dep['id']}", json={"max_replicas": 1})
    assert resp.json()["min_replicas"] == 0 and resp.json()["max_replicas"] == 1
    await scaler.tick()
    assert scaler.tracked[0].policy.max_replicas == 1
    # null bounds: a fixed count again, no longer tracked
    none = {"min_replicas": None, "max_replicas": None, "idle_to_zero_s": None}
    assert admin.patch(f"/api/deployments/{dep['id']}", json=none).status_code == 200
    await scaler.tick()
    assert scaler.tracked == []


def test_bounds_a_tenant_sets_are_checked_and_scoped(admin, tenant_client) -> None:  # type: ignore[no-untyped-def]
    lab = tenant_client("lab")
    other = tenant_client("other")
    server = {"name": "rngd-0", "device_type": "rngd", "num_cards": 4}
    assert admin.post("/api/servers", json=server).status_code == 201
    for name in ("lab", "other"):
        quota = {"tenant": name, "device_type": "rngd", "nominal_cards": 2}
        assert admin.put("/api/quotas", json=quota).status_code in (200, 201)
    body = {"name": "chat", "model": "llama-3.1-8b", "device_type": "rngd", "replicas": 1}
    dep = lab.post("/api/deployments", json=body).json()
    url = f"/api/deployments/{dep['id']}"
    # min above max: 400 with what to give
    bad = lab.patch(url, json={"min_replicas": 3, "max_replicas": 2})
    assert bad.status_code == 400 and "min_replicas 3 is above max_replicas 2" in bad.text
    # max beyond the quota (2 cards, TP 1): 409 naming the most it may be
    over = lab.patch(url, json={"max_replicas": 3})
    assert over.status_code == 409, over.text
    err = over.json()["error"]
    assert "--max 2" in err["message"] and err["details"]["quota_cards"] == 2
    assert lab.patch(url, json={}).status_code == 400  # nothing to change
    # another tenant cannot see it (404), the operator can change it
    assert other.patch(url, json={"max_replicas": 1}).status_code == 404
    ok = admin.patch(url, json={"min_replicas": 0, "max_replicas": 2})
    assert ok.status_code == 200 and ok.json()["max_replicas"] == 2
    assert lab.patch(url, json={"min_replicas": 1}).json()["min_replicas"] == 1
    # the refused changes left the row as it was before them
    assert lab.get(url).json()["max_replicas"] == 2
