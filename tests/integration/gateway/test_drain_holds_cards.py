"""A replica scaled down keeps its cards in the store until its engine has stopped: admission
gives them to nobody while it drains, its tenant is billed up to the stop (not the
scale-down), and they are free once the reconciler reports the engine gone; a center that
stops or dies mid-drain leaks nothing (the next reconciler holds no engine for it: released).
A deployment deleted drains the same way: gone for its tenant at once, its card held and billed
until its engine has stopped.

A real store (SQLite, a fake clock for the bill) behind the reconciler, wired as
``npucenter up`` wires it (``record``, ``release`` then an admission cycle); virtual engines
served on this loop behind a real gateway for the stream, a FakeExecutor for the restarts."""

from __future__ import annotations

import asyncio
import json
import time
from pathlib import Path
from typing import Any

import httpx
import pytest
import uvicorn

from factories import make_tenant
from npucenter.api import create_app
from npucenter.api.admission import run_admission
from npucenter.api.views import server_out
from npucenter.clock import FakeClock
from npucenter.executors import FakeExecutor
from npucenter.executors.inprocess import InProcessExecutor
from npucenter.gateway import Gateway, StaticKeyResolver
from npucenter.gateway.reconciler import DeploymentReconciler, WantedReplica, wanted_replicas
from npucenter.policy.principal import Principal
from npucenter.settings import Settings
from npucenter.store.models import Deployment

KEY = "acme-key-0123456789abcdef"
ACME = Principal(key_id="key-1", tenant="acme", tenant_id=1)


class Center:
    """One card, acme's one-replica deployment on it; lab has a quota for that card too."""

    def __init__(self, tmp_path: Path) -> None:
        settings = Settings.from_env(
            {"NPUCENTER_ADMIN_KEY": "admin-0123456789abcdef"}, data_dir=tmp_path
        )
        self.clock = FakeClock(1_700_000_000.0)
        self.control: Any = create_app(settings, now_s=self.clock.now_s).state.control
        with self.control.tx() as repo:
            repo.create_server("h100-0", "h100", 1)
            make_tenant(repo, "acme", device_type="h100", nominal_cards=1)
            make_tenant(repo, "lab", device_type="h100", nominal_cards=1)
            dep = repo.create_deployment(
                repo.get_tenant("acme"), name="chat", model="llama-3.1-8b",
                device_type="h100", tp=1, precision="bf16", replicas=1,
            )  # fmt: skip
            self.dep_id = int(dep.id)
        run_admission(self.control)

    def reconciler(self, executor: Any, gateway: Gateway, **kw: Any) -> DeploymentReconciler:
        return DeploymentReconciler(
            read=self.read, record=self.record, release=self.release, executor=executor,
            gateway=gateway, drain_poll_s=0.02, **kw,
        )  # fmt: skip

    def read(self) -> list[WantedReplica]:
        with self.control.tx() as repo:
            return wanted_replicas(repo, device_names={"nvidia_h100_sxm": "h100"})

    def record(self, states: dict[int, tuple[str, str | None]]) -> None:
        with self.control.tx() as repo:
            repo.record_run_states(states)

    def release(self, still_held: set[int]) -> None:  # as live/fleet.py's
        with self.control.tx() as repo:
            released = repo.release_drained_replicas(still_held)
        if released:
            run_admission(self.control)

    def scale(self, replicas: int, reconciler: DeploymentReconciler) -> None:
        with self.control.tx() as repo:
            repo.scale_deployment(
                repo.get_deployment(self.dep_id), replicas, inflight=reconciler.inflight_by_row()
            )
        run_admission(self.control)

    def delete(self) -> None:
        with self.control.tx() as repo:
            repo.delete_deployment(repo.get_deployment(self.dep_id))
        run_admission(self.control)

    def lab_deploys(self) -> int:
        with self.control.tx() as repo:
            dep = repo.create_deployment(
                repo.get_tenant("lab"), name="lab-chat", model="llama-3.1-8b",
                device_type="h100", tp=1, precision="bf16", replicas=1,
            )  # fmt: skip
            dep_id = int(dep.id)
        run_admission(self.control)
        return dep_id

    def states(self, dep_id: int) -> list[str]:
        """Its replicas' states, a deleted deployment's too ([]: its row is gone)."""
        with self.control.tx() as repo:
            dep = repo.row(Deployment, dep_id)
            return [] if dep is None else [r.state for r in repo.replicas_of(dep, draining=True)]

    def card(self) -> tuple[str | None, str | None]:
        """(tenant, run state) of the one card, as `fleet list` shows it."""
        with self.control.tx() as repo:
            (card,) = server_out(repo, repo.list_servers()[0]).cards
            return card.tenant, card.run_state

    def billed_s(self, dep_id: int) -> float:
        with self.control.tx() as repo:
            rows = repo.list_usage(kind="replica")
            return sum(u.device_seconds for u in rows if f"deployment:{dep_id}/" in (u.ref or ""))


def test_a_scale_down_with_a_stream_in_flight_holds_and_bills_the_card_until_the_stop(
    tmp_path: Path,
) -> None:
    center = Center(tmp_path)
    executor = InProcessExecutor()
    gateway = Gateway(keys=StaticKeyResolver({KEY: ACME}))
    reconciler = center.reconciler(executor, gateway, start_wait_s=20.0)
    body = {
        "model": "llama-3.1-8b", "prompt": "drain", "max_tokens": 400,
        "stream": True, "stream_options": {"include_usage": True},
    }  # fmt: skip

    async def run() -> dict[str, Any]:
        config = uvicorn.Config(gateway, host="127.0.0.1", port=0, log_level="warning")
        server = uvicorn.Server(config)
        serving = asyncio.create_task(server.serve())
        out: dict[str, Any] = {"chunks": 0, "usage": None, "done": False}
        try:
            while not server.started:
                await asyncio.sleep(0.01)
            url = f"http://127.0.0.1:{server.servers[0].sockets[0].getsockname()[1]}"
            assert (await reconciler.reconcile()).started == ["h100-0-r0"]
            center.clock.advance(10.0)  # it serves for 10 s of the store's clock
            headers = {"authorization": f"Bearer {KEY}"}
            async with httpx.AsyncClient(base_url=url, headers=headers, timeout=60) as http:
                async with http.stream("POST", "/v1/completions", json=body) as resp:
                    assert resp.status_code == 200
                    lines = resp.aiter_lines()
                    async for line in lines:  # a first token: the stream is on the replica
                        if line.startswith("data: {"):
                            out["chunks"] += 1
                            break
                    center.scale(0, reconciler)
                    lab_id = center.lab_deploys()
                    out["draining"] = (await reconciler.reconcile()).draining
                    out["during"] = (center.states(center.dep_id), center.states(lab_id))
                    out["card_during"] = center.card()
                    run_admission(center.control)  # another cycle: still nobody's card
                    out["lab_after_cycle"] = center.states(lab_id)
                    center.clock.advance(100.0)  # the drain lasts 100 s of the store's clock
                    async for line in lines:
                        if line == "data: [DONE]":
                            out["done"] = True
                        elif line.startswith("data: {"):
                            chunk = json.loads(line[6:])
                            out["chunks"] += 1 if chunk.get("choices") else 0
                            out["usage"] = chunk.get("usage") or out["usage"]
            deadline = time.monotonic() + 10
            while reconciler.held_cards():  # the drain ended and its engine has stopped
                assert time.monotonic() < deadline, "the drained replica was not stopped"
                await asyncio.sleep(0.02)
            await reconciler.reconcile()  # reports the engine gone: released, lab placed
            out["after"] = (center.states(center.dep_id), center.states(lab_id))
            out["card_after"] = center.card()
            out["started"] = (await reconciler.reconcile()).started
            out["billed"] = center.billed_s(center.dep_id)
            return out
        finally:
            await reconciler.shutdown()
            await executor.shutdown()
            server.should_exit = True
            await serving

    out = asyncio.run(run())
    assert out["draining"] == ["h100-0-r0"]
    # (a) while it drains the card stays acme's: lab's replica waits, over two cycles
    assert out["during"] == (["draining"], ["pending"]) and out["lab_after_cycle"] == ["pending"]
    assert out["card_during"] == ("acme", "draining")
    assert out["done"] and out["usage"]["completion_tokens"] == 400  # the stream was not cut
    # (b) billed from placement to the stop: 10 s serving + 100 s draining (not 10 s)
    assert out["billed"] == pytest.approx(110.0)
    # (c) then free: lab's replica is placed on it and its engine starts
    assert out["after"] == ([], ["placed"]) and out["card_after"][0] == "lab"
    assert out["started"] == ["h100-0-r0"]
    assert reconciler.num_drained == 1 and reconciler.num_drain_cancelled == 0


def _drain_under(center: Center, executor: FakeExecutor, *, delete: bool = False) -> None:
    """A reconciler (one process) starts the replica, scales it down (``delete``: deletes its
    deployment) with a request in flight, and ends without a goodbye mid-drain (asyncio.run
    cancels its drain with the loop)."""
    reconciler = center.reconciler(executor, Gateway(keys=StaticKeyResolver({})))

    async def run() -> None:
        await reconciler.reconcile()
        reconciler.gateway.pool.get("h100-0-r0").inflight = 1
        if delete:
            center.delete()
        else:
            center.scale(0, reconciler)
        assert (await reconciler.reconcile()).draining == ["h100-0-r0"]

    asyncio.run(run())


@pytest.mark.parametrize("delete", [False, True], ids=["scaled-down", "deleted"])
def test_a_center_that_dies_mid_drain_leaks_no_card(tmp_path: Path, delete: bool) -> None:
    center = Center(tmp_path)
    _drain_under(center, FakeExecutor(), delete=delete)
    lab_id = center.lab_deploys()
    center.clock.advance(30.0)
    assert center.states(center.dep_id) == ["draining"]  # nobody told the store otherwise
    assert center.states(lab_id) == ["pending"]
    restarted = center.reconciler(FakeExecutor(), Gateway(keys=StaticKeyResolver({})))

    async def run() -> list[str]:
        await restarted.reconcile()  # no engine of its own for it: released, lab placed
        started = (await restarted.reconcile()).started
        await restarted.shutdown()
        return started

    assert asyncio.run(run()) == ["h100-0-r0"]
    assert center.states(center.dep_id) == [] and center.card()[0] == "lab"
    assert center.billed_s(center.dep_id) == pytest.approx(30.0)  # up to the release
    with center.control.tx() as repo:  # a deleted deployment's hidden row went with it
        assert (repo.row(Deployment, center.dep_id) is None) is delete


def test_a_deleted_deployment_holds_and_bills_its_card_until_its_engine_stops(
    tmp_path: Path,
) -> None:
    center = Center(tmp_path)
    reconciler = center.reconciler(FakeExecutor(), Gateway(keys=StaticKeyResolver({})))

    async def run() -> dict[str, Any]:
        out: dict[str, Any] = {}
        try:
            await reconciler.reconcile()
            reconciler.gateway.pool.get("h100-0-r0").inflight = 1  # a request in flight
            center.clock.advance(10.0)
            center.delete()
            lab_id = center.lab_deploys()
            out["draining"] = (await reconciler.reconcile()).draining
            out["during"] = (center.states(center.dep_id), center.states(lab_id))
            out["card_during"] = center.card()
            with center.control.tx() as repo:  # gone for acme at once, its name free
                out["listed"] = [d.name for d in repo.list_deployments()]
                again = repo.create_deployment(
                    repo.get_tenant("acme"), name="chat", model="llama-3.1-8b",
                    device_type="h100", tp=1, precision="bf16", replicas=0,
                )  # fmt: skip
                out["again"] = again.id != center.dep_id
            center.clock.advance(50.0)  # the drain lasts 50 s of the store's clock
            await reconciler.reconcile()  # still draining: nothing released
            out["still"] = center.states(center.dep_id)
            reconciler.gateway.pool.get("h100-0-r0").inflight = 0  # its request finished
            deadline = time.monotonic() + 10
            while reconciler.held_cards():
                assert time.monotonic() < deadline, "the drained replica was not stopped"
                await asyncio.sleep(0.02)
            await reconciler.reconcile()  # reports the engine gone: released, lab placed
            out["after"] = (center.states(center.dep_id), center.states(lab_id))
            out["card_after"] = center.card()
            out["started"] = (await reconciler.reconcile()).started
            return out
        finally:
            await reconciler.shutdown()

    out = asyncio.run(run())
    assert out["draining"] == ["h100-0-r0"]
    assert out["during"] == (["draining"], ["pending"]) and out["card_during"] == (
        "acme",
        "draining",
    )
    assert out["listed"] == ["lab-chat"] and out["again"]
    assert out["still"] == ["draining"]
    assert out["after"] == ([], ["placed"]) and out["card_after"][0] == "lab"
    assert out["started"] == ["h100-0-r0"]
    assert center.billed_s(center.dep_id) == pytest.approx(60.0)  # to the stop, not the delete
    assert reconciler.num_drained == 1 and reconciler.num_drain_cancelled == 0


def test_a_center_stopped_mid_drain_releases_what_drains(tmp_path: Path) -> None:
    center = Center(tmp_path)
    reconciler = center.reconciler(FakeExecutor(), Gateway(keys=StaticKeyResolver({})))

    async def run() -> None:
        await reconciler.reconcile()
        reconciler.gateway.pool.get("h100-0-r0").inflight = 1
        center.scale(0, reconciler)
        await reconciler.reconcile()
        center.clock.advance(20.0)
        await reconciler.shutdown()  # its engines are cut: nothing holds the card now

    asyncio.run(run())
    assert center.states(center.dep_id) == [] and center.card() == (None, None)
    assert center.billed_s(center.dep_id) == pytest.approx(20.0)
