"""LoRA adapters through ``/v1``: a tenant's adapter is served on its base model's replicas.

A request naming ``model="<adapter>"`` or ``"<base>:<adapter>"`` that is not a served model is
looked up among the caller's own adapters (:class:`AdapterResolver`; another tenant's adapter is
simply not found: 404). It is routed as a request for the base model, by the same routing policy
object, with the adapter folded into its prefix hashes (:func:`adapter_prefix`): the
prefix-affinity policy sends an adapter's requests where that adapter ran before (its weights
loaded, its prefix cache warm: vLLM keys cached prefixes by LoRA). On the replica picked,
:class:`AdapterLoader` loads it once (vLLM: ``POST /v1/load_lora_adapter``, needs
``engine.enable_lora``; the virtual engine accepts the same call) under a name unique across
tenants (``t<tenant id>-<name>``); a deleted adapter is unloaded from every replica holding it.
An engine that cannot serve adapters answers ``not_supported`` naming it (``LORA_ENGINES``).

A restarted engine holds no adapter: the reconciler calls :meth:`AdapterLoader.forget` for the
replicas it restarts or stops (before they are routed to again), a replica whose address changed
counts as another engine, and an engine that answers 404 for a loaded adapter (restarted behind
the reconciler's back) has it forgotten and loaded again once (:meth:`AdapterLoader.lost`; the
forwarding path resends the request).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol

import httpx

from npucenter.engines.lora import check_loaded, post_load, post_unload
from npucenter.engines.options import LORA_ENGINES
from npucenter.errors import NotSupportedError
from npucenter.gateway.auth import Principal
from npucenter.gateway.pool import Replica
from npucenter.policy.routing.prefix_affinity import adapter_block

__all__ = [
    "AdapterLoader",
    "AdapterResolver",
    "AdapterTarget",
    "adapter_prefix",
    "engine_served_name",
    "split_model_name",
]

log = logging.getLogger(__name__)

#: Engines that accept runtime adapters: the LoRA engines, and the virtual engine (the twin's).
_RUNTIME_ADAPTER_ENGINES = frozenset({*LORA_ENGINES, "virtual"})


@dataclass(frozen=True, slots=True, kw_only=True)
class AdapterTarget:
    """An adapter a request resolved to."""

    tenant_id: int
    name: str  # the tenant's name for it
    base_model: str
    path: str  # where the engine loads it from (the artifact store's local copy)

    @property
    def served_name(self) -> str:
        """The engine-side name (unique across tenants)."""
        return engine_served_name(self.tenant_id, self.name)

    @property
    def service(self) -> str:
        """How usage rows name it: ``<base>:<adapter>``."""
        return f"{self.base_model}:{self.name}"


class AdapterResolver(Protocol):
    """The caller's adapters (the live center reads them from the store)."""

    def resolve(self, principal: Principal, requested: str) -> AdapterTarget | None:
        """The caller's adapter named by ``requested``, or None (not one of its adapters)."""
        ...

    def names(self, principal: Principal) -> list[tuple[str, str]]:
        """``(adapter name, base model)`` of the caller's adapters, for ``/v1/models``."""
        ...


def engine_served_name(tenant_id: int, name: str) -> str:
    """The name an engine serves a tenant's adapter under."""
    return f"t{tenant_id}-{name}"


def split_model_name(requested: str) -> tuple[str | None, str]:
    """``"<base>:<adapter>"`` -> (base, adapter); ``"<adapter>"`` -> (None, adapter)."""
    base, sep, name = requested.rpartition(":")
    return (base, name) if sep and base and name else (None, requested)


def adapter_prefix(target: AdapterTarget, block_chars: int) -> str:
    """One leading block naming the adapter: prefix hashes of its requests are its own."""
    return adapter_block(target.served_name, block_chars)


class AdapterLoader:
    """Which replica holds which adapter; loads on demand, unloads on delete.

    ``engine_of(model_id) -> (engine name, lora enabled)`` says how the base model is served.
    """

    def __init__(self, engine_of: Callable[[str], tuple[str, bool]]) -> None:
        self.engine_of = engine_of
        self._loaded: dict[str, dict[str, str]] = {}  # replica id -> served name -> base_url
        self._locks: dict[tuple[str, str], asyncio.Lock] = {}
        self._loop: asyncio.AbstractEventLoop | None = None

    def loaded(self, replica_id: str) -> set[str]:
        """Served names of the adapters loaded on ``replica_id``."""
        return set(self._loaded.get(replica_id, {}))

    def forget(self, replica_id: str) -> set[str]:
        """``replica_id``'s engine restarted or stopped: it holds none of its adapters now.

        Returns the served names it held; each is loaded again on the next request routed there.
        """
        held = self._loaded.pop(replica_id, {})
        if held:
            log.info("adapters %s to load again on replica %s", sorted(held), replica_id)
        return set(held)

    def lost(self, replica: Replica, target: AdapterTarget) -> bool:
        """The engine answered 404 for ``target``: forget it there; True if it was thought loaded."""
        held = self._loaded.get(replica.endpoint.replica_id, {})
        return held.pop(target.served_name, None) is not None

    def check(self, model_id: str) -> None:
        """Raise :class:`NotSupportedError` unless ``model_id``'s engine serves adapters now."""
        engine, enabled = self.engine_of(model_id)
        if engine not in _RUNTIME_ADAPTER_ENGINES:
            raise NotSupportedError(
                f"LoRA adapters on engine {engine}",
                f"{model_id} is served by {engine}; engines that serve adapters: "
                f"{', '.join(sorted(_RUNTIME_ADAPTER_ENGINES))}",
                hint="serve the base model with vllm (engine.enable_lora: true)",
            )
        if not enabled:
            raise NotSupportedError(
                f"LoRA adapters on the {model_id} deployment",
                f"its {engine} engine was started without LoRA",
                hint="set engine.enable_lora: true (and max_lora_rank) on the deployment",
            )

    async def ensure(
        self, client: httpx.AsyncClient, replica: Replica, target: AdapterTarget
    ) -> None:
        """Load ``target`` on ``replica`` unless it is there (raises httpx errors on no answer)."""
        self._loop = asyncio.get_running_loop()
        rid, name = replica.endpoint.replica_id, target.served_name
        base_url = replica.endpoint.base_url.rstrip("/")
        if self._loaded.get(rid, {}).get(name) == base_url:
            return
        lock = self._locks.setdefault((rid, name), asyncio.Lock())
        async with lock:
            # loaded at another address: that was another engine (restarted elsewhere)
            if self._loaded.get(rid, {}).get(name) == base_url:
                return
            resp = await post_load(client, base_url, name, target.path)
            check_loaded(resp, f"loading adapter {target.name!r} on {rid}", replica=rid)
            self._loaded.setdefault(rid, {})[name] = base_url
            log.info("adapter %s loaded on replica %s", name, rid)

    async def unload(self, client: httpx.AsyncClient, served_name: str) -> list[str]:
        """Unload ``served_name`` from every replica holding it; the replica ids."""
        done = []
        for rid, held in list(self._loaded.items()):
            base_url = held.pop(served_name, None)
            if base_url is None:
                continue
            try:
                await post_unload(client, base_url, served_name)
            except httpx.HTTPError as exc:  # the replica is gone: nothing is loaded there
                log.warning("unloading %s from %s: %r", served_name, rid, exc)
            done.append(rid)
        return done

    def unload_soon(self, client: httpx.AsyncClient, served_name: str) -> None:
        """Thread-safe: schedule :meth:`unload` on the gateway's loop (after a delete)."""
        if self._loop is None or self._loop.is_closed():
            return  # never loaded anywhere in this process
        asyncio.run_coroutine_threadsafe(self.unload(client, served_name), self._loop)
