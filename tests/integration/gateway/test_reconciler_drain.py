"""A replica scaled down drains: the gateway routes it nothing new at once, its requests in
flight finish, and its engine stops when it has none or at the drain bound (which cancels and
counts what still runs). The store removes the replicas with the fewest requests in flight.

With a FakeExecutor on a real store (SQLite), and with virtual engines served on this loop
behind a real gateway (a streaming request across a scale-down arrives whole)."""

from __future__ import annotations

import asyncio
import json
import time
from pathlib import Path
from typing import Any

import httpx
import uvicorn

from factories import make_tenant
from npucenter.api import create_app
from npucenter.api.admission import run_admission
from npucenter.executors import FakeExecutor
from npucenter.executors.inprocess import InProcessExecutor
from npucenter.gateway import Gateway, StaticKeyResolver
from npucenter.gateway.reconciler import DeploymentReconciler, WantedReplica, wanted_replicas
from npucenter.policy.principal import Principal
from npucenter.settings import Settings


class Rig:
    def __init__(self, tmp_path: Path, **kw: Any) -> None:
        settings = Settings.from_env(
            {"NPUCENTER_ADMIN_KEY": "admin-0123456789abcdef"}, data_dir=tmp_path
        )
        self.control: Any = create_app(settings).state.control
        self.executor = FakeExecutor()
        self.gateway = Gateway(keys=StaticKeyResolver({}))
        self.reconciler = DeploymentReconciler(
            read=self.read, executor=self.executor, gateway=self.gateway, drain_poll_s=0.01, **kw
        )
        with self.control.tx() as repo:
            repo.create_server("h100-0", "h100", 4)
            make_tenant(repo, "acme", device_type="h100", nominal_cards=3)
            dep = repo.create_deployment(
                repo.get_tenant("acme"), name="chat", model="llama-3.1-8b",
                device_type="h100", tp=1, precision="fp8", replicas=3,
            )  # fmt: skip
            self.dep_id = int(dep.id)
        run_admission(self.control)

    def read(self) -> list[WantedReplica]:
        with self.control.tx() as repo:
            return wanted_replicas(repo, device_names={"nvidia_h100_sxm": "h100"})

    def scale(self, replicas: int) -> None:  # what `deploy scale` and the autoscaler do
        inflight = self.reconciler.inflight_by_row()
        with self.control.tx() as repo:
            repo.scale_deployment(repo.get_deployment(self.dep_id), replicas, inflight=inflight)
        run_admission(self.control)

    def engines(self) -> set[str]:
        return {r.replica_id for r in self.executor.replicas() if r.state.value != "stopped"}


def test_the_replicas_with_fewest_in_flight_drain_and_stop_when_empty(tmp_path: Path) -> None:
    rig = Rig(tmp_path)
    pool = rig.gateway.pool

    async def run() -> dict[str, Any]:
        await rig.reconciler.reconcile()
        assert rig.engines() == {"h100-0-r0", "h100-0-r1", "h100-0-r2"}
        for rid, n in {"h100-0-r0": 3, "h100-0-r1": 1, "h100-0-r2": 2}.items():
            pool.get(rid).inflight = n  # type: ignore[union-attr]
        rig.scale(1)  # keeps r0 (3 in flight); r1 and r2 drain
        report = await rig.reconciler.reconcile()
        out: dict[str, Any] = {"draining": sorted(report.draining), "stopped": report.stopped}
        out["engines"] = rig.engines()
        out["candidates"] = [r.replica_id for r in pool.candidates("llama-3.1-8b")]
        out["held"] = rig.reconciler.held_cards()
        pool.get("h100-0-r1").inflight = 0  # type: ignore[union-attr]
        await asyncio.sleep(0.2)
        out["after_r1"] = rig.engines()
        pool.get("h100-0-r2").inflight = 0  # type: ignore[union-attr]
        await asyncio.sleep(0.2)
        out["after_r2"] = rig.engines()
        out["pool"] = {r.replica_id for r in pool.replicas()}
        await rig.reconciler.shutdown()
        return out

    out = asyncio.run(run())
    assert out["draining"] == ["h100-0-r1", "h100-0-r2"] and out["stopped"] == []
    assert out["engines"] == {"h100-0-r0", "h100-0-r1", "h100-0-r2"}  # still running
    assert out["candidates"] == ["h100-0-r0"]  # but routed nothing new
    assert out["held"] == {("h100-0", 0), ("h100-0", 1), ("h100-0", 2)}
    assert out["after_r1"] == {"h100-0-r0", "h100-0-r2"}
    assert out["after_r2"] == {"h100-0-r0"} and out["pool"] == {"h100-0-r0"}
    assert rig.reconciler.num_drained == 2 and rig.reconciler.num_drain_cancelled == 0


def test_the_drain_bound_stops_the_replica_and_counts_what_was_cancelled(tmp_path: Path) -> None:
    rig = Rig(tmp_path, drain_s=0.2)

    async def run() -> set[str]:
        await rig.reconciler.reconcile()
        for rid in ("h100-0-r0", "h100-0-r1", "h100-0-r2"):
            rig.gateway.pool.get(rid).inflight = 4  # type: ignore[union-attr]
        rig.scale(2)
        report = await rig.reconciler.reconcile()
        assert report.draining == ["h100-0-r2"]  # equal counts: the newest goes
        await asyncio.sleep(0.1)
        assert "h100-0-r2" in rig.engines()  # within the bound
        await asyncio.sleep(0.4)
        engines = rig.engines()
        await rig.reconciler.shutdown()
        return engines

    assert asyncio.run(run()) == {"h100-0-r0", "h100-0-r1"}
    assert rig.reconciler.num_drain_cancelled == 4


def test_an_idle_replica_stops_at_once_and_one_wanted_again_serves_again(tmp_path: Path) -> None:
    rig = Rig(tmp_path)

    async def run() -> None:
        await rig.reconciler.reconcile()
        rig.gateway.pool.get("h100-0-r0").inflight = 1  # type: ignore[union-attr]
        wanted = rig.read()
        r0 = next(w for w in wanted if w.replica_id == "h100-0-r0")
        rig.reconciler.read = lambda: [w for w in wanted if w is not r0]
        report = await rig.reconciler.reconcile()
        assert report.draining == ["h100-0-r0"] and report.stopped == []
        rig.reconciler.read = lambda: wanted  # scaled up again before the drain ended
        await rig.reconciler.reconcile()
        assert set(rig.reconciler.running) == {"h100-0-r0", "h100-0-r1", "h100-0-r2"}
        assert "h100-0-r0" in {r.replica_id for r in rig.gateway.pool.candidates("llama-3.1-8b")}
        rig.reconciler.read = lambda: [w for w in wanted if w is not r0][:1]  # r1 idle: stops
        report = await rig.reconciler.reconcile()
        assert report.stopped == ["h100-0-r2"] and report.draining == ["h100-0-r0"]
        await rig.reconciler.shutdown()

    asyncio.run(run())


# --- a real gateway and virtual engines ------------------------------------------------------

KEY = "lab-key-0123456789abcdef"
LAB = Principal(key_id="key-1", tenant="lab", tenant_id=7)


def _wanted(card: int) -> WantedReplica:
    return WantedReplica(
        replica_id=f"h100-0-r{card}", deployment_id=1, deployment="chat", tenant="lab",
        model="llama-3.1-8b", device="h100", precision="bf16", tp=1, server="h100-0",
        card_indices=(card,),
    )  # fmt: skip


def test_a_stream_in_flight_across_a_scale_down_arrives_whole() -> None:
    wanted = [_wanted(0), _wanted(1)]
    executor = InProcessExecutor()
    gateway = Gateway(keys=StaticKeyResolver({KEY: LAB}))
    reconciler = DeploymentReconciler(
        read=lambda: list(wanted), executor=executor, gateway=gateway,
        start_wait_s=20.0, drain_poll_s=0.05,
    )  # fmt: skip
    headers = {"authorization": f"Bearer {KEY}"}
    max_tokens = 400

    async def run() -> dict[str, Any]:
        config = uvicorn.Config(gateway, host="127.0.0.1", port=0, log_level="warning")
        server = uvicorn.Server(config)
        serving = asyncio.create_task(server.serve())
        try:
            while not server.started:
                await asyncio.sleep(0.01)
            url = f"http://127.0.0.1:{server.servers[0].sockets[0].getsockname()[1]}"
            assert sorted((await reconciler.reconcile()).started) == ["h100-0-r0", "h100-0-r1"]
            body = {
                "model": "llama-3.1-8b", "prompt": "drain", "max_tokens": max_tokens,
                "stream": True, "stream_options": {"include_usage": True},
            }  # fmt: skip
            out: dict[str, Any] = {"text": 0, "usage": None, "done": False}
            async with httpx.AsyncClient(base_url=url, headers=headers, timeout=60) as http:
                async with http.stream("POST", "/v1/completions", json=body) as resp:
                    assert resp.status_code == 200
                    lines = resp.aiter_lines()
                    async for line in lines:  # the first token: the stream is on a replica
                        if line.startswith("data: {"):
                            out["text"] += 1
                            break
                    (busy,) = [r.replica_id for r in gateway.pool.replicas() if r.inflight]
                    other = next(r for r in ("h100-0-r0", "h100-0-r1") if r != busy)
                    wanted[:] = [w for w in wanted if w.replica_id != busy]  # scaled down
                    report = await reconciler.reconcile()
                    out["draining"] = report.draining
                    out["running_then"] = {r.replica_id for r in executor.replicas()}
                    served_before = gateway.pool.get(other).num_served  # type: ignore[union-attr]
                    short = {"model": "llama-3.1-8b", "prompt": "new", "max_tokens": 2}
                    for _ in range(3):  # new requests: the remaining replica only
                        assert (await http.post("/v1/completions", json=short)).status_code == 200
                    out["new_on_other"] = (
                        gateway.pool.get(other).num_served - served_before  # type: ignore[union-attr]
                    )
                    out["busy_served"] = gateway.pool.get(busy).num_served  # type: ignore[union-attr]
                    async for line in lines:
                        if line == "data: [DONE]":
                            out["done"] = True
                        elif line.startswith("data: {"):
                            chunk = json.loads(line[6:])
                            out["text"] += 1 if chunk.get("choices") else 0
                            out["usage"] = chunk.get("usage") or out["usage"]
            deadline = time.monotonic() + 10
            while busy in {r.replica_id for r in executor.replicas()}:
                assert time.monotonic() < deadline, "the drained replica was not stopped"
                await asyncio.sleep(0.05)
            out["busy"], out["running_after"] = busy, {r.replica_id for r in executor.replicas()}
            return out
        finally:
            await reconciler.shutdown()
            await executor.shutdown()
            server.should_exit = True
            await serving

    out = asyncio.run(run())
    assert out["draining"] == [out["busy"]]
    assert out["running_then"] == {"h100-0-r0", "h100-0-r1"}  # not cut
    assert out["new_on_other"] == 3 and out["busy_served"] == 0
    assert out["done"] and out["usage"]["completion_tokens"] == max_tokens
    assert out["running_after"] == {"h100-0-r0", "h100-0-r1"} - {out["busy"]}
    assert reconciler.num_drained == 1 and reconciler.num_drain_cancelled == 0


def test_a_drain_waits_for_the_requests_other_gateways_have_on_the_replica(tmp_path: Path) -> None:
    from npucenter.live.load import merge_inflight

    rig = Rig(tmp_path)
    rows = [{"inflight": {"h100-0-r2": 1}}, {"inflight": {"h100-0-r2": 1, "h100-0-r0": 5}}]
    remote = merge_inflight(rows)  # what the autoscaler read of the followers' load rows
    assert remote == {"h100-0-r2": 2, "h100-0-r0": 5}
    rig.reconciler.remote_inflight = lambda: remote

    async def run() -> tuple[list[str], set[str], set[str]]:
        await rig.reconciler.reconcile()
        rig.scale(1)  # keeps r0 (5 elsewhere); r2 has nothing here, 2 elsewhere; r1 is idle
        report = await rig.reconciler.reconcile()
        await asyncio.sleep(0.1)
        during = rig.engines()
        remote.clear()  # the followers' streams ended
        await asyncio.sleep(0.1)
        after = rig.engines()
        await rig.reconciler.shutdown()
        return report.stopped, during, after

    stopped, during, after = asyncio.run(run())
    assert stopped == ["h100-0-r1"]  # the idlest (by every gateway's count) went at once
    assert during == {"h100-0-r0", "h100-0-r2"} and after == {"h100-0-r0"}
