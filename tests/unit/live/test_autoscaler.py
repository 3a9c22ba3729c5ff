"""The live autoscaler feeds the gateway's signals to the twin's policy and scales the store."""

from __future__ import annotations

from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

from npucenter.clock import FakeClock
from npucenter.fleet import fleet_from_dict
from npucenter.gateway.dispatch import Dispatcher
from npucenter.gateway.pool import ReplicaEndpoint, UpstreamPool
from npucenter.gateway.routing import make_router
from npucenter.live.autoscaler import Autoscaler

FLEET = {
    "name": "t",
    "servers": [{"device": "rngd", "count": 1, "cards_per_server": 4}],
    "services": [
        {"model": "llama-3.1-8b", "device": "rngd", "min_replicas": 0, "max_replicas": 3,
         "autoscale": {"idle_to_zero_s": 10, "target_concurrency_per_replica": 2}},
        {"model": "qwen2.5-7b", "device": "rngd"},
    ],
}  # fmt: skip


@dataclass
class _Dep:
    id: int
    name: str
    tenant_id: int = 1
    replicas: int = 1
    model: str = "llama-3.1-8b"


@dataclass
class _Repo:
    deps: list[_Dep]
    scaled: list[tuple[str, int]] = field(default_factory=list)
    inflight: list[Any] = field(default_factory=list)  # what each scale was told of the engines

    def list_tenants(self) -> list[Any]:
        return [type("T", (), {"id": 1, "name": "operator"})()]

    def list_deployments(self) -> list[_Dep]:
        return self.deps

    def get_deployment(self, dep_id: int) -> _Dep:
        return next(d for d in self.deps if d.id == dep_id)

    def scale_deployment(self, dep: _Dep, replicas: int, *, inflight: Any = None) -> None:
        self.inflight.append(inflight)
        dep.replicas = replicas
        self.scaled.append((dep.name, replicas))


class _Control:
    def __init__(self, repo: _Repo) -> None:
        self.repo = repo

    @contextmanager
    def tx(self) -> Any:
        yield self.repo


class _Gateway:
    def __init__(self, clock: FakeClock) -> None:
        self.pool = UpstreamPool(clock)
        self.dispatcher = Dispatcher(self.pool, make_router("round-robin", clock), clock)
        self.held_for_replica: dict[str, int] = {}
        self.usage_totals: dict[Any, Any] = {}
        self.standby_models: set[str] = set()
        self.on_cold_start = None


async def test_idle_to_zero_then_a_held_request_asks_for_one(monkeypatch) -> None:  # type: ignore[no-untyped-def]
    import npucenter.api.admission as admission

    monkeypatch.setattr(admission, "admit_after_change", lambda control: None)
    fleet = fleet_from_dict(FLEET)
    now = [1000.0]
    repo = _Repo([_Dep(1, "llama-3.1-8b-rngd"), _Dep(2, "qwen2.5-7b-rngd")])
    gw = _Gateway(FakeClock())
    scaler = Autoscaler(_Control(repo), gw, fleet, now_s=lambda: now[0])
    scaler.install()
    assert gw.standby_models == {"llama-3.1-8b"}  # only the one that may reach zero
    gw.pool.set(
        [ReplicaEndpoint(replica_id="r0", base_url="http://127.0.0.1:9", model_id="llama-3.1-8b")]
    )
    assert await scaler.tick() == []  # busy enough and not idle yet
    now[0] += 11.0
    assert await scaler.tick() == [("llama-3.1-8b-rngd", 1, 0)]  # idle for idle_to_zero_s
    gw.pool.set([])
    gw.held_for_replica["llama-3.1-8b"] = 5
    assert await scaler.tick() == [("llama-3.1-8b-rngd", 0, 1)]  # a cold start for held requests
    assert ("qwen2.5-7b-rngd", 0) not in repo.scaled  # a fixed deployment is never touched
    assert repo.inflight == [None, None]  # no reconciler here: the store's own order


async def test_a_scale_down_tells_the_store_what_each_replica_has_in_flight(monkeypatch) -> None:  # type: ignore[no-untyped-def]
    import npucenter.api.admission as admission

    monkeypatch.setattr(admission, "admit_after_change", lambda control: None)
    now = [1000.0]
    repo = _Repo([_Dep(1, "llama-3.1-8b-rngd")])
    gw = _Gateway(FakeClock())
    gw.reconciler = type("R", (), {"inflight_by_row": lambda self: {11: 0, 12: 3}})()  # type: ignore[attr-defined]
    scaler = Autoscaler(_Control(repo), gw, fleet_from_dict(FLEET), now_s=lambda: now[0])
    now[0] += 11.0
    assert await scaler.tick() == [("llama-3.1-8b-rngd", 1, 0)]
    assert repo.inflight == [{11: 0, 12: 3}]  # the store drains the replicas with fewest first


async def test_missed_ttft_slo_asks_for_one_more_replica(monkeypatch) -> None:  # type: ignore[no-untyped-def]
    import npucenter.api.admission as admission
    from npucenter.gateway.metrics import GatewayMetrics

    monkeypatch.setattr(admission, "admit_after_change", lambda control: None)
    fleet = fleet_from_dict(
        {
            **FLEET,
            "services": [FLEET["services"][0]],  # type: ignore[index]
            "slos": {"llama-3.1-8b": "mlperf-llama-3.1-8b"},  # TTFT 2 s, TPOT 100 ms
        }
    )
    repo = _Repo([_Dep(1, "llama-3.1-8b-rngd")])
    gw = _Gateway(FakeClock())
    gw.metrics = GatewayMetrics(gw.pool, lambda: 0)  # type: ignore[attr-defined]
    scaler = Autoscaler(_Control(repo), gw, fleet, now_s=lambda: 1000.0)
    gw.pool.set(
        [ReplicaEndpoint(replica_id="r0", base_url="http://127.0.0.1:9", model_id="llama-3.1-8b")]
    )
    for _ in range(10):  # well served: within the SLO, nothing to do
        gw.metrics.ttft.labels("llama-3.1-8b").observe(0.2)
    assert scaler._attainment(scaler.tracked[0]) == 1.0
    assert scaler._attainment(scaler.tracked[0]) is None  # nothing new since the last look
    for ttft in (0.2, 3.0, 4.0, 5.0):  # 1 of 4 within 2 s
        gw.metrics.ttft.labels("llama-3.1-8b").observe(ttft)
    gw.held_for_replica["llama-3.1-8b"] = 1  # not idle
    changes = await scaler.tick()
    assert changes == [("llama-3.1-8b-rngd", 1, 2)]  # reason: SLO attainment 0.25
