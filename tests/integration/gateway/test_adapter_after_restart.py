"""An adapter survives its engine's restart: real virtual-engine processes, the reconciler, /v1.

A tenant's adapter is loaded on demand on the replica of its base model; the engine process is
killed; the reconciler restarts it (a fresh engine holds no adapter) and the next request for the
adapter loads it again and is answered. An engine restarted behind the reconciler's back (it
answers 404 for the adapter) has it loaded again on that request too.
"""

from __future__ import annotations

import asyncio
import os
import signal
import time
from pathlib import Path
from typing import Any

import httpx

from npucenter.executors.local import LocalProcessExecutor
from npucenter.gateway import Gateway, StaticKeyResolver
from npucenter.gateway.adapters import AdapterTarget
from npucenter.gateway.reconciler import DeploymentReconciler, WantedReplica
from npucenter.policy.principal import Principal

KEY = "lab-key-0123456789abcdef"
LAB = Principal(key_id="key-1", tenant="lab", tenant_id=7)
TARGET = AdapterTarget(tenant_id=7, name="mine", base_model="tiny-llama", path="/nowhere/mine")


class _Resolver:
    def resolve(self, principal: Principal, requested: str) -> AdapterTarget | None:
        base, _, name = requested.rpartition(":")
        ours = principal.tenant_id == TARGET.tenant_id and name == TARGET.name
        return TARGET if ours and base in ("", TARGET.base_model) else None

    def names(self, principal: Principal) -> list[tuple[str, str]]:
        return [(TARGET.name, TARGET.base_model)] if principal.tenant_id == 7 else []


def _rig(tmp_path: Path) -> tuple[LocalProcessExecutor, Gateway, DeploymentReconciler]:
    wanted = WantedReplica(
        replica_id="h100-0-r0",
        deployment_id=1,
        deployment="tiny",
        tenant="lab",
        model="tiny-llama",
        device="h100",
        precision="bf16",
        tp=1,
        server="h100-0",
        card_indices=(0,),
    )
    executor = LocalProcessExecutor(log_dir=tmp_path / "logs", poll_interval_s=0.1)
    gateway = Gateway(keys=StaticKeyResolver({KEY: LAB}))
    gateway.adapters = _Resolver()
    reconciler = DeploymentReconciler(
        read=lambda: [wanted], executor=executor, gateway=gateway, start_wait_s=30.0
    )
    return executor, gateway, reconciler


async def _complete(gateway: Gateway, model: str) -> httpx.Response:
    transport = httpx.ASGITransport(app=gateway)
    async with httpx.AsyncClient(transport=transport, base_url="http://center") as http:
        body = {"model": model, "prompt": "The lab", "max_tokens": 2, "temperature": 0}
        headers = {"authorization": f"Bearer {KEY}"}
        return await http.post("/v1/completions", json=body, headers=headers, timeout=30)


async def _engine_models(base_url: str) -> list[str]:
    async with httpx.AsyncClient(timeout=5) as client:
        resp = await client.get(base_url.rstrip("/") + "/v1/models")
        return [m["id"] for m in resp.json()["data"]]


async def _crash(executor: LocalProcessExecutor, rid: str) -> None:
    (replica,) = [r for r in executor.replicas() if r.replica_id == rid]
    os.kill(replica.pid, signal.SIGKILL)
    deadline = time.monotonic() + 10
    while executor._records[rid].proc.poll() is None:  # type: ignore[union-attr]
        assert time.monotonic() < deadline, "the engine did not exit"
        await asyncio.sleep(0.05)


def test_an_adapter_is_served_again_after_the_reconciler_restarts_its_engine(
    tmp_path: Path,
) -> None:
    executor, gateway, reconciler = _rig(tmp_path)

    async def run() -> dict[str, Any]:
        try:
            assert (await reconciler.reconcile()).started == ["h100-0-r0"]
            assert (await _complete(gateway, "mine")).status_code == 200
            assert gateway.adapter_loader.loaded("h100-0-r0") == {"t7-mine"}
            await _crash(executor, "h100-0-r0")
            report = await reconciler.reconcile()
            assert report.restarted == ["h100-0-r0"]
            (replica,) = gateway.pool.replicas()
            fresh = await _engine_models(replica.endpoint.base_url)
            assert "t7-mine" not in fresh  # a restarted engine holds no adapter
            assert gateway.adapter_loader.loaded("h100-0-r0") == set()  # and the gateway knows
            after = await _complete(gateway, "tiny-llama:mine")
            return {
                "status": after.status_code,
                "body": after.text,
                "listed": await _engine_models(replica.endpoint.base_url),
            }
        finally:
            await reconciler.shutdown()
            await executor.shutdown()

    out = asyncio.run(run())
    assert out["status"] == 200, out["body"]
    assert "t7-mine" in out["listed"]


def test_an_engine_that_lost_the_adapter_unseen_gets_it_again_on_the_next_request(
    tmp_path: Path,
) -> None:
    executor, gateway, reconciler = _rig(tmp_path)

    async def run() -> list[tuple[int, str, list[str]]]:
        out = []
        try:
            await reconciler.reconcile()
            assert (await _complete(gateway, "mine")).status_code == 200
            (replica,) = gateway.pool.replicas()
            base_url = replica.endpoint.base_url
            # the engine drops it at the same address (as one restarted there would): it answers
            # 404 for the adapter, the gateway still thinks it loaded
            async with httpx.AsyncClient(timeout=5) as client:
                await client.post(
                    f"{base_url}/v1/unload_lora_adapter", json={"lora_name": "t7-mine"}
                )
            assert "t7-mine" not in await _engine_models(base_url)
            assert gateway.adapter_loader.loaded("h100-0-r0") == {"t7-mine"}
            after = await _complete(gateway, "mine")
            out.append((after.status_code, after.text, await _engine_models(base_url)))
            # the executor restarts it on its own, at another address the pool then shows
            again = await executor.restart("h100-0-r0")
            reconciler._publish()
            after = await _complete(gateway, "mine")
            out.append((after.status_code, after.text, await _engine_models(again.base_url)))
        finally:
            await reconciler.shutdown()
            await executor.shutdown()
        return out

    for status, body, listed in asyncio.run(run()):
        assert status == 200, body
        assert "t7-mine" in listed
