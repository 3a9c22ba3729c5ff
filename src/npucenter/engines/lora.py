"""LoRA adapters on a running engine: load and unload at run time (vLLM's dynamic LoRA).

vLLM started with ``--enable-lora`` and ``VLLM_ALLOW_RUNTIME_LORA_UPDATING=True`` (a fleet entry's
``engine.enable_lora``) answers ``POST /v1/load_lora_adapter {"lora_name", "lora_path"}`` and
``POST /v1/unload_lora_adapter {"lora_name"}``; a loaded adapter is listed by ``/v1/models`` and
served under its name (https://docs.vllm.ai/en/latest/features/lora.html, "Dynamically serving
LoRA Adapters"). Engines without runtime adapters raise ``NotSupportedError`` naming the engine.
"""

from __future__ import annotations

from collections.abc import Awaitable
from pathlib import Path

import httpx

from npucenter.engines.options import LORA_ENGINES
from npucenter.errors import NotSupportedError, UpstreamError

__all__ = [
    "LOAD_PATH",
    "UNLOAD_PATH",
    "check_loaded",
    "list_adapters",
    "load_adapter",
    "post_load",
    "post_unload",
    "require_lora",
    "unload_adapter",
]

LOAD_PATH = "/v1/load_lora_adapter"
UNLOAD_PATH = "/v1/unload_lora_adapter"


def require_lora(engine: str) -> None:
    """Raise :class:`NotSupportedError` unless ``engine`` serves LoRA adapters at run time."""
    if engine not in LORA_ENGINES:
        raise NotSupportedError(
            f"LoRA adapters on engine {engine}",
            f"engines that serve adapters: {', '.join(sorted(LORA_ENGINES))}",
            hint="serve the base model's deployment with vllm and engine.enable_lora: true",
        )


async def load_adapter(
    client: httpx.AsyncClient, base_url: str, name: str, path: str | Path, *, engine: str = "vllm"
) -> None:
    """Load the adapter saved at ``path`` into the engine at ``base_url`` as ``name``.

    Loading one that is loaded already is not an error (vLLM answers 400 "already loaded").
    """
    require_lora(engine)
    resp = await _answered(post_load(client, base_url, name, path), base_url, LOAD_PATH)
    check_loaded(resp, f"loading adapter {name!r}")


async def unload_adapter(
    client: httpx.AsyncClient, base_url: str, name: str, *, engine: str = "vllm"
) -> None:
    """Unload ``name`` from the engine (one that is not loaded is not an error)."""
    require_lora(engine)
    resp = await _answered(post_unload(client, base_url, name), base_url, UNLOAD_PATH)
    if resp.status_code in (400, 404) and "not" in resp.text.lower():
        return
    _raise_for(resp, f"unloading adapter {name!r}")


async def post_load(
    client: httpx.AsyncClient, base_url: str, name: str, path: str | Path
) -> httpx.Response:
    """POST the load call as is (no engine check; httpx errors propagate to the caller)."""
    body = {"lora_name": name, "lora_path": str(path)}
    return await client.post(base_url.rstrip("/") + LOAD_PATH, json=body)


async def post_unload(client: httpx.AsyncClient, base_url: str, name: str) -> httpx.Response:
    """POST the unload call as is (no engine check; httpx errors propagate to the caller)."""
    return await client.post(base_url.rstrip("/") + UNLOAD_PATH, json={"lora_name": name})


def check_loaded(resp: httpx.Response, what: str, **details: object) -> None:
    """Raise :class:`UpstreamError` unless ``resp`` to a load call says the adapter is there.

    One loaded already is there (vLLM and the virtual engine answer 400 "already loaded").
    """
    if resp.status_code == 400 and "already" in resp.text.lower():
        return
    _raise_for(resp, what, **details)


async def list_adapters(client: httpx.AsyncClient, base_url: str, base_model: str) -> list[str]:
    """Names ``/v1/models`` lists besides ``base_model`` (the adapters loaded now)."""
    try:
        resp = await client.get(base_url.rstrip("/") + "/v1/models")
    except httpx.HTTPError as exc:
        raise UpstreamError(f"listing models at {base_url}: {exc!r}") from exc
    _raise_for(resp, "listing models")
    return [str(m["id"]) for m in resp.json().get("data", []) if m.get("id") != base_model]


async def _answered(sent: Awaitable[httpx.Response], base_url: str, path: str) -> httpx.Response:
    try:
        return await sent
    except httpx.HTTPError as exc:
        raise UpstreamError(f"{path} at {base_url}: {exc!r}") from exc


def _raise_for(resp: httpx.Response, what: str, **details: object) -> None:
    if resp.status_code >= 400:
        raise UpstreamError(
            f"{what}: the engine answered HTTP {resp.status_code}: {resp.text[:300]}",
            details={"status": resp.status_code, **details},
        )
