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
