"""Runtime LoRA loading at the process boundary: the requests vLLM's dynamic LoRA API gets."""

from __future__ import annotations

import asyncio
import json

import httpx
import pytest

from npucenter.engines.lora import list_adapters, load_adapter, require_lora, unload_adapter
from npucenter.errors import NotSupportedError, UpstreamError


def _engine(loaded: set[str], seen: list[tuple[str, dict[str, str]]]) -> httpx.MockTransport:
    def handle(request: httpx.Request) -> httpx.Response:
        if request.method == "GET" and request.url.path == "/v1/models":
            data = [{"id": m} for m in ("tiny-llama", *sorted(loaded))]
            return httpx.Response(200, json={"object": "list", "data": data})
        body = json.loads(request.content)
        seen.append((request.url.path, body))
        name = body["lora_name"]
        if request.url.path == "/v1/load_lora_adapter":
            if name in loaded:
                return httpx.Response(
                    400, text=f"The lora adapter '{name}' has already been loaded."
                )
            if body["lora_path"].startswith("/missing"):
                return httpx.Response(400, text="No adapter found for /missing")
            loaded.add(name)
            return httpx.Response(200, text=f"Success: LoRA adapter '{name}' added successfully.")
        if name not in loaded:
            return httpx.Response(400, text=f"The lora adapter '{name}' cannot be found.")
        loaded.discard(name)
        return httpx.Response(200, text="Success")

    return httpx.MockTransport(handle)


def test_load_list_unload_and_idempotence() -> None:
    loaded: set[str] = set()
    seen: list[tuple[str, dict[str, str]]] = []

    async def run() -> None:
        async with httpx.AsyncClient(transport=_engine(loaded, seen)) as client:
            base = "http://engine:8000"
            await load_adapter(client, base, "lab-sql", "/data/adapters/lab-sql")
            await load_adapter(client, base, "lab-sql", "/data/adapters/lab-sql")  # again: fine
            assert await list_adapters(client, base, "tiny-llama") == ["lab-sql"]
            with pytest.raises(UpstreamError) as info:
                await load_adapter(client, base, "other", "/missing/adapter")
            assert info.value.details["status"] == 400
            await unload_adapter(client, base, "lab-sql")
            await unload_adapter(client, base, "lab-sql")  # not loaded: fine
            assert await list_adapters(client, base, "tiny-llama") == []

    asyncio.run(run())
    assert seen[0] == (
        "/v1/load_lora_adapter",
        {"lora_name": "lab-sql", "lora_path": "/data/adapters/lab-sql"},
    )
    assert ("/v1/unload_lora_adapter", {"lora_name": "lab-sql"}) in seen


@pytest.mark.parametrize("engine", ["furiosa-llm", "vllm-rbln", "virtual", "external"])
def test_engines_without_runtime_adapters_are_not_supported(engine: str) -> None:
    with pytest.raises(NotSupportedError) as info:
        require_lora(engine)
    assert engine in info.value.details["feature"]
