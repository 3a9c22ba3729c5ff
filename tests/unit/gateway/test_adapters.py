"""Adapters at the gateway's edge: names, load once per replica, unload everywhere, capabilities."""

from __future__ import annotations

import asyncio
import json

import httpx
import pytest

from npucenter.clock import FakeClock
from npucenter.errors import NotSupportedError, UpstreamError
from npucenter.gateway.adapters import (
    AdapterLoader,
    AdapterTarget,
    adapter_prefix,
    split_model_name,
)
from npucenter.gateway.pool import Replica, ReplicaEndpoint

TARGET = AdapterTarget(tenant_id=3, name="mine", base_model="tiny-llama", path="/a/b")


def _replica(rid: str) -> Replica:
    endpoint = ReplicaEndpoint(replica_id=rid, base_url=f"http://{rid}:1", model_id="tiny-llama")
    return Replica(endpoint, FakeClock())


def test_names_and_prefix() -> None:
    assert split_model_name("tiny-llama:mine") == ("tiny-llama", "mine")
    assert split_model_name("mine") == (None, "mine")
    assert split_model_name(":mine") == (None, ":mine")
    assert TARGET.served_name == "t3-mine" and TARGET.service == "tiny-llama:mine"
    other = AdapterTarget(tenant_id=4, name="mine", base_model="tiny-llama", path="/c")
    assert adapter_prefix(TARGET, 64) != adapter_prefix(other, 64)
    assert len(adapter_prefix(TARGET, 64)) == 64


def test_loaded_once_per_replica_and_unloaded_everywhere() -> None:
    seen: list[tuple[str, str, dict[str, str]]] = []

    def handle(request: httpx.Request) -> httpx.Response:
        body = json.loads(request.content)
        seen.append((request.url.host, request.url.path, body))
        return httpx.Response(200, text="Success")

    loader = AdapterLoader(lambda model: ("vllm", True))

    async def go() -> None:
        async with httpx.AsyncClient(transport=httpx.MockTransport(handle)) as client:
            a, b = _replica("r1"), _replica("r2")
            await asyncio.gather(*(loader.ensure(client, a, TARGET) for _ in range(5)))
            await loader.ensure(client, b, TARGET)
            assert loader.loaded("r1") == loader.loaded("r2") == {"t3-mine"}
            assert sorted(await loader.unload(client, "t3-mine")) == ["r1", "r2"]
            assert loader.loaded("r1") == set()

    asyncio.run(go())
    loads = [(h, b) for h, p, b in seen if p == "/v1/load_lora_adapter"]
    body = {"lora_name": "t3-mine", "lora_path": "/a/b"}
    assert loads == [("r1", body), ("r2", body)]
    assert sorted(h for h, p, _ in seen if p == "/v1/unload_lora_adapter") == ["r1", "r2"]


def test_an_engine_refusal_is_an_upstream_error_and_capabilities_name_the_engine() -> None:
    def handle(request: httpx.Request) -> httpx.Response:
        return httpx.Response(400, text="rank 64 is over max_lora_rank 8")

    loader = AdapterLoader(lambda model: {"a": ("furiosa-llm", False), "b": ("vllm", False)}[model])

    async def go() -> None:
        async with httpx.AsyncClient(transport=httpx.MockTransport(handle)) as client:
            with pytest.raises(UpstreamError) as err:
                await loader.ensure(client, _replica("r1"), TARGET)
            assert err.value.details["status"] == 400
            assert loader.loaded("r1") == set()

    asyncio.run(go())
    with pytest.raises(NotSupportedError) as err:
        loader.check("a")
    assert "furiosa-llm" in err.value.message
    with pytest.raises(NotSupportedError) as err:
        loader.check("b")
    assert "enable_lora" in err.value.hint


def test_a_restarted_or_moved_engine_gets_its_adapter_loaded_again() -> None:
    loads: list[str] = []

    def handle(request: httpx.Request) -> httpx.Response:
        loads.append(str(request.url.host))
        return httpx.Response(200, text="Success")

    loader = AdapterLoader(lambda model: ("vllm", True))

    async def go() -> None:
        async with httpx.AsyncClient(transport=httpx.MockTransport(handle)) as client:
            r1 = _replica("r1")
            await loader.ensure(client, r1, TARGET)
            await loader.ensure(client, r1, TARGET)  # once
            assert loader.forget("r1") == {"t3-mine"} and loader.loaded("r1") == set()
            await loader.ensure(client, r1, TARGET)  # the restarted engine gets it again
            moved = Replica(
                ReplicaEndpoint(replica_id="r1", base_url="http://r1b:1", model_id="tiny-llama"),
                FakeClock(),
            )
            await loader.ensure(client, moved, TARGET)  # same id, another address: another engine
            assert loader.lost(moved, TARGET) and not loader.lost(moved, TARGET)
            await loader.ensure(client, moved, TARGET)

    asyncio.run(go())
    assert loads == ["r1", "r1", "r1b", "r1b"]
