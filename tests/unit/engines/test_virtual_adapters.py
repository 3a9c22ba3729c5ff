"""The virtual engine takes vLLM's runtime LoRA calls: load, serve under the name, unload."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest

from npucenter.engines.virtual.server import VirtualEngineConfig, build_app


@pytest.fixture
async def client(perf: Any) -> AsyncIterator[httpx.AsyncClient]:
    app = build_app(
        VirtualEngineConfig(model="tiny", device="rngd", time_scale=0.0, max_model_len=4096),
        perf=perf,
    )
    app.loop.start()
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://engine") as c:
        yield c
    await app.loop.stop()


async def _complete(client: httpx.AsyncClient, model: str) -> httpx.Response:
    return await client.post(
        "/v1/completions", json={"model": model, "prompt": "hi", "max_tokens": 3}
    )


async def test_an_adapter_is_served_between_its_load_and_its_unload(client) -> None:
    assert (await _complete(client, "t1-mine")).status_code == 404
    body = {"lora_name": "t1-mine", "lora_path": "/artifacts/t1/adapter/x"}
    assert (await client.post("/v1/load_lora_adapter", json=body)).status_code == 200
    again = await client.post("/v1/load_lora_adapter", json=body)
    assert again.status_code == 400 and "already" in again.text
    models = [m["id"] for m in (await client.get("/v1/models")).json()["data"]]
    assert models == ["tiny", "t1-mine"]
    done = await _complete(client, "t1-mine")
    assert done.status_code == 200 and done.json()["usage"]["completion_tokens"] == 3
    gone = {"lora_name": "t1-mine"}
    assert (await client.post("/v1/unload_lora_adapter", json=gone)).status_code == 200
    assert (await client.post("/v1/unload_lora_adapter", json=gone)).status_code == 404
    assert (await _complete(client, "t1-mine")).status_code == 404
    assert (await client.post("/v1/load_lora_adapter", json={})).status_code == 400


async def test_a_loaded_adapter_costs_the_perf_models_lora_term_and_the_measured_load(
    tmp_path,
) -> None:
    import json
    import time

    from npucenter.perf.lora import ADAPTER_LOAD_S

    adapter = tmp_path / "adapter"
    adapter.mkdir()
    config = {"r": 16, "target_modules": ["q_proj", "v_proj", "o_proj"]}
    (adapter / "adapter_config.json").write_text(json.dumps(config))
    app = build_app(
        VirtualEngineConfig(model="tiny-llama", device="cpu", time_scale=1.0, max_model_len=512)
    )
    cost = app.lora_cost
    assert cost is not None and cost.current is cost.base
    args = (0.0, 0.0, 8.0, 8 * 300.0)
    base_step = cost.step_time_s(*args)
    app.loop.start()
    transport = httpx.ASGITransport(app=app)
    try:
        async with httpx.AsyncClient(transport=transport, base_url="http://engine") as client:
            body = {"lora_name": "t1-mine", "lora_path": str(adapter)}
            started = time.perf_counter()
            assert (await client.post("/v1/load_lora_adapter", json=body)).status_code == 200
            assert time.perf_counter() - started >= ADAPTER_LOAD_S["cpu"].seconds
            assert cost.current.lora is not None
            assert cost.current.lora.rank == 16 and "o_proj" in cost.current.lora.target_modules
            assert cost.step_time_s(*args) > base_step
            assert (await _complete(client, "t1-mine")).status_code == 200
            gone = {"lora_name": "t1-mine"}
            assert (await client.post("/v1/unload_lora_adapter", json=gone)).status_code == 200
            assert cost.current is cost.base and cost.step_time_s(*args) == base_step
    finally:
        await app.loop.stop()
