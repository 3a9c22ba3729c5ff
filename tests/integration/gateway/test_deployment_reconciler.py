"""The deployment reconciler on a real store (SQLite) with a FakeExecutor: engines follow the
admitted replicas (admit, scale, preempt, delete, fail), and the gateway's pool follows them."""

from __future__ import annotations

import asyncio
import re
from pathlib import Path
from typing import Any

import pytest

from factories import make_tenant
from npucenter.api import create_app
from npucenter.api.admission import run_admission
from npucenter.executors import FakeExecutor
from npucenter.fleet import fleet_from_dict
from npucenter.gateway import Gateway, StaticKeyResolver
from npucenter.gateway.reconciler import DeploymentReconciler, WantedReplica, wanted_replicas
from npucenter.settings import Settings
from npucenter.web.dashboard import render_dashboard


class Rig:
    def __init__(self, tmp_path: Path) -> None:
        settings = Settings.from_env(
            {"NPUCENTER_ADMIN_KEY": "admin-0123456789abcdef"}, data_dir=tmp_path
        )
        self.control: Any = create_app(settings).state.control
        self.executor = FakeExecutor()
        self.gateway = Gateway(keys=StaticKeyResolver({}))
        self.reconciler = DeploymentReconciler(
            read=self.read, executor=self.executor, gateway=self.gateway
        )
        with self.control.tx() as repo:
            repo.create_server("h100-0", "h100", 4)

    def read(self) -> list[WantedReplica]:
        with self.control.tx() as repo:
            return wanted_replicas(repo, device_names={"nvidia_h100_sxm": "h100"})

    def tenant(self, name: str, **quota: Any) -> None:
        with self.control.tx() as repo:
            make_tenant(repo, name, device_type="h100", **quota)

    def deploy(self, tenant: str, name: str, replicas: int, **kw: Any) -> int:
        with self.control.tx() as repo:
            dep = repo.create_deployment(
                repo.get_tenant(tenant),
                name=name,
                model=kw.pop("model", "llama-3.1-8b"),
                device_type="h100",
                tp=1,
                precision="fp8",
                replicas=replicas,
                **kw,
            )
            dep_id = int(dep.id)
        run_admission(self.control)
        return dep_id

    def scale(self, dep_id: int, replicas: int) -> None:
        with self.control.tx() as repo:
            repo.scale_deployment(repo.get_deployment(dep_id), replicas)
        run_admission(self.control)

    def delete(self, dep_id: int) -> None:
        with self.control.tx() as repo:
            repo.delete_deployment(repo.get_deployment(dep_id))
        run_admission(self.control)

    def tick(self) -> Any:
        return asyncio.run(self.reconciler.reconcile())

    def engines(self) -> set[str]:
        return {r.replica_id for r in self.executor.replicas()}

    def pool(self) -> dict[str, str]:
        return {r.replica_id: r.endpoint.model_id for r in self.gateway.pool.replicas()}


@pytest.fixture
def rig(tmp_path: Path) -> Rig:
    return Rig(tmp_path)


def test_an_admitted_replica_gets_an_engine_served_under_its_model_and_name(rig: Rig) -> None:
    rig.tenant("acme", nominal_cards=2)
    rig.deploy("acme", "chat2", 2, model="qwen2.5-7b")
    report = rig.tick()
    assert sorted(report.started) == ["h100-0-r0", "h100-0-r1"] and not report.stopped
    assert rig.engines() == {"h100-0-r0", "h100-0-r1"}
    assert rig.pool() == {"h100-0-r0": "qwen2.5-7b", "h100-0-r1": "qwen2.5-7b"}
    assert rig.gateway.models() == ["chat2", "qwen2.5-7b"]
    assert rig.gateway.pool.resolve("chat2") == "qwen2.5-7b"
    spec = rig.executor.replicas()[0].spec
    assert (spec.engine, spec.model, spec.device, spec.precision) == (
        "virtual", "qwen2.5-7b", "h100", "fp8",
    )  # fmt: skip
    assert {r.spec.device_indices for r in rig.executor.replicas()} == {(0,), (1,)}
    # idempotent: nothing changed, nothing is started or stopped again
    calls = list(rig.executor.calls)
    again = rig.tick()
    assert not again.changed and rig.executor.calls == calls


def test_scale_down_and_delete_stop_engines_and_unregister_them(rig: Rig) -> None:
    rig.tenant("acme", nominal_cards=3)
    dep = rig.deploy("acme", "chat2", 3)
    rig.tick()
    assert len(rig.engines()) == 3
    rig.scale(dep, 1)
    report = rig.tick()
    assert sorted(report.stopped) == ["h100-0-r1", "h100-0-r2"]
    assert rig.engines() == {"h100-0-r0"} and set(rig.pool()) == {"h100-0-r0"}
    rig.delete(dep)
    report = rig.tick()
    assert report.stopped == ["h100-0-r0"] and rig.engines() == set()
    assert rig.pool() == {} and rig.gateway.models() == []
    assert rig.gateway.pool.resolve("chat2") == "chat2"  # the alias went with it


def test_a_preempted_replica_stops_and_the_owners_starts(rig: Rig) -> None:
    rig.tenant("lender", nominal_cards=4, cohort="center", priority_class="production")
    with rig.control.tx() as repo:
        make_tenant(
            repo,
            "borrower",
            kind="university",
            device_type="h100",
            nominal_cards=0,
            borrowing_limit_cards=4,
            cohort="center",
            priority_class="best-effort",
        )
    rig.deploy("borrower", "cheap", 4)
    rig.tick()
    assert len(rig.engines()) == 4
    rig.deploy("lender", "own", 2, model="qwen2.5-7b")  # reclaims two lent cards
    report = rig.tick()
    assert len(report.stopped) == 2 and len(report.started) == 2
    models = sorted(rig.pool().values())
    assert models == ["llama-3.1-8b", "llama-3.1-8b", "qwen2.5-7b", "qwen2.5-7b"]
    assert set(rig.pool()) == rig.engines()


def test_a_failed_engine_is_restarted_and_a_failed_start_is_retried(rig: Rig) -> None:
    rig.tenant("acme", nominal_cards=1)
    rig.executor.fail_starts = 1
    rig.deploy("acme", "chat2", 1)
    report = rig.tick()
    assert report.failed == ["h100-0-r0"] and rig.pool() == {}
    assert rig.gateway.expected_models == {"llama-3.1-8b", "chat2"}  # 503 while starting
    report = rig.tick()
    assert report.started == ["h100-0-r0"] and set(rig.pool()) == {"h100-0-r0"}
    rig.executor.fail("h100-0-r0")
    report = rig.tick()
    assert report.restarted == ["h100-0-r0"]
    assert ("restart", "h100-0-r0") in rig.executor.calls
    assert set(rig.pool()) == {"h100-0-r0"}


def test_shutdown_stops_every_engine(rig: Rig) -> None:
    rig.tenant("acme", nominal_cards=2)
    rig.deploy("acme", "chat2", 2)

    async def run() -> None:
        await rig.reconciler.reconcile()
        await rig.reconciler.shutdown()

    asyncio.run(run())
    assert rig.engines() == set() and rig.pool() == {}


def test_the_dashboard_shows_the_server_each_reconciled_replica_was_placed_on(rig: Rig) -> None:
    rig.tenant("acme", nominal_cards=2)
    dep = rig.deploy("acme", "chat2", 2, model="qwen2.5-7b")
    rig.tick()
    assert rig.gateway.replica_servers == {"h100-0-r0": "h100-0", "h100-0-r1": "h100-0"}
    fleet = fleet_from_dict(  # the fleet file places nothing: the store's admission did
        {"name": "t", "servers": [{"device": "h100", "count": 1, "cards_per_server": 4}]}
    )
    html = render_dashboard(rig.gateway, fleet)
    body = html.split('aria-labelledby="replicas">', 2)[2].split("</tbody>")[0]
    rows = {
        cells[0]: cells
        for cells in (
            [
                re.sub(r"<[^>]+>", "", c).strip()
                for c in re.findall(r"<t[hd][^>]*>(.*?)</t[hd]>", r, re.S)
            ]
            for r in body.split("</tr>")
        )
        if cells
    }
    assert rows["h100-0-r0"][1] == "h100-0" and rows["h100-0-r1"][1] == "h100-0"
    rig.delete(dep)
    rig.tick()
    assert rig.gateway.replica_servers == {}


def test_a_stopping_engines_cards_stay_held_until_it_is_gone(rig: Rig) -> None:
    rig.tenant("acme", nominal_cards=2)
    dep = rig.deploy("acme", "chat2", 2)
    rig.tick()
    assert rig.reconciler.held_cards() == {("h100-0", 0), ("h100-0", 1)}
    rig.scale(dep, 1)  # the store frees card 1 at once; its engine takes a while to stop

    async def scale_down() -> set[tuple[str, int]]:
        release, stopping = asyncio.Event(), asyncio.Event()
        plain_stop = rig.executor.stop

        async def slow_stop(replica_id: str, **kw: Any) -> None:
            stopping.set()
            await release.wait()
            await plain_stop(replica_id, **kw)

        rig.executor.stop = slow_stop  # type: ignore[method-assign]
        tick = asyncio.create_task(rig.reconciler.reconcile())
        await asyncio.wait_for(stopping.wait(), 5.0)
        during = rig.reconciler.held_cards()
        release.set()
        await asyncio.wait_for(tick, 5.0)
        return during

    assert asyncio.run(scale_down()) == {("h100-0", 0), ("h100-0", 1)}  # still held
    assert rig.reconciler.held_cards() == {("h100-0", 0)}  # gone: free
